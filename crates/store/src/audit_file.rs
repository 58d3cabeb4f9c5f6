//! The audit log's own SQLite file, beside the clinical one.
//!
//! In one file, every commit of the audit appender changed the database each pool
//! connection reads clinical data from, and in WAL mode SQLite empties a connection's page
//! cache whenever its file changed since that connection's last transaction: nearly every
//! read after an append read its pages from the OS again, and the appender's commits and
//! checkpoints shared one WAL with the clinical data (`ARCHITECTURE.md`, audit, "Where it
//! goes"). A SQLite file store therefore keeps the audit tables in `<name>-audit.<ext>`,
//! attached to every connection as schema `audit`. Queries name the tables unqualified;
//! SQLite resolves a name in whichever schema holds it, so the same SQL serves in-memory
//! stores (one database) and PostgreSQL.
//!
//! A clinical write and its records must still commit together, and across attached WAL
//! files SQLite makes a transaction atomic per file only. So a write puts its records in
//! `audit_outbox`, in the clinical file, in its own transaction; the appender
//! (`audit_writer`) chains outbox rows into the audit file and, in that same transaction,
//! records the last one it chained (`audit_head.outbox_done`), so no row is chained twice
//! whenever a crash comes. The next write deletes the rows up to it in its own transaction.

use crate::error::StoreError;
use portico_audit::{AuditRecord, canonical};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use std::path::{Path, PathBuf};

/// The schema name the audit file is attached as.
pub(crate) const SCHEMA: &str = "audit";

/// The audit tables (and their view), which live in the audit file.
const TABLES: [&str; 5] = ["audit_log", "audit_subjects", "audit_subjects_recent", "audit_head", "audit_heads"];
const VIEW: &str = "audit_subject_rows";

/// The audit file of clinical file `main`: `portico.db` → `portico-audit.db`.
pub(crate) fn audit_path(main: &Path) -> PathBuf {
    let stem = main.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match main.extension() {
        Some(ext) => format!("{stem}-audit.{}", ext.to_string_lossy()),
        None => format!("{stem}-audit"),
    };
    main.with_file_name(name)
}

/// The audit file of a `sqlite://` database URL (`None` for another backend or in-memory).
pub fn sqlite_audit_path(url: &str) -> Option<PathBuf> {
    use std::str::FromStr;
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    crate::direct::file_path(&opts).map(|p| audit_path(&p))
}

/// Put a write's records in the outbox, in the write's open transaction on `conn`, and
/// delete the rows chained since the last write (the appender never writes the clinical
/// file, whose every commit would empty the readers' page caches).
pub(crate) async fn outbox_insert(conn: &mut SqliteConnection, records: &[AuditRecord]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM audit_outbox WHERE id <= (SELECT outbox_done FROM audit_head WHERE id = 1)")
        .execute(&mut *conn)
        .await?;
    for r in records {
        sqlx::query("INSERT INTO audit_outbox (ts, record) VALUES ($1, $2)")
            .bind(r.time_ms)
            .bind(canonical::encode_tail(r))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Attach the audit file to a pool connection, in WAL mode with the pool's durability.
pub(crate) async fn attach(conn: &mut SqliteConnection, path: &Path, synchronous: &str) -> Result<(), sqlx::Error> {
    sqlx::query("ATTACH DATABASE $1 AS audit").bind(path.to_string_lossy().into_owned()).execute(&mut *conn).await?;
    // Takes effect only while the file is new (empty); an existing file keeps its page size.
    // The log only grows at its end, so larger pages mean fewer, fuller WAL frames per
    // commit, fewer write calls, and shallower B-trees (`audit_bench batch-cost` under
    // callgrind: 2.5k fewer instructions a record than with 4 KiB pages, measured alone).
    sqlx::query("PRAGMA audit.page_size = 16384").execute(&mut *conn).await?;
    sqlx::query("PRAGMA audit.journal_mode = WAL").execute(&mut *conn).await?;
    let sync = format!("PRAGMA audit.synchronous = {synchronous}");
    sqlx::query(sqlx::AssertSqlSafe(sync)).execute(&mut *conn).await?;
    Ok(())
}

/// Attach the audit file to a direct connection (read-only if the connection is).
pub(crate) fn attach_direct(conn: &rusqlite::Connection, path: &Path) -> rusqlite::Result<()> {
    conn.execute("ATTACH DATABASE ?1 AS audit", [path.to_string_lossy()])?;
    Ok(())
}

/// Move the audit tables from the clinical file into the audit file, if they are still
/// there (a store made before the audit file had its own, and every new store, whose
/// migrations create them in the clinical file). Safe to run again after a crash at any
/// point: the copy commits in the audit file alone, and the old tables are dropped only
/// once a complete copy is there.
pub(crate) async fn move_tables(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    // Under both files' write locks, so that two processes starting at once take turns:
    // the second finds the first's copy and only drops what is left.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let in_main = objects(&mut tx, "main").await?;
    let in_audit = objects(&mut tx, SCHEMA).await?;
    let has_log = |objs: &[(String, String, String)]| objs.iter().any(|(_, name, _)| name == "audit_log");
    if !has_log(&in_main) {
        if !has_log(&in_audit) {
            return Err(StoreError::Migration(
                "the audit log file is missing or empty (it sits beside the database file, named <name>-audit.<ext>); \
                 restore it from the same backup as the database"
                    .into(),
            ));
        }
        return Ok(());
    }
    if has_log(&in_audit) {
        // A copy from a move that stopped before the old tables were dropped: it is complete
        // (it committed as one transaction), unless records were appended since.
        let main_head: i64 =
            sqlx::query_scalar("SELECT seq FROM main.audit_head WHERE id = 1").fetch_one(&mut *tx).await?;
        let copy_head: i64 =
            sqlx::query_scalar("SELECT seq FROM audit.audit_head WHERE id = 1").fetch_one(&mut *tx).await?;
        if main_head != copy_head {
            return Err(StoreError::Migration(format!(
                "both the database file (head #{main_head}) and the audit file (head #{copy_head}) hold an audit log; \
                 refusing to choose one"
            )));
        }
    } else {
        // Only the audit file is written here, so this commit is atomic.
        copy(&mut tx, &in_main).await?;
    }
    tx.commit().await?;
    let mut tx = conn.begin_with("BEGIN").await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP VIEW IF EXISTS main.{VIEW}"))).execute(&mut *tx).await?;
    for t in TABLES {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS main.{t}"))).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    // The copy went through the audit file's WAL as one transaction (as large as the log);
    // fold it into the file now rather than have every reader search it until the next
    // checkpoint.
    sqlx::query("PRAGMA audit.wal_checkpoint(TRUNCATE)").execute(&mut *conn).await?;
    tracing::info!("audit log moved into its own file");
    Ok(())
}

/// The audit tables' schema objects in `schema`: (type, name, SQL), tables first.
async fn objects(conn: &mut SqliteConnection, schema: &str) -> Result<Vec<(String, String, String)>, StoreError> {
    let names = TABLES.iter().chain([&VIEW]).map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT type, name, sql FROM {schema}.sqlite_master WHERE sql IS NOT NULL AND tbl_name IN ({names}) \
         ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, name"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *conn).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
}

/// Create the objects in the audit file as they are in the clinical one, and copy the rows.
async fn copy(conn: &mut SqliteConnection, objs: &[(String, String, String)]) -> Result<(), StoreError> {
    for (kind, name, sql) in objs {
        let create = qualify(sql).ok_or_else(|| StoreError::Migration(format!("cannot move {kind} {name}")))?;
        sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut *conn).await?;
        if kind == "table" {
            let copy = format!("INSERT INTO audit.{name} SELECT * FROM main.{name}");
            sqlx::query(sqlx::AssertSqlSafe(copy)).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// `CREATE TABLE x …` (or INDEX, VIEW) as `CREATE TABLE audit.x …`.
fn qualify(sql: &str) -> Option<String> {
    ["CREATE TABLE ", "CREATE INDEX ", "CREATE UNIQUE INDEX ", "CREATE VIEW "]
        .iter()
        .find_map(|p| sql.strip_prefix(p).map(|rest| format!("{p}{SCHEMA}.{rest}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Db, SqlStore, StoreConfig};
    use crate::search::test_stores::TempDir;
    use portico_audit::{Actor, AuditKey, Chainer, Entity, EntityRole, Interaction, StoredRow, chain};

    fn record(i: i64, who: &str) -> AuditRecord {
        let mut r = AuditRecord::new(1_700_000_000_000 + i, who, Interaction::Create, Actor::new("user", who));
        r.entities.push(Entity {
            reference: format!("Observation/{who}-{i}/_history/1"),
            role: EntityRole::Target,
            category: "labs".into(),
            patients: vec![format!("pt-{}", i % 3)],
        });
        r.normalise();
        r
    }

    fn chainer() -> Chainer {
        Chainer::new(AuditKey::from_seed(&[5; 32]).mac_key())
    }

    async fn open(dir: &TempDir, migrate: bool) -> Result<SqlStore, StoreError> {
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        SqlStore::open(&StoreConfig { migrate, ..StoreConfig::new(url) }).await
    }

    fn pool(store: &SqlStore) -> &SqlitePool {
        let Db::Sqlite(pool) = &store.db else { panic!("a SQLite store") };
        pool
    }

    /// Commit `records` to the outbox as a write's transaction does.
    async fn write_records(store: &SqlStore, records: &[AuditRecord]) {
        let mut tx = pool(store).begin_with("BEGIN IMMEDIATE").await.unwrap();
        outbox_insert(&mut tx, records).await.unwrap();
        tx.commit().await.unwrap();
    }

    async fn scan(store: &SqlStore) -> (portico_audit::ChainState, Vec<StoredRow>) {
        let (mut state, mut rows) = (None, Vec::new());
        store
            .run_audit_scan(100, &mut |item| {
                match item {
                    crate::ScanItem::State(s) => state = Some(s),
                    crate::ScanItem::Rows(b) => rows.extend(b),
                }
                true
            })
            .await
            .unwrap();
        (state.unwrap(), rows)
    }

    fn actors(rows: &[StoredRow]) -> Vec<String> {
        rows.iter().map(|r| canonical::decode(&r.record).unwrap().1.request_id).collect()
    }

    async fn count(store: &SqlStore, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(pool(store))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn records_of_a_write_wait_in_the_outbox_and_are_chained_exactly_once() {
        let dir = TempDir::new("portico-outbox");
        let store = open(&dir, true).await.unwrap();
        let written: Vec<AuditRecord> = (0..3).map(|i| record(i, "write")).collect();
        write_records(&store, &written).await;
        let (state, rows) = scan(&store).await;
        assert_eq!((state.head_seq, rows.len(), state.outbox_waiting), (0, 0, 3), "committed, not chained yet");
        assert_eq!(state.outbox_oldest_ms, Some(1_700_000_000_000));

        // The next append chains them first, as they were, then its own records.
        let head = store.run_audit_append(&chainer(), &[record(9, "read")]).await.unwrap();
        assert_eq!(head, 4);
        let (state, rows) = scan(&store).await;
        assert_eq!(actors(&rows), ["write", "write", "write", "read"]);
        for (row, r) in rows.iter().zip(&written) {
            assert_eq!(canonical::decode(&row.record).unwrap().1, *r);
            assert_eq!(row.subjects, r.subjects());
        }
        assert_eq!((state.outbox_waiting, state.outbox_oldest_ms), (0, None));
        let done: i64 = sqlx::query_scalar("SELECT outbox_done FROM audit_head").fetch_one(pool(&store)).await.unwrap();
        assert_eq!(done, 3);

        // Chained rows stay until the next write deletes them (as they would after a crash
        // anywhere): they are never chained again.
        assert_eq!(count(&store, "audit_outbox").await, 3);
        assert_eq!(store.run_audit_append(&chainer(), &[]).await.unwrap(), 4, "nothing to chain");
        write_records(&store, &[record(5, "later")]).await;
        assert_eq!(count(&store, "audit_outbox").await, 1, "the next write deleted the chained rows");
        assert_eq!(store.run_audit_append(&chainer(), &[]).await.unwrap(), 5);
        assert_eq!(actors(&scan(&store).await.1)[4], "later");

        // An unreadable outbox row stops appends (fail closed), naming the row.
        sqlx::query("INSERT INTO audit_outbox (ts, record) VALUES (0, 'not a record')")
            .execute(pool(&store))
            .await
            .unwrap();
        let e = store.run_audit_append(&chainer(), &[record(6, "read")]).await.unwrap_err();
        assert!(e.to_string().contains("outbox row 5"), "{e}");
        store.close().await;
    }

    /// `audit verify` opens a store without migrating it: one last opened by a version
    /// without the outbox (migration 8) must still be read, on both scan paths.
    #[tokio::test]
    async fn a_log_from_before_the_outbox_is_still_read() {
        let dir = TempDir::new("portico-pre-outbox");
        let file = open(&dir, false).await.unwrap();
        let memory = SqlStore::open(&StoreConfig::new("sqlite::memory:")).await.unwrap();
        for store in [&file, &memory] {
            if store.audit_writer.is_some() {
                store.migrate().await.unwrap();
            }
            store.run_audit_append(&chainer(), &[record(1, "before")]).await.unwrap();
            for sql in ["DROP TABLE audit_outbox", "DELETE FROM portico_migrations WHERE version = 8"] {
                sqlx::query(sql).execute(pool(store)).await.unwrap();
            }
            let (state, rows) = scan(store).await;
            assert_eq!((state.head_seq, rows.len(), state.outbox_waiting), (1, 1, 0));
        }
        file.close().await;
    }

    #[tokio::test]
    async fn an_audit_log_in_the_database_file_moves_into_its_own_file_once_even_when_two_stores_start() {
        let dir = TempDir::new("portico-audit-move");
        // The layout before the audit file: tables in the database file, with records.
        let old = open(&dir, false).await.unwrap();
        old.migrate().await.unwrap();
        let in_file = SqlStore { db: old.db.clone(), audit_writer: None };
        let records: Vec<AuditRecord> = (0..20).map(|i| record(i, "before")).collect();
        in_file.run_audit_append(&chainer(), &records).await.unwrap();
        let (before_state, before_rows) = scan(&in_file).await;
        old.close().await;

        // Two stores starting at once on it (two processes): one moves, the other finds the
        // copy; both start.
        let (a, b) = tokio::join!(open(&dir, true), open(&dir, true));
        let (a, b) = (a.unwrap(), b.unwrap());
        a.close().await;
        b.close().await;
        for _ in 0..2 {
            let store = open(&dir, true).await.unwrap();
            let (state, rows) = scan(&store).await;
            assert_eq!(format!("{state:?}"), format!("{before_state:?}"));
            assert!(rows == before_rows, "every record and index row moved as it was");
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM main.sqlite_master WHERE tbl_name LIKE 'audit%' AND tbl_name <> 'audit_outbox'",
            )
            .fetch_one(pool(&store))
            .await
            .unwrap();
            assert_eq!(left, 0, "nothing of the audit log is left in the database file");
            store.close().await;
        }
        let store = open(&dir, true).await.unwrap();
        assert_eq!(store.run_audit_append(&chainer(), &[record(30, "after")]).await.unwrap(), 21);
        store.close().await;

        // Without its audit file, the store does not start (and does not begin a new log).
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", dir.path().join("p-audit.db").display()));
        }
        let e = open(&dir, true).await.err().expect("refused");
        assert!(e.to_string().contains("audit log file is missing"), "{e}");
    }

    /// The appender inserts rows 16 to a statement and the rest one at a time: every row
    /// must carry its own values, whatever the batch size.
    #[tokio::test]
    async fn appends_of_any_size_store_each_record_with_its_own_chain_values_and_patients() {
        let dir = TempDir::new("portico-append-sizes");
        let store = open(&dir, true).await.unwrap();
        let mut expected = Vec::new();
        for size in [1, 15, 16, 17, 40] {
            let batch: Vec<AuditRecord> = (0..size)
                .map(|i| {
                    let n = expected.len() as i64 + i;
                    let mut r = record(n, &format!("user-{n}"));
                    r.client = Some(format!("app-{n}"));
                    r.entities.push(Entity {
                        reference: format!("Condition/c-{n}/_history/2"),
                        role: EntityRole::Target,
                        category: "problems".into(),
                        patients: vec![format!("pt-{}", n % 5), format!("pt-{}", n % 7 + 10)],
                    });
                    r.normalise();
                    r
                })
                .collect();
            store.run_audit_append(&chainer(), &batch).await.unwrap();
            expected.extend(batch);
        }
        let (state, rows) = scan(&store).await;
        assert_eq!((state.head_seq, rows.len()), (89, 89));
        let mut prev = portico_audit::GENESIS;
        for (i, (row, r)) in rows.iter().zip(&expected).enumerate() {
            let link = chainer().link(&prev, i as i64 + 1, r);
            prev = link.hash;
            assert_eq!(row.seq, link.seq);
            assert_eq!(row.record, link.canonical, "record {}", row.seq);
            assert_eq!(
                (row.hash.as_str(), row.mac.as_str()),
                (&*chain::to_hex(&link.hash), &*chain::to_hex(&link.mac))
            );
            assert_eq!(
                (row.ts, row.actor.as_str(), row.client.as_str()),
                (r.time_ms, &*r.actor.key(), &*format!("app-{i}"))
            );
            assert_eq!(row.subjects, r.subjects(), "patients of record {}", row.seq);
            assert!(row.subjects.len() >= 2);
        }
        store.close().await;
    }

    // The appender's INSERTs say `OR FAIL` (no statement journal): a row that conflicts
    // part-way through a multi-row INSERT leaves the rows before it in place until the
    // transaction rolls back. These check that it always does.
    #[tokio::test]
    async fn an_append_that_meets_a_conflict_part_way_leaves_none_of_its_rows() {
        let dir = TempDir::new("portico-append-conflict");
        let store = open(&dir, true).await.unwrap();
        let batch = |from: i64, n: i64| (from..from + n).map(|i| record(i, "reader")).collect::<Vec<_>>();
        store.run_audit_append(&chainer(), &batch(0, 5)).await.unwrap();
        // A row where the append's 10th record goes, inside its first 16-row INSERT.
        let stray = "INSERT INTO audit_log (seq, ts, interaction, action, outcome, actor, client, record, hash, mac) \
                     VALUES (15, 0, 'read', 'R', 'success', 'x', '', 'x', 'h', 'm')";
        sqlx::query(stray).execute(pool(&store)).await.unwrap();
        assert!(store.run_audit_append(&chainer(), &batch(5, 20)).await.is_err());
        assert_eq!((count(&store, "audit_log").await, count(&store, "audit_subject_rows").await), (6, 5));
        let head: i64 = sqlx::query_scalar("SELECT seq FROM audit_head").fetch_one(pool(&store)).await.unwrap();
        assert_eq!(head, 5, "the head did not move");
        sqlx::query("DELETE FROM audit_log WHERE seq = 15").execute(pool(&store)).await.unwrap();
        store.run_audit_append(&chainer(), &batch(5, 20)).await.unwrap();
        let (state, rows) = scan(&store).await;
        assert_eq!((state.head_seq, rows.len(), count(&store, "audit_subject_rows").await), (25, 25, 25));
        store.close().await;
    }

    #[tokio::test]
    async fn an_index_merge_that_meets_a_conflict_moves_no_row() {
        let dir = TempDir::new("portico-merge-conflict");
        let store = open(&dir, true).await.unwrap();
        let merge = crate::audit::AUDIT_INDEX_MERGE;
        let before: Vec<AuditRecord> = (0..merge - 1).map(|i| record(i, "reader")).collect();
        store.run_audit_append(&chainer(), &before).await.unwrap();
        // Record 100's own index row, already in the merged part.
        sqlx::query("INSERT INTO audit_subjects (seq, patient, category) VALUES (100, 'pt-0', 'labs')")
            .execute(pool(&store))
            .await
            .unwrap();
        let crossing = [record(merge, "reader"), record(merge + 1, "reader")];
        assert!(store.run_audit_append(&chainer(), &crossing).await.is_err());
        assert_eq!(count(&store, "audit_subjects").await, 1, "only the stray row");
        assert_eq!(count(&store, "audit_subjects_recent").await, merge - 1);
        sqlx::query("DELETE FROM audit_subjects").execute(pool(&store)).await.unwrap();
        store.run_audit_append(&chainer(), &crossing).await.unwrap();
        assert_eq!(count(&store, "audit_subjects").await, merge);
        assert_eq!(count(&store, "audit_subjects_recent").await, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn a_new_audit_file_has_16_kib_pages() {
        let dir = TempDir::new("portico-audit-pages");
        let store = open(&dir, true).await.unwrap();
        let size: i64 = sqlx::query_scalar("PRAGMA audit.page_size").fetch_one(pool(&store)).await.unwrap();
        let main: i64 = sqlx::query_scalar("PRAGMA main.page_size").fetch_one(pool(&store)).await.unwrap();
        assert_eq!((size, main), (16_384, 4_096), "the clinical file keeps SQLite's default");
        store.close().await;
    }

    #[test]
    fn the_audit_file_sits_beside_the_database_file() {
        assert_eq!(audit_path(Path::new("data/portico.db")), Path::new("data/portico-audit.db"));
        assert_eq!(audit_path(Path::new("/x/y/store")), Path::new("/x/y/store-audit"));
    }

    #[test]
    fn create_statements_are_qualified_with_the_audit_schema() {
        assert_eq!(
            qualify("CREATE TABLE audit_log (seq INTEGER)").as_deref(),
            Some("CREATE TABLE audit.audit_log (seq INTEGER)")
        );
        assert_eq!(
            qualify("CREATE INDEX audit_log_ts ON audit_log (ts, seq)").as_deref(),
            Some("CREATE INDEX audit.audit_log_ts ON audit_log (ts, seq)")
        );
        assert_eq!(qualify("CREATE VIEW v AS SELECT 1").as_deref(), Some("CREATE VIEW audit.v AS SELECT 1"));
        assert_eq!(qualify("DROP TABLE x"), None);
    }
}
