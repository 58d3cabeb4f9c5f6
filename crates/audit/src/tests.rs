//! Every tampering case against an in-memory log shaped exactly like the stored one.

use crate::chain::{self, Chainer, GENESIS, Hash};
use crate::head::{HeadKind, SignedHead};
use crate::keys::AuditKey;
use crate::record::{Actor, AuditRecord, Entity, EntityRole, Interaction};
use crate::verify::{ChainState, Problem, StoredRow, Trust, verify};
use proptest::prelude::*;

/// A log as the store would hold it, with the key that wrote it.
struct Log {
    key: AuditKey,
    rows: Vec<StoredRow>,
    state: ChainState,
    start_hash: Hash,
}

fn record(i: i64) -> AuditRecord {
    let interaction = Interaction::ALL[(i as usize) % Interaction::ALL.len()];
    let mut r = AuditRecord::new(
        1_700_000_000_000 + i * 1000,
        &format!("req-{i}"),
        interaction,
        Actor::new("operator", "operator"),
    );
    r.resource_type = Some("Observation".into());
    r.entities.push(Entity {
        reference: format!("Observation/o{i}/_history/1"),
        role: EntityRole::Target,
        category: "labs".into(),
        patients: vec![format!("p{}", i % 3)],
    });
    r.rules.push("operator".into());
    r.normalise();
    r
}

fn row(link: &chain::Link, r: &AuditRecord) -> StoredRow {
    StoredRow {
        seq: link.seq,
        ts: r.time_ms,
        interaction: r.interaction.code().into(),
        action: r.interaction.action().into(),
        outcome: r.outcome.code().into(),
        actor: r.actor.key(),
        client: r.client.clone().unwrap_or_default(),
        record: link.canonical.clone(),
        hash: chain::to_hex(&link.hash),
        mac: hex::encode(link.mac),
        subjects: r.subjects(),
    }
}

impl Log {
    /// `n` records, a signed head every `head_every` records.
    fn new(n: i64, head_every: i64) -> Log {
        let mut log = Log {
            key: AuditKey::from_seed(&[42; 32]),
            rows: Vec::new(),
            state: ChainState::default(),
            start_hash: GENESIS,
        };
        log.state.head_hash = chain::to_hex(&GENESIS);
        log.append(n, head_every, 0);
        log
    }

    fn append(&mut self, n: i64, head_every: i64, salt: i64) {
        let chainer = Chainer::new(self.key.mac_key());
        let mut prev = chain::from_hex(&self.state.head_hash).unwrap();
        for _ in 0..n {
            let seq = self.state.head_seq + 1;
            let mut r = record(seq);
            r.request_id = format!("req-{seq}-{salt}");
            let link = chainer.link(&prev, seq, &r);
            self.rows.push(row(&link, &r));
            prev = link.hash;
            self.state.head_seq = seq;
            self.state.head_hash = chain::to_hex(&prev);
            if head_every > 0 && seq % head_every == 0 {
                self.state.heads.push(SignedHead::sign(&self.key, HeadKind::Head, seq, prev, seq));
            }
        }
    }

    fn trust(&self) -> Trust {
        Trust { keys: vec![self.key.public()], mac: Some(self.key.mac_key()) }
    }

    fn witness(&self) -> SignedHead {
        SignedHead::sign(
            &self.key,
            HeadKind::Head,
            self.state.head_seq,
            chain::from_hex(&self.state.head_hash).unwrap(),
            0,
        )
    }

    fn verify(&self, witness: Option<SignedHead>) -> Result<crate::Report, crate::Finding> {
        verify(self.trust(), self.state.clone(), witness, self.rows.clone())
    }

    fn verify_public_only(&self, witness: Option<SignedHead>) -> Result<crate::Report, crate::Finding> {
        let trust = Trust { keys: vec![self.key.public()], mac: None };
        verify(trust, self.state.clone(), witness, self.rows.clone())
    }

    /// Recompute every hash from row index `from` (what an attacker does after an edit);
    /// with `key`, MACs too; the head row follows.
    fn rehash_from(&mut self, from: usize, key: Option<&AuditKey>) {
        let mut prev = if from == 0 { self.start_hash } else { chain::from_hex(&self.rows[from - 1].hash).unwrap() };
        for r in &mut self.rows[from..] {
            let h = chain::link_hash(&prev, r.record.as_bytes());
            r.hash = chain::to_hex(&h);
            if let Some(k) = key {
                r.mac = hex::encode(k.mac_key().mac(&h));
            }
            prev = h;
        }
        self.state.head_hash = chain::to_hex(&prev);
    }

    /// Edit a record's content in place, keeping it canonical (a different request id).
    fn edit(&mut self, idx: usize) {
        let r = &mut self.rows[idx];
        r.record = r.record.replace("\"rid\":\"req-", "\"rid\":\"rEq-");
    }
}

#[test]
fn an_intact_log_verifies_with_heads_and_witness() {
    let log = Log::new(20, 5);
    let report = log.verify(Some(log.witness())).unwrap();
    assert_eq!((report.records, report.first_seq, report.last_seq), (20, 1, 20));
    assert_eq!(report.heads_checked, 4);
    assert_eq!(report.witness_seq, Some(20));
    assert!(report.macs_checked);
    assert!(log.verify_public_only(None).is_ok());
}

#[test]
fn an_empty_log_verifies() {
    let log = Log::new(0, 5);
    let report = log.verify(Some(log.witness())).unwrap();
    assert_eq!(report.records, 0);
}

#[test]
fn an_edited_record_is_named() {
    let mut log = Log::new(20, 5);
    log.edit(6);
    let f = log.verify(None).unwrap_err();
    assert_eq!((f.seq, f.problem.clone()), (7, Problem::Edited), "{f}");
    assert!(f.to_string().starts_with("first bad record: #7"));
}

#[test]
fn an_edited_hash_is_named() {
    let mut log = Log::new(20, 5);
    log.rows[9].hash = chain::to_hex(&[1; 32]);
    assert_eq!(log.verify(None).unwrap_err().seq, 10);
}

#[test]
fn a_deleted_record_is_named() {
    let mut log = Log::new(20, 5);
    log.rows.remove(11);
    let f = log.verify(None).unwrap_err();
    assert_eq!((f.seq, f.problem), (12, Problem::Missing));
    let mut log = Log::new(20, 5);
    log.rows.remove(0);
    assert_eq!(log.verify(None).unwrap_err().seq, 1);
}

#[test]
fn swapped_records_are_named() {
    let mut log = Log::new(20, 5);
    // Swap whole rows but keep each position's number: the content moves.
    let (a, b) = (log.rows[3].clone(), log.rows[4].clone());
    log.rows[3] = StoredRow { seq: 4, ..b };
    log.rows[4] = StoredRow { seq: 5, ..a };
    let f = log.verify(None).unwrap_err();
    assert_eq!((f.seq, f.problem), (4, Problem::Moved), "{f}");
}

#[test]
fn an_inserted_record_is_named_even_when_the_chain_is_recomputed() {
    let mut log = Log::new(20, 0);
    // A forged record at #8, the rest renumbered, without rehashing.
    let mut forged = log.rows[7].clone();
    forged.record = forged.record.replace("\"rid\":\"req-", "\"rid\":\"fake-");
    log.rows.insert(7, forged);
    for (i, r) in log.rows.iter_mut().enumerate() {
        r.seq = i as i64 + 1;
    }
    log.state.head_seq = 21;
    assert_eq!(log.verify(None).unwrap_err().seq, 8);
    // Rehashed (the attacker has no key): the MAC names the forged record.
    let mut log2 = Log::new(20, 0);
    let mut r = record(8);
    r.request_id = "fake".into();
    let link = Chainer::new(AuditKey::from_seed(&[1; 32]).mac_key()).link(
        &chain::from_hex(&log2.rows[6].hash).unwrap(),
        8,
        &r,
    );
    log2.rows.insert(7, row(&link, &r));
    for r in log2.rows.iter_mut().skip(8) {
        r.seq += 1;
    }
    log2.rehash_from(8, None);
    log2.state.head_seq = 21;
    let f = log2.verify(None).unwrap_err();
    assert_eq!((f.seq, f.problem), (8, Problem::Forged), "{f}");
}

#[test]
fn a_rewritten_and_rehashed_record_is_named_by_its_mac() {
    let mut log = Log::new(20, 5);
    log.edit(12);
    log.rehash_from(12, None);
    let f = log.verify(None).unwrap_err();
    assert_eq!((f.seq, f.problem), (13, Problem::Forged), "{f}");
}

#[test]
fn a_rewrite_by_someone_with_the_key_is_caught_by_the_signed_heads() {
    let mut log = Log::new(20, 5);
    let key = AuditKey::from_seed(&[42; 32]);
    log.edit(12);
    log.rehash_from(12, Some(&key));
    // MACs match now; the database heads at #15 and #20 no longer do.
    let f = log.verify(None).unwrap_err();
    assert_eq!((f.seq, f.problem.clone()), (11, Problem::Diverged { head_seq: 15 }), "{f}");
    assert!(f.seq <= 13);
    // The attacker re-signs the database heads too: the witness outside still catches it.
    let witness = Log::new(20, 5).witness();
    let mut log = Log::new(20, 5);
    log.edit(12);
    log.rehash_from(12, Some(&key));
    log.state.heads.clear();
    let f = log.verify(Some(witness.clone())).unwrap_err();
    assert_eq!(f.problem, Problem::Diverged { head_seq: 20 });
    assert!(f.seq <= 13);
    // Without heads or witness nothing can tell (documented limit of a stolen key).
    assert!(log.verify(None).is_ok());
}

#[test]
fn a_truncated_log_is_caught_by_its_head_row_heads_or_witness() {
    let mut log = Log::new(20, 5);
    let witness = log.witness();
    log.rows.truncate(17);
    let f = log.verify(None).unwrap_err();
    assert_eq!((f.seq, f.problem), (18, Problem::Truncated { expected_last: 20 }), "{f}");
    // The head row rewritten to match: the signed head for #20 remains.
    log.state.head_seq = 17;
    log.state.head_hash = log.rows[16].hash.clone();
    let f = log.verify(None).unwrap_err();
    assert_eq!((f.seq, f.problem), (18, Problem::Truncated { expected_last: 20 }));
    // Signed heads deleted too: the witness outside the data directory remains.
    log.state.heads.retain(|h| h.seq <= 17);
    let f = log.verify(Some(witness)).unwrap_err();
    assert_eq!((f.seq, f.problem), (18, Problem::RolledBack { witness_seq: 20 }), "{f}");
}

#[test]
fn a_restored_old_backup_is_caught_by_the_witness() {
    let log = Log::new(30, 10);
    let witness = log.witness();
    let mut old = Log::new(20, 10);
    let f = old.verify(Some(witness.clone())).unwrap_err();
    assert_eq!((f.seq, f.problem), (21, Problem::RolledBack { witness_seq: 30 }), "{f}");
    // The restored copy kept being written to: it forked from the witnessed chain.
    old.append(15, 10, 1);
    let f = old.verify(Some(witness)).unwrap_err();
    assert_eq!(f.problem, Problem::Diverged { head_seq: 30 });
    assert_eq!(f.seq, 21);
}

#[test]
fn tampered_index_columns_are_named() {
    let mut log = Log::new(10, 0);
    log.rows[4].subjects.clear();
    let f = log.verify(None).unwrap_err();
    assert_eq!((f.seq, f.problem), (5, Problem::IndexMismatch));
    let mut log = Log::new(10, 0);
    log.rows[2].ts += 1;
    assert_eq!(log.verify(None).unwrap_err().seq, 3);
    let mut log = Log::new(10, 0);
    log.rows[1].actor = "patient/p1".into();
    assert_eq!(log.verify(None).unwrap_err().seq, 2);
}

#[test]
fn rows_beyond_the_head_are_named() {
    let mut log = Log::new(10, 0);
    log.state.head_seq = 8;
    log.state.head_hash = log.rows[7].hash.clone();
    let f = log.verify(None).unwrap_err();
    assert_eq!((f.seq, f.problem), (9, Problem::Unexpected));
}

#[test]
fn forged_heads_and_witnesses_are_refused() {
    let mut log = Log::new(10, 5);
    let other = AuditKey::from_seed(&[7; 32]);
    log.state.heads.push(SignedHead::sign(&other, HeadKind::Head, 10, [0; 32], 0));
    let f = log.verify(None).unwrap_err();
    assert_eq!(f.problem, Problem::BadSignature { head_seq: 10 });
    let log = Log::new(10, 5);
    let w = SignedHead::sign(&other, HeadKind::Head, 10, chain::from_hex(&log.state.head_hash).unwrap(), 0);
    assert_eq!(log.verify(Some(w)).unwrap_err().problem, Problem::BadSignature { head_seq: 10 });
}

#[test]
fn a_pruned_log_verifies_from_its_checkpoint_and_not_without_it() {
    let mut log = Log::new(20, 5);
    let witness = log.witness();
    let cut = 10;
    let cp_hash = chain::from_hex(&log.rows[cut - 1].hash).unwrap();
    log.rows.drain(..cut);
    log.state.heads.retain(|h| h.seq > cut as i64);
    log.state.checkpoint = Some(SignedHead::sign(&log.key, HeadKind::Checkpoint, cut as i64, cp_hash, 0));
    log.start_hash = cp_hash;
    let report = log.verify(Some(witness.clone())).unwrap();
    assert_eq!((report.records, report.first_seq, report.checkpoint_seq), (10, 11, Some(10)));
    // A checkpoint signed by someone else is refused.
    let mut forged = log.state.clone();
    forged.checkpoint = Some(SignedHead::sign(&AuditKey::from_seed(&[3; 32]), HeadKind::Checkpoint, 10, cp_hash, 0));
    assert!(matches!(
        verify(log.trust(), forged, None, log.rows.clone()).unwrap_err().problem,
        Problem::BadSignature { .. }
    ));
    // Pruned records and no checkpoint: the gap at #1 is named.
    log.state.checkpoint = None;
    let f = log.verify(None).unwrap_err();
    assert_eq!((f.seq, f.problem), (1, Problem::Missing));
    // A head of kind "head" cannot stand in for a checkpoint.
    log.state.checkpoint = Some(SignedHead::sign(&log.key, HeadKind::Head, cut as i64, cp_hash, 0));
    assert!(log.verify(None).is_err());
}

/// Which stored field a single-byte change hits.
fn mutate(rows: &mut [StoredRow], which: usize, field: usize, pos: usize, byte: u8) -> bool {
    let r = &mut rows[which];
    let s = match field {
        0 => &mut r.record,
        1 => &mut r.hash,
        2 => &mut r.mac,
        _ => &mut r.actor,
    };
    let mut bytes = s.clone().into_bytes();
    if bytes.is_empty() {
        return false;
    }
    let p = pos % bytes.len();
    if bytes[p] == byte {
        return false;
    }
    bytes[p] = byte;
    match String::from_utf8(bytes) {
        Ok(t) => {
            *s = t;
            true
        }
        Err(_) => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Any single-byte change anywhere in any stored record is detected, and the finding
    /// names that record or an earlier one.
    #[test]
    fn any_single_byte_change_is_detected(which in 0usize..12, field in 0usize..4, pos in any::<usize>(), byte in 0x20u8..0x7f) {
        let mut log = Log::new(12, 4);
        prop_assume!(mutate(&mut log.rows, which, field, pos, byte));
        let f = log.verify(Some(log.witness()));
        prop_assert!(f.is_err());
        prop_assert!(f.unwrap_err().seq <= which as i64 + 1);
    }
}

/// The log checked one row at a time, never split across threads.
fn verify_one_by_one(log: &Log, witness: Option<SignedHead>) -> Result<crate::Report, crate::Finding> {
    let mut v = crate::Verifier::new(log.trust(), log.state.clone(), witness)?;
    for r in &log.rows {
        v.push(r)?;
    }
    v.finish()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Checking slices of rows on several threads (each against the stored hash before it)
    /// names the same first bad record, with the same problem and words, as checking them in
    /// turn — whatever was changed, deleted, moved or rehashed, and wherever the slices split.
    #[test]
    fn threaded_checks_find_what_sequential_checks_find(
        n in 0i64..40, heads in 0i64..8, which in any::<usize>(), what in 0usize..7,
        field in 0usize..4, pos in any::<usize>(), byte in 0x20u8..0x7f,
    ) {
        let mut log = Log::new(n, heads);
        let witness = log.witness();
        if !log.rows.is_empty() {
            let i = which % log.rows.len();
            match what {
                0 => { mutate(&mut log.rows, i, field, pos, byte); }
                1 => { log.rows.remove(i); }
                2 if i + 1 < log.rows.len() => log.rows.swap(i, i + 1),
                3 => { log.edit(i); log.rehash_from(i, None); }
                4 => { let k = AuditKey::from_seed(&[42; 32]); log.edit(i); log.rehash_from(i, Some(&k)); }
                5 => log.rows[i].hash = "zz".into(),
                _ => { log.rows.truncate(i); }
            }
        }
        prop_assert_eq!(log.verify(Some(witness.clone())), verify_one_by_one(&log, Some(witness)));
        prop_assert_eq!(log.verify(None), verify_one_by_one(&log, None));
    }
}
