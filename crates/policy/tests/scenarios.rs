//! Table-driven scenarios: principal × relationship × consent state × category ×
//! sensitivity × path (read by id, and search) → expected effect and rule, as pure engine
//! tests under the builtin operator rules. 8 principals × 6 consent states × 7 resources ×
//! 2 paths = 672 cases.

mod common;

use common::*;
use portico_policy::explain::{self, Audience};
use portico_policy::{
    Action, BirthDate, Gate, OperatorRules, PatientFacts, RequestContext, ResourceFacts, TracingSink,
};
use std::sync::Arc;

/// The resources of patient p1 every scenario is asked about, by column.
fn resources() -> Vec<(&'static str, ResourceFacts)> {
    let mut new_lab = res("Observation", "o-new", "labs", &["N"]);
    new_lab.date_ms = Some(NOW - DAY);
    let mut patient = res("Patient", "p1", "demographics", &["N"]);
    patient.date_ms = None;
    vec![
        ("lab", res("Observation", "o-lab", "labs", &["N"])),
        ("lab-psy", res("Observation", "o-psy", "labs", &["BH", "PSY", "R"])),
        ("med-eth", res("MedicationRequest", "m-eth", "medications", &["ETH", "R"])),
        ("doc", res("DocumentReference", "d-1", "documents", &["N"])),
        ("lab-sex", res("Observation", "o-sex", "labs", &["SEX", "R"])),
        ("lab-new", new_lab),
        ("patient", patient),
    ]
}

/// The named share: Mum and Dr. Lee may see labs and medications.
fn share() -> P {
    P::permit().actor("RelatedPerson/rp-mom").actor("Practitioner/dr-lee").category("labs").category("medications")
}

/// p1's consents in each state.
fn consents(state: &str) -> Vec<Arc<portico_policy::ConsentRecord>> {
    match state {
        "none" => vec![],
        "permit" => vec![active("c-share", P::base().child(share()))],
        "inactive" => vec![consent("c-share", "inactive", P::base().child(share()))],
        "expired" => vec![active("c-share", P::base().period(Some("2026-01-01"), Some("2026-03-31")).child(share()))],
        "denypsy" => vec![active("c-share", P::base().child(share()).child(P::deny().label("PSY")))],
        "part2" => vec![
            active("c-share", P::base().child(share())),
            active("c-sud", P::base().child(P::permit().label("ETH").purpose("TREAT"))),
        ],
        other => panic!("unknown state {other}"),
    }
}

/// The request context of each principal, with p1's facts in `state`.
fn principal(name: &str, state: &str) -> RequestContext {
    let facts = patient_facts(consents(state));
    match name {
        "patient" => patient_ctx(),
        "mum" => mum(facts),
        "stranger" => stranger(),
        "mum-teen" => mum(PatientFacts { birth_date: BirthDate::parse("2011-02-01"), ..facts }),
        "kim" => clinician("dr-kim", facts),
        "lee" => clinician("dr-lee", facts),
        "kim-etreat" => {
            let mut c = clinician("dr-kim", facts);
            c.purpose = Some("ETREAT".into());
            c.break_glass_reason = Some("unconscious in A&E".into());
            c.break_glass_at_ms = Some(NOW - 10 * 60_000);
            c
        }
        "kim-hpaymt" => {
            let mut c = clinician("dr-kim", facts);
            c.purpose = Some("HPAYMT".into());
            c
        }
        other => panic!("unknown principal {other}"),
    }
}

const STATES: [&str; 6] = ["none", "permit", "inactive", "expired", "denypsy", "part2"];

/// principal, states (`*` = all, `a,b` = some), then per resource column (lab, lab-psy,
/// med-eth, doc, lab-sex, lab-new, patient) the effect (`P`/`D`) and rule (abbreviated).
const TABLE: &str = "
patient    *                        P:own  P:own  P:own  P:own  P:own  D:hold P:own
mum        none,inactive,expired    D:pnc  D:pnc  D:pnc  D:pnc  D:pnc  D:hold P:pl
mum        permit,part2             P:pc   P:pc   D:p2   D:pnc  P:pc   D:hold P:pl
mum        denypsy                  P:pc   D:cd   D:p2   D:pnc  P:pc   D:hold P:pl
stranger   *                        D:nl   D:nl   D:nl   D:nl   D:nl   D:nl   D:nl
mum-teen   none,inactive,expired    D:pnc  D:ado  D:pnc  D:pnc  D:ado  D:hold P:pl
mum-teen   permit,part2,denypsy     P:pc   D:ado  D:p2   D:pnc  D:ado  D:hold P:pl
kim        none,permit,inactive,expired P:care P:care D:p2 P:care P:care P:care P:care
kim        denypsy                  P:care D:cd   D:p2   P:care P:care P:care P:care
kim        part2                    P:care P:care P:care P:care P:care P:care P:care
lee        none,inactive,expired    D:crr  D:crr  D:crr  D:crr  D:crr  D:crr  D:crr
lee        permit,part2             P:cc   P:cc   D:p2   D:crr  P:cc   P:cc   D:crr
lee        denypsy                  P:cc   D:cd   D:p2   D:crr  P:cc   P:cc   D:crr
kim-etreat *                        P:btg  P:btg  P:btg  P:btg  P:btg  P:btg  P:btg
kim-hpaymt none,permit,inactive,expired,part2 D:pnp D:pnp D:pnp D:pnp D:pnp D:pnp D:pnp
kim-hpaymt denypsy                  D:pnp  D:cd   D:pnp  D:pnp  D:pnp  D:pnp  D:pnp
";

fn rule_id(abbrev: &str) -> &'static str {
    match abbrev {
        "own" => "patient-own-compartment",
        "hold" => "results-hold",
        "pc" => "proxy-consent",
        "pnc" => "proxy-no-consent",
        "pl" => "proxy-linked-patient",
        "p2" => "part2-consent-required",
        "cd" => "consent-deny",
        "ado" => "adolescent-confidentiality",
        "nl" => "proxy-not-linked",
        "care" => "care-relationship",
        "cc" => "clinician-consent",
        "crr" => "care-relationship-required",
        "btg" => "break-the-glass",
        "pnp" => "purpose-not-permitted",
        other => panic!("unknown rule abbreviation {other}"),
    }
}

#[test]
fn scenario_table() {
    let gate = Gate::new(Arc::new(TracingSink));
    let rules = OperatorRules::builtin();
    let resources = resources();
    let mut cases = 0;
    let mut covered: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    for line in TABLE.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 2 + resources.len(), "{line}");
        let who = cols[0];
        let states: Vec<&str> = if cols[1] == "*" { STATES.to_vec() } else { cols[1].split(',').collect() };
        for state in states {
            covered.push((who.to_string(), state.to_string()));
            let ctx = principal(who, state);
            for ((name, facts), expect) in resources.iter().zip(&cols[2..]) {
                let (effect, abbrev) = expect.split_once(':').unwrap();
                let rule = rule_id(abbrev);
                let case = format!("{who} / {state} / {name}");
                // Read by id.
                let v = portico_policy::engine::evaluate_with(&ctx, rules, Action::Read, facts);
                cases += 1;
                if v.is_permit() != (effect == "P") || v.rule != rule {
                    failures.push(format!(
                        "{case}: read gave {:?} {} ({}), expected {effect} {rule}",
                        v.effect, v.rule, v.reason
                    ));
                }
                if v.reason.trim().is_empty() || v.reason != explain::decision(&v, facts, rules, Audience::Requester) {
                    failures.push(format!("{case}: the reason is not the explanation"));
                }
                if !v.is_permit() && v.consents.is_empty() && rule == "consent-deny" {
                    failures.push(format!("{case}: a consent deny names no consent"));
                }
                // Search: the permit's SQL filter admits exactly what the read permits.
                cases += 1;
                let admitted = gate
                    .permit_search(&ctx, Action::Search, Some(&facts.resource_type))
                    .map(|p| p.admits(facts))
                    .unwrap_or(false);
                if admitted != (effect == "P") {
                    failures.push(format!("{case}: search admits {admitted}, expected {effect}"));
                }
            }
        }
    }
    // Every principal in every state, exactly once.
    let mut sorted = covered.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), covered.len(), "a (principal, state) appears twice");
    assert_eq!(covered.len(), 8 * STATES.len());
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(cases, 672);
}
