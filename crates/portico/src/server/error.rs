//! The HTTP edge's one error type: every failure becomes a FHIR OperationOutcome with the
//! right status, mapped here and nowhere else. 500 bodies are generic; details go to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portico_store::StoreError;
use serde_json::json;

/// An error answered to a FHIR client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// FHIR IssueType code.
    pub code: &'static str,
    pub diagnostics: String,
    /// Extra issues (e.g. validation findings).
    pub issues: Vec<serde_json::Value>,
    pub retry_after: Option<u32>,
    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750), or of a 403 that needs step-up.
    pub challenge: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            diagnostics: diagnostics.into(),
            issues: Vec::new(),
            retry_after: None,
            challenge: None,
        }
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", msg)
    }
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "login", msg)
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", msg)
    }
    pub fn unavailable() -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "transient", "The service is busy; retry shortly.");
        e.retry_after = Some(1);
        e
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "Internal error.")
    }
    /// 401 for a bearer token that is malformed, unknown, expired or revoked — the same
    /// answer whichever it was.
    pub fn invalid_token() -> Self {
        let mut e = Self::unauthorized("The access token is invalid, expired or revoked.");
        e.challenge = Some("Bearer realm=\"portico\", error=\"invalid_token\"".into());
        e
    }
    pub fn with_issues(mut self, issues: Vec<serde_json::Value>) -> Self {
        self.issues = issues;
        self
    }

    /// The OperationOutcome body.
    pub fn outcome(&self) -> serde_json::Value {
        let mut issues = vec![json!({"severity": "error", "code": self.code, "diagnostics": self.diagnostics})];
        issues.extend(self.issues.iter().cloned());
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::VersionConflict { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "conflict",
                "The resource has changed: If-Match does not name the current version.",
            ),
            StoreError::StalePermit | StoreError::Conflict | StoreError::ConditionMatched => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "A concurrent change to this resource conflicted with the request; retry.",
            ),
            StoreError::MultipleMatches => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "multiple-matches",
                "The conditional criteria match more than one resource.",
            ),
            StoreError::BadQuery(m) => ApiError::bad_request(m),
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "storage unavailable");
                ApiError::unavailable()
            }
            StoreError::Database(e) => {
                tracing::error!(error = %e, "storage failure");
                ApiError::internal()
            }
            StoreError::AuditChain(m) => {
                // Fail closed: nothing is answered that could not be recorded.
                tracing::error!(error = %m, "audit trail unavailable; request refused");
                ApiError::unavailable()
            }
            StoreError::Migration(m) => {
                tracing::error!(error = %m, "migration failure");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.outcome().to_string();
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(super::FHIR_JSON));
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        match (&self.challenge, self.status) {
            (Some(c), _) => {
                if let Ok(v) = HeaderValue::from_str(c) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            (None, StatusCode::UNAUTHORIZED) => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"portico\""));
            }
            _ => {}
        }
        resp
    }
}
