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

pub mod files;
pub mod links;
pub mod manifest;
pub mod params;
pub mod requester;
pub mod summary;
pub mod worker;

use crate::config::ExportConfig;
use portico_store::ExportStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Sensitivity labels whose resources go into separate `.sensitive` files and only with
/// the patient's explicit opt-in: behavioral and mental health (BH, MH, PSY), substance use
/// (ETH, SUD), sexual and reproductive health (SEX), HIV and other STDs (HIV, STD),
/// genetics (GDIS) — the codes of `portico_fhir::classify::SENSITIVITY_LABELS`.
pub const SENSITIVE_LABELS: &[&str] = &["BH", "MH", "PSY", "ETH", "SUD", "SEX", "HIV", "STD", "GDIS"];

/// Whether stored labels (space-separated) mark a resource as sensitive for export.
pub fn is_sensitive(labels: &str) -> bool {
    labels.split(' ').any(|l| SENSITIVE_LABELS.contains(&l))
}

/// The export service: its store, directory and limits.
#[derive(Clone)]
pub struct Exports {
    pub store: Arc<dyn ExportStore>,
    pub dir: PathBuf,
    pub cfg: ExportConfig,
    /// This process's lease owner id.
    pub owner: String,
    /// Wakes idle workers when a job is kicked off in this process.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Exports {
    pub fn new(store: Arc<dyn ExportStore>, data_dir: &Path, cfg: &ExportConfig) -> Exports {
        let dir = if cfg.dir.is_empty() { data_dir.join("exports") } else { PathBuf::from(&cfg.dir) };
        Exports {
            store,
            dir,
            cfg: cfg.clone(),
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// A job's directory.
    pub fn job_dir(&self, job_id: &str) -> PathBuf {
        self.dir.join(job_id)
    }

    /// Remove a job's files and their rows (cancel, revocation, expiry).
    pub async fn withdraw(&self, job_id: &str) -> Result<(), portico_store::StoreError> {
        let dir = self.job_dir(job_id);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(job = job_id, error = %e, "could not remove export files");
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
