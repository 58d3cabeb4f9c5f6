//! Concurrency safety on both backends: optimistic locking (`If-Match`), conditional
//! creates (`If-None-Exist`) and plain contention. Requests run as real tasks on a
//! multi-thread runtime, so they do overlap inside the store.

use super::common::*;
use axum::http::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;

const N: usize = 20;

fn headers<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
    let mut h =
        vec![("authorization", format!("Bearer {TOKEN}")), ("content-type", "application/fhir+json".to_string())];
    h.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    h
}

/// Send from a spawned task: owned inputs, the shared app.
async fn send(
    app: Arc<TestApp>,
    method: Method,
    uri: String,
    extra: Vec<(&'static str, String)>,
    body: serde_json::Value,
) -> Resp {
    let mut h = headers(&[]);
    h.extend(extra);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    app.raw(method, &uri, &h, body.to_string().into_bytes()).await
}

fn status_counts(rs: &[Resp]) -> std::collections::BTreeMap<u16, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in rs {
        *m.entry(r.status.as_u16()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_if_match_puts_exactly_one_wins() {
    for app in TestApp::all().await {
        let app = Arc::new(app);
        let backend = app.backend;
        for round in 0..20 {
            let id = app.create(json!({"resourceType": "Patient", "name": [{"family": "Base"}]})).await;
            let mut tasks = Vec::new();
            for k in 0..N {
                let body = json!({"resourceType": "Patient", "id": id, "name": [{"family": format!("Writer{k}")}]});
                tasks.push(tokio::spawn(send(
                    app.clone(),
                    Method::PUT,
                    format!("/fhir/Patient/{id}"),
                    vec![("if-match", "W/\"1\"".to_string())],
                    body,
                )));
            }
            let mut rs = Vec::new();
            for t in tasks {
                rs.push(t.await.expect("task"));
            }
            let counts = status_counts(&rs);
            let ok = counts.get(&200).copied().unwrap_or(0);
            let pf = counts.get(&412).copied().unwrap_or(0);
            let odd: Vec<_> = rs
                .iter()
                .filter(|r| !matches!(r.status.as_u16(), 200 | 412))
                .map(|r| (r.status, r.text.clone()))
                .collect();
            assert!(odd.is_empty(), "{backend:?} round {round}: unexpected responses {odd:?}");
            assert_eq!((ok, pf), (1, N - 1), "{backend:?} round {round}: {counts:?}");
            let winner = rs.iter().find(|r| r.status == StatusCode::OK).expect("winner");
            assert_eq!(winner.header("etag"), Some("W/\"2\""), "{backend:?}");
            let r = app.get(&format!("/fhir/Patient/{id}")).await;
            assert_eq!(r.header("etag"), Some("W/\"2\""), "{backend:?} round {round}");
            assert_eq!(r.json["name"], winner.json["name"], "{backend:?}: the stored version is the winner's");
            let h = app.get(&format!("/fhir/Patient/{id}/_history")).await;
            assert_eq!(h.json["entry"].as_array().map(Vec::len), Some(2), "{backend:?}: {}", h.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_if_none_exist_creates_exactly_one() {
    for app in TestApp::all().await {
        let app = Arc::new(app);
        let backend = app.backend;
        for round in 0..5 {
            let mrn = format!("mrn-{round}-{}", uuid::Uuid::new_v4().simple());
            let mut tasks = Vec::new();
            for k in 0..N {
                let body = json!({
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:example:mrn", "value": mrn}],
                    "name": [{"family": format!("Cond{k}")}]
                });
                tasks.push(tokio::spawn(send(
                    app.clone(),
                    Method::POST,
                    "/fhir/Patient".to_string(),
                    vec![("if-none-exist", format!("identifier=urn:example:mrn|{mrn}"))],
                    body,
                )));
            }
            let mut rs = Vec::new();
            for t in tasks {
                rs.push(t.await.expect("task"));
            }
            let counts = status_counts(&rs);
            let odd: Vec<_> = rs
                .iter()
                .filter(|r| !matches!(r.status.as_u16(), 200 | 201))
                .map(|r| (r.status, r.text.clone()))
                .collect();
            assert!(odd.is_empty(), "{backend:?} round {round}: unexpected responses {odd:?}");
            assert_eq!(counts.get(&201), Some(&1), "{backend:?} round {round}: {counts:?}");
            let created = rs.iter().find(|r| r.status == StatusCode::CREATED).expect("created");
            let id = created.json["id"].as_str().expect("id").to_string();
            for r in &rs {
                assert_eq!(
                    r.json["id"].as_str(),
                    Some(id.as_str()),
                    "{backend:?}: every answer names the one resource"
                );
            }
            let s = app.get(&format!("/fhir/Patient?identifier=urn:example:mrn|{mrn}&_total=accurate")).await;
            assert_eq!(s.json["total"], 1, "{backend:?}: {}", s.text);
            assert_eq!(s.ids(), vec![id], "{backend:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_if_none_exist_in_transactions_creates_exactly_one() {
    for app in TestApp::all().await {
        let app = Arc::new(app);
        let backend = app.backend;
        let mrn = format!("tx-{}", uuid::Uuid::new_v4().simple());
        let mut tasks = Vec::new();
        for k in 0..N {
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
                "fullUrl": "urn:uuid:7f0c8a52-0000-4000-8000-000000000001",
                "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:example:mrn", "value": mrn}], "name": [{"family": format!("Tx{k}")}]},
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier=urn:example:mrn|{mrn}")}
            }]});
            tasks.push(tokio::spawn(send(app.clone(), Method::POST, "/fhir".to_string(), vec![], bundle)));
        }
        let mut rs = Vec::new();
        for t in tasks {
            rs.push(t.await.expect("task"));
        }
        let odd: Vec<_> =
            rs.iter().filter(|r| r.status != StatusCode::OK).map(|r| (r.status, r.text.clone())).collect();
        assert!(odd.is_empty(), "{backend:?}: unexpected responses {odd:?}");
        let statuses: Vec<String> =
            rs.iter().map(|r| r.json["entry"][0]["response"]["status"].as_str().unwrap_or("").to_string()).collect();
        assert_eq!(statuses.iter().filter(|s| s.starts_with("201")).count(), 1, "{backend:?}: {statuses:?}");
        assert_eq!(statuses.iter().filter(|s| s.starts_with("200")).count(), N - 1, "{backend:?}: {statuses:?}");
        let s = app.get(&format!("/fhir/Patient?identifier=urn:example:mrn|{mrn}&_total=accurate")).await;
        assert_eq!(s.json["total"], 1, "{backend:?}: {}", s.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_different_resources_all_succeed() {
    for app in TestApp::all().await {
        let app = Arc::new(app);
        let backend = app.backend;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let mut tasks = Vec::new();
        for k in 0..60 {
            let app = app.clone();
            let tag = tag.clone();
            tasks.push(tokio::spawn(async move {
                match k % 3 {
                    // a plain create
                    0 => send(app, Method::POST, "/fhir/Patient".into(), vec![], json!({"resourceType": "Patient", "identifier": [{"system": "urn:example:load", "value": format!("{tag}-{k}")}]})).await,
                    // a create by PUT to a new id
                    1 => send(app, Method::PUT, format!("/fhir/Patient/load-{tag}-{k}"), vec![], json!({"resourceType": "Patient", "id": format!("load-{tag}-{k}"), "identifier": [{"system": "urn:example:load", "value": format!("{tag}-{k}")}]})).await,
                    // a transaction creating a patient and an observation about them
                    _ => send(app, Method::POST, "/fhir".into(), vec![], json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                        {"fullUrl": "urn:uuid:6a1f4c1e-0000-4000-8000-000000000001", "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:example:load", "value": format!("{tag}-{k}")}]}, "request": {"method": "POST", "url": "Patient"}},
                        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:6a1f4c1e-0000-4000-8000-000000000001"}}, "request": {"method": "POST", "url": "Observation"}}
                    ]})).await,
                }
            }));
        }
        let mut rs = Vec::new();
        for t in tasks {
            rs.push(t.await.expect("task"));
        }
        let bad: Vec<_> = rs.iter().filter(|r| !r.status.is_success()).map(|r| (r.status, r.text.clone())).collect();
        assert!(bad.is_empty(), "{backend:?}: {bad:?}");
        let s = app.get("/fhir/Patient?identifier=urn:example:load|&_total=accurate&_count=1").await;
        assert_eq!(s.json["total"], 60, "{backend:?}: {}", s.text);
        let s = app.get("/fhir/Observation?_total=accurate&_count=1").await;
        assert_eq!(s.json["total"], 20, "{backend:?}: {}", s.text);
    }
}

/// Concurrent unconditional updates of one resource: all succeed (last writer wins) and the
/// history has exactly one version per acknowledged write, contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_blind_updates_serialise() {
    for app in TestApp::all().await {
        let app = Arc::new(app);
        let backend = app.backend;
        let id = app.create(json!({"resourceType": "Patient", "name": [{"family": "Base"}]})).await;
        let mut tasks = Vec::new();
        for k in 0..N {
            let body = json!({"resourceType": "Patient", "id": id, "name": [{"family": format!("Blind{k}")}]});
            tasks.push(tokio::spawn(send(app.clone(), Method::PUT, format!("/fhir/Patient/{id}"), vec![], body)));
        }
        let mut rs = Vec::new();
        for t in tasks {
            rs.push(t.await.expect("task"));
        }
        let bad: Vec<_> =
            rs.iter().filter(|r| r.status != StatusCode::OK).map(|r| (r.status, r.text.clone())).collect();
        assert!(bad.is_empty(), "{backend:?}: {bad:?}");
        let mut versions: Vec<i64> =
            rs.iter().map(|r| r.json["meta"]["versionId"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0)).collect();
        versions.sort();
        assert_eq!(versions, (2..=(N as i64 + 1)).collect::<Vec<_>>(), "{backend:?}");
        let r = app.get(&format!("/fhir/Patient/{id}")).await;
        assert_eq!(r.header("etag").map(str::to_string), Some(format!("W/\"{}\"", N + 1)), "{backend:?}");
    }
}

/// Concurrent conditional updates (`PUT Type?criteria`) with criteria that match nothing
/// yet: exactly one creates, the others update that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_conditional_updates_create_exactly_one() {
    for app in TestApp::all().await {
        let app = Arc::new(app);
        let backend = app.backend;
        for round in 0..3 {
            let mrn = format!("cu-{round}-{}", uuid::Uuid::new_v4().simple());
            let mut tasks = Vec::new();
            for k in 0..N {
                let body = json!({"resourceType": "Patient", "identifier": [{"system": "urn:example:mrn", "value": mrn}], "name": [{"family": format!("Upsert{k}")}]});
                tasks.push(tokio::spawn(send(
                    app.clone(),
                    Method::PUT,
                    format!("/fhir/Patient?identifier=urn:example:mrn|{mrn}"),
                    vec![],
                    body,
                )));
            }
            let mut rs = Vec::new();
            for t in tasks {
                rs.push(t.await.expect("task"));
            }
            let counts = status_counts(&rs);
            let odd: Vec<_> = rs
                .iter()
                .filter(|r| !matches!(r.status.as_u16(), 200 | 201))
                .map(|r| (r.status, r.text.clone()))
                .collect();
            assert!(odd.is_empty(), "{backend:?} round {round}: unexpected responses {odd:?}");
            assert_eq!(counts.get(&201), Some(&1), "{backend:?} round {round}: {counts:?}");
            let s = app.get(&format!("/fhir/Patient?identifier=urn:example:mrn|{mrn}&_total=accurate")).await;
            assert_eq!(s.json["total"], 1, "{backend:?}: {}", s.text);
            let id = s.ids().pop().expect("id");
            let r = app.get(&format!("/fhir/Patient/{id}")).await;
            assert_eq!(
                r.header("etag").map(str::to_string),
                Some(format!("W/\"{N}\"")),
                "{backend:?}: one version per write"
            );
        }
    }
}

/// The same race inside transactions: `PUT Type?criteria` entries that match nothing yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_conditional_updates_in_transactions_create_exactly_one() {
    for app in TestApp::all().await {
        let app = Arc::new(app);
        let backend = app.backend;
        let mrn = format!("txcu-{}", uuid::Uuid::new_v4().simple());
        let mut tasks = Vec::new();
        for k in 0..N {
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
                "fullUrl": "urn:uuid:7f0c8a52-0000-4000-8000-000000000002",
                "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:example:mrn", "value": mrn}], "name": [{"family": format!("TxUp{k}")}]},
                "request": {"method": "PUT", "url": format!("Patient?identifier=urn:example:mrn|{mrn}")}
            }, {
                "resource": {"resourceType": "Observation", "status": "final", "code": {"text": format!("obs {k}")}, "subject": {"reference": "urn:uuid:7f0c8a52-0000-4000-8000-000000000002"}},
                "request": {"method": "POST", "url": "Observation"}
            }]});
            tasks.push(tokio::spawn(send(app.clone(), Method::POST, "/fhir".to_string(), vec![], bundle)));
        }
        let mut rs = Vec::new();
        for t in tasks {
            rs.push(t.await.expect("task"));
        }
        let odd: Vec<_> =
            rs.iter().filter(|r| r.status != StatusCode::OK).map(|r| (r.status, r.text.clone())).collect();
        assert!(odd.is_empty(), "{backend:?}: unexpected responses {odd:?}");
        let statuses: Vec<String> =
            rs.iter().map(|r| r.json["entry"][0]["response"]["status"].as_str().unwrap_or("").to_string()).collect();
        assert_eq!(statuses.iter().filter(|s| s.starts_with("201")).count(), 1, "{backend:?}: {statuses:?}");
        let s = app.get(&format!("/fhir/Patient?identifier=urn:example:mrn|{mrn}&_total=accurate")).await;
        assert_eq!(s.json["total"], 1, "{backend:?}: {}", s.text);
        let id = s.ids().pop().expect("id");
        // Every Observation points at the one Patient.
        let o = app.get(&format!("/fhir/Observation?subject=Patient/{id}&_total=accurate")).await;
        assert_eq!(o.json["total"], N, "{backend:?}: {}", o.text);
    }
}
