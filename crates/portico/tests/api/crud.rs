//! CRUD: create, read, vread, update (plain, If-Match, identical, create-on-update), delete,
//! the conditional forms, JSON Patch, `Prefer: return`, `If-None-Match`, exact decimals.

use super::common::*;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// A request with the token, the given extra headers and an optional raw body.
async fn send(app: &TestApp, method: Method, uri: &str, extra: &[(&str, &str)], body: &[u8]) -> Resp {
    let auth = bearer();
    let mut h: Vec<(&str, &str)> = vec![("authorization", auth.as_str())];
    h.extend_from_slice(extra);
    app.raw(method, uri, &h, body.to_vec()).await
}

/// A FHIR JSON write with extra headers.
async fn write(app: &TestApp, method: Method, uri: &str, extra: &[(&str, &str)], body: &Value) -> Resp {
    let mut h = vec![("content-type", "application/fhir+json")];
    h.extend_from_slice(extra);
    send(app, method, uri, &h, body.to_string().as_bytes()).await
}

/// The exact number of live resources a search matches.
async fn count(app: &TestApp, query: &str) -> i64 {
    let sep = if query.contains('?') { '&' } else { '?' };
    let r = app.get(&format!("{query}{sep}_summary=count")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?} count {query}: {}", app.backend, r.text);
    r.json["total"].as_i64().unwrap_or_else(|| panic!("{:?}: no total in {}", app.backend, r.text))
}

fn assert_outcome(r: &Resp, status: StatusCode, backend: Backend) {
    assert_eq!(r.status, status, "{backend:?}: {}", r.text);
    assert_eq!(r.json["resourceType"], "OperationOutcome", "{backend:?}: {}", r.text);
    assert!(r.json["issue"].as_array().is_some_and(|a| !a.is_empty()), "{backend:?}: {}", r.text);
    assert!(
        r.header("content-type").is_some_and(|c| c.starts_with("application/fhir+json")),
        "{backend:?}: {:?}",
        r.headers
    );
}

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family}]})
}

fn with_identifier(value: &str) -> Value {
    json!({"resourceType": "Patient", "identifier": [{"system": "http://example.org/mrn", "value": value}]})
}

#[tokio::test]
async fn create_assigns_id_version_and_location() {
    for app in TestApp::all().await {
        let b = app.backend;
        let body = json!({
            "resourceType": "Patient",
            "id": "client-chosen",
            "meta": {"versionId": "7", "lastUpdated": "2001-01-01T00:00:00Z"},
            "name": [{"family": "Adeyemi"}]
        });
        let r = app.post("/fhir/Patient", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{b:?}: {}", r.text);
        let id = r.json["id"].as_str().expect("id").to_string();
        assert_ne!(id, "client-chosen", "{b:?}: the client's id must be ignored");
        assert!(portico_fhir_id(&id), "{b:?}: {id}");
        assert_eq!(r.json["meta"]["versionId"], "1", "{b:?}: client versionId ignored: {}", r.text);
        assert_ne!(r.json["meta"]["lastUpdated"], "2001-01-01T00:00:00Z", "{b:?}");
        assert_eq!(r.header("etag"), Some("W/\"1\""), "{b:?}");
        assert_eq!(
            r.header("location"),
            Some(format!("http://localhost/fhir/Patient/{id}/_history/1").as_str()),
            "{b:?}"
        );
        assert!(r.header("last-modified").is_some(), "{b:?}");
        assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/fhir+json")), "{b:?}");
        assert_eq!(r.json["name"][0]["family"], "Adeyemi", "{b:?}");
        // Nothing was stored under the client's id.
        let r = app.get("/fhir/Patient/client-chosen").await;
        assert_outcome(&r, StatusCode::NOT_FOUND, b);
        assert_eq!(count(&app, "/fhir/Patient").await, 1, "{b:?}");
    }
}

fn portico_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
}

#[tokio::test]
async fn read_and_vread() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(patient("Read")).await;
        let r = app.get(&format!("/fhir/Patient/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.json["id"], id.as_str(), "{b:?}");
        assert_eq!(r.json["name"][0]["family"], "Read", "{b:?}");
        assert_eq!(r.header("etag"), Some("W/\"1\""), "{b:?}");
        assert!(r.header("last-modified").is_some_and(|d| d.ends_with(" GMT")), "{b:?}: {:?}", r.headers);
        let v = app.get(&format!("/fhir/Patient/{id}/_history/1")).await;
        assert_eq!(v.status, StatusCode::OK, "{b:?}: {}", v.text);
        assert_eq!(v.json, r.json, "{b:?}");
        assert_eq!(v.header("etag"), Some("W/\"1\""), "{b:?}");
        // A version that does not exist, and a non-numeric version.
        assert_outcome(&app.get(&format!("/fhir/Patient/{id}/_history/2")).await, StatusCode::NOT_FOUND, b);
        assert_outcome(&app.get(&format!("/fhir/Patient/{id}/_history/x")).await, StatusCode::NOT_FOUND, b);
    }
}

#[tokio::test]
async fn update_bumps_version_and_identical_update_is_noop() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(patient("One")).await;
        let mut body = patient("Two");
        body["id"] = json!(id);
        let r = app.put(&format!("/fhir/Patient/{id}"), body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.header("etag"), Some("W/\"2\""), "{b:?}");
        assert_eq!(r.json["meta"]["versionId"], "2", "{b:?}");
        assert_eq!(
            r.header("location"),
            Some(format!("http://localhost/fhir/Patient/{id}/_history/2").as_str()),
            "{b:?}"
        );
        let lu = r.json["meta"]["lastUpdated"].clone();

        // The same content again (even with a stale client meta) changes nothing.
        body["meta"] = json!({"versionId": "1"});
        let r = app.put(&format!("/fhir/Patient/{id}"), body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.header("etag"), Some("W/\"2\""), "{b:?}: identical update must be a no-op");
        assert_eq!(r.json["meta"]["versionId"], "2", "{b:?}");
        assert_eq!(r.json["meta"]["lastUpdated"], lu, "{b:?}");
        let h = app.get(&format!("/fhir/Patient/{id}/_history")).await;
        assert_eq!(h.json["entry"].as_array().map(Vec::len), Some(2), "{b:?}: {}", h.text);

        // The read sees version 2 with the new content; version 1 keeps the old one.
        let r = app.get(&format!("/fhir/Patient/{id}")).await;
        assert_eq!(r.json["name"][0]["family"], "Two", "{b:?}");
        assert_eq!(r.header("etag"), Some("W/\"2\""), "{b:?}");
        let v1 = app.get(&format!("/fhir/Patient/{id}/_history/1")).await;
        assert_eq!(v1.json["name"][0]["family"], "One", "{b:?}");
    }
}

#[tokio::test]
async fn if_match_guards_updates() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(patient("Match")).await;
        let url = format!("/fhir/Patient/{id}");
        let mut body = patient("Match2");
        body["id"] = json!(id);
        let r = write(&app, Method::PUT, &url, &[("if-match", "W/\"1\"")], &body).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.header("etag"), Some("W/\"2\""), "{b:?}");

        // Stale: version 1 is no longer current.
        body["name"][0]["family"] = json!("Stale");
        let r = write(&app, Method::PUT, &url, &[("if-match", "W/\"1\"")], &body).await;
        assert_outcome(&r, StatusCode::PRECONDITION_FAILED, b);
        assert_eq!(app.get(&url).await.json["name"][0]["family"], "Match2", "{b:?}: the stale update was stored");

        // Without the W/ wrapper (some clients drop it).
        body["name"][0]["family"] = json!("Bare");
        let r = write(&app, Method::PUT, &url, &[("if-match", "\"2\"")], &body).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.header("etag"), Some("W/\"3\""), "{b:?}");
        body["name"][0]["family"] = json!("Naked");
        let r = write(&app, Method::PUT, &url, &[("if-match", "3")], &body).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.header("etag"), Some("W/\"4\""), "{b:?}");

        // A malformed If-Match is a 400, not a silent pass.
        let r = write(&app, Method::PUT, &url, &[("if-match", "W/\"abc\"")], &body).await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
    }
}

#[tokio::test]
async fn put_to_new_id_creates_and_id_mismatch_is_rejected() {
    for app in TestApp::all().await {
        let b = app.backend;
        let mut body = patient("Chosen");
        body["id"] = json!("my-id-1");
        let r = app.put("/fhir/Patient/my-id-1", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{b:?}: {}", r.text);
        assert_eq!(r.json["id"], "my-id-1", "{b:?}");
        assert_eq!(r.header("etag"), Some("W/\"1\""), "{b:?}");
        assert_eq!(r.header("location"), Some("http://localhost/fhir/Patient/my-id-1/_history/1"), "{b:?}");
        assert_eq!(app.get("/fhir/Patient/my-id-1").await.status, StatusCode::OK, "{b:?}");

        // A body without an id is fine: the URL names it.
        let r = app.put("/fhir/Patient/my-id-2", patient("NoId")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{b:?}: {}", r.text);
        assert_eq!(r.json["id"], "my-id-2", "{b:?}");

        let mut other = patient("Mismatch");
        other["id"] = json!("someone-else");
        let r = app.put("/fhir/Patient/my-id-1", other).await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
        assert_eq!(app.get("/fhir/Patient/my-id-1").await.json["name"][0]["family"], "Chosen", "{b:?}");
        assert_outcome(&app.get("/fhir/Patient/someone-else").await, StatusCode::NOT_FOUND, b);
        assert_eq!(count(&app, "/fhir/Patient").await, 2, "{b:?}");
    }
}

#[tokio::test]
async fn delete_then_gone_and_history_survives() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(patient("Gone")).await;
        let url = format!("/fhir/Patient/{id}");
        let mut body = patient("Gone2");
        body["id"] = json!(id);
        assert_eq!(app.put(&url, body).await.status, StatusCode::OK, "{b:?}");

        // A delete guarded by a stale If-Match is refused.
        let r = send(&app, Method::DELETE, &url, &[("if-match", "W/\"1\"")], b"").await;
        assert_outcome(&r, StatusCode::PRECONDITION_FAILED, b);
        assert_eq!(app.get(&url).await.status, StatusCode::OK, "{b:?}");

        let r = send(&app, Method::DELETE, &url, &[("if-match", "W/\"2\"")], b"").await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{b:?}: {}", r.text);
        assert!(r.text.is_empty(), "{b:?}: {}", r.text);
        assert_eq!(r.header("etag"), Some("W/\"3\""), "{b:?}");

        assert_outcome(&app.get(&url).await, StatusCode::GONE, b);
        let v1 = app.get(&format!("{url}/_history/1")).await;
        assert_eq!(v1.status, StatusCode::OK, "{b:?}: {}", v1.text);
        assert_eq!(v1.json["name"][0]["family"], "Gone", "{b:?}");
        let v2 = app.get(&format!("{url}/_history/2")).await;
        assert_eq!(v2.json["name"][0]["family"], "Gone2", "{b:?}");
        assert_outcome(&app.get(&format!("{url}/_history/3")).await, StatusCode::GONE, b);
        assert_eq!(count(&app, "/fhir/Patient").await, 0, "{b:?}");

        // Deleting again is fine and writes nothing.
        let r = app.delete(&url).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{b:?}: {}", r.text);
        let h = app.get(&format!("{url}/_history")).await;
        assert_eq!(h.json["entry"].as_array().map(Vec::len), Some(3), "{b:?}: {}", h.text);
        // Deleting something that never existed is fine too.
        assert_eq!(app.delete("/fhir/Patient/never-was").await.status, StatusCode::NO_CONTENT, "{b:?}");

        // Re-creating after a delete by PUT continues the version sequence.
        let mut back = patient("Back");
        back["id"] = json!(id);
        let r = app.put(&url, back).await;
        assert_eq!(r.status, StatusCode::CREATED, "{b:?}: {}", r.text);
        assert_eq!(r.header("etag"), Some("W/\"4\""), "{b:?}");
    }
}

#[tokio::test]
async fn unknown_ids_and_types_are_404_outcomes() {
    for app in TestApp::all().await {
        let b = app.backend;
        assert_outcome(&app.get("/fhir/Patient/does-not-exist").await, StatusCode::NOT_FOUND, b);
        assert_outcome(&app.get("/fhir/Patient/does-not-exist/_history/1").await, StatusCode::NOT_FOUND, b);
        assert_outcome(&app.get("/fhir/Unicorn/1").await, StatusCode::NOT_FOUND, b);
        assert_outcome(&app.get("/fhir/Unicorn").await, StatusCode::NOT_FOUND, b);
        assert_outcome(&app.post("/fhir/Unicorn", json!({"resourceType": "Unicorn"})).await, StatusCode::NOT_FOUND, b);
        assert_outcome(&app.put("/fhir/Unicorn/1", json!({"resourceType": "Unicorn"})).await, StatusCode::NOT_FOUND, b);
        assert_outcome(&app.delete("/fhir/Unicorn/1").await, StatusCode::NOT_FOUND, b);
    }
}

#[tokio::test]
async fn conditional_create_with_if_none_exist() {
    for app in TestApp::all().await {
        let b = app.backend;
        let crit = [("if-none-exist", "identifier=http://example.org/mrn|cc-1")];
        let r = write(&app, Method::POST, "/fhir/Patient", &crit, &with_identifier("cc-1")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{b:?}: {}", r.text);
        let first = r.json["id"].as_str().expect("id").to_string();

        let r = write(&app, Method::POST, "/fhir/Patient", &crit, &with_identifier("cc-1")).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.json["id"], first.as_str(), "{b:?}");
        assert_eq!(r.header("etag"), Some("W/\"1\""), "{b:?}");
        assert_eq!(count(&app, "/fhir/Patient").await, 1, "{b:?}: no new resource");

        // Different criteria create.
        let other = [("if-none-exist", "identifier=http://example.org/mrn|cc-2")];
        let r = write(&app, Method::POST, "/fhir/Patient", &other, &with_identifier("cc-2")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{b:?}: {}", r.text);
        assert_eq!(count(&app, "/fhir/Patient").await, 2, "{b:?}");

        // Criteria matching two → 412, nothing written.
        let both = [("if-none-exist", "identifier=cc-1,cc-2")];
        let r = write(&app, Method::POST, "/fhir/Patient", &both, &with_identifier("cc-3")).await;
        assert_outcome(&r, StatusCode::PRECONDITION_FAILED, b);
        assert_eq!(count(&app, "/fhir/Patient").await, 2, "{b:?}");

        // Unknown criteria are refused rather than ignored (which would always create).
        let bad = [("if-none-exist", "nonsense=1")];
        let r = write(&app, Method::POST, "/fhir/Patient", &bad, &with_identifier("cc-4")).await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
        assert_eq!(count(&app, "/fhir/Patient").await, 2, "{b:?}");
    }
}

#[tokio::test]
async fn conditional_update_creates_updates_or_refuses() {
    for app in TestApp::all().await {
        let b = app.backend;
        let url = "/fhir/Patient?identifier=http://example.org/mrn|cu-1";
        // None match: create.
        let r = app.put(url, with_identifier("cu-1")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{b:?}: {}", r.text);
        let id = r.json["id"].as_str().expect("id").to_string();
        assert_eq!(r.header("etag"), Some("W/\"1\""), "{b:?}");

        // One match: update it.
        let mut body = with_identifier("cu-1");
        body["gender"] = json!("female");
        let r = app.put(url, body).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.json["id"], id.as_str(), "{b:?}");
        assert_eq!(r.header("etag"), Some("W/\"2\""), "{b:?}");
        assert_eq!(app.get(&format!("/fhir/Patient/{id}")).await.json["gender"], "female", "{b:?}");
        assert_eq!(count(&app, "/fhir/Patient").await, 1, "{b:?}");

        // Two match: 412 and nothing written.
        app.create(with_identifier("cu-1")).await;
        let mut body = with_identifier("cu-1");
        body["gender"] = json!("male");
        let r = app.put(url, body).await;
        assert_outcome(&r, StatusCode::PRECONDITION_FAILED, b);
        assert_eq!(count(&app, "/fhir/Patient?gender=male").await, 0, "{b:?}");
        assert_eq!(count(&app, "/fhir/Patient").await, 2, "{b:?}");

        // A body id naming another resource than the match is a 400.
        let mut body = with_identifier("cu-9");
        body["id"] = json!("not-the-match");
        app.put("/fhir/Patient?identifier=http://example.org/mrn|cu-9", with_identifier("cu-9")).await;
        let r = app.put("/fhir/Patient?identifier=http://example.org/mrn|cu-9", body).await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
    }
}

#[tokio::test]
async fn conditional_delete() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(with_identifier("cd-1")).await;
        app.create(with_identifier("cd-2")).await;
        app.create(with_identifier("cd-2")).await;

        let r = app.delete("/fhir/Patient?identifier=http://example.org/mrn|cd-1").await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{b:?}: {}", r.text);
        assert_outcome(&app.get(&format!("/fhir/Patient/{id}")).await, StatusCode::GONE, b);

        // No match: nothing to do.
        let r = app.delete("/fhir/Patient?identifier=http://example.org/mrn|cd-none").await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{b:?}: {}", r.text);

        // Two matches: 412, both kept.
        let r = app.delete("/fhir/Patient?identifier=http://example.org/mrn|cd-2").await;
        assert_outcome(&r, StatusCode::PRECONDITION_FAILED, b);
        assert_eq!(count(&app, "/fhir/Patient?identifier=cd-2").await, 2, "{b:?}");

        // Unknown criteria are refused rather than matching everything.
        let r = app.delete("/fhir/Patient?nonsense=1").await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
        assert_eq!(count(&app, "/fhir/Patient").await, 2, "{b:?}");
    }
}

#[tokio::test]
async fn json_patch() {
    for app in TestApp::all().await {
        let b = app.backend;
        let mut p = patient("Patchy");
        p["gender"] = json!("male");
        let id = app.create(p).await;
        let url = format!("/fhir/Patient/{id}");
        let jp = [("content-type", "application/json-patch+json")];

        let patch = json!([{"op": "replace", "path": "/gender", "value": "female"}]);
        let r = send(&app, Method::PATCH, &url, &jp, patch.to_string().as_bytes()).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.header("etag"), Some("W/\"2\""), "{b:?}");
        assert_eq!(r.json["gender"], "female", "{b:?}");
        assert_eq!(r.json["name"][0]["family"], "Patchy", "{b:?}");
        assert_eq!(app.get(&url).await.json["gender"], "female", "{b:?}");

        // A patch that changes the id.
        let patch = json!([{"op": "replace", "path": "/id", "value": "elsewhere"}]);
        let r = send(&app, Method::PATCH, &url, &jp, patch.to_string().as_bytes()).await;
        assert_outcome(&r, StatusCode::UNPROCESSABLE_ENTITY, b);
        // A patch that cannot apply (test fails).
        let patch = json!([{"op": "test", "path": "/gender", "value": "male"}]);
        let r = send(&app, Method::PATCH, &url, &jp, patch.to_string().as_bytes()).await;
        assert_outcome(&r, StatusCode::UNPROCESSABLE_ENTITY, b);
        // A patch producing invalid FHIR.
        let patch = json!([{"op": "replace", "path": "/gender", "value": "purple"}]);
        let r = send(&app, Method::PATCH, &url, &jp, patch.to_string().as_bytes()).await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
        // Not a patch document.
        let r = send(&app, Method::PATCH, &url, &jp, b"{\"op\": 1}").await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
        // Wrong content type.
        let patch = json!([{"op": "replace", "path": "/gender", "value": "other"}]);
        let r =
            send(&app, Method::PATCH, &url, &[("content-type", "application/fhir+json")], patch.to_string().as_bytes())
                .await;
        assert_outcome(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, b);
        // Stale If-Match.
        let r = send(&app, Method::PATCH, &url, &[jp[0], ("if-match", "W/\"1\"")], patch.to_string().as_bytes()).await;
        assert_outcome(&r, StatusCode::PRECONDITION_FAILED, b);

        let now = app.get(&url).await;
        assert_eq!(now.header("etag"), Some("W/\"2\""), "{b:?}: a failed patch wrote a version");
        assert_eq!(now.json["gender"], "female", "{b:?}");
        // Patching something that does not exist.
        let r = send(&app, Method::PATCH, "/fhir/Patient/nope", &jp, patch.to_string().as_bytes()).await;
        assert_outcome(&r, StatusCode::NOT_FOUND, b);
    }
}

#[tokio::test]
async fn prefer_return() {
    for app in TestApp::all().await {
        let b = app.backend;
        let r = write(&app, Method::POST, "/fhir/Patient", &[("prefer", "return=minimal")], &patient("Min")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{b:?}: {}", r.text);
        assert!(r.text.is_empty(), "{b:?}: return=minimal must have an empty body: {}", r.text);
        assert_eq!(r.header("etag"), Some("W/\"1\""), "{b:?}");
        let loc = r.header("location").expect("location").to_string();
        let id = loc.trim_start_matches("http://localhost/fhir/Patient/").split('/').next().unwrap().to_string();
        assert_eq!(app.get(&format!("/fhir/Patient/{id}")).await.json["name"][0]["family"], "Min", "{b:?}");

        let mut body = patient("Min2");
        body["id"] = json!(id);
        let r =
            write(&app, Method::PUT, &format!("/fhir/Patient/{id}"), &[("prefer", "return=OperationOutcome")], &body)
                .await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.json["resourceType"], "OperationOutcome", "{b:?}: {}", r.text);
        assert_eq!(r.json["issue"][0]["severity"], "information", "{b:?}");
        assert_eq!(r.header("etag"), Some("W/\"2\""), "{b:?}");

        let r =
            write(&app, Method::POST, "/fhir/Patient", &[("prefer", "return=representation")], &patient("Rep")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{b:?}");
        assert_eq!(r.json["resourceType"], "Patient", "{b:?}");
    }
}

#[tokio::test]
async fn if_none_match_gives_304() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(patient("Cache")).await;
        let url = format!("/fhir/Patient/{id}");
        let r = send(&app, Method::GET, &url, &[("if-none-match", "W/\"1\"")], b"").await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{b:?}: {}", r.text);
        assert!(r.text.is_empty(), "{b:?}");
        assert_eq!(r.header("etag"), Some("W/\"1\""), "{b:?}");

        let mut body = patient("Cache2");
        body["id"] = json!(id);
        app.put(&url, body).await;
        let r = send(&app, Method::GET, &url, &[("if-none-match", "W/\"1\"")], b"").await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.json["name"][0]["family"], "Cache2", "{b:?}");
        assert_eq!(r.header("etag"), Some("W/\"2\""), "{b:?}");
    }
}

#[tokio::test]
async fn decimals_round_trip_exactly() {
    for app in TestApp::all().await {
        let b = app.backend;
        let text = r#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2339-0"}]},"valueQuantity":{"value":1.50,"unit":"mg/dL"},"component":[{"code":{"text":"big"},"valueQuantity":{"value":12345678901234567890.1}},{"code":{"text":"tiny"},"valueQuantity":{"value":0.000000000000000000001000}}]}"#;
        let r = send(
            &app,
            Method::POST,
            "/fhir/Observation",
            &[("content-type", "application/fhir+json")],
            text.as_bytes(),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{b:?}: {}", r.text);
        for t in [
            &r.text,
            &app.get(&format!("/fhir/Observation/{}", r.json["id"].as_str().unwrap())).await.text,
            &app.get("/fhir/Observation").await.text,
        ] {
            assert!(t.contains("\"value\":1.50,"), "{b:?}: 1.50 lost: {t}");
            assert!(t.contains("12345678901234567890.1}"), "{b:?}: big decimal lost: {t}");
            assert!(t.contains("0.000000000000000000001000}"), "{b:?}: tiny decimal lost: {t}");
        }
    }
}
