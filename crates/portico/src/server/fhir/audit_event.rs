//! `/fhir/AuditEvent`: the audit log, read-only, rendered as R4 AuditEvents (IHE BALP
//! shape). Reads and searches go through the gate like any clinical data — a patient sees
//! only records about themself, redacted to their own data — and are themselves audited.
//! Nobody writes AuditEvents through the API: create, update, patch and delete answer 405
//! (the routes have no such methods), and a transaction entry that tries is refused by the
//! gate (rule `audit-append-only`).

use super::body::RawBody;
use super::headers::{fhir_json, prefer, require_form};
use super::service::{Handling, parse_query_string, refusal};
use super::urls;
use crate::server::AppState;
use crate::server::auth::Ctx;
use crate::server::error::ApiError;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_audit::fhir::{Server, View, audit_event};
use portico_audit::{Entity, EntityRole, Interaction};
use portico_policy::{Action, Principal, RequestContext};
use portico_store::AuditQuery;
use portico_store::search::{DEFAULT_COUNT, MAX_COUNT};
use serde_json::{Value, json};

/// Name of this server in the records it renders.
pub const SERVER_NAME: &str = "portico";

/// The CapabilityStatement entry of AuditEvent: read-only, with the parameters above.
pub fn capability() -> Value {
    let params: Vec<Value> = [
        ("patient", "reference", "Records about this patient"),
        ("date", "date", "When the interaction happened (prefixes ge, gt, le, lt, eq)"),
        (
            "subtype",
            "token",
            "The RESTful interaction (read, vread, search-type, create, update, patch, delete, history-*, operation)",
        ),
        ("action", "token", "C, R, U, D or E"),
        ("outcome", "token", "0 success, 4 refused or failed, 8 server failure"),
        ("agent", "reference", "Who acted: operator or Patient/{id}"),
        ("type", "token", "Always rest"),
        ("_count", "number", "Page size; capped"),
        ("_total", "special", "accurate"),
        ("_summary", "special", "count"),
    ]
    .iter()
    .map(|(n, t, d)| json!({"name": n, "type": t, "documentation": d}))
    .collect();
    json!({
        "type": "AuditEvent",
        "documentation": "The audit trail, append-only: written by the server for every interaction, never through the API.",
        "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}],
        "versioning": "no-version",
        "readHistory": false,
        "updateCreate": false,
        "searchParam": params,
    })
}

/// The view a principal gets of records.
fn view_for(ctx: &RequestContext) -> Option<Vec<String>> {
    match &ctx.principal {
        Principal::Operator => None,
        Principal::Patient { patient } => Some(vec![patient.clone()]),
        // A caregiver sees the log of the one patient they act for.
        Principal::Caregiver { patients, .. } => {
            Some(ctx.acting_for.iter().filter(|p| patients.contains(p)).cloned().collect())
        }
        Principal::Clinician { .. } | Principal::Admin { .. } | Principal::System { .. } | Principal::Anonymous => {
            Some(Vec::new())
        }
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("AuditEvent resource not found.")
}

/// `GET /fhir/AuditEvent/{id}`.
pub async fn get_read(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read(&state, &ctx, &id, &headers).await
}

/// `GET /fhir/AuditEvent/{id}/_history/{vid}`: every AuditEvent has one version, `1`.
pub async fn get_vread(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path((id, vid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    ctx.scope.begin(Interaction::VRead, Some("AuditEvent"));
    if vid != "1" {
        ctx.scope.requested(format!("AuditEvent/{id}/_history/{}", vid.chars().take(20).collect::<String>()));
        return Err(not_found());
    }
    read(&state, &ctx, &id, &headers).await
}

/// `GET /fhir/AuditEvent/{id}/{op}`: the audit trail has no history or operations.
pub async fn get_instance_op(Path((_id, op)): Path<(String, String)>) -> ApiError {
    if op == "_history" { not_supported() } else { ApiError::not_found("Unknown operation.") }
}

/// `GET /fhir/AuditEvent/_history`.
pub async fn get_history() -> ApiError {
    not_supported()
}

fn not_supported() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "The audit trail is append-only: an AuditEvent has one version and no history.",
    )
}

async fn read(state: &AppState, ctx: &RequestContext, id: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    ctx.scope.ensure(Interaction::Read, Some("AuditEvent"));
    ctx.scope.requested(format!("AuditEvent/{}", id.chars().take(64).collect::<String>()));
    let seq: i64 = id.parse().ok().filter(|s| *s > 0).ok_or_else(not_found)?;
    let sealed = state.store.audit_read(seq).await?.ok_or_else(not_found)?;
    let decision = state.gate.decide(ctx, Action::Read, sealed.facts()).map_err(|r| refusal(r, true))?;
    let entry = sealed.open(&decision).map_err(|_| not_found())?;
    let base = urls::base_url(headers);
    let server = Server { name: SERVER_NAME, base_url: &base };
    let mine = view_for(ctx);
    let view = mine.as_deref().map_or(View::Full, View::Patients);
    let ev = audit_event(entry.seq, &entry.record, server, view);
    Ok(fhir_json(StatusCode::OK, ev.to_string()))
}

/// `GET /fhir/AuditEvent?…`.
pub async fn get_search(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = parse_query_string(q.as_deref().unwrap_or(""));
    search(&state, &ctx, params, &headers).await
}

/// `POST /fhir/AuditEvent/_search`.
pub async fn post_search(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let mut params = parse_query_string(q.as_deref().unwrap_or(""));
    if !body.is_empty() {
        require_form(&headers)?;
        let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("The form body is not UTF-8."))?;
        params.extend(parse_query_string(text));
    }
    search(&state, &ctx, params, &headers).await
}

/// A date parameter's bounds, ANDed into `[since, until)`.
pub fn date_bounds(value: &str, since: &mut Option<i64>, until: &mut Option<i64>) -> Result<(), ApiError> {
    let (prefix, rest) = match value.get(..2) {
        Some(p @ ("eq" | "ne" | "gt" | "lt" | "ge" | "le" | "sa" | "eb" | "ap")) => (p, &value[2..]),
        _ => ("eq", value),
    };
    let (lo, hi) = portico_fhir::datetime::parse_range(rest)
        .ok_or_else(|| ApiError::bad_request("date must be a FHIR date or dateTime, optionally with a prefix"))?;
    let (s, u) = match prefix {
        "eq" | "ap" => (Some(lo), Some(hi)),
        "ge" => (Some(lo), None),
        "gt" | "sa" => (Some(hi), None),
        "le" => (None, Some(hi)),
        "lt" | "eb" => (None, Some(lo)),
        _ => return Err(ApiError::bad_request("the ne prefix is not supported on AuditEvent.date")),
    };
    if let Some(s) = s {
        *since = Some(since.map_or(s, |x| x.max(s)));
    }
    if let Some(u) = u {
        *until = Some(until.map_or(u, |x| x.min(u)));
    }
    Ok(())
}

/// An actor key from an `agent` value: `Patient/x`, `operator`, or `kind/id`.
pub fn actor_key(v: &str) -> String {
    match v.split_once('/') {
        Some(("Patient", id)) => format!("patient/{id}"),
        Some((kind, id)) => format!("{}/{id}", kind.to_ascii_lowercase()),
        None if v == "operator" => "operator/operator".into(),
        None => format!("patient/{v}"),
    }
}

fn code_of(v: &str) -> &str {
    v.rsplit_once('|').map_or(v, |(_, c)| c)
}

/// Parse AuditEvent search parameters; unknown ones are returned to warn about.
fn parse(params: &[(String, String)]) -> Result<(AuditQuery, Vec<String>), ApiError> {
    let mut q = AuditQuery { count: DEFAULT_COUNT, ..AuditQuery::default() };
    let mut unknown = Vec::new();
    for (k, v) in params {
        let list = || v.split(',').map(str::trim).filter(|s| !s.is_empty());
        match k.as_str() {
            "patient" | "patient:Patient" => {
                if q.patient.is_some() {
                    return Err(ApiError::bad_request("AuditEvent search takes one patient."));
                }
                q.patient = Some(v.strip_prefix("Patient/").unwrap_or(v).to_string());
            }
            "date" => date_bounds(v, &mut q.since_ms, &mut q.until_ms)?,
            "subtype" => q.interactions.extend(list().map(|c| match code_of(c) {
                "operation" => "everything".to_string(),
                other => other.to_string(),
            })),
            "action" => q.actions.extend(list().map(str::to_string)),
            "outcome" => {
                for c in list() {
                    match c {
                        "0" => q.outcomes.push("success".into()),
                        "4" => q.outcomes.extend(["denied".to_string(), "failed".to_string()]),
                        "8" | "12" => q.outcomes.push("failed".into()),
                        other => q.outcomes.push(other.to_string()),
                    }
                }
            }
            "agent" | "agent:Patient" => q.actors.extend(list().map(actor_key)),
            "type" => {
                if list().any(|c| code_of(c) != "rest") {
                    q.interactions.push("none".into());
                }
            }
            "_count" => {
                q.count =
                    v.parse::<usize>().map_err(|_| ApiError::bad_request("_count must be a number"))?.min(MAX_COUNT);
            }
            "_cursor" => q.before_seq = Some(v.parse().map_err(|_| ApiError::bad_request("invalid paging cursor"))?),
            "_total" => q.total = v == "accurate",
            "_summary" if v == "count" => {
                q.total = true;
                q.count = 0;
            }
            "_format" | "_pretty" | "_sort" => {}
            other => unknown.push(other.chars().take(64).collect()),
        }
    }
    Ok((q, unknown))
}

async fn search(
    state: &AppState,
    ctx: &RequestContext,
    params: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let query_text = params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    ctx.scope.ensure(Interaction::SearchType, Some("AuditEvent"));
    ctx.scope.edit(|r| r.query = Some(query_text));
    let (q, unknown) = parse(&params)?;
    if prefer(headers).handling == Handling::Strict && !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Unknown or unsupported search parameter(s): {}",
            unknown.join(", ")
        )));
    }
    let permit = state.gate.permit_search(ctx, Action::Search, Some("AuditEvent")).map_err(|r| refusal(r, false))?;
    let page = state.store.audit_search(&permit, &q).await?;
    ctx.scope.edit(|r| {
        r.entities.extend(page.entries.iter().map(|e| Entity {
            reference: format!("AuditEvent/{}", e.seq),
            role: EntityRole::Match,
            category: String::new(),
            patients: e.record.patients.clone(),
        }))
    });
    let base = urls::base_url(headers);
    let path = format!("{base}/AuditEvent");
    let server = Server { name: SERVER_NAME, base_url: &base };
    let mine = view_for(ctx).or_else(|| permit.compartments().map(<[String]>::to_vec));
    let view = mine.as_deref().map_or(View::Full, View::Patients);
    let keep: Vec<(String, String)> = params.iter().filter(|(k, _)| k != "_cursor").cloned().collect();
    let mut links =
        vec![json!({"relation": "self", "url": urls::with_query(path.clone(), urls::query_string(&params, None))})];
    if let Some(next) = page.next {
        let url = urls::with_query(path.clone(), urls::query_string(&keep, Some(("_cursor", &next.to_string()))));
        links.push(json!({"relation": "next", "url": url}));
    }
    let entries: Vec<Value> = page
        .entries
        .iter()
        .map(|e| {
            json!({
                "fullUrl": format!("{base}/AuditEvent/{}", e.seq),
                "resource": audit_event(e.seq, &e.record, server, view),
                "search": {"mode": "match"},
            })
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": super::service::new_id(),
        "meta": {"lastUpdated": super::bundle::now()},
        "type": "searchset",
        "link": links,
        "entry": entries,
    });
    let total =
        page.total.or_else(|| (page.next.is_none() && q.before_seq.is_none()).then_some(page.entries.len() as i64));
    if let Some(t) = total {
        bundle["total"] = json!(t);
    }
    if !unknown.is_empty() {
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "not-supported",
            "diagnostics": format!("Ignored unknown or unsupported parameter(s): {}", unknown.join(", "))}]});
        if let Some(a) = bundle["entry"].as_array_mut() {
            a.push(json!({"resource": outcome, "search": {"mode": "outcome"}}));
        }
    }
    Ok(fhir_json(StatusCode::OK, bundle.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_audit_event_parameters() {
        let p = |s: &str| parse(&parse_query_string(s)).unwrap();
        let (q, unknown) = p(
            "patient=Patient/p1&date=ge2026-01-01&date=lt2026-02&subtype=read,operation&agent=operator&outcome=4&foo=1",
        );
        assert_eq!(q.patient.as_deref(), Some("p1"));
        assert!(q.since_ms.unwrap() < q.until_ms.unwrap());
        assert_eq!(q.interactions, vec!["read", "everything"]);
        assert_eq!(q.actors, vec!["operator/operator"]);
        assert_eq!(q.outcomes, vec!["denied", "failed"]);
        assert_eq!(unknown, vec!["foo"]);
        assert!(parse(&parse_query_string("date=yesterday")).is_err());
        assert!(parse(&parse_query_string("patient=a&patient=b")).is_err());
        assert_eq!(p("type=rest").0.interactions, Vec::<String>::new());
        assert_eq!(actor_key("Patient/x"), "patient/x");
    }
}
