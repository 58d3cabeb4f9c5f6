//! Appends on SQLite through a connection of their own.
//!
//! Through sqlx, an append of a few hundred records built multi-row INSERT texts, copied
//! every value into the statement's bind list and again into sqlx's arguments, and handed
//! each statement to the connection's worker thread over a channel; that was about half of
//! what auditing a read cost the server (`ARCHITECTURE.md`, "Where the cost is"). Here an
//! append runs on a blocking thread through one plain connection and two single-row
//! statements, binding values in place. The canonical encoding is made before the head
//! lock is taken ([`Pending`]); under the lock only the record number is joined in and
//! hashed.
//!
//! The statements, the head row and the index merge are those of the pool's path
//! (`append_audit!`), which a clinical write still takes inside its own transaction;
//! `BEGIN IMMEDIATE` serialises both, so they extend one chain.

use crate::audit::{LogColumns, MERGE_RECENT, merge_point};
use crate::direct::{DirectSqlite, direct_error};
use crate::error::StoreError;
use portico_audit::chain::{self, Hash};
use portico_audit::{AuditRecord, Chainer, canonical};
use rusqlite::{Connection, TransactionBehavior, params};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const INSERT_LOG: &str = "INSERT INTO audit_log (seq, ts, interaction, action, outcome, actor, client, record, hash, mac) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const INSERT_SUBJECT: &str = "INSERT INTO audit_subjects_recent (seq, patient, category) VALUES (?1, ?2, ?3)";
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
    {
        let mut log = tx.prepare_cached(INSERT_LOG).map_err(direct_error)?;
        let mut subject = tx.prepare_cached(INSERT_SUBJECT).map_err(direct_error)?;
        // A write's records first: they were committed before these were answered.
        for p in outbox.iter().map(|(_, p)| p).chain(pending) {
            seq += 1;
            let link = chainer.link_tail(&prev, seq, &p.tail);
            prev = link.hash;
            let c = &p.columns;
            log.execute(params![
                seq,
                c.ts,
                c.interaction,
                c.action,
                c.outcome,
                c.actor,
                c.client,
                link.canonical,
                hex_str(&chain::hex32(&link.hash)),
                hex_str(&chain::hex32(&link.mac))
            ])
            .map_err(direct_error)?;
            for (patient, category) in &p.subjects {
                subject.execute(params![seq, patient, category]).map_err(direct_error)?;
            }
        }
    }
    let moved = outbox.last().map_or(done, |(id, _)| *id);
    tx.prepare_cached(UPDATE_HEAD_AND_OUTBOX)
        .and_then(|mut s| s.execute(params![seq, hex_str(&chain::hex32(&prev)), moved]))
        .map_err(direct_error)?;
    if let Some(upto) = merge_point(first, seq) {
        for sql in MERGE_RECENT {
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
