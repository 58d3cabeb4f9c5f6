//! The request's public origin, worked out once per request: the configured public URL, or
//! (behind a proxy the operator trusts) `X-Forwarded-Proto`/`-Host`, or the `Host` header
//! with the scheme this server speaks. Every link, redirect, issuer and audience check uses
//! it (`fhir::urls::origin`), and the source address the audit trail records comes from the
//! same trust decision.

use super::AppState;
use super::fhir::urls::{ORIGIN_HEADER, host_origin};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, SocketAddr};

/// The client's address as the server should believe it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

fn forwarded_host_ok(h: &str) -> bool {
    !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

pub async fn origin_layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let cfg = &state.config;
    let headers = req.headers();
    let trust = cfg.tls.trust_forwarded;
    let scheme = if cfg.tls_enabled() { "https" } else { "http" };
    let forwarded = |name: &str| {
        trust
            .then(|| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
            })
            .flatten()
            .filter(|v| !v.is_empty())
    };
    let origin = if !cfg.auth.public_url.is_empty() {
        cfg.auth.public_url.clone()
    } else {
        let proto = forwarded("x-forwarded-proto").filter(|p| p == "https" || p == "http");
        let host = forwarded("x-forwarded-host").filter(|h| forwarded_host_ok(h));
        match host {
            Some(h) => format!("{}://{h}", proto.as_deref().unwrap_or(scheme)),
            None => host_origin(proto.as_deref().unwrap_or(scheme), headers),
        }
    };
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client_ip = match forwarded("x-forwarded-for").and_then(|v| v.parse::<IpAddr>().ok()) {
        Some(ip) => Some(ip),
        None => peer,
    };
    req.extensions_mut().insert(ClientIp(client_ip));
    let h = req.headers_mut();
    h.remove(ORIGIN_HEADER);
    if let Ok(v) = HeaderValue::from_str(&origin) {
        h.insert(ORIGIN_HEADER, v);
    }
    next.run(req).await
}
