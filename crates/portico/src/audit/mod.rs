//! The server's side of the audit trail: the audit key, the appender that makes records
//! durable before a response leaves, signed heads (at intervals, at shutdown, and in the
//! witness file) and retention. The records, the chain and verification live in
//! `portico-audit`; storage in `portico-store`.
//!
//! Appends: records of a write go into the write's own database transaction
//! (`server::fhir::service`); every other record (reads, searches, denials, failures) is
//! appended here, and the response waits until it is committed. In `batched` mode one task
//! per process collects the records of concurrent requests and commits them together
//! (group commit: one fsync for many requests); in `direct` mode each request commits its
//! own. Both are durable before the response; `batched` is the default because it measured
//! several times faster under concurrency (see the audit section of `ARCHITECTURE.md`).

pub mod keyfile;
pub mod witness;

use crate::config::AuditConfig;
use portico_audit::{AuditKey, AuditRecord, Chainer, HeadKind, PublicKey, Scope, SignedHead};
use portico_store::{Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most records one group commit carries.
const MAX_BATCH_RECORDS: usize = 2_000;
/// Requests that may wait for the appender at once before senders wait.
const QUEUE: usize = 8_192;

/// The audit trail could not record: the request must fail closed (503).
#[derive(Debug, Clone, thiserror::Error)]
#[error("audit trail unavailable")]
pub struct AuditUnavailable;

/// How records that are not part of a write are appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendMode {
    /// One transaction per request.
    Direct,
    /// Group commit by one task per process.
    Batched,
}

impl AppendMode {
    pub fn parse(s: &str) -> Option<AppendMode> {
        match s {
            "direct" => Some(AppendMode::Direct),
            "batched" => Some(AppendMode::Batched),
            _ => None,
        }
    }
}

struct Job {
    records: Vec<AuditRecord>,
    done: oneshot::Sender<Result<(), ()>>,
}

/// The audit trail of a running server.
pub struct AuditTrail {
    store: Arc<dyn Store>,
    key: AuditKey,
    chainer: Chainer,
    queue: Option<mpsc::Sender<Job>>,
    witness: Option<PathBuf>,
    /// Serialises head signing within the process.
    signing: tokio::sync::Mutex<()>,
}

impl AuditTrail {
    /// Start the trail over `store` with `key`; in batched mode this spawns the appender
    /// task (so it must run inside the runtime).
    pub fn start(store: Arc<dyn Store>, key: AuditKey, config: &AuditConfig) -> Arc<AuditTrail> {
        let chainer = Chainer::new(key.mac_key());
        let mode = AppendMode::parse(&config.append).unwrap_or(AppendMode::Batched);
        let queue = (mode == AppendMode::Batched).then(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(appender(store.clone(), chainer.clone(), rx));
            tx
        });
        let witness = (!config.witness_file.is_empty()).then(|| PathBuf::from(&config.witness_file));
        Arc::new(AuditTrail { store, key, chainer, queue, witness, signing: tokio::sync::Mutex::new(()) })
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

    /// Make records durable; returns once they are committed.
    pub async fn append(&self, records: Vec<AuditRecord>) -> Result<(), AuditUnavailable> {
        if records.is_empty() {
            return Ok(());
        }
        match &self.queue {
            None => self.store.audit_append(&self.chainer, &records).await.map(|_| ()).map_err(|e| failed(&e)),
            Some(q) => {
                let (done, wait) = oneshot::channel();
                q.send(Job { records, done }).await.map_err(|_| AuditUnavailable)?;
                wait.await.map_err(|_| AuditUnavailable)?.map_err(|_| AuditUnavailable)
            }
        }
    }

    /// Write every record of a request that is not written yet (the request was answered
    /// with `status`).
    pub async fn finish(&self, scope: &Scope, status: u16) -> Result<(), AuditUnavailable> {
        if !scope.has_pending() {
            return Ok(());
        }
        self.append(scope.finish(status, now_ms())).await
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

/// The group-commit task: take every waiting request's records, commit them in one
/// transaction, answer each request.
async fn appender(store: Arc<dyn Store>, chainer: Chainer, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut n = jobs[0].records.len();
        while n < MAX_BATCH_RECORDS {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.records.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let mut records = Vec::with_capacity(n);
        let mut waiters = Vec::with_capacity(jobs.len());
        for j in jobs {
            records.extend(j.records);
            waiters.push(j.done);
        }
        let r = store.audit_append(&chainer, &records).await.map(|_| ()).map_err(|e| {
            failed(&e);
        });
        for w in waiters {
            let _ = w.send(r);
        }
    }
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
    #[error("cannot read the audit log: {0}")]
    Store(#[from] StoreError),
}

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
                        for r in &rows {
                            if let Err(f) = v.push(r) {
                                return fail(f);
                            }
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
        Ok(Some(report)) => Ok(report),
        Ok(None) => Err(StoreError::AuditChain("the audit log could not be read".into()).into()),
        Err(f) => Err(VerifyError::Tampered(f)),
    }
}

/// Rows read per query by `verify_store`.
const SCAN_BATCH: usize = 10_000;

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
