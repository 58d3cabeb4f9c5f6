//! The pure decision function. Deny by default: a request is permitted only when a rule
//! below names why. Every rule id is listed in [`RULES`].
//!
//! Order of the rules:
//! 1. `audit-append-only`: no write of an AuditEvent, by anyone.
//! 2. The principal's own rule: the operator is unconfined; a patient stays in their own
//!    compartment (`ctx.acting_for`, when set, must be themself) and never deletes; a
//!    caregiver reads the compartment of `ctx.acting_for`, which must be one of their linked
//!    patients (a seam for the patient's consent to the caregiver is marked `SEAM(consent)`);
//!    clinicians and administrators have no clinical access yet; a backend service acts only
//!    through its scopes, unconfined by compartment.
//! 3. App scopes (`ctx.scopes` is `Some`): they narrow a permit and never widen it. Patients
//!    and caregivers use `patient/` and `user/` scopes, backend services `system/`, the
//!    operator any. One resource: [`ScopeSet::permits`] with the resource's category codings
//!    (`outside-scopes` otherwise). A type-level search, history or `$everything`:
//!    [`ScopeSet::search_limits`] becomes [`Verdict::limits`], which the store applies in SQL
//!    and [`crate::SearchPermit::admits`] checks. A permit under scopes keeps the principal's
//!    rule id. See [`crate::scopes`] for which letter each action needs.

use crate::context::{Action, Principal, RequestContext, ResourceFacts};
use crate::scopes::{ScopeContext, ScopeSet, type_noun};
use serde::Serialize;

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
    /// Stable identifier of the rule that decided (for audit and explanation).
    pub rule: &'static str,
    pub reason: String,
    /// For a permitted search: the patient compartments the results are confined to
    /// (`None` = not confined, e.g. the operator).
    pub compartments: Option<Vec<String>>,
    /// For a permitted search under app scopes: the types and categories results must
    /// have (`None` = no app scopes apply).
    pub limits: Option<Vec<crate::scopes::TypeLimit>>,
}

impl Verdict {
    pub(crate) fn permit(rule: &'static str, reason: impl Into<String>, compartments: Option<Vec<String>>) -> Self {
        Verdict { effect: Effect::Permit, rule, reason: reason.into(), compartments, limits: None }
    }
    pub(crate) fn deny(rule: &'static str, reason: impl Into<String>) -> Self {
        Verdict { effect: Effect::Deny, rule, reason: reason.into(), compartments: None, limits: None }
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
    ("proxy-linked-patient", "permit: a caregiver reading the chart of a patient they are linked to"),
    ("proxy-not-linked", "deny: a caregiver acting for nobody, or for a patient they are not linked to"),
    ("proxy-read-only", "deny: caregivers cannot write (for now)"),
    ("care-relationship-required", "deny: clinicians need a care relationship (not yet available)"),
    ("admin-no-clinical-access", "deny: administrators have no clinical access"),
    ("system-scopes", "permit: a backend service within its system/ scopes"),
    ("system-scopes-required", "deny: a backend service without granted scopes"),
    ("outside-scopes", "deny: the app's scopes do not grant this action on this type or category"),
    ("step-up-fresh", "permit: a sensitive action after a fresh step-up verification"),
    ("step-up-required", "deny: a sensitive action without a fresh step-up verification"),
];

/// Scope contexts an app acting for a patient or caregiver may use.
const USER_CONTEXTS: &[ScopeContext] = &[ScopeContext::Patient, ScopeContext::User];
/// Scope contexts a backend service may use.
const SYSTEM_CONTEXTS: &[ScopeContext] = &[ScopeContext::System];
/// Scope contexts of an operator token issued for an app: any.
const ANY_CONTEXT: &[ScopeContext] = &[ScopeContext::Patient, ScopeContext::User, ScopeContext::System];

/// Decide one action on one resource (or a type, for searches).
///
/// First the principal's own rule (who may touch what at all), then — when the request came
/// through an app (`ctx.scopes` is `Some`) — the app's SMART scopes narrow that permit: they
/// never widen it.
pub fn evaluate(ctx: &RequestContext, action: Action, facts: &ResourceFacts) -> Verdict {
    // The audit trail is written by the server only, never through the API — not even by
    // the operator.
    if action.is_write() && facts.resource_type == "AuditEvent" {
        return Verdict::deny("audit-append-only", "The audit trail cannot be changed through the API.");
    }
    let (verdict, contexts) = match &ctx.principal {
        Principal::Anonymous => {
            return Verdict::deny("no-principal", "Nobody is signed in, so nothing can be shown.");
        }
        Principal::Operator => (
            Verdict::permit("operator", "The server operator holds administrative access to all records.", None),
            ANY_CONTEXT,
        ),
        Principal::Patient { patient } => {
            if ctx.acting_for.as_deref().is_some_and(|a| a != patient) {
                return Verdict::deny("patient-acts-for-self", "You can only act for yourself.");
            }
            (evaluate_patient(patient, action, facts), USER_CONTEXTS)
        }
        Principal::Caregiver { patients, .. } => (evaluate_caregiver(ctx, patients, action, facts), USER_CONTEXTS),
        Principal::Clinician { .. } => {
            // SEAM(consent): care relationships the patient agreed to will permit here.
            return Verdict::deny(
                "care-relationship-required",
                "Clinicians can see a patient's records only within a care relationship the patient has \
                 agreed to, and none is recorded.",
            );
        }
        Principal::Admin { .. } => {
            return Verdict::deny(
                "admin-no-clinical-access",
                "Administrator accounts manage portico; they cannot see clinical records.",
            );
        }
        Principal::System { .. } => {
            if ctx.scopes.is_none() {
                return Verdict::deny(
                    "system-scopes-required",
                    "This backend service was granted no scopes, so it cannot reach any records.",
                );
            }
            (
                Verdict::permit(
                    "system-scopes",
                    "The backend service was granted system access to these records.",
                    None,
                ),
                SYSTEM_CONTEXTS,
            )
        }
    };
    match &ctx.scopes {
        Some(scopes) if verdict.is_permit() => within_scopes(verdict, scopes, contexts, action, facts),
        _ => verdict,
    }
}

/// Whether the action addresses a type (or every type) rather than one resource.
fn is_type_level(action: Action, facts: &ResourceFacts) -> bool {
    facts.id.is_none() && matches!(action, Action::Search | Action::History | Action::Everything)
}

/// A patient sees and changes nothing outside their own compartment; they never delete.
fn evaluate_patient(patient: &str, action: Action, facts: &ResourceFacts) -> Verdict {
    if action == Action::Delete {
        return Verdict::deny("patient-no-delete", "Patients cannot delete records.");
    }
    let own = vec![patient.to_string()];
    if is_type_level(action, facts) {
        Verdict::permit("patient-own-compartment", "You can search your own records.", Some(own))
    } else if facts.compartments.iter().any(|c| c == patient) {
        Verdict::permit("patient-own-compartment", "This record is part of your own chart.", Some(own))
    } else {
        Verdict::deny("outside-compartment", "This record is not part of your chart.")
    }
}

/// A caregiver acts for one linked patient at a time (`ctx.acting_for`) and, for now, only
/// reads that patient's chart.
fn evaluate_caregiver(ctx: &RequestContext, patients: &[String], action: Action, facts: &ResourceFacts) -> Verdict {
    let Some(who) = ctx.acting_for.as_deref() else {
        return Verdict::deny("proxy-not-linked", "Choose whose records you are acting for first.");
    };
    if !patients.iter().any(|p| p == who) {
        return Verdict::deny(
            "proxy-not-linked",
            "You are not linked as a caregiver to the person you are acting for.",
        );
    }
    if action.is_write() {
        return Verdict::deny(
            "proxy-read-only",
            "Caregivers can look at, but not change, the records of the people they care for.",
        );
    }
    let confined = vec![who.to_string()];
    let verdict = if is_type_level(action, facts) {
        Verdict::permit(
            "proxy-linked-patient",
            "You can search the records of the person you care for.",
            Some(confined),
        )
    } else if facts.compartments.iter().any(|c| c == who) {
        Verdict::permit(
            "proxy-linked-patient",
            "This record is part of the chart of the person you care for.",
            Some(confined),
        )
    } else {
        return Verdict::deny(
            "outside-compartment",
            "This record is not part of the chart of the person you care for.",
        );
    };
    proxy_consent(ctx, who, action, facts, verdict)
}

/// SEAM(consent): the patient's consent to this caregiver (which categories, which period,
/// which actions) will narrow `verdict` here — deny with the consent's rule, or add limits
/// for a search. Until consents exist, a linked caregiver reads the whole chart.
fn proxy_consent(
    _ctx: &RequestContext,
    _patient: &str,
    _action: Action,
    _facts: &ResourceFacts,
    verdict: Verdict,
) -> Verdict {
    verdict
}

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
        let v = evaluate(&ctx, Action::Read, &facts(&["c1"]));
        assert!(v.is_permit());
        assert_eq!(v.rule, "proxy-linked-patient");
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
        assert!(evaluate(&user, Action::Read, &facts(&["c1"])).is_permit());
        assert_eq!(evaluate(&user, Action::Create, &facts(&["c1"])).rule, "proxy-read-only");
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
                compartments: others.clone(), category: "labs".into(), labels: vec![], category_codes: vec![] };
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
