//! The SQL backends: connection setup, migrations, and the dispatch that lets one block of
//! sqlx code run against either driver.

use crate::audit_file;
use crate::audit_writer::AuditWriter;
use crate::error::StoreError;
use crate::migrate::{self, Migration};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db` or `postgres://user:pass@host/db`.
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
    /// SQLite only: `full` (fsync every commit: survives power loss) or `normal` (survives a
    /// process crash, may lose the last commits on power loss).
    pub sqlite_synchronous: String,
    /// Run migrations on open.
    pub migrate: bool,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig { url: url.into(), max_connections: 8, sqlite_synchronous: "full".into(), migrate: true }
    }

    /// `sqlite_synchronous` as the pragma's value, for connections sqlx does not set up
    /// (the attached audit file, the audit appender's own connection).
    pub(crate) fn synchronous_pragma(&self) -> &'static str {
        if self.sqlite_synchronous == "normal" { "NORMAL" } else { "FULL" }
    }
}

#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// The SQL store over either backend.
#[derive(Clone)]
pub struct SqlStore {
    pub(crate) db: Db,
    /// SQLite file stores: the connection that appends audit records not tied to a write.
    pub(crate) audit_writer: Option<Arc<AuditWriter>>,
}

/// Run the same sqlx code against whichever pool the store holds. Inside `$body`, `$pool`
/// is the concrete pool, so every query is type-checked against both drivers.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::backend::Db::Sqlite($pool) => $body,
            $crate::backend::Db::Pg($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

impl SqlStore {
    /// Connect (creating the SQLite file if needed) and migrate.
    pub async fn open(cfg: &StoreConfig) -> Result<SqlStore, StoreError> {
        let url = cfg.url.as_str();
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
            let pool = PgPoolOptions::new()
                .max_connections(cfg.max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await
                .map_err(StoreError::from_sqlx)?;
            Db::Pg(pool)
        } else if url.starts_with("sqlite:") {
            let sync = match cfg.sqlite_synchronous.as_str() {
                "normal" => SqliteSynchronous::Normal,
                _ => SqliteSynchronous::Full,
            };
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(StoreError::Database)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(sync)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                .pragma("cache_size", "-8000")
                .statement_cache_capacity(256);
            let mut pool =
                SqlitePoolOptions::new().max_connections(cfg.max_connections).acquire_timeout(Duration::from_secs(5));
            if let Some(path) = crate::direct::file_path(&opts).map(|p| audit_file::audit_path(&p)) {
                let sync = cfg.synchronous_pragma();
                pool = pool.after_connect(move |conn, _| {
                    let path = path.clone();
                    Box::pin(async move { audit_file::attach(conn, &path, sync).await })
                });
            }
            let pool = pool.connect_with(opts).await.map_err(StoreError::from_sqlx)?;
            Db::Sqlite(pool)
        } else {
            return Err(StoreError::Migration("database URL must start with sqlite:// or postgres://".into()));
        };
        let mut store = SqlStore { db, audit_writer: None };
        store.audit_writer =
            store.direct_sqlite().map(|file| Arc::new(AuditWriter::new(file, cfg.synchronous_pragma())));
        if cfg.migrate {
            store.migrate().await?;
            if let (Db::Sqlite(pool), Some(_)) = (&store.db, &store.audit_writer) {
                audit_file::move_tables(pool).await?;
            }
        }
        Ok(store)
    }

    /// Apply pending migrations; refuse to start on an edited one.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let list: &[Migration] = match self.db {
            Db::Sqlite(_) => migrate::SQLITE,
            Db::Pg(_) => migrate::POSTGRES,
        };
        with_pool!(&self.db, pool => {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS portico_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)",
            )
            .execute(pool)
            .await?;
            for m in list {
                let row = sqlx::query("SELECT checksum FROM portico_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(pool)
                    .await?;
                if let Some(row) = row {
                    let recorded: String = row.try_get("checksum")?;
                    migrate::check_recorded(m, &recorded)?;
                    continue;
                }
                let mut tx = pool.begin().await?;
                for stmt in migrate::statements(m.sql) {
                    sqlx::query(sqlx::AssertSqlSafe(stmt)).execute(&mut *tx).await?;
                }
                sqlx::query("INSERT INTO portico_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)")
                    .bind(m.version)
                    .bind(m.name)
                    .bind(migrate::migration_checksum(m.sql))
                    .bind(crate::write::now_rfc3339().0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                tracing::info!(version = m.version, name = m.name, "migration applied");
            }
            Ok::<(), StoreError>(())
        })
    }

    pub(crate) fn is_sqlite(&self) -> bool {
        matches!(self.db, Db::Sqlite(_))
    }

    /// Close the pool and the audit appender's connection (flushes SQLite's WAL on the last
    /// connection).
    pub async fn close(&self) {
        if let Some(w) = &self.audit_writer {
            w.close();
        }
        with_pool!(&self.db, pool => pool.close().await)
    }
}
