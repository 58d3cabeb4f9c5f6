//! Break-the-glass: a clinician declares emergency access to one patient with a stated
//! reason. The session is a row (`break_glass`, migration 0005) with its start and its end
//! (`breakGlass.maxMinutes` of the operator rules); while it lasts, the gateway
//! ([`apply`]) gives the clinician's requests purpose `ETREAT`, the reason and the start
//! time, and the engine decides them as emergency access (reads only, flagged, audited with
//! the reason). When it ends the clinician's requests are ordinary again.

use crate::server::AppState;
use crate::server::error::ApiError;
use axum::http::StatusCode;
use portico_policy::{Principal, RequestContext};
use portico_store::consent::BreakGlassRow;

/// Longest reason kept (it is stored, audited and shown to the patient).
pub const MAX_REASON: usize = 500;

/// The reason as it will be recorded: trimmed, non-blank, at most [`MAX_REASON`]
/// characters, no control characters but spaces.
pub fn check_reason(reason: Option<&str>) -> Result<String, ApiError> {
    let r = reason.map(str::trim).unwrap_or_default();
    if r.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "required",
            "Emergency access needs a stated reason; it is recorded and the patient is told.",
        ));
    }
    if r.chars().count() > MAX_REASON {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-long",
            format!("The reason may be at most {MAX_REASON} characters long."),
        ));
    }
    Ok(r.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
}

/// Start a session for the clinician `ctx` names; answers the stored row.
pub async fn start(
    state: &AppState,
    ctx: &RequestContext,
    patient: &str,
    reason: &str,
) -> Result<BreakGlassRow, ApiError> {
    let Principal::Clinician { user, .. } = &ctx.principal else {
        return Err(ApiError::forbidden("Only clinicians can use emergency access."));
    };
    let Some(minutes) = state.gate.rules().break_glass_minutes else {
        return Err(ApiError::forbidden("Emergency access is switched off on this server."));
    };
    if !portico_fhir::extract::is_fhir_id(patient) {
        return Err(ApiError::bad_request("patient must be a Patient id."));
    }
    let row = BreakGlassRow {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user.clone(),
        patient: patient.to_string(),
        reason: reason.to_string(),
        started_ms: ctx.now_ms,
        expires_ms: ctx.now_ms + minutes * 60_000,
    };
    state.consents.break_glass_start(&row).await?;
    Ok(row)
}

/// Give a clinician's request its break-the-glass session, if one is running: purpose
/// `ETREAT`, the reason and the start time, acting for that patient. The gateway calls this
/// for every authenticated request; it costs a lookup for clinicians only. A request that
/// already acts for another patient (a token's patient context) is left alone.
pub async fn apply(state: &AppState, ctx: &mut RequestContext) -> Result<(), ApiError> {
    let Principal::Clinician { user, .. } = &ctx.principal else { return Ok(()) };
    let Some(row) = state.consents.break_glass_active(user, ctx.now_ms).await? else { return Ok(()) };
    if ctx.acting_for.as_ref().is_some_and(|p| *p != row.patient) {
        return Ok(());
    }
    ctx.acting_for = Some(row.patient);
    ctx.purpose = Some("ETREAT".to_string());
    ctx.break_glass_reason = Some(row.reason);
    ctx.break_glass_at_ms = Some(row.started_ms);
    ctx.scope.set_actor(ctx.principal.actor(), None, ctx.client.clone(), ctx.purpose.clone());
    Ok(())
}
