//! History at system, type and instance level, and `Patient/{id}/$everything`.

use super::bundle;
use super::headers::fhir_json;
use super::service::{Fhir, check_type, parse_query_string};
use super::urls;
use crate::server::AppState;
use crate::server::auth::Ctx;
use crate::server::error::ApiError;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_policy::{Action, RequestContext};
use portico_store::HistoryQuery;
use portico_store::search::{Cursor, DEFAULT_COUNT, MAX_COUNT, parse_search};

pub async fn get_system_history(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    history(&state, &ctx, None, None, q, &headers).await
}

pub async fn get_type_history(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(rt): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&rt)?;
    history(&state, &ctx, Some(rt), None, q, &headers).await
}

/// Instance history; called from the instance-operation route.
pub async fn instance_history(
    state: &AppState,
    ctx: &RequestContext,
    rt: String,
    id: String,
    q: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&rt)?;
    super::service::check_id_exists(&rt, &id)?;
    history(state, ctx, Some(rt), Some(id), q, headers).await
}

async fn history(
    state: &AppState,
    ctx: &RequestContext,
    rt: Option<String>,
    id: Option<String>,
    q: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let params = parse_query_string(q.as_deref().unwrap_or(""));
    let mut hq = HistoryQuery { resource_type: rt.clone(), id: id.clone(), count: DEFAULT_COUNT, ..Default::default() };
    for (k, v) in &params {
        match k.as_str() {
            "_count" => {
                hq.count = v
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request("_count must be a number"))?
                    .clamp(1, MAX_COUNT)
            }
            "_since" => hq.since_ms = Some(instant(v, "_since")?),
            "_at" => {
                hq.at_ms = Some(
                    portico_fhir::datetime::parse_range(v)
                        .map(|(_, hi)| hi - 1)
                        .ok_or_else(|| ApiError::bad_request("_at must be a date"))?,
                )
            }
            "_cursor" => {
                hq.cursor = Some(Cursor::decode(v).ok_or_else(|| ApiError::bad_request("invalid paging cursor"))?)
            }
            "_format" | "_pretty" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "'{}' is not a history parameter",
                    other.chars().take(64).collect::<String>()
                )));
            }
        }
    }
    let page = Fhir::new(state).history(ctx, &hq).await?;
    let base = urls::base_url(headers);
    let mut path = base.clone();
    if let Some(rt) = &rt {
        path = format!("{path}/{rt}");
    }
    if let Some(id) = &id {
        path = format!("{path}/{id}");
    }
    path.push_str("/_history");
    let self_url = urls::with_query(path.clone(), urls::query_string(&params, None));
    let next = page
        .next
        .as_ref()
        .map(|c| urls::with_query(path.clone(), urls::query_string(&params, Some(("_cursor", &c.encode())))));
    Ok(fhir_json(StatusCode::OK, bundle::history(&base, &self_url, next.as_deref(), &page.entries)))
}

fn instant(v: &str, name: &str) -> Result<i64, ApiError> {
    portico_fhir::datetime::parse_range(v)
        .map(|(lo, _)| lo)
        .ok_or_else(|| ApiError::bad_request(format!("{name} must be an instant")))
}

/// `Patient/{id}/$everything`: the patient and everything in their compartment, paged.
pub async fn everything(
    state: &AppState,
    ctx: &RequestContext,
    id: String,
    q: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let fhir = Fhir::new(state);
    ctx.scope.begin(portico_audit::Interaction::Everything, Some("Patient"));
    // The patient must exist and be visible to the caller (404 otherwise, like a read).
    fhir.read(ctx, "Patient", &id).await?;
    let params = parse_query_string(q.as_deref().unwrap_or(""));
    for (k, _) in &params {
        if !matches!(k.as_str(), "_since" | "_type" | "_count" | "_cursor" | "_format" | "_pretty") {
            return Err(ApiError::bad_request(format!(
                "'{}' is not a $everything parameter",
                k.chars().take(64).collect::<String>()
            )));
        }
    }
    let mut parsed = parse_search(None, &[]).map_err(|e| ApiError::bad_request(e.0))?;
    parsed.query.in_compartment = Some(id.clone());
    let more = parse_search(None, &params).map_err(|e| ApiError::bad_request(e.0))?;
    parsed.query.resource_types = more.query.resource_types;
    parsed.query.since_ms = more.query.since_ms;
    parsed.query.count = more.query.count;
    parsed.query.cursor = more.query.cursor;
    let page = fhir.search_query(ctx, Action::Everything, &parsed.query).await?;
    let base = urls::base_url(headers);
    let path = format!("{base}/Patient/{id}/$everything");
    Ok(fhir_json(StatusCode::OK, super::search::render_page(&base, &path, &params, &parsed, &page)))
}
