//! Nanoseconds per `engine::evaluate` for a patient whose app holds ~20 SMART scopes.
//!
//! `CARGO_TARGET_DIR=/var/tmp/portico-release cargo run --release -p portico-policy --example decision_bench`
//! (optional argument: iterations per case, default 2,000,000).

use portico_policy::engine::evaluate;
use portico_policy::{Action, Principal, RequestContext, ResourceFacts, ScopeSet};
use std::hint::black_box;
use std::time::Instant;

const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

fn main() {
    let iterations: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let scopes = ScopeSet::parse(concat!(
        "openid fhirUser launch/patient offline_access ",
        "patient/Patient.rs patient/Condition.rs patient/MedicationRequest.rs patient/AllergyIntolerance.rs ",
        "patient/Immunization.rs patient/Procedure.rs patient/Encounter.rs patient/DocumentReference.rs ",
        "patient/DiagnosticReport.rs patient/CarePlan.rs patient/CareTeam.rs patient/Goal.rs ",
        "patient/Observation.rs?category=vital-signs patient/Observation.rs?category=social-history ",
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory ",
        "patient/Coverage.rs patient/Device.rs"
    ))
    .expect("scopes parse");
    assert!(scopes.scopes.len() >= 20, "{} scopes", scopes.scopes.len());

    let mut ctx = RequestContext::new(Principal::Patient { patient: "p1".into() }, "bench");
    ctx.scopes = Some(scopes);
    ctx.client = Some("diary".into());

    let lab = ResourceFacts {
        resource_type: "Observation".into(),
        id: Some("o1".into()),
        version: Some(3),
        compartments: vec!["p1".into()],
        category: "labs".into(),
        labels: vec![],
        category_codes: vec![LAB.into()],
        date_ms: None,
        author: None,
    };
    let mut exam = lab.clone();
    exam.category_codes = vec!["http://terminology.hl7.org/CodeSystem/observation-category|exam".into()];
    let mut device = lab.clone();
    device.resource_type = "Device".into();
    device.category_codes.clear();

    let cases: [(&str, Action, ResourceFacts); 6] = [
        ("read, permitted (Observation, lab category, 17th scope)", Action::Read, lab.clone()),
        ("read, permitted (Device, last scope)", Action::Read, device),
        ("read, denied by category narrowing", Action::Read, exam),
        ("update, denied (no u letter)", Action::Update, lab),
        ("search Observation (limits built)", Action::Search, ResourceFacts::type_level("Observation")),
        ("$everything (limits over all scopes)", Action::Everything, ResourceFacts::type_level("*")),
    ];

    println!("{iterations} iterations per case, {} scopes", ctx.scopes.as_ref().map_or(0, |s| s.scopes.len()));
    for (name, action, facts) in &cases {
        // Warm up, then measure the best of three rounds (this VM is shared).
        for _ in 0..iterations / 10 {
            black_box(evaluate(black_box(&ctx), black_box(*action), black_box(facts)));
        }
        let mut best = f64::MAX;
        let mut effect = None;
        for _ in 0..3 {
            let start = Instant::now();
            for _ in 0..iterations {
                let v = evaluate(black_box(&ctx), black_box(*action), black_box(facts));
                effect = Some(v.effect);
                black_box(v);
            }
            best = best.min(start.elapsed().as_nanos() as f64 / iterations as f64);
        }
        println!("{best:>8.1} ns/evaluate  {name}  -> {effect:?}");
    }
}
