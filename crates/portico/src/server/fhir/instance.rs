//! Instance interactions: read, vread, create, update, patch, delete, and their
//! conditional forms.

use super::body::{RawBody, parse_json};
use super::headers::{self, Return, if_match, prefer, require_json, resource_response};
use super::service::{Fhir, WRITE_ATTEMPTS, check_type, new_id, parse_query_string, replan_backoff};
use super::urls;
use crate::server::AppState;
use crate::server::auth::Ctx;
use crate::server::error::ApiError;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portico_policy::RequestContext;
use portico_store::{Condition, StoreError, StoredVersion, WriteKind};
use serde_json::Value;

pub async fn get_read(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let v = Fhir::new(&state).read(&ctx, &rt, &id).await?;
    Ok(conditional_read(&headers, &v)
        .unwrap_or_else(|| resource_response(StatusCode::OK, &v, &urls::base_url(&headers), Return::Representation)))
}

/// `If-None-Match` / `If-Modified-Since`: 304 when the client's copy is current.
fn conditional_read(headers: &HeaderMap, v: &StoredVersion) -> Option<Response> {
    let etag_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .and_then(headers::parse_etag)
        .is_some_and(|n| n == v.version);
    let not_modified = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|h| h.to_str().ok())
        .and_then(headers::parse_http_date)
        .zip(portico_fhir::datetime::parse_instant(&v.last_updated))
        .is_some_and(|(since, lu_ms)| lu_ms / 1000 <= since);
    (etag_match || not_modified).then(|| {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        headers::version_headers(r.headers_mut(), v);
        r
    })
}

pub async fn get_vread(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path((rt, id, vid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let vid: i64 = vid.parse().map_err(|_| super::service::not_found(&rt, &id))?;
    let v = Fhir::new(&state).vread(&ctx, &rt, &id, vid).await?;
    Ok(resource_response(StatusCode::OK, &v, &urls::base_url(&headers), Return::Representation))
}

/// `GET /fhir/{type}/{id}/{op}`: `_history` and `$everything`.
pub async fn get_instance_op(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path((rt, id, op)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match op.as_str() {
        "_history" => super::history::instance_history(&state, &ctx, rt, id, q, &headers).await,
        "$everything" if rt == "Patient" => super::history::everything(&state, &ctx, id, q, &headers).await,
        _ => Err(ApiError::not_found("Unknown operation.")),
    }
}

pub async fn post_create(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(rt): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    check_type(&rt)?;
    require_json(&headers)?;
    let body = parse_json(&body)?;
    let p = prefer(&headers);
    let if_none_exist = headers
        .get("if-none-exist")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::bad_request("If-None-Exist is not text"))?;
    let fhir = Fhir::new(&state);
    let id = new_id();
    let body = fhir.validated_body(&rt, &id, body, p.handling)?;
    let condition = if_none_exist.map(|criteria| fhir.condition(&ctx, &rt, &criteria)).transpose()?;
    let result = fhir.write_one(&ctx, WriteKind::Create, &rt, &id, Some(body), None, condition).await?;
    let status = if result.noop { StatusCode::OK } else { StatusCode::CREATED };
    Ok(resource_response(status, &result.stored, &urls::base_url(&headers), p.ret))
}

pub async fn put_update(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    check_type(&rt)?;
    require_json(&headers)?;
    let body = parse_json(&body)?;
    update(&state, &ctx, &rt, &id, body, &headers).await
}

async fn update(
    state: &AppState,
    ctx: &RequestContext,
    rt: &str,
    id: &str,
    body: Value,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    update_or_create(state, ctx, rt, id, body, headers, None).await?.ok_or_else(|| StoreError::ConditionMatched.into())
}

/// An update; with `only_if_none` (a conditional update that matched nothing) a create
/// under the criteria's lock instead, answering `None` when they match by the time of
/// writing (nothing was written).
async fn update_or_create(
    state: &AppState,
    ctx: &RequestContext,
    rt: &str,
    id: &str,
    body: Value,
    headers: &HeaderMap,
    only_if_none: Option<Condition>,
) -> Result<Option<Response>, ApiError> {
    if !portico_fhir::extract::is_fhir_id(id) {
        return Err(ApiError::bad_request("The id in the URL is not a valid FHIR id."));
    }
    if let Some(body_id) = body.get("id") {
        if body_id.as_str() != Some(id) {
            return Err(ApiError::bad_request("The id in the body does not match the id in the URL."));
        }
    }
    let p = prefer(headers);
    let im = if_match(headers)?;
    let fhir = Fhir::new(state);
    if !state.config.create_on_update && im.is_none() {
        let exists = state.store.head(rt, id).await?.is_some_and(|h| !h.deleted);
        if !exists {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "not-supported",
                "This server does not create resources by PUT.",
            ));
        }
    }
    let body = fhir.validated_body(rt, id, body, p.handling)?;
    let kind = if only_if_none.is_some() { WriteKind::Create } else { WriteKind::Update };
    let Some(result) = fhir.try_write_one(ctx, kind, rt, id, Some(body), im, only_if_none).await? else {
        return Ok(None);
    };
    let status = if result.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(Some(resource_response(status, &result.stored, &urls::base_url(headers), p.ret)))
}

/// `PUT /fhir/{type}?criteria`: update the one match, create when none, 412 when several.
pub async fn put_conditional(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(rt): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    check_type(&rt)?;
    require_json(&headers)?;
    let criteria = parse_query_string(q.as_deref().unwrap_or(""));
    if criteria.is_empty() {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "PUT needs an id or search criteria.",
        ));
    }
    let body = parse_json(&body)?;
    let fhir = Fhir::new(&state);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ids = fhir.matching_ids(&ctx, &rt, &criteria, 1).await?;
        let (id, only_if_none) = match ids.as_slice() {
            [] => match body.get("id").and_then(Value::as_str) {
                Some(id) => (id.to_string(), None),
                // A new resource is created under the criteria's lock, so that concurrent
                // conditional updates make one resource, not one each.
                None => {
                    let mut cond = fhir.condition(&ctx, &rt, q.as_deref().unwrap_or(""))?;
                    cond.abort_on_match = true;
                    (new_id(), Some(cond))
                }
            },
            [one] => (one.clone(), None),
            _ => {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "multiple-matches",
                    "The criteria match more than one resource.",
                ));
            }
        };
        match update_or_create(&state, &ctx, &rt, &id, body.clone(), &headers, only_if_none).await? {
            Some(response) => return Ok(response),
            // Another request created a match meanwhile: look again (and update it).
            None if attempt < WRITE_ATTEMPTS => replan_backoff(attempt).await,
            None => return Err(StoreError::ConditionMatched.into()),
        }
    }
}

pub async fn patch_resource(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    check_type(&rt)?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.trim().to_ascii_lowercase().starts_with("application/json-patch+json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "PATCH takes application/json-patch+json.",
        ));
    }
    let fhir = Fhir::new(&state);
    ctx.scope.begin(portico_audit::Interaction::Patch, Some(&rt));
    let current = fhir.read_for_patch(&ctx, &rt, &id).await?;
    let patch_json = super::body::parse_json_patch(&body)?;
    let patch: json_patch::Patch =
        serde_json::from_value(patch_json).map_err(|e| ApiError::bad_request(format!("Invalid JSON Patch: {e}")))?;
    let mut doc: Value = serde_json::from_str(&current.body).map_err(|_| ApiError::internal())?;
    json_patch::patch(&mut doc, &patch).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "processing", format!("The patch cannot be applied: {e}"))
    })?;
    if doc.get("resourceType").and_then(Value::as_str) != Some(rt.as_str())
        || doc.get("id").and_then(Value::as_str) != Some(id.as_str())
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "processing",
            "A patch may not change resourceType or id.",
        ));
    }
    let p = prefer(&headers);
    // Without If-Match, the patch applies to the version just read: a concurrent change
    // makes it fail (412) rather than be lost.
    let im = if_match(&headers)?.or(Some(current.version));
    let body = fhir.validated_body(&rt, &id, doc, p.handling)?;
    let result = fhir.write_one(&ctx, WriteKind::Update, &rt, &id, Some(body), im, None).await?;
    Ok(resource_response(StatusCode::OK, &result.stored, &urls::base_url(&headers), p.ret))
}

pub async fn delete_resource(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&rt)?;
    let im = if_match(&headers)?;
    let fhir = Fhir::new(&state);
    let result = fhir.write_one(&ctx, WriteKind::Delete, &rt, &id, None, im, None).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    if !result.noop {
        if let Ok(v) = format!("W/\"{}\"", result.stored.version).parse() {
            r.headers_mut().insert(header::ETAG, v);
        }
    }
    Ok(r)
}

/// `DELETE /fhir/{type}?criteria`: deletes the single match (412 when several).
pub async fn delete_conditional(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(rt): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    check_type(&rt)?;
    let criteria = parse_query_string(q.as_deref().unwrap_or(""));
    if criteria.is_empty() {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "DELETE needs an id or search criteria.",
        ));
    }
    let fhir = Fhir::new(&state);
    let ids = fhir.matching_ids(&ctx, &rt, &criteria, 1).await?;
    match ids.as_slice() {
        [] => Ok(StatusCode::NO_CONTENT.into_response()),
        [id] => {
            fhir.write_one(&ctx, WriteKind::Delete, &rt, id, None, None, None).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "multiple-matches",
            "The criteria match more than one resource.",
        )),
    }
}
