//! Rate limits (GCRA, `governor`): every request per source address, every token's client,
//! and — stricter — sign-in and token requests per source address. Over the limit: 429
//! with `Retry-After`. Limits are per process (each server process counts its own).

use super::AppState;
use super::error::ApiError;
use super::origin::ClientIp;
use crate::config::LimitsConfig;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

/// The server's limiters (None: unlimited).
#[derive(Clone, Default)]
pub struct Limits {
    per_ip: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    per_client: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    auth_per_ip: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_minute: u32) -> Option<Arc<DefaultKeyedRateLimiter<K>>> {
    // A burst of a quarter of the minute's allowance (at least 5), refilled evenly.
    let n = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new((per_minute / 4).max(5).min(per_minute)).unwrap_or(n);
    Some(Arc::new(RateLimiter::keyed(Quota::per_minute(n).allow_burst(burst))))
}

/// Seconds until the limiter admits the key again, or None when it admits it now.
fn check<K: std::hash::Hash + Eq + Clone>(l: &Option<Arc<DefaultKeyedRateLimiter<K>>>, key: &K) -> Option<u32> {
    let l = l.as_ref()?;
    l.check_key(key).err().map(|nu| {
        let wait = nu.wait_time_from(DefaultClock::default().now());
        u32::try_from(wait.as_secs()).unwrap_or(u32::MAX).max(1)
    })
}

fn too_many(retry_after: u32) -> ApiError {
    let mut e = ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "throttled", "Too many requests; slow down.");
    e.retry_after = Some(retry_after);
    e
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Limits {
        Limits {
            per_ip: limiter(cfg.per_ip_per_minute),
            per_client: limiter(cfg.per_client_per_minute),
            auth_per_ip: limiter(cfg.auth_per_ip_per_minute),
        }
    }

    /// Called by the gateway once it knows the request's client.
    pub fn check_client(&self, client: &str) -> Result<(), ApiError> {
        match check(&self.per_client, &client.to_string()) {
            Some(wait) => Err(too_many(wait)),
            None => Ok(()),
        }
    }

    /// Forget idle keys (called periodically so the maps do not grow without bound).
    pub fn retain_recent(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
        }
        if let Some(l) = &self.per_client {
            l.retain_recent();
        }
        if let Some(l) = &self.auth_per_ip {
            l.retain_recent();
        }
    }
}

/// Sign-in, step-up and token requests (not the pages that show the forms): the stricter
/// per-address limit.
fn is_auth_request(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST
        && (matches!(path, "/oauth2/token" | "/oauth2/login" | "/oauth2/introspect" | "/oauth2/revoke")
            || path.starts_with("/api/portal/step-up"))
}

pub async fn rate_limit_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = req.extensions().get::<ClientIp>().and_then(|c| c.0);
    if let Some(ip) = ip {
        let limits = &state.limits;
        let strict =
            if is_auth_request(req.method(), req.uri().path()) { check(&limits.auth_per_ip, &ip) } else { None };
        if let Some(wait) = strict.or_else(|| check(&limits.per_ip, &ip)) {
            return too_many(wait).into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_after_the_burst_and_say_when_to_retry() {
        let l =
            Limits::new(&LimitsConfig { per_ip_per_minute: 0, per_client_per_minute: 20, auth_per_ip_per_minute: 0 });
        let ok = (0..20).filter(|_| l.check_client("app").is_ok()).count();
        // A burst of a quarter of the minute (5), then one more as the bucket refills at most.
        assert!((5..=6).contains(&ok), "burst admitted {ok}");
        let e = l.check_client("app").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(e.retry_after.is_some_and(|s| s >= 1));
        assert!(l.check_client("other-app").is_ok(), "limits are per client");
    }
}
