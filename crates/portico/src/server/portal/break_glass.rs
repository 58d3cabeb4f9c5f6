//! `POST /api/portal/break-glass {"patient": "…", "reason": "…"}`: a clinician starts
//! emergency access to one patient's record (see `crate::consent::break_glass`). The start
//! is audited as its own record (interaction `break-glass`, purpose `ETREAT`, the reason in
//! its query, the patient), and so is every read made under it (rule `break-the-glass`, flagged).

use crate::consent::break_glass;
use crate::server::AppState;
use crate::server::auth::Ctx;
use crate::server::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portico_audit::Interaction;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    patient: String,
    #[serde(default)]
    reason: Option<String>,
}

pub async fn post_break_glass(State(state): State<AppState>, Ctx(ctx): Ctx, body: Bytes) -> Result<Response, ApiError> {
    if body.len() > 8 * 1024 {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", "The request body is too large."));
    }
    let req: Request =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("The JSON body is not valid: {e}")))?;
    ctx.scope.begin(Interaction::BreakGlass, Some("Patient"));
    ctx.scope.set_actor(ctx.principal.actor(), None, ctx.client.clone(), Some("ETREAT".into()));
    if portico_fhir::extract::is_fhir_id(&req.patient) {
        ctx.scope.requested(format!("Patient/{}", req.patient));
        ctx.scope.edit(|r| r.patients.push(req.patient.clone()));
    }
    let reason = break_glass::check_reason(req.reason.as_deref())?;
    // The record's `reason` field is kept for a denial's reason; the stated reason goes into
    // its query text (escaped by the canonical encoding like every value).
    ctx.scope.edit(|r| r.query = Some(format!("break-glass reason={reason}")));
    let row = break_glass::start(&state, &ctx, &req.patient, &reason).await?;
    let at = portico_fhir::datetime::format_instant;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "patient": row.patient,
            "reason": row.reason,
            "started": at(row.started_ms),
            "expires": at(row.expires_ms),
            "purpose": "ETREAT",
        })),
    )
        .into_response())
}
