//! The storage layer's errors; the HTTP edge maps each to a status once.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `If-Match` named a version that is not current.
    #[error("version conflict: the resource is at version {current:?}")]
    VersionConflict { current: Option<i64> },
    /// The write's permit does not cover what is stored now (the resource changed between
    /// the gate's decision and the write); the caller may decide again and retry.
    #[error("the resource changed while the request was being decided")]
    StalePermit,
    /// A conditional create's criteria matched when the caller required them not to (see
    /// `Condition::abort_on_match`); nothing was written and the caller may plan again.
    #[error("the conditional criteria now match a resource")]
    ConditionMatched,
    /// A conditional operation's criteria matched more than one resource.
    #[error("the criteria match more than one resource")]
    MultipleMatches,
    /// A conflicting concurrent write (unique violation) that retries did not resolve.
    #[error("conflicting concurrent write")]
    Conflict,
    /// Search parameters that cannot be served.
    #[error("{0}")]
    BadQuery(String),
    /// The database is busy or unreachable: retry later.
    #[error("storage unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else from the database.
    #[error("storage failure")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(String),
    /// The audit chain cannot be extended or read (a malformed head row or record): the
    /// request must fail closed.
    #[error("audit trail unavailable: {0}")]
    AuditChain(String),
}

impl StoreError {
    /// Classify a driver error: busy/locked/connection trouble is transient.
    pub(crate) fn from_sqlx(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => StoreError::Unavailable(e),
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // SQLite: 5 BUSY, 6 LOCKED (and extended codes 261, 517, 262); PostgreSQL:
                // 40001 serialization failure, 40P01 deadlock, 57P01 admin shutdown, 53300 too many connections.
                if matches!(&*code, "5" | "6" | "261" | "517" | "262" | "40001" | "40P01" | "57P01" | "53300") {
                    StoreError::Unavailable(e)
                } else if db.is_unique_violation() {
                    StoreError::Conflict
                } else {
                    StoreError::Database(e)
                }
            }
            _ => StoreError::Database(e),
        }
    }

    /// Whether retrying the whole operation may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Conflict)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from_sqlx(e)
    }
}

/// Attempts for a transaction that hit a transient failure.
const ATTEMPTS: usize = 4;

/// Run a whole database transaction again when it fails transiently (busy, serialisation
/// failure, a lost unique race) — including at `BEGIN` — with a short growing pause; other
/// errors and the last attempt's error are returned as they are.
pub(crate) async fn retry_transient<T, F, Fut>(mut transaction: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match transaction().await {
            Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(5 * attempt as u64)).await;
            }
            other => return other,
        }
    }
}
