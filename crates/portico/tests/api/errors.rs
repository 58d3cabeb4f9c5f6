//! Errors and hostile input: every refusal is an OperationOutcome with the right status,
//! never a 500, and nothing is written.

use super::common::*;
use axum::http::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Send bytes with the token and a content type.
async fn send(app: &TestApp, method: Method, uri: &str, content_type: &str, body: Vec<u8>) -> Resp {
    let auth = bearer();
    app.raw(method, uri, &[("authorization", auth.as_str()), ("content-type", content_type)], body).await
}

async fn count(app: &TestApp, rt: &str) -> i64 {
    let r = app.get(&format!("/fhir/{rt}?_summary=count")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}: {}", app.backend, r.text);
    r.json["total"].as_i64().expect("total")
}

/// Total versions ever written (system history), to prove nothing at all was stored.
async fn versions(app: &TestApp) -> usize {
    let r = app.get("/fhir/_history?_count=1000").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}: {}", app.backend, r.text);
    r.json["entry"].as_array().map(Vec::len).unwrap_or(0)
}

#[track_caller]
fn assert_outcome(r: &Resp, status: StatusCode, backend: Backend, what: &str) {
    assert_eq!(r.status, status, "{backend:?}: {what}: {}", r.text);
    assert_eq!(r.json["resourceType"], "OperationOutcome", "{backend:?}: {what}: {}", r.text);
    let issue = &r.json["issue"][0];
    assert_eq!(issue["severity"], "error", "{backend:?}: {what}: {}", r.text);
    assert!(issue["code"].is_string() && issue["diagnostics"].is_string(), "{backend:?}: {what}: {}", r.text);
    assert!(
        r.header("content-type").is_some_and(|c| c.starts_with("application/fhir+json")),
        "{backend:?}: {what}: {:?}",
        r.headers
    );
}

#[tokio::test]
async fn authentication_is_required() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(json!({"resourceType": "Patient"})).await;
        let body = br#"{"resourceType":"Patient"}"#.to_vec();
        let cases: Vec<(Method, String, Vec<(&str, &str)>)> = vec![
            (Method::GET, format!("/fhir/Patient/{id}"), vec![]),
            (Method::GET, "/fhir/Patient".into(), vec![("authorization", "Bearer wrong-token-0123456789abc")]),
            (Method::GET, "/fhir/Patient".into(), vec![("authorization", "Basic dXNlcjpwYXNz")]),
            (Method::GET, "/fhir/Patient".into(), vec![("authorization", "Bearer ")]),
            (Method::GET, "/fhir/_history".into(), vec![]),
            (Method::POST, "/fhir/Patient".into(), vec![("content-type", "application/fhir+json")]),
            (
                Method::POST,
                "/fhir/Patient".into(),
                vec![("content-type", "application/fhir+json"), ("authorization", "Bearer nope")],
            ),
            (Method::DELETE, format!("/fhir/Patient/{id}"), vec![("authorization", "Bearer nope")]),
            (Method::PUT, format!("/fhir/Patient/{id}"), vec![("content-type", "application/fhir+json")]),
        ];
        for (m, uri, headers) in cases {
            let send_body = if m == Method::POST || m == Method::PUT { body.clone() } else { Vec::new() };
            let r = app.raw(m.clone(), &uri, &headers, send_body).await;
            let what = format!("{m} {uri} {headers:?}");
            assert_outcome(&r, StatusCode::UNAUTHORIZED, b, &what);
            assert!(
                r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")),
                "{b:?}: {what}: {:?}",
                r.headers
            );
            assert!(!r.text.contains(&id), "{b:?}: {what}: leaked the resource");
        }
        assert_eq!(count(&app, "Patient").await, 1, "{b:?}");
        assert_eq!(
            app.get(&format!("/fhir/Patient/{id}")).await.status,
            StatusCode::OK,
            "{b:?}: an unauthenticated delete ran"
        );
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_and_write_nothing() {
    for app in TestApp::all().await {
        let b = app.backend;
        let mut deep_array = "[".repeat(100_000).into_bytes();
        deep_array.extend("]".repeat(100_000).into_bytes());
        let mut deep_object = Vec::new();
        for _ in 0..100_000 {
            deep_object.extend_from_slice(br#"{"a":"#);
        }
        deep_object.extend_from_slice(b"1");
        deep_object.extend("}".repeat(100_000).into_bytes());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("malformed JSON", br#"{"resourceType": "Patient", "#.to_vec()),
            ("trailing garbage", br#"{"resourceType": "Patient"} x"#.to_vec()),
            ("empty body", Vec::new()),
            ("array body", br#"[{"resourceType": "Patient"}]"#.to_vec()),
            ("string body", br#""Patient""#.to_vec()),
            ("invalid UTF-8", b"{\"resourceType\": \"Patient\", \"name\": [{\"family\": \"\xff\xfe\"}]}".to_vec()),
            ("duplicate keys", br#"{"resourceType": "Patient", "gender": "male", "gender": "female"}"#.to_vec()),
            (
                "nested duplicate keys",
                br#"{"resourceType": "Patient", "name": [{"family": "a", "family": "b"}]}"#.to_vec(),
            ),
            ("deep array", deep_array),
            ("deep object", deep_object),
        ];
        for (what, body) in cases {
            for (m, uri) in
                [(Method::POST, "/fhir/Patient"), (Method::PUT, "/fhir/Patient/p1"), (Method::POST, "/fhir")]
            {
                let t = Instant::now();
                let r = send(&app, m.clone(), uri, "application/fhir+json", body.clone()).await;
                assert_outcome(&r, StatusCode::BAD_REQUEST, b, &format!("{what} {m} {uri}"));
                assert!(t.elapsed() < Duration::from_secs(2), "{b:?}: {what}: took {:?}", t.elapsed());
                assert!(r.text.len() < 1000, "{b:?}: {what}: the outcome echoes the input: {}", r.text.len());
            }
        }
        assert_eq!(versions(&app).await, 0, "{b:?}");
    }
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    for b in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::with_config(b, |c| c.max_body_bytes = 1000).await else { continue };
        let small = json!({"resourceType": "Patient", "name": [{"family": "Small"}]});
        assert_eq!(app.post("/fhir/Patient", small).await.status, StatusCode::CREATED, "{b:?}");
        let big = json!({"resourceType": "Patient", "name": [{"family": "x".repeat(2000)}]});
        for (m, uri) in [(Method::POST, "/fhir/Patient"), (Method::PUT, "/fhir/Patient/big"), (Method::POST, "/fhir")] {
            let r = send(&app, m.clone(), uri, "application/fhir+json", big.to_string().into_bytes()).await;
            assert_outcome(&r, StatusCode::PAYLOAD_TOO_LARGE, b, &format!("{m} {uri}"));
        }
        // A huge _search form body too.
        let form = format!("name={}", "x".repeat(5000));
        let r =
            send(&app, Method::POST, "/fhir/Patient/_search", "application/x-www-form-urlencoded", form.into_bytes())
                .await;
        assert_outcome(&r, StatusCode::PAYLOAD_TOO_LARGE, b, "_search");
        assert_eq!(count(&app, "Patient").await, 1, "{b:?}");
    }
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    for app in TestApp::all().await {
        let b = app.backend;
        let body = br#"{"resourceType":"Patient"}"#.to_vec();
        for ct in ["text/plain", "application/xml", "application/x-www-form-urlencoded", ""] {
            for (m, uri) in
                [(Method::POST, "/fhir/Patient"), (Method::PUT, "/fhir/Patient/p1"), (Method::POST, "/fhir")]
            {
                let r = send(&app, m.clone(), uri, ct, body.clone()).await;
                assert_outcome(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, b, &format!("{ct} {m} {uri}"));
            }
        }
        // The accepted JSON media types, with parameters.
        for ct in [
            "application/fhir+json; charset=utf-8",
            "application/json",
            "application/json+fhir",
            "APPLICATION/FHIR+JSON",
        ] {
            let r = send(&app, Method::POST, "/fhir/Patient", ct, body.clone()).await;
            assert_eq!(r.status, StatusCode::CREATED, "{b:?}: {ct}: {}", r.text);
        }
        assert_eq!(count(&app, "Patient").await, 4, "{b:?}");
    }
}

#[tokio::test]
async fn invalid_resources_are_400_with_issues() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(json!({"resourceType": "Patient", "name": [{"family": "Base"}]})).await;
        let div = |inner: &str| json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{inner}</div>")});
        let inst = format!("/fhir/Patient/{id}");
        let cases = vec![
            (
                "type mismatch",
                "/fhir/Patient",
                json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
            ),
            ("no resourceType", "/fhir/Patient", json!({"name": [{"family": "x"}]})),
            ("unknown element", "/fhir/Patient", json!({"resourceType": "Patient", "favouriteColour": "blue"})),
            (
                "nested unknown element",
                "/fhir/Patient",
                json!({"resourceType": "Patient", "name": [{"family": "x", "nickname": "y"}]}),
            ),
            ("impossible date", "/fhir/Patient", json!({"resourceType": "Patient", "birthDate": "1970-13-45"})),
            ("bad code", "/fhir/Patient", json!({"resourceType": "Patient", "gender": "purple"})),
            ("wrong JSON kind", "/fhir/Patient", json!({"resourceType": "Patient", "active": "yes"})),
            ("single for array", "/fhir/Patient", json!({"resourceType": "Patient", "name": {"family": "x"}})),
            (
                "script in narrative",
                "/fhir/Patient",
                json!({"resourceType": "Patient", "text": div("<script>alert(1)</script>")}),
            ),
            (
                "event handler in narrative",
                "/fhir/Patient",
                json!({"resourceType": "Patient", "text": div("<img src=\"x\" onerror=\"alert(1)\"/>")}),
            ),
            (
                "javascript URL in narrative",
                "/fhir/Patient",
                json!({"resourceType": "Patient", "text": div("<a href=\"javascript:alert(1)\">x</a>")}),
            ),
            (
                "type mismatch on update",
                inst.as_str(),
                json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"}}),
            ),
            (
                "unknown element on update",
                inst.as_str(),
                json!({"resourceType": "Patient", "id": id, "favouriteColour": "blue"}),
            ),
        ];
        for (what, uri, body) in cases {
            let m = if uri == "/fhir/Patient" { Method::POST } else { Method::PUT };
            let r = app.req(m, uri, Some(body)).await;
            assert_outcome(&r, StatusCode::BAD_REQUEST, b, what);
        }
        // The validation issue names the unknown element and where it is.
        let r = app
            .post("/fhir/Patient", json!({"resourceType": "Patient", "name": [{"family": "x", "nickname": "y"}]}))
            .await;
        let issues = r.json["issue"].as_array().unwrap();
        assert!(
            issues.iter().any(|i| i["diagnostics"].as_str().unwrap_or("").contains("nickname")
                || i["expression"].to_string().contains("nickname")),
            "{b:?}: the unknown element is not listed: {}",
            r.text
        );
        let r = app.post("/fhir/Patient", json!({"resourceType": "Patient", "birthDate": "1970-13-45"})).await;
        assert!(r.text.contains("birthDate"), "{b:?}: {}", r.text);
        assert_eq!(count(&app, "Patient").await, 1, "{b:?}");
        let now = app.get(&format!("/fhir/Patient/{id}")).await;
        assert_eq!(now.header("etag"), Some("W/\"1\""), "{b:?}");

        // An explicit lenient preference accepts unknown elements (documented downgrade).
        let auth = bearer();
        let r = app
            .raw(
                Method::POST,
                "/fhir/Patient",
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/fhir+json"),
                    ("prefer", "handling=lenient"),
                ],
                br#"{"resourceType":"Patient","favouriteColour":"blue"}"#.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{b:?}: {}", r.text);
    }
}

#[tokio::test]
async fn bad_urls_and_methods() {
    for app in TestApp::all().await {
        let b = app.backend;
        let body = json!({"resourceType": "Patient"});
        for bad in ["bad_id", "bad!id", &"x".repeat(65)] {
            let mut with_id = body.clone();
            with_id["id"] = json!(bad);
            let r = app.put(&format!("/fhir/Patient/{bad}"), with_id).await;
            assert_outcome(&r, StatusCode::BAD_REQUEST, b, &format!("PUT id {bad}"));
            let r = app.put(&format!("/fhir/Patient/{bad}"), body.clone()).await;
            assert_outcome(&r, StatusCode::BAD_REQUEST, b, &format!("PUT id {bad} (no body id)"));
        }
        for (m, uri) in [
            (Method::PATCH, "/fhir/Patient"),
            (Method::DELETE, "/fhir/metadata"),
            (Method::PUT, "/fhir/Patient/x/_history/1"),
            (Method::DELETE, "/fhir"),
            (Method::GET, "/fhir/Patient/_search"),
        ] {
            let r = app.req(m.clone(), uri, None).await;
            assert_outcome(&r, StatusCode::METHOD_NOT_ALLOWED, b, &format!("{m} {uri}"));
        }
        for uri in ["/nope", "/fhir/Patient/x/_history/1/more", "/fhir/Patient/x/$nonsense", "/fhirx/Patient"] {
            let r = app.get(uri).await;
            assert_outcome(&r, StatusCode::NOT_FOUND, b, uri);
        }
        assert_eq!(count(&app, "Patient").await, 0, "{b:?}");
    }
}

#[tokio::test]
async fn malformed_search_values_are_400() {
    for app in TestApp::all().await {
        let b = app.backend;
        app.create(json!({"resourceType": "Patient", "birthDate": "1980-01-01"})).await;
        for q in [
            "birthdate=notadate",
            "birthdate=1970-13-45",
            "birthdate=gt",
            "_lastUpdated=yesterday",
            "_cursor=garbage",
            "_cursor=W1tdLDFd!!",
            "_count=abc",
            "_sort=nonsense",
            "_total=maybe",
            "_include=Nope:subject",
            "gender:missing=perhaps",
        ] {
            let r = app.get(&format!("/fhir/Patient?{q}")).await;
            assert_outcome(&r, StatusCode::BAD_REQUEST, b, q);
        }
        for q in ["_cursor=garbage", "_since=notadate", "_count=x"] {
            let r = app.get(&format!("/fhir/_history?{q}")).await;
            assert_outcome(&r, StatusCode::BAD_REQUEST, b, q);
        }
        let r = app.get("/fhir/Patient?birthdate=1980-01-01").await;
        assert_eq!(r.ids().len(), 1, "{b:?}");
    }
}

#[tokio::test]
async fn json_patch_bodies_pass_the_same_guard() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(json!({"resourceType": "Patient", "gender": "male"})).await;
        let url = format!("/fhir/Patient/{id}");
        let mut deep = "[".repeat(100_000).into_bytes();
        deep.extend("]".repeat(100_000).into_bytes());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "duplicate key in a value",
                br#"[{"op": "replace", "path": "/gender", "value": "female", "value": "other"}]"#.to_vec(),
            ),
            ("duplicate op", br#"[{"op": "test", "op": "replace", "path": "/gender", "value": "female"}]"#.to_vec()),
            (
                "nested duplicate",
                br#"[{"op": "add", "path": "/name", "value": [{"family": "a", "family": "b"}]}]"#.to_vec(),
            ),
            ("deep nesting", deep),
            (
                "invalid UTF-8",
                b"[{\"op\": \"add\", \"path\": \"/name\", \"value\": [{\"family\": \"\xff\"}]}]".to_vec(),
            ),
            ("malformed", br#"[{"op": "replace""#.to_vec()),
            ("trailing garbage", br#"[] []"#.to_vec()),
            ("empty", Vec::new()),
        ];
        for (what, body) in cases {
            let t = Instant::now();
            let r = send(&app, Method::PATCH, &url, "application/json-patch+json", body).await;
            assert_outcome(&r, StatusCode::BAD_REQUEST, b, what);
            assert!(t.elapsed() < Duration::from_secs(2), "{b:?}: {what}: took {:?}", t.elapsed());
        }
        let now = app.get(&url).await;
        assert_eq!(now.header("etag"), Some("W/\"1\""), "{b:?}: a refused patch wrote a version");
        assert_eq!(now.json["gender"], "male", "{b:?}");
        // A well-formed patch still applies, numbers keeping their text.
        let ok = br#"[{"op": "add", "path": "/multipleBirthInteger", "value": 2}, {"op": "replace", "path": "/gender", "value": "female"}]"#;
        let r = send(&app, Method::PATCH, &url, "application/json-patch+json", ok.to_vec()).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.json["gender"], "female", "{b:?}");
        assert_eq!(r.json["multipleBirthInteger"], 2, "{b:?}");
    }
}

#[tokio::test]
async fn odd_search_parameters_never_fail_the_server() {
    for app in TestApp::all().await {
        let b = app.backend;
        app.create(json!({"resourceType": "Patient", "name": [{"family": "Odd"}], "birthDate": "1980-01-01"})).await;
        let params = [
            "_id:missing=true",
            "_id:missing=false",
            "_lastUpdated:missing=true",
            "_lastUpdated:missing=false",
            "_id:not=x",
            "_id:exact=x",
            "_id:text=x",
            "_lastUpdated:not=2020",
            "_lastUpdated:exact=2020",
            "name:missing=true",
            "name:text=x",
            "name:below=x",
            "identifier:text=x",
            "identifier:above=x",
            "identifier:of-type=x",
            "identifier:in=http://x",
            "_profile:above=http://x",
            "_tag:not=x",
            "general-practitioner:missing=true",
            "general-practitioner:identifier=x",
            "link:Patient=x",
            "organization:Unicorn=x",
            "_has:Observation:patient:code=x",
            "_text=x",
            "_content=x",
            "_list=x",
            "_query=x",
            "_filter=x",
            "_security=x",
            "_source=http://x",
            "deceased=true",
            "address-postalcode:contains=1",
            "_id=",
            "name=",
            "birthdate=",
            "gender=",
            "_sort=",
            "_sort=-",
            "_count=",
            "_elements=",
            "_include=",
            "_revinclude=",
            "_summary=",
            "_total=",
            "_type=Patient",
            "_since=2020",
            "_cursor=",
            "birthdate=ap1980",
            "birthdate=sa1979",
            "birthdate=eb1981",
            "birthdate=2020-02-30",
            "birthdate=10000",
            "birthdate=0000",
            "birthdate=1980-01-01T25:00:00Z",
            "_lastUpdated=ap2020",
            "_include=Patient:general-practitioner",
            "_include:iterate=Patient:link",
            "_include=Patient:*",
            "_revinclude=Observation:*",
            "_sort=_id",
            "_sort=-_id",
            "_sort=gender",
            "_sort=general-practitioner",
            "_sort=address",
            "_sort=_tag",
            "_sort=phonetic",
            "_elements=name,nonexistent",
            "_summary=text",
            "_summary=data",
            "name=%00",
            "name:exact=%00",
            "_id=%00",
            "name:contains=%E2%80%AE",
        ];
        for q in params {
            let r = app.get(&format!("/fhir/Patient?{q}")).await;
            assert!(
                r.status == StatusCode::OK || r.status == StatusCode::BAD_REQUEST,
                "{b:?}: {q}: {} {}",
                r.status,
                r.text
            );
            if r.status == StatusCode::BAD_REQUEST {
                assert_eq!(r.json["resourceType"], "OperationOutcome", "{b:?}: {q}");
            } else {
                assert_eq!(r.json["type"], "searchset", "{b:?}: {q}");
            }
        }
        for q in ["_id:missing=true", "_lastUpdated:missing=true", "_id:missing=false", "_lastUpdated:missing=false"] {
            let r = app.get(&format!("/fhir/Patient?{q}")).await;
            assert_eq!(r.status, StatusCode::OK, "{b:?}: {q}: {}", r.text);
            let want = if q.ends_with("true") { 0 } else { 1 };
            assert_eq!(r.ids().len(), want, "{b:?}: {q}: every resource has an id and lastUpdated");
        }
    }
}

#[tokio::test]
async fn nul_and_invalid_ids_never_fail_the_server() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(json!({"resourceType": "Patient"})).await;
        for bad in ["%00", "a%00b", "bad_id", "%27%3B--", "%E2%80%AE", &"y".repeat(65)] {
            for (m, uri) in [
                (Method::GET, format!("/fhir/Patient/{bad}")),
                (Method::GET, format!("/fhir/Patient/{bad}/_history/1")),
                (Method::GET, format!("/fhir/Patient/{bad}/_history")),
                (Method::GET, format!("/fhir/Patient/{bad}/$everything")),
            ] {
                let r = app.req(m.clone(), &uri, None).await;
                assert_outcome(&r, StatusCode::NOT_FOUND, b, &format!("{m} {uri}"));
            }
            let r = app.delete(&format!("/fhir/Patient/{bad}")).await;
            assert_outcome(&r, StatusCode::BAD_REQUEST, b, &format!("DELETE {bad}"));
            let auth = bearer();
            let r = app
                .raw(
                    Method::PATCH,
                    &format!("/fhir/Patient/{bad}"),
                    &[("authorization", auth.as_str()), ("content-type", "application/json-patch+json")],
                    b"[]".to_vec(),
                )
                .await;
            assert_outcome(&r, StatusCode::NOT_FOUND, b, &format!("PATCH {bad}"));
        }
        // NUL inside resource content.
        let r = send(
            &app,
            Method::POST,
            "/fhir/Patient",
            "application/fhir+json",
            br#"{"resourceType":"Patient","name":[{"family":"a\u0000b"}]}"#.to_vec(),
        )
        .await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b, "NUL in a string");
        let r = send(
            &app,
            Method::POST,
            "/fhir/Patient",
            "application/fhir+json",
            br#"{"resourceType":"Patient","\u0000":1}"#.to_vec(),
        )
        .await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b, "NUL in a key");
        // NUL in conditional criteria and transaction URLs.
        let r = app
            .raw(
                Method::POST,
                "/fhir/Patient",
                &[
                    ("authorization", bearer().as_str()),
                    ("content-type", "application/fhir+json"),
                    ("if-none-exist", "identifier=a%00b"),
                ],
                br#"{"resourceType":"Patient"}"#.to_vec(),
            )
            .await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b, "If-None-Exist NUL");
        let r = app.put("/fhir/Patient?identifier=a%00b", json!({"resourceType": "Patient"})).await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b, "conditional PUT NUL");
        let r = app.delete("/fhir/Patient?identifier=a%00b").await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b, "conditional DELETE NUL");
        let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Patient/a\u{0}b"}},
            {"request": {"method": "GET", "url": "Patient?name=a\u{0}b"}},
            {"request": {"method": "DELETE", "url": "Patient/a\u{0}b"}},
        ]});
        let r = app.post("/fhir", bundle).await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        let statuses: Vec<&str> =
            r.json["entry"].as_array().unwrap().iter().map(|e| e["response"]["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, vec!["404 Not Found", "400 Bad Request", "400 Bad Request"], "{b:?}: {}", r.text);
        assert_eq!(app.get(&format!("/fhir/Patient/{id}")).await.status, StatusCode::OK, "{b:?}");
    }
}

#[tokio::test]
async fn forged_cursors_are_400_or_harmless() {
    for app in TestApp::all().await {
        let b = app.backend;
        for f in ["Ann", "Bob", "Cid"] {
            app.create(json!({"resourceType": "Patient", "name": [{"family": f}], "birthDate": "1990-01-01"})).await;
        }
        // base64url of [[0,"\u0000"],1] and of a sequence number beyond i64.
        for c in ["W1swLCJcdTAwMDAiXSwxXQ", "W1swLCJ6eiJdLDk5OTk5OTk5OTk5OTk5OTk5OTk5XQ"] {
            for q in ["_sort=family", "_sort=-birthdate", ""] {
                let r = app.get(&format!("/fhir/Patient?{q}&_cursor={c}")).await;
                assert_outcome(&r, StatusCode::BAD_REQUEST, b, &format!("{q} cursor {c}"));
            }
        }
        // Well-formed cursors from another query (wrong key types or counts) never fail the server.
        // [[1,1e308,0,"x"],-5], [[0,"a"],1], [[],1], [["x",1],1]
        for c in ["W1sxLDFlMzA4LDAsIngiXSwtNV0", "W1swLCJhIl0sMV0", "W1tdLDFd", "W1sieCIsMV0sMV0"] {
            for q in ["_sort=family", "_sort=-birthdate", "_sort=family,-birthdate", "_sort=-_lastUpdated", ""] {
                let r = app.get(&format!("/fhir/Patient?{q}&_cursor={c}")).await;
                assert!(
                    r.status == StatusCode::OK || r.status == StatusCode::BAD_REQUEST,
                    "{b:?}: {q} cursor {c}: {} {}",
                    r.status,
                    r.text
                );
            }
        }
    }
}
