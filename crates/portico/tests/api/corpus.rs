//! Real-world data intake: the Synthea transaction Bundles (the full 50-patient set beside
//! the checkout when present, else the copies in the fixtures) and the 198 official HL7 R4
//! examples, on each backend.

use super::common::*;
use axum::http::{Method, StatusCode};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The full set beside the checkout (`../shared/testdata/small-synthea`), if present.
fn shared_synthea() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/small-synthea");
    d.join("bundles").is_dir().then_some(d)
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).expect("read")).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Request headers with strict handling: an element the validator does not know is an
/// error, not a warning, so every element of the corpus must be known.
async fn send_strict(app: &TestApp, method: Method, uri: &str, body: &Value) -> Resp {
    let auth = format!("Bearer {TOKEN}");
    let headers =
        [("authorization", auth.as_str()), ("content-type", "application/fhir+json"), ("prefer", "handling=strict")];
    app.raw(method, uri, &headers, body.to_string().into_bytes()).await
}

/// Types Synthea repeats in every bundle that uses them (see the test data README).
const SHARED_TYPES: &[&str] = &["Practitioner", "PractitionerRole", "Organization", "Location"];

/// Every id of a type, through paged search; asserts no stored resource keeps a `urn:uuid:`
/// reference.
async fn all_of_type(app: &TestApp, rt: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = format!("/fhir/{rt}?_count=1000");
    loop {
        let r = app.get(&url).await;
        assert_eq!(r.status, StatusCode::OK, "{:?} {url}: {}", app.backend, r.text);
        out.extend(r.entries());
        match r.next_link() {
            Some(next) => url = next.split_once("/fhir").map(|(_, p)| format!("/fhir{p}")).expect("next link"),
            None => return out,
        }
    }
}

fn find_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("reference") {
                out.push(r.clone());
            }
            o.values().for_each(|c| find_refs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| find_refs(c, out)),
        _ => {}
    }
}

fn has_category(r: &Value, code: &str) -> bool {
    r["category"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["coding"].as_array().into_iter().flatten().any(|cd| cd["code"] == code))
}

/// Import every bundle, then check entries, references, counts and searches.
async fn synthea(backend: Backend) {
    let Some(app) = TestApp::new(backend).await else { return };
    let shared = shared_synthea();
    let dir = shared.as_ref().map(|d| d.join("bundles")).unwrap_or_else(|| fixtures().join("synthea"));
    let files = json_files(&dir);
    assert!(!files.is_empty(), "no bundles in {}", dir.display());
    let started = std::time::Instant::now();
    let mut entry_counts: BTreeMap<String, usize> = BTreeMap::new();
    // Per patient: (lab observations, encounters, observation datetimes).
    let mut per_patient: Vec<(String, usize, usize, Vec<String>)> = Vec::new();
    // Condition codes (system|code) -> how many Conditions carry them.
    let mut condition_codes: BTreeMap<String, usize> = BTreeMap::new();
    // Four bundles at a time: as several clients would send them.
    let app = std::sync::Arc::new(app);
    let mut posted = Vec::new();
    for group in files.chunks(4) {
        let mut tasks = Vec::new();
        for f in group {
            let (app, f) = (app.clone(), f.clone());
            tasks.push(tokio::spawn(async move {
                let bundle = read_json(&f);
                let entries = bundle["entry"].as_array().expect("entries").clone();
                let r = send_strict(&app, Method::POST, "/fhir", &bundle).await;
                (f, entries, r)
            }));
        }
        for t in tasks {
            posted.push(t.await.expect("import task"));
        }
    }
    for (f, entries, r) in &posted {
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{:?} {}: {}",
            backend,
            f.display(),
            r.text.chars().take(2000).collect::<String>()
        );
        let answers = r.json["entry"].as_array().expect("response entries");
        assert_eq!(answers.len(), entries.len(), "{}", f.display());
        let mut patient = None;
        let (mut labs, mut encounters, mut dates) = (0, 0, Vec::new());
        for (e, a) in entries.iter().zip(answers) {
            let rt = e["resource"]["resourceType"].as_str().expect("type").to_string();
            let status = a["response"]["status"].as_str().unwrap_or("");
            assert!(status.starts_with("201"), "{:?} {}: {rt} answered {status}", backend, f.display());
            let loc = a["response"]["location"].as_str().expect("location");
            assert!(loc.starts_with(&format!("{rt}/")), "{loc}");
            *entry_counts.entry(rt.clone()).or_default() += 1;
            let res = &e["resource"];
            match rt.as_str() {
                "Patient" => patient = Some(loc.split('/').nth(1).expect("id").to_string()),
                "Observation" => {
                    labs += usize::from(has_category(res, "laboratory"));
                    if let Some(d) = res["effectiveDateTime"].as_str() {
                        dates.push(d.to_string());
                    }
                }
                "Encounter" => encounters += 1,
                "Condition" => {
                    for c in res["code"]["coding"].as_array().into_iter().flatten() {
                        let key =
                            format!("{}|{}", c["system"].as_str().unwrap_or(""), c["code"].as_str().unwrap_or(""));
                        *condition_codes.entry(key).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        per_patient.push((patient.expect("a Patient per bundle"), labs, encounters, dates));
    }
    eprintln!(
        "{backend:?}: imported {} bundles ({} resources) in {:.1} s",
        files.len(),
        entry_counts.values().sum::<usize>(),
        started.elapsed().as_secs_f64()
    );

    // Counts per type, and every stored reference is rewritten (no urn:uuid left) and
    // resolves to a stored resource.
    let manifest = shared.map(|d| read_json(&d.join("manifest.json")));
    let mut stored_ids: BTreeSet<String> = BTreeSet::new();
    let mut all_refs: Vec<(String, String)> = Vec::new();
    for (rt, &n) in &entry_counts {
        let stored = all_of_type(&app, rt).await;
        stored_ids.extend(stored.iter().map(|r| format!("{rt}/{}", r["id"].as_str().unwrap_or(""))));
        assert_eq!(stored.len(), n, "{backend:?}: {rt} stored");
        if let Some(m) = &manifest {
            let want = m["resource_counts"][rt].as_u64().unwrap_or_else(|| panic!("manifest has no {rt}")) as usize;
            if SHARED_TYPES.contains(&rt.as_str()) {
                assert!(n >= want, "{backend:?}: {rt}: {n} < manifest {want}");
            } else {
                assert_eq!(n, want, "{backend:?}: {rt} count differs from manifest.json");
            }
        }
        for res in &stored {
            let mut refs = Vec::new();
            find_refs(res, &mut refs);
            for r in refs {
                assert!(!r.starts_with("urn:uuid:"), "{backend:?}: {rt}/{} keeps reference {r}", res["id"]);
                assert!(r.contains('/'), "{backend:?}: {rt}/{} has reference {r}", res["id"]);
                all_refs.push((format!("{rt}/{}", res["id"].as_str().unwrap_or("")), r));
            }
        }
    }
    let dangling: Vec<_> = all_refs.iter().filter(|(_, r)| !stored_ids.contains(r)).take(10).collect();
    assert!(dangling.is_empty(), "{backend:?}: dangling references {dangling:?}");
    if let Some(m) = &manifest {
        let types: BTreeSet<&String> = m["resource_counts"].as_object().expect("counts").keys().collect();
        assert_eq!(types, entry_counts.keys().collect::<BTreeSet<_>>(), "types imported vs manifest");
    }

    eprintln!("{backend:?}: counts and references checked at {:.1} s", started.elapsed().as_secs_f64());
    // Spot checks per patient.
    for (pid, labs, encounters, dates) in per_patient.iter().take(12) {
        let r = app.get(&format!("/fhir/Observation?patient={pid}&category=laboratory&_total=accurate&_count=1")).await;
        assert_eq!(r.json["total"], *labs, "{backend:?}: labs of {pid}: {}", r.text);
        let r = app.get(&format!("/fhir/Observation?patient=Patient/{pid}&category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory&_total=accurate&_count=1")).await;
        assert_eq!(r.json["total"], *labs, "{backend:?}: labs of {pid} (system|code): {}", r.text);
        let r = app.get(&format!("/fhir/Encounter?patient={pid}&_total=accurate&_count=1")).await;
        assert_eq!(r.json["total"], *encounters, "{backend:?}: encounters of {pid}: {}", r.text);
        // Microsecond +00:00 datetimes against date prefixes.
        let r = app.get(&format!("/fhir/Observation?patient={pid}&date=ge2020&_total=accurate&_count=1")).await;
        assert_eq!(r.json["total"], dates.len(), "{backend:?}: date=ge2020 for {pid}: {}", r.text);
        let r = app.get(&format!("/fhir/Observation?patient={pid}&date=lt2020&_total=accurate&_count=1")).await;
        assert_eq!(r.json["total"], 0, "{backend:?}: date=lt2020 for {pid}: {}", r.text);
        if let Some(d) = dates.iter().min() {
            // The earliest instant itself: `eq` and `ge` find it, `lt` does not.
            let enc = d.replace('+', "%2B");
            let r = app.get(&format!("/fhir/Observation?patient={pid}&date={enc}&_total=accurate&_count=1")).await;
            let same = dates.iter().filter(|x| *x == d).count();
            assert_eq!(r.json["total"], same, "{backend:?}: date={d}: {}", r.text);
            let r = app.get(&format!("/fhir/Observation?patient={pid}&date=ge{enc}&_total=accurate&_count=1")).await;
            assert_eq!(r.json["total"], dates.len(), "{backend:?}: date=ge{d}: {}", r.text);
            let r = app.get(&format!("/fhir/Observation?patient={pid}&date=lt{enc}&_total=accurate&_count=1")).await;
            assert_eq!(r.json["total"], 0, "{backend:?}: date=lt{d}: {}", r.text);
            // A day boundary in the middle of the data.
            let day = &d[..10];
            let later = dates.iter().filter(|x| x[..10] > *day).count();
            let r = app.get(&format!("/fhir/Observation?patient={pid}&date=gt{day}&_total=accurate&_count=1")).await;
            assert_eq!(r.json["total"], later, "{backend:?}: date=gt{day}: {}", r.text);
        }
        let r = app.get(&format!("/fhir/Patient/{pid}/$everything?_count=1000")).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: $everything {pid}: {}", r.text);
    }
    for (code, &n) in condition_codes.iter().take(15) {
        let r = app.get(&format!("/fhir/Condition?code={code}&_total=accurate&_count=1")).await;
        assert_eq!(r.json["total"], n, "{backend:?}: Condition?code={code}: {}", r.text);
        let bare = code.split_once('|').map(|(_, c)| c).unwrap_or(code);
        let r = app.get(&format!("/fhir/Condition?code={bare}&_total=accurate&_count=1")).await;
        assert!(r.json["total"].as_u64().unwrap_or(0) as usize >= n, "{backend:?}: Condition?code={bare}: {}", r.text);
    }
    eprintln!("{backend:?}: Synthea corpus checked in {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthea_bundles_import_and_search_sqlite() {
    synthea(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthea_bundles_import_and_search_postgres() {
    synthea(Backend::Postgres).await;
}

/// Drop what the server sets (`meta.versionId`, `meta.lastUpdated`), and an empty `meta`.
fn without_bookkeeping(mut v: Value) -> Value {
    if let Some(Value::Object(m)) = v.get_mut("meta") {
        m.remove("versionId");
        m.remove("lastUpdated");
    }
    if let Value::Object(o) = &mut v
        && o.get("meta").and_then(Value::as_object).is_some_and(|m| m.is_empty())
    {
        o.remove("meta");
    }
    v
}

/// Every HL7 example is accepted and reads back exactly as sent (decimals by their text).
async fn hl7_round_trip(backend: Backend) {
    let Some(app) = TestApp::new(backend).await else { return };
    // Every resource file (the npm package manifest beside them is not one).
    let files: Vec<PathBuf> = json_files(&fixtures().join("hl7-r4-examples"))
        .into_iter()
        .filter(|f| read_json(f).get("resourceType").is_some())
        .collect();
    assert_eq!(files.len(), 198, "the HL7 example fixtures");
    let mut rejected = Vec::new();
    let mut differ = Vec::new();
    let mut refused_by_policy = 0;
    let mut unenforceable_consents: Vec<String> = Vec::new();
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let original = read_json(f);
        let rt = original["resourceType"].as_str().expect("resourceType").to_string();
        if rt == "AuditEvent" {
            // The audit trail is written by the server only: clients get 405 (no such method).
            let r = match original["id"].as_str() {
                Some(id) => send_strict(&app, Method::PUT, &format!("/fhir/{rt}/{id}"), &original).await,
                None => send_strict(&app, Method::POST, &format!("/fhir/{rt}"), &original).await,
            };
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{name}: {}", r.text);
            continue;
        }
        let (r, id) = match original["id"].as_str() {
            Some(id) => (send_strict(&app, Method::PUT, &format!("/fhir/{rt}/{id}"), &original).await, id.to_string()),
            None => {
                let r = send_strict(&app, Method::POST, &format!("/fhir/{rt}"), &original).await;
                let id = r.json["id"].as_str().unwrap_or("").to_string();
                (r, id)
            }
        };
        // The audit trail is written by the server only: AuditEvent writes are refused by
        // policy (403), which is not a validation failure.
        if rt == "AuditEvent" && r.status == StatusCode::FORBIDDEN {
            refused_by_policy += 1;
            continue;
        }
        // Consents the consent engine cannot enforce exactly (Organization actors, `data`
        // meaning `related`, a MIME type as class) are refused with the element named:
        // portico never stores a consent it would not honour.
        if rt == "Consent" && r.status == StatusCode::UNPROCESSABLE_ENTITY {
            assert!(r.text.contains("\"expression\":[\"Consent."), "{name}: {}", r.text);
            unenforceable_consents.push(name);
            continue;
        }
        if !r.status.is_success() {
            rejected.push(format!("{name}: {} {}", r.status, r.text.chars().take(1500).collect::<String>()));
            continue;
        }
        let back = app.get(&format!("/fhir/{rt}/{id}")).await;
        assert_eq!(back.status, StatusCode::OK, "{name}");
        let mut want = without_bookkeeping(original.clone());
        if original.get("id").is_none() {
            want["id"] = Value::from(id.clone());
        }
        let got = without_bookkeeping(back.json.clone());
        if got != want {
            differ.push(format!("{name}:\n  sent {}\n  got  {}", want, got));
        }
        // The PUT's own answer is the stored version too.
        assert_eq!(
            without_bookkeeping(r.json.clone()),
            got,
            "{backend:?} {name}: the write's answer differs from the read"
        );
    }
    assert!(
        rejected.is_empty(),
        "{backend:?}: {} of {} HL7 examples rejected:\n{}",
        rejected.len(),
        files.len(),
        rejected.join("\n")
    );
    assert!(differ.is_empty(), "{backend:?}: {} HL7 examples changed in storage:\n{}", differ.len(), differ.join("\n"));
    assert!(refused_by_policy <= 9, "{backend:?}: only the 9 AuditEvents may be refused by policy");
    unenforceable_consents.sort();
    assert_eq!(
        unenforceable_consents,
        [
            "Consent-consent-example-Emergency.json",
            "Consent-consent-example-Out.json",
            "Consent-consent-example-grantor.json",
            "Consent-consent-example-notAuthor.json",
            "Consent-consent-example-notOrg.json",
            "Consent-consent-example-notThis.json",
            "Consent-consent-example-pkb.json",
            "Consent-consent-example-signature.json",
        ],
        "{backend:?}: the HL7 Consent examples refused as unenforceable"
    );
}

#[tokio::test]
async fn hl7_examples_round_trip_sqlite() {
    hl7_round_trip(Backend::Sqlite).await;
}

#[tokio::test]
async fn hl7_examples_round_trip_postgres() {
    hl7_round_trip(Backend::Postgres).await;
}
