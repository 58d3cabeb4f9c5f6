//! What loading a request's patient facts costs (`Store::patient_facts`, run once per
//! caregiver or clinician request): one patient with a chart, a few consents, a CareTeam and
//! Encounters, among other patients; the caregiver's and the clinician's load timed
//! back to back.
//!
//!   cargo run --release -p portico-store --example facts_bench -- sqlite:///tmp/f.db [N]
//!   cargo run --release -p portico-store --example facts_bench -- postgres://u:p@host/db [N]

use portico_audit::{Chainer, MacKey};
use portico_fhir::classify::Classifier;
use portico_policy::{Action, Gate, Principal, RequestContext, TracingSink};
use portico_store::{FactsWanted, SqlStore, Store, StoreConfig, WriteAudit, WriteKind, WriteOp, WriteResult, prepare};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

async fn put_all(store: &SqlStore, bodies: Vec<Value>) {
    let gate = Gate::new(Arc::new(TracingSink));
    let ctx = RequestContext::new(Principal::Operator, "bench");
    let mut ops = Vec::new();
    for body in bodies {
        let rt = body["resourceType"].as_str().unwrap().to_string();
        let id = body["id"].as_str().unwrap().to_string();
        let prepared = prepare(&rt, &id, body, Classifier::builtin());
        let permit = gate.permit_write(&ctx, Action::Create, None, &prepared.facts).unwrap();
        ops.push((
            permit,
            WriteOp {
                kind: WriteKind::Create,
                resource_type: rt,
                id,
                if_match: None,
                prepared: Some(prepared),
                condition: None,
            },
        ));
    }
    let chainer = Chainer::new(MacKey::new(&[3; 32]));
    let records = |_: &[WriteResult]| Vec::new();
    store.write(ops, &WriteAudit { chainer: &chainer, records: &records }).await.unwrap();
}

fn chart(p: &str) -> Vec<Value> {
    let subject = json!({"reference": format!("Patient/{p}")});
    let mut v = vec![
        json!({"resourceType": "Patient", "id": p, "birthDate": "2011-05-06"}),
        json!({"resourceType": "RelatedPerson", "id": format!("{p}-rp"), "patient": subject}),
        json!({"resourceType": "CareTeam", "id": format!("{p}-team"), "status": "active", "subject": subject,
            "participant": [{"member": {"reference": format!("Practitioner/{p}-d1")}}, {"member": {"reference": format!("Practitioner/{p}-d2")}}]}),
    ];
    for i in 0..3 {
        v.push(json!({"resourceType": "Encounter", "id": format!("{p}-enc{i}"), "status": if i == 0 { "in-progress" } else { "finished" },
            "class": {"code": "AMB"}, "subject": subject, "participant": [{"individual": {"reference": format!("Practitioner/{p}-d{i}")}}]}));
    }
    for i in 0..3 {
        v.push(json!({"resourceType": "Consent", "id": format!("{p}-c{i}"), "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}], "patient": subject, "dateTime": "2024-01-01",
            "provision": {"type": "permit", "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PRN"}]},
                "reference": {"reference": format!("RelatedPerson/{p}-rp")}}],
                "class": [{"system": "urn:portico:category", "code": "labs"}],
                "provision": [{"type": "deny", "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}]}}));
    }
    for i in 0..40 {
        v.push(
            json!({"resourceType": "Observation", "id": format!("{p}-o{i}"), "status": "final", "code": {"text": "x"},
            "subject": subject, "effectiveDateTime": "2024-01-02",
            "performer": [{"reference": format!("Practitioner/{p}-d1")}]}),
        );
    }
    v
}

fn report(name: &str, mut us: Vec<f64>) {
    us.sort_by(f64::total_cmp);
    let n = us.len();
    let mean = us.iter().sum::<f64>() / n as f64;
    println!("{name:<10} n={n} mean={mean:.0} µs p50={:.0} µs p99={:.0} µs", us[n / 2], us[(n * 99 / 100).min(n - 1)]);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("database URL");
    let n: usize = args.next().map(|s| s.parse().expect("N")).unwrap_or(2000);
    let mut cfg = StoreConfig::new(url);
    cfg.max_connections = 4;
    let store = SqlStore::open(&cfg).await.expect("open");
    for i in 0..50 {
        put_all(&store, chart(&format!("p{i:03}"))).await;
    }
    let target = "p025";
    let caregiver = FactsWanted { care_team: false, claimed_proxies: vec![format!("{target}-rp")] };
    let clinician = FactsWanted { care_team: true, claimed_proxies: Vec::new() };
    let f = store.patient_facts(target, &caregiver).await.unwrap();
    assert_eq!((f.consents.len(), f.proxies.len()), (3, 1));
    let f = store.patient_facts(target, &clinician).await.unwrap();
    assert_eq!(f.care_team.len(), 3, "{:?}", f.care_team);
    for (name, wanted) in [("caregiver", &caregiver), ("clinician", &clinician)] {
        for _ in 0..100 {
            store.patient_facts(target, wanted).await.unwrap();
        }
        let mut us = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            store.patient_facts(target, wanted).await.unwrap();
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        report(name, us);
    }
}
