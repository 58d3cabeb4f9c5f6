//! What a Consent write must satisfy before the gate is asked: the engine must be able to
//! enforce it exactly (`parse_consent`), and it must belong to the patient the writer acts
//! for. A refusal names the element at fault.

use crate::server::error::ApiError;
use axum::http::StatusCode;
use portico_policy::consent::{ConsentError, ConsentRecord, parse_consent};
use portico_policy::{Principal, RequestContext};
use serde_json::{Value, json};

/// Check a Consent body about to be written (create, update, PATCH result, `$revoke`,
/// transaction entry).
pub fn check_write(ctx: &RequestContext, body: &Value) -> Result<ConsentRecord, ApiError> {
    let record = parse_consent(body).map_err(invalid)?;
    match &ctx.principal {
        // The operator administers every patient's consents.
        Principal::Operator => {}
        _ if ctx.acting_for.as_deref() == Some(record.patient.as_str()) => {}
        _ => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Consent.patient: a consent can only be recorded for the patient you act for.",
            ));
        }
    }
    Ok(record)
}

/// 422 with the element (`Consent.<path>`) and the engine's sentence.
pub fn invalid(e: ConsentError) -> ApiError {
    let expression = if e.path.is_empty() { "Consent".to_string() } else { format!("Consent.{}", e.path) };
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "business-rule",
        format!("The consent cannot be accepted: {expression}: {}", e.message),
    )
    .with_issues(vec![json!({
        "severity": "error",
        "code": "business-rule",
        "diagnostics": e.message,
        "expression": [expression],
    })])
}
