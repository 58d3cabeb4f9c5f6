//! The pure decision function. Deny by default: a request is permitted only when a rule
//! below names why. Every rule id is listed in [`RULES`].
//!
//! # API
//!
//! * [`evaluate_with`]`(ctx, rules, action, facts) -> Verdict`: the decision under the
//!   operator rules `rules` ([`crate::OperatorRules`]); [`evaluate`] uses the builtin rules.
//!   For one resource (read, vread, instance history, and each image of a write) the verdict
//!   is permit or deny for exactly these facts. For a type-level search, history or
//!   `$everything` (`facts.id` is `None`) a permit carries what the store must apply in SQL:
//!   [`Verdict::compartments`], [`Verdict::limits`] (SMART scopes) and [`Verdict::filter`]
//!   (consents and operator rules; see [`crate::filter`]) — so that a search admits exactly
//!   the resources a read of each would permit.
//! * A verdict names the rule that decided ([`Verdict::rule`], stable ids in [`RULES`]), the
//!   consents that decided ([`Verdict::consents`]: ids), what the server must do to what it
//!   returns ([`Verdict::obligations`]) and a plain-language sentence ([`Verdict::reason`],
//!   the same text [`crate::explain::decision`] renders for the requester).
//!
//! # Order of the rules
//!
//! 1. `audit-append-only`: no write of an AuditEvent, by anyone.
//! 2. The principal's own rule:
//!    * the operator is unconfined;
//!    * a **patient** stays in their own compartment (`ctx.acting_for`, when set, must be
//!      themself) and never deletes; the operator's *results hold* withholds new lab and
//!      imaging results they did not enter themselves (`results-hold`);
//!    * a **caregiver** acts for one patient (`ctx.acting_for`) they are linked to (their
//!      `patients`, or `PatientFacts::proxies`) and within that compartment sees: the
//!      patient's own `Patient` resource (`proxy-linked-patient`), and whatever an active
//!      consent of the patient permits their RelatedPerson (`proxy-consent`) — minus the
//!      patient's deny provisions (`consent-deny`), adolescent confidentiality
//!      (`adolescent-confidentiality`), the results hold (`results-hold`) and Part 2
//!      (`part2-consent-required`). Writes need a consent permitting the action `correct`;
//!      never delete. Consents given before the patient came of age stop counting at
//!      majority (`proxy-minor-access-ended`);
//!    * a **clinician** acts for one patient (`ctx.acting_for`): with a care relationship
//!      (`PatientFacts::care_team`) and purpose `TREAT` (the default) they see the chart
//!      (`care-relationship`) minus the patient's deny provisions and Part 2 records no
//!      consent names; without one, only what a consent naming their Practitioner permits
//!      (`clinician-consent`). Purpose `ETREAT` with a stated reason is break-the-glass
//!      (`break-the-glass`, obligation `Flag`), for the operator's window, overriding
//!      denies. Clinicians do not write;
//!    * administrators have no clinical access; a backend service acts only through its
//!      `system/` scopes, unconfined by compartment (operator rules do not bind it: the
//!      operator registered it).
//! 3. App scopes (`ctx.scopes` is `Some`): they narrow a permit and never widen it. Patients,
//!    caregivers and clinicians use `patient/` and `user/` scopes, backend services
//!    `system/`, the operator any. One resource: [`ScopeSet::permits`] with the resource's
//!    category codings (`outside-scopes` otherwise). A type-level search, history or
//!    `$everything`: [`ScopeSet::search_limits`] becomes [`Verdict::limits`]. A permit under
//!    scopes keeps the principal's rule id. See [`crate::scopes`] for which letter each
//!    action needs.

use crate::consent::{ActorKind, ConsentRecord, ProvisionKind};
use crate::context::{Action, PatientFacts, Principal, RequestContext, ResourceFacts};
use crate::explain::{self, Audience};
use crate::filter::{Clause, DataSet, Match, SearchFilter, clause_admits, is_reference_to};
use crate::obligation::Obligation;
use crate::rules::{Adolescent, OperatorRules, Part2, ResultsHold};
use crate::scopes::{ScopeContext, ScopeSet, type_noun};
use crate::walk::{Access, Asker, Ids, PathInfo, unless, walk};
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Permit,
    Deny,
}

/// The engine's answer, with the rule that decided and a sentence a patient can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub effect: Effect,
    /// Stable identifier of the rule that decided (for audit and explanation): the reason
    /// code.
    pub rule: &'static str,
    /// The decision in plain language, addressed to the requester.
    pub reason: String,
    /// For a permitted search: the patient compartments the results are confined to
    /// (`None` = not confined, e.g. the operator).
    pub compartments: Option<Vec<String>>,
    /// For a permitted search under app scopes: the types and categories results must
    /// have (`None` = no app scopes apply).
    pub limits: Option<Vec<crate::scopes::TypeLimit>>,
    /// Ids of the consents that decided: for a permit the consents whose provisions
    /// permitted, for a deny those whose deny provisions withheld; for a search every
    /// consent that contributed a clause to [`Verdict::filter`].
    pub consents: Vec<String>,
    /// What the server must do with what it returns (redactions, flags).
    pub obligations: Vec<Obligation>,
    /// For a permitted search: the consent and operator-rule filter the store applies in
    /// SQL besides compartments and limits (`None`: nothing more).
    pub filter: Option<SearchFilter>,
}

impl Verdict {
    pub(crate) fn permit(rule: &'static str, reason: impl Into<String>, compartments: Option<Vec<String>>) -> Self {
        Verdict {
            effect: Effect::Permit,
            rule,
            reason: reason.into(),
            compartments,
            limits: None,
            consents: Vec::new(),
            obligations: Vec::new(),
            filter: None,
        }
    }
    pub(crate) fn deny(rule: &'static str, reason: impl Into<String>) -> Self {
        Verdict {
            effect: Effect::Deny,
            rule,
            reason: reason.into(),
            compartments: None,
            limits: None,
            consents: Vec::new(),
            obligations: Vec::new(),
            filter: None,
        }
    }
    fn with_consents(mut self, consents: Vec<String>) -> Self {
        self.consents = consents;
        self
    }
    fn with_obligations(mut self, obligations: Vec<Obligation>) -> Self {
        self.obligations = obligations;
        self
    }
    fn with_filter(mut self, filter: SearchFilter) -> Self {
        self.filter = (!filter.is_unrestricted()).then_some(filter);
        self
    }
    pub fn is_permit(&self) -> bool {
        self.effect == Effect::Permit
    }
}

/// Every rule the engine decides by, with what it means; the ids are stable (they are stored
/// in audit records and shown as `urn:portico:rule:<id>`).
pub const RULES: &[(&str, &str)] = &[
    ("audit-append-only", "deny: nobody writes AuditEvents through the API"),
    ("no-principal", "deny: nobody is signed in"),
    ("operator", "permit: the operator holds unconfined access (app scopes still apply)"),
    ("patient-own-compartment", "permit: a patient acting on their own chart"),
    ("patient-no-delete", "deny: patients never delete"),
    ("patient-acts-for-self", "deny: a patient's request named another patient to act for"),
    ("outside-compartment", "deny: the resource is not in the acted-for patient's compartment"),
    ("results-hold", "deny: a new lab or imaging result held for clinician review (operator rule)"),
    ("proxy-linked-patient", "permit: a caregiver reading the Patient resource of the patient they are linked to"),
    ("proxy-consent", "permit: a caregiver within an active consent of the patient naming their RelatedPerson"),
    ("proxy-no-consent", "deny: no active consent of the patient permits this caregiver this record"),
    ("proxy-not-linked", "deny: a caregiver acting for nobody, or for a patient they are not linked to"),
    ("proxy-read-only", "deny: caregivers never delete, and change records only where a consent permits 'correct'"),
    (
        "proxy-minor-access-ended",
        "deny: consents given while the patient was a minor ended at majority (operator rule)",
    ),
    ("adolescent-confidentiality", "deny: sensitive records of an adolescent hidden from caregivers (operator rule)"),
    ("part2-consent-required", "deny: substance-use records need a consent naming them (42 CFR Part 2, operator rule)"),
    ("consent-deny", "deny: a deny provision of the patient's consent withholds this record"),
    ("care-relationship", "permit: a clinician with a care relationship, for treatment"),
    ("clinician-consent", "permit: a clinician within an active consent of the patient naming their Practitioner"),
    ("care-relationship-required", "deny: a clinician without a care relationship or a consent naming them"),
    ("purpose-not-permitted", "deny: a clinician's declared purpose is not treatment and no consent permits it"),
    ("clinician-read-only", "deny: clinicians do not change records through portico"),
    ("break-the-glass", "permit: emergency access (ETREAT) with a stated reason, time-boxed, flagged"),
    ("break-the-glass-reason-required", "deny: emergency access without a stated reason"),
    ("break-the-glass-expired", "deny: emergency access outside its time box"),
    ("break-the-glass-unavailable", "deny: emergency access is switched off by the operator"),
    ("admin-no-clinical-access", "deny: administrators have no clinical access"),
    ("system-scopes", "permit: a backend service within its system/ scopes"),
    ("system-scopes-required", "deny: a backend service without granted scopes"),
    ("outside-scopes", "deny: the app's scopes do not grant this action on this type or category"),
    ("step-up-fresh", "permit: a sensitive action after a fresh step-up verification"),
    ("step-up-required", "deny: a sensitive action without a fresh step-up verification"),
];

/// Scope contexts an app acting for a user may use.
const USER_CONTEXTS: &[ScopeContext] = &[ScopeContext::Patient, ScopeContext::User];
/// Scope contexts a backend service may use.
const SYSTEM_CONTEXTS: &[ScopeContext] = &[ScopeContext::System];
/// Scope contexts of an operator token issued for an app: any.
const ANY_CONTEXT: &[ScopeContext] = &[ScopeContext::Patient, ScopeContext::User, ScopeContext::System];

/// How far a break-the-glass start may lie in the future (clock skew between processes).
const BREAK_GLASS_SKEW_MS: i64 = 5_000;

/// Decide one action on one resource (or a type, for searches) under the builtin operator
/// rules. See [`evaluate_with`].
pub fn evaluate(ctx: &RequestContext, action: Action, facts: &ResourceFacts) -> Verdict {
    evaluate_with(ctx, OperatorRules::builtin(), action, facts)
}

/// Decide one action on one resource (or a type, for searches) under `rules`.
///
/// First the principal's own rule (who may touch what at all, consents and operator rules
/// included), then — when the request came through an app (`ctx.scopes` is `Some`) — the
/// app's SMART scopes narrow that permit: they never widen it.
pub fn evaluate_with(ctx: &RequestContext, rules: &OperatorRules, action: Action, facts: &ResourceFacts) -> Verdict {
    let (verdict, contexts) = principal_rule(ctx, rules, action, facts);
    match &ctx.scopes {
        Some(scopes) if verdict.is_permit() => within_scopes(verdict, scopes, contexts, action, facts),
        _ => verdict,
    }
}

/// The principal's own rule, before app scopes narrow it (the gate uses it for the filter
/// of an instance history, whose scopes it applies separately).
pub(crate) fn principal_verdict(
    ctx: &RequestContext,
    rules: &OperatorRules,
    action: Action,
    facts: &ResourceFacts,
) -> Verdict {
    principal_rule(ctx, rules, action, facts).0
}

fn principal_rule(
    ctx: &RequestContext,
    rules: &OperatorRules,
    action: Action,
    facts: &ResourceFacts,
) -> (Verdict, &'static [ScopeContext]) {
    // The audit trail is written by the server only, never through the API — not even by
    // the operator.
    if action.is_write() && facts.resource_type == "AuditEvent" {
        return (Verdict::deny("audit-append-only", "The audit trail cannot be changed through the API."), &[]);
    }
    match &ctx.principal {
        Principal::Anonymous => (Verdict::deny("no-principal", "Nobody is signed in, so nothing can be shown."), &[]),
        Principal::Operator => (
            Verdict::permit("operator", "The server operator holds administrative access to all records.", None),
            ANY_CONTEXT,
        ),
        Principal::Patient { patient } => {
            if ctx.acting_for.as_deref().is_some_and(|a| a != patient) {
                return (Verdict::deny("patient-acts-for-self", "You can only act for yourself."), &[]);
            }
            (evaluate_patient(ctx, rules, patient, action, facts), USER_CONTEXTS)
        }
        Principal::Caregiver { patients, .. } => {
            (evaluate_caregiver(ctx, rules, patients, action, facts), USER_CONTEXTS)
        }
        Principal::Clinician { practitioner, .. } => {
            (evaluate_clinician(ctx, rules, practitioner, action, facts), USER_CONTEXTS)
        }
        Principal::Admin { .. } => (
            Verdict::deny(
                "admin-no-clinical-access",
                "Administrator accounts manage portico; they cannot see clinical records.",
            ),
            &[],
        ),
        Principal::System { .. } if ctx.scopes.is_none() => (
            Verdict::deny(
                "system-scopes-required",
                "This backend service was granted no scopes, so it cannot reach any records.",
            ),
            &[],
        ),
        Principal::System { .. } => (
            Verdict::permit("system-scopes", "The backend service was granted system access to these records.", None),
            SYSTEM_CONTEXTS,
        ),
    }
}

/// Whether the action addresses a type (or every type) rather than one resource.
fn is_type_level(action: Action, facts: &ResourceFacts) -> bool {
    facts.id.is_none() && matches!(action, Action::Search | Action::History | Action::Everything)
}

/// A deny whose sentence comes from [`explain`], from the same facts and rules.
fn deny_explained(rule: &'static str, facts: &ResourceFacts, rules: &OperatorRules) -> Verdict {
    Verdict::deny(rule, explain::denial(rule, facts, rules, Audience::Requester))
}

// ---- operator rules --------------------------------------------------------------------------

/// Authors whose own results are never held from this request: the patient, and the
/// caregiver's RelatedPerson(s).
struct Exempt<'a> {
    patient: &'a str,
    proxies: &'a [String],
}

impl Exempt<'_> {
    fn covers(&self, author: Option<&str>) -> bool {
        author.is_some_and(|a| {
            is_reference_to(a, "Patient", self.patient)
                || self.proxies.iter().any(|r| is_reference_to(a, "RelatedPerson", r))
        })
    }
    fn references(&self) -> Vec<String> {
        std::iter::once(format!("Patient/{}", self.patient))
            .chain(self.proxies.iter().map(|r| format!("RelatedPerson/{r}")))
            .collect()
    }
}

/// Whether the results hold withholds `f` from a patient or caregiver now.
fn held(hold: &ResultsHold, f: &ResourceFacts, now: i64, exempt: &Exempt) -> bool {
    hold.scope.admits(f) && hold.range(now).admits(f.date_ms) && !exempt.covers(f.author.as_deref())
}

/// The results hold as a search exclusion (the same test as [`held`]).
fn hold_clause(hold: &ResultsHold, now: i64, exempt: &Exempt) -> Clause {
    Clause {
        when: vec![hold.scope.clone(), Arc::new(Match { date: Some(hold.range(now)), ..Match::default() })],
        unless: vec![Arc::new(Match {
            data: Some(DataSet { references: Vec::new(), authors: exempt.references() }),
            ..Match::default()
        })],
    }
}

/// The adolescent rule, if it applies to this patient now.
fn adolescent<'r>(rules: &'r OperatorRules, pf: Option<&PatientFacts>, now: i64) -> Option<&'r Adolescent> {
    let a = rules.adolescent.as_ref()?;
    let (youngest, oldest) = pf?.birth_date?.age_bounds(now);
    (oldest >= a.from_age && youngest <= a.to_age).then_some(a)
}

/// Consents given before this instant no longer count for caregivers (the patient came of
/// age); `None` when the rule does not apply.
fn majority_cutoff(rules: &OperatorRules, pf: Option<&PatientFacts>, now: i64) -> Option<i64> {
    let age = rules.proxy_end_age?;
    let at = pf?.birth_date?.latest_birthday_ms(age);
    (now >= at).then_some(at)
}

/// The consents of `patient` in force now (and, for caregivers, not lapsed at majority).
fn in_force<'p>(
    pf: Option<&'p PatientFacts>,
    patient: &'p str,
    now: i64,
    given_after: Option<i64>,
) -> impl Iterator<Item = &'p ConsentRecord> + 'p {
    pf.into_iter().flat_map(|p| p.consents.iter()).map(|c| &**c).filter(move |c| {
        c.patient == patient && c.in_force(now) && given_after.is_none_or(|cut| c.given_ms().is_none_or(|g| g >= cut))
    })
}

fn push_id(ids: &mut Vec<String>, id: &str) {
    if !ids.iter().any(|x| x == id) {
        ids.push(id.to_string());
    }
}

/// Clause for a deciding provision: its path, minus its applicable children, minus Part 2
/// records unless the path names them.
fn clause(path: &[&Arc<Match>], node: &crate::consent::Provision, a: &Asker, part2_unless: Option<&Part2>) -> Clause {
    let mut unless: Vec<Arc<Match>> = unless(node, a).cloned().collect();
    if let Some(p) = part2_unless {
        unless.push(p.matcher.clone());
    }
    // A criteria-free match on the path admits everything: leave it out.
    Clause { when: path.iter().filter(|m| !m.is_empty()).map(|m| Arc::clone(m)).collect(), unless }
}

/// Per-resource result of walking the consents for one requester.
#[derive(Default)]
struct Scan {
    /// Consents with a deny provision withholding the resource.
    denied: Vec<String>,
    /// Consents with a permit naming the requester that admits the resource (Part 2 met).
    permitted: Vec<String>,
    /// Consents with a permit that names Part 2 records and admits the resource (any actor).
    part2_named: Vec<String>,
    /// A named permit admitted the resource but Part 2 stopped it.
    part2_blocked: bool,
    /// A named permit admitted the resource, but not for writing (`correct` missing).
    write_blocked: bool,
}

fn scan<'c>(
    consents: impl Iterator<Item = &'c ConsentRecord>,
    a: &Asker,
    part2: Option<&Part2>,
    f: &ResourceFacts,
) -> Scan {
    let mut s = Scan::default();
    let part2_hit = part2.is_some_and(|p| p.covers(f));
    let mut path = Vec::with_capacity(8);
    for c in consents {
        walk(c, a, part2, &mut path, &mut |kind, path, node, info: PathInfo| {
            if !clause_admits(path.iter().map(|m| &***m), unless(node, a).map(|m| &**m), f) {
                return;
            }
            match kind {
                ProvisionKind::Deny => push_id(&mut s.denied, &c.id),
                ProvisionKind::Permit => {
                    if info.names_part2 {
                        push_id(&mut s.part2_named, &c.id);
                    }
                    if !info.named {
                        return;
                    }
                    if a.access == Access::Write && !info.correct {
                        s.write_blocked = true;
                    } else if part2_hit && !info.names_part2 {
                        s.part2_blocked = true;
                    } else {
                        push_id(&mut s.permitted, &c.id);
                    }
                }
            }
        });
    }
    s
}

// ---- patients --------------------------------------------------------------------------------

/// A patient sees and changes nothing outside their own compartment; they never delete; the
/// results hold withholds new results they did not enter.
fn evaluate_patient(
    ctx: &RequestContext,
    rules: &OperatorRules,
    patient: &str,
    action: Action,
    facts: &ResourceFacts,
) -> Verdict {
    if action == Action::Delete {
        return Verdict::deny("patient-no-delete", "Patients cannot delete records.");
    }
    let own = vec![patient.to_string()];
    let exempt = Exempt { patient, proxies: &[] };
    if is_type_level(action, facts) {
        let mut filter = SearchFilter::default();
        if let Some(h) = &rules.results_hold {
            filter.exclude.push(hold_clause(h, ctx.now_ms, &exempt));
        }
        return Verdict::permit("patient-own-compartment", "You can search your own records.", Some(own))
            .with_filter(filter);
    }
    if !facts.compartments.iter().any(|c| c == patient) {
        return Verdict::deny("outside-compartment", "This record is not part of your chart.");
    }
    if action != Action::Create
        && let Some(h) = &rules.results_hold
        && held(h, facts, ctx.now_ms, &exempt)
    {
        return deny_explained("results-hold", facts, rules);
    }
    Verdict::permit("patient-own-compartment", "This record is part of your own chart.", Some(own))
}

// ---- caregivers ------------------------------------------------------------------------------

/// A caregiver acts for one linked patient at a time (`ctx.acting_for`); what they see comes
/// from that patient's consents naming their RelatedPerson, within the operator rules.
fn evaluate_caregiver(
    ctx: &RequestContext,
    rules: &OperatorRules,
    patients: &[String],
    action: Action,
    facts: &ResourceFacts,
) -> Verdict {
    let Some(who) = ctx.acting_for.as_deref() else {
        return Verdict::deny("proxy-not-linked", "Choose whose records you are acting for first.");
    };
    let pf = ctx.patient_facts();
    let proxies: &[String] = pf.map_or(&[], |p| &p.proxies);
    if !patients.iter().any(|p| p == who) && proxies.is_empty() {
        return Verdict::deny(
            "proxy-not-linked",
            "You are not linked as a caregiver to the person you are acting for.",
        );
    }
    if action == Action::Delete {
        return deny_explained("proxy-read-only", facts, rules);
    }
    let type_level = is_type_level(action, facts);
    if !type_level && !facts.compartments.iter().any(|c| c == who) {
        return Verdict::deny(
            "outside-compartment",
            "This record is not part of the chart of the person you care for.",
        );
    }
    let now = ctx.now_ms;
    let asker = Asker {
        actor_type: ActorKind::RelatedPerson,
        ids: Ids::Many(proxies),
        purpose: ctx.purpose.as_deref(),
        access: Access::of(action),
        now,
    };
    let minor = adolescent(rules, pf, now);
    let cutoff = majority_cutoff(rules, pf, now);
    let exempt = Exempt { patient: who, proxies };
    let part2 = rules.part2.as_ref();
    let confined = Some(vec![who.to_string()]);
    let redactions = |resource_type: &str| -> Vec<Obligation> {
        rules
            .redactions_for(resource_type)
            .map(|r| Obligation::Redact { resource_type: r.resource_type.clone(), elements: r.elements.clone() })
            .collect()
    };
    if type_level {
        let patient_clause = Arc::new(Match {
            data: Some(DataSet { references: vec![format!("Patient/{who}")], authors: Vec::new() }),
            ..Match::default()
        });
        let mut include = vec![Clause {
            when: vec![patient_clause],
            unless: part2.map(|p| vec![p.matcher.clone()]).unwrap_or_default(),
        }];
        let mut exclude = Vec::new();
        if let Some(a) = minor {
            exclude.extend(a.hidden.iter().map(|m| Clause { when: vec![m.clone()], unless: Vec::new() }));
        }
        if let Some(h) = &rules.results_hold {
            exclude.push(hold_clause(h, now, &exempt));
        }
        let mut consents = Vec::new();
        let mut granted = false;
        let mut path = Vec::with_capacity(8);
        for c in in_force(pf, who, now, cutoff) {
            walk(c, &asker, part2, &mut path, &mut |kind, path, node, info: PathInfo| match kind {
                ProvisionKind::Deny => {
                    exclude.push(clause(path, node, &asker, None));
                    push_id(&mut consents, &c.id);
                }
                ProvisionKind::Permit if info.named => {
                    include.push(clause(path, node, &asker, part2.filter(|_| !info.names_part2)));
                    push_id(&mut consents, &c.id);
                    granted = true;
                }
                ProvisionKind::Permit => {}
            });
        }
        let (rule, reason) = if granted {
            ("proxy-consent", "You can search the records the person you care for has shared with you.")
        } else {
            (
                "proxy-linked-patient",
                "You can see the personal details of the person you care for; they have not shared other records \
                 with you.",
            )
        };
        return Verdict::permit(rule, reason, confined)
            .with_consents(consents)
            .with_obligations(redactions(&facts.resource_type))
            .with_filter(SearchFilter { include: Some(include), exclude });
    }

    if let Some(a) = minor
        && a.hidden.iter().any(|m| m.admits(facts))
    {
        return deny_explained("adolescent-confidentiality", facts, rules);
    }
    if action != Action::Create
        && let Some(h) = &rules.results_hold
        && held(h, facts, now, &exempt)
    {
        return deny_explained("results-hold", facts, rules);
    }
    let s = scan(in_force(pf, who, now, cutoff), &asker, part2, facts);
    if !s.denied.is_empty() {
        return deny_explained("consent-deny", facts, rules).with_consents(s.denied);
    }
    if !s.permitted.is_empty() {
        return Verdict::permit("proxy-consent", "The person you care for has shared this record with you.", confined)
            .with_consents(s.permitted)
            .with_obligations(redactions(&facts.resource_type));
    }
    let part2_hit = part2.is_some_and(|p| p.covers(facts));
    let own_patient =
        asker.access == Access::Read && facts.resource_type == "Patient" && facts.id.as_deref() == Some(who);
    if own_patient && !part2_hit {
        return Verdict::permit(
            "proxy-linked-patient",
            "These are the personal details of the person you care for.",
            confined,
        )
        .with_obligations(redactions(&facts.resource_type));
    }
    if s.part2_blocked || own_patient {
        return deny_explained("part2-consent-required", facts, rules);
    }
    if s.write_blocked || asker.access == Access::Write {
        return deny_explained("proxy-read-only", facts, rules);
    }
    if cutoff.is_some() && lapsed_consent_named(pf, who, now, cutoff, proxies) {
        return deny_explained("proxy-minor-access-ended", facts, rules);
    }
    deny_explained("proxy-no-consent", facts, rules)
}

/// Whether some consent that lapsed at majority named one of these RelatedPersons.
fn lapsed_consent_named(
    pf: Option<&PatientFacts>,
    who: &str,
    now: i64,
    cutoff: Option<i64>,
    proxies: &[String],
) -> bool {
    fn names(p: &crate::consent::Provision, proxies: &[String]) -> bool {
        p.actors.iter().any(|a| a.kind == ActorKind::RelatedPerson && proxies.contains(&a.id))
            || p.provisions.iter().any(|c| names(c, proxies))
    }
    in_force(pf, who, now, None)
        .filter(|c| cutoff.is_some_and(|cut| c.given_ms().is_some_and(|g| g < cut)))
        .any(|c| names(&c.root, proxies))
}

// ---- clinicians ------------------------------------------------------------------------------

/// A clinician acts for one patient: a care relationship (for treatment) or a consent
/// naming them permits, minus the patient's denies and Part 2; `ETREAT` is break-the-glass.
fn evaluate_clinician(
    ctx: &RequestContext,
    rules: &OperatorRules,
    practitioner: &str,
    action: Action,
    facts: &ResourceFacts,
) -> Verdict {
    let Some(who) = ctx.acting_for.as_deref() else {
        return Verdict::deny(
            "care-relationship-required",
            "Choose the patient you are treating first: clinicians see one patient's records at a time.",
        );
    };
    let type_level = is_type_level(action, facts);
    if !type_level && !facts.compartments.iter().any(|c| c == who) {
        return Verdict::deny("outside-compartment", "This record is not part of the chart of the patient you chose.");
    }
    let purpose = ctx.purpose.as_deref().unwrap_or("TREAT");
    if purpose == "ETREAT" {
        return break_glass(ctx, rules, who, action, type_level);
    }
    if action.is_write() {
        return Verdict::deny("clinician-read-only", "Clinicians cannot change records through portico.");
    }
    let now = ctx.now_ms;
    let pf = ctx.patient_facts();
    let care = pf.is_some_and(|p| p.care_team.iter().any(|c| c == practitioner));
    let treat = care && purpose == "TREAT";
    let asker = Asker {
        actor_type: ActorKind::Practitioner,
        ids: Ids::One(practitioner),
        purpose: Some(purpose),
        access: Access::Read,
        now,
    };
    let part2 = rules.part2.as_ref();
    let confined = Some(vec![who.to_string()]);

    if type_level {
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        let mut consents = Vec::new();
        let mut path = Vec::with_capacity(8);
        for c in in_force(pf, who, now, None) {
            walk(c, &asker, part2, &mut path, &mut |kind, path, node, info: PathInfo| match kind {
                ProvisionKind::Deny => {
                    exclude.push(clause(path, node, &asker, None));
                    push_id(&mut consents, &c.id);
                }
                // Treating: only permits naming Part 2 records add anything.
                ProvisionKind::Permit if treat && info.names_part2 => {
                    include.push(clause(path, node, &asker, None));
                    push_id(&mut consents, &c.id);
                }
                ProvisionKind::Permit if !treat && info.named => {
                    include.push(clause(path, node, &asker, part2.filter(|_| !info.names_part2)));
                    push_id(&mut consents, &c.id);
                }
                ProvisionKind::Permit => {}
            });
        }
        if treat {
            let include = part2.map(|p| {
                include.insert(0, Clause { when: Vec::new(), unless: vec![p.matcher.clone()] });
                include
            });
            return Verdict::permit(
                "care-relationship",
                "You can search the records of a patient you are treating.",
                confined,
            )
            .with_consents(consents)
            .with_filter(SearchFilter { include, exclude });
        }
        if include.is_empty() {
            return no_clinical_basis(care, facts, rules);
        }
        return Verdict::permit(
            "clinician-consent",
            "You can search the records this patient has shared with you.",
            confined,
        )
        .with_consents(consents)
        .with_filter(SearchFilter { include: Some(include), exclude });
    }

    let s = scan(in_force(pf, who, now, None), &asker, part2, facts);
    if !s.denied.is_empty() {
        return deny_explained("consent-deny", facts, rules).with_consents(s.denied);
    }
    let part2_hit = part2.is_some_and(|p| p.covers(facts));
    if treat {
        if part2_hit && s.part2_named.is_empty() {
            return deny_explained("part2-consent-required", facts, rules);
        }
        let consents = if part2_hit { s.part2_named } else { Vec::new() };
        return Verdict::permit("care-relationship", "You are treating this patient.", confined)
            .with_consents(consents);
    }
    if !s.permitted.is_empty() {
        return Verdict::permit("clinician-consent", "The patient has shared this record with you.", confined)
            .with_consents(s.permitted);
    }
    if s.part2_blocked {
        return deny_explained("part2-consent-required", facts, rules);
    }
    no_clinical_basis(care, facts, rules)
}

fn no_clinical_basis(care: bool, facts: &ResourceFacts, rules: &OperatorRules) -> Verdict {
    if care {
        deny_explained("purpose-not-permitted", facts, rules)
    } else {
        deny_explained("care-relationship-required", facts, rules)
    }
}

/// Emergency access: a stated reason, within the operator's window from its start; reads
/// only; flagged.
fn break_glass(ctx: &RequestContext, rules: &OperatorRules, who: &str, action: Action, _type_level: bool) -> Verdict {
    let Some(minutes) = rules.break_glass_minutes else {
        return Verdict::deny("break-the-glass-unavailable", "Emergency access is switched off on this server.");
    };
    let Some(reason) = ctx.break_glass_reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) else {
        return Verdict::deny(
            "break-the-glass-reason-required",
            "Emergency access needs a stated reason; it is recorded and the patient is told.",
        );
    };
    let fresh = ctx.break_glass_at_ms.is_some_and(|at| {
        let age = i128::from(ctx.now_ms) - i128::from(at);
        age >= -i128::from(BREAK_GLASS_SKEW_MS) && age < i128::from(minutes) * 60_000
    });
    if !fresh {
        return Verdict::deny(
            "break-the-glass-expired",
            format!("Emergency access lasts {minutes} minutes from when it is started; start it again with a reason."),
        );
    }
    if action.is_write() {
        return Verdict::deny("clinician-read-only", "Clinicians cannot change records through portico.");
    }
    Verdict::permit(
        "break-the-glass",
        "Emergency access: this is recorded, flagged for review, and the patient is told.",
        Some(vec![who.to_string()]),
    )
    .with_obligations(vec![Obligation::Flag { reason: reason.to_string() }])
}

// ---- app scopes ------------------------------------------------------------------------------

/// The app's scopes narrow a permit: per resource through `ScopeSet::permits`, for a search
/// through `ScopeSet::search_limits` (which become the permit's limits, applied in SQL).
fn within_scopes(
    verdict: Verdict,
    scopes: &ScopeSet,
    contexts: &[ScopeContext],
    action: Action,
    facts: &ResourceFacts,
) -> Verdict {
    if is_type_level(action, facts) {
        let resource_type = (facts.resource_type != "*").then_some(facts.resource_type.as_str());
        return match scopes.search_limits(contexts, action, resource_type) {
            Some(limits) => Verdict { limits: Some(limits), ..verdict },
            None => Verdict::deny("outside-scopes", missing_permission(scopes, contexts, action, facts)),
        };
    }
    if scopes.permits(contexts, action, &facts.resource_type, &facts.category_codes) {
        verdict
    } else {
        Verdict::deny("outside-scopes", missing_permission(scopes, contexts, action, facts))
    }
}

/// "The app you are using was not given permission to read observations."
fn missing_permission(scopes: &ScopeSet, contexts: &[ScopeContext], action: Action, facts: &ResourceFacts) -> String {
    let noun = if facts.resource_type == "*" { "these records".to_string() } else { type_noun(&facts.resource_type) };
    let verb = match action {
        Action::Read | Action::VRead => "read",
        Action::History if facts.id.is_some() => "read the history of",
        Action::History => "see the history of",
        Action::Search => "search",
        Action::Everything => "fetch all of",
        Action::Create => "add",
        Action::Update | Action::Patch => "change",
        Action::Delete => "delete",
    };
    // Granted for the type, but narrowed to categories this resource does not carry?
    if !is_type_level(action, facts) && scopes.grants_type(contexts, action, &facts.resource_type) {
        return format!("The app you are using may {verb} only some kinds of {noun}, and this is not one of them.");
    }
    format!("The app you are using was not given permission to {verb} {noun}.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scopes::TypeLimit;
    use proptest::prelude::*;

    fn facts(comp: &[&str]) -> ResourceFacts {
        ResourceFacts {
            resource_type: "Observation".into(),
            id: Some("o1".into()),
            version: Some(1),
            compartments: comp.iter().map(|s| s.to_string()).collect(),
            category: "labs".into(),
            labels: vec![],
            category_codes: vec![],
            date_ms: None,
            author: None,
        }
    }

    #[test]
    fn anonymous_is_denied() {
        let ctx = RequestContext::new(Principal::Anonymous, "r");
        assert_eq!(evaluate(&ctx, Action::Read, &facts(&["p1"])).effect, Effect::Deny);
    }

    #[test]
    fn operator_is_permitted_unconfined() {
        let ctx = RequestContext::new(Principal::Operator, "r");
        let v = evaluate(&ctx, Action::Delete, &facts(&["p1"]));
        assert!(v.is_permit());
        assert_eq!(v.compartments, None);
    }

    #[test]
    fn nobody_writes_audit_events() {
        let mut f = facts(&["p1"]);
        f.resource_type = "AuditEvent".into();
        for p in [Principal::Operator, Principal::Patient { patient: "p1".into() }] {
            let ctx = RequestContext::new(p, "r");
            for a in [Action::Create, Action::Update, Action::Patch, Action::Delete] {
                assert_eq!(evaluate(&ctx, a, &f).rule, "audit-append-only");
            }
            assert!(evaluate(&ctx, Action::Read, &f).is_permit());
        }
    }

    #[test]
    fn patient_reads_own_not_others_and_never_deletes() {
        let ctx = RequestContext::new(Principal::Patient { patient: "p1".into() }, "r");
        assert!(evaluate(&ctx, Action::Read, &facts(&["p1"])).is_permit());
        assert!(!evaluate(&ctx, Action::Read, &facts(&["p2"])).is_permit());
        assert!(!evaluate(&ctx, Action::Read, &facts(&[])).is_permit());
        assert!(!evaluate(&ctx, Action::Delete, &facts(&["p1"])).is_permit());
        let s = evaluate(&ctx, Action::Search, &ResourceFacts::type_level("Observation"));
        assert_eq!(s.compartments, Some(vec!["p1".to_string()]));
    }

    const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
    const VITALS: &str = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs";

    fn obs(comp: &[&str], codes: &[&str]) -> ResourceFacts {
        let mut f = facts(comp);
        f.category_codes = codes.iter().map(|s| s.to_string()).collect();
        f
    }

    fn of_type(resource_type: &str, id: &str, comp: &[&str]) -> ResourceFacts {
        ResourceFacts { resource_type: resource_type.into(), id: Some(id.into()), ..facts(comp) }
    }

    fn with_scopes(principal: Principal, acting_for: Option<&str>, scopes: Option<&str>) -> RequestContext {
        let mut ctx = RequestContext::new(principal, "r");
        if acting_for.is_some() {
            ctx.acting_for = acting_for.map(str::to_string);
        }
        ctx.scopes = scopes.map(|s| ScopeSet::parse(s).unwrap());
        ctx
    }

    fn patient(id: &str) -> Principal {
        Principal::Patient { patient: id.into() }
    }

    fn caregiver(patients: &[&str]) -> Principal {
        Principal::Caregiver { user: "u9".into(), patients: patients.iter().map(|s| s.to_string()).collect() }
    }

    fn system() -> Principal {
        Principal::System { client: "lab-feed".into() }
    }

    const ALL_ACTIONS: [Action; 9] = [
        Action::Read,
        Action::VRead,
        Action::Search,
        Action::History,
        Action::Create,
        Action::Update,
        Action::Patch,
        Action::Delete,
        Action::Everything,
    ];

    #[test]
    fn patient_everything_and_history_are_confined_to_the_own_compartment() {
        let ctx = RequestContext::new(patient("p1"), "r");
        for a in [Action::Everything, Action::History, Action::Search] {
            let v = evaluate(&ctx, a, &ResourceFacts::type_level("*"));
            assert!(v.is_permit(), "{a:?}");
            assert_eq!(v.compartments, Some(vec!["p1".to_string()]));
            assert_eq!(v.limits, None, "no app, no limits");
        }
        assert!(evaluate(&ctx, Action::Create, &facts(&["p1"])).is_permit());
        assert!(!evaluate(&ctx, Action::Create, &facts(&["p2"])).is_permit());
    }

    #[test]
    fn a_patient_acts_only_for_themself() {
        let ctx = with_scopes(patient("p1"), Some("p2"), None);
        for a in ALL_ACTIONS {
            let v = evaluate(&ctx, a, &facts(&["p1", "p2"]));
            assert_eq!(v.rule, "patient-acts-for-self", "{a:?}");
            assert!(!v.is_permit());
        }
        let ok = with_scopes(patient("p1"), Some("p1"), None);
        assert!(evaluate(&ok, Action::Read, &facts(&["p1"])).is_permit());
    }

    #[test]
    fn the_patient_resource_is_in_its_own_compartment() {
        let ctx = with_scopes(patient("p1"), None, Some("patient/Patient.rs"));
        assert!(evaluate(&ctx, Action::Read, &of_type("Patient", "p1", &["p1"])).is_permit());
        assert!(!evaluate(&ctx, Action::Read, &of_type("Patient", "p2", &["p2"])).is_permit());
        assert!(!evaluate(&ctx, Action::Read, &facts(&["p1"])).is_permit(), "Observation is not in scope");
        let s = evaluate(&ctx, Action::Search, &ResourceFacts::type_level("Patient"));
        assert_eq!(s.compartments, Some(vec!["p1".to_string()]));
        assert_eq!(s.limits, Some(vec![TypeLimit { resource_type: "Patient".into(), categories: None }]));
    }

    #[test]
    fn caregiver_reads_only_the_linked_patient_it_acts_for() {
        let ctx = with_scopes(caregiver(&["c1", "c2"]), Some("c1"), None);
        let v = evaluate(&ctx, Action::Read, &of_type("Patient", "c1", &["c1"]));
        assert!(v.is_permit());
        assert_eq!(v.rule, "proxy-linked-patient", "the link alone shows the patient's own Patient resource");
        let v = evaluate(&ctx, Action::Read, &facts(&["c1"]));
        assert_eq!(v.rule, "proxy-no-consent", "anything else needs the patient's consent");
        let v = evaluate(&ctx, Action::Read, &facts(&["c2"]));
        assert_eq!(v.rule, "outside-compartment", "linked, but not the one acted for");
        let s = evaluate(&ctx, Action::Everything, &ResourceFacts::type_level("*"));
        assert_eq!(s.compartments, Some(vec!["c1".to_string()]));
        for a in [Action::Create, Action::Update, Action::Patch, Action::Delete] {
            assert_eq!(evaluate(&ctx, a, &facts(&["c1"])).rule, "proxy-read-only", "{a:?}");
        }
        let unlinked = with_scopes(caregiver(&["c1"]), Some("c9"), None);
        assert_eq!(evaluate(&unlinked, Action::Read, &facts(&["c9"])).rule, "proxy-not-linked");
        let nobody = with_scopes(caregiver(&["c1"]), None, None);
        let v = evaluate(&nobody, Action::Search, &ResourceFacts::type_level("Observation"));
        assert_eq!(v.rule, "proxy-not-linked");
        assert!(v.reason.contains("Choose"));
    }

    #[test]
    fn clinicians_and_admins_have_no_clinical_access_yet() {
        let clin = with_scopes(Principal::Clinician { user: "u1".into(), practitioner: "d1".into() }, None, None);
        let admin = with_scopes(Principal::Admin { user: "u2".into() }, None, None);
        for a in ALL_ACTIONS {
            assert_eq!(evaluate(&clin, a, &facts(&["p1"])).rule, "care-relationship-required");
            assert_eq!(evaluate(&admin, a, &facts(&["p1"])).rule, "admin-no-clinical-access");
            assert!(!evaluate(&admin, a, &ResourceFacts::type_level("*")).is_permit());
        }
    }

    #[test]
    fn system_services_act_only_through_system_scopes_unconfined() {
        let none = with_scopes(system(), None, None);
        assert_eq!(evaluate(&none, Action::Read, &facts(&["p1"])).rule, "system-scopes-required");
        let ctx = with_scopes(system(), None, Some("system/Observation.rs patient/*.cruds user/Condition.rs"));
        let v = evaluate(&ctx, Action::Read, &facts(&["p1"]));
        assert!(v.is_permit());
        assert_eq!((v.rule, v.compartments), ("system-scopes", None));
        let s = evaluate(&ctx, Action::Search, &ResourceFacts::type_level("Observation"));
        assert!(s.is_permit());
        assert_eq!(s.compartments, None);
        assert_eq!(s.limits, Some(vec![TypeLimit { resource_type: "Observation".into(), categories: None }]));
        assert_eq!(
            evaluate(&ctx, Action::Update, &facts(&["p1"])).rule,
            "outside-scopes",
            "patient/ scopes do not count"
        );
        assert_eq!(evaluate(&ctx, Action::Read, &of_type("Condition", "c", &["p1"])).rule, "outside-scopes");
        let empty = with_scopes(system(), None, Some(""));
        assert_eq!(evaluate(&empty, Action::Read, &facts(&["p1"])).rule, "outside-scopes");
    }

    #[test]
    fn operator_tokens_for_apps_are_still_scoped() {
        let ctx = with_scopes(Principal::Operator, None, Some("system/Observation.r"));
        assert!(evaluate(&ctx, Action::Read, &facts(&["p1"])).is_permit());
        assert_eq!(evaluate(&ctx, Action::Delete, &facts(&["p1"])).rule, "outside-scopes");
        assert_eq!(evaluate(&ctx, Action::Search, &ResourceFacts::type_level("Observation")).rule, "outside-scopes");
        let user = with_scopes(Principal::Operator, None, Some("user/*.cruds"));
        assert!(evaluate(&user, Action::Delete, &facts(&["p1"])).is_permit(), "the operator may use any context");
    }

    #[test]
    fn app_scopes_narrow_a_patient() {
        let scopes = format!("patient/Observation.rs?category={LAB} patient/Condition.r openid");
        let ctx = with_scopes(patient("p1"), Some("p1"), Some(&scopes));
        assert!(evaluate(&ctx, Action::Read, &obs(&["p1"], &[LAB])).is_permit());
        let v = evaluate(&ctx, Action::Read, &obs(&["p1"], &[VITALS]));
        assert_eq!(v.rule, "outside-scopes");
        assert!(v.reason.contains("only some kinds of observations"), "{}", v.reason);
        let v = evaluate(&ctx, Action::Update, &obs(&["p1"], &[LAB]));
        assert_eq!(v.rule, "outside-scopes");
        assert_eq!(v.reason, "The app you are using was not given permission to change observations.");
        let v = evaluate(&ctx, Action::Read, &of_type("Immunization", "i", &["p1"]));
        assert_eq!(v.reason, "The app you are using was not given permission to read immunizations.");
        assert_eq!(
            evaluate(&ctx, Action::Read, &obs(&["p2"], &[LAB])).rule,
            "outside-compartment",
            "scopes never widen"
        );

        let s = evaluate(&ctx, Action::Search, &ResourceFacts::type_level("Observation"));
        assert!(s.is_permit());
        assert_eq!(s.compartments, Some(vec!["p1".to_string()]));
        assert_eq!(
            s.limits,
            Some(vec![TypeLimit { resource_type: "Observation".into(), categories: Some(vec![LAB.into()]) }])
        );
        let c = evaluate(&ctx, Action::Search, &ResourceFacts::type_level("Condition"));
        assert_eq!(c.rule, "outside-scopes");
        assert_eq!(c.reason, "The app you are using was not given permission to search conditions.");
        let e = evaluate(&ctx, Action::Everything, &ResourceFacts::type_level("*"));
        assert_eq!(
            e.limits,
            Some(vec![TypeLimit { resource_type: "Observation".into(), categories: Some(vec![LAB.into()]) }])
        );
        assert_eq!(
            evaluate(&ctx, Action::History, &of_type("Condition", "c", &["p1"])).rule,
            "patient-own-compartment",
            "instance history is r"
        );
    }

    #[test]
    fn system_scopes_do_not_serve_patients_and_user_scopes_do() {
        let sys = with_scopes(patient("p1"), None, Some("system/*.cruds"));
        assert_eq!(evaluate(&sys, Action::Read, &facts(&["p1"])).rule, "outside-scopes");
        let user = with_scopes(caregiver(&["c1"]), Some("c1"), Some("user/*.rs"));
        assert!(evaluate(&user, Action::Read, &of_type("Patient", "c1", &["c1"])).is_permit());
        assert_eq!(evaluate(&user, Action::Create, &facts(&["c1"])).rule, "proxy-read-only");
    }

    #[test]
    fn every_rule_id_in_the_source_is_listed() {
        let src = [include_str!("engine.rs"), include_str!("gate.rs")].concat();
        let mut found = 0;
        for marker in
            ["Verdict::deny(\"", "Verdict::permit(\"", "deny_explained(\"", "(rule, reason) = (\"", "(\"proxy-"]
        {
            // The last marker keeps its `proxy-` as part of the id.
            let keep = marker.strip_prefix("(\"").map_or(0, str::len);
            for (i, _) in src.match_indices(marker) {
                let rest = &src[i + marker.len() - keep..];
                let id = &rest[..rest.find('"').unwrap()];
                if id.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !id.is_empty() {
                    assert!(RULES.iter().any(|(r, _)| *r == id), "{id} is not in RULES");
                    found += 1;
                }
            }
        }
        assert!(found > 40, "{found}");
    }

    #[test]
    fn every_rule_the_engine_names_is_listed() {
        let src = include_str!("engine.rs");
        let gate = include_str!("gate.rs");
        for (rule, _) in RULES {
            assert!(src.contains(&format!("\"{rule}\"")) || gate.contains(&format!("\"{rule}\"")), "{rule}");
        }
    }

    // ---- properties -------------------------------------------------------------------------

    fn arb_resource_scope() -> impl Strategy<Value = String> {
        let ctx = prop_oneof![3 => Just("patient"), 1 => Just("user"), 2 => Just("system")];
        let ty = prop_oneof![1 => Just("*"), 3 => Just("Observation"), 1 => Just("Condition"), 1 => Just("Patient")];
        let perms = prop_oneof![
            1 => (1u8..32).prop_map(|bits| {
                "cruds".chars().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, c)| c).collect::<String>()
            }),
            1 => Just("rs".to_string()),
        ];
        let cat = prop_oneof![
            3 => Just(String::new()),
            1 => Just("?category=laboratory".to_string()),
            1 => Just(format!("?category={}", VITALS.replace('|', "%7C"))),
            1 => Just("?category=%7Clocal".to_string()),
        ];
        (ctx, ty, perms, cat).prop_map(|(c, t, p, q)| format!("{c}/{t}.{p}{q}"))
    }

    fn arb_scope() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => arb_resource_scope(),
            1 => prop_oneof![Just("openid".to_string()), Just("launch/patient".to_string()), Just("offline_access".to_string()),
                Just("patient/Observation.read".to_string()), Just("user/*.write".to_string())],
        ]
    }

    fn arb_scopes(max: usize) -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(arb_scope(), 0..max)
    }

    fn arb_principal() -> impl Strategy<Value = Principal> {
        prop_oneof![
            2 => Just(Principal::Operator),
            4 => Just(patient("p1")),
            4 => Just(caregiver(&["p1", "p2"])),
            1 => Just(caregiver(&["p2"])),
            2 => Just(system()),
            1 => Just(Principal::Clinician { user: "u".into(), practitioner: "d".into() }),
            1 => Just(Principal::Admin { user: "a".into() }),
            1 => Just(Principal::Anonymous),
        ]
    }

    fn arb_facts() -> impl Strategy<Value = ResourceFacts> {
        let ty = prop_oneof![4 => Just("Observation"), 2 => Just("Condition"), 1 => Just("Patient"),
            1 => Just("AuditEvent"), 1 => Just("*")];
        let comps = proptest::collection::vec(prop_oneof![4 => Just("p1"), 1 => Just("p2"), 1 => Just("p3")], 0..3);
        let codes = proptest::collection::vec(
            prop_oneof![Just(LAB), Just(VITALS), Just("|local"), Just("http://x|laboratory")],
            0..3,
        );
        (ty, proptest::option::of("[a-z]{1,3}"), comps, codes).prop_map(|(t, id, comps, codes)| ResourceFacts {
            resource_type: t.to_string(),
            id,
            version: None,
            compartments: comps.into_iter().map(str::to_string).collect(),
            category: String::new(),
            labels: vec![],
            category_codes: codes.into_iter().map(str::to_string).collect(),
            date_ms: None,
            author: None,
        })
    }

    fn arb_ctx() -> impl Strategy<Value = RequestContext> {
        let acting = proptest::option::weighted(0.8, prop_oneof![4 => Just("p1"), 1 => Just("p2"), 1 => Just("p3")]);
        (arb_principal(), acting).prop_map(|(p, a)| {
            let mut ctx = RequestContext::new(p, "r");
            if let Some(a) = a {
                ctx.acting_for = Some(a.to_string());
            }
            ctx
        })
    }

    fn scoped(ctx: &RequestContext, scopes: &[String]) -> RequestContext {
        let mut c = ctx.clone();
        c.scopes = Some(ScopeSet::parse(&scopes.join(" ")).unwrap());
        c
    }

    /// What a verdict lets through for resources like `f` (the search filter's view).
    fn admits(v: &Verdict, f: &ResourceFacts) -> bool {
        v.is_permit()
            && v.compartments.as_ref().is_none_or(|cs| f.compartments.iter().any(|c| cs.contains(c)))
            && v.limits.as_ref().is_none_or(|ls| ls.iter().any(|l| l.admits(&f.resource_type, &f.category_codes)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Nothing outside the acted-for patient's compartment is ever permitted to a patient.
        #[test]
        fn patient_never_reaches_other_compartments(
            me in "[a-z]{1,4}", others in proptest::collection::vec("[a-z]{1,4}", 0..4),
            act in 0usize..9,
        ) {
            let ctx = RequestContext::new(Principal::Patient { patient: me.clone() }, "r");
            let f = ResourceFacts { resource_type: "Observation".into(), id: Some("x".into()), version: None,
                compartments: others.clone(), category: "labs".into(), labels: vec![], category_codes: vec![], date_ms: None, author: None };
            let v = evaluate(&ctx, ALL_ACTIONS[act], &f);
            if v.is_permit() {
                prop_assert!(others.contains(&me));
            }
        }

        /// A superset of scopes never permits less than its subset, for one resource or a
        /// search (whatever the subset's search admits, the superset's admits too).
        #[test]
        fn more_scopes_never_permit_less(
            ctx in arb_ctx(), base in arb_scopes(6), extra in arb_scopes(4), act in 0usize..9,
            f in arb_facts(), probe in arb_facts(),
        ) {
            let small = scoped(&ctx, &base);
            let big = scoped(&ctx, &[base.clone(), extra].concat());
            let action = ALL_ACTIONS[act];
            let (vs, vb) = (evaluate(&small, action, &f), evaluate(&big, action, &f));
            if vs.is_permit() {
                prop_assert!(vb.is_permit(), "{:?} permitted {:?} but the superset {:?} did not", base, action, big.scopes);
                if is_type_level(action, &f) {
                    prop_assert!(!admits(&vs, &probe) || admits(&vb, &probe));
                }
            }
        }

        /// Removing scopes (restricting a grant) never widens what is permitted, and a
        /// restricted set is a subset of both.
        #[test]
        fn restricting_never_widens(
            ctx in arb_ctx(), requested in arb_scopes(8), allowed in arb_scopes(8), act in 0usize..9,
            f in arb_facts(), probe in arb_facts(),
        ) {
            let req = ScopeSet::parse(&requested.join(" ")).unwrap();
            let allow = ScopeSet::parse(&allowed.join(" ")).unwrap();
            let kept = req.restrict_to(&allow);
            prop_assert!(kept.is_subset_of(&req) && kept.is_subset_of(&allow));
            let mut narrow = ctx.clone();
            narrow.scopes = Some(kept);
            let mut wide = ctx.clone();
            wide.scopes = Some(req);
            let action = ALL_ACTIONS[act];
            let (vn, vw) = (evaluate(&narrow, action, &f), evaluate(&wide, action, &f));
            prop_assert!(!vn.is_permit() || vw.is_permit());
            if is_type_level(action, &f) {
                prop_assert!(!admits(&vn, &probe) || admits(&vw, &probe));
            }
            // And no scopes at all is the principal's own rule, which scopes only narrow.
            let mut bare = ctx.clone();
            bare.scopes = None;
            if !matches!(ctx.principal, Principal::System { .. }) {
                prop_assert!(!vw.is_permit() || evaluate(&bare, action, &f).is_permit());
            }
        }

        /// Whatever the scopes, a patient or caregiver is never permitted anything outside the
        /// acted-for patient's compartment, and their searches are confined to it.
        #[test]
        fn users_stay_in_the_acted_for_compartment(
            ctx in arb_ctx(), scopes in proptest::option::of(arb_scopes(8)), act in 0usize..9, f in arb_facts(),
        ) {
            let mut ctx = ctx;
            ctx.scopes = scopes.map(|s| ScopeSet::parse(&s.join(" ")).unwrap());
            let action = ALL_ACTIONS[act];
            let v = evaluate(&ctx, action, &f);
            let own = match &ctx.principal {
                Principal::Patient { patient } => Some(patient.clone()),
                Principal::Caregiver { .. } => ctx.acting_for.clone(),
                _ => None,
            };
            if let Some(own) = own
                && v.is_permit()
            {
                prop_assert_eq!(v.compartments.clone(), Some(vec![own.clone()]));
                prop_assert!(ctx.acting_for.as_ref().is_none_or(|a| *a == own));
                if !is_type_level(action, &f) {
                    prop_assert!(f.compartments.contains(&own));
                }
            }
            if matches!(ctx.principal, Principal::Caregiver { .. }) && ctx.acting_for.is_none() {
                prop_assert!(!v.is_permit());
            }
        }

        /// A backend service without scopes is always denied.
        #[test]
        fn system_without_scopes_is_denied(act in 0usize..9, f in arb_facts(), acting in proptest::option::of("[a-z]{1,3}")) {
            let mut ctx = RequestContext::new(system(), "r");
            ctx.acting_for = acting;
            prop_assert!(!evaluate(&ctx, ALL_ACTIONS[act], &f).is_permit());
        }

        /// Scopes with only `r` and `s` letters never permit a write, for anyone.
        #[test]
        fn read_search_scopes_never_write(
            ctx in arb_ctx(), scopes in proptest::collection::vec(arb_resource_scope(), 0..8), act in 4usize..8,
            f in arb_facts(),
        ) {
            let read_only: Vec<String> = scopes.iter().map(|s| {
                let (head, tail) = s.split_once('.').unwrap();
                let (letters, rest) = tail.split_once('?').map_or((tail, String::new()), |(l, r)| (l, format!("?{r}")));
                let kept: String = letters.chars().filter(|c| matches!(c, 'r' | 's')).collect();
                format!("{head}.{}{rest}", if kept.is_empty() { "r".to_string() } else { kept })
            }).collect();
            let ctx = scoped(&ctx, &[read_only, vec!["openid".into(), "patient/Observation.read".into()]].concat());
            prop_assert!(ALL_ACTIONS[act].is_write());
            prop_assert!(!evaluate(&ctx, ALL_ACTIONS[act], &f).is_permit());
        }
    }
}
