//! FHIR Bulk Data `$export`: kick-off (`Patient/{id}/$export`, `Patient/$export`,
//! `Group/{id}/$export`, GET or POST with a Parameters body), status (`_export/{job}`),
//! cancel (`DELETE _export/{job}`) and download (`_export/{job}/{file}`). The jobs
//! themselves live in `crate::export`.
//!
//! Only the principal that kicked a job off sees it: another client (or user) gets the
//! same 404 as for a job that does not exist. Every kick-off, status poll, download and
//! cancel leaves an audit record (`bulk-export`, `op=…` in its query).

use super::body::{RawBody, parse_json};
use super::headers::{fhir_json, prefer};
use super::service::{Fhir, parse_query_string, refusal};
use super::urls;
use crate::export::params::{self, ExportParams};
use crate::export::requester::{self, Gone};
use crate::export::storage::StorageError;
use crate::export::{files, links, manifest, worker};
use crate::identity::now_ms;
use crate::server::AppState;
use crate::server::auth::{Ctx, bearer, lookup_token, request_scope};
use crate::server::error::ApiError;
use crate::server::portal::account::step_up_required;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portico_audit::Interaction;
use portico_policy::{Action, Principal, RequestContext, Sensitive};
use portico_store::export::{CapHit, ExportJobRow, state as js};

/// Export level of a kick-off.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Patient(String),
    System,
    Group(String),
}

pub async fn get_system(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    kickoff(&s, &ctx, &headers, Level::System, query_pairs(q)).await
}

pub async fn post_system(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let pairs = body_pairs(q, &body)?;
    kickoff(&s, &ctx, &headers, Level::System, pairs).await
}

pub async fn get_patient(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    kickoff(&s, &ctx, &headers, Level::Patient(id), query_pairs(q)).await
}

pub async fn post_patient(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let pairs = body_pairs(q, &body)?;
    kickoff(&s, &ctx, &headers, Level::Patient(id), pairs).await
}

pub async fn get_group(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    kickoff(&s, &ctx, &headers, Level::Group(id), query_pairs(q)).await
}

pub async fn post_group(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let pairs = body_pairs(q, &body)?;
    kickoff(&s, &ctx, &headers, Level::Group(id), pairs).await
}

fn query_pairs(q: Option<String>) -> Vec<(String, String)> {
    parse_query_string(q.as_deref().unwrap_or(""))
}

fn body_pairs(q: Option<String>, body: &RawBody) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = query_pairs(q);
    if !body.0.is_empty() {
        pairs.extend(params::from_parameters(&parse_json(&body.0)?)?);
    }
    Ok(pairs)
}

/// Begin the audit record of one export step.
fn audit(ctx: &RequestContext, op: &str, job: Option<&str>, rt: Option<&str>) {
    ctx.scope.begin(Interaction::BulkExport, rt);
    let q = match job {
        Some(j) => format!("op={op}&job={j}"),
        None => format!("op={op}"),
    };
    ctx.scope.edit(|r| r.query = Some(q));
}

fn note_query(ctx: &RequestContext, extra: &str) {
    ctx.scope.edit(|r| {
        if let Some(q) = &mut r.query {
            q.push_str(extra);
        }
    });
}

/// The requester behind this request: its grant (OAuth) or the operator.
async fn requester(
    s: &AppState,
    ctx: &RequestContext,
    headers: &HeaderMap,
) -> Result<(String, Option<String>), ApiError> {
    if matches!(ctx.principal, Principal::Operator) {
        return Ok(("operator".into(), None));
    }
    let token = bearer(headers).ok_or_else(|| {
        ApiError::forbidden("Bulk export needs an OAuth access token: its files are downloaded with that token.")
    })?;
    let auth = lookup_token(s, token).await?.ok_or_else(ApiError::invalid_token)?;
    Ok(("grant".into(), Some(auth.grant.id)))
}

async fn kickoff(
    s: &AppState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    level: Level,
    pairs: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    audit(ctx, "kickoff", None, None);
    if !prefer(headers).respond_async {
        return Err(ApiError::bad_request("$export needs the header Prefer: respond-async."));
    }
    let mut p: ExportParams = params::parse(&pairs)?;
    let (requester_kind, grant_id) = requester(s, ctx, headers).await?;
    let fhir = Fhir::new(s);
    let patient_led = matches!(ctx.principal, Principal::Patient { .. } | Principal::Caregiver { .. });
    let (level_name, patient, patients) = match &level {
        Level::Patient(id) => {
            if !p.patients.is_empty() {
                return Err(ApiError::bad_request("The patient parameter is for Patient/$export and Group exports."));
            }
            // Visible to the requester, or 404 like a read (existence does not leak).
            fhir.read(ctx, "Patient", id).await?;
            ctx.scope.edit(|r| r.resource_type = Some("Patient".into()));
            ("patient", id.clone(), vec![id.clone()])
        }
        Level::System | Level::Group(_) => {
            if !matches!(ctx.principal, Principal::System { .. } | Principal::Operator) {
                return Err(ApiError::forbidden(
                    "Patient/$export and Group/{id}/$export are for authorised backend services; use Patient/{id}/$export.",
                ));
            }
            if p.include_sensitive {
                return Err(ApiError::forbidden("Only the patient can include sensitive categories in an export."));
            }
            if p.summary_pdf {
                return Err(ApiError::bad_request(
                    "The PDF health summary is made for one patient: use Patient/{id}/$export.",
                ));
            }
            match &level {
                Level::Group(gid) => {
                    let g = fhir.read(ctx, "Group", gid).await?;
                    ctx.scope.edit(|r| r.resource_type = Some("Group".into()));
                    let body: serde_json::Value = serde_json::from_str(&g.body).map_err(|_| ApiError::internal())?;
                    let mut members: Vec<String> = body["member"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|m| m.pointer("/entity/reference").and_then(|r| r.as_str()))
                        .filter_map(|r| r.strip_prefix("Patient/"))
                        .map(str::to_string)
                        .collect();
                    if !p.patients.is_empty() {
                        members.retain(|m| p.patients.contains(m));
                    }
                    members.dedup();
                    ("group", String::new(), members)
                }
                _ => ("system", String::new(), std::mem::take(&mut p.patients)),
            }
        }
    };
    if patient_led {
        s.gate.require_step_up(ctx, Sensitive::BulkExport, s.identity.step_up_fresh_ms()).map_err(|r| {
            match r.audit_failure {
                Some(_) => ApiError::unavailable(),
                None => step_up_required(&r.verdict.map(|v| v.reason).unwrap_or_default()),
            }
        })?;
    }
    if p.include_sensitive && !matches!(ctx.principal, Principal::Patient { .. }) {
        return Err(ApiError::forbidden("Only the patient can include sensitive categories in an export."));
    }
    // What goes in: exactly what the gate permits this requester, type by type. Types it
    // refuses are left out when the client named none, refused when it named them.
    let asked = !p.types.is_empty();
    let candidates: Vec<String> = if asked {
        p.types.clone()
    } else {
        portico_fhir::resource_types::all()
            .iter()
            .filter(|t| portico_fhir::compartment::in_patient_compartment(t))
            .map(|t| t.to_string())
            .collect()
    };
    let mut prints = std::collections::BTreeMap::new();
    let mut types = Vec::new();
    for t in candidates {
        match s.gate.permit_search(ctx, Action::Search, Some(&t)) {
            Ok(permit) => {
                prints.insert(t.clone(), requester::permit_print(std::slice::from_ref(&permit), ctx.now_ms));
                types.push(t);
            }
            Err(r) if r.audit_failure.is_some() || asked => return Err(refusal(r, false)),
            Err(_) => {}
        }
    }
    if types.is_empty() {
        return Err(ApiError::forbidden("Nothing in this export is permitted to you."));
    }
    p.types = types;
    let now = now_ms();
    let id = uuid::Uuid::new_v4().to_string();
    let base = urls::base_url(headers);
    let request_url = {
        let path = match &level {
            Level::Patient(pid) => format!("{base}/Patient/{pid}/$export"),
            Level::System => format!("{base}/Patient/$export"),
            Level::Group(gid) => format!("{base}/Group/{gid}/$export"),
        };
        urls::with_query(path, urls::query_string(&pairs, None))
    };
    let job = ExportJobRow {
        id: id.clone(),
        requester_kind,
        grant_id,
        user_id: ctx.user.clone(),
        client_id: ctx.client.clone().unwrap_or_else(|| "operator".into()),
        principal: requester::principal_kind(&ctx.principal).into(),
        level: level_name.into(),
        patient,
        patients: serde_json::to_string(&patients).map_err(|_| ApiError::internal())?,
        request_url,
        params: serde_json::to_string(&p).map_err(|_| ApiError::internal())?,
        permit_print: serde_json::to_string(&prints).map_err(|_| ApiError::internal())?,
        state: js::ACCEPTED.into(),
        progress: "{}".into(),
        lease_owner: None,
        lease_expires_ms: 0,
        checkpoint: "{}".into(),
        transaction_ms: now,
        created_ms: now,
        updated_ms: now,
        expires_ms: now + s.export.cfg.expiry_secs.max(60) * 1000,
        error: None,
        stop_reason: None,
    };
    let cfg = &s.export.cfg;
    match s.export.store.export_create(&job, cfg.max_jobs_per_client, cfg.max_jobs_per_patient).await? {
        Ok(()) => {}
        Err(hit) => {
            let who = match hit {
                CapHit::Client => "this app",
                CapHit::Patient => "this patient",
            };
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!("Too many exports are already running for {who}; wait for one to finish or cancel one."),
            );
            e.retry_after = Some(60);
            return Err(e);
        }
    }
    note_query(ctx, &format!("&job={id}&types={}", p.types.join(",")));
    ctx.scope.edit(|r| {
        for pt in &patients {
            if !r.patients.contains(pt) {
                r.patients.push(pt.clone());
            }
        }
    });
    s.export.wake.notify_waiters();
    let mut resp = StatusCode::ACCEPTED.into_response();
    let loc = format!("{base}/_export/{id}");
    resp.headers_mut().insert(header::CONTENT_LOCATION, HeaderValue::from_str(&loc).map_err(|_| ApiError::internal())?);
    Ok(resp)
}

/// The job, if this request's principal is the one that kicked it off; 404 otherwise (the
/// same answer as for no such job).
async fn own_job(s: &AppState, ctx: &RequestContext, id: &str) -> Result<ExportJobRow, ApiError> {
    let missing = || ApiError::not_found("No such export.");
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(missing());
    }
    let job = s.export.store.export_get(id).await?.ok_or_else(missing)?;
    let same = match job.requester_kind.as_str() {
        "operator" => matches!(ctx.principal, Principal::Operator),
        _ => {
            !matches!(ctx.principal, Principal::Operator)
                && ctx.client.as_deref() == Some(job.client_id.as_str())
                && ctx.user == job.user_id
                && requester::principal_kind(&ctx.principal) == job.principal
        }
    };
    if same { Ok(job) } else { Err(missing()) }
}

/// Whether the requester may still have what the job holds: its grant live and the gate's
/// permit for every exported type unchanged. If not, the job is stopped and its files
/// withdrawn (recorded), and the caller is refused.
async fn still_permitted(s: &AppState, ctx: &RequestContext, job: &ExportJobRow) -> Result<(), ApiError> {
    let gone = match requester::context(s, job, ctx.scope.clone()).await {
        Err(g) => Some(g),
        Ok(jctx) => {
            let p: ExportParams = serde_json::from_str(&job.params).map_err(|_| ApiError::internal())?;
            let prints: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&job.permit_print).map_err(|_| ApiError::internal())?;
            let mut changed = None;
            for t in &p.types {
                match s.gate.permit_search(&jctx, Action::Search, Some(t)) {
                    Ok(permit) => {
                        if prints.get(t) != Some(&requester::permit_print(std::slice::from_ref(&permit), jctx.now_ms)) {
                            changed = Some(Gone::PermitChanged(format!("access to {t} is not what it was")));
                            break;
                        }
                    }
                    Err(r) if r.audit_failure.is_some() => return Err(ApiError::unavailable()),
                    Err(r) => {
                        changed = Some(Gone::PermitChanged(r.verdict.map(|v| v.reason).unwrap_or_default()));
                        break;
                    }
                }
            }
            changed
        }
    };
    match gone {
        None => Ok(()),
        Some(g) => {
            worker::stop_job(s, job, &g, &[js::COMPLETED, js::RUNNING, js::ACCEPTED]).await;
            Err(ApiError::forbidden(g.reason()))
        }
    }
}

pub async fn status(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    audit(&ctx, "status", Some(&id), None);
    let job = own_job(&s, &ctx, &id).await?;
    match job.state.as_str() {
        js::ACCEPTED | js::RUNNING => {
            let prog: serde_json::Value = serde_json::from_str(&job.progress).unwrap_or_default();
            let text = match (prog["done"].as_u64(), prog["unit"].as_u64(), prog["units"].as_u64()) {
                (Some(d), Some(u), Some(n)) => format!("{d} resources written, part {u} of {n}"),
                _ => "queued".to_string(),
            };
            let mut r = StatusCode::ACCEPTED.into_response();
            r.headers_mut()
                .insert("x-progress", HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("running")));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(2));
            Ok(r)
        }
        js::COMPLETED if job.expires_ms > now_ms() => {
            still_permitted(&s, &ctx, &job).await?;
            let files = s.export.store.export_files(&job.id).await?;
            let base = urls::base_url(&headers);
            let links_until = now_ms() + s.export.cfg.url_ttl_secs * 1000;
            let sign = |name: &str| links::query(s.audit.key(), &job.id, name, links_until);
            let sign: Option<&dyn Fn(&str) -> String> = if s.export.cfg.signed_urls { Some(&sign) } else { None };
            let mut r = fhir_json(StatusCode::OK, manifest::manifest(&base, &job, &files, sign).to_string());
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut().insert(
                header::EXPIRES,
                HeaderValue::from_str(&manifest::instant(job.expires_ms)).unwrap_or(HeaderValue::from_static("0")),
            );
            Ok(r)
        }
        js::FAILED => {
            let body = job.error.clone().unwrap_or_else(|| worker::outcome("exception", "The export failed."));
            let code =
                if job.stop_reason.as_deref().is_some_and(|r| r.starts_with("revoked") || r.starts_with("permit")) {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
            Ok(fhir_json(code, body))
        }
        _ => Err(ApiError::not_found("This export was cancelled or has expired.")),
    }
}

pub async fn cancel(State(s): State<AppState>, Ctx(ctx): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    audit(&ctx, "cancel", Some(&id), None);
    let job = own_job(&s, &ctx, &id).await?;
    let moved = s
        .export
        .store
        .export_transition(
            &job.id,
            &[js::ACCEPTED, js::RUNNING, js::COMPLETED],
            js::CANCELLED,
            None,
            "cancelled",
            now_ms(),
        )
        .await?;
    if !moved {
        return Err(ApiError::not_found("This export has already ended."));
    }
    // A worker still busy with it finds its checkpoint refused and removes what it wrote
    // after this; what is on disk now goes at once.
    s.export.withdraw(&job.id).await?;
    let mut r = fhir_json(
        StatusCode::ACCEPTED,
        serde_json::json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational", "diagnostics": "The export was cancelled and its files removed."}]})
            .to_string(),
    );
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::server::FHIR_JSON));
    Ok(r)
}

/// A file of a completed job, with the requester's access token (or session), or through a
/// signed link when those are enabled (see `export::links`).
pub async fn download(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    mut parts: axum::http::request::Parts,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(q);
    let param = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let signed = param(links::SIGNATURE).is_some() || param(links::EXPIRES).is_some();
    if !signed || bearer(&parts.headers).is_some() {
        let Ctx(ctx) = Ctx::from_request_parts(&mut parts, &s).await?;
        audit(&ctx, "download", Some(&id), None);
        let job = own_job(&s, &ctx, &id).await?;
        return serve_file(&s, &ctx, &job, &name).await;
    }
    // A signed link: the job's own requester is the actor (rebuilt from its grant by the
    // access re-check below); until then the record names nobody.
    let ctx = RequestContext::with_scope(Principal::Anonymous, request_scope(&parts));
    audit(&ctx, "download", Some(&id), None);
    note_query(&ctx, "&via=signed-link");
    let refused = |why: links::Refused| match why {
        links::Refused::Invalid => ApiError::unauthorized(
            "This download link is not valid; use the access token or the links of a fresh status poll.",
        ),
        links::Refused::Expired => {
            ApiError::unauthorized("This download link has expired; poll the status URL for fresh links.")
        }
    };
    if !s.export.cfg.signed_urls || uuid::Uuid::parse_str(&id).is_err() {
        return Err(refused(links::Refused::Invalid));
    }
    links::check(&s.audit.public_key(), &id, &name, param(links::EXPIRES), param(links::SIGNATURE), now_ms())
        .map_err(refused)?;
    let job = s.export.store.export_get(&id).await?.ok_or_else(|| ApiError::not_found("No such export file."))?;
    serve_file(&s, &ctx, &job, &name).await
}

/// Stream one complete file of `job` once the requester's access has been re-checked.
async fn serve_file(s: &AppState, ctx: &RequestContext, job: &ExportJobRow, name: &str) -> Result<Response, ApiError> {
    let missing = || ApiError::not_found("No such export file.");
    if job.state != js::COMPLETED || job.expires_ms <= now_ms() || !files::valid_name(name) {
        return Err(missing());
    }
    still_permitted(s, ctx, job).await?;
    let files = s.export.store.export_files(&job.id).await?;
    let f = files.into_iter().find(|f| f.name == name && f.complete).ok_or_else(missing)?;
    note_query(ctx, &format!("&file={}&count={}", f.name, f.line_count));
    ctx.scope.edit(|r| {
        r.resource_type = Some(f.res_type.clone());
        let patients: Vec<String> = serde_json::from_str(&job.patients).unwrap_or_default();
        for p in patients {
            if !r.patients.contains(&p) {
                r.patients.push(p);
            }
        }
    });
    // Streamed in blocks from the export storage (disk or bucket), after the checks above:
    // memory stays flat whatever the file's size.
    let stream = s.export.storage.read(&job.id, &f.name).await.map_err(|e| match e {
        StorageError::NotFound => missing(),
        e => {
            tracing::warn!(job = %job.id, file = %f.name, error = %e, "export download: storage unavailable");
            ApiError::unavailable()
        }
    })?;
    let body = Body::from_stream(stream);
    let mut r = Response::new(body);
    let h = r.headers_mut();
    let content_type = if f.name.ends_with(".pdf") { "application/pdf" } else { "application/fhir+ndjson" };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(f.bytes as u64));
    if let Some(sha) = &f.sha256
        && let Ok(v) = HeaderValue::from_str(sha)
    {
        h.insert("x-content-sha256", v);
    }
    Ok(r)
}
