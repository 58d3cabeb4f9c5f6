//! The identity layer's one error type. Its variants are the OAuth 2.0 error codes
//! (RFC 6749 §5.2, RFC 7009, RFC 6750), so the HTTP edge maps each to its status once.

use portico_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidRequest(String),
    /// Client authentication failed (401).
    #[error("{0}")]
    InvalidClient(String),
    /// A code, refresh token or credential is invalid, expired, revoked or not this client's.
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("unsupported grant_type")]
    UnsupportedGrantType,
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    AccessDenied(String),
    /// A bearer token that is missing, malformed, expired or revoked (RFC 6750).
    #[error("{0}")]
    InvalidToken(String),
    /// The storage layer failed.
    #[error("storage failure")]
    Store(#[from] StoreError),
    /// Signing or key handling failed.
    #[error("internal error")]
    Internal(String),
}

impl AuthError {
    /// The OAuth `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::InvalidClient(_) => "invalid_client",
            AuthError::InvalidGrant(_) => "invalid_grant",
            AuthError::UnauthorizedClient(_) => "unauthorized_client",
            AuthError::UnsupportedGrantType => "unsupported_grant_type",
            AuthError::InvalidScope(_) => "invalid_scope",
            AuthError::AccessDenied(_) => "access_denied",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::Store(StoreError::Unavailable(_)) => "temporarily_unavailable",
            AuthError::Store(_) | AuthError::Internal(_) => "server_error",
        }
    }
}
