//! The worker: claim a job, export it batch by batch under a fresh gate decision each time,
//! checkpoint after every batch, finish with hashed files. And the sweeper that removes
//! expired exports.

use super::files::{self, Writers};
use super::params::ExportParams;
use super::requester::{self, Gone};
use super::{Exports, is_sensitive};
use crate::identity::now_ms;
use crate::server::AppState;
use portico_audit::{Actor, Interaction, Scope};
use portico_policy::{Action, SearchPermit};
use portico_store::export::{ExportFileRow, ExportJobRow, state};
use portico_store::search::{Cursor, SortKey, Target};
use portico_store::{ExportScan, HistoryQuery, SearchQuery};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Most units one batch runs through (each adds an audit record to the batch's commit).
const MAX_UNITS_PER_BATCH: usize = 256;

/// Where a job stands after its last committed batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// Index of the unit being exported.
    pub unit: usize,
    /// Paging cursor within that unit (None: from its start).
    pub cursor: Option<String>,
    /// Every file written so far: committed length and lines.
    pub files: BTreeMap<String, Mark>,
    /// Resources written.
    pub done: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Mark {
    pub res_type: String,
    pub sensitive: bool,
    pub bytes: u64,
    pub lines: u64,
}

/// One slice of the work: a type, confined to one patient's compartment (patient and group
/// exports) or not (system exports, confined by the permit alone); `deleted`: the
/// tombstones since `_since` rather than the live resources.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub res_type: String,
    pub patient: Option<String>,
    pub deleted: bool,
}

/// The units of a job, in a fixed order (so a checkpoint's index means the same after a
/// restart).
pub fn units(job: &ExportJobRow, params: &ExportParams) -> Vec<Unit> {
    let patients: Vec<String> = serde_json::from_str(&job.patients).unwrap_or_default();
    let mut out = Vec::new();
    for deleted in [false, true] {
        if deleted && params.since_ms.is_none() {
            continue;
        }
        for t in &params.types {
            if job.level == "system" && patients.is_empty() {
                out.push(Unit { res_type: t.clone(), patient: None, deleted });
            } else {
                for p in &patients {
                    out.push(Unit { res_type: t.clone(), patient: Some(p.clone()), deleted });
                }
            }
        }
    }
    out
}

/// Claim and run jobs until the process ends.
pub async fn run(state: AppState, n: usize) {
    let ex = state.export.clone();
    let lease_ms = ex.cfg.lease_ms();
    loop {
        match ex.store.export_claim(&ex.owner, now_ms(), lease_ms).await {
            Ok(Some(job)) => {
                tracing::info!(job = %job.id, worker = n, "export job claimed");
                run_job(&state, job).await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = ex.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "export: cannot claim jobs");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// How a job's run ended in this worker.
enum End {
    /// Done, stopped or failed: nothing more to do.
    Final,
    /// Could not go on now (database or audit unavailable, lease lost): the lease lapses
    /// and a worker picks the job up again from its checkpoint.
    Later,
}

async fn run_job(state: &AppState, job: ExportJobRow) {
    match try_run(state, &job).await {
        Ok(End::Final) => {}
        Ok(End::Later) => tokio::time::sleep(Duration::from_millis(200)).await,
        Err(msg) => {
            tracing::error!(job = %job.id, error = %msg, "export job failed");
            let oo = outcome("exception", "The export could not be completed.");
            let failed = state
                .export
                .store
                .export_finish(&job.id, &state.export.owner, state::FAILED, Some(&oo), Some("error"), now_ms())
                .await;
            // Only the lease holder withdraws: if another worker has taken the job over,
            // its files are that worker's to keep.
            match failed {
                Ok(true) => {
                    let _ = state.export.withdraw(&job.id).await;
                }
                Ok(false) => {
                    let _ = lost(state, &job).await;
                }
                Err(_) => {}
            }
        }
    }
}

/// An OperationOutcome as one line of JSON.
pub fn outcome(code: &str, diagnostics: &str) -> String {
    serde_json::json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]})
        .to_string()
}

async fn try_run(state: &AppState, job: &ExportJobRow) -> Result<End, String> {
    let ex = &state.export;
    let params: ExportParams = serde_json::from_str(&job.params).map_err(|e| format!("bad params: {e}"))?;
    let prints: BTreeMap<String, String> = serde_json::from_str(&job.permit_print).unwrap_or_default();
    let mut cp: Checkpoint = serde_json::from_str(&job.checkpoint).unwrap_or_default();
    let units = units(job, &params);
    let dir = ex.job_dir(&job.id);
    let mut w = Writers::new(&dir).map_err(|e| format!("export dir: {e}"))?;
    // A previous worker may have written past its last checkpoint before it died.
    w.restore(&cp.files.iter().map(|(k, m)| (k.clone(), m.bytes)).collect()).map_err(|e| format!("restore: {e}"))?;
    // The scan streams rows, so a batch costs no memory of its own; the search and history
    // paths cap it at a page.
    let batch = ex.cfg.batch.max(1);
    // The previous batch's commit (fsync, audit records, checkpoint), running while this
    // batch is read and written; it is settled before this batch's own commit starts, so
    // checkpoints still commit in order, each after the bytes it covers are durable.
    let mut pending: Option<Pending> = None;
    while cp.unit < units.len() {
        let t0 = Instant::now();
        let scope = Scope::new(&uuid::Uuid::new_v4().to_string());
        scope.begin(Interaction::BulkExport, Some(&units[cp.unit].res_type));
        let ctx = match requester::context(state, job, scope.clone()).await {
            Ok(c) => c,
            Err(gone) => {
                settle(state, job, pending.take()).await?;
                return stop(state, job, gone).await;
            }
        };
        let t_gate = t0.elapsed();
        // One batch runs on through the next units while it has room: a system export has
        // a unit for every type of the compartment, most of them empty, and each batch
        // costs fsyncs and two durable commits. Every unit still gets its own gate
        // decision and audit record (all committed together, before the checkpoint).
        let (mut room, mut slices, mut written_total) = (batch, 0usize, 0u64);
        loop {
            let unit = &units[cp.unit];
            if slices > 0 {
                scope.begin(Interaction::BulkExport, Some(&unit.res_type));
            }
            let action = if unit.deleted { Action::History } else { Action::Search };
            let permit = match state.gate.permit_search(&ctx, action, Some(&unit.res_type)) {
                Ok(p) => p,
                Err(r) if r.audit_failure.is_some() => {
                    settle(state, job, pending.take()).await?;
                    return Ok(End::Later);
                }
                Err(r) => {
                    settle(state, job, pending.take()).await?;
                    let why = r.verdict.map(|v| v.reason).unwrap_or_default();
                    return stop(state, job, Gone::PermitChanged(why)).await;
                }
            };
            if !unit.deleted
                && prints.get(&unit.res_type)
                    != Some(&requester::permit_print(std::slice::from_ref(&permit), ctx.now_ms))
            {
                settle(state, job, pending.take()).await?;
                return stop(
                    state,
                    job,
                    Gone::PermitChanged(format!("access to {} is not what it was", unit.res_type)),
                )
                .await;
            }
            let cursor = match &cp.cursor {
                Some(c) => Some(Cursor::decode(c).ok_or("bad checkpoint cursor")?),
                None => None,
            };
            let (written, seen, next) = if unit.deleted {
                export_deleted(state, &permit, unit, &params, cursor, room, &mut w, &mut cp).await?
            } else {
                export_live(state, &permit, unit, &params, cursor, room, &mut w, &mut cp).await?
            };
            scope.edit(|r| {
                r.query = Some(format!(
                    "op=batch&job={}&type={}{}&count={written}",
                    job.id,
                    unit.res_type,
                    if unit.deleted { "&deleted=true" } else { "" }
                ));
                if let Some(p) = &unit.patient {
                    r.on_behalf_of.get_or_insert_with(|| p.clone());
                }
            });
            written_total += written;
            slices += 1;
            let more = next.is_some();
            match next {
                Some(c) => cp.cursor = Some(c.encode()),
                None => {
                    cp.unit += 1;
                    cp.cursor = None;
                }
            }
            // An empty unit takes one row's room, so a batch holds at most `batch` records.
            room = room.saturating_sub(seen.max(1));
            if more || room == 0 || slices >= MAX_UNITS_PER_BATCH || cp.unit >= units.len() {
                break;
            }
        }
        let t_read = t0.elapsed();
        let durable = w.flushed().map_err(|e| format!("flush: {e}"))?;
        if let Some(end) = settle(state, job, pending.take()).await? {
            return Ok(end);
        }
        let t_settle = t0.elapsed();
        let progress = serde_json::json!({"done": cp.done, "unit": cp.unit, "units": units.len()}).to_string();
        let cp_text = serde_json::to_string(&cp).map_err(|e| e.to_string())?;
        pending = Some(tokio::spawn(commit(state.clone(), job.id.clone(), scope, durable, cp_text, progress)));
        // Where a batch's time goes (cumulative ms at the end of each step), for profiling:
        // the previous batch's commit is what this one waited for beyond its own reading.
        tracing::debug!(
            job = %job.id, unit = cp.unit, slices, written = written_total,
            context_ms = ms(t_gate), read_write_ms = ms(t_read), previous_commit_ms = ms(t_settle),
            "export batch"
        );
    }
    if let Some(end) = settle(state, job, pending.take()).await? {
        return Ok(end);
    }
    if params.summary_pdf && !cp.files.contains_key(super::summary::FILE) {
        let patients: Vec<String> = serde_json::from_str(&job.patients).unwrap_or_default();
        if let [patient] = patients.as_slice() {
            super::summary::write(&dir, &mut cp, patient, "portico", now_ms())?;
        }
    }
    finish(state, job, &cp, &mut w).await
}

/// A batch's commit, running on its own task.
type Pending = tokio::task::JoinHandle<Result<Committed, String>>;

enum Committed {
    Yes,
    /// The audit or the database is unavailable: try again from the last checkpoint.
    Later,
    /// The checkpoint did not apply: cancelled or taken over.
    Lost,
}

/// Make a batch durable: its bytes (fsync), then its decisions' audit records, then its
/// checkpoint (which names the lease owner and renews the lease).
async fn commit(
    state: AppState,
    job_id: String,
    scope: Scope,
    durable: files::Durable,
    cp_text: String,
    progress: String,
) -> Result<Committed, String> {
    let ex = &state.export;
    tokio::task::spawn_blocking(move || durable.sync())
        .await
        .map_err(|e| format!("sync: {e}"))?
        .map_err(|e| format!("sync: {e}"))?;
    // The batch's decisions are on record before the batch counts as done.
    if state.audit.finish(&scope, 200).await.is_err() {
        return Ok(Committed::Later);
    }
    let lease_ms = ex.cfg.lease_ms();
    let now = now_ms();
    Ok(match ex.store.export_checkpoint(&job_id, &ex.owner, &cp_text, &progress, now + lease_ms, now).await {
        Ok(true) => Committed::Yes,
        Ok(false) => Committed::Lost,
        Err(_) => Committed::Later,
    })
}

/// Wait for the previous batch's commit; how the run ends if it did not commit.
async fn settle(state: &AppState, job: &ExportJobRow, pending: Option<Pending>) -> Result<Option<End>, String> {
    let Some(p) = pending else { return Ok(None) };
    match p.await.map_err(|e| format!("commit: {e}"))?? {
        Committed::Yes => Ok(None),
        Committed::Later => Ok(Some(End::Later)),
        Committed::Lost => lost(state, job).await.map(Some),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[allow(clippy::too_many_arguments)]
async fn export_live(
    state: &AppState,
    permit: &SearchPermit,
    unit: &Unit,
    params: &ExportParams,
    cursor: Option<Cursor>,
    batch: usize,
    w: &mut Writers,
    cp: &mut Checkpoint,
) -> Result<(u64, usize, Option<Cursor>), String> {
    let type_filter = params.type_filters.iter().find(|(t, _)| *t == unit.res_type).map(|(_, f)| f.as_str());
    let mut lines = Lines::new(w, cp, permit, &unit.res_type, params.include_sensitive);
    let (seen, next) = match type_filter {
        Some(f) => filtered_page(state, permit, unit, params, f, cursor, batch, &mut lines).await?,
        None => scan_page(state, permit, unit, params, cursor, batch, &mut lines).await?,
    };
    let written = lines.written;
    cp.done += written;
    Ok((written, seen, next))
}

/// One batch of a unit without `_typeFilter`: the store's export scan in id order from the
/// last id of the previous batch, each row written as it arrives.
async fn scan_page(
    state: &AppState,
    permit: &SearchPermit,
    unit: &Unit,
    params: &ExportParams,
    cursor: Option<Cursor>,
    batch: usize,
    lines: &mut Lines<'_>,
) -> Result<(usize, Option<Cursor>), String> {
    let scan = ExportScan {
        res_type: unit.res_type.clone(),
        patient: unit.patient.clone(),
        since_ms: params.since_ms,
        // A cursor of either path: sorted by id, the id is its second key.
        after: cursor.and_then(|c| c.keys.get(1).and_then(|k| k.as_str()).map(str::to_string)),
        limit: batch,
    };
    let mut last = String::new();
    let mut seen = 0;
    let mut failed = None;
    let more = state
        .store
        .export_scan(permit, &scan, &mut |row| {
            last.clear();
            last.push_str(row.id);
            seen += 1;
            match lines.put(row.body, is_sensitive(row.labels)) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })
        .await
        .map_err(|e| format!("scan: {e}"))?;
    if let Some(e) = failed {
        return Err(e);
    }
    // The search path's cursor for an id sort, with a sequence number above every row's,
    // so either path resumes after this id and never at it.
    let next =
        more.then(|| Cursor { keys: vec![serde_json::Value::from(0), serde_json::Value::from(last)], seq: i64::MAX });
    Ok((seen, next))
}

/// One batch of a unit with `_typeFilter`: a search page sorted by id (the filter's
/// parameters compile to the search's SQL).
#[allow(clippy::too_many_arguments)]
async fn filtered_page(
    state: &AppState,
    permit: &SearchPermit,
    unit: &Unit,
    params: &ExportParams,
    type_filter: &str,
    cursor: Option<Cursor>,
    batch: usize,
    lines: &mut Lines<'_>,
) -> Result<(usize, Option<Cursor>), String> {
    let pairs = crate::server::fhir::service::parse_query_string(type_filter);
    let parsed = portico_store::search::parse_search(Some(&unit.res_type), &pairs)
        .map_err(|e| format!("typeFilter: {}", e.0))?;
    let q = SearchQuery {
        resource_types: vec![unit.res_type.clone()],
        in_compartment: unit.patient.clone(),
        since_ms: params.since_ms,
        filters: parsed.query.filters,
        // By id: a stable order in which every resource has exactly one place, so paging
        // across a restart neither repeats nor skips one.
        sort: vec![SortKey { target: Target::Id, descending: false }],
        count: batch.min(portico_store::search::MAX_COUNT),
        cursor,
        ..SearchQuery::default()
    };
    let page = state.store.search(permit, &q).await.map_err(|e| format!("search: {e}"))?;
    let ids: Vec<String> = page.entries.iter().map(|e| e.id.clone()).collect();
    let labels: BTreeMap<String, String> = state
        .export
        .store
        .export_labels(&unit.res_type, &ids)
        .await
        .map_err(|e| format!("labels: {e}"))?
        .into_iter()
        .collect();
    for e in page.entries.iter().filter(|e| !e.deleted) {
        // A resource relabelled since the page was read counts as sensitive (fail closed).
        lines.put(&e.body, labels.get(&e.id).is_none_or(|l| is_sensitive(l)))?;
    }
    Ok((page.entries.len(), page.next))
}

/// Where a batch's resources go: their file (plain or sensitive), the checkpoint's marks,
/// the permit's obligations.
struct Lines<'a> {
    w: &'a mut Writers,
    cp: &'a mut Checkpoint,
    permit: &'a SearchPermit,
    res_type: &'a str,
    include_sensitive: bool,
    /// File names, plain and sensitive (built once, not per line).
    names: [String; 2],
    written: u64,
}

impl<'a> Lines<'a> {
    fn new(
        w: &'a mut Writers,
        cp: &'a mut Checkpoint,
        permit: &'a SearchPermit,
        res_type: &'a str,
        include_sensitive: bool,
    ) -> Lines<'a> {
        let names = [files::file_name(res_type, false), files::file_name(res_type, true)];
        Lines { w, cp, permit, res_type, include_sensitive, names, written: 0 }
    }

    /// Write one resource (unless it is sensitive and the patient did not opt in).
    fn put(&mut self, body: &str, sensitive: bool) -> Result<(), String> {
        if sensitive && !self.include_sensitive {
            return Ok(());
        }
        let owned;
        let mut line = body;
        if !self.permit.obligations().is_empty() {
            let mut v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
            portico_policy::obligation::apply(self.permit.obligations(), &mut v);
            owned = v.to_string();
            line = &owned;
        }
        let replaced;
        if line.contains('\n') {
            // Outside strings a newline is whitespace (inside them JSON escapes it).
            replaced = line.replace('\n', " ");
            line = &replaced;
        }
        let name = &self.names[usize::from(sensitive)];
        self.w.append(name, line.as_bytes()).map_err(|e| format!("write: {e}"))?;
        self.w.append(name, b"\n").map_err(|e| format!("write: {e}"))?;
        let m = match self.cp.files.get_mut(name) {
            Some(m) => m,
            None => self.cp.files.entry(name.clone()).or_insert_with(|| Mark {
                res_type: self.res_type.to_string(),
                sensitive,
                ..Mark::default()
            }),
        };
        m.bytes += line.len() as u64 + 1;
        m.lines += 1;
        self.written += 1;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn export_deleted(
    state: &AppState,
    permit: &SearchPermit,
    unit: &Unit,
    params: &ExportParams,
    cursor: Option<Cursor>,
    batch: usize,
    w: &mut Writers,
    cp: &mut Checkpoint,
) -> Result<(u64, usize, Option<Cursor>), String> {
    let q = HistoryQuery {
        resource_type: Some(unit.res_type.clone()),
        id: None,
        since_ms: params.since_ms,
        at_ms: None,
        count: batch.min(portico_store::search::MAX_COUNT),
        cursor,
    };
    let page = state.store.history(permit, &q).await.map_err(|e| format!("history: {e}"))?;
    let mut written = 0;
    for e in page.entries.iter().filter(|e| e.deleted) {
        if let Some(p) = &unit.patient
            && !e.compartments.contains(p)
        {
            continue;
        }
        let line = serde_json::json!({
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "DELETE", "url": format!("{}/{}", e.resource_type, e.id)}}]
        })
        .to_string()
            + "\n";
        let name = "deleted.ndjson".to_string();
        w.append(&name, line.as_bytes()).map_err(|e| format!("write: {e}"))?;
        let m = cp.files.entry(name).or_insert_with(|| Mark { res_type: "Bundle".into(), ..Mark::default() });
        m.bytes += line.len() as u64;
        m.lines += 1;
        written += 1;
    }
    Ok((written, page.entries.len(), page.next))
}

/// Publish every file (with a bucket, uploaded and its stored size checked), record them
/// all complete in one transaction, then mark the job completed: a manifest never lists a
/// file the storage does not fully hold. A crash or a store failure in between repeats all
/// of it on the next claim (uploads overwrite, rows are upserted). Only a completed job's
/// local copies are dropped. The hashes were taken while the files were written (`w`), so
/// kept in place they are not read again.
async fn finish(state: &AppState, job: &ExportJobRow, cp: &Checkpoint, w: &mut Writers) -> Result<End, String> {
    let ex = &state.export;
    let lease_ms = ex.cfg.lease_ms();
    let mut rows = Vec::with_capacity(cp.files.len());
    for (name, m) in &cp.files {
        let written = w.digest(name).map_err(|e| format!("{name}: {e}"))?;
        let (sha, len) = match ex.storage.publish(&job.id, name, Some(written)).await {
            Ok(done) => done,
            Err(e) => {
                // The store may be back by the time the lease lapses and a worker retries.
                // Not a failure: a failed job is withdrawn, and a missing staging file may
                // mean another worker (which took over a lapsed lease) already finished it.
                tracing::warn!(job = %job.id, file = %name, error = %e, "export: publishing failed; retrying later");
                return Ok(End::Later);
            }
        };
        if len != m.bytes {
            return Err(format!("{name} holds {len} bytes, the checkpoint {}", m.bytes));
        }
        rows.push(ExportFileRow {
            job_id: job.id.clone(),
            name: name.clone(),
            res_type: m.res_type.clone(),
            sensitive: m.sensitive,
            path: format!("{}/{name}", job.id),
            line_count: m.lines as i64,
            bytes: m.bytes as i64,
            sha256: Some(sha),
            complete: true,
        });
        if !ex.storage.uploads() {
            continue;
        }
        // Uploads take time: renew the lease after each file, so another worker does not
        // take the job over while it is being published (and stop if it was cancelled).
        let cp_text = serde_json::to_string(cp).map_err(|e| e.to_string())?;
        let progress = serde_json::json!({"done": cp.done, "unit": cp.unit, "units": cp.unit}).to_string();
        let now = now_ms();
        match ex.store.export_checkpoint(&job.id, &ex.owner, &cp_text, &progress, now + lease_ms, now).await {
            Ok(true) => {}
            Ok(false) => return lost(state, job).await,
            Err(_) => return Ok(End::Later),
        }
    }
    if ex.store.export_files_put(&rows).await.is_err() {
        return Ok(End::Later);
    }
    match ex.store.export_finish(&job.id, &ex.owner, state::COMPLETED, None, None, now_ms()).await {
        Ok(true) => {
            ex.storage.release_staging(&job.id).await;
            tracing::info!(job = %job.id, resources = cp.done, storage = %ex.storage.describe(), "export job completed");
            Ok(End::Final)
        }
        Ok(false) => lost(state, job).await,
        Err(_) => Ok(End::Later),
    }
}

/// Our checkpoint did not apply: the job was cancelled (remove what we wrote) or another
/// worker holds it now (leave it alone).
async fn lost(state: &AppState, job: &ExportJobRow) -> Result<End, String> {
    if let Ok(Some(now)) = state.export.store.export_get(&job.id).await
        && !now.is_active()
        && now.state != state::COMPLETED
    {
        let _ = state.export.withdraw(&job.id).await;
    }
    Ok(End::Final)
}

/// The requester's access is gone: fail the job with the reason, withdraw its files and
/// record the stop.
async fn stop(state: &AppState, job: &ExportJobRow, gone: Gone) -> Result<End, String> {
    stop_job(state, job, &gone, &[state::RUNNING, state::ACCEPTED]).await;
    Ok(End::Final)
}

/// Stop a job (in one of `from`) because its requester's access is gone.
pub async fn stop_job(state: &AppState, job: &ExportJobRow, gone: &Gone, from: &[&str]) -> bool {
    let reason = gone.reason();
    let oo = outcome("forbidden", &reason);
    let code = match gone {
        Gone::GrantRevoked => "revoked",
        Gone::PermitChanged(_) => "permit-changed",
    };
    let moved = state
        .export
        .store
        .export_transition(&job.id, from, state::FAILED, Some(&oo), &format!("{code}: {reason}"), now_ms())
        .await
        .unwrap_or(false);
    if moved {
        let _ = state.export.withdraw(&job.id).await;
        record(state, job, &format!("op=stopped&reason={code}"), 403, Some(&reason)).await;
    }
    moved
}

/// One audit record about a job, made outside any request (worker, sweeper).
pub async fn record(state: &AppState, job: &ExportJobRow, query: &str, status: u16, reason: Option<&str>) {
    let scope = Scope::new(&uuid::Uuid::new_v4().to_string());
    let who = job.user_id.clone().unwrap_or_else(|| job.client_id.clone());
    let on_behalf = (!job.patient.is_empty()).then(|| job.patient.clone());
    scope.set_actor(Actor::new(&job.principal, &who), on_behalf, Some(job.client_id.clone()), None);
    scope.begin(Interaction::BulkExport, None);
    let query = format!("{query}&job={}", job.id);
    let reason = reason.map(str::to_string);
    let patients: Vec<String> = serde_json::from_str(&job.patients).unwrap_or_default();
    scope.edit(|r| {
        r.query = Some(query);
        r.reason = reason;
        r.patients = patients;
    });
    if let Err(e) = state.audit.finish(&scope, status).await {
        tracing::error!(job = %job.id, error = ?e, "export: audit record could not be written");
    }
}

/// Remove expired exports (and any files a stopped job left behind) every few seconds.
pub async fn sweep_forever(state: AppState) {
    loop {
        sweep_once(&state.export, &state).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// One pass of the sweeper.
pub async fn sweep_once(ex: &Exports, state: &AppState) {
    let Ok(due) = ex.store.export_due_for_sweep(now_ms()).await else { return };
    for job in due {
        if job.state == state::COMPLETED {
            let moved = ex
                .store
                .export_transition(&job.id, &[state::COMPLETED], state::EXPIRED, None, "expired", now_ms())
                .await
                .unwrap_or(false);
            if moved {
                let _ = ex.withdraw(&job.id).await;
                record(state, &job, "op=expire", 200, None).await;
            }
        } else {
            let _ = ex.withdraw(&job.id).await;
        }
    }
}
