//! `POST /fhir` with a batch or transaction Bundle. A transaction is decided entry by
//! entry at the gate, then stored in one database transaction: all or nothing.

use super::body::{RawBody, parse_json};
use super::bundle::now;
use super::headers::{Return, fhir_json, prefer, require_json};
use super::service::{
    Fhir, Handling, WRITE_ATTEMPTS, check_type, must_replan, new_id, parse_query_string, replan_backoff,
};
use super::urls;
use crate::server::AppState;
use crate::server::auth::Ctx;
use crate::server::error::ApiError;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_audit::{Interaction, Slot};
use portico_policy::{RequestContext, WritePermit};
use portico_store::{Condition, StoreError, WriteKind, WriteOp, WriteResult};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};

/// Most entries accepted in one Bundle.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// One entry, parsed.
#[derive(Clone)]
struct Entry {
    method: Method,
    rt: String,
    id: Option<String>,
    criteria: Vec<(String, String)>,
    raw_query: Option<String>,
    resource: Option<Value>,
    full_url: Option<String>,
    if_match: Option<i64>,
    if_none_exist: Option<String>,
}

pub async fn post_bundle(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let bundle = parse_json(&body)?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::bad_request("POST to the base URL takes a Bundle."));
    }
    let kind = bundle.get("type").and_then(Value::as_str).unwrap_or("");
    let raw_entries = match bundle.get("entry") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ApiError::bad_request("Bundle.entry must be an array.")),
    };
    if raw_entries.len() > MAX_ENTRIES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-long",
            format!("A Bundle may hold at most {MAX_ENTRIES} entries."),
        ));
    }
    let p = prefer(&headers);
    let base = urls::base_url(&headers);
    match kind {
        "transaction" => {
            let entries =
                raw_entries.iter().enumerate().map(|(i, e)| parse_entry(i, e)).collect::<Result<Vec<_>, _>>()?;
            let out = transaction(&state, &ctx, entries, p.handling, p.ret == Return::Representation).await?;
            Ok(fhir_json(StatusCode::OK, response_bundle("transaction-response", out, &base)))
        }
        "batch" => {
            let mut out = Vec::with_capacity(raw_entries.len());
            for (i, e) in raw_entries.iter().enumerate() {
                let mark = ctx.scope.mark();
                let r = match parse_entry(i, e) {
                    Ok(entry) => {
                        transaction(&state, &ctx, vec![entry], p.handling, p.ret == Return::Representation).await
                    }
                    Err(e) => Err(e),
                };
                match r {
                    Ok(mut v) => out.push(v.pop().unwrap_or(json!({}))),
                    Err(e) => {
                        // The entry's audit record tells its own failure, not the batch's 200.
                        ctx.scope.fail_since(mark, e.status.as_u16());
                        out.push(json!({"response": {"status": status_line(e.status), "outcome": e.outcome()}}))
                    }
                }
            }
            Ok(fhir_json(StatusCode::OK, response_bundle("batch-response", out, &base)))
        }
        _ => Err(ApiError::bad_request("Bundle.type must be 'transaction' or 'batch'.")),
    }
}

impl Entry {
    /// The interaction this entry is, for its audit record.
    fn interaction(&self) -> Interaction {
        match (self.method, &self.id) {
            (Method::Get, Some(_)) => Interaction::Read,
            (Method::Get, None) => Interaction::SearchType,
            (Method::Post, _) => Interaction::Create,
            (Method::Put, _) => Interaction::Update,
            (Method::Delete, _) => Interaction::Delete,
        }
    }
}

fn status_line(s: StatusCode) -> String {
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
}

fn response_bundle(kind: &str, entries: Vec<Value>, _base: &str) -> String {
    json!({
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": now()},
        "type": kind,
        "entry": entries,
    })
    .to_string()
}

fn parse_entry(i: usize, e: &Value) -> Result<Entry, ApiError> {
    let bad = |m: &str| ApiError::bad_request(format!("Bundle.entry[{i}]: {m}"));
    let req = e.get("request").ok_or_else(|| bad("request is required"))?;
    let method = match req.get("method").and_then(Value::as_str) {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("DELETE") => Method::Delete,
        Some("PATCH") => return Err(bad("PATCH entries are not supported; use PUT")),
        _ => return Err(bad("request.method must be GET, POST, PUT or DELETE")),
    };
    let url = req.get("url").and_then(Value::as_str).ok_or_else(|| bad("request.url is required"))?;
    let url = url.trim_start_matches('/');
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (url, None),
    };
    let mut segs = path.split('/');
    let rt = segs.next().unwrap_or("").to_string();
    check_type(&rt).map_err(|_| bad("request.url names an unknown resource type"))?;
    let id = segs.next().map(str::to_string);
    if segs.next().is_some() {
        return Err(bad("request.url must be Type, Type/id or Type?criteria"));
    }
    let if_match = match req.get("ifMatch").and_then(Value::as_str) {
        Some(v) => Some(super::headers::parse_etag(v).ok_or_else(|| bad("ifMatch is not an ETag"))?),
        None => None,
    };
    Ok(Entry {
        method,
        rt,
        id,
        criteria: query.as_deref().map(parse_query_string).unwrap_or_default(),
        raw_query: query,
        resource: e.get("resource").cloned(),
        full_url: e.get("fullUrl").and_then(Value::as_str).map(str::to_string),
        if_match,
        if_none_exist: req.get("ifNoneExist").and_then(Value::as_str).map(str::to_string),
    })
}

/// Apply a transaction or batch Bundle (the importer's entry point): the same path as
/// `POST /fhir`, answering the response Bundle's entries.
pub async fn apply_bundle(state: &AppState, ctx: &RequestContext, bundle: &Value) -> Result<Vec<Value>, ApiError> {
    let entries = match bundle.get("entry") {
        Some(Value::Array(a)) => a.iter().enumerate().map(|(i, e)| parse_entry(i, e)).collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let out = transaction(state, ctx, entries, Handling::Lenient, false).await;
    // No HTTP layer around the importer: write the request's remaining audit records here.
    let status = out.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200);
    state.audit.finish(&ctx.scope, status).await.map_err(|_| ApiError::unavailable())?;
    out
}

/// Plan every entry at the gate, store them in one transaction, answer per entry. When the
/// store finds the plan outdated (a concurrent write changed a resource after the gate
/// decided, or an `ifNoneExist` now matches), nothing was written: plan it all again.
async fn transaction(
    state: &AppState,
    ctx: &RequestContext,
    entries: Vec<Entry>,
    handling: Handling,
    representation: bool,
) -> Result<Vec<Value>, ApiError> {
    // One audit interaction per entry, kept across attempts: only the outcome is recorded.
    let slots: Vec<Slot> = entries.iter().map(|e| ctx.scope.begin(e.interaction(), Some(&e.rt))).collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match transaction_once(state, ctx, entries.clone(), handling, representation, &slots).await? {
            Ok(out) => return Ok(out),
            Err(e) if attempt < WRITE_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "transaction planned again");
                replan_backoff(attempt).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One attempt at a transaction; the inner error is a store outcome that calls for planning
/// again.
async fn transaction_once(
    state: &AppState,
    ctx: &RequestContext,
    mut entries: Vec<Entry>,
    handling: Handling,
    representation: bool,
    slots: &[Slot],
) -> Result<Result<Vec<Value>, StoreError>, ApiError> {
    let fhir = Fhir::new(state);
    // 1. Decide each write's target id; existing matches of conditional creates are kept.
    // A create whose criteria match nothing yet carries them to the store, which checks
    // again under its lock (concurrent conditional creates make exactly one resource).
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut existing: HashMap<usize, portico_store::StoredVersion> = HashMap::new();
    let mut conditions: HashMap<usize, Condition> = HashMap::new();
    for (i, e) in entries.iter_mut().enumerate() {
        ctx.scope.enter(slots[i]);
        match e.method {
            Method::Post => {
                if let Some(crit) = &e.if_none_exist {
                    let found = fhir.matching_ids(ctx, &e.rt, &parse_query_string(crit), 1).await?;
                    match found.as_slice() {
                        [] => {
                            let mut cond = fhir.condition(ctx, &e.rt, crit)?;
                            cond.abort_on_match = true;
                            conditions.insert(i, cond);
                            e.id = Some(new_id());
                        }
                        [one] => {
                            existing.insert(i, fhir.read(ctx, &e.rt, one).await?);
                            e.id = Some(one.clone());
                        }
                        _ => {
                            return Err(ApiError::new(
                                StatusCode::PRECONDITION_FAILED,
                                "multiple-matches",
                                format!("Bundle.entry[{i}]: ifNoneExist matches more than one resource."),
                            ));
                        }
                    }
                } else {
                    e.id = Some(new_id());
                }
            }
            Method::Put | Method::Delete if e.id.is_none() => {
                if e.criteria.is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "Bundle.entry[{i}]: request.url needs an id or criteria"
                    )));
                }
                let found = fhir.matching_ids(ctx, &e.rt, &e.criteria, 1).await?;
                e.id = match found.as_slice() {
                    [] if e.method == Method::Put => {
                        match e.resource.as_ref().and_then(|r| r.get("id")).and_then(Value::as_str) {
                            Some(id) => Some(id.to_string()),
                            // A new resource: created under the criteria's lock, like a
                            // conditional create.
                            None => {
                                let mut cond = fhir.condition(ctx, &e.rt, e.raw_query.as_deref().unwrap_or(""))?;
                                cond.abort_on_match = true;
                                conditions.insert(i, cond);
                                Some(new_id())
                            }
                        }
                    }
                    [] => None,
                    [one] => Some(one.clone()),
                    _ => {
                        return Err(ApiError::new(
                            StatusCode::PRECONDITION_FAILED,
                            "multiple-matches",
                            format!("Bundle.entry[{i}]: the criteria match more than one resource."),
                        ));
                    }
                };
            }
            _ => {}
        }
        if let (Some(full), Some(id), Method::Post | Method::Put) = (&e.full_url, &e.id, e.method) {
            ids.insert(full.clone(), format!("{}/{id}", e.rt));
        }
    }
    // 2. Resolve urn:uuid and conditional references (their lookups are audited with the
    // first entry).
    if let Some(first) = slots.first() {
        ctx.scope.enter(*first);
    }
    let mut conditional: HashMap<String, String> = HashMap::new();
    for e in entries.iter() {
        if let Some(r) = &e.resource {
            collect_conditional_refs(r, &mut conditional);
        }
    }
    for (reference, target) in conditional.iter_mut() {
        let (rt, q) = reference.split_once('?').unwrap_or_default();
        check_type(rt)?;
        let found = fhir.matching_ids(ctx, rt, &parse_query_string(q), 1).await?;
        match found.as_slice() {
            [one] => *target = format!("{rt}/{one}"),
            _ => {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "not-found",
                    format!(
                        "The conditional reference '{}' does not match exactly one resource.",
                        reference.chars().take(100).collect::<String>()
                    ),
                ));
            }
        }
    }
    ids.extend(conditional);
    // 3. Plan every write at the gate.
    let mut seen = HashSet::new();
    let mut ops: Vec<(WritePermit, WriteOp)> = Vec::new();
    let mut op_of_entry: Vec<Option<usize>> = Vec::with_capacity(entries.len());
    let mut op_slots: Vec<Slot> = Vec::new();
    for (i, e) in entries.iter_mut().enumerate() {
        ctx.scope.enter(slots[i]);
        if existing.contains_key(&i) || e.method == Method::Get || (e.method == Method::Delete && e.id.is_none()) {
            op_of_entry.push(None);
            continue;
        }
        let id = e.id.clone().unwrap_or_default();
        if !seen.insert((e.rt.clone(), id.clone())) {
            return Err(ApiError::bad_request(format!(
                "Bundle.entry[{i}]: {}/{id} appears twice in the transaction.",
                e.rt
            )));
        }
        let (kind, body) = match e.method {
            Method::Post | Method::Put => {
                let mut r = e
                    .resource
                    .take()
                    .ok_or_else(|| ApiError::bad_request(format!("Bundle.entry[{i}]: resource is required")))?;
                if e.method == Method::Put {
                    if let Some(body_id) = r.get("id") {
                        if body_id.as_str() != Some(id.as_str()) {
                            return Err(ApiError::bad_request(format!(
                                "Bundle.entry[{i}]: resource.id does not match request.url."
                            )));
                        }
                    }
                    if !portico_fhir::extract::is_fhir_id(&id) {
                        return Err(ApiError::bad_request(format!(
                            "Bundle.entry[{i}]: the id in request.url is not a valid FHIR id."
                        )));
                    }
                }
                rewrite_references(&mut r, &ids);
                let body = fhir.validated_body(&e.rt, &id, r, handling).map_err(|mut err| {
                    err.diagnostics = format!("Bundle.entry[{i}]: {}", err.diagnostics);
                    err
                })?;
                let create = e.method == Method::Post || conditions.contains_key(&i);
                (if create { WriteKind::Create } else { WriteKind::Update }, Some(body))
            }
            _ => (WriteKind::Delete, None),
        };
        let mut planned = fhir.plan_write(ctx, kind, &e.rt, &id, body, e.if_match).await?;
        planned.1.condition = conditions.remove(&i);
        op_of_entry.push(Some(ops.len()));
        op_slots.push(slots[i]);
        ops.push(planned);
    }
    // 4. Store all of it, atomically.
    let results: Vec<WriteResult> = if ops.is_empty() {
        Vec::new()
    } else {
        match fhir.store_writes(ctx, ops, &op_slots).await {
            Ok(r) => r,
            Err(e) if must_replan(&e) => return Ok(Err(e)),
            Err(e) => return Err(e.into()),
        }
    };
    // 5. Answer in entry order; GETs read after the writes.
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        ctx.scope.enter(slots[i]);
        if let Some(v) = existing.get(&i) {
            out.push(entry_response("200 OK", v, representation));
            continue;
        }
        match op_of_entry[i] {
            Some(k) => {
                let r = &results[k];
                let status = if r.stored.deleted || e.method == Method::Delete {
                    "204 No Content"
                } else if r.created {
                    "201 Created"
                } else {
                    "200 OK"
                };
                out.push(entry_response(status, &r.stored, representation && !r.stored.deleted));
            }
            None if e.method == Method::Delete => out.push(json!({"response": {"status": "204 No Content"}})),
            None => {
                let id = e.id.clone().unwrap_or_default();
                if e.id.is_some() {
                    let v = fhir.read(ctx, &e.rt, &id).await?;
                    out.push(entry_response("200 OK", &v, true));
                } else {
                    let _ = &e.raw_query;
                    let (parsed, page) = fhir.search(ctx, Some(&e.rt), &e.criteria, handling).await?;
                    let base = "";
                    let text = super::search::render_page(base, &e.rt, &e.criteria, &parsed, &page);
                    let resource: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    out.push(json!({"resource": resource, "response": {"status": "200 OK"}}));
                }
            }
        }
    }
    Ok(Ok(out))
}

fn entry_response(status: &str, v: &portico_store::StoredVersion, with_resource: bool) -> Value {
    let mut e = json!({"response": {
        "status": status,
        "location": format!("{}/{}/_history/{}", v.resource_type, v.id, v.version),
        "etag": format!("W/\"{}\"", v.version),
        "lastModified": v.last_updated,
    }});
    if with_resource && !v.body.is_empty() {
        e["resource"] = serde_json::from_str(&v.body).unwrap_or(Value::Null);
    }
    e
}

/// Every `reference` that is a conditional reference (`Type?criteria`).
fn collect_conditional_refs(v: &Value, out: &mut HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("reference") {
                // `Type?criteria`; the criteria may hold URLs (`identifier=http://…|x`), the
                // part before `?` may not (an absolute or `urn:` reference is not conditional).
                if r.split_once('?').is_some_and(|(path, _)| !path.is_empty() && !path.contains(['/', ':'])) {
                    out.insert(r.clone(), String::new());
                }
            }
            o.values().for_each(|c| collect_conditional_refs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_conditional_refs(c, out)),
        _ => {}
    }
}

/// Replace references that name an entry's fullUrl (or a resolved conditional reference).
fn rewrite_references(v: &mut Value, ids: &HashMap<String, String>) {
    match v {
        Value::Object(o) => rewrite_object(o, ids),
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_references(c, ids)),
        _ => {}
    }
}

fn rewrite_object(o: &mut Map<String, Value>, ids: &HashMap<String, String>) {
    if let Some(Value::String(r)) = o.get_mut("reference") {
        if let Some(target) = ids.get(r.as_str()) {
            *r = target.clone();
        }
    }
    for (_, c) in o.iter_mut() {
        rewrite_references(c, ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_nested_references() {
        let mut v = json!({"subject": {"reference": "urn:uuid:1"}, "x": [{"reference": "urn:uuid:2"}, {"reference": "Patient/9"}]});
        let ids: HashMap<String, String> =
            [("urn:uuid:1".into(), "Patient/a".into()), ("urn:uuid:2".into(), "Encounter/b".into())].into();
        rewrite_references(&mut v, &ids);
        assert_eq!(v["subject"]["reference"], "Patient/a");
        assert_eq!(v["x"][0]["reference"], "Encounter/b");
        assert_eq!(v["x"][1]["reference"], "Patient/9");
    }
}
