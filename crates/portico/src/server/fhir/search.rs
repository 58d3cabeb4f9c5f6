//! Type-level search (`GET /fhir/{type}`, `POST /fhir/{type}/_search`) and the Bundle it
//! answers with.

use super::body::RawBody;
use super::bundle::{Body, Mode, SearchSet};
use super::headers::{fhir_json, prefer, require_form};
use super::service::{Fhir, parse_query_string};
use super::{shape, urls};
use crate::server::AppState;
use crate::server::auth::Ctx;
use crate::server::error::ApiError;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_store::SearchPage;
use portico_store::search::{MAX_COUNT, Parsed};
use serde_json::json;

pub async fn get_search(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(rt): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = parse_query_string(q.as_deref().unwrap_or(""));
    search(&state, &ctx, &rt, params, &headers).await
}

pub async fn post_search(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(rt): Path<String>,
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
    search(&state, &ctx, &rt, params, &headers).await
}

async fn search(
    state: &AppState,
    ctx: &portico_policy::RequestContext,
    rt: &str,
    params: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let handling = prefer(headers).handling;
    let (parsed, page) = Fhir::new(state).search(ctx, Some(rt), &params, handling).await?;
    let base = urls::base_url(headers);
    let path = format!("{base}/{rt}");
    Ok(fhir_json(StatusCode::OK, render_page(&base, &path, &params, &parsed, &page)))
}

/// Render one page of results as a searchset Bundle with self/next links.
pub fn render_page(base: &str, path: &str, params: &[(String, String)], parsed: &Parsed, page: &SearchPage) -> String {
    let self_url = urls::with_query(path.to_string(), urls::query_string(params, None));
    let next_url = page.next.as_ref().map(|c| {
        let q = urls::query_string(params, Some(("_cursor", &c.encode())));
        urls::with_query(path.to_string(), q)
    });
    let mut entries = Vec::with_capacity(page.entries.len() + page.included.len());
    for v in &page.entries {
        entries.push((Mode::Match, v, body_for(parsed, &v.body)));
    }
    for v in &page.included {
        entries.push((Mode::Include, v, body_for(parsed, &v.body)));
    }
    // The total is exact when asked for, or when everything fits on the first page.
    let total = page.total.or_else(|| {
        (page.next.is_none() && parsed.query.cursor.is_none() && !parsed.query.count_only)
            .then_some(page.entries.len() as i64)
    });
    let mut warnings = Vec::new();
    if !parsed.unknown.is_empty() {
        warnings.push(json!({"severity": "warning", "code": "not-supported", "diagnostics": format!("Ignored unknown or unsupported parameter(s): {}", parsed.unknown.iter().map(|s| s.chars().take(64).collect::<String>()).collect::<Vec<_>>().join(", "))}));
    }
    if parsed.count_capped {
        warnings.push(json!({"severity": "information", "code": "informational", "diagnostics": format!("_count was capped at {MAX_COUNT}.")}));
    }
    let outcome = (!warnings.is_empty()).then(|| json!({"resourceType": "OperationOutcome", "issue": warnings}));
    SearchSet { base, self_url, next_url, total, entries, outcome }.render()
}

/// The entry body: stored text as-is, or reshaped for `_elements` / `_summary`.
fn body_for<'a>(parsed: &Parsed, body: &'a str) -> Body<'a> {
    if let Some(keep) = &parsed.elements {
        Body::Value(shape::elements(body, keep))
    } else if parsed.summary {
        Body::Value(shape::summary(body))
    } else {
        Body::stored(body)
    }
}
