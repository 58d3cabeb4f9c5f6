//! Bulk `$export` on both backends: the whole cycle for a patient's own app (step-up,
//! polling, manifest with hashes, downloads), another client's downloads, cancel, caps,
//! sensitive categories, revocation mid-job and before download.

use crate::common::oauth::Browser;
use crate::common::{Resp, TestApp};
use crate::oauth::{APP_SCOPES, LAUNCH_SCOPES, access, alice_and_diary, refresh_of};
use axum::http::{Method, StatusCode};
use portico::identity::now_ms;
use portico_audit::Interaction;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

pub const ASYNC: (&str, &str) = ("prefer", "respond-async");

fn observation(patient: &str, n: usize) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": format!("heart rate {n}")},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": 60 + n, "unit": "/min"}
    })
}

/// `n` Observations for `patient`, in one transaction.
pub async fn observations(app: &TestApp, patient: &str, n: usize) {
    let entries: Vec<Value> = (0..n)
        .map(|i| json!({"resource": observation(patient, i), "request": {"method": "POST", "url": "Observation"}}))
        .collect();
    let r = app.post("/fhir", json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

pub async fn patient(app: &TestApp, id: &str) {
    let r = app.put(&format!("/fhir/Patient/{id}"), json!({"resourceType": "Patient", "id": id})).await;
    assert!(r.status.is_success(), "{}", r.text);
}

/// A Condition labelled HIV (v3-ActCode in `meta.security`, kept by the classifier).
async fn hiv_condition(app: &TestApp, patient: &str) -> String {
    app.create(json!({
        "resourceType": "Condition",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}]},
        "code": {"text": "HIV infection"},
        "subject": {"reference": format!("Patient/{patient}")}
    }))
    .await
}

pub async fn as_token(app: &TestApp, token: &str, method: Method, uri: &str) -> Resp {
    app.raw(method, uri, &[("authorization", &format!("Bearer {token}")), ASYNC], Vec::new()).await
}

/// Path of a status or file URL (`http://localhost/fhir/...` → `/fhir/...`).
pub fn path_of(url: &str) -> String {
    url.strip_prefix("http://localhost").unwrap_or(url).to_string()
}

/// Poll the status URL until it is not 202 (at most 60 s).
pub async fn poll(app: &TestApp, token: &str, status_url: &str) -> Resp {
    for _ in 0..600 {
        let r = as_token(app, token, Method::GET, status_url).await;
        if r.status != StatusCode::ACCEPTED {
            return r;
        }
        assert!(r.header("retry-after").is_some(), "202 without Retry-After");
        assert!(r.header("x-progress").is_some(), "202 without X-Progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the export did not finish within 60 s");
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Download every output file, checking each against its manifest entry; type → lines.
async fn download_all(app: &TestApp, token: &str, manifest: &Value) -> Vec<(String, bool, Vec<Value>)> {
    let mut out = Vec::new();
    for o in manifest["output"].as_array().expect("output") {
        let r = as_token(app, token, Method::GET, &path_of(o["url"].as_str().unwrap())).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.header("content-type"), Some("application/fhir+ndjson"));
        let ext = &o["extension"];
        assert_eq!(sha256_hex(r.text.as_bytes()), ext["https://portico.invalid/fhir/bulk/sha256"], "hash of {o}");
        assert_eq!(r.text.len() as u64, ext["https://portico.invalid/fhir/bulk/bytes"].as_u64().unwrap());
        let lines: Vec<Value> =
            r.text.lines().map(|l| serde_json::from_str(l).expect("every line is one JSON resource")).collect();
        assert_eq!(lines.len() as u64, o["count"].as_u64().unwrap(), "count of {o}");
        for l in &lines {
            assert_eq!(l["resourceType"], o["type"]);
        }
        out.push((
            o["type"].as_str().unwrap().to_string(),
            ext["https://portico.invalid/fhir/bulk/sensitive"] == true,
            lines,
        ));
    }
    out
}

/// Alice's app with a fresh step-up in its grant (the browser keeps the portal session).
pub async fn stepped_up_token(app: &TestApp, b: &mut Browser, client: &str) -> Value {
    app.launch_in(b, client, LAUNCH_SCOPES, "alice").await;
    let r = b
        .portal(app, Method::POST, "/api/portal/step-up", Some(json!({"code": crate::common::oauth::totp_now()})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    app.launch_in(b, client, LAUNCH_SCOPES, "alice").await
}

pub fn bulk_ops(records: &[portico_audit::AuditRecord], job: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.interaction == Interaction::BulkExport)
        .filter_map(|r| r.query.clone())
        .filter(|q| q.contains(job))
        .map(|q| q.split('&').next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_patients_app_exports_exactly_their_record_after_step_up() {
    for backend in [crate::common::Backend::Sqlite, crate::common::Backend::Postgres] {
        let Some(app) = TestApp::with_config(backend, |c| c.export.batch = 7).await else { continue };
        alice_and_diary(&app).await;
        app.public_client("other", APP_SCOPES).await;
        observations(&app, "pa", 30).await;
        patient(&app, "pb").await;
        observations(&app, "pb", 5).await;
        let hidden = hiv_condition(&app, "pa").await;
        portico::export::spawn(&app.state);

        // Without a fresh step-up: refused, with the step-up challenge.
        let mut b = Browser::default();
        let plain = app.launch_in(&mut b, "diary", LAUNCH_SCOPES, "alice").await;
        let r = as_token(&app, &access(&plain), Method::GET, "/fhir/Patient/pa/$export").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{backend:?}: {}", r.text);
        assert!(r.header("www-authenticate").unwrap_or("").contains("insufficient_user_authentication"));

        let t = stepped_up_token(&app, &mut b, "diary").await;
        let token = access(&t);
        // Prefer: respond-async is required; another patient's record is not found.
        let r = app
            .raw(Method::GET, "/fhir/Patient/pa/$export", &[("authorization", &format!("Bearer {token}"))], vec![])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(as_token(&app, &token, Method::GET, "/fhir/Patient/pb/$export").await.status, StatusCode::NOT_FOUND);
        // System-level export is for backend services.
        assert_eq!(as_token(&app, &token, Method::GET, "/fhir/Patient/$export").await.status, StatusCode::FORBIDDEN);
        // Unsupported output format: refused clearly.
        let r = as_token(&app, &token, Method::GET, "/fhir/Patient/pa/$export?_outputFormat=text/csv").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.json["resourceType"], "OperationOutcome");

        let r = as_token(&app, &token, Method::GET, "/fhir/Patient/pa/$export?_outputFormat=application/fhir%2Bndjson")
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{backend:?}: {}", r.text);
        let status_url = path_of(r.header("content-location").expect("Content-Location"));
        let job = status_url.rsplit('/').next().unwrap().to_string();

        // Another app of the same user sees neither the status nor the files.
        let other = app.launch("other", LAUNCH_SCOPES, "alice").await;
        assert_eq!(as_token(&app, &access(&other), Method::GET, &status_url).await.status, StatusCode::NOT_FOUND);

        let done = poll(&app, &token, &status_url).await;
        assert_eq!(done.status, StatusCode::OK, "{backend:?}: {}", done.text);
        let m = &done.json;
        assert_eq!(m["requiresAccessToken"], true);
        assert!(m["transactionTime"].as_str().is_some());
        assert!(m["request"].as_str().unwrap().contains("/Patient/pa/$export"));
        assert!(m["extension"]["https://portico.invalid/fhir/bulk/expires"].as_str().is_some());
        let files = download_all(&app, &token, m).await;
        let obs: Vec<&Value> = files.iter().filter(|f| f.0 == "Observation").flat_map(|f| &f.2).collect();
        assert_eq!(obs.len(), 30, "{backend:?}: every Observation of pa once");
        let mut ids: Vec<&str> = obs.iter().map(|o| o["id"].as_str().unwrap()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 30, "no duplicates");
        assert!(obs.iter().all(|o| o["subject"]["reference"] == "Patient/pa"), "nothing of pb");
        assert!(files.iter().any(|f| f.0 == "Patient" && f.2.len() == 1 && f.2[0]["id"] == "pa"));
        // Sensitive categories stay out unless the patient opted in.
        assert!(files.iter().all(|f| !f.1), "no sensitive file without opt-in");
        assert!(!files.iter().flat_map(|f| &f.2).any(|r| r["id"] == hidden.as_str()));

        // The other app cannot download the files either (404, like no file at all).
        let url = path_of(m["output"][0]["url"].as_str().unwrap());
        assert_eq!(as_token(&app, &access(&other), Method::GET, &url).await.status, StatusCode::NOT_FOUND);
        // Without a token: 401.
        assert_eq!(app.raw(Method::GET, &url, &[], vec![]).await.status, StatusCode::UNAUTHORIZED);

        // Every step audited: kick-off, polls, downloads.
        let ops = bulk_ops(&app.audit_records().await, &job);
        for op in ["op=kickoff", "op=status", "op=download", "op=batch"] {
            assert!(ops.iter().any(|o| o == op), "{backend:?}: no {op} record in {ops:?}");
        }

        // Opting in: the sensitive Condition arrives, in its own file, flagged.
        let r =
            as_token(&app, &token, Method::GET, "/fhir/Patient/pa/$export?includeSensitive=true&_type=Condition").await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let done = poll(&app, &token, &path_of(r.header("content-location").unwrap())).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text);
        let files = download_all(&app, &token, &done.json).await;
        assert_eq!(files.len(), 1, "{}", done.text);
        assert!(files[0].1 && files[0].2[0]["id"] == hidden.as_str(), "{}", done.text);
        assert!(done.json["output"][0]["url"].as_str().unwrap().ends_with("Condition.sensitive.ndjson"));
    }
}

#[tokio::test]
async fn cancel_stops_the_job_and_removes_its_files() {
    for app in TestApp::all().await {
        patient(&app, "pc").await;
        observations(&app, "pc", 12).await;
        // Completed, then cancelled: the files go.
        portico::export::spawn(&app.state);
        let r = app
            .raw(
                Method::GET,
                "/fhir/Patient/pc/$export",
                &[("authorization", &format!("Bearer {}", crate::common::TOKEN)), ASYNC],
                vec![],
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let status_url = path_of(r.header("content-location").unwrap());
        let job = status_url.rsplit('/').next().unwrap().to_string();
        let done = poll(&app, crate::common::TOKEN, &status_url).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text);
        let dir = app.state.export.job_dir(&job);
        assert!(dir.join("Observation.ndjson").exists());
        let r = app.delete(&status_url).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert!(!dir.exists(), "{:?}: files removed on cancel", app.backend);
        assert_eq!(app.get(&status_url).await.status, StatusCode::NOT_FOUND);
        let url = path_of(done.json["output"][0]["url"].as_str().unwrap());
        assert_eq!(app.get(&url).await.status, StatusCode::NOT_FOUND);
        assert_eq!(app.delete(&status_url).await.status, StatusCode::NOT_FOUND, "already ended");
        let ops = bulk_ops(&app.audit_records().await, &job);
        assert!(ops.iter().any(|o| o == "op=cancel"), "{ops:?}");
        // Malformed and unknown job ids: 404.
        assert_eq!(app.get("/fhir/_export/nope").await.status, StatusCode::NOT_FOUND);
        assert_eq!(app.get(&format!("/fhir/_export/{}", uuid::Uuid::new_v4())).await.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn concurrent_jobs_are_capped_per_client_and_per_patient() {
    for backend in [crate::common::Backend::Sqlite, crate::common::Backend::Postgres] {
        // No workers: jobs stay accepted, so they count as running.
        let Some(app) = TestApp::with_config(backend, |c| {
            c.export.max_jobs_per_client = 2;
            c.export.max_jobs_per_patient = 1;
        })
        .await
        else {
            continue;
        };
        patient(&app, "p1").await;
        patient(&app, "p2").await;
        patient(&app, "p3").await;
        let kick = |p: &'static str| {
            let app = &app;
            async move {
                app.raw(
                    Method::GET,
                    &format!("/fhir/Patient/{p}/$export"),
                    &[("authorization", &format!("Bearer {}", crate::common::TOKEN)), ASYNC],
                    vec![],
                )
                .await
            }
        };
        assert_eq!(kick("p1").await.status, StatusCode::ACCEPTED);
        let r = kick("p1").await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{backend:?}: per patient: {}", r.text);
        assert!(r.header("retry-after").is_some());
        assert_eq!(r.json["resourceType"], "OperationOutcome");
        let second = kick("p2").await;
        assert_eq!(second.status, StatusCode::ACCEPTED);
        let r = kick("p3").await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{backend:?}: per client: {}", r.text);
        // A cancelled job no longer counts.
        assert_eq!(app.delete(&path_of(second.header("content-location").unwrap())).await.status, StatusCode::ACCEPTED);
        assert_eq!(kick("p3").await.status, StatusCode::ACCEPTED);
    }
}

#[tokio::test]
async fn a_revocation_mid_job_stops_it_and_withdraws_its_files() {
    for backend in [crate::common::Backend::Sqlite, crate::common::Backend::Postgres] {
        // One resource per batch: the job takes long enough to revoke in the middle.
        let Some(app) = TestApp::with_config(backend, |c| c.export.batch = 1).await else { continue };
        alice_and_diary(&app).await;
        observations(&app, "pa", 150).await;
        let mut b = Browser::default();
        let t = stepped_up_token(&app, &mut b, "diary").await;
        let token = access(&t);
        let r = as_token(&app, &token, Method::GET, "/fhir/Patient/pa/$export?_type=Observation").await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let job = r.header("content-location").unwrap().rsplit('/').next().unwrap().to_string();
        portico::export::spawn(&app.state);
        // Wait until some batches are committed…
        let mut seen = 0;
        for _ in 0..400 {
            let j = app.state.export.store.export_get(&job).await.unwrap().unwrap();
            let p: Value = serde_json::from_str(&j.progress).unwrap();
            seen = p["done"].as_u64().unwrap_or(0);
            if seen >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!((3..150).contains(&seen), "{backend:?}: caught the job mid-way ({seen})");
        // …then the patient disconnects the app.
        let r = app.revoke("diary", &refresh_of(&t)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let mut j = None;
        for _ in 0..300 {
            let row = app.state.export.store.export_get(&job).await.unwrap().unwrap();
            if !row.is_active() {
                j = Some(row);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let j = j.expect("the job stopped");
        assert_eq!(j.state, "failed", "{backend:?}");
        assert!(j.stop_reason.as_deref().unwrap_or("").starts_with("revoked"), "{:?}", j.stop_reason);
        assert!(j.error.as_deref().unwrap_or("").contains("OperationOutcome"));
        let p: Value = serde_json::from_str(&j.progress).unwrap();
        assert!(p["done"].as_u64().unwrap() < 150, "stopped before the end");
        // The worker withdraws the files and records the stop right after the state moves.
        let mut ops = Vec::new();
        for _ in 0..300 {
            ops = bulk_ops(&app.audit_records().await, &job);
            if ops.iter().any(|o| o == "op=stopped") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ops.iter().any(|o| o == "op=stopped"), "{ops:?}");
        assert!(!app.state.export.job_dir(&job).exists(), "files withdrawn");
        assert!(app.state.export.store.export_files(&job).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_revocation_after_completion_makes_downloads_fail() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        observations(&app, "pa", 4).await;
        portico::export::spawn(&app.state);
        let mut b = Browser::default();
        let t = stepped_up_token(&app, &mut b, "diary").await;
        let r = as_token(&app, &access(&t), Method::GET, "/fhir/Patient/pa/$export?_type=Observation").await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let status_url = path_of(r.header("content-location").unwrap());
        let job = status_url.rsplit('/').next().unwrap().to_string();
        let done = poll(&app, &access(&t), &status_url).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text);
        let url = path_of(done.json["output"][0]["url"].as_str().unwrap());
        // The same app, signed in again (a new grant), could download — until the grant
        // the export was made under is revoked.
        let again = app.launch_in(&mut b, "diary", LAUNCH_SCOPES, "alice").await;
        assert_eq!(as_token(&app, &access(&again), Method::GET, &url).await.status, StatusCode::OK);
        let r = app.revoke("diary", &refresh_of(&t)).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = as_token(&app, &access(&again), Method::GET, &url).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}: {}", app.backend, r.text);
        assert_eq!(r.json["resourceType"], "OperationOutcome");
        assert!(!app.state.export.job_dir(&job).exists(), "files withdrawn");
        let j = app.state.export.store.export_get(&job).await.unwrap().unwrap();
        assert_eq!(j.state, "failed");
        // The status now reports the stop.
        let s = as_token(&app, &access(&again), Method::GET, &status_url).await;
        assert_eq!(s.status, StatusCode::FORBIDDEN, "{}", s.text);
        let ops = bulk_ops(&app.audit_records().await, &job);
        assert!(ops.iter().any(|o| o == "op=stopped"), "{ops:?}");
    }
}

#[tokio::test]
async fn expired_exports_are_swept() {
    for app in TestApp::all().await {
        patient(&app, "pe").await;
        observations(&app, "pe", 2).await;
        portico::export::spawn(&app.state);
        let r = app
            .raw(
                Method::GET,
                "/fhir/Patient/pe/$export",
                &[("authorization", &format!("Bearer {}", crate::common::TOKEN)), ASYNC],
                vec![],
            )
            .await;
        let status_url = path_of(r.header("content-location").unwrap());
        let job = status_url.rsplit('/').next().unwrap().to_string();
        assert_eq!(poll(&app, crate::common::TOKEN, &status_url).await.status, StatusCode::OK);
        // Age the job past its expiry, then sweep.
        let mut row = app.state.export.store.export_get(&job).await.unwrap().unwrap();
        assert!(row.expires_ms > now_ms());
        row.expires_ms = 0;
        expire_now(&app, &job).await;
        portico::export::worker::sweep_once(&app.state.export, &app.state).await;
        assert!(!app.state.export.job_dir(&job).exists());
        assert_eq!(app.get(&status_url).await.status, StatusCode::NOT_FOUND);
        let ops = bulk_ops(&app.audit_records().await, &job);
        assert!(ops.iter().any(|o| o == "op=expire"), "{ops:?}");
    }
}

pub async fn expire_now(app: &TestApp, job: &str) {
    use sqlx::Connection;
    let sql = "UPDATE export_jobs SET expires_ms = 0 WHERE id = $1";
    match app.backend {
        crate::common::Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&app.database_url).await.unwrap();
            sqlx::query(sql).bind(job).execute(&mut c).await.unwrap();
        }
        crate::common::Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&app.database_url).await.unwrap();
            sqlx::query(sql).bind(job).execute(&mut c).await.unwrap();
        }
    }
}

/// Kick off as the operator and wait for the manifest.
async fn operator_export(app: &TestApp, method: Method, uri: &str, body: Option<Value>) -> Value {
    let auth = format!("Bearer {}", crate::common::TOKEN);
    let mut headers = vec![("authorization", auth.as_str()), ASYNC];
    if body.is_some() {
        headers.push(("content-type", "application/fhir+json"));
    }
    let r = app.raw(method, uri, &headers, body.map(|b| b.to_string().into_bytes()).unwrap_or_default()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{uri}: {}", r.text);
    let done = poll(app, crate::common::TOKEN, &path_of(r.header("content-location").unwrap())).await;
    assert_eq!(done.status, StatusCode::OK, "{uri}: {}", done.text);
    done.json
}

#[tokio::test]
async fn group_and_system_exports_with_parameters_type_filters_and_deletions() {
    for app in TestApp::all().await {
        for p in ["g1", "g2", "g3"] {
            patient(&app, p).await;
        }
        observations(&app, "g1", 3).await;
        observations(&app, "g2", 2).await;
        observations(&app, "g3", 4).await;
        app.create(json!({"resourceType": "Group", "id": "x", "type": "person", "actual": true,
            "member": [{"entity": {"reference": "Patient/g1"}}, {"entity": {"reference": "Patient/g2"}}]}))
            .await;
        let gid = app.get("/fhir/Group").await.ids()[0].clone();
        portico::export::spawn(&app.state);

        // Group export, kicked off by POST with a Parameters body.
        let params = json!({"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueString": "Observation,Patient"},
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"}]});
        let m = operator_export(&app, Method::POST, &format!("/fhir/Group/{gid}/$export"), Some(params)).await;
        let files = download_all(&app, crate::common::TOKEN, &m).await;
        let of = |t: &str| files.iter().filter(|f| f.0 == t).flat_map(|f| f.2.clone()).collect::<Vec<_>>();
        assert_eq!(of("Observation").len(), 5, "{:?}: g1 and g2 only", app.backend);
        let mut ps: Vec<String> = of("Patient").iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
        ps.sort();
        assert_eq!(ps, ["g1", "g2"]);

        // System export with a type filter.
        let m = operator_export(
            &app,
            Method::GET,
            "/fhir/Patient/$export?_type=Observation&_typeFilter=Observation%3Fsubject%3DPatient%2Fg3",
            None,
        )
        .await;
        let files = download_all(&app, crate::common::TOKEN, &m).await;
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].2.len(), 4);
        assert!(files[0].2.iter().all(|o| o["subject"]["reference"] == "Patient/g3"));

        // Deletions since `_since` are listed under `deleted`.
        let since = portico::export::manifest::instant(now_ms() - 1000);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let gone = app.get("/fhir/Observation?subject=Patient/g1").await.ids()[0].clone();
        assert_eq!(app.delete(&format!("/fhir/Observation/{gone}")).await.status, StatusCode::NO_CONTENT);
        let uri = format!(
            "/fhir/Patient/g1/$export?_type=Observation&_since={}",
            since.replace(':', "%3A").replace('+', "%2B")
        );
        let m = operator_export(&app, Method::GET, &uri, None).await;
        let deleted = m["deleted"].as_array().expect("deleted");
        assert_eq!(deleted.len(), 1, "{m}");
        let r = app.get(&path_of(deleted[0]["url"].as_str().unwrap())).await;
        assert_eq!(r.status, StatusCode::OK);
        let lines: Vec<Value> = r.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 1, "{}", r.text);
        assert_eq!(lines[0]["entry"][0]["request"]["url"], format!("Observation/{gone}"));
        assert_eq!(lines[0]["entry"][0]["request"]["method"], "DELETE");

        // Unknown group: 404; a patient-level principal cannot run a system export (see the
        // patient test); unsupported parameters are refused clearly.
        let auth = format!("Bearer {}", crate::common::TOKEN);
        let r = app.raw(Method::GET, "/fhir/Group/nope/$export", &[("authorization", &auth), ASYNC], vec![]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = app
            .raw(Method::GET, "/fhir/Patient/$export?_elements=id", &[("authorization", &auth), ASYNC], vec![])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json["issue"][0]["code"], "not-supported", "{}", r.text);
    }
}

#[tokio::test]
async fn the_portal_lists_the_patients_exports_and_cancels_them() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        observations(&app, "pa", 3).await;
        portico::export::spawn(&app.state);
        let mut b = Browser::default();
        let t = stepped_up_token(&app, &mut b, "diary").await;
        let r = as_token(&app, &access(&t), Method::GET, "/fhir/Patient/pa/$export?_type=Observation").await;
        let status_url = path_of(r.header("content-location").unwrap());
        let job = status_url.rsplit('/').next().unwrap().to_string();
        assert_eq!(poll(&app, &access(&t), &status_url).await.status, StatusCode::OK);
        let r = b.get(&app, "/api/portal/downloads").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let list = r.json["downloads"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{}", r.text);
        let d = &list[0];
        assert_eq!(d["id"], job.as_str());
        assert_eq!(d["status"], "completed");
        assert_eq!(d["app"], "diary");
        assert_eq!(d["composition"]["types"], json!(["Observation"]));
        assert_eq!(d["files"][0]["count"], 3);
        assert!(d["expires"].as_str().is_some() && d["created"].as_str().is_some());
        // Another user sees none of it, and cannot cancel it.
        app.user("bob", "patient", &["pb"]).await;
        let mut other = Browser::default();
        app.portal_sign_in(&mut other, "bob", crate::common::oauth::PASSWORD).await;
        let r = other.get(&app, "/api/portal/downloads").await;
        assert_eq!(r.json["downloads"], json!([]), "{}", r.text);
        let cancel = format!("/api/portal/downloads/{job}");
        assert_eq!(other.portal(&app, Method::DELETE, &cancel, None).await.status, StatusCode::NOT_FOUND);
        // Alice cancels: the files go, the app's download fails.
        let r = b.portal(&app, Method::DELETE, &cancel, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(!app.state.export.job_dir(&job).exists());
        assert_eq!(as_token(&app, &access(&t), Method::GET, &status_url).await.status, StatusCode::NOT_FOUND);
    }
}

/// `_outputFormat=application/pdf`: the job also yields a PDF health summary, listed in the
/// manifest with its hash, made from what the export holds — the sensitive Condition the
/// export leaves out is not in it either (read back with poppler's `pdftotext`).
#[tokio::test]
async fn a_patient_export_can_yield_a_pdf_summary_without_what_it_leaves_out() {
    for app in TestApp::all().await {
        let r = app
            .put(
                "/fhir/Patient/ps",
                json!({"resourceType": "Patient", "id": "ps", "name": [{"family": "Quimby", "given": ["Ada"]}]}),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.text);
        app.create(json!({
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"text": "Seasonal asthma"},
            "subject": {"reference": "Patient/ps"}
        }))
        .await;
        hiv_condition(&app, "ps").await;
        portico::export::spawn(&app.state);
        // The summary is for one patient.
        let auth = format!("Bearer {}", crate::common::TOKEN);
        let r = app
            .raw(
                Method::GET,
                "/fhir/Patient/$export?_outputFormat=application/pdf",
                &[("authorization", &auth), ASYNC],
                vec![],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

        let m =
            operator_export(&app, Method::GET, "/fhir/Patient/ps/$export?_outputFormat=application/pdf", None).await;
        let out = m["output"].as_array().unwrap();
        let pdf_entry =
            out.iter().find(|o| o["url"].as_str().unwrap().ends_with("/summary.pdf")).expect("summary listed");
        assert_eq!(pdf_entry["type"], "Binary");
        assert!(out.iter().any(|o| o["type"] == "Condition"), "the NDJSON files are there too: {m}");
        let r = as_token(&app, crate::common::TOKEN, Method::GET, &path_of(pdf_entry["url"].as_str().unwrap())).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), Some("application/pdf"));
        let path = std::env::temp_dir().join(format!("portico-summary-{}.pdf", uuid::Uuid::new_v4().simple()));
        // `Resp` keeps text; a PDF is bytes: fetch them again through the router.
        let bytes = pdf_bytes(&app, &path_of(pdf_entry["url"].as_str().unwrap())).await;
        assert!(bytes.starts_with(b"%PDF-"));
        assert_eq!(
            sha256_hex(&bytes),
            pdf_entry["extension"]["https://portico.invalid/fhir/bulk/sha256"].as_str().unwrap()
        );
        std::fs::write(&path, &bytes).unwrap();
        let text = std::process::Command::new("pdftotext")
            .arg("-layout")
            .arg(&path)
            .arg("-")
            .output()
            .expect("pdftotext (Debian poppler-utils; .ci/run installs it)");
        let text = String::from_utf8_lossy(&text.stdout).to_string();
        let _ = std::fs::remove_file(&path);
        assert!(text.contains("Quimby") && text.contains("Seasonal asthma"), "{:?}: {text}", app.backend);
        assert!(!text.contains("HIV"), "{:?}: the left-out Condition is not in the summary: {text}", app.backend);
    }
}

async fn pdf_bytes(app: &TestApp, uri: &str) -> Vec<u8> {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .uri(uri)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {}", crate::common::TOKEN))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()
}
