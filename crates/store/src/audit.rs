//! The audit log's storage: appends under the chain's head row (inside a clinical write's
//! own transaction, or on their own), the gated AuditEvent view, signed heads, pruning to
//! a signed checkpoint, and the consistent scan `audit verify` reads.
//!
//! One chain per database. Every append reads and updates the single `audit_head` row in
//! its transaction: SQLite serialises writers (`BEGIN IMMEDIATE`), PostgreSQL locks the row
//! (`SELECT … FOR UPDATE`), so appends from any number of processes take turns and the
//! chain cannot fork; `audit_log.seq` being the primary key makes a fork impossible even if
//! the lock were lost.

use crate::WriteResult;
use crate::backend::{Db, SqlStore, with_pool};
use crate::direct::{DirectSqlite, direct_error};
use crate::error::StoreError;
use crate::search::exec::query_of;
use crate::search::sql::Sql;
use portico_audit::canonical;
use portico_audit::chain::{self, Hash};
use portico_audit::{AuditRecord, ChainState, Chainer, RowBatch, RowSpans, SignedHead, Span};
use portico_policy::{ResourceFacts, Sealed, SearchPermit};
use rusqlite::OptionalExtension;
use rusqlite::types::ValueRef;
use sqlx::Row;
use std::fmt::Write as _;

/// Rows per multi-row INSERT into the audit tables on SQLite (10 and 3 bind values per row).
const LOG_ROWS_PER_INSERT: usize = 100;
const SUBJECT_ROWS_PER_INSERT: usize = 300;

/// On PostgreSQL, the bind values of one statement are kept under this many bytes, and its
/// row count a power of two (so that few distinct statements are prepared). sqlx 0.9.0
/// leaves Nagle's algorithm on (launchbadge/sqlx#4335): a message larger than a fresh
/// socket's send buffer (16 KiB) leaves in two segments and the second waits for the
/// server's delayed ACK — 40 ms per statement. Measured (`audit_bench batch-cost`): one
/// commit of 100 records took 50 ms in one statement.
const PG_STATEMENT_BYTES: usize = 8 * 1024;
const PG_MAX_ROWS: usize = 64;

/// Appends add their patient index rows to `audit_subjects_recent` (ordered by record
/// number: an append touches only its last pages); the append that crosses a multiple of
/// this many records moves the rows up to that multiple into `audit_subjects` (ordered by
/// patient), sorted, in the append's own transaction — see migration 0007. Readers scan the recent
/// part whole, so it is kept small. `audit_bench batch-cost sqlite 300` (90,000 records over
/// 1,000 patients): see ARCHITECTURE.md, "Where the cost is".
pub const AUDIT_INDEX_MERGE: i64 = 8_192;

/// The merge's copy of the recent patient index rows numbered up to `$1` into the patient
/// index: its verb, then the order rows are inserted in.
macro_rules! merge_copy {
    ($verb:literal, $order:literal) => {
        concat!(
            $verb,
            " INTO audit_subjects (seq, patient, category) \
             SELECT seq, patient, category FROM audit_subjects_recent WHERE seq <= $1",
            $order
        )
    };
}
const MERGE_DROP: &str = "DELETE FROM audit_subjects_recent WHERE seq <= $1";

/// Move the recent patient index rows numbered up to `$1` into the patient index, in its
/// order (one pass over the pages it touches), then drop them from the recent part.
pub(crate) const MERGE_RECENT: [&str; 2] = [merge_copy!("INSERT", " ORDER BY patient, category, seq"), MERGE_DROP];

/// [`MERGE_RECENT`] on SQLite, where two things cost more than they save:
/// - The sort. The rows go in as the recent part holds them, by record number: the rowid
///   table and the `(seq, …)` index then grow at their ends, and the pages of the patient
///   index the merge touches stay in the appender's page cache (`direct::open_writer`)
///   until the commit writes each once, in whatever order they were changed.
/// - SQLite's default `ABORT`: to undo the rows of a statement that stops part-way, SQLite
///   copies every page it changes into a statement journal first. With `FAIL` the rows
///   before the failing one stay, and nothing is lost by that, since every failure ends the
///   whole append's transaction in a rollback.
///
/// Measured by `bench/audit_instructions.sh`: the sort 4.4k user-space instructions a read,
/// the journal 7.5k with the appender's INSERTs (ARCHITECTURE.md, "Counted in instructions").
pub(crate) const MERGE_RECENT_SQLITE: [&str; 2] = [merge_copy!("INSERT OR FAIL", ""), MERGE_DROP];

/// Delete the patient index rows numbered up to `$1`, from both parts (pruning).
const PRUNE_SUBJECTS: [&str; 2] =
    ["DELETE FROM audit_subjects WHERE seq <= $1", "DELETE FROM audit_subjects_recent WHERE seq <= $1"];

/// Row ranges of the multi-row INSERTs that append `links`.
pub(crate) fn log_chunks(links: &[chain::Link], sqlite: bool) -> Vec<std::ops::Range<usize>> {
    if sqlite {
        return (0..links.len())
            .step_by(LOG_ROWS_PER_INSERT)
            .map(|i| i..(i + LOG_ROWS_PER_INSERT).min(links.len()))
            .collect();
    }
    // Per row: the record, two hex digests and the short index columns.
    pg_chunks(links.iter().map(|l| l.canonical.len() + 200))
}

/// Consecutive ranges of rows of the given sizes, each at most [`PG_STATEMENT_BYTES`] (or
/// one row) and a power of two long.
fn pg_chunks(sizes: impl Iterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let sizes: Vec<usize> = sizes.collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sizes.len() {
        let mut n = 0;
        let mut bytes = 0;
        while i + n < sizes.len() && n < PG_MAX_ROWS && (n == 0 || bytes + sizes[i + n] <= PG_STATEMENT_BYTES) {
            bytes += sizes[i + n];
            n += 1;
        }
        let n = 1 << n.ilog2();
        out.push(i..i + n);
        i += n;
    }
    out
}

/// Audit records that belong to a clinical write: built from the write's results inside
/// its transaction and appended before it commits, so the write and its records are
/// stored together or not at all.
pub struct WriteAudit<'a> {
    pub chainer: &'a Chainer,
    pub records: &'a (dyn Fn(&[WriteResult]) -> Vec<AuditRecord> + Sync),
}

/// A query over the audit log (the AuditEvent search and the patient's access log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Records concerning this patient.
    pub patient: Option<String>,
    /// … with data of this category.
    pub category: Option<String>,
    /// `ts >= since_ms` and `ts < until_ms`.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Interaction codes (any of).
    pub interactions: Vec<String>,
    /// AuditEvent.action codes (any of).
    pub actions: Vec<String>,
    /// Outcome codes (any of).
    pub outcomes: Vec<String>,
    /// Actor keys `kind/id` (any of).
    pub actors: Vec<String>,
    /// Client application ids (any of).
    pub clients: Vec<String>,
    /// Only records numbered below this (paging: newest first).
    pub before_seq: Option<i64>,
    pub count: usize,
    /// Count all matches.
    pub total: bool,
}

/// One stored record.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub seq: i64,
    pub record: AuditRecord,
}

/// One page of records, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// `before_seq` of the next page, if there is one.
    pub next: Option<i64>,
    pub total: Option<i64>,
}

/// What a consistent scan of the log hands out: first the chain's state, then rows in
/// `seq` order, in batches (iterating a batch yields owned rows).
pub enum ScanItem {
    State(ChainState),
    Rows(RowBatch),
}

/// Append `$records` in the open transaction `$tx` after the head row, which the select
/// locks (`$lock` is appended to it). Yields the new head's number.
macro_rules! append_audit {
    ($tx:ident, $chainer:expr, $records:expr, $lock:expr) => {
        async {
            let records: &[portico_audit::AuditRecord] = $records;
            let chainer: &portico_audit::Chainer = $chainer;
            // SQLite (the backend without a row-lock clause) binds anonymous `?`
            // placeholders: it resolves numbered ones by name, at a cost that grows with the
            // square of the parameter count.
            let anonymous = $lock.is_empty();
            let head =
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT seq, hash FROM audit_head WHERE id = 1{}", $lock)))
                    .fetch_one(&mut *$tx)
                    .await?;
            let mut seq: i64 = head.try_get("seq")?;
            if records.is_empty() {
                return Ok::<i64, StoreError>(seq);
            }
            let hash: String = head.try_get("hash")?;
            let mut prev = portico_audit::chain::from_hex(&hash)
                .ok_or_else(|| StoreError::AuditChain("the audit head row holds a malformed hash".into()))?;
            let mut links = Vec::with_capacity(records.len());
            for r in records {
                seq += 1;
                let link = chainer.link(&prev, seq, r);
                prev = link.hash;
                links.push(link);
            }
            for rows in crate::audit::log_chunks(&links, anonymous) {
                let sql = crate::audit::log_insert(&links[rows.clone()], &records[rows]);
                query_of!(sql, anonymous).execute(&mut *$tx).await?;
            }
            for sql in crate::audit::subject_inserts(&links, records, anonymous) {
                query_of!(sql, anonymous).execute(&mut *$tx).await?;
            }
            sqlx::query(crate::audit::UPDATE_HEAD)
                .bind(seq)
                .bind(portico_audit::chain::to_hex(&prev))
                .execute(&mut *$tx)
                .await?;
            if let Some(upto) = crate::audit::merge_point(seq - records.len() as i64, seq) {
                let merge = if anonymous { crate::audit::MERGE_RECENT_SQLITE } else { crate::audit::MERGE_RECENT };
                for sql in merge {
                    sqlx::query(sql).bind(upto).execute(&mut *$tx).await?;
                }
            }
            Ok(seq)
        }
        .await
    };
}
pub(crate) use append_audit;

/// The multiple of [`AUDIT_INDEX_MERGE`] an append from record `before` (exclusive) to
/// `after` crosses, if it crosses one: the recent index rows up to it are to be merged.
pub(crate) fn merge_point(before: i64, after: i64) -> Option<i64> {
    let upto = after - after.rem_euclid(AUDIT_INDEX_MERGE);
    (upto > before).then_some(upto)
}

/// The columns of an `audit_log` row derived from its record (indexes that `audit verify`
/// checks against the record), for both append paths.
pub(crate) struct LogColumns {
    pub(crate) ts: i64,
    pub(crate) interaction: &'static str,
    pub(crate) action: &'static str,
    pub(crate) outcome: &'static str,
    pub(crate) actor: String,
    pub(crate) client: String,
}

impl LogColumns {
    pub(crate) fn of(r: &AuditRecord) -> LogColumns {
        LogColumns {
            ts: r.time_ms,
            interaction: r.interaction.code(),
            action: r.interaction.action(),
            outcome: r.outcome.code(),
            actor: r.actor.key(),
            client: r.client.clone().unwrap_or_default(),
        }
    }
}

/// The multi-row INSERT of links into `audit_log`.
pub(crate) fn log_insert(links: &[chain::Link], records: &[AuditRecord]) -> Sql {
    let mut s = Sql::default();
    s.push("INSERT INTO audit_log (seq, ts, interaction, action, outcome, actor, client, record, hash, mac) VALUES ");
    for (i, (l, r)) in links.iter().zip(records).enumerate() {
        if i > 0 {
            s.push(", ");
        }
        let c = LogColumns::of(r);
        s.push("(").int(l.seq).push(", ").int(c.ts).push(", ").text(c.interaction);
        s.push(", ").text(c.action).push(", ").text(c.outcome).push(", ").text(&c.actor);
        s.push(", ").text(&c.client);
        s.push(", ")
            .text(&l.canonical)
            .push(", ")
            .text(&chain::to_hex(&l.hash))
            .push(", ")
            .text(&chain::to_hex(&l.mac));
        s.push(")");
    }
    s
}

/// Multi-row INSERTs of the patient index rows of `records` (into its recent part).
pub(crate) fn subject_inserts(links: &[chain::Link], records: &[AuditRecord], sqlite: bool) -> Vec<Sql> {
    let rows: Vec<(i64, String, String)> = links
        .iter()
        .zip(records)
        .flat_map(|(l, r)| r.subjects().into_iter().map(move |(p, c)| (l.seq, p, c)))
        .collect();
    let chunks: Vec<std::ops::Range<usize>> = if sqlite {
        (0..rows.len())
            .step_by(SUBJECT_ROWS_PER_INSERT)
            .map(|i| i..(i + SUBJECT_ROWS_PER_INSERT).min(rows.len()))
            .collect()
    } else {
        pg_chunks(rows.iter().map(|(_, p, c)| p.len() + c.len() + 40))
    };
    chunks
        .into_iter()
        .map(|r| &rows[r])
        .map(|chunk| {
            let mut s = Sql::default();
            s.push("INSERT INTO audit_subjects_recent (seq, patient, category) VALUES ");
            for (i, (seq, p, c)) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.push("(").int(*seq).push(", ").text(p).push(", ").text(c).push(")");
            }
            s
        })
        .collect()
}

/// The `WHERE` conditions of an audit query, confined by the permit.
fn audit_where(sql: &mut Sql, permit: &SearchPermit, q: &AuditQuery) {
    sql.push(" WHERE 1 = 1");
    if let Some(allowed) = permit.compartments() {
        if allowed.is_empty() {
            sql.push(" AND 1 = 0");
        } else {
            sql.push(" AND a.seq IN (SELECT s.seq FROM audit_subject_rows s WHERE s.patient IN (");
            for (i, p) in allowed.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.text(p);
            }
            sql.push("))");
        }
    }
    match (&q.patient, &q.category) {
        (Some(p), Some(c)) => {
            sql.push(" AND a.seq IN (SELECT s.seq FROM audit_subject_rows s WHERE s.patient = ").text(p);
            sql.push(" AND s.category = ").text(c).push(")");
        }
        (Some(p), None) => {
            sql.push(" AND a.seq IN (SELECT s.seq FROM audit_subject_rows s WHERE s.patient = ").text(p).push(")");
        }
        (None, Some(c)) => {
            sql.push(" AND a.seq IN (SELECT s.seq FROM audit_subject_rows s WHERE s.category = ").text(c).push(")");
        }
        (None, None) => {}
    }
    if let Some(t) = q.since_ms {
        sql.push(" AND a.ts >= ").int(t);
    }
    if let Some(t) = q.until_ms {
        sql.push(" AND a.ts < ").int(t);
    }
    for (col, values) in [
        ("interaction", &q.interactions),
        ("action", &q.actions),
        ("outcome", &q.outcomes),
        ("actor", &q.actors),
        ("client", &q.clients),
    ] {
        if values.is_empty() {
            continue;
        }
        sql.push(" AND a.").push(col).push(" IN (");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.text(v);
        }
        sql.push(")");
    }
}

fn decode(seq: i64, text: &str) -> Result<AuditRecord, StoreError> {
    canonical::decode_lenient(text)
        .map(|(_, r)| r)
        .map_err(|_| StoreError::AuditChain(format!("audit record #{seq} is unreadable")))
}

/// Field and row separators of the aggregated scan: control characters, which a canonical
/// record never holds raw (and neither do hashes, codes, actor or client ids).
const FIELD_SEP: char = '\u{1f}';
const ROW_SEP: char = '\u{1e}';

/// The statements of the consistent scan `audit verify` reads.
///
/// The log is read in windows of record numbers (`seq > $1 AND seq <= $2` on the primary
/// key), each window as *one* aggregated text value — fields and rows joined by control
/// characters — because fetching rows one by one through the driver cost ~12 µs a row, ten
/// times what SQLite itself needs. A row's fields are joined by one `concat_ws` (one
/// allocation; a chain of `||` copies the growing row at every step), and the record comes
/// last, after its length in bytes, so that splitting a row never scans the record. The
/// patient index rows of a window come from a second statement. With two connections
/// (`SqlStore::pooled_audit_scan`), each reads every other window, in parallel. (A SQLite
/// file database is read on direct connections instead: `direct_audit_scan`.)
struct ScanSql {
    /// One text: `ROW_SEP`-joined rows of `FIELD_SEP`-joined `seq, ts, interaction, action,
    /// outcome, actor, client, hash, mac, octet_length(record), record`.
    log: String,
    /// One text: `ROW_SEP`-joined `seq, patient, category`.
    subjects: String,
    /// What must be equal for two transactions to see the same audit log.
    fingerprint: &'static str,
}

fn scan_sql(sqlite: bool) -> ScanSql {
    let (agg, chr) = if sqlite { ("group_concat", "char") } else { ("string_agg", "chr") };
    // SQLite aggregates in the order the rowid delivers, which is the order wanted for the
    // log; the patient index comes in two parts (migration 0007), each in order, and
    // `scan_batch` puts their rows in order. PostgreSQL is asked explicitly.
    let (log_order, subject_order) =
        if sqlite { ("", "") } else { (" ORDER BY seq", " ORDER BY seq, patient, category") };
    ScanSql {
        log: format!(
            "SELECT {agg}(concat_ws({chr}(31), seq, ts, interaction, action, outcome, actor, client, hash, mac, octet_length(record), record), {chr}(30){log_order}) AS body \
             FROM audit_log WHERE seq > $1 AND seq <= $2"
        ),
        subjects: format!(
            "SELECT {agg}(CAST(seq AS TEXT) || {chr}(31) || patient || {chr}(31) || category, {chr}(30){subject_order}) AS body \
             FROM audit_subject_rows WHERE seq > $1 AND seq <= $2"
        ),
        fingerprint: "SELECT (SELECT CAST(seq AS TEXT) || ':' || hash FROM audit_head WHERE id = 1) || '|' \
             || (SELECT CAST(count(*) AS TEXT) || ':' || CAST(coalesce(max(seq), 0) AS TEXT) FROM audit_heads) || '|' \
             || CAST(coalesce((SELECT min(seq) FROM audit_log), 0) AS TEXT) || ':' \
             || CAST(coalesce((SELECT max(seq) FROM audit_log), 0) AS TEXT) AS fp",
    }
}

/// Where byte `x` next occurs in `b` from `from` (`memchr`: SIMD, where a hand-written
/// 16-byte loop took an eighth of the scan's time).
fn find_byte(b: &[u8], from: usize, x: u8) -> Option<usize> {
    memchr::memchr(x, b.get(from..)?).map(|p| from + p)
}

/// Offsets of the `N` fields of `text[start..]` up to the `N`th field separator; returns
/// them and where the next field starts.
fn fields<const N: usize>(text: &str, start: usize) -> Option<([(usize, usize); N], usize)> {
    let mut out = [(0, 0); N];
    let mut from = start;
    for f in out.iter_mut() {
        let at = find_byte(text.as_bytes(), from, FIELD_SEP as u8)?;
        *f = (from, at);
        from = at + 1;
    }
    Some((out, from))
}

/// A batch from the aggregated texts of one window: log rows in `seq` order, each with its
/// patient index rows sorted.
fn scan_batch(log: String, subjects: String) -> Result<RowBatch, StoreError> {
    let bad = || StoreError::AuditChain("the audit log holds a row that cannot be read".into());
    let bad_subject = || StoreError::AuditChain("the patient index holds a row that cannot be read".into());
    let mut batch = RowBatch::default();
    if log.is_empty() {
        return Ok(batch);
    }
    let id = batch.add_text(log);
    let text = batch.text_of(id);
    let mut rows = Vec::new();
    let mut start = 0;
    loop {
        let (f, at) = fields::<10>(text, start).ok_or_else(bad)?;
        let int = |(a, b): (usize, usize)| text[a..b].parse::<i64>().map_err(|_| bad());
        let len = usize::try_from(int(f[9])?).map_err(|_| bad())?;
        let end = at.checked_add(len).filter(|e| *e <= text.len() && text.is_char_boundary(*e)).ok_or_else(bad)?;
        let span = |(a, b): (usize, usize)| RowBatch::span(id, a, b);
        let spans = RowSpans {
            interaction: span(f[2]),
            action: span(f[3]),
            outcome: span(f[4]),
            actor: span(f[5]),
            client: span(f[6]),
            hash: span(f[7]),
            mac: span(f[8]),
            record: span((at, end)),
        };
        rows.push((int(f[0])?, int(f[1])?, spans));
        match text[end..].chars().next() {
            None => break,
            Some(ROW_SEP) => start = end + ROW_SEP.len_utf8(),
            Some(_) => return Err(bad()),
        }
    }
    if !rows.is_sorted_by_key(|r| r.0) {
        rows.sort_by_key(|r| r.0);
    }
    for (seq, ts, spans) in rows {
        batch.push_row(seq, ts, spans);
    }
    if subjects.is_empty() {
        return Ok(batch);
    }
    let id = batch.add_text(subjects);
    let text = batch.text_of(id);
    let mut found = Vec::new();
    for row in text.split(ROW_SEP) {
        let mut f = row.splitn(3, FIELD_SEP);
        let (Some(seq), Some(p), Some(c)) = (f.next(), f.next(), f.next()) else { return Err(bad_subject()) };
        let seq: i64 = seq.parse().map_err(|_| bad_subject())?;
        found.push((seq, p, c));
    }
    if !found.is_sorted() {
        found.sort();
    }
    let span = |t: &str| {
        let at = t.as_ptr() as usize - text.as_ptr() as usize;
        RowBatch::span(id, at, at + t.len())
    };
    let found: Vec<(i64, Span, Span)> = found.into_iter().map(|(seq, p, c)| (seq, span(p), span(c))).collect();
    let mut i = 0;
    for (seq, p, c) in found {
        while i < batch.len() && batch.seq(i) < seq {
            i += 1;
        }
        if i < batch.len() && batch.seq(i) == seq {
            batch.push_subject(i, p, c);
        }
    }
    Ok(batch)
}

/// The aggregated text of one window (`$a < seq <= $b`).
macro_rules! range_text {
    ($conn:expr, $sql:expr, $a:expr, $b:expr) => {
        sqlx::query(sqlx::AssertSqlSafe($sql.clone()))
            .bind($a)
            .bind($b)
            .fetch_one(&mut *$conn)
            .await?
            .try_get::<Option<String>, _>("body")?
            .unwrap_or_default()
    };
}

/// The log's bounds in the snapshot: the first and last record number (0, 0 when empty).
macro_rules! log_bounds {
    ($conn:expr) => {{
        let r = sqlx::query(
            "SELECT coalesce((SELECT min(seq) FROM audit_log), 0) AS lo, coalesce((SELECT max(seq) FROM audit_log), 0) AS hi",
        )
        .fetch_one(&mut *$conn)
        .await?;
        (r.try_get::<i64, _>("lo")?, r.try_get::<i64, _>("hi")?)
    }};
}

/// Read windows `$first`, `$first + $step`, … of the log (window `k` holds the record
/// numbers after `lo - 1 + k·batch`, up to `batch` of them) and hand each non-empty one, as
/// a batch with its patient index rows, to `$send(k, batch)` until it yields false. Empty
/// windows (gaps left by deleted or pruned records) are skipped to the window of the next
/// record there is, so a stray row numbered far beyond the others costs one query, not
/// millions.
macro_rules! read_windows {
    ($conn:expr, $sql:expr, $lo:expr, $hi:expr, $batch:expr, $first:expr, $step:expr, $send:expr) => {
        async {
            let (lo, hi, batch, step): (i64, i64, i64, i64) = ($lo, $hi, $batch, $step);
            let mut k: i64 = $first;
            loop {
                let a = (lo - 1).saturating_add(k.saturating_mul(batch));
                if a >= hi {
                    break;
                }
                let b = a.saturating_add(batch);
                let log = range_text!($conn, $sql.log, a, b);
                if log.is_empty() {
                    let next: Option<i64> = sqlx::query("SELECT min(seq) AS next FROM audit_log WHERE seq > $1")
                        .bind(b)
                        .fetch_one(&mut *$conn)
                        .await?
                        .try_get("next")?;
                    let Some(next) = next else { break };
                    // The first window of this reader's stride at or after the one holding
                    // `next`.
                    let want = (next - lo) / batch;
                    k += (want - k + step - 1) / step * step;
                    continue;
                }
                let subjects = range_text!($conn, $sql.subjects, a, b);
                if !$send(k, scan_batch(log, subjects)?).await {
                    break;
                }
                k += step;
            }
            Ok::<(), StoreError>(())
        }
    };
}

/// A stored head row as a [`SignedHead`]. A malformed one is kept with a signature that
/// cannot verify: `verify` then names it, instead of the store refusing to read the log.
fn stored_head(kind: &str, seq: i64, hash: &str, signed_ms: i64, key_id: String, signature: &str) -> SignedHead {
    SignedHead::from_parts(kind, seq, hash, signed_ms, &key_id, signature).unwrap_or(SignedHead {
        kind: portico_audit::HeadKind::from_code(kind).unwrap_or(portico_audit::HeadKind::Head),
        seq,
        hash: [0; 32],
        signed_ms,
        key_id,
        signature: [0; 64],
    })
}

/// [`stored_head`] of a row read through the pool.
macro_rules! head_of {
    ($r:expr) => {{
        let r = $r;
        let kind: String = r.try_get("kind")?;
        let hash: String = r.try_get("hash")?;
        let signature: String = r.try_get("signature")?;
        stored_head(&kind, r.try_get("seq")?, &hash, r.try_get("signed_ms")?, r.try_get("key_id")?, &signature)
    }};
}

/// The statements that read the chain's state (`chain_state!` through the pool,
/// [`direct_chain_state`] on a direct connection; SQLite reads `$1` as parameter 1).
pub(crate) const HEAD_ROW: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
/// Move the head to `$1` (record number) and `$2` (its hash, hex): every append's last step.
pub(crate) const UPDATE_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";
const LAST_CHECKPOINT: &str = "SELECT kind, seq, hash, signed_ms, key_id, signature FROM audit_heads \
     WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1";
const HEADS_AFTER: &str = "SELECT kind, seq, hash, signed_ms, key_id, signature FROM audit_heads \
     WHERE kind = 'head' AND seq > $1 ORDER BY seq";

/// Whether the store has the outbox (migration 8): `audit verify` does not migrate, so it
/// may read a store last opened by an older version.
pub(crate) const OUTBOX_MIGRATED: &str = "SELECT count(*) FROM portico_migrations WHERE version = 8";

/// How many records of writes wait in the outbox (`audit_file`), and the oldest's time.
pub(crate) const OUTBOX_WAITING: &str = "SELECT count(*), min(ts) FROM audit_outbox \
     WHERE id > (SELECT outbox_done FROM audit_head WHERE id = 1)";

/// The chain's state: head row, newest checkpoint, heads after it, the outbox.
macro_rules! chain_state {
    ($conn:expr) => {
        async {
            let head = sqlx::query($crate::audit::HEAD_ROW).fetch_one(&mut *$conn).await?;
            let mut state = ChainState {
                head_seq: head.try_get("seq")?,
                head_hash: head.try_get("hash")?,
                ..ChainState::default()
            };
            let cp = sqlx::query($crate::audit::LAST_CHECKPOINT).fetch_optional(&mut *$conn).await?;
            if let Some(r) = cp {
                state.checkpoint = Some(head_of!(&r));
            }
            let after = state.checkpoint.as_ref().map_or(0, |c| c.seq);
            let heads = sqlx::query($crate::audit::HEADS_AFTER).bind(after).fetch_all(&mut *$conn).await?;
            for r in &heads {
                state.heads.push(head_of!(r));
            }
            let migrated: i64 = sqlx::query_scalar($crate::audit::OUTBOX_MIGRATED).fetch_one(&mut *$conn).await?;
            if migrated > 0 {
                let outbox = sqlx::query($crate::audit::OUTBOX_WAITING).fetch_one(&mut *$conn).await?;
                state.outbox_waiting = outbox.try_get::<i64, _>(0)?.max(0) as u64;
                state.outbox_oldest_ms = outbox.try_get(1)?;
            }
            Ok::<ChainState, StoreError>(state)
        }
        .await
    };
}

/// What a direct reader hands on: a window number (-1 for the chain state) and its item,
/// or the error that stopped it.
type DirectItem = Result<(i64, ScanItem), StoreError>;

/// The scan on direct connections (SQLite with a file database).
///
/// Two blocking threads read on two read-only connections, each every other window of
/// `batch` record numbers, rows read in place; the windows are handed to `on` in order.
/// Each connection holds one read transaction for the whole scan (in WAL mode its snapshot
/// is fixed by its first read) and the two must see the same audit log: the same
/// fingerprint (head row, signed heads, bounds — every writer of the audit tables changes
/// one of them), as the pooled scan requires of its two connections. If an append commits
/// between the two first reads, both start again; after a few tries, and on one core, one
/// connection reads every window.
async fn direct_audit_scan(
    direct: DirectSqlite,
    batch: usize,
    on: &mut (dyn FnMut(ScanItem) -> bool + Send),
) -> Result<(), StoreError> {
    let (even_tx, mut even) = tokio::sync::mpsc::channel::<DirectItem>(2);
    let (odd_tx, mut odd) = tokio::sync::mpsc::channel::<DirectItem>(2);
    let reader = tokio::task::spawn_blocking(move || read_direct(&direct, batch as i64, even_tx, odd_tx));
    let mut heads = [even.recv().await, odd.recv().await];
    let r = loop {
        let i = match (&heads[0], &heads[1]) {
            (Some(Err(_)), _) => 0,
            (_, Some(Err(_))) => 1,
            (Some(Ok((k0, _))), Some(Ok((k1, _)))) => usize::from(k1 < k0),
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            (None, None) => break Ok(()),
        };
        match heads[i].take() {
            Some(Ok((_, item))) => {
                if !on(item) {
                    break Ok(());
                }
            }
            Some(Err(e)) => break Err(e),
            None => break Ok(()),
        }
        heads[i] = if i == 0 { even.recv().await } else { odd.recv().await };
    };
    // The readers stop at their next hand-over once nothing receives.
    drop(even);
    drop(odd);
    reader.await.map_err(|_| StoreError::AuditChain("the audit log reader stopped unexpectedly".into()))?;
    r
}

/// A field as text, appended to `text`: SQLite's own text (or blob) bytes when they are
/// UTF-8, a number as SQLite would print it. `None` for NULL or bytes that are not UTF-8 —
/// a row that cannot be read.
fn put_field(text: &mut String, v: ValueRef<'_>) -> Option<(usize, usize)> {
    let at = text.len();
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => text.push_str(std::str::from_utf8(b).ok()?),
        ValueRef::Integer(i) => {
            let _ = write!(text, "{i}");
        }
        ValueRef::Real(f) => {
            let _ = write!(text, "{f}");
        }
        ValueRef::Null => return None,
    }
    Some((at, text.len()))
}

fn int_field(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        ValueRef::Text(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// The statements of a direct reader: the log rows of one window in `seq` order (the
/// rowid), their patient index rows in `(seq, patient, category)` order (SQLite merges the
/// two parts' ordered index scans), and the first record after an empty window.
const DIRECT_LOG: &str = "SELECT seq, ts, interaction, action, outcome, actor, client, hash, mac, record \
     FROM audit_log WHERE seq > ?1 AND seq <= ?2 ORDER BY seq";
const DIRECT_SUBJECTS: &str = "SELECT seq, patient, category FROM audit_subject_rows WHERE seq > ?1 AND seq <= ?2 ORDER BY seq, patient, category";
const DIRECT_NEXT: &str = "SELECT min(seq) FROM audit_log WHERE seq > ?1";

/// Hand on a reader's error, if it stopped with one, and close its channel: the merge in
/// [`direct_audit_scan`] waits for the next window of both readers, so one that is done
/// must say so.
fn finish(tx: tokio::sync::mpsc::Sender<DirectItem>, r: Result<(), StoreError>) {
    if let Err(e) = r {
        let _ = tx.blocking_send(Err(e));
    }
}

/// Open the connections of a direct scan, each in its read transaction, read the chain
/// state and the log's bounds, then read the windows (see [`direct_audit_scan`]).
fn read_direct(
    direct: &DirectSqlite,
    batch: i64,
    even: tokio::sync::mpsc::Sender<DirectItem>,
    odd: tokio::sync::mpsc::Sender<DirectItem>,
) {
    let (first, second, lo, hi) = match direct_begin(direct, &even) {
        Ok(Some(begun)) => begun,
        Ok(None) => return,
        Err(e) => return finish(even, Err(e)),
    };
    match second {
        None => {
            drop(odd);
            let r = read_direct_windows(&first, lo, hi, batch, 0, 1, &even);
            finish(even, r);
        }
        Some(second) => std::thread::scope(|s| {
            s.spawn(move || {
                let r = read_direct_windows(&second, lo, hi, batch, 1, 2, &odd);
                finish(odd, r);
            });
            let r = read_direct_windows(&first, lo, hi, batch, 0, 2, &even);
            finish(even, r);
        }),
    }
}

/// The connections in their read transactions (the second only if it sees the same audit
/// log as the first), with the chain state handed on and the log's first and last record
/// number; `None` if nothing receives any more.
#[allow(clippy::type_complexity)]
fn direct_begin(
    direct: &DirectSqlite,
    tx: &tokio::sync::mpsc::Sender<DirectItem>,
) -> Result<Option<(rusqlite::Connection, Option<rusqlite::Connection>, i64, i64)>, StoreError> {
    let fingerprint = scan_sql(true).fingerprint;
    let begin = |c: &rusqlite::Connection| -> Result<String, StoreError> {
        c.execute_batch("BEGIN").map_err(direct_error)?;
        c.query_row(fingerprint, [], |r| r.get(0)).map_err(direct_error)
    };
    let first = direct.open()?;
    // A second reader only helps with a core to run on.
    let two = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let mut second = if two { Some(direct.open()?) } else { None };
    let mut tries = 0;
    loop {
        let fp = begin(&first)?;
        let Some(c) = &second else { break };
        if begin(c)? == fp {
            break;
        }
        first.execute_batch("ROLLBACK").map_err(direct_error)?;
        c.execute_batch("ROLLBACK").map_err(direct_error)?;
        tries += 1;
        if tries == 3 {
            second = None;
        }
    }
    let state = direct_chain_state(&first)?;
    if tx.blocking_send(Ok((-1, ScanItem::State(state)))).is_err() {
        return Ok(None);
    }
    // From the first row even after pruning: rows a checkpoint should have removed are
    // reported by verify as out of place.
    let (lo, hi) = first
        .query_row(
            "SELECT coalesce((SELECT min(seq) FROM audit_log), 0), coalesce((SELECT max(seq) FROM audit_log), 0)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(direct_error)?;
    Ok(Some((first, second, lo, hi)))
}

/// Read windows `first`, `first + step`, … of the log (window `k` holds the record numbers
/// after `lo - 1 + k·batch`, up to `batch` of them) and hand each non-empty one, as a batch
/// with its patient index rows, to `tx` until it is dropped. Empty windows (gaps left by
/// deleted or pruned records) are skipped to the window of the next record there is, so a
/// stray row numbered far beyond the others costs one query, not millions.
fn read_direct_windows(
    conn: &rusqlite::Connection,
    lo: i64,
    hi: i64,
    batch: i64,
    first: i64,
    step: i64,
    tx: &tokio::sync::mpsc::Sender<DirectItem>,
) -> Result<(), StoreError> {
    let mut log = conn.prepare(DIRECT_LOG).map_err(direct_error)?;
    let mut subjects = conn.prepare(DIRECT_SUBJECTS).map_err(direct_error)?;
    let mut next = conn.prepare(DIRECT_NEXT).map_err(direct_error)?;
    let mut capacity = 0;
    let mut k = first;
    loop {
        let a = (lo - 1).saturating_add(k.saturating_mul(batch));
        if a >= hi {
            return Ok(());
        }
        let b = a.saturating_add(batch);
        let rows = read_direct_window(&mut log, &mut subjects, a, b, capacity)?;
        if rows.is_empty() {
            let after: Option<i64> = next.query_row([b], |r| r.get(0)).map_err(direct_error)?;
            let Some(after) = after else { return Ok(()) };
            // The first window of this reader's stride at or after the one holding `after`.
            let want = (after - lo) / batch;
            k += (want - k + step - 1) / step * step;
            continue;
        }
        capacity = rows.text_of(0).len() + rows.text_of(0).len() / 8;
        if tx.blocking_send(Ok((k, ScanItem::Rows(rows)))).is_err() {
            return Ok(());
        }
        k += step;
    }
}

/// The rows numbered `a < seq <= b` with their patient index rows, as one batch whose
/// fields are copied into one text (`capacity` bytes reserved).
fn read_direct_window<'c>(
    log: &mut rusqlite::Statement<'c>,
    subjects: &mut rusqlite::Statement<'c>,
    a: i64,
    b: i64,
    capacity: usize,
) -> Result<RowBatch, StoreError> {
    let bad = || StoreError::AuditChain("the audit log holds a row that cannot be read".into());
    let bad_subject = || StoreError::AuditChain("the patient index holds a row that cannot be read".into());
    let mut batch = RowBatch::default();
    let id = batch.add_text(String::with_capacity(capacity));
    for st in [&mut *log, &mut *subjects] {
        st.raw_bind_parameter(1, a).map_err(direct_error)?;
        st.raw_bind_parameter(2, b).map_err(direct_error)?;
    }
    let mut rows = log.raw_query();
    while let Some(row) = rows.next().map_err(direct_error)? {
        let get = |i: usize| row.get_ref(i).map_err(direct_error);
        let seq = int_field(get(0)?).ok_or_else(bad)?;
        let ts = int_field(get(1)?).ok_or_else(bad)?;
        let text = batch.text_mut(id);
        let mut field = |i: usize| -> Result<Span, StoreError> {
            let (a, e) = put_field(text, get(i)?).ok_or_else(bad)?;
            Ok(RowBatch::span(id, a, e))
        };
        let spans = RowSpans {
            interaction: field(2)?,
            action: field(3)?,
            outcome: field(4)?,
            actor: field(5)?,
            client: field(6)?,
            hash: field(7)?,
            mac: field(8)?,
            record: field(9)?,
        };
        batch.push_row(seq, ts, spans);
    }
    if batch.is_empty() {
        return Ok(batch);
    }
    // Index rows of record numbers the log does not hold are ignored, as the pooled scan
    // ignores them.
    let mut rows = subjects.raw_query();
    let mut i = 0;
    while let Some(row) = rows.next().map_err(direct_error)? {
        let get = |i: usize| row.get_ref(i).map_err(direct_error);
        let seq = int_field(get(0)?).ok_or_else(bad_subject)?;
        while i < batch.len() && batch.seq(i) < seq {
            i += 1;
        }
        if i < batch.len() && batch.seq(i) == seq {
            let text = batch.text_mut(id);
            let p = put_field(text, get(1)?).ok_or_else(bad_subject)?;
            let c = put_field(text, get(2)?).ok_or_else(bad_subject)?;
            batch.push_subject(i, RowBatch::span(id, p.0, p.1), RowBatch::span(id, c.0, c.1));
        }
    }
    Ok(batch)
}

/// The chain's state on the direct connection (as `chain_state!` reads it through the pool).
fn direct_chain_state(conn: &rusqlite::Connection) -> Result<ChainState, StoreError> {
    let (head_seq, head_hash) = conn.query_row(HEAD_ROW, [], |r| Ok((r.get(0)?, r.get(1)?))).map_err(direct_error)?;
    let mut state = ChainState { head_seq, head_hash, ..ChainState::default() };
    let head = |r: &rusqlite::Row<'_>| -> rusqlite::Result<SignedHead> {
        Ok(stored_head(
            &r.get::<_, String>(0)?,
            r.get(1)?,
            &r.get::<_, String>(2)?,
            r.get(3)?,
            r.get(4)?,
            &r.get::<_, String>(5)?,
        ))
    };
    state.checkpoint = conn.query_row(LAST_CHECKPOINT, [], head).optional().map_err(direct_error)?;
    let after = state.checkpoint.as_ref().map_or(0, |c| c.seq);
    let mut stmt = conn.prepare(HEADS_AFTER).map_err(direct_error)?;
    state.heads =
        stmt.query_map([after], head).map_err(direct_error)?.collect::<Result<_, _>>().map_err(direct_error)?;
    let migrated: i64 = conn.query_row(OUTBOX_MIGRATED, [], |r| r.get(0)).map_err(direct_error)?;
    if migrated > 0 {
        let (waiting, oldest): (i64, Option<i64>) =
            conn.query_row(OUTBOX_WAITING, [], |r| Ok((r.get(0)?, r.get(1)?))).map_err(direct_error)?;
        state.outbox_waiting = waiting.max(0) as u64;
        state.outbox_oldest_ms = oldest;
    }
    Ok(state)
}

impl SqlStore {
    /// Append records on their own (reads, searches, denials), durably, in chain order.
    pub(crate) async fn run_audit_append(&self, chainer: &Chainer, records: &[AuditRecord]) -> Result<i64, StoreError> {
        if let Some(writer) = &self.audit_writer {
            return writer.append(chainer, records).await;
        }
        crate::error::retry_transient(move || async move {
            match &self.db {
                Db::Sqlite(pool) => {
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    match append_audit!(tx, chainer, records, "") {
                        Ok(seq) => tx.commit().await.map(|_| seq).map_err(StoreError::from),
                        Err(e) => Err(e),
                    }
                }
                Db::Pg(pool) => {
                    let mut tx = pool.begin().await?;
                    match append_audit!(tx, chainer, records, " FOR UPDATE") {
                        Ok(seq) => tx.commit().await.map(|_| seq).map_err(StoreError::from),
                        Err(e) => Err(e),
                    }
                }
            }
        })
        .await
    }

    /// The head row: last record number and its hash.
    pub(crate) async fn run_audit_head(&self) -> Result<(i64, Hash), StoreError> {
        with_pool!(&self.db, pool => {
            let r = sqlx::query(HEAD_ROW).fetch_one(pool).await?;
            let hash: String = r.try_get("hash")?;
            let hash = chain::from_hex(&hash).ok_or_else(|| StoreError::AuditChain("the audit head row holds a malformed hash".into()))?;
            Ok((r.try_get("seq")?, hash))
        })
    }

    /// Keep a signed head or checkpoint (idempotent).
    pub(crate) async fn run_audit_put_head(&self, h: &SignedHead) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO audit_heads (kind, seq, hash, signed_ms, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kind, seq) DO NOTHING",
            )
            .bind(h.kind.code())
            .bind(h.seq)
            .bind(chain::to_hex(&h.hash))
            .bind(h.signed_ms)
            .bind(h.key_id.clone())
            .bind(h.signature_hex())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The newest signed head of kind `head`.
    pub(crate) async fn run_audit_latest_head(&self) -> Result<Option<SignedHead>, StoreError> {
        with_pool!(&self.db, pool => {
            let r = sqlx::query(
                "SELECT kind, seq, hash, signed_ms, key_id, signature FROM audit_heads WHERE kind = 'head' ORDER BY seq DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await?;
            Ok(match r {
                Some(r) => Some(head_of!(&r)),
                None => None,
            })
        })
    }

    /// Read the whole log in one consistent snapshot, handing the chain state and then rows
    /// in `seq` order to `on`, in batches of about `batch` records, until it returns false.
    ///
    /// A SQLite file database is read on a direct connection ([`read_direct`]); PostgreSQL
    /// and in-memory SQLite through the pool ([`SqlStore::pooled_audit_scan`]).
    pub(crate) async fn run_audit_scan(
        &self,
        batch: usize,
        on: &mut (dyn FnMut(ScanItem) -> bool + Send),
    ) -> Result<(), StoreError> {
        match self.direct_sqlite() {
            Some(direct) => direct_audit_scan(direct, batch.max(1), on).await,
            None => self.pooled_audit_scan(batch, on).await,
        }
    }

    /// The scan through the pool, in windows of `batch` record numbers, each read as one
    /// aggregated text ([`scan_sql`]).
    ///
    /// With a second connection free in the pool, each connection reads every other window,
    /// in parallel: the second's transaction must see the same audit log as the first's
    /// (same head row, signed heads and bounds — every writer of the audit tables changes
    /// one of them); if they differ, because an append committed between the two starts,
    /// both start again, and after a few tries the scan makes do with one connection.
    async fn pooled_audit_scan(
        &self,
        batch: usize,
        on: &mut (dyn FnMut(ScanItem) -> bool + Send),
    ) -> Result<(), StoreError> {
        let batch = batch.max(1) as i64;
        let sql = scan_sql(self.is_sqlite());
        macro_rules! scan {
            ($pool:expr) => {{
                let pool = $pool;
                let isolation =
                    (!self.is_sqlite()).then_some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
                let mut first = pool.acquire().await?;
                // A second connection if the pool has room for one (not waiting long for it).
                let mut second = if pool.options().get_max_connections() >= 2 {
                    tokio::time::timeout(std::time::Duration::from_millis(100), pool.acquire())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                if self.is_sqlite() {
                    // Read the file through a memory map (up to SQLite's 2 GB default
                    // limit) instead of a read() per page into the connection's cache.
                    for c in std::iter::once(&mut first).chain(second.as_mut()) {
                        sqlx::query("PRAGMA mmap_size = 2147418112").execute(&mut **c).await?;
                    }
                }
                let r = {
                    let mut tries = 0;
                    let (mut a, mut b) = loop {
                        let mut a = sqlx::Connection::begin(&mut *first).await?;
                        if let Some(q) = isolation {
                            sqlx::query(q).execute(&mut *a).await?;
                        }
                        let fp_a: String = sqlx::query(sql.fingerprint).fetch_one(&mut *a).await?.try_get("fp")?;
                        let Some(c) = second.as_mut() else { break (a, None) };
                        let mut b = sqlx::Connection::begin(&mut **c).await?;
                        if let Some(q) = isolation {
                            sqlx::query(q).execute(&mut *b).await?;
                        }
                        let fp_b: String = sqlx::query(sql.fingerprint).fetch_one(&mut *b).await?.try_get("fp")?;
                        if fp_a == fp_b {
                            break (a, Some(b));
                        }
                        a.rollback().await?;
                        b.rollback().await?;
                        tries += 1;
                        if tries == 3 {
                            second = None;
                        }
                    };
                    let state = chain_state!(a)?;
                    let r = if !on(ScanItem::State(state)) {
                        Ok(())
                    } else {
                        // From the first row even after pruning: rows a checkpoint should have removed are
                        // reported by verify as out of place.
                        let (lo, hi) = log_bounds!(a);
                        match b.as_mut() {
                            None => {
                                read_windows!(a, sql, lo, hi, batch, 0, 1, |_, rows| std::future::ready(on(
                                    ScanItem::Rows(rows)
                                )))
                                .await
                            }
                            Some(b) => {
                                // Each connection reads every other window; the batches are handed on in
                                // window order.
                                let b = &mut **b;
                                let (even_tx, mut even) = tokio::sync::mpsc::channel::<(i64, RowBatch)>(1);
                                let (odd_tx, mut odd) = tokio::sync::mpsc::channel::<(i64, RowBatch)>(1);
                                let even_side = async {
                                    let r = read_windows!(a, sql, lo, hi, batch, 0, 2, |k, rows| {
                                        let tx = even_tx.clone();
                                        async move { tx.send((k, rows)).await.is_ok() }
                                    })
                                    .await;
                                    drop(even_tx);
                                    r
                                };
                                let odd_side = async {
                                    let r = read_windows!(b, sql, lo, hi, batch, 1, 2, |k, rows| {
                                        let tx = odd_tx.clone();
                                        async move { tx.send((k, rows)).await.is_ok() }
                                    })
                                    .await;
                                    drop(odd_tx);
                                    r
                                };
                                let merge = async {
                                    let mut heads = [even.recv().await, odd.recv().await];
                                    loop {
                                        let i = match (&heads[0], &heads[1]) {
                                            (Some((k0, _)), Some((k1, _))) => usize::from(k1 < k0),
                                            (Some(_), None) => 0,
                                            (None, Some(_)) => 1,
                                            (None, None) => break,
                                        };
                                        let Some((_, rows)) = heads[i].take() else { break };
                                        if !on(ScanItem::Rows(rows)) {
                                            break;
                                        }
                                        heads[i] = if i == 0 { even.recv().await } else { odd.recv().await };
                                    }
                                    drop(even);
                                    drop(odd);
                                };
                                let (e, o, ()) = tokio::join!(even_side, odd_side, merge);
                                e.and(o)
                            }
                        }
                    };
                    a.rollback().await?;
                    match b {
                        Some(b) => b.rollback().await?,
                        None => {}
                    }
                    r
                };
                if self.is_sqlite() {
                    for c in std::iter::once(&mut first).chain(second.as_mut()) {
                        sqlx::query("PRAGMA mmap_size = 0").execute(&mut **c).await?;
                    }
                }
                r
            }};
        }
        match &self.db {
            Db::Sqlite(pool) => scan!(pool),
            Db::Pg(pool) => scan!(pool),
        }
    }

    /// The newest record made before `before_ms`, with its hash (where pruning may stop).
    pub(crate) async fn run_audit_prune_point(&self, before_ms: i64) -> Result<Option<(i64, Hash)>, StoreError> {
        with_pool!(&self.db, pool => {
            let r = sqlx::query("SELECT seq, hash FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log WHERE ts < $1)")
                .bind(before_ms)
                .fetch_optional(pool)
                .await?;
            match r {
                None => Ok(None),
                Some(r) => {
                    let hash: String = r.try_get("hash")?;
                    let hash = chain::from_hex(&hash).ok_or_else(|| StoreError::AuditChain("malformed stored hash".into()))?;
                    Ok(Some((r.try_get("seq")?, hash)))
                }
            }
        })
    }

    /// Delete records up to the checkpoint's number and keep the checkpoint, atomically.
    /// Refuses a checkpoint that does not match the stored record it names.
    pub(crate) async fn run_audit_prune(&self, cp: &SignedHead) -> Result<u64, StoreError> {
        macro_rules! prune {
            ($tx:ident) => {
                async {
                    let r = sqlx::query("SELECT hash FROM audit_log WHERE seq = $1").bind(cp.seq).fetch_optional(&mut *$tx).await?;
                    let stored: Option<String> = r.map(|r| r.try_get("hash")).transpose()?;
                    if stored.as_deref() != Some(chain::to_hex(&cp.hash).as_str()) {
                        return Err(StoreError::AuditChain(format!("checkpoint #{} does not match the stored record", cp.seq)));
                    }
                    for sql in PRUNE_SUBJECTS {
                        sqlx::query(sql).bind(cp.seq).execute(&mut *$tx).await?;
                    }
                    let n = sqlx::query("DELETE FROM audit_log WHERE seq <= $1").bind(cp.seq).execute(&mut *$tx).await?.rows_affected();
                    sqlx::query("DELETE FROM audit_heads WHERE kind = 'head' AND seq < $1").bind(cp.seq).execute(&mut *$tx).await?;
                    sqlx::query(
                        "INSERT INTO audit_heads (kind, seq, hash, signed_ms, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kind, seq) DO NOTHING",
                    )
                    .bind(cp.kind.code())
                    .bind(cp.seq)
                    .bind(chain::to_hex(&cp.hash))
                    .bind(cp.signed_ms)
                    .bind(cp.key_id.clone())
                    .bind(cp.signature_hex())
                    .execute(&mut *$tx)
                    .await?;
                    Ok::<u64, StoreError>(n)
                }
                .await
            };
        }
        match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let n = prune!(tx)?;
                tx.commit().await?;
                Ok(n)
            }
            Db::Pg(pool) => {
                let mut tx = pool.begin().await?;
                let n = prune!(tx)?;
                tx.commit().await?;
                Ok(n)
            }
        }
    }

    /// One page of records the permit admits, newest first.
    pub(crate) async fn run_audit_search(
        &self,
        permit: &SearchPermit,
        q: &AuditQuery,
    ) -> Result<AuditPage, StoreError> {
        if permit.resource_type() != Some("AuditEvent") {
            return Err(StoreError::BadQuery("the audit log is searched as AuditEvent".into()));
        }
        let mut page = AuditPage::default();
        if q.total {
            let mut count = Sql::default();
            count.push("SELECT COUNT(*) AS n FROM audit_log a");
            audit_where(&mut count, permit, q);
            page.total = Some(with_pool!(&self.db, pool => {
                query_of!(count).fetch_one(pool).await?.try_get::<i64, _>("n")?
            }));
        }
        let mut sql = Sql::default();
        sql.push("SELECT a.seq, a.record FROM audit_log a");
        audit_where(&mut sql, permit, q);
        if let Some(b) = q.before_seq {
            sql.push(" AND a.seq < ").int(b);
        }
        sql.push(" ORDER BY a.seq DESC LIMIT ").int(q.count as i64 + 1);
        let rows: Vec<(i64, String)> = with_pool!(&self.db, pool => {
            query_of!(sql)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("seq")?, r.try_get("record")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        let more = rows.len() > q.count;
        for (seq, text) in rows.into_iter().take(q.count) {
            page.entries.push(AuditEntry { seq, record: decode(seq, &text)? });
        }
        if more {
            page.next = page.entries.last().map(|e| e.seq);
        }
        Ok(page)
    }

    /// One record, sealed: its facts are the patients it concerns.
    pub(crate) async fn run_audit_read(&self, seq: i64) -> Result<Option<Sealed<AuditEntry>>, StoreError> {
        let row: Option<String> = with_pool!(&self.db, pool => {
            sqlx::query("SELECT record FROM audit_log WHERE seq = $1")
                .bind(seq)
                .fetch_optional(pool)
                .await?
                .map(|r| r.try_get("record"))
                .transpose()?
        });
        let Some(text) = row else { return Ok(None) };
        let record = decode(seq, &text)?;
        let facts = audit_facts(seq, &record);
        Ok(Some(Sealed::new(facts, AuditEntry { seq, record })))
    }
}

/// What the gate sees of a record: an AuditEvent in the compartments of its patients.
pub fn audit_facts(seq: i64, record: &AuditRecord) -> ResourceFacts {
    ResourceFacts {
        resource_type: "AuditEvent".into(),
        id: Some(seq.to_string()),
        version: Some(1),
        compartments: record.patients.clone(),
        category: "administrative".into(),
        labels: Vec::new(),
        category_codes: Vec::new(),
        date_ms: None,
        author: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_statements_stay_small_and_few() {
        // Small rows: 64 at a time (a power of two), the rest in powers of two.
        let chunks = pg_chunks(std::iter::repeat_n(100, 200));
        let lens: Vec<usize> = chunks.iter().map(|r| r.len()).collect();
        assert_eq!(lens, vec![64, 64, 64, 8]);
        assert_eq!(chunks.last().unwrap().end, 200);
        // ~900-byte rows: as many as fit in 8 KiB, rounded down to a power of two.
        assert!(pg_chunks(std::iter::repeat_n(900, 20)).iter().all(|r| r.len() == 8 || r.end == 20));
        // A row larger than the limit goes on its own; nothing is lost or repeated.
        let chunks = pg_chunks([10, 20_000, 10, 10].into_iter());
        assert_eq!(chunks, vec![0..1, 1..2, 2..4]);
        assert!(pg_chunks(std::iter::empty()).is_empty());
    }

    #[test]
    fn a_scan_window_is_split_into_rows_by_length_not_by_scanning_records() {
        let row = |seq: i64, record: &str| {
            format!(
                "{seq}\u{1f}5\u{1f}read\u{1f}R\u{1f}success\u{1f}operator/operator\u{1f}\u{1f}h\u{1f}m\u{1f}{}\u{1f}{record}",
                record.len()
            )
        };
        // A record holding both separators raw is still one field (its hash will fail).
        let text = [row(1, "{\"a\"}"), row(2, "x\u{1e}\u{1f}y"), row(3, "é")].join("\u{1e}");
        let batch = scan_batch(text, "1\u{1f}p1\u{1f}labs\u{1e}3\u{1f}p2\u{1f}\u{1e}3\u{1f}p1\u{1f}".into()).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.row(1).record, "x\u{1e}\u{1f}y");
        assert_eq!(batch.row(2).record, "é");
        assert_eq!((batch.row(0).client, batch.row(0).hash, batch.row(0).ts), ("", "h", 5));
        assert_eq!(batch.row(0).subjects().collect::<Vec<_>>(), vec![("p1", "labs")]);
        assert_eq!(batch.row(1).subjects().count(), 0);
        // Subject rows out of order are sorted per record.
        assert_eq!(batch.row(2).subjects().collect::<Vec<_>>(), vec![("p1", ""), ("p2", "")]);
        // A length that does not fit is refused, not guessed.
        assert!(scan_batch(row(1, "abc").replace("\u{1f}3\u{1f}", "\u{1f}9\u{1f}"), String::new()).is_err());
    }

    use crate::backend::StoreConfig;
    use portico_audit::{Actor, AuditKey, Entity, EntityRole, Interaction, StoredRow};

    /// A plain connection to a file store, its audit file attached (as the store has it).
    fn open_with_audit(file: &std::path::Path) -> rusqlite::Connection {
        let w = rusqlite::Connection::open(file).unwrap();
        crate::audit_file::attach_direct(&w, &crate::audit_file::audit_path(file)).unwrap();
        w
    }

    /// A file database holding `n` records: every third concerns no patient, the others one
    /// or two (with two data categories), so index rows vary per record.
    async fn file_store(n: usize) -> (SqlStore, std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("portico-audit-scan-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.db");
        let store = SqlStore::open(&StoreConfig::new(format!("sqlite://{}", file.display()))).await.unwrap();
        let chainer = Chainer::new(AuditKey::from_seed(&[3; 32]).mac_key());
        let records: Vec<AuditRecord> = (0..n)
            .map(|i| {
                let mut r = AuditRecord::new(
                    1_700_000_000_000 + i as i64,
                    "req",
                    Interaction::Read,
                    Actor::new("operator", "op"),
                );
                for p in 0..i % 3 {
                    for category in ["labs", "demographics"] {
                        r.entities.push(Entity {
                            reference: format!("Observation/o{i}-{p}/_history/1"),
                            role: EntityRole::Target,
                            category: category.into(),
                            patients: vec![format!("pt-{}", (i + p) % 17)],
                        });
                    }
                }
                r.normalise();
                r
            })
            .collect();
        for part in records.chunks(500) {
            store.run_audit_append(&chainer, part).await.unwrap();
        }
        (store, dir, file)
    }

    /// Everything a scan hands out: the chain state (as text) and the rows, owned.
    fn collector(out: &mut (String, Vec<StoredRow>, usize)) -> impl FnMut(ScanItem) -> bool + Send + '_ {
        move |item| {
            match item {
                ScanItem::State(s) => out.0 = format!("{s:?}"),
                ScanItem::Rows(b) => {
                    out.2 += 1;
                    out.1.extend(b);
                }
            }
            true
        }
    }

    #[tokio::test]
    async fn appends_on_the_own_connection_and_in_pool_transactions_extend_one_chain() {
        let (store, dir, _file) = file_store(0).await;
        assert!(store.audit_writer.is_some(), "a SQLite file store appends on its own connection");
        // The pool's path, as a clinical write's transaction takes it.
        let pool_only = SqlStore { db: store.db.clone(), audit_writer: None };
        let chainer = Chainer::new(AuditKey::from_seed(&[3; 32]).mac_key());
        let batch = |who: &str, n: usize| -> Vec<AuditRecord> {
            (0..n)
                .map(|i| {
                    let mut r = AuditRecord::new(1_700_000_000_000, who, Interaction::Read, Actor::new("user", who));
                    r.client = (i % 2 == 0).then(|| "app".to_string());
                    r.entities.push(Entity {
                        reference: format!("Observation/{who}-{i}/_history/1"),
                        role: EntityRole::Target,
                        category: "labs".into(),
                        patients: vec![format!("pt-{}", i % 5)],
                    });
                    r.normalise();
                    r
                })
                .collect()
        };
        // Both paths at once, with enough records to cross an index merge.
        let (own, pooled) = (batch("own", 700), batch("pool", 300));
        let rounds = 9;
        let a = async {
            for _ in 0..rounds {
                store.run_audit_append(&chainer, &own).await.unwrap();
            }
        };
        let b = async {
            for _ in 0..rounds {
                pool_only.run_audit_append(&chainer, &pooled).await.unwrap();
            }
        };
        tokio::join!(a, b);
        let total = rounds * (own.len() + pooled.len());
        assert!(total as i64 > AUDIT_INDEX_MERGE);
        let mut scanned: (String, Vec<StoredRow>, usize) = Default::default();
        store.run_audit_scan(1_000, &mut collector(&mut scanned)).await.unwrap();
        let rows = scanned.1;
        assert_eq!(rows.len(), total);
        let mut prev = chain::GENESIS;
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.seq, i as i64 + 1, "one record per number, none missing");
            let hash = chain::link_hash(&prev, row.record.as_bytes());
            assert_eq!(row.hash, chain::to_hex(&hash), "record {} links to the one before", row.seq);
            prev = hash;
            let (seq, r) = canonical::decode(&row.record).unwrap();
            assert_eq!(seq, row.seq);
            assert_eq!(row.actor, r.actor.key());
            assert_eq!(row.client, r.client.clone().unwrap_or_default());
            assert_eq!((row.interaction.as_str(), row.outcome.as_str()), (r.interaction.code(), r.outcome.code()));
            assert_eq!(row.subjects, r.subjects(), "record {}: its patient index rows", row.seq);
        }
        let by = |who: &str| rows.iter().filter(|r| r.actor == format!("user/{who}")).count();
        assert_eq!((by("own"), by("pool")), (rounds * own.len(), rounds * pooled.len()));
        assert_eq!(store.run_audit_head().await.unwrap(), (total as i64, prev));
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_direct_scan_reads_what_the_pooled_scan_reads() {
        let (store, dir, file) = file_store(1_200).await;
        assert!(store.direct_sqlite().is_some());
        // Damage the direct reader must hand on as it is: a deleted record whose index rows
        // remain, index rows of records that never existed (between batches and after the
        // last), a hidden index row, a blob in a text column.
        let w = open_with_audit(&file);
        w.execute_batch(
            "DELETE FROM audit_log WHERE seq = 8;
             INSERT INTO audit_subjects (seq, patient, category) VALUES (8, 'pt-x', 'labs'), (5000, 'pt-y', 'labs');
             DELETE FROM audit_subjects_recent WHERE seq = 11 AND category = 'labs';
             UPDATE audit_log SET client = X'3432' WHERE seq = 13;
             INSERT INTO audit_log (seq, ts, interaction, action, outcome, actor, client, record, hash, mac)
               SELECT 9000000, ts, interaction, action, outcome, actor, client, record, hash, mac FROM audit_log WHERE seq = 5;",
        )
        .unwrap();
        let mut pooled = Default::default();
        store.pooled_audit_scan(100, &mut collector(&mut pooled)).await.unwrap();
        assert_eq!(pooled.1.len(), 1_200);
        for batch in [1, 7, 1_000, 5_000] {
            let mut direct = Default::default();
            store.run_audit_scan(batch, &mut collector(&mut direct)).await.unwrap();
            assert_eq!(direct.0, pooled.0, "batch {batch}: the chain state");
            assert!(direct.1 == pooled.1, "batch {batch}: the rows");
            // As many batches as non-empty windows (the stray row far beyond is one more).
            let mut windows = Default::default();
            store.pooled_audit_scan(batch, &mut collector(&mut windows)).await.unwrap();
            assert_eq!(direct.2, windows.2, "batch {batch}");
        }
        let r = &pooled.1;
        assert_eq!((r[6].seq, r[7].seq), (7, 9));
        assert_eq!(r[11].client, "42");
        assert_eq!(r[9].subjects, vec![("pt-10".to_string(), "demographics".to_string())]);
        assert_eq!(r[10].subjects.len(), 4);
        // A time that is not a number is a row that cannot be read.
        w.execute("UPDATE audit_log SET ts = 'x' WHERE seq = 20", []).unwrap();
        assert!(store.run_audit_scan(100, &mut |_| true).await.is_err());
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_direct_scan_keeps_one_snapshot_while_records_are_appended() {
        let (store, dir, file) = file_store(600).await;
        let w = open_with_audit(&file);
        // An append as the store makes one: the next record, its index row, the head row.
        let append = move |seq: i64| {
            w.execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 INSERT INTO audit_log (seq, ts, interaction, action, outcome, actor, client, record, hash, mac)
                   SELECT {seq}, ts, interaction, action, outcome, actor, client, record, hash, mac FROM audit_log WHERE seq = {seq} - 1;
                 INSERT INTO audit_subjects_recent (seq, patient, category) VALUES ({seq}, 'pt-1', 'labs');
                 UPDATE audit_head SET seq = {seq} WHERE id = 1;
                 COMMIT;"
            ))
            .unwrap()
        };
        let mut seen = (0i64, 0usize, 0i64);
        let seen_by_scan = &mut seen;
        store
            .run_audit_scan(100, &mut move |item| {
                let seen = &mut *seen_by_scan;
                // Appends commit after the chain state was read, and again after the first
                // batch of rows.
                match item {
                    ScanItem::State(s) => {
                        seen.0 = s.head_seq;
                        append(601);
                    }
                    ScanItem::Rows(b) => {
                        if seen.1 == 0 {
                            append(602);
                        }
                        seen.1 += b.len();
                        seen.2 = b.seq(b.len() - 1);
                    }
                }
                true
            })
            .await
            .unwrap();
        assert_eq!(seen, (600, 600, 600), "the scan saw the log as it was when it began");
        let mut after = Default::default();
        store.run_audit_scan(100, &mut collector(&mut after)).await.unwrap();
        assert_eq!(after.1.len(), 602);
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_direct_scan_stops_when_told() {
        let (store, dir, _) = file_store(500).await;
        let mut batches = 0;
        store
            .run_audit_scan(100, &mut |item| {
                batches += usize::from(matches!(item, ScanItem::Rows(_)));
                batches < 2
            })
            .await
            .unwrap();
        assert_eq!(batches, 2);
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
