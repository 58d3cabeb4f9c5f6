//! History: instance (with deletions), type and system level, `_since`, `_count` paging.

use super::common::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const BASE: &str = "http://localhost/fhir";

fn named(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family}]})
}

/// Entries of a history Bundle as (type/id, versionId or "-", request method, status).
fn summary(r: &Resp) -> Vec<(String, String, String, String)> {
    r.json["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let full = e["fullUrl"].as_str().unwrap_or_default().trim_start_matches(&format!("{BASE}/")).to_string();
            let version = e["resource"]["meta"]["versionId"].as_str().unwrap_or("-").to_string();
            (
                full,
                version,
                e["request"]["method"].as_str().unwrap_or_default().to_string(),
                e["response"]["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn row(full: &str, v: &str, m: &str, s: &str) -> (String, String, String, String) {
    (full.to_string(), v.to_string(), m.to_string(), s.to_string())
}

async fn get_ok(app: &TestApp, uri: &str) -> Resp {
    let r = app.get(uri).await;
    assert_eq!(r.status, StatusCode::OK, "{:?} {uri}: {}", app.backend, r.text);
    assert_eq!(r.json["resourceType"], "Bundle", "{:?}", app.backend);
    assert_eq!(r.json["type"], "history", "{:?}", app.backend);
    r
}

/// Follow next links; every page's entries (as `summary` rows).
async fn all_pages(app: &TestApp, first: &str) -> Vec<Vec<(String, String, String, String)>> {
    let mut out = Vec::new();
    let mut url = first.to_string();
    for _ in 0..100 {
        let r = get_ok(app, &url).await;
        out.push(summary(&r));
        match r.next_link() {
            Some(n) => {
                assert!(n.starts_with(&format!("{BASE}/")), "{:?}: {n}", app.backend);
                url = n["http://localhost".len()..].to_string();
            }
            None => return out,
        }
    }
    panic!("{:?}: history paging did not end", app.backend);
}

#[tokio::test]
async fn instance_history_newest_first_with_deletion() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(named("V1")).await;
        let url = format!("/fhir/Patient/{id}");
        let mut body = named("V2");
        body["id"] = json!(id);
        assert_eq!(app.put(&url, body).await.status, StatusCode::OK, "{b:?}");
        assert_eq!(app.delete(&url).await.status, StatusCode::NO_CONTENT, "{b:?}");
        let other = app.create(named("Other")).await;

        let r = get_ok(&app, &format!("{url}/_history")).await;
        let p = format!("Patient/{id}");
        assert_eq!(
            summary(&r),
            vec![row(&p, "-", "DELETE", "204"), row(&p, "2", "PUT", "200"), row(&p, "1", "POST", "201")],
            "{b:?}: {}",
            r.text
        );
        let entries = r.json["entry"].as_array().unwrap();
        assert!(entries[0].get("resource").is_none(), "{b:?}: a deletion has no resource");
        assert_eq!(entries[0]["request"]["url"], format!("Patient/{id}"), "{b:?}");
        assert_eq!(entries[0]["response"]["etag"], "W/\"3\"", "{b:?}");
        assert_eq!(entries[1]["resource"]["name"][0]["family"], "V2", "{b:?}");
        assert_eq!(entries[2]["resource"]["name"][0]["family"], "V1", "{b:?}");
        assert!(entries.iter().all(|e| e["response"]["lastModified"].is_string()), "{b:?}");
        assert_eq!(r.json["link"][0]["relation"], "self", "{b:?}");
        assert_eq!(r.json["link"][0]["url"], format!("{BASE}/Patient/{id}/_history"), "{b:?}");
        assert!(!r.text.contains(&other), "{b:?}: another resource in instance history");

        // Unknown instance, unknown type.
        let r = app.get("/fhir/Patient/nobody/_history").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{b:?}: {}", r.text);
        assert_eq!(r.json["resourceType"], "OperationOutcome", "{b:?}");
        let r = app.get("/fhir/Unicorn/1/_history").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{b:?}: {}", r.text);
    }
}

#[tokio::test]
async fn type_and_system_history() {
    for app in TestApp::all().await {
        let b = app.backend;
        let p1 = app.create(named("T1")).await;
        let o1 = app.create(json!({"resourceType": "Observation", "status": "final", "code": {"text": "t"}})).await;
        let mut body = named("T1b");
        body["id"] = json!(p1);
        app.put(&format!("/fhir/Patient/{p1}"), body).await;
        let p2 = app.create(named("T2")).await;

        let r = get_ok(&app, "/fhir/Patient/_history").await;
        assert_eq!(
            summary(&r),
            vec![
                row(&format!("Patient/{p2}"), "1", "POST", "201"),
                row(&format!("Patient/{p1}"), "2", "PUT", "200"),
                row(&format!("Patient/{p1}"), "1", "POST", "201"),
            ],
            "{b:?}"
        );
        assert_eq!(r.json["link"][0]["url"], format!("{BASE}/Patient/_history"), "{b:?}");

        let r = get_ok(&app, "/fhir/_history").await;
        assert_eq!(
            summary(&r),
            vec![
                row(&format!("Patient/{p2}"), "1", "POST", "201"),
                row(&format!("Patient/{p1}"), "2", "PUT", "200"),
                row(&format!("Observation/{o1}"), "1", "POST", "201"),
                row(&format!("Patient/{p1}"), "1", "POST", "201"),
            ],
            "{b:?}"
        );
        assert_eq!(
            get_ok(&app, "/fhir/Observation/_history").await.json["entry"].as_array().unwrap().len(),
            1,
            "{b:?}"
        );
        // An empty history is an empty Bundle.
        let r = get_ok(&app, "/fhir/Condition/_history").await;
        assert!(r.json.get("entry").is_none_or(|e| e.as_array().is_some_and(Vec::is_empty)), "{b:?}: {}", r.text);
        assert_eq!(app.get("/fhir/Unicorn/_history").await.status, StatusCode::NOT_FOUND, "{b:?}");
    }
}

#[tokio::test]
async fn history_since() {
    for app in TestApp::all().await {
        let b = app.backend;
        let early = app.create(named("Early")).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut body = named("Early2");
        body["id"] = json!(early);
        let r = app.put(&format!("/fhir/Patient/{early}"), body).await;
        let since = r.json["meta"]["lastUpdated"].as_str().unwrap().to_string();
        let late = app.create(named("Late")).await;

        let want = vec![
            row(&format!("Patient/{late}"), "1", "POST", "201"),
            row(&format!("Patient/{early}"), "2", "PUT", "200"),
        ];
        for url in [format!("/fhir/Patient/_history?_since={since}"), format!("/fhir/_history?_since={since}")] {
            assert_eq!(summary(&get_ok(&app, &url).await), want, "{b:?}: {url}");
        }
        let r = get_ok(&app, &format!("/fhir/Patient/{early}/_history?_since={since}")).await;
        assert_eq!(summary(&r), want[1..].to_vec(), "{b:?}");
        let r = get_ok(&app, "/fhir/_history?_since=2999-01-01T00:00:00Z").await;
        assert!(summary(&r).is_empty(), "{b:?}");
        let r = get_ok(&app, "/fhir/_history?_since=2000-01-01T00:00:00Z").await;
        assert_eq!(summary(&r).len(), 3, "{b:?}");

        for bad in ["_since=yesterday", "_count=many", "_cursor=not-a-cursor", "name=x"] {
            let r = app.get(&format!("/fhir/Patient/_history?{bad}")).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b:?}: {bad}: {}", r.text);
            assert_eq!(r.json["resourceType"], "OperationOutcome", "{b:?}");
        }
    }
}

#[tokio::test]
async fn history_paging() {
    for app in TestApp::all().await {
        let b = app.backend;
        let mut ids = Vec::new();
        for i in 0..4 {
            let id = app.create(named(&format!("H{i}"))).await;
            let mut body = named(&format!("H{i}b"));
            body["id"] = json!(id);
            app.put(&format!("/fhir/Patient/{id}"), body).await;
            ids.push(id);
        }
        // 8 versions, newest first, 3 to a page.
        let first = get_ok(&app, "/fhir/Patient/_history?_count=3").await;
        let next = first.next_link().expect("next");
        assert!(next.starts_with(&format!("{BASE}/Patient/_history?_count=3&_cursor=")), "{b:?}: {next}");
        // A write between pages does not shift the pages already started.
        app.create(named("Intruder")).await;
        let mut pages = vec![summary(&first)];
        pages.extend(all_pages(&app, &next["http://localhost".len()..]).await);
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 2], "{b:?}");
        let flat: Vec<_> = pages.concat();
        let mut want = Vec::new();
        for id in ids.iter().rev() {
            want.push(row(&format!("Patient/{id}"), "2", "PUT", "200"));
            want.push(row(&format!("Patient/{id}"), "1", "POST", "201"));
        }
        assert_eq!(flat, want, "{b:?}");

        // Instance history pages too.
        let pages = all_pages(&app, &format!("/fhir/Patient/{}/_history?_count=1", ids[0])).await;
        assert_eq!(pages.len(), 2, "{b:?}");
        let versions: BTreeSet<String> = pages.concat().into_iter().map(|r| r.1).collect();
        assert_eq!(versions, ["1", "2"].iter().map(|s| s.to_string()).collect(), "{b:?}");
    }
}
