//! `portico import`, the real binary: NDJSON and Bundle files in, a summary line out;
//! importing the same files again changes nothing; bad input fails with a message that
//! names the file and line.

use super::common::*;
use axum::http::StatusCode;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp dir removed at the end (also on panic).
struct TempDir(PathBuf);
impl TempDir {
    fn new() -> TempDir {
        let d = std::env::temp_dir().join(format!("portico-import-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `portico import <paths>` on a data dir (and database URL, for PostgreSQL).
fn run_import(data_dir: &Path, database_url: Option<&str>, paths: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portico"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTICO_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("import").args(paths).env("PORTICO_DATA_DIR", data_dir).env("RUST_LOG", "warn");
    if let Some(u) = database_url {
        cmd.env("PORTICO_DATABASE_URL", u);
    }
    cmd.output().expect("run portico import")
}

/// The resource count of the `imported N resources in S s (R resources/s)` line.
fn imported_count(out: &Output) -> usize {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "import failed: {:?}\nstdout: {stdout}\nstderr: {stderr}", out.status);
    let line =
        stdout.lines().find(|l| l.starts_with("imported ")).unwrap_or_else(|| panic!("no summary line in {stdout:?}"));
    // imported 304 resources in 1.23 s (247 resources/s)
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(
        words.len() == 8
            && words[2] == "resources"
            && words[3] == "in"
            && words[5] == "s"
            && words[7] == "resources/s)",
        "summary line: {line}"
    );
    assert!(
        words[4].parse::<f64>().is_ok() && words[6].trim_start_matches('(').parse::<f64>().is_ok(),
        "summary line: {line}"
    );
    words[1].parse().unwrap_or_else(|_| panic!("summary line: {line}"))
}

const PATIENTS: usize = 300;

/// `{"value": 60.50, ...}` with the decimal's text as written (a Rust literal would be 60.5).
fn decimal_quantity() -> serde_json::Value {
    serde_json::from_str(r#"{"value": 60.50, "unit": "/min"}"#).expect("json")
}

/// An input folder: `patients.ndjson` (300 Patients with ids), `visit.json` (a transaction
/// Bundle of a Patient and three Observations, PUT with ids) and `practitioners.json` (a
/// collection Bundle).
fn write_inputs(dir: &Path) -> usize {
    let mut nd = String::new();
    for i in 0..PATIENTS {
        let p = json!({"resourceType": "Patient", "id": format!("imp-{i:04}"), "gender": if i % 2 == 0 { "female" } else { "male" },
            "identifier": [{"system": "urn:example:import", "value": format!("{i}")}], "name": [{"family": format!("Imported{i}"), "given": ["Zoë"]}],
            "birthDate": format!("19{:02}-0{}-1{}", 30 + i % 70, 1 + i % 9, i % 10)});
        nd.push_str(&p.to_string());
        nd.push('\n');
        if i == 150 {
            nd.push('\n'); // blank lines are skipped
        }
    }
    std::fs::write(dir.join("patients.ndjson"), nd).expect("write ndjson");
    let obs = |k: usize| {
        json!({"resource": {"resourceType": "Observation", "id": format!("imp-obs-{k}"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}, "subject": {"reference": "Patient/imp-visit"},
            "effectiveDateTime": format!("2025-0{k}-01T10:00:00.123456+00:00"), "valueQuantity": decimal_quantity()},
            "request": {"method": "PUT", "url": format!("Observation/imp-obs-{k}")}})
    };
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "imp-visit", "name": [{"family": "Visit"}]}, "request": {"method": "PUT", "url": "Patient/imp-visit"}},
        obs(1), obs(2), obs(3)
    ]});
    std::fs::write(dir.join("visit.json"), serde_json::to_string_pretty(&bundle).expect("json")).expect("write bundle");
    // A collection Bundle: its resources are imported one by one (PUT, they have ids).
    let collection = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "http://example.org/fhir/Practitioner/imp-dr-1", "resource": {"resourceType": "Practitioner", "id": "imp-dr-1", "name": [{"family": "One"}]}},
        {"fullUrl": "http://example.org/fhir/Practitioner/imp-dr-2", "resource": {"resourceType": "Practitioner", "id": "imp-dr-2", "name": [{"family": "Two"}]}}
    ]});
    std::fs::write(dir.join("practitioners.json"), collection.to_string()).expect("write collection");
    PATIENTS + 6
}

async fn versions_of(app: &TestApp, rt: &str) -> Vec<(String, String)> {
    let r = app.get(&format!("/fhir/{rt}?_count=1000")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.next_link().is_none());
    r.entries()
        .iter()
        .map(|e| {
            (e["id"].as_str().unwrap_or("").to_string(), e["meta"]["versionId"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

async fn import_twice(backend: Backend) {
    let database_url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => match postgres_url() {
            Some(u) => Some(fresh_pg_schema(&u).await),
            None => return,
        },
    };
    let tmp = TempDir::new();
    let (input, data) = (tmp.0.join("in"), tmp.0.join("data"));
    std::fs::create_dir_all(&input).expect("input dir");
    let n = write_inputs(&input);
    assert_eq!(imported_count(&run_import(&data, database_url.as_deref(), &[&input])), n, "{backend:?}: first import");
    assert_eq!(imported_count(&run_import(&data, database_url.as_deref(), &[&input])), n, "{backend:?}: second import");

    // Open the same database through the API.
    let url = database_url.clone().unwrap_or_else(|| format!("sqlite://{}", data.join("portico.db").display()));
    let app = TestApp::with_config(backend, |c| c.database_url = url).await.expect("app");
    let patients = versions_of(&app, "Patient").await;
    assert_eq!(patients.len(), PATIENTS + 1, "{backend:?}");
    assert!(patients.iter().all(|(_, v)| v == "1"), "{backend:?}: re-import made new versions: {patients:?}");
    let obs = versions_of(&app, "Observation").await;
    assert_eq!(obs.len(), 3, "{backend:?}");
    assert!(obs.iter().all(|(_, v)| v == "1"), "{backend:?}: {obs:?}");
    let drs = versions_of(&app, "Practitioner").await;
    assert_eq!(drs.len(), 2, "{backend:?}");
    assert!(drs.iter().all(|(_, v)| v == "1"), "{backend:?}: {drs:?}");
    // Content, searches and history are as imported.
    let r = app.get("/fhir/Patient/imp-0042").await;
    assert_eq!(r.json["name"][0]["given"][0], "Zoë");
    let r = app.get("/fhir/Patient?identifier=urn:example:import|299&_total=accurate").await;
    assert_eq!(r.ids(), vec!["imp-0299".to_string()], "{backend:?}: {}", r.text);
    let r = app.get("/fhir/Observation?subject=Patient/imp-visit&date=ge2025-02-01&_total=accurate").await;
    assert_eq!(r.json["total"], 2, "{backend:?}: {}", r.text);
    let r = app.get("/fhir/Observation/imp-obs-1").await;
    assert_eq!(r.json["valueQuantity"]["value"].to_string(), "60.50", "{backend:?}: decimals keep their text");
    let r = app.get("/fhir/Patient/imp-0007/_history").await;
    assert_eq!(r.json["entry"].as_array().map(Vec::len), Some(1), "{backend:?}: {}", r.text);

    // A changed line is a new version of that resource only.
    let path = input.join("patients.ndjson");
    let text = std::fs::read_to_string(&path).expect("read").replacen("Imported0", "Changed0", 1);
    std::fs::write(&path, text).expect("write");
    assert_eq!(imported_count(&run_import(&data, database_url.as_deref(), &[&path])), PATIENTS, "{backend:?}");
    let patients = versions_of(&app, "Patient").await;
    let changed: Vec<_> = patients.iter().filter(|(_, v)| v != "1").collect();
    assert_eq!(changed, vec![&("imp-0000".to_string(), "2".to_string())], "{backend:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_ndjson_and_bundle_twice_is_idempotent_sqlite() {
    import_twice(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_ndjson_and_bundle_twice_is_idempotent_postgres() {
    import_twice(Backend::Postgres).await;
}

fn failure_text(out: &Output) -> String {
    assert!(!out.status.success(), "the import should fail; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_names_file_and_line() {
    let tmp = TempDir::new();
    let data = tmp.0.join("data");
    let good = |i: usize| {
        json!({"resourceType": "Patient", "id": format!("ok-{i}"), "name": [{"family": "Fine"}]}).to_string()
    };

    // Not JSON on line 3.
    let p = tmp.0.join("broken.ndjson");
    std::fs::write(&p, format!("{}\n{}\n{{\"resourceType\": \"Patient\", \"id\": \n{}\n", good(1), good(2), good(4)))
        .expect("write");
    let err = failure_text(&run_import(&data, None, &[&p]));
    assert!(err.contains("broken.ndjson") && err.contains("line 3"), "message: {err}");

    // Valid JSON, invalid FHIR, on line 262 (in the second batch of the importer).
    let p = tmp.0.join("invalid.ndjson");
    let mut text = String::new();
    for i in 1..=300 {
        if i == 262 {
            text.push_str(&json!({"resourceType": "Patient", "id": "bad-262", "gender": "robot"}).to_string());
        } else {
            text.push_str(&good(i));
        }
        text.push('\n');
    }
    std::fs::write(&p, text).expect("write");
    let err = failure_text(&run_import(&data, None, &[&p]));
    assert!(err.contains("invalid.ndjson") && err.contains("line 262"), "message: {err}");
    assert!(err.contains("gender"), "the message says what is wrong: {err}");

    // A line that is not a resource at all.
    let p = tmp.0.join("notresource.ndjson");
    std::fs::write(&p, format!("{}\n[1, 2]\n", good(1))).expect("write");
    let err = failure_text(&run_import(&data, None, &[&p]));
    assert!(err.contains("notresource.ndjson") && err.contains("line 2"), "message: {err}");

    // A Bundle file that is not JSON.
    let p = tmp.0.join("bundle.json");
    std::fs::write(&p, "{\"resourceType\": \"Bundle\",").expect("write");
    let err = failure_text(&run_import(&data, None, &[&p]));
    assert!(err.contains("bundle.json"), "message: {err}");

    // A path that does not exist.
    let err = failure_text(&run_import(&data, None, &[&tmp.0.join("missing.ndjson")]));
    assert!(err.contains("missing.ndjson") && err.contains("does not exist"), "message: {err}");
}
