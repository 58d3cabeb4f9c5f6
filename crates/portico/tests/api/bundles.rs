//! Transaction and batch Bundles: urn:uuid and conditional references, atomicity,
//! `ifNoneExist`, per-entry outcomes in a batch, duplicate targets, GET entries.

use super::common::*;
use axum::http::StatusCode;
use serde_json::{Value, json};

const MRN: &str = "http://example.org/mrn";

fn bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": kind, "entry": entries})
}

fn post(full_url: Option<&str>, resource: Value) -> Value {
    let rt = resource["resourceType"].as_str().unwrap().to_string();
    let mut e = json!({"resource": resource, "request": {"method": "POST", "url": rt}});
    if let Some(f) = full_url {
        e["fullUrl"] = json!(f);
    }
    e
}

fn patient(family: &str, mrn: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family}], "identifier": [{"system": MRN, "value": mrn}]})
}

fn obs_about(reference: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final", "code": {"text": "bundle"}, "subject": {"reference": reference}})
}

async fn count(app: &TestApp, query: &str) -> i64 {
    let sep = if query.contains('?') { '&' } else { '?' };
    let r = app.get(&format!("{query}{sep}_summary=count")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}: {}", app.backend, r.text);
    r.json["total"].as_i64().expect("total")
}

fn id_of_location(entry: &Value) -> String {
    let loc = entry["response"]["location"].as_str().unwrap_or_else(|| panic!("no location in {entry}"));
    loc.split('/').nth(1).unwrap().to_string()
}

fn assert_outcome(r: &Resp, status: StatusCode, backend: Backend) {
    assert_eq!(r.status, status, "{backend:?}: {}", r.text);
    assert_eq!(r.json["resourceType"], "OperationOutcome", "{backend:?}: {}", r.text);
}

#[tokio::test]
async fn transaction_rewrites_urn_uuid_references() {
    for app in TestApp::all().await {
        let b = app.backend;
        let pu = "urn:uuid:8d5f5c2e-6d0e-4a4f-9a51-0d6d1b1f7a01";
        let r = app
            .post(
                "/fhir",
                bundle(
                    "transaction",
                    vec![post(Some(pu), patient("Urn", "u-1")), post(None, obs_about(pu)), post(None, obs_about(pu))],
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.json["resourceType"], "Bundle", "{b:?}");
        assert_eq!(r.json["type"], "transaction-response", "{b:?}");
        let entries = r.json["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 3, "{b:?}");
        for e in entries {
            assert_eq!(e["response"]["status"], "201 Created", "{b:?}: {e}");
            assert_eq!(e["response"]["etag"], "W/\"1\"", "{b:?}");
            assert!(e["response"]["location"].as_str().unwrap().ends_with("/_history/1"), "{b:?}");
        }
        let pid = id_of_location(&entries[0]);
        assert_ne!(pid, "8d5f5c2e-6d0e-4a4f-9a51-0d6d1b1f7a01", "{b:?}");
        let oid = id_of_location(&entries[1]);
        let o = app.get(&format!("/fhir/Observation/{oid}")).await;
        assert_eq!(o.json["subject"]["reference"], format!("Patient/{pid}"), "{b:?}: {}", o.text);
        let found = app.get(&format!("/fhir/Observation?patient={pid}")).await;
        assert_eq!(found.ids().len(), 2, "{b:?}: the rewritten reference is indexed");
        assert_eq!(app.get(&format!("/fhir/Patient/{pid}")).await.status, StatusCode::OK, "{b:?}");
    }
}

#[tokio::test]
async fn transaction_is_atomic() {
    for app in TestApp::all().await {
        let b = app.backend;
        // The second entry is invalid FHIR: rejected before anything is stored.
        let bad = json!({"resourceType": "Patient", "gender": "purple"});
        let r =
            app.post("/fhir", bundle("transaction", vec![post(None, patient("Atomic", "a-1")), post(None, bad)])).await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
        assert!(r.text.contains("entry[1]"), "{b:?}: the failing entry is named: {}", r.text);
        assert_eq!(count(&app, "/fhir/Patient?name=atomic").await, 0, "{b:?}");

        // The second entry fails only inside the store (stale ifMatch): the first is rolled back.
        let existing = app.create(patient("Existing", "a-2")).await;
        let mut upd = patient("Changed", "a-2");
        upd["id"] = json!(existing);
        let stale = json!({"resource": upd, "request": {"method": "PUT", "url": format!("Patient/{existing}"), "ifMatch": "W/\"7\""}});
        let r = app.post("/fhir", bundle("transaction", vec![post(None, patient("Atomic", "a-3")), stale])).await;
        assert_outcome(&r, StatusCode::PRECONDITION_FAILED, b);
        assert_eq!(
            count(&app, "/fhir/Patient?name=atomic").await,
            0,
            "{b:?}: a failed transaction left a write behind"
        );
        let e = app.get(&format!("/fhir/Patient/{existing}")).await;
        assert_eq!(e.json["name"][0]["family"], "Existing", "{b:?}");
        assert_eq!(e.header("etag"), Some("W/\"1\""), "{b:?}");
        assert_eq!(count(&app, "/fhir/Patient").await, 1, "{b:?}");
    }
}

#[tokio::test]
async fn conditional_references_and_if_none_exist() {
    for app in TestApp::all().await {
        let b = app.backend;
        let existing = app.create(patient("Known", "c-1")).await;

        // A conditional reference resolves to the one match.
        let r = app
            .post("/fhir", bundle("transaction", vec![post(None, obs_about(&format!("Patient?identifier={MRN}|c-1")))]))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        let oid = id_of_location(&r.json["entry"][0]);
        let o = app.get(&format!("/fhir/Observation/{oid}")).await;
        assert_eq!(o.json["subject"]["reference"], format!("Patient/{existing}"), "{b:?}");

        // No match: the transaction fails and writes nothing.
        let before = count(&app, "/fhir/Observation").await;
        let r = app
            .post(
                "/fhir",
                bundle("transaction", vec![post(None, obs_about(&format!("Patient?identifier={MRN}|nobody")))]),
            )
            .await;
        assert_outcome(&r, StatusCode::PRECONDITION_FAILED, b);
        assert_eq!(count(&app, "/fhir/Observation").await, before, "{b:?}");

        // ifNoneExist matching: no new Patient, the entry answers 200 with the existing one,
        // and references to the entry's fullUrl point at the existing resource.
        let fu = "urn:uuid:0b7c7f0e-1111-4c1e-8a6e-2d2e4c1b9a02";
        let mut p = post(Some(fu), patient("Known", "c-1"));
        p["request"]["ifNoneExist"] = json!(format!("identifier={MRN}|c-1"));
        let r = app.post("/fhir", bundle("transaction", vec![p, post(None, obs_about(fu))])).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.json["entry"][0]["response"]["status"], "200 OK", "{b:?}");
        assert_eq!(id_of_location(&r.json["entry"][0]), existing, "{b:?}");
        assert_eq!(count(&app, "/fhir/Patient").await, 1, "{b:?}");
        let oid = id_of_location(&r.json["entry"][1]);
        assert_eq!(
            app.get(&format!("/fhir/Observation/{oid}")).await.json["subject"]["reference"],
            format!("Patient/{existing}"),
            "{b:?}"
        );

        // ifNoneExist not matching: created.
        let mut p = post(None, patient("New", "c-2"));
        p["request"]["ifNoneExist"] = json!(format!("identifier={MRN}|c-2"));
        let r = app.post("/fhir", bundle("transaction", vec![p])).await;
        assert_eq!(r.json["entry"][0]["response"]["status"], "201 Created", "{b:?}: {}", r.text);
        assert_eq!(count(&app, "/fhir/Patient").await, 2, "{b:?}");
    }
}

#[tokio::test]
async fn batch_entries_succeed_or_fail_alone() {
    for app in TestApp::all().await {
        let b = app.backend;
        let existing = app.create(patient("Batch", "b-0")).await;
        let entries = vec![
            post(None, patient("BatchOne", "b-1")),
            post(None, json!({"resourceType": "Patient", "birthDate": "1970-13-45"})),
            json!({"request": {"method": "GET", "url": format!("Patient/{existing}")}}),
            json!({"request": {"method": "GET", "url": "Patient?name=batch"}}),
            json!({"request": {"method": "GET", "url": "Patient/missing"}}),
            post(None, patient("BatchTwo", "b-2")),
            json!({"request": {"method": "PATCH", "url": "Patient/x"}}),
        ];
        let r = app.post("/fhir", bundle("batch", entries)).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.json["type"], "batch-response", "{b:?}");
        let out = r.json["entry"].as_array().unwrap();
        assert_eq!(out.len(), 7, "{b:?}");
        assert_eq!(out[0]["response"]["status"], "201 Created", "{b:?}");
        assert!(out[1]["response"]["status"].as_str().unwrap().starts_with("400"), "{b:?}: {}", out[1]);
        assert_eq!(out[1]["response"]["outcome"]["resourceType"], "OperationOutcome", "{b:?}");
        assert_eq!(out[2]["response"]["status"], "200 OK", "{b:?}");
        assert_eq!(out[2]["resource"]["id"], existing.as_str(), "{b:?}");
        assert_eq!(out[3]["response"]["status"], "200 OK", "{b:?}");
        assert_eq!(out[3]["resource"]["type"], "searchset", "{b:?}");
        // The search ran after the writes before it: Batch and BatchOne.
        assert_eq!(out[3]["resource"]["total"], 2, "{b:?}: {}", out[3]);
        assert!(out[4]["response"]["status"].as_str().unwrap().starts_with("404"), "{b:?}: {}", out[4]);
        assert_eq!(out[4]["response"]["outcome"]["resourceType"], "OperationOutcome", "{b:?}");
        assert_eq!(out[5]["response"]["status"], "201 Created", "{b:?}");
        assert!(out[6]["response"]["status"].as_str().unwrap().starts_with("400"), "{b:?}: {}", out[6]);
        assert_eq!(count(&app, "/fhir/Patient").await, 3, "{b:?}");
    }
}

#[tokio::test]
async fn duplicate_targets_and_malformed_bundles() {
    for app in TestApp::all().await {
        let b = app.backend;
        let put = |family: &str| json!({"resource": {"resourceType": "Patient", "id": "dup", "name": [{"family": family}]}, "request": {"method": "PUT", "url": "Patient/dup"}});
        let r =
            app.post("/fhir", bundle("transaction", vec![post(None, patient("Dup", "d-1")), put("A"), put("B")])).await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
        assert_eq!(count(&app, "/fhir/Patient").await, 0, "{b:?}");
        assert_eq!(app.get("/fhir/Patient/dup").await.status, StatusCode::NOT_FOUND, "{b:?}");
        // A PUT and a DELETE of the same resource are duplicates too.
        let del = json!({"request": {"method": "DELETE", "url": "Patient/dup"}});
        let r = app.post("/fhir", bundle("transaction", vec![put("A"), del])).await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
        assert_eq!(count(&app, "/fhir/Patient").await, 0, "{b:?}");

        for bad in [
            json!({"resourceType": "Bundle", "type": "collection", "entry": []}),
            json!({"resourceType": "Bundle", "type": "transaction", "entry": {"not": "an array"}}),
            json!({"resourceType": "Patient"}),
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient"}}]}),
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Observation"}}]}),
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "PUT", "url": "Patient/bad_id!"}, "resource": {"resourceType": "Patient"}}]}),
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "POST", "url": "Unicorn"}, "resource": {"resourceType": "Unicorn"}}]}),
        ] {
            let r = app.post("/fhir", bad.clone()).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b:?}: {bad}: {}", r.text);
            assert_eq!(r.json["resourceType"], "OperationOutcome", "{b:?}: {bad}");
        }
        assert_eq!(count(&app, "/fhir/Patient").await, 0, "{b:?}");
    }
}

#[tokio::test]
async fn transaction_with_updates_deletes_and_reads() {
    for app in TestApp::all().await {
        let b = app.backend;
        let keep = app.create(patient("Keep", "t-1")).await;
        let drop = app.create(patient("Drop", "t-2")).await;
        let mut upd = patient("Kept", "t-1");
        upd["id"] = json!(keep);
        let entries = vec![
            json!({"resource": upd, "request": {"method": "PUT", "url": format!("Patient/{keep}"), "ifMatch": "W/\"1\""}}),
            json!({"request": {"method": "DELETE", "url": format!("Patient/{drop}")}}),
            json!({"request": {"method": "DELETE", "url": format!("Patient?identifier={MRN}|nobody")}}),
            json!({"resource": {"resourceType": "Patient", "id": "chosen"}, "request": {"method": "PUT", "url": "Patient/chosen"}}),
            json!({"request": {"method": "GET", "url": format!("Patient/{keep}")}}),
        ];
        let r = app.post("/fhir", bundle("transaction", entries)).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        let out = r.json["entry"].as_array().unwrap();
        assert_eq!(out[0]["response"]["status"], "200 OK", "{b:?}");
        assert_eq!(out[0]["response"]["etag"], "W/\"2\"", "{b:?}");
        assert_eq!(out[1]["response"]["status"], "204 No Content", "{b:?}");
        assert_eq!(out[2]["response"]["status"], "204 No Content", "{b:?}");
        assert_eq!(out[3]["response"]["status"], "201 Created", "{b:?}");
        assert_eq!(out[4]["response"]["status"], "200 OK", "{b:?}");
        assert_eq!(out[4]["resource"]["name"][0]["family"], "Kept", "{b:?}: GET sees the transaction's writes");
        assert_eq!(app.get(&format!("/fhir/Patient/{drop}")).await.status, StatusCode::GONE, "{b:?}");
        assert_eq!(app.get("/fhir/Patient/chosen").await.status, StatusCode::OK, "{b:?}");
    }
}
