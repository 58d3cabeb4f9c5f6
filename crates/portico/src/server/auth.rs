//! Who is asking: the request context every handler gets. For now the only principal is the
//! operator, proven by the admin bearer token; identity (users, SMART apps) plugs in here.

use super::AppState;
use super::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use portico_policy::{Principal, RequestContext};

/// The authenticated request context. Extracting it fails with 401 when no valid
/// credential is presented.
pub struct Ctx(pub RequestContext);

/// Compare secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // The audit layer made the request's scope; without it (a handler called outside the
        // router) a fresh one still collects every decision.
        let scope = parts
            .extensions
            .get::<portico_audit::Scope>()
            .cloned()
            .unwrap_or_else(|| portico_audit::Scope::new(&uuid::Uuid::new_v4().to_string()));
        let expected = state.config.admin_token.as_bytes();
        if expected.is_empty() {
            return Err(ApiError::unauthorized(
                "No credentials are configured on this server: set PORTICO_ADMIN_TOKEN to use the FHIR API.",
            ));
        }
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        match presented {
            None => Err(ApiError::unauthorized("Authorization: Bearer <token> is required.")),
            Some(t) if constant_time_eq(t.as_bytes(), expected) => {
                Ok(Ctx(RequestContext::with_scope(Principal::Operator, scope)))
            }
            Some(_) => Err(ApiError::unauthorized("The bearer token is not valid.")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
