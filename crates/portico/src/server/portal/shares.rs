//! `/api/portal/shares`: the patient's sharing choices in the portal's simplified form (see
//! `crate::consent::shares`), each with its plain-language explanation; creating one needs
//! a fresh step-up and writes a FHIR Consent through the ordinary write path (so it gets its
//! signed event and audit record); deleting one revokes it. And
//! `/api/portal/consents/permitted`: what the patient's consents permitted a recipient at a
//! given time.
//!
//! Only the patient manages their shares, from the portal (an app's token cannot), or the
//! operator naming the patient with `?patient=`. A caregiver cannot. A share id that is not
//! the patient's answers 404, like one that does not exist.

use crate::consent::shares::{self, Share};
use crate::identity::PORTAL_CLIENT;
use crate::server::AppState;
use crate::server::auth::Ctx;
use crate::server::error::ApiError;
use crate::server::fhir::service::{Fhir, Handling, new_id, parse_query_string};
use crate::server::portal::account::step_up_required;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portico_audit::Interaction;
use portico_policy::consent::parse_consent;
use portico_policy::{Principal, RequestContext, Sensitive};
use portico_store::{StoredVersion, WriteKind};
use serde_json::{Value, json};

/// Most shares listed (a patient has a handful).
const MAX_LISTED: usize = 200;
/// Largest share body accepted.
const MAX_BODY: usize = 16 * 1024;

/// The patient whose shares `ctx` may manage: a patient their own (another patient's: 404),
/// the operator the one named by `?patient=`; nobody else.
fn owner(ctx: &RequestContext, requested: Option<&str>) -> Result<String, ApiError> {
    match (&ctx.principal, requested) {
        (Principal::Patient { patient }, None) => Ok(patient.clone()),
        (Principal::Patient { patient }, Some(p)) if p == patient => Ok(patient.clone()),
        (Principal::Patient { .. }, Some(_)) => Err(ApiError::not_found("No such patient.")),
        (Principal::Operator, Some(p)) if portico_fhir::extract::is_fhir_id(p) => Ok(p.to_string()),
        (Principal::Operator, _) => Err(ApiError::bad_request("Name the patient: ?patient=<Patient id>.")),
        _ => Err(ApiError::forbidden("Only the patient can manage who their records are shared with.")),
    }
}

/// Shares are managed in the portal itself: an app acting for the patient may not widen
/// who sees the record.
fn from_portal(ctx: &RequestContext) -> Result<(), ApiError> {
    match (&ctx.principal, ctx.client.as_deref()) {
        (Principal::Operator, _) | (_, Some(PORTAL_CLIENT)) => Ok(()),
        _ => Err(ApiError::forbidden("Sharing is managed in the portal, not through an app.")),
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One listed consent: the share it is (if it has a share's shape) and its explanation.
fn describe(v: &StoredVersion, now_ms: i64) -> Option<Value> {
    let body: Value = serde_json::from_str(&v.body).ok()?;
    let record = parse_consent(&body).ok()?;
    Some(json!({
        "id": v.id,
        "version": v.version,
        "status": record.status.as_str(),
        "lastUpdated": v.last_updated,
        "share": shares::from_consent(&body),
        "explanation": portico_policy::explain::consent(&record, now_ms).join(" "),
    }))
}

/// `GET /api/portal/shares`.
pub async fn get_shares(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = parse_query_string(q.as_deref().unwrap_or(""));
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let patient = owner(&ctx, get("patient"))?;
    let fhir = Fhir::new(&state);
    let query = vec![("patient".to_string(), format!("Patient/{patient}")), ("_count".into(), MAX_LISTED.to_string())];
    let (_, page) = fhir.search(&ctx, Some("Consent"), &query, Handling::Lenient).await?;
    let list: Vec<Value> = page.entries.iter().filter_map(|v| describe(v, ctx.now_ms)).collect();
    Ok(json_response(StatusCode::OK, json!({"patient": patient, "shares": list})))
}

/// `POST /api/portal/shares` with a share (see `crate::consent::shares::Share`).
pub async fn post_share(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = parse_query_string(q.as_deref().unwrap_or(""));
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let patient = owner(&ctx, get("patient"))?;
    from_portal(&ctx)?;
    if !matches!(ctx.principal, Principal::Operator) {
        state.gate.require_step_up(&ctx, Sensitive::CreateShare, state.identity.step_up_fresh_ms()).map_err(
            |r| match r.audit_failure {
                Some(_) => ApiError::unavailable(),
                None => step_up_required(&r.verdict.map(|v| v.reason).unwrap_or_default()),
            },
        )?;
    }
    if body.len() > MAX_BODY {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", "The request body is too large."));
    }
    let share: Share =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("The share is not valid: {e}")))?;
    shares::check(&share).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "business-rule", format!("{}: {}", e.field, e.message))
            .with_issues(vec![json!({"severity": "error", "code": "business-rule", "diagnostics": e.message,
                "expression": [e.field]})])
    })?;
    let fhir = Fhir::new(&state);
    let id = new_id();
    let given = portico_fhir::datetime::format_instant(ctx.now_ms);
    ctx.scope.begin(Interaction::Create, Some("Consent"));
    ctx.scope.edit(|r| r.query = Some("share".into()));
    let consent =
        fhir.validated_body("Consent", &id, shares::to_consent(&share, &id, &patient, &given), Handling::Strict)?;
    let result = fhir.write_one(&ctx, WriteKind::Create, "Consent", &id, Some(consent), None, None).await?;
    let described = describe(&result.stored, ctx.now_ms).ok_or_else(ApiError::internal)?;
    let mut resp = json_response(StatusCode::CREATED, described);
    if let Ok(v) = HeaderValue::from_str(&format!("/api/portal/shares/{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// `DELETE /api/portal/shares/{id}`: revoke (idempotent).
pub async fn delete_share(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = parse_query_string(q.as_deref().unwrap_or(""));
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let patient = owner(&ctx, get("patient"))?;
    from_portal(&ctx)?;
    let fhir = Fhir::new(&state);
    if !portico_fhir::extract::is_fhir_id(&id) {
        return Err(ApiError::not_found("No such share."));
    }
    // Through the gate: another patient's consent is invisible (404), like an absent one.
    let current = fhir.read(&ctx, "Consent", &id).await.map_err(hide)?;
    let body: Value = serde_json::from_str(&current.body).map_err(|_| ApiError::internal())?;
    if parse_consent(&body).map(|c| c.patient) != Ok(patient) {
        return Err(ApiError::not_found("No such share."));
    }
    let reason = get("reason");
    let (v, _) = crate::consent::revoke::revoke(&fhir, &ctx, &id, reason).await.map_err(hide)?;
    Ok(json_response(StatusCode::OK, describe(&v, ctx.now_ms).ok_or_else(ApiError::internal)?))
}

/// A share that cannot be found or seen, or is deleted, is simply not there.
fn hide(e: ApiError) -> ApiError {
    if matches!(e.status, StatusCode::NOT_FOUND | StatusCode::GONE) { ApiError::not_found("No such share.") } else { e }
}

/// `GET /api/portal/consents/permitted?recipient=Practitioner/x&at=<instant>[&purpose=TREAT]`
/// (the operator adds `&patient=`).
pub async fn get_permitted(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = parse_query_string(q.as_deref().unwrap_or(""));
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    for (k, _) in &params {
        if !matches!(k.as_str(), "patient" | "recipient" | "at" | "purpose") {
            return Err(ApiError::bad_request(format!(
                "Unknown parameter '{}'.",
                k.chars().take(64).collect::<String>()
            )));
        }
    }
    let patient = owner(&ctx, get("patient"))?;
    let recipient =
        get("recipient").ok_or_else(|| ApiError::bad_request("Name the recipient: ?recipient=Practitioner/<id>."))?;
    let at_ms = match get("at") {
        None => ctx.now_ms,
        Some(t) => portico_fhir::datetime::parse_range(t)
            .map(|(low, _)| low)
            .ok_or_else(|| ApiError::bad_request("at must be a date or an instant (2026-03-01T12:00:00Z)."))?,
    };
    let purpose = get("purpose").unwrap_or("TREAT");
    if purpose.is_empty() || purpose.len() > 16 || !purpose.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::bad_request("purpose must be a PurposeOfUse code such as TREAT."));
    }
    ctx.scope.begin(Interaction::HistoryType, Some("Consent"));
    ctx.scope.edit(|r| {
        r.query = Some(format!("permitted?recipient={recipient}&at={}", portico_fhir::datetime::format_instant(at_ms)));
        r.patients.push(patient.clone());
    });
    let answer = crate::consent::permitted::permitted(&state, &ctx, &patient, recipient, at_ms, purpose).await?;
    Ok(json_response(StatusCode::OK, answer))
}
