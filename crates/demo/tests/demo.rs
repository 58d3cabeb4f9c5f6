//! Properties of the generated data: determinism, shape, referential integrity, valid ids,
//! decimal precision, and the scenarios the demo relies on (sensitive data, a caregiver of
//! an adolescent, upcoming appointments).

use std::collections::{BTreeMap, BTreeSet};

use portico_demo::{DemoConfig, all_bundles, demo_users, patient_bundle, patient_id, shared_resources};
use serde_json::Value;

fn cfg() -> DemoConfig {
    DemoConfig::default()
}

fn resources(bundle: &Value) -> Vec<&Value> {
    bundle["entry"].as_array().map(|e| e.iter().map(|x| &x["resource"]).collect()).unwrap_or_default()
}

fn of_type<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    resources(bundle).into_iter().filter(|r| r["resourceType"] == kind).collect()
}

fn keys(bundle: &Value) -> BTreeSet<String> {
    resources(bundle)
        .iter()
        .map(|r| format!("{}/{}", r["resourceType"].as_str().unwrap_or("?"), r["id"].as_str().unwrap_or("?")))
        .collect()
}

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("reference") {
                out.push(r);
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn has_code(r: &Value, code: &str) -> bool {
    r["code"]["coding"].as_array().is_some_and(|c| c.iter().any(|x| x["code"] == code))
}

fn security_codes(r: &Value) -> Vec<String> {
    r["meta"]["security"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["code"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[test]
fn two_runs_are_byte_identical() {
    let a: Vec<String> = all_bundles(&cfg()).map(|b| b.to_string()).collect();
    let b: Vec<String> = all_bundles(&cfg()).map(|b| b.to_string()).collect();
    assert_eq!(a.len(), 51);
    assert_eq!(a, b);
    // A patient's bundle depends on (seed, today, index) only, not on the run size.
    let small = DemoConfig { patients: 3, ..cfg() };
    assert_eq!(patient_bundle(&small, 2).to_string(), a[3]);
    // Another seed gives other data.
    let other = DemoConfig { seed: 1, ..cfg() };
    assert_ne!(patient_bundle(&other, 0).to_string(), a[1]);
}

#[test]
fn counts_per_type_are_near_targets() {
    let mut totals: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..cfg().patients {
        let b = patient_bundle(&cfg(), i);
        let count = |k: &str| of_type(&b, k).len();
        let category =
            |c: &str| of_type(&b, "Observation").iter().filter(|o| o["category"][0]["coding"][0]["code"] == c).count();
        assert_eq!(count("Patient"), 1);
        assert!((44..=52).contains(&category("laboratory")), "pt {i} labs {}", category("laboratory"));
        assert_eq!(category("vital-signs"), 15, "pt {i}");
        assert!((3..=5).contains(&count("Condition")), "pt {i}");
        assert!((3..=5).contains(&count("MedicationRequest")), "pt {i}");
        assert!(count("AllergyIntolerance") <= 3, "pt {i}");
        assert!((5..=10).contains(&count("Immunization")), "pt {i} imm {}", count("Immunization"));
        assert!((2..=4).contains(&count("Appointment")), "pt {i}");
        assert!((2..=4).contains(&count("DocumentReference")), "pt {i}");
        assert!((1..=4).contains(&count("Encounter")), "pt {i}");
        let n = resources(&b).len();
        assert!((80..=110).contains(&n), "pt {i}: {n} resources");
        for r in resources(&b) {
            *totals.entry(r["resourceType"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
        }
    }
    assert!(totals.get("AllergyIntolerance").copied().unwrap_or(0) > 10);
    assert!(totals.get("RelatedPerson").copied().unwrap_or(0) == 2);
    let shared = shared_resources(&cfg());
    assert_eq!(of_type(&shared, "Organization").len(), 5);
    assert_eq!(of_type(&shared, "Practitioner").len(), 10);
    assert_eq!(of_type(&shared, "PractitionerRole").len(), 10);
    assert_eq!(of_type(&shared, "Location").len(), 5);
}

#[test]
fn every_reference_resolves_and_ids_are_valid() {
    let shared = shared_resources(&cfg());
    let shared_keys = keys(&shared);
    let mut refs = Vec::new();
    collect_refs(&shared, &mut refs);
    assert!(refs.iter().all(|r| shared_keys.contains(*r)), "shared bundle is self-contained");
    let mut seen = BTreeSet::new();
    for bundle in all_bundles(&cfg()) {
        assert_eq!(bundle["type"], "transaction");
        let local = keys(&bundle);
        let mut refs = Vec::new();
        collect_refs(&bundle, &mut refs);
        for r in refs {
            assert!(local.contains(r) || shared_keys.contains(r), "dangling reference {r}");
        }
        for e in bundle["entry"].as_array().into_iter().flatten() {
            let kind = e["resource"]["resourceType"].as_str().unwrap_or_default();
            let id = e["resource"]["id"].as_str().unwrap_or_default();
            assert!(valid_id(id), "invalid id {id:?}");
            assert_eq!(e["request"]["method"], "PUT");
            assert_eq!(e["request"]["url"], format!("{kind}/{id}").as_str());
            assert!(seen.insert(format!("{kind}/{id}")), "duplicate {kind}/{id}");
        }
    }
}

#[test]
fn decimals_keep_their_places() {
    let text = patient_bundle(&cfg(), 0).to_string();
    let b: Value = serde_json::from_str(&text).unwrap_or_default();
    let creatinine: Vec<String> = of_type(&b, "Observation")
        .into_iter()
        .filter(|o| has_code(o, "2160-0"))
        .map(|o| o["valueQuantity"]["value"].to_string())
        .collect();
    assert!(!creatinine.is_empty());
    for v in &creatinine {
        assert!(v.split_once('.').is_some_and(|(_, frac)| frac.len() == 2), "creatinine {v}");
    }
    // Somewhere in the default data a value ends in a zero that must survive a round trip.
    let trailing_zero = all_bundles(&cfg()).skip(1).any(|b| {
        of_type(&b, "Observation").iter().any(|o| {
            let v = o["valueQuantity"]["value"].to_string();
            v.contains('.') && v.ends_with('0')
        })
    });
    assert!(trailing_zero);
    assert!(text.contains(r#""low":{"value":0.60,"#) || text.contains(r#""low":{"value":0.50,"#));
}

#[test]
fn date_times_carry_a_zone() {
    let b = patient_bundle(&cfg(), 4).to_string();
    let v: Value = serde_json::from_str(&b).unwrap_or_default();
    fn walk(v: &Value, bad: &mut Vec<String>) {
        match v {
            Value::String(s)
                if s.len() >= 16
                    && s.as_bytes().get(10) == Some(&b'T')
                    && s.as_bytes().get(4) == Some(&b'-')
                    && !s.ends_with('Z') =>
            {
                bad.push(s.clone());
            }
            Value::Object(m) => m.values().for_each(|x| walk(x, bad)),
            Value::Array(a) => a.iter().for_each(|x| walk(x, bad)),
            _ => {}
        }
    }
    let mut bad = Vec::new();
    walk(&v, &mut bad);
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn some_patients_have_sensitive_data() {
    let (mut bh, mut sud, mut hiv, mut psy_docs, mut eth_docs, mut sex_docs) = (0, 0, 0, 0, 0, 0);
    for b in all_bundles(&cfg()).skip(1) {
        let conds = of_type(&b, "Condition");
        bh += usize::from(conds.iter().any(|c| has_code(c, "F32.9")));
        sud += usize::from(conds.iter().any(|c| has_code(c, "F10.20")));
        hiv += usize::from(conds.iter().any(|c| has_code(c, "B20")));
        for d in of_type(&b, "DocumentReference") {
            let labels = security_codes(d);
            psy_docs += usize::from(labels.iter().any(|l| l == "PSY"));
            eth_docs += usize::from(labels.iter().any(|l| l == "ETH"));
            sex_docs += usize::from(labels.iter().any(|l| l == "SEX"));
            if labels.iter().any(|l| l == "PSY") {
                assert_eq!(d["type"]["coding"][0]["code"], "11488-4");
                assert_eq!(d["custodian"]["reference"], "Organization/org-003");
            }
        }
    }
    assert!(bh >= 5, "behavioral health {bh}");
    assert!(sud >= 2, "substance use {sud}");
    assert_eq!(hiv, 1, "HIV");
    assert_eq!(psy_docs, bh);
    assert_eq!(eth_docs, sud);
    assert!(sex_docs >= 2, "reproductive health {sex_docs}");
}

#[test]
fn an_adolescent_has_a_caregiver() {
    let users = demo_users(&cfg());
    let carer = users.iter().find(|u| u.role == "caregiver");
    let related = carer.map(|u| u.related_to.clone()).unwrap_or_default();
    assert_eq!(related.len(), 2);
    let mut ages = Vec::new();
    for pid in &related {
        let index = pid.trim_start_matches("pt-").parse::<usize>().unwrap_or(1) - 1;
        let b = patient_bundle(&cfg(), index);
        let rp = of_type(&b, "RelatedPerson");
        assert_eq!(rp.len(), 1, "{pid}");
        assert_eq!(rp[0]["patient"]["reference"], format!("Patient/{pid}").as_str());
        let birth = of_type(&b, "Patient")[0]["birthDate"].as_str().unwrap_or_default().to_owned();
        let (y, md) = birth.split_at(4);
        let year: i64 = y.parse().unwrap_or(0);
        let age = 2026 - year - i64::from(md > "-11-01");
        ages.push(age);
    }
    assert!(ages.iter().any(|a| (12..=17).contains(a)), "{ages:?}");
    assert!(ages.iter().any(|a| *a >= 75), "{ages:?}");
}

#[test]
fn a_future_appointment_is_booked() {
    for i in 0..cfg().patients {
        let b = patient_bundle(&cfg(), i);
        let appts = of_type(&b, "Appointment");
        assert!(
            appts.iter().any(|a| a["status"] == "booked" && a["start"].as_str().is_some_and(|s| s > "2026-11-01")),
            "pt {i}"
        );
        assert!(
            appts.iter().any(|a| a["status"] == "fulfilled" && a["start"].as_str().is_some_and(|s| s < "2026-11-01")),
            "pt {i}"
        );
        for a in appts {
            let actors: Vec<&str> = a["participant"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["actor"]["reference"].as_str())
                .collect();
            assert!(actors.iter().any(|r| r.starts_with("Patient/")));
            assert!(actors.iter().any(|r| r.starts_with("Practitioner/")));
            assert!(actors.iter().any(|r| r.starts_with("Location/")));
        }
    }
}

#[test]
fn demo_users_are_consistent() {
    let users = demo_users(&cfg());
    let roles: Vec<&str> = users.iter().map(|u| u.role).collect();
    assert_eq!(roles, ["patient", "patient", "patient", "patient", "patient", "caregiver", "clinician", "admin"]);
    let names: BTreeSet<&str> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names.len(), users.len());
    for u in &users {
        assert!(
            u.username.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.'),
            "{}",
            u.username
        );
        assert!(u.password.starts_with("demo-") && u.password.len() >= 12);
        assert!(!format!("{u:?}").contains(&u.password));
    }
    assert_eq!(users[0].patient.as_deref(), Some(patient_id(0).as_str()));
    let shared = keys(&shared_resources(&cfg()));
    let clinician =
        users.iter().find(|u| u.role == "clinician").and_then(|u| u.practitioner.clone()).unwrap_or_default();
    assert!(shared.contains(&format!("Practitioner/{clinician}")));
    assert_eq!(users, demo_users(&cfg()));
    // Small runs: no caregiver without a qualifying patient, never a link past the run.
    let one = demo_users(&DemoConfig { patients: 1, ..cfg() });
    assert_eq!(one.iter().map(|u| u.role).collect::<Vec<_>>(), ["patient", "clinician", "admin"]);
    let two = demo_users(&DemoConfig { patients: 2, ..cfg() });
    assert_eq!(two.iter().find(|u| u.role == "caregiver").map(|u| u.related_to.clone()), Some(vec![patient_id(1)]));
}

#[test]
fn names_include_non_ascii() {
    let non_ascii =
        all_bundles(&cfg()).skip(1).filter(|b| !of_type(b, "Patient")[0]["name"].to_string().is_ascii()).count();
    assert!(non_ascii >= 3, "{non_ascii}");
}
