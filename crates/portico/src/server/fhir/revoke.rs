//! `POST /fhir/Consent/{id}/$revoke` (optional `Parameters` with `reason`): the consent's
//! status becomes `inactive` through the ordinary write path, so the change gets its signed
//! consent event and its audit record. Revoking an inactive consent changes nothing and
//! answers 200 with the current version (idempotent).

use super::body::{RawBody, parse_json};
use super::headers::{prefer, resource_response};
use super::service::{Fhir, check_type};
use super::urls;
use crate::server::AppState;
use crate::server::auth::Ctx;
use crate::server::error::ApiError;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

/// `POST /fhir/{type}/{id}/{op}`: only `Consent/{id}/$revoke` exists.
pub async fn post_instance_op(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path((rt, id, op)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    check_type(&rt)?;
    if rt != "Consent" || op != "$revoke" {
        return Err(ApiError::not_found("Unknown operation."));
    }
    let reason = if body.is_empty() { None } else { reason_of(&parse_json(&body)?)? };
    let fhir = Fhir::new(&state);
    let (v, _changed) = crate::consent::revoke::revoke(&fhir, &ctx, &id, reason.as_deref()).await?;
    Ok(resource_response(StatusCode::OK, &v, &urls::base_url(&headers), prefer(&headers).ret))
}

/// The `reason` of a `Parameters` body (`valueString`), if given.
fn reason_of(p: &Value) -> Result<Option<String>, ApiError> {
    if p.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(ApiError::bad_request("$revoke takes a Parameters resource (or no body)."));
    }
    let mut reason = None;
    for param in p.get("parameter").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        match param.get("name").and_then(Value::as_str) {
            Some("reason") => match param.get("valueString").and_then(Value::as_str) {
                Some(r) => reason = Some(r.to_string()),
                None => return Err(ApiError::bad_request("The reason parameter needs a valueString.")),
            },
            _ => return Err(ApiError::bad_request("$revoke takes only the parameter 'reason'.")),
        }
    }
    Ok(reason)
}
