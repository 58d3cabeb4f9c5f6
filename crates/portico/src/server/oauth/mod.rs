//! portico's OAuth 2.0 / SMART App Launch authorization server: discovery, the
//! authorization-code flow with its login and approval pages, the token, revocation,
//! introspection, JWKS and userinfo endpoints. Rules live in `crate::identity`; this module
//! is HTTP only, and maps `AuthError` to OAuth error responses in one place.

pub mod audit;
pub mod authorize;
pub mod discovery;
pub mod pages;
pub mod register;
pub mod token;

use super::AppState;
use crate::identity::AuthError;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/smart-configuration", get(discovery::smart_configuration))
        .route("/.well-known/openid-configuration", get(discovery::openid_configuration))
        .route("/oauth2/authorize", get(authorize::get_authorize))
        .route("/oauth2/login", get(authorize::get_login).post(authorize::post_login))
        .route("/oauth2/approve", get(authorize::get_approve).post(authorize::post_approve))
        .route("/oauth2/logout", post(authorize::post_logout))
        .route("/oauth2/token", post(token::post_token))
        .route("/oauth2/revoke", post(token::post_revoke))
        .route("/oauth2/introspect", post(token::post_introspect))
        .route("/oauth2/jwks", get(discovery::jwks))
        .route("/oauth2/register", post(register::post_register))
        .route("/oauth2/userinfo", get(token::userinfo).post(token::userinfo))
}

/// An OAuth error response (RFC 6749 §5.2): JSON, `no-store`.
pub struct OAuthError(pub AuthError);

impl From<AuthError> for OAuthError {
    fn from(e: AuthError) -> Self {
        OAuthError(e)
    }
}

impl From<portico_store::StoreError> for OAuthError {
    fn from(e: portico_store::StoreError) -> Self {
        OAuthError(AuthError::Store(e))
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = match &e {
            AuthError::InvalidClient(_) | AuthError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            AuthError::AccessDenied(_) => StatusCode::FORBIDDEN,
            AuthError::Store(portico_store::StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Store(_) | AuthError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let description = match &e {
            AuthError::Store(err) => {
                tracing::error!(error = %err, "identity storage failure");
                "The server could not complete the request.".to_string()
            }
            AuthError::Internal(m) => {
                tracing::error!(error = %m, "identity failure");
                "The server could not complete the request.".to_string()
            }
            other => other.to_string(),
        };
        let mut resp =
            (status, axum::Json(json!({"error": e.code(), "error_description": description}))).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if status == StatusCode::UNAUTHORIZED {
            let challenge = if matches!(e, AuthError::InvalidToken(_)) {
                "Bearer realm=\"portico\", error=\"invalid_token\""
            } else {
                "Basic realm=\"portico\""
            };
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        resp
    }
}

/// Parse an `application/x-www-form-urlencoded` body; a repeated parameter is an error
/// (RFC 6749 §3.1) except those listed in `multi`.
pub fn parse_form(body: &[u8], multi: &[&str]) -> Result<Vec<(String, String)>, AuthError> {
    if body.len() > 64 * 1024 {
        return Err(AuthError::InvalidRequest("The request body is too large.".into()));
    }
    let pairs: Vec<(String, String)> =
        form_urlencoded_pairs(body).ok_or_else(|| AuthError::InvalidRequest("The form body is malformed.".into()))?;
    for (i, (k, _)) in pairs.iter().enumerate() {
        if !multi.contains(&k.as_str()) && pairs[..i].iter().any(|(p, _)| p == k) {
            return Err(AuthError::InvalidRequest(format!("The parameter '{k}' was given more than once.")));
        }
    }
    Ok(pairs)
}

fn form_urlencoded_pairs(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let decode = |s: &str| -> Option<String> {
        let plus = s.replace('+', " ");
        percent_encoding::percent_decode_str(&plus).decode_utf8().ok().map(|c| c.into_owned())
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// The single-valued parameters of a form as a map.
pub fn single(pairs: &[(String, String)]) -> std::collections::HashMap<String, String> {
    pairs.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_refuse_repeats() {
        let p = parse_form(b"a=1+2&b=%C3%A9&scope=x&scope=y", &["scope"]).unwrap();
        assert_eq!(p[0], ("a".into(), "1 2".into()));
        assert_eq!(p[1], ("b".into(), "é".into()));
        assert!(parse_form(b"a=1&a=2", &[]).is_err());
        assert!(parse_form(b"a=%FF", &[]).is_err());
    }
}
