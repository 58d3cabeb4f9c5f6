//! The audit scope of one request: every gate decision lands here the moment it is made,
//! the service describes the interactions it carries out, and at the end the scope yields
//! exactly one record per interaction — those not already written inside a write's own
//! database transaction.
//!
//! An interaction is a *draft* until it is written. Decisions attach to the current draft;
//! a decision made before any draft exists waits and is adopted by the next one, and one
//! that arrives when no open draft is current becomes a record of its own, so no decision
//! is ever dropped.

use crate::record::{Actor, AuditRecord, Entity, EntityRole, Interaction, Outcome};
use std::sync::{Arc, Mutex, MutexGuard};

/// One gate decision, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionNote {
    /// The interaction the decided action corresponds to (used when a decision has no draft).
    pub interaction: Interaction,
    /// Resource type decided on (`*`: every type).
    pub resource_type: String,
    /// `Type/id` or `Type/id/_history/v` when the decision was about one resource.
    pub reference: Option<String>,
    pub patients: Vec<String>,
    pub category: String,
    pub rule: String,
    pub permit: bool,
    pub reason: String,
    /// For a permitted search: the patients the results were confined to.
    pub confined_to: Vec<String>,
}

/// Handle of one interaction within the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot(usize);

#[derive(Debug, Clone)]
struct Draft {
    record: AuditRecord,
    decisions: Vec<DecisionNote>,
    /// The reference the client asked for (used when no decision or result names one).
    requested: Option<String>,
    /// Status for this interaction when it differs from the response's (batch entries).
    status: Option<u16>,
    written: bool,
}

#[derive(Debug, Default)]
struct State {
    request_id: String,
    actor: Actor,
    on_behalf_of: Option<String>,
    client: Option<String>,
    device: Option<String>,
    source: Option<String>,
    purpose: Option<String>,
    drafts: Vec<Draft>,
    current: Option<usize>,
    /// Decisions waiting for a draft.
    loose: Vec<DecisionNote>,
    /// Decisions that arrived after their draft was written.
    stray: Vec<DecisionNote>,
}

/// The request's audit scope. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Scope(Arc<Mutex<State>>);

/// A draft ready to become a record once its write's results are known (built before the
/// write's transaction, completed inside it).
#[derive(Debug, Clone)]
pub struct PendingRecord {
    record: AuditRecord,
    decisions: Vec<DecisionNote>,
    requested: Option<String>,
}

impl PendingRecord {
    /// The record, with the write's status and the version it stored.
    pub fn complete(&self, status: u16, result: Option<Entity>, now_ms: i64) -> AuditRecord {
        let mut r = self.record.clone();
        if let Some(e) = result {
            r.entities.push(e);
        }
        build(r, &self.decisions, self.requested.as_deref(), status, now_ms)
    }
}

impl Scope {
    pub fn new(request_id: &str) -> Scope {
        Scope(Arc::new(Mutex::new(State { request_id: request_id.to_string(), ..State::default() })))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned scope still holds what was recorded; keep using it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request_id(&self) -> String {
        self.lock().request_id.clone()
    }

    /// Who is acting, and for whom, with which app, device and purpose.
    pub fn set_actor(
        &self,
        actor: Actor,
        on_behalf_of: Option<String>,
        client: Option<String>,
        purpose: Option<String>,
    ) {
        let mut s = self.lock();
        s.actor = actor;
        s.on_behalf_of = on_behalf_of;
        s.client = client;
        s.purpose = purpose;
    }

    /// Where the request came from (network address, device or session id).
    pub fn set_origin(&self, source: Option<String>, device: Option<String>) {
        let mut s = self.lock();
        s.source = source;
        s.device = device;
    }

    /// The device the request came from, once the credential named it.
    pub fn set_origin_device(&self, device: Option<String>) {
        self.lock().device = device;
    }

    /// Record a gate decision (called by the gate, before the caller sees the decision).
    pub fn note(&self, d: DecisionNote) {
        let mut s = self.lock();
        match s.current {
            Some(i) if !s.drafts[i].written => s.drafts[i].decisions.push(d),
            Some(_) => s.stray.push(d),
            None => s.loose.push(d),
        }
    }

    /// Start describing an interaction; it becomes current and adopts waiting decisions.
    pub fn begin(&self, interaction: Interaction, resource_type: Option<&str>) -> Slot {
        let mut s = self.lock();
        let mut record = AuditRecord::new(0, "", interaction, Actor::default());
        record.resource_type = resource_type.map(str::to_string);
        let decisions = std::mem::take(&mut s.loose);
        s.drafts.push(Draft { record, decisions, requested: None, status: None, written: false });
        let i = s.drafts.len() - 1;
        s.current = Some(i);
        Slot(i)
    }

    /// Make `slot` current again (a transaction moves between its entries).
    pub fn enter(&self, slot: Slot) {
        self.lock().current = Some(slot.0);
    }

    /// The current open interaction, or a new one of this kind.
    pub fn ensure(&self, interaction: Interaction, resource_type: Option<&str>) -> Slot {
        {
            let s = self.lock();
            if let Some(i) = s.current.filter(|i| !s.drafts[*i].written) {
                return Slot(i);
            }
        }
        self.begin(interaction, resource_type)
    }

    /// Edit the current draft's record (nothing happens when there is none).
    pub fn edit(&self, f: impl FnOnce(&mut AuditRecord)) {
        let mut s = self.lock();
        if let Some(i) = s.current {
            f(&mut s.drafts[i].record);
        }
    }

    /// Note the reference the client asked for in the current draft.
    pub fn requested(&self, reference: String) {
        let mut s = self.lock();
        if let Some(i) = s.current {
            s.drafts[i].requested.get_or_insert(reference);
        }
    }

    /// Snapshot drafts for completion inside a write transaction.
    pub fn pending(&self, slots: &[Slot]) -> Vec<PendingRecord> {
        let s = self.lock();
        slots
            .iter()
            .map(|slot| {
                let d = &s.drafts[slot.0];
                PendingRecord {
                    record: with_meta(&s, d.record.clone()),
                    decisions: d.decisions.clone(),
                    requested: d.requested.clone(),
                }
            })
            .collect()
    }

    /// The drafts' records were committed with their write.
    pub fn mark_written(&self, slots: &[Slot]) {
        let mut s = self.lock();
        for slot in slots {
            s.drafts[slot.0].written = true;
        }
    }

    /// Number of drafts so far (a mark for [`Scope::fail_since`]).
    pub fn mark(&self) -> usize {
        self.lock().drafts.len()
    }

    /// Give every open draft begun since `mark` its own status (a failed batch entry).
    pub fn fail_since(&self, mark: usize, status: u16) {
        let mut s = self.lock();
        for d in s.drafts.iter_mut().skip(mark).filter(|d| !d.written) {
            d.status = Some(status);
        }
    }

    /// Whether anything is waiting to be written.
    pub fn has_pending(&self) -> bool {
        let s = self.lock();
        !s.loose.is_empty() || !s.stray.is_empty() || s.drafts.iter().any(|d| !d.written)
    }

    /// Every record not yet written, for a request answered with `status`; afterwards the
    /// scope holds nothing pending.
    pub fn finish(&self, status: u16, now_ms: i64) -> Vec<AuditRecord> {
        let mut s = self.lock();
        let mut out = Vec::new();
        for i in 0..s.drafts.len() {
            if s.drafts[i].written {
                continue;
            }
            // A written draft is never read again: move its parts out rather than copy them.
            let d = &mut s.drafts[i];
            d.written = true;
            let placeholder = AuditRecord::new(0, "", d.record.interaction, Actor::default());
            let record = std::mem::replace(&mut d.record, placeholder);
            let decisions = std::mem::take(&mut d.decisions);
            let (requested, at) = (d.requested.take(), d.status.unwrap_or(status));
            let rec = with_meta(&s, record);
            out.push(build(rec, &decisions, requested.as_deref(), at, now_ms));
        }
        let mut rest = std::mem::take(&mut s.loose);
        rest.append(&mut s.stray);
        for d in rest {
            let mut rec = with_meta(&s, AuditRecord::new(0, "", d.interaction, Actor::default()));
            rec.resource_type = (d.resource_type != "*").then(|| d.resource_type.clone());
            out.push(build(rec, std::slice::from_ref(&d), None, status, now_ms));
        }
        s.current = None;
        out
    }
}

fn with_meta(s: &State, mut r: AuditRecord) -> AuditRecord {
    r.request_id = s.request_id.clone();
    r.actor = s.actor.clone();
    r.on_behalf_of = s.on_behalf_of.clone();
    r.client = s.client.clone();
    r.device = s.device.clone();
    r.source = s.source.clone();
    r.purpose = s.purpose.clone();
    r
}

/// Strip `/_history/v` from a reference. Not `split("/_history/")`: setting up its
/// substring searcher cost more than the search (~650 instructions a call under callgrind,
/// `bench/audit_instructions.sh`), and a record compares each entity with the others.
fn base_of(reference: &str) -> &str {
    const HISTORY: &[u8] = b"/_history/";
    match reference.as_bytes().windows(HISTORY.len()).position(|w| w == HISTORY) {
        Some(at) => &reference[..at],
        None => reference,
    }
}

/// Finish a draft: outcome from the decisions and the status, rules, reason, patients, and
/// the target entity from the decisions (or the request) when no result named one.
fn build(
    mut r: AuditRecord,
    decisions: &[DecisionNote],
    requested: Option<&str>,
    status: u16,
    now_ms: i64,
) -> AuditRecord {
    r.time_ms = now_ms;
    r.status = status;
    let denied = decisions.iter().find(|d| !d.permit);
    r.outcome = match denied {
        Some(_) => Outcome::Denied,
        None if status < 400 => Outcome::Success,
        None => Outcome::Failed,
    };
    r.reason = denied.map(|d| d.reason.clone());
    for d in decisions {
        r.rules.push(d.rule.clone());
        r.patients.extend(d.patients.iter().cloned());
        r.patients.extend(d.confined_to.iter().cloned());
        if r.resource_type.is_none() && d.resource_type != "*" {
            r.resource_type = Some(d.resource_type.clone());
        }
        if let Some(reference) = &d.reference {
            let base = base_of(reference);
            if !r.entities.iter().any(|e| base_of(&e.reference) == base) {
                r.entities.push(Entity {
                    reference: reference.clone(),
                    role: EntityRole::Target,
                    category: d.category.clone(),
                    patients: d.patients.clone(),
                });
            }
        }
    }
    if let Some(req) = requested {
        if !r.entities.iter().any(|e| base_of(&e.reference) == base_of(req))
            && r.entities.iter().all(|e| e.role != EntityRole::Target)
        {
            r.entities.push(Entity {
                reference: req.to_string(),
                role: EntityRole::Target,
                category: String::new(),
                patients: Vec::new(),
            });
        }
    }
    r.normalise();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(reference: Option<&str>, patient: &str, permit: bool) -> DecisionNote {
        DecisionNote {
            interaction: Interaction::Read,
            resource_type: "Observation".into(),
            reference: reference.map(str::to_string),
            patients: vec![patient.to_string()],
            category: "labs".into(),
            rule: if permit { "operator".into() } else { "outside-compartment".into() },
            permit,
            reason: if permit { "ok".into() } else { "not yours".into() },
            confined_to: vec![],
        }
    }

    fn scope() -> Scope {
        let s = Scope::new("req");
        s.set_actor(Actor::new("operator", "operator"), None, None, None);
        s.set_origin(Some("127.0.0.1".into()), None);
        s
    }

    #[test]
    fn base_of_strips_the_version_part_only() {
        for (reference, base) in [
            ("Observation/o1/_history/2", "Observation/o1"),
            ("Observation/o1", "Observation/o1"),
            ("Observation/o1/_history/", "Observation/o1"),
            ("Observation/o_history/2", "Observation/o_history/2"),
            ("A/b/_history/1/_history/2", "A/b"),
            ("/_history/1", ""),
            ("", ""),
        ] {
            assert_eq!(base_of(reference), base, "{reference}");
            assert_eq!(base_of(reference), reference.split("/_history/").next().unwrap(), "as before: {reference}");
        }
    }

    #[test]
    fn one_read_one_record_with_the_decision() {
        let s = scope();
        s.ensure(Interaction::Read, Some("Observation"));
        s.note(note(Some("Observation/o1/_history/2"), "p1", true));
        let recs = s.finish(200, 5);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!((r.interaction, r.outcome, r.status, r.time_ms), (Interaction::Read, Outcome::Success, 200, 5));
        assert_eq!(r.request_id, "req");
        assert_eq!(r.source.as_deref(), Some("127.0.0.1"));
        assert_eq!(r.entities[0].reference, "Observation/o1/_history/2");
        assert_eq!(r.patients, vec!["p1"]);
        assert_eq!(r.rules, vec!["operator"]);
        assert!(s.finish(200, 6).is_empty(), "nothing is written twice");
    }

    #[test]
    fn a_deny_is_recorded_with_its_reason_even_when_the_answer_is_404() {
        let s = scope();
        s.ensure(Interaction::Read, Some("Observation"));
        s.note(note(Some("Observation/o1/_history/2"), "p2", false));
        let r = &s.finish(404, 0)[0];
        assert_eq!(r.outcome, Outcome::Denied);
        assert_eq!(r.reason.as_deref(), Some("not yours"));
        assert_eq!(r.patients, vec!["p2"]);
    }

    #[test]
    fn early_decisions_are_adopted_and_strays_are_kept() {
        let s = scope();
        s.note(note(None, "p1", true));
        let slot = s.begin(Interaction::Update, Some("Observation"));
        let pending = s.pending(&[slot]);
        let entity = Entity {
            reference: "Observation/o1/_history/3".into(),
            role: EntityRole::Target,
            category: "labs".into(),
            patients: vec!["p1".into()],
        };
        let rec = pending[0].complete(200, Some(entity), 9);
        assert_eq!(rec.rules, vec!["operator"]);
        assert_eq!(rec.entities.len(), 1);
        s.mark_written(&[slot]);
        s.note(note(Some("Observation/o2/_history/1"), "p1", true));
        let rest = s.finish(200, 10);
        assert_eq!(rest.len(), 1, "a decision after the write still yields a record");
        assert_eq!(rest[0].interaction, Interaction::Read);
    }

    #[test]
    fn failed_batch_entries_keep_their_own_status() {
        let s = scope();
        s.begin(Interaction::Create, Some("Patient"));
        let m = s.mark();
        s.begin(Interaction::Create, Some("Patient"));
        s.fail_since(m, 400);
        let recs = s.finish(200, 0);
        assert_eq!(
            recs.iter().map(|r| (r.status, r.outcome)).collect::<Vec<_>>(),
            vec![(200, Outcome::Success), (400, Outcome::Failed)]
        );
    }

    #[test]
    fn a_request_for_something_absent_names_what_was_asked() {
        let s = scope();
        s.ensure(Interaction::Read, Some("Patient"));
        s.requested("Patient/nope".into());
        let r = &s.finish(404, 0)[0];
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(r.entities[0].reference, "Patient/nope");
    }
}
