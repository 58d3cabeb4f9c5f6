//! Verification of a stored log: stream the rows in `seq` order through a [`Verifier`] and it
//! names the first bad record, or reports what it checked.
//!
//! | tampering | caught by | named record |
//! |---|---|---|
//! | a record edited | its hash | that record |
//! | a record deleted | the gap in `seq` (and the next hash) | the missing one |
//! | records swapped, moved or inserted | the `seq` inside the hashed text, the hashes | the first one out of place |
//! | a record rewritten and every later hash recomputed | its MAC (needs the key) | that record |
//! | the same, by someone holding the key | the signed heads / the witness | the first record after the last head that still matches |
//! | index columns edited (to hide a record from a patient's view) | comparison with the record | that record |
//! | the newest records cut off (truncation) | the head row, the signed heads, the witness | the first missing record |
//! | an old backup restored (rollback) | the witness outside the data directory | the first missing record |

use crate::canonical;
use crate::chain::{self, GENESIS, Hash, MacKey};
use crate::head::{HeadKind, SignedHead};
use crate::keys::PublicKey;
use std::collections::BTreeMap;

/// One stored row, as the store reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub seq: i64,
    /// Index columns, which must agree with the record.
    pub ts: i64,
    pub interaction: String,
    pub action: String,
    pub outcome: String,
    pub actor: String,
    /// The client id (`""` when none).
    pub client: String,
    /// The canonical record text.
    pub record: String,
    /// Hex of the chain hash and of the MAC.
    pub hash: String,
    pub mac: String,
    /// Rows of the patient index for this record, sorted.
    pub subjects: Vec<(String, String)>,
}

/// One stored row, borrowed: what [`Verifier::push_row`] checks. A [`StoredRow`] lends
/// one ([`StoredRow::as_row`]); a [`RowBatch`] lends them without copying.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    pub seq: i64,
    pub ts: i64,
    pub interaction: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub actor: &'a str,
    pub client: &'a str,
    pub record: &'a str,
    pub hash: &'a str,
    pub mac: &'a str,
    subjects: Subjects<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Subjects<'a> {
    Owned(&'a [(String, String)]),
    Spans(&'a RowBatch, &'a [(Span, Span)]),
}

impl<'a> RowRef<'a> {
    /// The row's patient index entries, in stored order.
    pub fn subjects(&self) -> SubjectIter<'a> {
        SubjectIter { of: self.subjects, next: 0 }
    }
}

/// The patient index entries of a [`RowRef`].
pub struct SubjectIter<'a> {
    of: Subjects<'a>,
    next: usize,
}

impl<'a> Iterator for SubjectIter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.of {
            Subjects::Owned(o) => o.get(self.next).map(|(p, c)| (p.as_str(), c.as_str())),
            Subjects::Spans(b, s) => s.get(self.next).map(|(p, c)| (b.text(*p), b.text(*c))),
        };
        self.next += usize::from(item.is_some());
        item
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self.of {
            Subjects::Owned(o) => o.len(),
            Subjects::Spans(_, s) => s.len(),
        } - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for SubjectIter<'_> {}

impl StoredRow {
    pub fn as_row(&self) -> RowRef<'_> {
        RowRef {
            seq: self.seq,
            ts: self.ts,
            interaction: &self.interaction,
            action: &self.action,
            outcome: &self.outcome,
            actor: &self.actor,
            client: &self.client,
            record: &self.record,
            hash: &self.hash,
            mac: &self.mac,
            subjects: Subjects::Owned(&self.subjects),
        }
    }
}

/// Where one field lies in a [`RowBatch`]'s texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    text: u32,
    start: u32,
    end: u32,
}

/// Which text field of a row a [`Span`] in [`RowBatch::push_row`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSpans {
    pub interaction: Span,
    pub action: Span,
    pub outcome: Span,
    pub actor: Span,
    pub client: Span,
    pub record: Span,
    pub hash: Span,
    pub mac: Span,
}

#[derive(Debug, Clone, Copy)]
struct BatchRow {
    seq: i64,
    ts: i64,
    fields: RowSpans,
    /// Range in `subjects`.
    subjects: (u32, u32),
}

/// Rows read in bulk: the texts the store read (whole aggregated values) and where each
/// row's fields lie in them — no allocation per row. Iterating it yields owned
/// [`StoredRow`]s (for tests and tools); `verify` borrows [`RowRef`]s with [`RowBatch::row`].
#[derive(Debug, Default)]
pub struct RowBatch {
    texts: Vec<String>,
    rows: Vec<BatchRow>,
    subjects: Vec<(Span, Span)>,
}

impl RowBatch {
    /// Keep a text the rows' fields lie in; returns its number for [`RowBatch::span`].
    pub fn add_text(&mut self, text: String) -> u32 {
        self.texts.push(text);
        (self.texts.len() - 1) as u32
    }

    /// The text kept as number `text`.
    pub fn text_of(&self, text: u32) -> &str {
        &self.texts[text as usize]
    }

    /// The text kept as number `text`, to append fields to while rows are read (spans into
    /// it stay valid: a text only grows).
    pub fn text_mut(&mut self, text: u32) -> &mut String {
        &mut self.texts[text as usize]
    }

    /// Bytes `start..end` of text number `text` (at character boundaries).
    pub fn span(text: u32, start: usize, end: usize) -> Span {
        Span { text, start: start as u32, end: end as u32 }
    }

    fn text(&self, s: Span) -> &str {
        &self.texts[s.text as usize][s.start as usize..s.end as usize]
    }

    pub fn push_row(&mut self, seq: i64, ts: i64, fields: RowSpans) {
        let at = self.subjects.len() as u32;
        self.rows.push(BatchRow { seq, ts, fields, subjects: (at, at) });
    }

    /// Attach a patient index entry to row number `row` (entries in row order).
    pub fn push_subject(&mut self, row: usize, patient: Span, category: Span) {
        let at = self.subjects.len() as u32;
        let r = &mut self.rows[row];
        if r.subjects.0 == r.subjects.1 {
            r.subjects = (at, at);
        }
        r.subjects.1 = at + 1;
        self.subjects.push((patient, category));
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Record number of row `i`.
    pub fn seq(&self, i: usize) -> i64 {
        self.rows[i].seq
    }

    /// Row `i`, borrowed.
    pub fn row(&self, i: usize) -> RowRef<'_> {
        let r = &self.rows[i];
        let f = &r.fields;
        RowRef {
            seq: r.seq,
            ts: r.ts,
            interaction: self.text(f.interaction),
            action: self.text(f.action),
            outcome: self.text(f.outcome),
            actor: self.text(f.actor),
            client: self.text(f.client),
            record: self.text(f.record),
            hash: self.text(f.hash),
            mac: self.text(f.mac),
            subjects: Subjects::Spans(self, &self.subjects[r.subjects.0 as usize..r.subjects.1 as usize]),
        }
    }

    /// Row `i`, owned.
    pub fn stored(&self, i: usize) -> StoredRow {
        let r = self.row(i);
        StoredRow {
            seq: r.seq,
            ts: r.ts,
            interaction: r.interaction.into(),
            action: r.action.into(),
            outcome: r.outcome.into(),
            actor: r.actor.into(),
            client: r.client.into(),
            record: r.record.into(),
            hash: r.hash.into(),
            mac: r.mac.into(),
            subjects: r.subjects().map(|(p, c)| (p.to_string(), c.to_string())).collect(),
        }
    }
}

impl IntoIterator for RowBatch {
    type Item = StoredRow;
    type IntoIter = std::vec::IntoIter<StoredRow>;
    fn into_iter(self) -> Self::IntoIter {
        (0..self.len()).map(|i| self.stored(i)).collect::<Vec<_>>().into_iter()
    }
}

/// What the store says about the chain as a whole, read in the same snapshot as the rows.
#[derive(Debug, Clone, Default)]
pub struct ChainState {
    /// The head row: the last record's number and hash.
    pub head_seq: i64,
    pub head_hash: String,
    /// The newest checkpoint, if the log was pruned.
    pub checkpoint: Option<SignedHead>,
    /// Signed heads kept in the database.
    pub heads: Vec<SignedHead>,
    /// Records of committed writes waiting in the outbox to be chained (SQLite file stores),
    /// and the time of the oldest (ms).
    pub outbox_waiting: u64,
    pub outbox_oldest_ms: Option<i64>,
}

/// What to trust.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Keys whose head signatures are accepted.
    pub keys: Vec<PublicKey>,
    /// The record MAC key; without it MACs are not checked.
    pub mac: Option<MacKey>,
}

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A record that should be there is not (deleted, or pruned without a checkpoint).
    Missing,
    /// A row that does not belong where it is (inserted, or duplicated).
    Unexpected,
    /// The record's content does not match its hash (edited).
    Edited,
    /// The record's own number is not its place in the log (swapped or moved).
    Moved,
    /// Content and hash were rewritten: the record's MAC does not match.
    Forged,
    /// The stored text is not a canonical record.
    NotCanonical,
    /// The index columns (time, action, actor, patients) disagree with the record.
    IndexMismatch,
    /// The chain no longer reaches a signed head (rewritten by someone with the key, or forked).
    Diverged { head_seq: i64 },
    /// Records after this one were cut off.
    Truncated { expected_last: i64 },
    /// The database is behind the witness: an older copy was restored.
    RolledBack { witness_seq: i64 },
    /// A signed head or checkpoint whose signature does not verify with a trusted key.
    BadSignature { head_seq: i64 },
}

/// The first bad record and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The first record that cannot be trusted.
    pub seq: i64,
    pub problem: Problem,
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "first bad record: #{} — {}", self.seq, self.detail)
    }
}

impl std::error::Error for Finding {}

/// A log that verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Records checked.
    pub records: u64,
    /// First and last record number checked (0, 0 when the log is empty).
    pub first_seq: i64,
    pub last_seq: i64,
    /// Signed heads matched (database and witness).
    pub heads_checked: u64,
    /// The checkpoint the chain started from, if pruned.
    pub checkpoint_seq: Option<i64>,
    /// The witness head that matched, if a witness was given.
    pub witness_seq: Option<i64>,
    /// Whether record MACs were checked.
    pub macs_checked: bool,
    /// Records of committed writes not chained yet, and the time of the oldest (ms): not
    /// covered by the chain until they are.
    pub outbox_waiting: u64,
    pub outbox_oldest_ms: Option<i64>,
}

/// Streaming verifier: [`Verifier::new`], [`Verifier::push`] every row in `seq` order,
/// [`Verifier::finish`].
pub struct Verifier {
    trust: Trust,
    state: ChainState,
    witness: Option<SignedHead>,
    /// Signed positions to compare against, by seq (database heads and the witness).
    marks: BTreeMap<i64, (Hash, &'static str)>,
    expected: i64,
    prev: Hash,
    /// The last position known good: a checkpoint, a matched head, or the start.
    last_good_mark: i64,
    report: Report,
}

/// Fewer rows than this per thread are checked on one thread (tests use small logs, and
/// check the split with them).
const MIN_ROWS_PER_THREAD: usize = if cfg!(test) { 2 } else { 128 };

/// Threads `verify` checks rows on: one per core, at most 8 (three in unit tests, so that
/// splits are tested on any machine).
pub fn check_threads() -> usize {
    if cfg!(test) {
        return 3;
    }
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(8))
}

fn bad(seq: i64, problem: Problem, detail: impl Into<String>) -> Finding {
    Finding { seq, problem, detail: detail.into() }
}

impl Verifier {
    /// Check the checkpoint and head signatures and prepare to read rows.
    pub fn new(trust: Trust, state: ChainState, witness: Option<SignedHead>) -> Result<Verifier, Finding> {
        let (start, prev) = match &state.checkpoint {
            Some(cp) => {
                if cp.kind != HeadKind::Checkpoint || !cp.verify(&trust.keys) {
                    return Err(bad(
                        cp.seq + 1,
                        Problem::BadSignature { head_seq: cp.seq },
                        format!("the checkpoint at #{} is not signed by a trusted key", cp.seq),
                    ));
                }
                (cp.seq + 1, cp.hash)
            }
            None => (1, GENESIS),
        };
        let mut marks = BTreeMap::new();
        for h in &state.heads {
            if h.seq < start {
                continue;
            }
            if !h.verify(&trust.keys) {
                return Err(bad(
                    h.seq,
                    Problem::BadSignature { head_seq: h.seq },
                    format!("the head signed for #{} does not verify with a trusted key (forged or altered)", h.seq),
                ));
            }
            marks.insert(h.seq, (h.hash, "signed head"));
        }
        if let Some(w) = &witness {
            if !w.verify(&trust.keys) {
                return Err(bad(
                    w.seq,
                    Problem::BadSignature { head_seq: w.seq },
                    format!("the witness head for #{} does not verify with a trusted key", w.seq),
                ));
            }
            if w.seq >= start {
                marks.insert(w.seq, (w.hash, "witness head"));
            } else if w.seq == start - 1 && w.hash != prev {
                return Err(bad(
                    start,
                    Problem::Diverged { head_seq: w.seq },
                    format!("the checkpoint at #{} does not match the witness head", w.seq),
                ));
            }
        }
        let report = Report {
            checkpoint_seq: state.checkpoint.as_ref().map(|c| c.seq),
            macs_checked: trust.mac.is_some(),
            outbox_waiting: state.outbox_waiting,
            outbox_oldest_ms: state.outbox_oldest_ms,
            // A witness at the checkpoint itself was compared above.
            witness_seq: witness.as_ref().map(|w| w.seq).filter(|s| *s == start - 1 && start > 1),
            ..Report::default()
        };
        Ok(Verifier { trust, state, witness, marks, expected: start, prev, last_good_mark: start - 1, report })
    }

    /// The first record number the log should hold.
    pub fn first_expected(&self) -> i64 {
        self.expected
    }

    /// Check the next row.
    pub fn push(&mut self, row: &StoredRow) -> Result<(), Finding> {
        self.push_row(row.as_row())
    }

    /// Check every row of a batch, in order.
    pub fn push_batch(&mut self, batch: &RowBatch) -> Result<(), Finding> {
        self.push_rows(batch.len(), |i| batch.row(i))
    }

    /// Check rows `row(0..n)`, in order, on up to [`check_threads`] threads.
    ///
    /// Each row is checked against the *stored* hash of the row before it. Where every
    /// earlier row passed, that is the hash the chain computed for it, so checking the rows
    /// of a slice independently finds exactly the first bad row that checking them one after
    /// another finds — with the same problem: what follows the first bad row is never
    /// looked at. The signed-head comparisons and the counters run in order afterwards.
    pub fn push_rows<'r>(&mut self, n: usize, row: impl Fn(usize) -> RowRef<'r> + Sync) -> Result<(), Finding> {
        let threads = check_threads().min(n / MIN_ROWS_PER_THREAD).max(1);
        if threads == 1 {
            for i in 0..n {
                self.push_row(row(i))?;
            }
            return Ok(());
        }
        let (start, first_prev) = (self.expected, self.prev);
        let chunk = n.div_ceil(threads);
        let this = &*self;
        let row = &row;
        let check = move |lo: usize| -> (Vec<Hash>, Option<Finding>) {
            let hi = (lo + chunk).min(n);
            let mut hashes = Vec::with_capacity(hi - lo);
            for i in lo..hi {
                let prev = if i == lo && i == 0 {
                    Some(first_prev)
                } else if i == lo {
                    chain::from_hex(row(i - 1).hash)
                } else {
                    hashes.last().copied()
                };
                // A malformed stored hash before the slice is the previous row's own
                // failure, found first; this row's verdict is then never reported.
                let Some(prev) = prev else {
                    return (hashes, Some(bad(start + i as i64, Problem::Edited, "malformed hash before")));
                };
                match this.check_alone(row(i), start + i as i64, &prev) {
                    Ok(h) => hashes.push(h),
                    Err(f) => return (hashes, Some(f)),
                }
            }
            (hashes, None)
        };
        let results: Vec<(Vec<Hash>, Option<Finding>)> = std::thread::scope(|s| {
            let others: Vec<_> = (1..threads).map(|t| s.spawn(move || check(t * chunk))).collect();
            let mut out = vec![check(0)];
            for h in others {
                out.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            out
        });
        for (hashes, finding) in results {
            for h in hashes {
                self.accept(h)?;
            }
            if let Some(f) = finding {
                return Err(f);
            }
        }
        Ok(())
    }

    /// Check the next row.
    pub fn push_row(&mut self, row: RowRef<'_>) -> Result<(), Finding> {
        let computed = self.check_alone(row, self.expected, &self.prev)?;
        self.accept(computed)
    }

    /// Everything about one row that depends only on the row, the number it should carry
    /// and the hash before it: its place, hash, MAC, canonical form and index entries.
    /// Returns its hash.
    fn check_alone(&self, row: RowRef<'_>, seq: i64, prev: &Hash) -> Result<Hash, Finding> {
        if row.seq > seq {
            let detail = if self.state.checkpoint.is_none() && seq == 1 {
                format!("records #1 to #{} are missing (deleted, or pruned without a checkpoint)", row.seq - 1)
            } else if row.seq == seq + 1 {
                format!("record #{seq} is missing (deleted)")
            } else {
                format!("records #{seq} to #{} are missing (deleted)", row.seq - 1)
            };
            return Err(bad(seq, Problem::Missing, detail));
        }
        if row.seq < seq {
            return Err(bad(
                row.seq,
                Problem::Unexpected,
                format!("an extra row numbered #{} (inserted or duplicated)", row.seq),
            ));
        }
        if row.seq > self.state.head_seq {
            return Err(bad(
                seq,
                Problem::Unexpected,
                format!("record #{seq} lies beyond the log's head (#{}): inserted", self.state.head_seq),
            ));
        }
        // Hashes and MACs are compared in their stored form (lower-case hex): any other
        // spelling of the same bytes is a change too.
        let computed = chain::link_hash(prev, row.record.as_bytes());
        if chain::hex32(&computed).as_slice() != row.hash.as_bytes() {
            // Distinguish a record that was moved here from one that was edited.
            let moved = canonical::IndexView::parse(row.record).ok().map(|v| v.seq).filter(|s| *s != seq);
            return Err(match moved {
                Some(other) => bad(
                    seq,
                    Problem::Moved,
                    format!("the row at #{seq} holds record #{other} (records swapped or moved)"),
                ),
                None => bad(seq, Problem::Edited, format!("record #{seq} does not match its hash (edited)")),
            });
        }
        if let Some(key) = &self.trust.mac {
            let want = chain::hex32(&key.mac(&computed));
            let got = row.mac.as_bytes();
            let mac_ok = got.len() == want.len() && want.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if !mac_ok {
                return Err(bad(
                    seq,
                    Problem::Forged,
                    format!("record #{seq} was rewritten and re-hashed: its authentication code does not match"),
                ));
            }
        }
        // The hash (and MAC) vouch for the text; what remains is that the text is a
        // canonical record of this number and that the index entries repeat it faithfully.
        let view = canonical::Indexed::parse(row.record).map_err(|e| {
            bad(seq, Problem::NotCanonical, format!("record #{seq} is not a canonical record ({})", e.0))
        })?;
        if view.seq != seq {
            return Err(bad(seq, Problem::Moved, format!("the row at #{seq} holds record #{} (moved)", view.seq)));
        }
        let index_ok = row.ts == view.t
            && row.interaction == view.interaction.code()
            && row.action == view.interaction.action()
            && row.outcome == view.outcome.code()
            && row.actor.split_once('/') == Some((view.actor_kind.as_ref(), view.actor_id.as_ref()))
            && row.client == view.client.as_deref().unwrap_or("")
            && view.subjects_match(row.subjects());
        if !index_ok {
            return Err(bad(
                seq,
                Problem::IndexMismatch,
                format!("record #{seq}'s index entries (time, action, actor, app or patients) do not match the record"),
            ));
        }
        Ok(computed)
    }

    /// Record a row that passed [`Verifier::check_alone`] as the next one: compare it with
    /// a signed head there, and count it.
    fn accept(&mut self, computed: Hash) -> Result<(), Finding> {
        let seq = self.expected;
        if let Some((want, what)) = self.marks.get(&seq) {
            if *want != computed {
                let from = self.last_good_mark + 1;
                return Err(bad(
                    from,
                    Problem::Diverged { head_seq: seq },
                    format!(
                        "the chain does not reach the {what} signed for #{seq}: records #{from} to #{seq} were rewritten"
                    ),
                ));
            }
            self.report.heads_checked += 1;
            self.last_good_mark = seq;
            if self.witness.as_ref().is_some_and(|w| w.seq == seq) {
                self.report.witness_seq = Some(seq);
            }
        }
        if self.report.records == 0 {
            self.report.first_seq = seq;
        }
        self.report.records += 1;
        self.report.last_seq = seq;
        self.prev = computed;
        self.expected += 1;
        Ok(())
    }

    /// Check that nothing is missing at the end.
    pub fn finish(mut self) -> Result<Report, Finding> {
        let last = self.expected - 1;
        let next = self.expected;
        if let Some(w) = &self.witness {
            if w.seq > last && w.seq > self.state.head_seq {
                return Err(bad(
                    next,
                    Problem::RolledBack { witness_seq: w.seq },
                    format!(
                        "the log ends at #{last} but the witness head says #{} existed: an older copy of the log was restored or it was truncated",
                        w.seq
                    ),
                ));
            }
        }
        if self.state.head_seq > last {
            return Err(bad(
                next,
                Problem::Truncated { expected_last: self.state.head_seq },
                format!("the log ends at #{last} but its head says #{}: records were cut off", self.state.head_seq),
            ));
        }
        if let Some(h) = self.marks.keys().next_back().copied().filter(|s| *s > last) {
            return Err(bad(
                next,
                Problem::Truncated { expected_last: h },
                format!("the log ends at #{last} but a head was signed for #{h}: records were cut off"),
            ));
        }
        let head_hash = chain::from_hex(&self.state.head_hash);
        if self.state.head_seq == last && head_hash != Some(self.prev) {
            return Err(bad(last.max(1), Problem::Edited, format!("the log's head row does not match record #{last}")));
        }
        if self.report.records == 0 {
            self.report.first_seq = 0;
            self.report.last_seq = last.max(0);
        }
        Ok(self.report)
    }
}

/// Verify a whole log held in memory (tests, small logs).
pub fn verify(
    trust: Trust,
    state: ChainState,
    witness: Option<SignedHead>,
    rows: impl IntoIterator<Item = StoredRow>,
) -> Result<Report, Finding> {
    let mut v = Verifier::new(trust, state, witness)?;
    let rows: Vec<StoredRow> = rows.into_iter().collect();
    v.push_rows(rows.len(), |i| rows[i].as_row())?;
    v.finish()
}
