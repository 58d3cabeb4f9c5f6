//! The server's side of the audit trail: the audit key, the appender that makes records
//! durable, signed heads (at intervals, at shutdown, and in the witness file) and retention.
//! The records, the chain and verification live in `portico-audit`; storage in
//! `portico-store`.
//!
//! Appends: records of a write go into the write's own database transaction
//! (`server::fhir::service`), whatever the mode. Every other record (reads, searches,
//! history, denials, failures, identity events) is appended here, in one of three modes:
//!
//! * `direct`: each request commits its own records, then responds.
//! * `batched`: one appender task per process commits the records of every waiting request
//!   in one transaction (group commit), then answers each; the response waits.
//! * `deferred` (the default): the response path ([`AuditTrail::finish_response`]) hands
//!   its records to the appender's in-memory queue and responds without waiting; the
//!   appender commits the queue at most `audit.flush_ms` after a record arrived, or as soon
//!   as `audit.flush_records` are waiting. The window is bounded: when
//!   `audit.queue_records` answered records are not yet committed, or the last commit
//!   failed, requests wait for their own commit again (as in `batched`) and fail closed
//!   (503) if it fails. Records already answered are never dropped on a failed commit: they
//!   stay queued and are retried. A clean shutdown commits the queue ([`AuditTrail::flush`])
//!   before the final signed head. What a crash (kill -9, power loss) can lose is at most
//!   the records answered in the last `flush_ms` plus one commit, never more than
//!   `queue_records` — see the audit section of `ARCHITECTURE.md` for the figures that chose
//!   the default.
//!
//! Callers that are not answering an HTTP response (the importer, CLI commands, tests) use
//! [`AuditTrail::finish`]/[`AuditTrail::append`], which always wait for the commit.

pub mod keyfile;
pub mod witness;

use crate::config::AuditConfig;
use portico_audit::{AuditKey, AuditRecord, Chainer, HeadKind, PublicKey, Scope, SignedHead};
use portico_store::{Store, StoreError};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// Most records one commit carries (a transaction holds the audit head lock, and on SQLite
/// the one write lock, for as long as it takes).
const MAX_BATCH_RECORDS: usize = 2_000;
/// Pause after a failed commit before the appender retries records it still holds.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The audit trail could not record: the request must fail closed (503).
#[derive(Debug, Clone, thiserror::Error)]
#[error("audit trail unavailable")]
pub struct AuditUnavailable;

/// What a `bench-audit-off` build does with the records of read responses.
#[cfg(feature = "bench-audit-off")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BenchAudit {
    On,
    Off,
    BuildOnly,
}

/// How records that are not part of a write are appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendMode {
    /// One transaction per request; the response waits for it.
    Direct,
    /// Group commit by one task per process; the response waits for it.
    Batched,
    /// Responses hand their records to the group-commit task and do not wait (bounded:
    /// see the module documentation).
    Deferred,
}

impl AppendMode {
    pub fn parse(s: &str) -> Option<AppendMode> {
        match s {
            "direct" => Some(AppendMode::Direct),
            "batched" => Some(AppendMode::Batched),
            "deferred" => Some(AppendMode::Deferred),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AppendMode::Direct => "direct",
            AppendMode::Batched => "batched",
            AppendMode::Deferred => "deferred",
        }
    }
}

/// The bounds of the deferred mode.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// Longest a deferred record waits in the queue before a commit starts.
    flush_after: Duration,
    /// Commit as soon as this many records wait.
    flush_records: usize,
    /// Most records answered but not yet committed; beyond it requests wait again.
    cap: usize,
}

/// Records handed over by one request (or a flush barrier: no records, a waiter).
struct Entry {
    records: Vec<AuditRecord>,
    /// `None`: the response already left (deferred); `Some`: a caller waits for the commit.
    done: Option<oneshot::Sender<Result<(), ()>>>,
    at: Instant,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// Records in `entries`.
    queued: usize,
    /// Entries in `entries` with a waiter (they are committed at once: group commit).
    waiting: usize,
    /// Records whose response left before they were committed (queued or being committed):
    /// what a crash now would lose.
    exposed: usize,
    /// The last commit failed: nobody defers until one succeeds.
    failing: bool,
}

/// The queue between requests and the appender task (batched and deferred modes).
struct Appender {
    queue: Mutex<Queue>,
    wake: Notify,
    bounds: Bounds,
}

impl Appender {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `records` and wait until they are committed (group commit).
    async fn commit(&self, records: Vec<AuditRecord>) -> Result<(), AuditUnavailable> {
        let (done, wait) = oneshot::channel();
        {
            let mut q = self.lock();
            q.queued += records.len();
            q.waiting += 1;
            q.entries.push_back(Entry { records, done: Some(done), at: Instant::now() });
        }
        self.wake.notify_one();
        wait.await.map_err(|_| AuditUnavailable)?.map_err(|_| AuditUnavailable)
    }

    /// Queue `records` without waiting, if the bounds allow; otherwise wait for the commit.
    async fn defer(&self, records: Vec<AuditRecord>) -> Result<(), AuditUnavailable> {
        {
            let mut q = self.lock();
            let n = records.len();
            if !q.failing && q.exposed + n <= self.bounds.cap {
                // The appender learns of the first entry (to time its commit) and of a full
                // batch; entries in between need no wake-up.
                let first = q.entries.is_empty();
                q.queued += n;
                q.exposed += n;
                q.entries.push_back(Entry { records, done: None, at: Instant::now() });
                let wake = first || q.queued >= self.bounds.flush_records;
                drop(q);
                if wake {
                    self.wake.notify_one();
                }
                return Ok(());
            }
        }
        self.commit(records).await
    }

    /// Records answered but not committed yet.
    fn exposed(&self) -> usize {
        self.lock().exposed
    }

    /// Wait until there is a batch to commit, and take it.
    async fn next_batch(&self) -> Vec<Entry> {
        loop {
            let wait = {
                let mut q = self.lock();
                match q.entries.front().map(|e| e.at) {
                    None => None,
                    Some(oldest) => {
                        let due = oldest + self.bounds.flush_after;
                        if q.waiting > 0 || q.queued >= self.bounds.flush_records || Instant::now() >= due {
                            return take_batch(&mut q);
                        }
                        Some(due)
                    }
                }
            };
            match wait {
                None => self.wake.notified().await,
                Some(due) => {
                    let _ = tokio::time::timeout_at(due.into(), self.wake.notified()).await;
                }
            }
        }
    }

    /// Commit one batch; answer its waiters. Records whose response already left are kept
    /// (at the front, in order) when the commit fails, and retried.
    async fn commit_batch(&self, store: &dyn Store, chainer: &Chainer, batch: Vec<Entry>) -> bool {
        let n: usize = batch.iter().map(|e| e.records.len()).sum();
        let mut records = Vec::with_capacity(n);
        let mut shape = Vec::with_capacity(batch.len());
        for e in batch {
            shape.push((e.records.len(), e.done, e.at));
            records.extend(e.records);
        }
        let tried = !records.is_empty();
        let ok = !tried || store.audit_append(chainer, &records).await.map_err(|e| failed(&e)).is_ok();
        let mut q = self.lock();
        if tried {
            q.failing = !ok;
        }
        if ok {
            let exposed: usize = shape.iter().filter(|(_, d, _)| d.is_none()).map(|(n, _, _)| n).sum();
            q.exposed -= exposed;
            drop(q);
            for (_, done, _) in shape {
                if let Some(d) = done {
                    let _ = d.send(Ok(()));
                }
            }
            return true;
        }
        // Put the answered records back, in their order, ahead of anything queued since.
        let mut rest = records.into_iter();
        let mut keep = Vec::new();
        for (n, done, at) in shape {
            let recs: Vec<AuditRecord> = rest.by_ref().take(n).collect();
            match done {
                Some(d) => {
                    let _ = d.send(Err(()));
                }
                None => keep.push(Entry { records: recs, done: None, at }),
            }
        }
        for e in keep.into_iter().rev() {
            q.queued += e.records.len();
            q.entries.push_front(e);
        }
        false
    }
}

/// Take entries from the front, up to [`MAX_BATCH_RECORDS`] (at least one entry).
fn take_batch(q: &mut Queue) -> Vec<Entry> {
    let mut batch = Vec::new();
    let mut n = 0;
    while let Some(e) = q.entries.front() {
        if !batch.is_empty() && n + e.records.len() > MAX_BATCH_RECORDS {
            break;
        }
        let e = q.entries.pop_front().expect("front exists");
        n += e.records.len();
        q.queued -= e.records.len();
        if e.done.is_some() {
            q.waiting -= 1;
        }
        batch.push(e);
    }
    batch
}

/// The appender task: commit batches as they fall due.
async fn appender(store: Arc<dyn Store>, chainer: Chainer, queue: Arc<Appender>) {
    loop {
        let batch = queue.next_batch().await;
        if !queue.commit_batch(store.as_ref(), &chainer, batch).await {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// The audit trail of a running server.
pub struct AuditTrail {
    store: Arc<dyn Store>,
    key: AuditKey,
    chainer: Chainer,
    mode: AppendMode,
    /// The appender's queue (batched and deferred modes).
    queue: Option<Arc<Appender>>,
    witness: Option<PathBuf>,
    /// Serialises head signing within the process.
    signing: tokio::sync::Mutex<()>,
}

impl AuditTrail {
    /// Start the trail over `store` with `key`; in batched and deferred mode this spawns the
    /// appender task (so it must run inside the runtime).
    pub fn start(store: Arc<dyn Store>, key: AuditKey, config: &AuditConfig) -> Arc<AuditTrail> {
        let chainer = Chainer::new(key.mac_key());
        let mode = AppendMode::parse(&config.append).unwrap_or(AppendMode::Deferred);
        let queue = (mode != AppendMode::Direct).then(|| {
            let bounds = Bounds {
                flush_after: Duration::from_millis(config.flush_ms.max(1)),
                flush_records: config.flush_records.max(1),
                cap: config.queue_records,
            };
            let q = Arc::new(Appender { queue: Mutex::new(Queue::default()), wake: Notify::new(), bounds });
            tokio::spawn(appender(store.clone(), chainer.clone(), q.clone()));
            q
        });
        // Records of writes that a crash left in the outbox (SQLite file stores) are chained
        // now rather than with the first append.
        let (outbox_store, outbox_chainer) = (store.clone(), chainer.clone());
        tokio::spawn(async move {
            if let Err(e) = outbox_store.audit_append(&outbox_chainer, &[]).await {
                tracing::warn!(error = %e, "cannot chain the audit records waiting in the outbox");
            }
        });
        let witness = (!config.witness_file.is_empty()).then(|| PathBuf::from(&config.witness_file));
        Arc::new(AuditTrail { store, key, chainer, mode, queue, witness, signing: tokio::sync::Mutex::new(()) })
    }

    /// Links records into the chain (handed to the store for in-transaction appends).
    pub fn chainer(&self) -> &Chainer {
        &self.chainer
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    pub fn mode(&self) -> AppendMode {
        self.mode
    }

    /// Make records durable; returns once they are committed.
    pub async fn append(&self, records: Vec<AuditRecord>) -> Result<(), AuditUnavailable> {
        if records.is_empty() {
            return Ok(());
        }
        match &self.queue {
            None => self.store.audit_append(&self.chainer, &records).await.map(|_| ()).map_err(|e| failed(&e)),
            Some(q) => q.commit(records).await,
        }
    }

    /// Write every record of a request that is not written yet (the request was answered
    /// with `status`), and wait until they are committed.
    pub async fn finish(&self, scope: &Scope, status: u16) -> Result<(), AuditUnavailable> {
        if !scope.has_pending() {
            return Ok(());
        }
        self.append(scope.finish(status, now_ms())).await
    }

    /// [`AuditTrail::finish`] for a response about to leave: in deferred mode the records
    /// are queued and this returns at once, unless the queue is over its bound or the
    /// appender is failing — then it waits for the commit, and an error means the response
    /// must not be sent (503).
    pub async fn finish_response(&self, scope: &Scope, status: u16) -> Result<(), AuditUnavailable> {
        if !scope.has_pending() {
            return Ok(());
        }
        #[cfg(feature = "bench-audit-off")]
        if Self::bench_audit() == BenchAudit::Off {
            return Ok(());
        }
        let records = scope.finish(status, now_ms());
        #[cfg(feature = "bench-audit-off")]
        if Self::bench_audit() == BenchAudit::BuildOnly {
            return Ok(());
        }
        self.append_response(records).await
    }

    /// `bench/audit.sh`'s baseline: a binary built with the `bench-audit-off` feature (never a
    /// default, never shipped) drops the records of read responses when PORTICO_BENCH_AUDIT_OFF
    /// is set — or builds and then drops them with PORTICO_BENCH_AUDIT_BUILD_ONLY — so the read
    /// benchmark can be measured with and without the audit trail from one binary. Writes keep
    /// their records (they commit in the write's transaction). Read once: not per request.
    #[cfg(feature = "bench-audit-off")]
    fn bench_audit() -> BenchAudit {
        static MODE: std::sync::OnceLock<BenchAudit> = std::sync::OnceLock::new();
        *MODE.get_or_init(|| {
            if std::env::var_os("PORTICO_BENCH_AUDIT_OFF").is_some() {
                BenchAudit::Off
            } else if std::env::var_os("PORTICO_BENCH_AUDIT_BUILD_ONLY").is_some() {
                BenchAudit::BuildOnly
            } else {
                BenchAudit::On
            }
        })
    }

    /// Records of a response about to leave (see [`AuditTrail::finish_response`]).
    pub async fn append_response(&self, records: Vec<AuditRecord>) -> Result<(), AuditUnavailable> {
        if records.is_empty() {
            return Ok(());
        }
        match (&self.queue, self.mode) {
            (Some(q), AppendMode::Deferred) => q.defer(records).await,
            _ => self.append(records).await,
        }
    }

    /// Commit every record queued so far (deferred mode; a no-op otherwise). Fails if a
    /// commit fails; the records stay queued and are retried.
    pub async fn flush(&self) -> Result<(), AuditUnavailable> {
        match &self.queue {
            Some(q) => q.commit(Vec::new()).await,
            None => Ok(()),
        }
    }

    /// Records whose response has left but which are not committed yet.
    pub fn uncommitted(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.exposed())
    }

    /// At shutdown: commit the queue, retrying for up to `patience`. Returns how many
    /// answered records could not be committed (0 when all are durable).
    pub async fn shutdown_flush(&self, patience: Duration) -> usize {
        let deadline = Instant::now() + patience;
        loop {
            if self.flush().await.is_ok() && self.uncommitted() == 0 {
                return 0;
            }
            if Instant::now() >= deadline {
                return self.uncommitted();
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Sign the chain's head if it moved since the last signed head, keep it in the
    /// database and the witness file. Returns the head now signed (or the newest one).
    pub async fn sign_head(&self) -> Result<Option<SignedHead>, StoreError> {
        let _one_at_a_time = self.signing.lock().await;
        let (seq, hash) = self.store.audit_head().await?;
        if seq == 0 {
            return Ok(None);
        }
        let latest = self.store.audit_latest_head().await?;
        let head = match latest {
            Some(h) if h.seq == seq && h.hash == hash && h.key_id == self.key.public().key_id() => h,
            _ => {
                let h = SignedHead::sign(&self.key, HeadKind::Head, seq, hash, now_ms());
                self.store.audit_put_head(&h).await?;
                h
            }
        };
        if let Some(path) = &self.witness {
            if let Err(e) = witness::write(path, &head) {
                tracing::error!(error = %e, "cannot update the audit witness file");
            }
        }
        Ok(Some(head))
    }

    /// Prune records older than `before_ms`, leaving a signed checkpoint. Returns how many
    /// records went and the checkpoint.
    pub async fn prune_before(&self, before_ms: i64) -> Result<(u64, Option<SignedHead>), StoreError> {
        let Some((seq, hash)) = self.store.audit_prune_point(before_ms).await? else { return Ok((0, None)) };
        let cp = SignedHead::sign(&self.key, HeadKind::Checkpoint, seq, hash, now_ms());
        let n = self.store.audit_prune(&cp).await?;
        Ok((n, Some(cp)))
    }
}

fn failed(e: &StoreError) -> AuditUnavailable {
    tracing::error!(error = %e, "audit append failed; request refused");
    AuditUnavailable
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Sign heads every `interval` until the process ends.
pub fn spawn_head_signer(trail: Arc<AuditTrail>, interval: std::time::Duration) {
    if interval.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = trail.sign_head().await {
                tracing::warn!(error = %e, "cannot sign the audit head");
            }
        }
    });
}

/// Why a stored log did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log was tampered with (or is damaged): the first bad record.
    #[error("{0}")]
    Tampered(portico_audit::Finding),
    /// Records of committed writes that have waited in the outbox longer than
    /// [`OUTBOX_STALE`]: no append has run since, or appends fail.
    #[error(
        "{waiting} audit record(s) of committed writes are not in the chain; the oldest has waited since {oldest_ms} ms \
         after the epoch (a server start chains them; if one is running, its appends are failing)"
    )]
    Unchained { waiting: u64, oldest_ms: i64 },
    #[error("cannot read the audit log: {0}")]
    Store(#[from] StoreError),
}

/// How long a write's records may wait in the outbox before `verify` fails: the appender
/// chains them before the write is answered, so only a crash or failing appends leave them.
pub const OUTBOX_STALE: Duration = Duration::from_secs(300);

/// Verify the stored log against `trust` and an optional witness head, reading it in one
/// consistent snapshot; `progress(done, total)` is called as rows are read. Reading and
/// checking run in parallel: the store fetches the next batch while a blocking thread
/// checks the last one.
pub async fn verify_store(
    store: &dyn Store,
    trust: portico_audit::Trust,
    witness: Option<SignedHead>,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<portico_audit::Report, VerifyError> {
    use portico_audit::Verifier;
    use portico_store::ScanItem;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (tx, rx) = std::sync::mpsc::sync_channel::<ScanItem>(2);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_checker = stop.clone();
    let checker =
        tokio::task::spawn_blocking(move || -> Result<Option<portico_audit::Report>, portico_audit::Finding> {
            let fail = |f| {
                stop_checker.store(true, Ordering::Relaxed);
                Err(f)
            };
            let mut verifier: Option<Verifier> = None;
            let (mut trust, mut witness) = (Some(trust), Some(witness));
            for item in rx {
                match item {
                    ScanItem::State(state) => {
                        match Verifier::new(trust.take().unwrap_or_default(), state, witness.take().flatten()) {
                            Ok(v) => verifier = Some(v),
                            Err(f) => return fail(f),
                        }
                    }
                    ScanItem::Rows(rows) => {
                        let Some(v) = verifier.as_mut() else { return Ok(None) };
                        if let Err(f) = v.push_batch(&rows) {
                            return fail(f);
                        }
                    }
                }
            }
            match verifier {
                Some(v) => v.finish().map(Some).or_else(fail),
                None => Ok(None),
            }
        });
    let mut done = 0u64;
    let mut total = 0u64;
    {
        let mut on = |item: ScanItem| -> bool {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            match &item {
                ScanItem::State(state) => {
                    total = (state.head_seq - state.checkpoint.as_ref().map_or(0, |c| c.seq)).max(0) as u64;
                }
                ScanItem::Rows(rows) => {
                    done += rows.len() as u64;
                    progress(done, total);
                }
            }
            tx.send(item).is_ok()
        };
        store.audit_scan(SCAN_BATCH, &mut on).await?;
    }
    drop(tx);
    let checked = checker.await.map_err(|_| StoreError::AuditChain("the verifier stopped unexpectedly".into()))?;
    match checked {
        Ok(Some(report)) => match report.outbox_oldest_ms {
            Some(oldest_ms) if oldest_ms < now_ms() - OUTBOX_STALE.as_millis() as i64 => {
                Err(VerifyError::Unchained { waiting: report.outbox_waiting, oldest_ms })
            }
            _ => Ok(report),
        },
        Ok(None) => Err(StoreError::AuditChain("the audit log could not be read".into()).into()),
        Err(f) => Err(VerifyError::Tampered(f)),
    }
}

/// Rows read per query by `verify_store`.
const SCAN_BATCH: usize = 1_000;

/// Prune once a day when a retention is configured.
pub fn spawn_retention(trail: Arc<AuditTrail>, days: u64) {
    if days == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(24 * 3600));
        loop {
            tick.tick().await;
            let before = now_ms() - (days as i64) * 24 * 3600 * 1000;
            match trail.prune_before(before).await {
                Ok((n, Some(cp))) => tracing::info!(records = n, checkpoint = cp.seq, "audit records pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "audit pruning failed"),
            }
        }
    });
}
