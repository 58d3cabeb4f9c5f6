//! Request bodies: size-limited, UTF-8, well-formed JSON objects without duplicate keys or
//! hostile nesting — rejected as OperationOutcomes before anything else looks at them.

use crate::server::AppState;
use crate::server::error::ApiError;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde_json::Value;

/// The raw body bytes, read up to the configured limit (413 beyond it).
pub struct RawBody(pub axum::body::Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-long",
                format!("The request body is larger than {limit} bytes."),
            )
        })?;
        Ok(RawBody(bytes))
    }
}

/// Parse a resource (or Bundle, Parameters) body.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("The request body is empty."));
    }
    portico_fhir::json::parse_resource_json(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "structure", e.to_string()))
}

/// Parse a JSON Patch body (a top-level array) through the same intake guard as resources,
/// so duplicate keys, hostile nesting and invalid UTF-8 are refused here too. The guard takes
/// objects, so the body is first checked to be exactly one JSON value, then wrapped in one.
pub fn parse_json_patch(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("The request body is empty."));
    }
    let structure = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "structure", m);
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| structure(format!("The patch is not valid JSON: {e}")))?;
    let mut wrapped = Vec::with_capacity(bytes.len() + 10);
    wrapped.extend_from_slice(b"{\"patch\":");
    wrapped.extend_from_slice(bytes);
    wrapped.push(b'}');
    match portico_fhir::json::parse_resource_json(&wrapped) {
        Ok(Value::Object(mut o)) => o.remove("patch").ok_or_else(ApiError::internal),
        Ok(_) => Err(ApiError::internal()),
        Err(e) => Err(structure(format!("The patch is not acceptable JSON: {e}"))),
    }
}
