//! Bulk `$export` jobs and their files (migration 0006).
//!
//! A job row is the whole truth about a job: who asked (the grant, so its liveness can be
//! checked again later), what for, its state, the lease of the worker doing it and the
//! checkpoint of the last committed batch. Workers claim jobs with
//! [`ExportStore::export_claim`]: on PostgreSQL `FOR UPDATE SKIP LOCKED`, so several
//! processes never block each other on one job; on SQLite the single-writer `UPDATE … WHERE
//! id = (SELECT …)` is atomic by itself. Every later write of a worker names its lease
//! (`lease_owner`), so a worker whose lease lapsed and was taken over can no longer move
//! the job: its checkpoint or completion simply does not apply.
//!
//! Nothing here reads clinical data: export content goes through the gate's permits
//! (`Store::export_scan`, `scan.rs`, which returns each row's labels with its body; and
//! `Store::search` for `_typeFilter`). The one extra read, [`ExportStore::export_labels`],
//! returns the sensitivity labels of rows a permitted search page already returned.

use crate::backend::{Db, SqlStore, with_pool};
use crate::error::{StoreError, retry_transient};
use async_trait::async_trait;
use sqlx::Row;

/// Job states. `accepted` and `running` are active; the others are final.
pub mod state {
    pub const ACCEPTED: &str = "accepted";
    pub const RUNNING: &str = "running";
    pub const COMPLETED: &str = "completed";
    pub const FAILED: &str = "failed";
    pub const CANCELLED: &str = "cancelled";
    pub const EXPIRED: &str = "expired";
}

/// One export job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportJobRow {
    pub id: String,
    /// `grant` (an OAuth access token) or `operator` (the admin token).
    pub requester_kind: String,
    pub grant_id: Option<String>,
    pub user_id: Option<String>,
    /// The OAuth client (`operator` for the admin token).
    pub client_id: String,
    /// The principal kind at kick-off (`patient`, `caregiver`, `system`, `operator`, …).
    pub principal: String,
    /// `patient` (`Patient/{id}/$export`), `system` (`Patient/$export`) or `group`.
    pub level: String,
    /// The one patient of a patient-level export ('' otherwise); what the per-patient cap
    /// counts.
    pub patient: String,
    /// JSON array of the patients exported (`[]`: every patient the permit admits).
    pub patients: String,
    pub request_url: String,
    /// JSON object of the kick-off parameters.
    pub params: String,
    /// Fingerprint of the permit at kick-off; a different permit later means the access
    /// the job was started under has changed.
    pub permit_print: String,
    pub state: String,
    /// JSON progress (`{"done": n, "phase": "…"}`).
    pub progress: String,
    pub lease_owner: Option<String>,
    pub lease_expires_ms: i64,
    /// JSON checkpoint of the last committed batch.
    pub checkpoint: String,
    pub transaction_ms: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub expires_ms: i64,
    /// OperationOutcome JSON when the job failed.
    pub error: Option<String>,
    /// Why the job was stopped (cancel, revocation, expiry).
    pub stop_reason: Option<String>,
}

impl ExportJobRow {
    pub fn is_active(&self) -> bool {
        self.state == state::ACCEPTED || self.state == state::RUNNING
    }
}

/// One output file of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFileRow {
    pub job_id: String,
    /// File name inside the job's directory (also its download name).
    pub name: String,
    pub res_type: String,
    pub sensitive: bool,
    /// Path relative to the export directory.
    pub path: String,
    pub line_count: i64,
    pub bytes: i64,
    pub sha256: Option<String>,
    /// Written to the end and hashed; only complete files are ever listed.
    pub complete: bool,
}

/// Why a job could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapHit {
    Client,
    Patient,
}

/// Storage of export jobs.
#[async_trait]
pub trait ExportStore: Send + Sync {
    /// Insert a job unless the requester's client or the patient already has `max_*`
    /// active jobs (0: no cap). Checked and inserted atomically (SQLite: one writer;
    /// PostgreSQL: a SERIALIZABLE transaction, retried on conflict).
    async fn export_create(
        &self,
        job: &ExportJobRow,
        max_per_client: i64,
        max_per_patient: i64,
    ) -> Result<Result<(), CapHit>, StoreError>;
    async fn export_get(&self, id: &str) -> Result<Option<ExportJobRow>, StoreError>;
    /// Jobs a user (or, with no user, a client) started, newest first.
    async fn export_list(&self, user_id: Option<&str>, client_id: &str) -> Result<Vec<ExportJobRow>, StoreError>;
    /// Claim the oldest active job whose lease has lapsed, for `lease_ms` from `now_ms`.
    async fn export_claim(&self, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Option<ExportJobRow>, StoreError>;
    /// Commit a batch: new checkpoint and progress, lease renewed. False when the lease is
    /// no longer ours or the job is no longer running (cancelled, taken over).
    async fn export_checkpoint(
        &self,
        id: &str,
        owner: &str,
        checkpoint: &str,
        progress: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Finish a running job we hold (completed or failed). False when no longer ours.
    async fn export_finish(
        &self,
        id: &str,
        owner: &str,
        state: &str,
        error: Option<&str>,
        stop_reason: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Move a job from one of `from` to `to` (cancel, stop for revocation, expiry),
    /// releasing any lease. False when it was in none of `from`.
    async fn export_transition(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        error: Option<&str>,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Completed jobs past their expiry, and stopped jobs that still have files.
    async fn export_due_for_sweep(&self, now_ms: i64) -> Result<Vec<ExportJobRow>, StoreError>;
    /// Record (or replace) file rows, all in one transaction (one commit for the few dozen
    /// files of a system export).
    async fn export_files_put(&self, files: &[ExportFileRow]) -> Result<(), StoreError>;
    async fn export_files(&self, job_id: &str) -> Result<Vec<ExportFileRow>, StoreError>;
    async fn export_files_delete(&self, job_id: &str) -> Result<(), StoreError>;
    /// Whether a grant is still live: not revoked, its client, user and device enabled
    /// (the same conditions an access-token lookup checks).
    async fn export_grant_live(&self, grant_id: &str) -> Result<bool, StoreError>;
    /// The sensitivity labels (space-separated) of current resources of one type.
    async fn export_labels(&self, res_type: &str, ids: &[String]) -> Result<Vec<(String, String)>, StoreError>;
}

const JOB_COLS: &str = "id, requester_kind, grant_id, user_id, client_id, principal, level, patient, patients, \
     request_url, params, permit_print, state, progress, lease_owner, lease_expires_ms, checkpoint, transaction_ms, \
     created_ms, updated_ms, expires_ms, error, stop_reason";

fn job_of<R: Row>(r: &R) -> Result<ExportJobRow, StoreError>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> Option<String>: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ExportJobRow {
        id: r.try_get("id")?,
        requester_kind: r.try_get("requester_kind")?,
        grant_id: r.try_get("grant_id")?,
        user_id: r.try_get("user_id")?,
        client_id: r.try_get("client_id")?,
        principal: r.try_get("principal")?,
        level: r.try_get("level")?,
        patient: r.try_get("patient")?,
        patients: r.try_get("patients")?,
        request_url: r.try_get("request_url")?,
        params: r.try_get("params")?,
        permit_print: r.try_get("permit_print")?,
        state: r.try_get("state")?,
        progress: r.try_get("progress")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_ms: r.try_get("lease_expires_ms")?,
        checkpoint: r.try_get("checkpoint")?,
        transaction_ms: r.try_get("transaction_ms")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        error: r.try_get("error")?,
        stop_reason: r.try_get("stop_reason")?,
    })
}

fn file_of<R: Row>(r: &R) -> Result<ExportFileRow, StoreError>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> Option<String>: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ExportFileRow {
        job_id: r.try_get("job_id")?,
        name: r.try_get("name")?,
        res_type: r.try_get("res_type")?,
        sensitive: r.try_get::<i64, _>("sensitive")? != 0,
        path: r.try_get("path")?,
        line_count: r.try_get("line_count")?,
        bytes: r.try_get("bytes")?,
        sha256: r.try_get("sha256")?,
        complete: r.try_get::<i64, _>("complete")? != 0,
    })
}

const ACTIVE: &str = "('accepted', 'running')";

#[async_trait]
impl ExportStore for SqlStore {
    async fn export_create(
        &self,
        job: &ExportJobRow,
        max_per_client: i64,
        max_per_patient: i64,
    ) -> Result<Result<(), CapHit>, StoreError> {
        let count_client = format!("SELECT COUNT(*) AS n FROM export_jobs WHERE client_id = $1 AND state IN {ACTIVE}");
        let count_patient = format!("SELECT COUNT(*) AS n FROM export_jobs WHERE patient = $1 AND state IN {ACTIVE}");
        let insert = format!(
            "INSERT INTO export_jobs ({JOB_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19, $20, $21, $22, $23)"
        );
        let (count_client, count_patient, insert) = (&count_client, &count_patient, &insert);
        macro_rules! body {
            ($tx:ident) => {{
                if max_per_client > 0 {
                    let n: i64 = sqlx::query(sqlx::AssertSqlSafe(count_client.as_str()))
                        .bind(job.client_id.clone())
                        .fetch_one(&mut *$tx)
                        .await?
                        .try_get("n")?;
                    if n >= max_per_client {
                        return Ok(Err(CapHit::Client));
                    }
                }
                if max_per_patient > 0 && !job.patient.is_empty() {
                    let n: i64 = sqlx::query(sqlx::AssertSqlSafe(count_patient.as_str()))
                        .bind(job.patient.clone())
                        .fetch_one(&mut *$tx)
                        .await?
                        .try_get("n")?;
                    if n >= max_per_patient {
                        return Ok(Err(CapHit::Patient));
                    }
                }
                sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                    .bind(job.id.clone())
                    .bind(job.requester_kind.clone())
                    .bind(job.grant_id.clone())
                    .bind(job.user_id.clone())
                    .bind(job.client_id.clone())
                    .bind(job.principal.clone())
                    .bind(job.level.clone())
                    .bind(job.patient.clone())
                    .bind(job.patients.clone())
                    .bind(job.request_url.clone())
                    .bind(job.params.clone())
                    .bind(job.permit_print.clone())
                    .bind(job.state.clone())
                    .bind(job.progress.clone())
                    .bind(job.lease_owner.clone())
                    .bind(job.lease_expires_ms)
                    .bind(job.checkpoint.clone())
                    .bind(job.transaction_ms)
                    .bind(job.created_ms)
                    .bind(job.updated_ms)
                    .bind(job.expires_ms)
                    .bind(job.error.clone())
                    .bind(job.stop_reason.clone())
                    .execute(&mut *$tx)
                    .await?;
                Ok::<_, StoreError>(Ok(()))
            }};
        }
        retry_transient(|| async {
            match &self.db {
                Db::Sqlite(pool) => {
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    let out: Result<Result<(), CapHit>, StoreError> = async { body!(tx) }.await;
                    if matches!(out, Ok(Ok(()))) {
                        tx.commit().await?;
                    }
                    out
                }
                Db::Pg(pool) => {
                    // Two kick-offs counting at once must not both see room for one more.
                    let mut tx = pool.begin().await?;
                    sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").execute(&mut *tx).await?;
                    let out: Result<Result<(), CapHit>, StoreError> = async { body!(tx) }.await;
                    if matches!(out, Ok(Ok(()))) {
                        tx.commit().await?;
                    }
                    out
                }
            }
        })
        .await
    }

    async fn export_get(&self, id: &str) -> Result<Option<ExportJobRow>, StoreError> {
        let sql = format!("SELECT {JOB_COLS} FROM export_jobs WHERE id = $1");
        with_pool!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(pool).await?;
            row.as_ref().map(job_of).transpose()
        })
    }

    async fn export_list(&self, user_id: Option<&str>, client_id: &str) -> Result<Vec<ExportJobRow>, StoreError> {
        let (sql, key) = match user_id {
            Some(u) => {
                (format!("SELECT {JOB_COLS} FROM export_jobs WHERE user_id = $1 ORDER BY created_ms DESC LIMIT 100"), u)
            }
            None => (
                format!("SELECT {JOB_COLS} FROM export_jobs WHERE client_id = $1 ORDER BY created_ms DESC LIMIT 100"),
                client_id,
            ),
        };
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key.to_string()).fetch_all(pool).await?;
            rows.iter().map(job_of).collect()
        })
    }

    async fn export_claim(&self, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Option<ExportJobRow>, StoreError> {
        // PostgreSQL: several workers pass over each other's locked candidates instead of
        // queueing behind them. SQLite has one writer, so the statement is atomic as is.
        let lock = if self.is_sqlite() { "" } else { " FOR UPDATE SKIP LOCKED" };
        let sql = format!(
            "UPDATE export_jobs SET state = 'running', lease_owner = $1, lease_expires_ms = $2, updated_ms = $3 \
             WHERE id = (SELECT id FROM export_jobs WHERE state IN {ACTIVE} AND lease_expires_ms < $3 \
             ORDER BY created_ms, id LIMIT 1{lock}) AND state IN {ACTIVE} AND lease_expires_ms < $3 RETURNING {JOB_COLS}"
        );
        let sql = &sql;
        retry_transient(|| async move {
            with_pool!(&self.db, pool => {
                let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(owner.to_string())
                    .bind(now_ms + lease_ms)
                    .bind(now_ms)
                    .fetch_optional(pool)
                    .await?;
                row.as_ref().map(job_of).transpose()
            })
        })
        .await
    }

    async fn export_checkpoint(
        &self,
        id: &str,
        owner: &str,
        checkpoint: &str,
        progress: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        retry_transient(|| async move {
            with_pool!(&self.db, pool => {
                let r = sqlx::query(
                    "UPDATE export_jobs SET checkpoint = $1, progress = $2, lease_expires_ms = $3, updated_ms = $4 \
                     WHERE id = $5 AND lease_owner = $6 AND state = 'running'",
                )
                .bind(checkpoint.to_string())
                .bind(progress.to_string())
                .bind(lease_until_ms)
                .bind(now_ms)
                .bind(id.to_string())
                .bind(owner.to_string())
                .execute(pool)
                .await?;
                Ok(r.rows_affected() == 1)
            })
        })
        .await
    }

    async fn export_finish(
        &self,
        id: &str,
        owner: &str,
        state: &str,
        error: Option<&str>,
        stop_reason: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        retry_transient(|| async move {
            with_pool!(&self.db, pool => {
                let r = sqlx::query(
                    "UPDATE export_jobs SET state = $1, error = $2, stop_reason = $3, lease_owner = NULL, \
                     lease_expires_ms = 0, updated_ms = $4 WHERE id = $5 AND lease_owner = $6 AND state = 'running'",
                )
                .bind(state.to_string())
                .bind(error.map(str::to_string))
                .bind(stop_reason.map(str::to_string))
                .bind(now_ms)
                .bind(id.to_string())
                .bind(owner.to_string())
                .execute(pool)
                .await?;
                Ok(r.rows_affected() == 1)
            })
        })
        .await
    }

    async fn export_transition(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        error: Option<&str>,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        // The states are our own constants, never client input.
        let list = from.iter().map(|s| format!("'{}'", s.replace('\'', ""))).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "UPDATE export_jobs SET state = $1, error = COALESCE($2, error), stop_reason = $3, lease_owner = NULL, \
             lease_expires_ms = 0, updated_ms = $4 WHERE id = $5 AND state IN ({list})"
        );
        let sql = &sql;
        retry_transient(|| async move {
            with_pool!(&self.db, pool => {
                let r = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(to.to_string())
                    .bind(error.map(str::to_string))
                    .bind(reason.to_string())
                    .bind(now_ms)
                    .bind(id.to_string())
                    .execute(pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            })
        })
        .await
    }

    async fn export_due_for_sweep(&self, now_ms: i64) -> Result<Vec<ExportJobRow>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM export_jobs j WHERE (j.state = 'completed' AND j.expires_ms <= $1) \
             OR (j.state IN ('failed', 'cancelled', 'expired') AND EXISTS (SELECT 1 FROM export_files f WHERE f.job_id = j.id)) \
             ORDER BY j.created_ms LIMIT 100"
        );
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms).fetch_all(pool).await?;
            rows.iter().map(job_of).collect()
        })
    }

    async fn export_files_put(&self, files: &[ExportFileRow]) -> Result<(), StoreError> {
        retry_transient(|| async move {
            with_pool!(&self.db, pool => {
                let mut tx = pool.begin().await?;
                for f in files {
                    sqlx::query(
                        "INSERT INTO export_files (job_id, name, res_type, sensitive, path, line_count, bytes, sha256, \
                         complete) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (job_id, name) DO UPDATE SET \
                         line_count = excluded.line_count, bytes = excluded.bytes, sha256 = excluded.sha256, \
                         complete = excluded.complete",
                    )
                    .bind(f.job_id.clone())
                    .bind(f.name.clone())
                    .bind(f.res_type.clone())
                    .bind(i64::from(f.sensitive))
                    .bind(f.path.clone())
                    .bind(f.line_count)
                    .bind(f.bytes)
                    .bind(f.sha256.clone())
                    .bind(i64::from(f.complete))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
        .await
    }

    async fn export_files(&self, job_id: &str) -> Result<Vec<ExportFileRow>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT job_id, name, res_type, sensitive, path, line_count, bytes, sha256, complete FROM export_files \
                 WHERE job_id = $1 ORDER BY name",
            )
            .bind(job_id.to_string())
            .fetch_all(pool)
            .await?;
            rows.iter().map(file_of).collect()
        })
    }

    async fn export_files_delete(&self, job_id: &str) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM export_files WHERE job_id = $1").bind(job_id.to_string()).execute(pool).await?;
        });
        Ok(())
    }

    async fn export_grant_live(&self, grant_id: &str) -> Result<bool, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT 1 AS ok FROM grants g JOIN oauth_clients c ON c.client_id = g.client_id \
                 LEFT JOIN users u ON u.id = g.user_id LEFT JOIN devices d ON d.id = g.device_id \
                 WHERE g.id = $1 AND g.revoked_ms IS NULL AND g.pending = 0 AND c.disabled = 0 \
                 AND (g.user_id IS NULL OR (u.id IS NOT NULL AND u.disabled = 0)) \
                 AND (g.device_id IS NULL OR (d.id IS NOT NULL AND d.revoked_ms IS NULL))",
            )
            .bind(grant_id.to_string())
            .fetch_optional(pool)
            .await?;
            Ok(row.is_some())
        })
    }

    async fn export_labels(&self, res_type: &str, ids: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(ids.len());
        // Bounded statements: at most 500 ids each.
        for chunk in ids.chunks(500) {
            let marks = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(", ");
            let sql = format!("SELECT id, labels FROM resources WHERE res_type = $1 AND id IN ({marks})");
            with_pool!(&self.db, pool => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(res_type.to_string());
                for id in chunk {
                    q = q.bind(id.clone());
                }
                for r in q.fetch_all(pool).await? {
                    out.push((r.try_get("id")?, r.try_get("labels")?));
                }
            });
        }
        Ok(out)
    }
}
