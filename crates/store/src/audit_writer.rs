//! Appends on SQLite through a connection of their own.
//!
//! Through sqlx, an append of a few hundred records built multi-row INSERT texts, copied
//! every value into the statement's bind list and again into sqlx's arguments, and handed
//! each statement to the connection's worker thread over a channel; that was about half of
//! what auditing a read cost the server (`ARCHITECTURE.md`, "Where the cost is"). Here an
//! append runs on a blocking thread through one plain connection and prepared multi-row
//! statements ([`insert_rows`]), binding values in place. The canonical encoding is made
//! before the head lock is taken ([`Pending`]); under the lock only the record number is
//! joined in and hashed.
//!
//! The statements, the head row and the index merge are those of the pool's path
//! (`append_audit!`), which a clinical write still takes inside its own transaction;
//! `BEGIN IMMEDIATE` serialises both, so they extend one chain.

use crate::audit::{LogColumns, MERGE_RECENT_SQLITE, merge_point};
use crate::direct::{DirectSqlite, direct_error};
use crate::error::StoreError;
use portico_audit::chain::{self, Hash};
use portico_audit::{AuditRecord, Chainer, canonical};
use rusqlite::{Connection, Statement, TransactionBehavior, params};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The INSERTs of the appended rows, without their `VALUES` (see [`insert_rows`]): the
/// number of columns is the number of bind values a row takes. `OR FAIL`, not SQLite's
/// default `ABORT`: to undo the rows of a multi-row statement that stops part-way, SQLite
/// copies every page the statement changes into a statement journal first, and that was
/// 7.5k of the ~82k user-space instructions the audit added to a read
/// (`bench/audit_instructions.sh`). Any failure rolls the whole append back, so the rows a
/// failing statement leaves never commit (tested: `audit_file::tests`, "conflict").
const INSERT_LOG: Insert = Insert {
    head: "INSERT OR FAIL INTO audit_log (seq, ts, interaction, action, outcome, actor, client, record, hash, mac) VALUES ",
    columns: 10,
};
const INSERT_SUBJECT: Insert =
    Insert { head: "INSERT OR FAIL INTO audit_subjects_recent (seq, patient, category) VALUES ", columns: 3 };
/// Rows one INSERT carries: SQLite sets a statement up and tears it down (a cursor on the
/// table and on each of its indexes, the reset) once per execution, not once per row.
/// `audit_bench batch-cost sqlite 300` under callgrind: about 39k instructions a record
/// in SQLite with one row per INSERT; 4.9k fewer with this and 16 KiB pages together
/// (`audit_file::attach`). 16 rows of `audit_log` bind 160 values, far under SQLite's limit.
const ROWS_PER_INSERT: usize = 16;
const LOCK_HEAD: &str = "UPDATE audit_head SET seq = seq WHERE id = 1";
const HEAD_AND_OUTBOX: &str = "SELECT seq, hash, outbox_done FROM audit_head WHERE id = 1";
const UPDATE_HEAD_AND_OUTBOX: &str = "UPDATE audit_head SET seq = ?1, hash = ?2, outbox_done = ?3 WHERE id = 1";
const OUTBOX_ROWS: &str = "SELECT id, record FROM audit_outbox WHERE id > ?1 ORDER BY id LIMIT ?2";
/// Most outbox rows one append chains (the rest go with the next).
const OUTBOX_BATCH: i64 = 2_000;

/// A record made ready to append: everything but what depends on its place in the chain.
pub(crate) struct Pending {
    tail: String,
    columns: LogColumns,
    subjects: Vec<(String, String)>,
}

impl Pending {
    pub(crate) fn of(r: &AuditRecord) -> Pending {
        Pending { tail: canonical::encode_tail(r), columns: LogColumns::of(r), subjects: r.subjects() }
    }
}

/// The appending connection of a SQLite file store, opened on first use.
pub(crate) struct AuditWriter {
    file: DirectSqlite,
    synchronous: &'static str,
    conn: Mutex<Option<Connection>>,
    /// Whether the last append failed (a write then chains the outbox before it writes).
    failing: AtomicBool,
}

impl AuditWriter {
    /// `synchronous`: the pragma's value (`StoreConfig::synchronous_pragma`).
    pub(crate) fn new(file: DirectSqlite, synchronous: &'static str) -> AuditWriter {
        AuditWriter { file, synchronous, conn: Mutex::new(None), failing: AtomicBool::new(false) }
    }

    /// Append `records` in one transaction on a blocking thread; the new head's number.
    pub(crate) async fn append(
        self: &Arc<Self>,
        chainer: &Chainer,
        records: &[AuditRecord],
    ) -> Result<i64, StoreError> {
        let pending: Arc<Vec<Pending>> = Arc::new(records.iter().map(Pending::of).collect());
        let chainer = Arc::new(chainer.clone());
        let appended = crate::error::retry_transient(|| {
            let (writer, chainer, pending) = (Arc::clone(self), Arc::clone(&chainer), Arc::clone(&pending));
            async move {
                tokio::task::spawn_blocking(move || writer.append_blocking(&chainer, &pending))
                    .await
                    .map_err(|e| StoreError::AuditChain(format!("the audit append task failed: {e}")))?
            }
        })
        .await;
        self.failing.store(appended.is_err(), Ordering::Relaxed);
        appended
    }

    /// Whether the last append failed: until one succeeds, records cannot be chained.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Close the connection (an append after this opens it again).
    pub(crate) fn close(&self) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn append_blocking(&self, chainer: &Chainer, pending: &[Pending]) -> Result<i64, StoreError> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(self.file.open_writer(self.synchronous)?);
        }
        let conn = slot.as_mut().expect("opened above");
        let r = append_in(conn, chainer, pending);
        if matches!(&r, Err(StoreError::Database(_))) {
            // Not knowing what state a failed connection is in, the next append opens anew.
            *slot = None;
        }
        r
    }
}

fn append_in(conn: &mut Connection, chainer: &Chainer, pending: &[Pending]) -> Result<i64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(direct_error)?;
    // Takes the write lock of the audit file alone (`BEGIN IMMEDIATE` would also take the
    // clinical file's, which this transaction only reads the outbox from).
    tx.prepare_cached(LOCK_HEAD).and_then(|mut s| s.execute([])).map_err(direct_error)?;
    let (mut seq, head, done): (i64, String, i64) = tx
        .prepare_cached(HEAD_AND_OUTBOX)
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
        .map_err(direct_error)?;
    // Checked even with nothing to append: a write asks whether the chain can be extended.
    let mut prev: Hash = chain::from_hex(&head)
        .ok_or_else(|| StoreError::AuditChain("the audit head row holds a malformed hash".into()))?;
    let outbox = outbox_after(&tx, done)?;
    if pending.is_empty() && outbox.is_empty() {
        return Ok(seq);
    }
    let first = seq;
    let mut rows = Vec::with_capacity(outbox.len() + pending.len());
    let mut subjects = Vec::new();
    // A write's records first: they were committed before these were answered.
    for p in outbox.iter().map(|(_, p)| p).chain(pending) {
        seq += 1;
        let link = chainer.link_tail(&prev, seq, &p.tail);
        prev = link.hash;
        subjects.extend(p.subjects.iter().map(|(patient, category)| (seq, patient.as_str(), category.as_str())));
        rows.push((&p.columns, link));
    }
    insert_rows(&tx, INSERT_LOG, &rows, |st, at, (c, l)| {
        st.raw_bind_parameter(at, l.seq)?;
        st.raw_bind_parameter(at + 1, c.ts)?;
        st.raw_bind_parameter(at + 2, c.interaction)?;
        st.raw_bind_parameter(at + 3, c.action)?;
        st.raw_bind_parameter(at + 4, c.outcome)?;
        st.raw_bind_parameter(at + 5, &c.actor)?;
        st.raw_bind_parameter(at + 6, &c.client)?;
        st.raw_bind_parameter(at + 7, &l.canonical)?;
        st.raw_bind_parameter(at + 8, hex_str(&chain::hex32(&l.hash)))?;
        st.raw_bind_parameter(at + 9, hex_str(&chain::hex32(&l.mac)))
    })?;
    insert_rows(&tx, INSERT_SUBJECT, &subjects, |st, at, (seq, patient, category)| {
        st.raw_bind_parameter(at, *seq)?;
        st.raw_bind_parameter(at + 1, *patient)?;
        st.raw_bind_parameter(at + 2, *category)
    })?;
    let moved = outbox.last().map_or(done, |(id, _)| *id);
    tx.prepare_cached(UPDATE_HEAD_AND_OUTBOX)
        .and_then(|mut s| s.execute(params![seq, hex_str(&chain::hex32(&prev)), moved]))
        .map_err(direct_error)?;
    if let Some(upto) = merge_point(first, seq) {
        for sql in MERGE_RECENT_SQLITE {
            tx.execute(sql, [upto]).map_err(direct_error)?;
        }
    }
    tx.commit().map_err(direct_error)?;
    Ok(seq)
}

/// The outbox rows after `done` (at most [`OUTBOX_BATCH`]), made ready to chain.
fn outbox_after(tx: &rusqlite::Transaction<'_>, done: i64) -> Result<Vec<(i64, Pending)>, StoreError> {
    let mut stmt = tx.prepare_cached(OUTBOX_ROWS).map_err(direct_error)?;
    let rows = stmt.query_map(params![done, OUTBOX_BATCH], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)));
    let mut out = Vec::new();
    for row in rows.map_err(direct_error)? {
        let (id, tail) = row.map_err(direct_error)?;
        let record = canonical::decode_lenient(&canonical::join(0, &tail))
            .map_err(|e| StoreError::AuditChain(format!("audit outbox row {id} is unreadable: {e}")))?
            .1;
        out.push((id, Pending { columns: LogColumns::of(&record), subjects: record.subjects(), tail }));
    }
    Ok(out)
}

/// The text of [`chain::hex32`]'s digits (always ASCII).
fn hex_str(digits: &[u8; 64]) -> &str {
    std::str::from_utf8(digits).expect("hex digits are ASCII")
}

/// A multi-row INSERT of the appender, built for a number of rows.
struct Insert {
    head: &'static str,
    columns: usize,
}

impl Insert {
    fn sql(&self, rows: usize) -> String {
        let row = format!("({})", vec!["?"; self.columns].join(", "));
        format!("{}{}", self.head, vec![row; rows].join(", "))
    }
}

/// Insert `rows`, [`ROWS_PER_INSERT`] to a statement and the rest one at a time (so the
/// statement cache holds two statements per table, whatever the batch size); `bind` binds
/// one row's values from the given parameter index on.
fn insert_rows<T>(
    tx: &rusqlite::Transaction<'_>,
    insert: Insert,
    rows: &[T],
    bind: impl Fn(&mut Statement<'_>, usize, &T) -> rusqlite::Result<()>,
) -> Result<(), StoreError> {
    let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
    let run = |stmt: &mut Statement<'_>, rows: &[T]| -> rusqlite::Result<()> {
        for (i, row) in rows.iter().enumerate() {
            bind(stmt, 1 + i * insert.columns, row)?;
        }
        stmt.raw_execute().map(|_| ())
    };
    if rows.len() >= ROWS_PER_INSERT {
        let mut stmt = tx.prepare_cached(&insert.sql(ROWS_PER_INSERT)).map_err(direct_error)?;
        for chunk in chunks.by_ref() {
            run(&mut stmt, chunk).map_err(direct_error)?;
        }
    }
    if !chunks.remainder().is_empty() {
        let mut stmt = tx.prepare_cached(&insert.sql(1)).map_err(direct_error)?;
        for row in chunks.remainder() {
            run(&mut stmt, std::slice::from_ref(row)).map_err(direct_error)?;
        }
    }
    Ok(())
}
