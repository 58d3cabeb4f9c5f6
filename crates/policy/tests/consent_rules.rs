//! One test (or a few) per consent and operator rule of the engine, through the public API.

mod common;

use common::*;
use portico_policy::engine::evaluate_with;
use portico_policy::explain::{self, Audience};
use portico_policy::{
    Action, BirthDate, Gate, Obligation, OperatorRules, PatientFacts, RequestContext, ResourceFacts, ScopeSet,
    TracingSink, Verdict,
};
use std::sync::Arc;

fn rules() -> &'static OperatorRules {
    OperatorRules::builtin()
}

fn read(ctx: &RequestContext, f: &ResourceFacts) -> Verdict {
    evaluate_with(ctx, rules(), Action::Read, f)
}

fn lab() -> ResourceFacts {
    res("Observation", "o1", "labs", &["N"])
}

fn with_consents(consents: Vec<Arc<portico_policy::ConsentRecord>>) -> PatientFacts {
    patient_facts(consents)
}

fn search_admits(ctx: &RequestContext, f: &ResourceFacts) -> bool {
    Gate::new(Arc::new(TracingSink))
        .permit_search(ctx, Action::Search, Some(&f.resource_type))
        .map(|p| p.admits(f))
        .unwrap_or(false)
}

// ---- caregivers ------------------------------------------------------------------------------

#[test]
fn proxy_consent_names_the_related_person() {
    let c = active("c1", P::permit().actor("RelatedPerson/rp-mom").category("labs"));
    let v = read(&mum(with_consents(vec![c.clone()])), &lab());
    assert_eq!((v.rule, v.consents.clone()), ("proxy-consent", vec!["c1".to_string()]));
    assert_eq!(v.compartments, Some(vec!["p1".to_string()]));
    // Another RelatedPerson, another category, or nobody named: no access.
    let dad = active("c2", P::permit().actor("RelatedPerson/rp-dad").category("labs"));
    assert_eq!(read(&mum(with_consents(vec![dad])), &lab()).rule, "proxy-no-consent");
    let meds = active("c3", P::permit().actor("RelatedPerson/rp-mom").category("medications"));
    assert_eq!(read(&mum(with_consents(vec![meds])), &lab()).rule, "proxy-no-consent");
    let anyone = active("c4", P::base().child(P::permit().category("labs")));
    assert_eq!(
        read(&mum(with_consents(vec![anyone])), &lab()).rule,
        "proxy-no-consent",
        "an actor-less permit names nobody"
    );
}

#[test]
fn patient_facts_for_another_patient_or_consents_of_another_patient_are_ignored() {
    let c = active("c1", P::permit().actor("RelatedPerson/rp-mom"));
    let mut ctx = mum(with_consents(vec![c.clone()]));
    assert!(read(&ctx, &lab()).is_permit());
    ctx.acting_for = Some("p2".into());
    let mut theirs = lab();
    theirs.compartments = vec!["p2".into()];
    let v = read(&ctx, &theirs);
    assert_eq!(v.rule, "proxy-not-linked", "facts of p1 do not link the caregiver to p2");
    let mut other = (*c).clone();
    other.patient = "p9".into();
    let ctx = mum(with_consents(vec![Arc::new(other)]));
    assert_eq!(read(&ctx, &lab()).rule, "proxy-no-consent");
}

#[test]
fn proxy_linked_patient_sees_only_the_patient_resource_without_consent() {
    let ctx = mum(with_consents(vec![]));
    let mut pat = res("Patient", "p1", "demographics", &["N"]);
    assert_eq!(read(&ctx, &pat).rule, "proxy-linked-patient");
    pat.id = Some("p2".into());
    assert_eq!(
        read(&ctx, &pat).rule,
        "proxy-no-consent",
        "another Patient in the compartment (a link) is not the patient"
    );
    let s = evaluate_with(&ctx, rules(), Action::Search, &ResourceFacts::type_level("Observation"));
    assert_eq!(s.rule, "proxy-linked-patient");
    assert!(!search_admits(&ctx, &lab()));
    // Without patient facts (not loaded yet) the link from the principal still shows the Patient.
    let mut bare = ctx.clone();
    bare.patient = None;
    assert_eq!(read(&bare, &res("Patient", "p1", "demographics", &["N"])).rule, "proxy-linked-patient");
    assert_eq!(read(&bare, &lab()).rule, "proxy-no-consent");
}

#[test]
fn proxy_periods_purposes_and_actions() {
    let c = |p: P| mum(with_consents(vec![active("c", p)]));
    let mum_p = || P::permit().actor("RelatedPerson/rp-mom");
    assert!(read(&c(mum_p().period(Some("2026-01-01"), Some("2026-12-31"))), &lab()).is_permit());
    assert!(!read(&c(mum_p().period(Some("2026-07-01"), None)), &lab()).is_permit(), "not started");
    assert!(!read(&c(mum_p().period(None, Some("2026-06-14"))), &lab()).is_permit(), "ended");
    assert!(read(&c(mum_p().period(None, Some("2026-06-15"))), &lab()).is_permit(), "the end date is inclusive");
    // Nested provision periods narrow too.
    assert!(!read(&c(P::base().child(mum_p().period(Some("2027-01-01"), None))), &lab()).is_permit());
    // A purpose-limited permit needs that declared purpose.
    let treat = c(mum_p().purpose("TREAT"));
    assert_eq!(read(&treat, &lab()).rule, "proxy-no-consent", "purpose not declared");
    let mut declared = treat.clone();
    declared.purpose = Some("TREAT".into());
    assert!(read(&declared, &lab()).is_permit());
    // Actions: `access` covers reads; writes need `correct`; delete never.
    let access = c(mum_p().action("access"));
    assert!(read(&access, &lab()).is_permit());
    assert!(evaluate_with(&access, rules(), Action::Search, &ResourceFacts::type_level("*")).is_permit());
    assert_eq!(evaluate_with(&access, rules(), Action::Update, &lab()).rule, "proxy-read-only");
    let correct = c(mum_p().action("access").action("correct"));
    assert_eq!(evaluate_with(&correct, rules(), Action::Update, &lab()).rule, "proxy-consent");
    assert_eq!(evaluate_with(&correct, rules(), Action::Create, &lab()).rule, "proxy-consent");
    assert_eq!(evaluate_with(&correct, rules(), Action::Delete, &lab()).rule, "proxy-read-only");
    let only_correct = c(mum_p().action("correct"));
    assert_eq!(read(&only_correct, &lab()).rule, "proxy-no-consent", "correct alone does not cover reads");
    assert_eq!(
        evaluate_with(&c(mum_p()), rules(), Action::Patch, &lab()).rule,
        "proxy-read-only",
        "no action listed: reads only"
    );
}

#[test]
fn data_period_and_data_references() {
    let c = |p: P| mum(with_consents(vec![active("c", P::permit().actor("RelatedPerson/rp-mom").child(p))]));
    let mut old = lab();
    old.date_ms = Some(NOW - 400 * DAY);
    let mut undated = lab();
    undated.date_ms = None;
    // A permit limited to data of 2026 (here as the root's only content, nested in a named permit).
    let only = mum(with_consents(vec![active(
        "c",
        P::permit().actor("RelatedPerson/rp-mom").data_period(Some("2026-01-01"), None),
    )]));
    assert!(read(&only, &lab()).is_permit());
    assert!(!read(&only, &old).is_permit());
    assert!(!read(&only, &undated).is_permit(), "an undated record is not shown to lie in the period");
    // A deny of data before 2026 withholds undated data too.
    let deny_old = c(P::deny().data_period(None, Some("2025-12-31")));
    assert!(read(&deny_old, &lab()).is_permit());
    assert_eq!(read(&deny_old, &old).rule, "consent-deny");
    assert_eq!(read(&deny_old, &undated).rule, "consent-deny");
    for f in [&lab(), &old, &undated] {
        assert_eq!(search_admits(&deny_old, f), read(&deny_old, f).is_permit());
    }
    // Data references: one record, or records written by someone.
    let one = mum(with_consents(vec![active(
        "c",
        P::permit().actor("RelatedPerson/rp-mom").data("instance", "Observation/o1"),
    )]));
    assert!(read(&one, &lab()).is_permit());
    let mut o2 = lab();
    o2.id = Some("o2".into());
    assert!(!read(&one, &o2).is_permit());
    let by_lee = c(P::deny().data("authoredby", "Practitioner/dr-lee"));
    let mut written = lab();
    written.author = Some("Practitioner/dr-lee".into());
    assert_eq!(read(&by_lee, &written).rule, "consent-deny");
    assert!(read(&by_lee, &lab()).is_permit());
}

#[test]
fn codes_match_category_codings() {
    let lab_code = "http://terminology.hl7.org/CodeSystem/observation-category";
    let ctx =
        mum(with_consents(vec![active("c", P::permit().actor("RelatedPerson/rp-mom").code(lab_code, "laboratory"))]));
    let mut f = lab();
    assert!(!read(&ctx, &f).is_permit());
    f.category_codes = vec![format!("{lab_code}|laboratory")];
    assert!(read(&ctx, &f).is_permit());
    assert!(search_admits(&ctx, &f));
}

#[test]
fn nested_provisions_are_exceptions_and_deny_wins() {
    // Mum: everything, except behavioral health, except (again) her own entries.
    let tree = P::permit()
        .actor("RelatedPerson/rp-mom")
        .child(P::deny().label("PSY").child(P::permit().data("authoredby", "RelatedPerson/rp-mom")));
    let ctx = mum(with_consents(vec![active("c1", tree)]));
    let mut psy = res("Observation", "o2", "labs", &["BH", "PSY", "R"]);
    assert!(read(&ctx, &lab()).is_permit());
    assert_eq!(read(&ctx, &psy).rule, "consent-deny");
    psy.author = Some("RelatedPerson/rp-mom".into());
    assert!(read(&ctx, &psy).is_permit(), "the exception to the exception");
    assert!(search_admits(&ctx, &psy));
    // A deny in another consent wins over this permit.
    let other = active("c2", P::deny().label("PSY"));
    let ctx = mum(with_consents(vec![active("c1", P::permit().actor("RelatedPerson/rp-mom")), other]));
    let v = read(&ctx, &psy);
    assert_eq!((v.rule, v.consents), ("consent-deny", vec!["c2".to_string()]));
}

#[test]
fn a_criteria_free_root_is_a_base_not_a_rule() {
    // "Permit everything" with no criteria names nobody: no caregiver gains anything.
    let ctx = mum(with_consents(vec![active("c1", P::permit())]));
    assert_eq!(read(&ctx, &lab()).rule, "proxy-no-consent");
    // A deny base with a nested share does not block the care team, nor another consent.
    let facts = with_consents(vec![
        active("c1", P::deny().child(P::permit().actor("RelatedPerson/rp-mom").category("labs"))),
        active("c2", P::permit().actor("RelatedPerson/rp-mom").category("medications")),
    ]);
    assert!(read(&clinician("dr-kim", facts.clone()), &lab()).is_permit());
    let meds = res("MedicationRequest", "m1", "medications", &["N"]);
    assert_eq!(read(&mum(facts), &meds).rule, "proxy-consent");
}

#[test]
fn undeclared_purpose_meets_denies_not_permits() {
    let facts = with_consents(vec![active(
        "c1",
        P::permit().actor("RelatedPerson/rp-mom").child(P::deny().purpose("HRESCH").category("labs")),
    )]);
    assert_eq!(read(&mum(facts.clone()), &lab()).rule, "consent-deny", "the purpose might be research");
    let mut declared = mum(facts);
    declared.purpose = Some("FAMRQT".into());
    assert!(read(&declared, &lab()).is_permit());
}

#[test]
fn confidentiality_labels_cover_by_kind() {
    let facts =
        with_consents(vec![active("c1", P::permit().actor("RelatedPerson/rp-mom").child(P::deny().label("R")))]);
    let ctx = mum(facts);
    assert!(read(&ctx, &res("Observation", "o", "labs", &["N"])).is_permit());
    assert_eq!(read(&ctx, &res("Observation", "o", "labs", &["R"])).rule, "consent-deny");
    assert_eq!(read(&ctx, &res("Observation", "o", "labs", &["V"])).rule, "consent-deny", "a deny of R covers V");
    let permit_n = mum(with_consents(vec![active("c1", P::permit().actor("RelatedPerson/rp-mom").label("N"))]));
    assert!(read(&permit_n, &res("Observation", "o", "labs", &["L"])).is_permit(), "a permit for N covers L");
    assert!(!read(&permit_n, &res("Observation", "o", "labs", &["R"])).is_permit());
}

#[test]
fn revocation_and_expiry_bite_at_request_time() {
    let root = || P::permit().actor("RelatedPerson/rp-mom");
    for (c, permitted) in [
        (consent("c", "active", root()), true),
        (consent("c", "inactive", root()), false),
        (consent("c", "draft", root()), false),
        (consent("c", "proposed", root()), false),
        (consent("c", "rejected", root()), false),
        (consent("c", "entered-in-error", root()), false),
        (active("c", root().period(None, Some("2026-06-14"))), false),
    ] {
        assert_eq!(read(&mum(with_consents(vec![c.clone()])), &lab()).is_permit(), permitted, "{:?}", c.status);
    }
}

// ---- operator rules --------------------------------------------------------------------------

#[test]
fn adolescent_confidentiality_hides_sensitive_records_from_parents() {
    let everything = || with_consents(vec![active("c", P::permit().actor("RelatedPerson/rp-mom"))]);
    let sex = res("Observation", "o-sex", "labs", &["SEX", "R"]);
    for (birth, hidden) in [
        ("2014-06-15", true),  // 12 today
        ("2014-06-16", false), // 11, twelve tomorrow
        ("2008-06-16", true),  // 17, eighteen tomorrow
        ("2008-06-15", false), // 18 today
        ("2011", true),        // 14 or 15
        ("2008", true),        // 17 or 18: might be 17
        ("2014", true),        // 11 or 12: might be 12
        ("2015", false),       // 10 or 11
    ] {
        // (Without the end of parents' access at 18, which would end this consent too.)
        let rules = OperatorRules { proxy_end_age: None, ..OperatorRules::builtin().clone() };
        let gate = Gate::with_rules(Arc::new(TracingSink), Arc::new(rules.clone()));
        let ctx = mum(PatientFacts { birth_date: BirthDate::parse(birth), ..everything() });
        let v = evaluate_with(&ctx, &rules, Action::Read, &sex);
        assert_eq!(v.rule == "adolescent-confidentiality", hidden, "{birth}: {}", v.rule);
        assert_eq!(v.is_permit(), !hidden, "{birth}: {}", v.rule);
        let admitted = gate.permit_search(&ctx, Action::Search, Some("Observation")).unwrap().admits(&sex);
        assert_eq!(admitted, !hidden, "{birth}");
    }
    let teen = mum(PatientFacts { birth_date: BirthDate::parse("2011-02-01"), ..everything() });
    assert!(read(&teen, &lab()).is_permit(), "other records stay shared");
    let unknown = mum(PatientFacts { birth_date: None, ..everything() });
    assert!(read(&unknown, &sex).is_permit(), "without a birth date the rule cannot apply");
    // The patient and the care team are not affected.
    let kim = clinician("dr-kim", PatientFacts { birth_date: BirthDate::parse("2011-02-01"), ..everything() });
    assert!(read(&kim, &sex).is_permit());
    // Switched off.
    let off = OperatorRules { adolescent: None, ..OperatorRules::builtin().clone() };
    assert!(evaluate_with(&teen, &off, Action::Read, &sex).is_permit());
}

#[test]
fn parents_access_ends_at_majority() {
    // Given (2026-01-10) while the patient was 17; they turned 18 on 2026-03-01.
    let facts = PatientFacts {
        birth_date: BirthDate::parse("2008-03-01"),
        ..with_consents(vec![active("c", P::permit().actor("RelatedPerson/rp-mom"))])
    };
    let v = read(&mum(facts.clone()), &lab());
    assert_eq!(v.rule, "proxy-minor-access-ended");
    assert!(v.reason.contains("turned 18"), "{}", v.reason);
    assert!(!search_admits(&mum(facts.clone()), &lab()));
    // A consent the adult patient gave again counts.
    let mut again = consent_json("c2", "active", P::permit().actor("RelatedPerson/rp-mom"));
    again["dateTime"] = serde_json::json!("2026-03-02");
    let renewed =
        PatientFacts { consents: vec![Arc::new(portico_policy::parse_consent(&again).unwrap())], ..facts.clone() };
    assert_eq!(read(&mum(renewed), &lab()).rule, "proxy-consent");
    let off = OperatorRules { proxy_end_age: None, ..OperatorRules::builtin().clone() };
    assert!(evaluate_with(&mum(facts), &off, Action::Read, &lab()).is_permit());
}

#[test]
fn part2_needs_a_consent_naming_substance_use_records() {
    let sud = res("Condition", "c-sud", "conditions", &["BH", "ETH", "R"]);
    let all = P::permit().actor("RelatedPerson/rp-mom").actor("Practitioner/dr-lee");
    let v = read(&mum(with_consents(vec![active("c", all.clone())])), &sud);
    assert_eq!(v.rule, "part2-consent-required");
    assert!(v.reason.contains("42 CFR Part 2"));
    // Named by security label (in the same path), or by data reference.
    let named = with_consents(vec![active("c", all.clone().child(P::permit().label("ETH")))]);
    assert_eq!(read(&mum(named.clone()), &sud).rule, "proxy-consent");
    assert!(search_admits(&mum(named.clone()), &sud));
    assert_eq!(read(&clinician("dr-lee", named.clone()), &sud).rule, "clinician-consent");
    let by_ref = with_consents(vec![active("c", all.clone().data("instance", "Condition/c-sud"))]);
    assert_eq!(read(&mum(by_ref), &sud).rule, "proxy-consent");
    // Treating clinicians need a consent naming them too (any recipient, purpose treatment).
    assert_eq!(read(&clinician("dr-kim", with_consents(vec![])), &sud).rule, "part2-consent-required");
    let tpo = with_consents(vec![active("c", P::base().child(P::permit().label("ETH").purpose("TREAT")))]);
    let v = read(&clinician("dr-kim", tpo.clone()), &sud);
    assert_eq!((v.rule, v.consents), ("care-relationship", vec!["c".to_string()]));
    assert!(search_admits(&clinician("dr-kim", tpo), &sud));
    // The patient always; the rule switched off.
    assert!(read(&patient_ctx(), &sud).is_permit());
    let off = OperatorRules { part2: None, ..OperatorRules::builtin().clone() };
    assert!(evaluate_with(&clinician("dr-kim", with_consents(vec![])), &off, Action::Read, &sud).is_permit());
}

#[test]
fn results_are_held_for_review() {
    let mut new_lab = lab();
    new_lab.date_ms = Some(NOW - DAY);
    let share = || with_consents(vec![active("c", P::permit().actor("RelatedPerson/rp-mom"))]);
    let v = read(&patient_ctx(), &new_lab);
    assert_eq!(v.rule, "results-hold");
    assert!(v.reason.contains("3 days"), "{}", v.reason);
    assert_eq!(read(&mum(share()), &new_lab).rule, "results-hold");
    assert!(!search_admits(&patient_ctx(), &new_lab));
    assert!(search_admits(&patient_ctx(), &lab()));
    // Boundary: exactly 3 days old is released; the future is held.
    let mut edge = lab();
    edge.date_ms = Some(NOW - 3 * DAY);
    assert_eq!(read(&patient_ctx(), &edge).rule, "results-hold", "held for days, inclusive of the start");
    edge.date_ms = Some(NOW - 3 * DAY - 1);
    assert!(read(&patient_ctx(), &edge).is_permit());
    edge.date_ms = Some(NOW + DAY);
    assert_eq!(read(&patient_ctx(), &edge).rule, "results-hold");
    // Not held: what the patient (or this caregiver) entered, other categories and types,
    // undated results, creating one, and clinicians.
    let mut own = new_lab.clone();
    own.author = Some("Patient/p1".into());
    assert!(read(&patient_ctx(), &own).is_permit());
    assert!(search_admits(&patient_ctx(), &own));
    own.author = Some("RelatedPerson/rp-mom".into());
    assert!(read(&mum(share()), &own).is_permit());
    assert_eq!(read(&patient_ctx(), &own).rule, "results-hold", "mum's entry is not the patient's");
    let mut vitals = new_lab.clone();
    vitals.category = "vitals".into();
    assert!(read(&patient_ctx(), &vitals).is_permit());
    let mut cond = new_lab.clone();
    cond.resource_type = "Condition".into();
    assert!(read(&patient_ctx(), &cond).is_permit());
    let mut undated = new_lab.clone();
    undated.date_ms = None;
    assert!(read(&patient_ctx(), &undated).is_permit());
    assert!(evaluate_with(&patient_ctx(), rules(), Action::Create, &new_lab).is_permit());
    assert_eq!(evaluate_with(&patient_ctx(), rules(), Action::Update, &new_lab).rule, "results-hold");
    assert!(read(&clinician("dr-kim", share()), &new_lab).is_permit());
    let off = OperatorRules { results_hold: None, ..OperatorRules::builtin().clone() };
    assert!(evaluate_with(&patient_ctx(), &off, Action::Read, &new_lab).is_permit());
}

#[test]
fn caregivers_get_redaction_obligations() {
    let ctx = mum(with_consents(vec![active("c", P::permit().actor("RelatedPerson/rp-mom"))]));
    let v = read(&ctx, &lab());
    assert_eq!(
        v.obligations,
        vec![Obligation::Redact { resource_type: "Observation".into(), elements: vec!["note".into()] }]
    );
    assert!(read(&ctx, &res("Condition", "c", "conditions", &["N"])).obligations.is_empty());
    let permit = Gate::new(Arc::new(TracingSink)).permit_search(&ctx, Action::Everything, None).unwrap();
    assert_eq!(permit.obligations().len(), 1);
    assert!(read(&patient_ctx(), &lab()).obligations.is_empty(), "patients see their records whole");
    let mut body = serde_json::json!({"resourceType": "Observation", "note": [{"text": "x"}]});
    assert!(portico_policy::obligation::apply(&v.obligations, &mut body));
    assert!(body.get("note").is_none());
}

// ---- clinicians ------------------------------------------------------------------------------

#[test]
fn clinicians_with_a_care_relationship_treat() {
    let facts = with_consents(vec![active("c", P::deny().actor("Practitioner/dr-kim").category("documents"))]);
    let kim = clinician("dr-kim", facts.clone());
    assert_eq!(read(&kim, &lab()).rule, "care-relationship");
    let doc = res("DocumentReference", "d", "documents", &["N"]);
    let v = read(&kim, &doc);
    assert_eq!((v.rule, v.consents), ("consent-deny", vec!["c".to_string()]));
    assert!(!search_admits(&kim, &doc));
    assert!(search_admits(&kim, &lab()));
    let mut other = lab();
    other.compartments = vec!["p2".into()];
    assert_eq!(read(&kim, &other).rule, "outside-compartment");
    for a in [Action::Create, Action::Update, Action::Patch, Action::Delete] {
        assert_eq!(evaluate_with(&kim, rules(), a, &lab()).rule, "clinician-read-only");
    }
    let mut nobody = kim.clone();
    nobody.acting_for = None;
    assert_eq!(read(&nobody, &lab()).rule, "care-relationship-required");
    let mut pay = kim.clone();
    pay.purpose = Some("HPAYMT".into());
    assert_eq!(read(&pay, &lab()).rule, "purpose-not-permitted");
    assert_eq!(
        evaluate_with(&pay, rules(), Action::Search, &ResourceFacts::type_level("*")).rule,
        "purpose-not-permitted"
    );
}

#[test]
fn clinicians_without_one_see_what_a_consent_names() {
    let facts = with_consents(vec![active(
        "c",
        P::permit()
            .actor_named("Practitioner/dr-lee", "Dr. Lee at Riverside Cardiology")
            .category("labs")
            .purpose("TREAT"),
    )]);
    let lee = clinician("dr-lee", facts.clone());
    assert_eq!(read(&lee, &lab()).rule, "clinician-consent");
    assert_eq!(read(&lee, &res("Condition", "c1", "conditions", &["N"])).rule, "care-relationship-required");
    let bob = clinician("dr-bob", facts);
    assert_eq!(read(&bob, &lab()).rule, "care-relationship-required");
    assert_eq!(
        evaluate_with(&bob, rules(), Action::Search, &ResourceFacts::type_level("Observation")).rule,
        "care-relationship-required"
    );
    assert!(search_admits(&lee, &lab()));
}

#[test]
fn break_the_glass_is_reasoned_time_boxed_and_flagged() {
    let facts = with_consents(vec![active("c", P::deny().label("PSY"))]);
    let mut er = clinician("dr-bob", facts);
    er.purpose = Some("ETREAT".into());
    let psy = res("Observation", "o", "labs", &["PSY", "R"]);
    assert_eq!(read(&er, &psy).rule, "break-the-glass-reason-required");
    er.break_glass_reason = Some("   ".into());
    assert_eq!(read(&er, &psy).rule, "break-the-glass-reason-required");
    er.break_glass_reason = Some("unconscious, allergy history needed".into());
    assert_eq!(read(&er, &psy).rule, "break-the-glass-expired", "never started");
    er.break_glass_at_ms = Some(NOW - 59 * 60_000);
    let v = read(&er, &psy);
    assert_eq!(v.rule, "break-the-glass");
    assert_eq!(v.obligations, vec![Obligation::Flag { reason: "unconscious, allergy history needed".into() }]);
    let s = evaluate_with(&er, rules(), Action::Everything, &ResourceFacts::type_level("*"));
    assert_eq!(
        (s.rule, s.compartments.clone(), s.filter.clone()),
        ("break-the-glass", Some(vec!["p1".to_string()]), None)
    );
    assert_eq!(evaluate_with(&er, rules(), Action::Update, &psy).rule, "clinician-read-only");
    er.break_glass_at_ms = Some(NOW - 60 * 60_000);
    assert_eq!(read(&er, &psy).rule, "break-the-glass-expired");
    er.break_glass_at_ms = Some(NOW + 60_000);
    assert_eq!(read(&er, &psy).rule, "break-the-glass-expired", "a start in the future is not trusted");
    er.break_glass_at_ms = Some(NOW);
    let off = OperatorRules { break_glass_minutes: None, ..OperatorRules::builtin().clone() };
    assert_eq!(evaluate_with(&er, &off, Action::Read, &psy).rule, "break-the-glass-unavailable");
}

// ---- scopes, gate, explanations --------------------------------------------------------------

#[test]
fn app_scopes_still_narrow_consent_permits() {
    let mut ctx = mum(with_consents(vec![active("c", P::permit().actor("RelatedPerson/rp-mom"))]));
    ctx.scopes = Some(ScopeSet::parse("patient/Condition.rs").unwrap());
    assert_eq!(read(&ctx, &lab()).rule, "outside-scopes");
    assert_eq!(read(&ctx, &res("Condition", "c1", "conditions", &["N"])).rule, "proxy-consent");
    let s = evaluate_with(&ctx, rules(), Action::Search, &ResourceFacts::type_level("Condition"));
    assert!(s.limits.is_some() && s.filter.is_some(), "scopes and consents both reach the store");
}

#[test]
fn the_gate_records_the_deciding_consents_and_uses_its_rules() {
    let gate = Gate::new(Arc::new(TracingSink));
    let ctx = mum(with_consents(vec![active("c7", P::permit().actor("RelatedPerson/rp-mom"))]));
    ctx.scope.begin(portico_audit::Interaction::Read, Some("Observation"));
    let d = gate.decide(&ctx, Action::Read, &lab()).unwrap();
    assert!(d.is_permit());
    let rec = &ctx.scope.finish(200, NOW)[0];
    assert_eq!(rec.consents, vec!["c7"]);
    assert_eq!(rec.rules, vec!["proxy-consent"]);
    assert_eq!(rec.on_behalf_of.as_deref(), Some("p1"));

    let strict = Gate::with_rules(Arc::new(TracingSink), Arc::new(OperatorRules::none()));
    let mut new_lab = lab();
    new_lab.date_ms = Some(NOW);
    assert!(strict.decide(&patient_ctx(), Action::Read, &new_lab).unwrap().is_permit());
    assert!(!gate.decide(&patient_ctx(), Action::Read, &new_lab).unwrap().is_permit());
    assert!(strict.rules().results_hold.is_none());
}

#[test]
fn instance_history_is_confined_by_the_consent_filter() {
    let gate = Gate::new(Arc::new(TracingSink));
    let ctx = mum(with_consents(vec![active("c", P::permit().actor("RelatedPerson/rp-mom").category("labs"))]));
    let permit = gate.permit_instance_history(&ctx, &lab()).unwrap();
    assert!(permit.admits(&lab()));
    let mut old_version = lab();
    old_version.version = Some(0);
    old_version.category = "notes".into();
    assert!(!permit.admits(&old_version), "an old version in another category stays hidden");
    old_version.category = "labs".into();
    old_version.labels = vec!["SEX".into(), "R".into()];
    assert!(permit.admits(&old_version), "adult patient: no adolescent rule");
}

#[test]
fn explanations_come_from_the_same_data() {
    let c = active(
        "c",
        P::base().period(Some("2026-01-10"), Some("2026-12-31")).child(
            P::permit()
                .actor_named("Practitioner/dr-lee", "Dr. Lee at Riverside Cardiology")
                .category("labs")
                .category("medications")
                .purpose("TREAT"),
        ),
    );
    assert_eq!(
        explain::consent(&c, NOW).join(" "),
        "Dr. Lee at Riverside Cardiology can see your lab results and medications for your treatment until 31 \
         December 2026. You can stop this at any time."
    );
    // A denied request, told to the requester and to the patient reading their access log.
    let teen = mum(PatientFacts {
        birth_date: BirthDate::parse("2011-02-01"),
        ..with_consents(vec![active("c", P::permit().actor("RelatedPerson/rp-mom"))])
    });
    let sex = res("Observation", "o-sex", "labs", &["SEX", "R"]);
    let v = read(&teen, &sex);
    assert_eq!(v.reason, "You cannot see reproductive-health records because of adolescent confidentiality rules.");
    assert_eq!(
        explain::decision(&v, &sex, rules(), Audience::Account("Your daughter")),
        "Your daughter's account cannot see reproductive-health records because of adolescent confidentiality rules."
    );
    // Other decisions, told to the patient about a caregiver's account.
    let mum_ctx = mum(with_consents(vec![active("c", P::permit().actor("RelatedPerson/rp-mom").category("labs"))]));
    let meds = res("MedicationRequest", "m", "medications", &["N"]);
    let v = read(&mum_ctx, &meds);
    assert_eq!(v.reason, "You cannot see these medications: the person you care for has not shared them with you.");
    assert_eq!(
        explain::decision(&v, &meds, rules(), Audience::Account("Your mother")),
        "Your mother's account cannot see these medications: you have not shared them with it."
    );
    let v = read(&mum_ctx, &lab());
    assert_eq!(
        explain::decision(&v, &lab(), rules(), Audience::Account("Your mother")),
        "Your mother's account could see these lab results because you shared them."
    );
}

#[test]
fn consent_explanations_cover_states_and_shapes() {
    let mum_share = || {
        P::permit()
            .actor_named("RelatedPerson/rp-mom", "Mum")
            .category("labs")
            .action("access")
            .action("correct")
            .child(P::deny().label("PSY"))
            .data_period(Some("2020-01-01"), None)
    };
    let c = active("c", P::base().child(mum_share()).child(P::deny().label("ETH")));
    assert_eq!(
        explain::consent(&c, NOW),
        vec![
            "Mum can see and correct your lab results, from records dated 1 January 2020 on. This does not include \
             your behavioral-health records.",
            "Your substance-use records are not shared with anyone.",
            "You can stop this at any time.",
        ]
    );
    assert_eq!(
        explain::consent(&consent("c", "inactive", mum_share()), NOW),
        vec!["This sharing was stopped; it no longer lets anyone see your records."]
    );
    let ended = active("c", mum_share().period(None, Some("2026-03-31")));
    assert_eq!(
        explain::consent(&ended, NOW),
        vec!["This sharing ended on 31 March 2026; it no longer lets anyone see your records."]
    );
    let later = active("c", mum_share().period(Some("2026-09-01"), None));
    assert!(explain::consent(&later, NOW).contains(&"It starts on 1 September 2026.".to_string()));
    let care = active("c", P::base().child(P::permit().label("ETH").purpose("TREAT")));
    assert_eq!(
        explain::consent(&care, NOW)[0],
        "Clinicians who treat you can see your substance-use records for your treatment."
    );
}
