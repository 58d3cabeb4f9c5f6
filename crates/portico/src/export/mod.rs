//! Bulk `$export` (FHIR Bulk Data Access 2.0): durable jobs, the workers that run them, their
//! files and manifests. The HTTP side is `server/fhir/export.rs`.
//!
//! - A kick-off decides what goes in through the gate (the same `SearchPermit` a search
//!   gets, applied in SQL by the store) and stores a job row ([`portico_store::export`]).
//! - Workers ([`worker`]) claim jobs with a lease, write one page per batch to NDJSON files
//!   ([`files`]), fsync them, then commit a checkpoint (the unit, its paging cursor, every
//!   file's byte offset and line count). After a crash the next claimant truncates each file
//!   to its checkpointed offset and continues: no line twice, none missing.
//! - Between batches the job re-derives the requester's context from its grant and asks the
//!   gate again ([`requester`]); a revoked grant or a changed permit stops the job, withdraws
//!   its files and records why.
//! - Sensitive categories go to separate files and only when the patient opted in with a
//!   fresh step-up.
//! - Finished files stay in the local directory or go to an S3-compatible bucket
//!   ([`storage`]); finishing, downloads and withdrawal go through that one abstraction.

pub mod files;
pub mod links;
pub mod manifest;
pub mod params;
pub mod requester;
pub mod storage;
pub mod summary;
pub mod worker;

use crate::config::ExportConfig;
use portico_store::ExportStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::Storage;

/// Sensitivity labels whose resources go into separate `.sensitive` files and only with
/// the patient's explicit opt-in: behavioral and mental health (BH, MH, PSY), substance use
/// (ETH, SUD), sexual and reproductive health (SEX), HIV and other STDs (HIV, STD),
/// genetics (GDIS) — the codes of `portico_fhir::classify::SENSITIVITY_LABELS`.
pub const SENSITIVE_LABELS: &[&str] = &["BH", "MH", "PSY", "ETH", "SUD", "SEX", "HIV", "STD", "GDIS"];

/// Whether stored labels (space-separated) mark a resource as sensitive for export.
pub fn is_sensitive(labels: &str) -> bool {
    labels.split(' ').any(|l| SENSITIVE_LABELS.contains(&l))
}

/// The export service: its store, where files are kept, and limits.
#[derive(Clone)]
pub struct Exports {
    pub store: Arc<dyn ExportStore>,
    /// Staging directory of running jobs and home of finished files (local or a bucket).
    pub storage: Storage,
    pub cfg: ExportConfig,
    /// This process's lease owner id.
    pub owner: String,
    /// Wakes idle workers when a job is kicked off in this process.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Exports {
    /// Set up the export service; with `[export] store` a bucket, check it can be reached
    /// (start-up stops with the reason when it cannot).
    pub async fn open(store: Arc<dyn ExportStore>, data_dir: &Path, cfg: &ExportConfig) -> anyhow::Result<Exports> {
        let dir = if cfg.dir.is_empty() { data_dir.join("exports") } else { PathBuf::from(&cfg.dir) };
        let storage = match cfg.s3_settings().map_err(anyhow::Error::msg)? {
            None => Storage::local(dir),
            Some(s3) => Storage::bucket(dir, &s3).await.map_err(anyhow::Error::msg)?,
        };
        Ok(Exports {
            store,
            storage,
            cfg: cfg.clone(),
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// A job's local (staging) directory.
    pub fn job_dir(&self, job_id: &str) -> PathBuf {
        self.storage.job_dir(job_id)
    }

    /// Remove a job's files and then their rows (cancel, revocation, expiry). When the
    /// bucket cannot be cleared now the rows stay, so the sweeper tries again (it revisits
    /// ended jobs that still have file rows).
    pub async fn withdraw(&self, job_id: &str) -> Result<(), portico_store::StoreError> {
        if let Err(e) = self.storage.remove(job_id).await {
            tracing::warn!(job = job_id, error = %e, "could not remove export files; the sweeper retries");
            return Ok(());
        }
        self.store.export_files_delete(job_id).await
    }
}

/// Start this process's export workers and the expiry sweeper.
pub fn spawn(state: &crate::server::AppState) {
    for n in 0..state.export.cfg.workers {
        let state = state.clone();
        tokio::spawn(async move { worker::run(state, n).await });
    }
    if state.export.cfg.workers > 0 {
        let state = state.clone();
        tokio::spawn(async move { worker::sweep_forever(state).await });
    }
}
