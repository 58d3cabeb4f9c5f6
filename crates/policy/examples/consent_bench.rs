//! Nanoseconds per consent decision (`engine::evaluate_with`) for a patient with 20 active
//! consents of mixed provisions (named permits for relatives and clinicians, categories,
//! classes, labels, purposes, periods, data periods, data references, nested denies and
//! exceptions), under the builtin operator rules.
//!
//! `CARGO_TARGET_DIR=/var/tmp/portico-release cargo run --release -p portico-policy --example consent_bench`
//! (optional argument: iterations per case, default 1,000,000).

use portico_policy::consent::{ACTION_SYSTEM, CATEGORY_SYSTEM, PURPOSE_SYSTEM, RESOURCE_TYPE_SYSTEM, SCOPE_SYSTEM};
use portico_policy::engine::evaluate_with;
use portico_policy::{
    Action, BirthDate, ConsentRecord, OperatorRules, PatientFacts, Principal, RequestContext, ResourceFacts,
    parse_consent,
};
use serde_json::{Value, json};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const NOW: i64 = 1_781_524_800_000; // 2026-06-15T12:00:00Z
const DAY: i64 = 86_400_000;

fn actor(r: &str) -> Value {
    json!({"role": {"coding": [{"code": "IRCP"}]}, "reference": {"reference": r}})
}

fn cat(c: &str) -> Value {
    json!({"system": CATEGORY_SYSTEM, "code": c})
}

/// Consent `i` of 20: a rotating mix of shapes.
fn consent(i: usize) -> Arc<ConsentRecord> {
    let who = ["RelatedPerson/rp-dad", "RelatedPerson/rp-aunt", "Practitioner/dr-lee", "Practitioner/dr-ng"][i % 4];
    let provision = match i % 5 {
        0 => json!({"provision": [{"type": "permit", "actor": [actor(who)], "class": [cat("labs"), cat("medications")],
                     "purpose": [{"system": PURPOSE_SYSTEM, "code": "TREAT"}],
                     "provision": [{"type": "deny", "securityLabel": [{"code": "PSY"}]}]}]}),
        1 => json!({"type": "permit", "actor": [actor(who)], "period": {"start": "2026-01-01", "end": "2026-12-31"},
                     "class": [{"system": RESOURCE_TYPE_SYSTEM, "code": "Condition"}, {"system": RESOURCE_TYPE_SYSTEM, "code": "AllergyIntolerance"}],
                     "dataPeriod": {"start": "2020-01-01"}}),
        2 => {
            json!({"provision": [{"type": "deny", "securityLabel": [{"code": "HIV"}], "action": [{"coding": [{"system": ACTION_SYSTEM, "code": "disclose"}]}]},
                                  {"type": "permit", "actor": [actor(who)], "class": [cat("immunizations")]}]})
        }
        3 => json!({"provision": [{"type": "permit", "actor": [actor(who)], "class": [cat("vitals")],
                     "provision": [{"type": "deny", "data": [{"meaning": "authoredby", "reference": {"reference": "Practitioner/dr-x"}}],
                                    "provision": [{"type": "permit", "dataPeriod": {"end": "2024-01-01"}}]}]}]}),
        _ => json!({"type": "deny", "actor": [actor(who)], "class": [cat("notes")], "securityLabel": [{"code": "V"}]}),
    };
    let v = json!({
        "resourceType": "Consent", "id": format!("c{i}"), "status": "active",
        "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": "patient-privacy"}]},
        "patient": {"reference": "Patient/p1"}, "dateTime": "2026-01-10", "provision": provision,
    });
    Arc::new(parse_consent(&v).expect("bench consent parses"))
}

/// 20 consents; the last one is Mum's (so a permit for her walks all of them).
fn consents() -> Vec<Arc<ConsentRecord>> {
    let mut cs: Vec<_> = (0..19).map(consent).collect();
    let mums = json!({
        "resourceType": "Consent", "id": "c-mum", "status": "active",
        "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": "patient-privacy"}]},
        "patient": {"reference": "Patient/p1"}, "dateTime": "2026-01-10",
        "provision": {"provision": [{"type": "permit", "actor": [actor("RelatedPerson/rp-mom")],
            "class": [cat("labs"), cat("medications"), cat("conditions")],
            "provision": [{"type": "deny", "securityLabel": [{"code": "ETH"}]}]}]},
    });
    cs.push(Arc::new(parse_consent(&mums).unwrap()));
    cs
}

fn facts(resource_type: &str, category: &str, labels: &[&str]) -> ResourceFacts {
    let mut f = ResourceFacts::type_level(resource_type);
    f.id = Some("r1".into());
    f.version = Some(3);
    f.compartments = vec!["p1".into()];
    f.category = category.into();
    f.labels = labels.iter().map(|s| s.to_string()).collect();
    f.date_ms = Some(NOW - 30 * DAY);
    f.author = Some("Practitioner/dr-kim".into());
    f
}

fn ctx(principal: Principal, pf: &Arc<PatientFacts>) -> RequestContext {
    let mut c = RequestContext::new(principal, "bench");
    c.now_ms = NOW;
    c.acting_for = Some("p1".into());
    c.patient = Some(pf.clone());
    c
}

fn main() {
    let iterations: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let rules = OperatorRules::builtin();
    let pf = Arc::new(PatientFacts {
        patient: "p1".into(),
        birth_date: BirthDate::parse("1980-05-05"),
        consents: consents(),
        care_team: vec!["dr-kim".into()],
        proxies: vec!["rp-mom".into()],
    });
    assert_eq!(pf.consents.iter().filter(|c| c.in_force(NOW)).count(), 20);
    let mum = ctx(Principal::Caregiver { user: "u-mum".into(), patients: vec!["p1".into()] }, &pf);
    let kim = ctx(Principal::Clinician { user: "u-kim".into(), practitioner: "dr-kim".into() }, &pf);
    let lee = ctx(Principal::Clinician { user: "u-lee".into(), practitioner: "dr-lee".into() }, &pf);
    let patient = ctx(Principal::Patient { patient: "p1".into() }, &pf);

    let lab = facts("Observation", "labs", &["N"]);
    let sud = facts("MedicationRequest", "medications", &["ETH", "R"]);
    let note = facts("DocumentReference", "notes", &["N"]);
    let cases: Vec<(&str, &RequestContext, Action, ResourceFacts)> = vec![
        ("caregiver read, permitted by the 20th consent", &mum, Action::Read, lab.clone()),
        ("caregiver read, denied by a nested deny (ETH)", &mum, Action::Read, sud.clone()),
        ("caregiver read, no consent names it", &mum, Action::Read, note.clone()),
        ("clinician read, care relationship, 20 consents checked for denies", &kim, Action::Read, lab.clone()),
        ("clinician read, care relationship, Part 2 record", &kim, Action::Read, sud),
        ("clinician read, by consent (no care relationship)", &lee, Action::Read, lab.clone()),
        ("patient read, own record", &patient, Action::Read, lab),
        ("caregiver search: filter compiled for SQL", &mum, Action::Search, ResourceFacts::type_level("Observation")),
        ("clinician $everything: filter compiled for SQL", &kim, Action::Everything, ResourceFacts::type_level("*")),
    ];

    println!("{iterations} iterations per case, {} active consents", pf.consents.len());
    for (name, ctx, action, f) in &cases {
        for _ in 0..iterations / 10 {
            black_box(evaluate_with(black_box(ctx), rules, black_box(*action), black_box(f)));
        }
        // Best of three rounds (this VM is shared).
        let mut best = f64::MAX;
        let mut last = None;
        for _ in 0..3 {
            let start = Instant::now();
            for _ in 0..iterations {
                let v = evaluate_with(black_box(ctx), rules, black_box(*action), black_box(f));
                last = Some((v.effect, v.rule));
                black_box(v);
            }
            best = best.min(start.elapsed().as_nanos() as f64 / iterations as f64);
        }
        let (effect, rule) = last.unwrap();
        println!("{best:>8.1} ns/decision  {name}  -> {effect:?} {rule}");
    }
}
