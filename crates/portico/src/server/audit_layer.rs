//! The audit layer: every request gets an audit scope (its id, where it came from); the gate
//! writes each decision into it; before the response leaves, every record not already
//! written with a write's own transaction is handed to the audit trail — committed first
//! (`direct`, `batched`), or queued within the bounds of the `deferred` mode (see
//! `crate::audit`). If it cannot be recorded the client gets a 503 instead of the response.

use super::AppState;
use super::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use portico_audit::{Actor, Interaction, Scope};
use std::net::SocketAddr;

pub async fn audit_layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let scope = Scope::new(&request_id);
    let source = match req.extensions().get::<super::origin::ClientIp>() {
        Some(ip) => ip.0.map(|ip| ip.to_string()),
        None => req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()),
    };
    scope.set_origin(source, None);
    req.extensions_mut().insert(scope.clone());
    let path = req.uri().path().to_string();
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED {
        record_unauthenticated(&scope, &path);
    }
    // Deferred mode: queued without waiting while the appender keeps up (bounded);
    // otherwise the response waits for the commit.
    if state.audit.finish_response(&scope, resp.status().as_u16()).await.is_err() {
        resp = ApiError::unavailable().into_response();
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// A 401 refused before any decision (no token, an unknown, expired or revoked token, no
/// session) is a deny too, and gets its record: the path asked for (never the credential).
/// Refusals that already recorded themselves (a client failing to authenticate at the token
/// endpoint) are left alone, so each interaction still has exactly one record.
fn record_unauthenticated(scope: &Scope, path: &str) {
    if scope.mark() > 0 || scope.has_pending() {
        return;
    }
    super::oauth::audit::record(
        scope,
        Interaction::Authenticate,
        Some(Actor::new("anonymous", "")),
        None,
        &[],
        Some(("authentication-required", "No valid credential was presented.")),
    );
    // Long paths are cut: the record is evidence of the attempt, not a copy of the request.
    let path: String = path.chars().take(256).collect();
    scope.edit(|r| r.query = Some(path));
}
