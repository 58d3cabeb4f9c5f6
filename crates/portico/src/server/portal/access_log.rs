//! `GET /api/portal/access-log`: who looked at or changed a patient's data, in plain
//! language, newest first — filterable by date (`from`, `to`), person (`who`), app (`app`)
//! and data category (`category`), paged with `cursor`. Reading it is itself audited (and
//! shows up in the log as "viewed your access log").
//!
//! Whose log: a patient principal always gets their own; the operator names the patient
//! with `?patient=`. [`subject_patient`] is where the identity issue binds the logged-in
//! patient (and later a caregiver's acted-for patient).

use crate::server::AppState;
use crate::server::auth::Ctx;
use crate::server::error::ApiError;
use crate::server::fhir::audit_event::{actor_key, date_bounds};
use crate::server::fhir::service::{parse_query_string, refusal};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portico_audit::plain::describe;
use portico_audit::{Entity, EntityRole, Interaction};
use portico_policy::{Action, Principal, RequestContext};
use portico_store::AuditQuery;
use serde_json::json;

/// Entries per page when the client names no `count`, and the most it may ask for.
const DEFAULT_COUNT: usize = 50;
const MAX_COUNT: usize = 200;

/// The patient whose data the request is about: a patient principal's own (asking for
/// someone else's looks like asking for nothing: 404); the operator must name one.
pub fn subject_patient(ctx: &RequestContext, requested: Option<&str>) -> Result<String, ApiError> {
    match (&ctx.principal, requested) {
        (Principal::Patient { patient }, None) => Ok(patient.clone()),
        (Principal::Patient { patient }, Some(p)) if p == patient => Ok(patient.clone()),
        (Principal::Patient { .. }, Some(_)) => Err(ApiError::not_found("No such patient.")),
        (Principal::Operator, Some(p)) if portico_fhir::extract::is_fhir_id(p) => Ok(p.to_string()),
        (Principal::Operator, _) => Err(ApiError::bad_request("Name the patient: ?patient=<Patient id>.")),
        (Principal::Caregiver { patients, .. }, requested) => match (&ctx.acting_for, requested) {
            (Some(p), None) if patients.contains(p) => Ok(p.clone()),
            (Some(p), Some(r)) if p == r && patients.contains(p) => Ok(p.clone()),
            _ => Err(ApiError::not_found("No such patient.")),
        },
        (Principal::Anonymous, _) => Err(ApiError::unauthorized("Sign in to see an access log.")),
        (Principal::Clinician { .. } | Principal::Admin { .. } | Principal::System { .. }, _) => {
            Err(ApiError::not_found("No such patient."))
        }
    }
}

pub async fn get_access_log(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = parse_query_string(q.as_deref().unwrap_or(""));
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    ctx.scope.begin(Interaction::AccessLog, Some("AuditEvent"));
    ctx.scope.edit(|r| r.query = Some(params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")));
    let patient = subject_patient(&ctx, get("patient"))?;
    ctx.scope.edit(|r| r.patients.push(patient.clone()));
    let mut query = AuditQuery { patient: Some(patient.clone()), count: DEFAULT_COUNT, ..AuditQuery::default() };
    for (k, v) in &params {
        match k.as_str() {
            "patient" => {}
            "from" => date_bounds(&format!("ge{v}"), &mut query.since_ms, &mut query.until_ms)?,
            "to" => date_bounds(&format!("le{v}"), &mut query.since_ms, &mut query.until_ms)?,
            "who" => query.actors.push(if v == "me" { ctx.principal.actor().key() } else { actor_key(v) }),
            "app" => query.clients.push(v.clone()),
            "category" => {
                if !portico_fhir::classify::CATEGORIES.contains(&v.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "Unknown category; one of: {}",
                        portico_fhir::classify::CATEGORIES.join(", ")
                    )));
                }
                query.category = Some(v.clone());
            }
            "cursor" => query.before_seq = Some(v.parse().map_err(|_| ApiError::bad_request("invalid cursor"))?),
            "count" => {
                query.count = v
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request("count must be a number"))?
                    .clamp(1, MAX_COUNT);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "Unknown parameter '{}'.",
                    other.chars().take(64).collect::<String>()
                )));
            }
        }
    }
    let permit = state.gate.permit_search(&ctx, Action::Search, Some("AuditEvent")).map_err(|r| refusal(r, false))?;
    if permit.compartments().is_some_and(|allowed| !allowed.contains(&patient)) {
        return Err(ApiError::not_found("No such patient."));
    }
    let page = state.store.audit_search(&permit, &query).await?;
    ctx.scope.edit(|r| {
        r.entities.extend(page.entries.iter().map(|e| Entity {
            reference: format!("AuditEvent/{}", e.seq),
            role: EntityRole::Match,
            category: String::new(),
            patients: vec![patient.clone()],
        }))
    });
    let entries: Vec<_> = page
        .entries
        .iter()
        .map(|e| {
            let d = describe(&e.record, &patient);
            json!({
                "id": e.seq.to_string(),
                "when": d.when,
                "who": d.who,
                "app": d.app,
                "text": d.text,
                "categories": d.categories,
                "outcome": d.outcome,
            })
        })
        .collect();
    let next = page.next.map(|n| {
        let keep: Vec<(String, String)> = params.iter().filter(|(k, _)| k != "cursor").cloned().collect();
        format!(
            "/api/portal/access-log?{}",
            crate::server::fhir::urls::query_string(&keep, Some(("cursor", &n.to_string())))
        )
    });
    let body = json!({"patient": patient, "entries": entries, "next": next});
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
