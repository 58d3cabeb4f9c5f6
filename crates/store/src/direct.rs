//! A plain, blocking SQLite connection beside the pool, for the long read-only scans (bulk
//! export, `audit verify`). sqlx's SQLite driver runs each connection on its own worker
//! thread and hands every row over a channel, which costs several times what SQLite needs
//! to produce the row; a scan of a million rows on a thread of its own (`spawn_blocking`)
//! reads them in place instead. It opens the pool's own database file read-only, so it
//! sees committed data only and can never write around the store's transactions.

use crate::audit_file::{self, attach_direct};
use crate::backend::{Db, SqlStore};
use crate::error::StoreError;
use crate::search::sql::{Bind, Sql};
use rusqlite::{Connection, OpenFlags, Statement};
use sqlx::sqlite::SqliteConnectOptions;
use std::path::PathBuf;
use std::time::Duration;

/// The audit appender's page cache, in KiB: room for an index merge's dirty pages.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// Where a direct connection opens (SQLite stores only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirectSqlite {
    path: PathBuf,
    /// The audit log's file, attached as schema `audit` ([`crate::audit_file`]).
    audit: PathBuf,
}

impl DirectSqlite {
    /// A new read-only connection (WAL: it reads the last commit without blocking writers).
    /// Call it on the thread that will use the connection.
    pub(crate) fn open(&self) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(direct_error)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(direct_error)?;
        conn.pragma_update(None, "cache_size", -8000).map_err(direct_error)?;
        attach_direct(&conn, &self.audit).map_err(direct_error)?;
        Ok(conn)
    }

    /// A new read-write connection with the pool's durability (`FULL` or `NORMAL`), for the
    /// audit appender ([`crate::audit_writer`]): the clinical file (which holds the outbox)
    /// with the audit file attached.
    pub(crate) fn open_writer(&self, synchronous: &str) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(direct_error)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(direct_error)?;
        attach_direct(&conn, &self.audit).map_err(direct_error)?;
        for schema in ["main", audit_file::SCHEMA] {
            conn.pragma_update(Some(schema), "synchronous", synchronous).map_err(direct_error)?;
        }
        // An index merge (`audit::MERGE_RECENT`) dirties hundreds to thousands of pages in
        // one transaction. With the default 2 MB cache SQLite spilled them to the WAL
        // mid-way, then at commit wrote them again and re-read every frame after the first
        // to recompute its checksum, and the merge's sort went to a temporary file. The
        // cache holds only pages the appender has touched, so it reaches this size only on
        // a large log.
        conn.pragma_update(Some(audit_file::SCHEMA), "cache_size", -WRITER_CACHE_KIB).map_err(direct_error)?;
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(direct_error)?;
        Ok(conn)
    }
}

impl SqlStore {
    /// The direct-connection opener, or `None` on PostgreSQL (whose driver streams rows
    /// without a per-row hand-over) and for in-memory SQLite (another connection would see
    /// another, empty database).
    pub(crate) fn direct_sqlite(&self) -> Option<DirectSqlite> {
        let Db::Sqlite(pool) = &self.db else { return None };
        let path = file_path(&pool.connect_options())?;
        Some(DirectSqlite { audit: audit_file::audit_path(&path), path })
    }
}

/// The database file SQLite options open, or `None` for an in-memory database.
pub(crate) fn file_path(opts: &SqliteConnectOptions) -> Option<PathBuf> {
    let path = opts.get_filename();
    let name = path.to_string_lossy();
    // sqlx names an in-memory database `file:sqlx-in-memory-N` (shared cache).
    if name.is_empty() || name == ":memory:" || name.starts_with("file:") {
        return None;
    }
    Some(path.to_path_buf())
}

/// Prepare `sql` (its `$n` placeholders are numbered in order of first use, which is also
/// SQLite's parameter order) and bind its values.
pub(crate) fn prepare<'c>(conn: &'c Connection, sql: &Sql) -> Result<Statement<'c>, StoreError> {
    let mut stmt = conn.prepare(&sql.text_for(true)).map_err(direct_error)?;
    for (i, b) in sql.binds.iter().enumerate() {
        let at = i + 1;
        match b {
            Bind::Text(s) => stmt.raw_bind_parameter(at, s.as_str()),
            Bind::Int(n) => stmt.raw_bind_parameter(at, *n),
            Bind::Float(f) => stmt.raw_bind_parameter(at, *f),
            Bind::NullText => stmt.raw_bind_parameter(at, rusqlite::types::Null),
        }
        .map_err(direct_error)?;
    }
    Ok(stmt)
}

/// The store's error for a direct-connection failure: busy or locked is transient, as it
/// is through the pool (`StoreError::from_sqlx`).
pub(crate) fn direct_error(e: rusqlite::Error) -> StoreError {
    let busy =
        matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked));
    let e = sqlx::Error::AnyDriverError(Box::new(e));
    if busy { StoreError::Unavailable(e) } else { StoreError::Database(e) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::StoreConfig;

    #[tokio::test]
    async fn a_direct_connection_reads_what_the_pool_committed_and_cannot_write() {
        let dir = std::env::temp_dir().join(format!("portico-direct-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("p.db").display());
        let store = SqlStore::open(&StoreConfig::new(url)).await.unwrap();
        let direct = store.direct_sqlite().expect("a file database has a direct reader");
        let mut sql = Sql::default();
        sql.push("SELECT count(*) FROM portico_migrations WHERE version >= ").int(1).push(" AND name <> ").text("");
        let n: i64 = tokio::task::spawn_blocking(move || {
            let conn = direct.open().unwrap();
            let write = conn.execute("DELETE FROM portico_migrations", []);
            assert!(write.is_err(), "the direct connection is read-only");
            let mut stmt = prepare(&conn, &sql).unwrap();
            let mut rows = stmt.raw_query();
            rows.next().unwrap().unwrap().get(0).unwrap()
        })
        .await
        .unwrap();
        assert!(n >= 6, "migrations visible to the direct reader: {n}");
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_in_memory_database_has_no_direct_reader() {
        let store = SqlStore::open(&StoreConfig::new("sqlite::memory:")).await.unwrap();
        assert!(store.direct_sqlite().is_none());
    }
}
