//! The CapabilityStatement: public, R4, and true — every search parameter it lists for a
//! type is one the server accepts under strict handling.

use super::common::*;
use axum::http::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;

async fn metadata(app: &TestApp) -> Resp {
    // No token: the CapabilityStatement is public.
    let r = app.raw(Method::GET, "/fhir/metadata", &[], Vec::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}: {}", app.backend, r.text);
    r
}

fn resource<'a>(cs: &'a Value, rt: &str) -> &'a Value {
    cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == rt)
        .unwrap_or_else(|| panic!("{rt} not listed"))
}

#[tokio::test]
async fn capability_statement_is_public_and_describes_the_server() {
    for app in TestApp::all().await {
        let b = app.backend;
        let r = metadata(&app).await;
        assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/fhir+json")), "{b:?}");
        let cs = &r.json;
        assert_eq!(cs["resourceType"], "CapabilityStatement", "{b:?}");
        assert_eq!(cs["fhirVersion"], "4.0.1", "{b:?}");
        assert_eq!(cs["kind"], "instance", "{b:?}");
        assert_eq!(cs["status"], "active", "{b:?}");
        assert!(cs["format"].as_array().unwrap().iter().any(|f| f == "application/fhir+json"), "{b:?}");
        assert_eq!(cs["implementation"]["url"], "http://localhost/fhir", "{b:?}");
        let rest = &cs["rest"][0];
        assert_eq!(rest["mode"], "server", "{b:?}");
        assert!(rest["documentation"].as_str().unwrap().contains("1000"), "{b:?}: the _count cap is not documented");

        let patient = resource(cs, "Patient");
        let names: BTreeSet<&str> =
            patient["searchParam"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
        for n in ["name", "birthdate", "family", "given", "identifier", "gender", "_id", "_lastUpdated", "_count"] {
            assert!(names.contains(n), "{b:?}: Patient searchParam {n} missing: {names:?}");
        }
        let count = patient["searchParam"].as_array().unwrap().iter().find(|p| p["name"] == "_count").unwrap();
        assert!(count["documentation"].as_str().unwrap().contains("capped"), "{b:?}: {count}");
        let ops: Vec<&str> =
            patient["operation"].as_array().unwrap().iter().filter_map(|o| o["name"].as_str()).collect();
        assert_eq!(ops, vec!["everything"], "{b:?}");

        let resources = rest["resource"].as_array().unwrap();
        assert!(resources.len() >= 140, "{b:?}: {} types", resources.len());
        for res in resources {
            let codes: BTreeSet<&str> =
                res["interaction"].as_array().unwrap().iter().filter_map(|i| i["code"].as_str()).collect();
            if res["type"] == "AuditEvent" {
                // The audit trail is read-only.
                assert_eq!(codes, ["read", "search-type", "vread"].into_iter().collect(), "{b:?}");
                continue;
            }
            for c in ["read", "vread", "search-type", "create", "update", "delete", "history-instance"] {
                assert!(codes.contains(c), "{b:?}: {} lacks {c}", res["type"]);
            }
        }
        let system: BTreeSet<&str> =
            rest["interaction"].as_array().unwrap().iter().filter_map(|i| i["code"].as_str()).collect();
        assert_eq!(system, ["batch", "history-system", "transaction"].into_iter().collect(), "{b:?}");

        // With a token it is the same document.
        let with_token = app.get("/fhir/metadata").await;
        assert_eq!(with_token.json, r.json, "{b:?}");
    }
}

/// A plausible value for a search parameter of a type.
fn sample(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "token" => "x",
        "string" => "x",
        "date" => "2020",
        "number" => "1",
        "quantity" => "1",
        "uri" => "http://example.org/x",
        "reference" => "x",
        _ => return None,
    })
}

#[tokio::test]
async fn every_listed_search_parameter_is_accepted() {
    for app in TestApp::all().await {
        let b = app.backend;
        let r = metadata(&app).await;
        let auth = format!("Bearer {TOKEN}");
        let mut checked = 0;
        for res in r.json["rest"][0]["resource"].as_array().unwrap() {
            let rt = res["type"].as_str().unwrap();
            for p in res["searchParam"].as_array().unwrap() {
                let (name, kind) = (p["name"].as_str().unwrap(), p["type"].as_str().unwrap());
                let Some(v) = sample(kind) else { continue };
                if name == "_count" {
                    continue;
                }
                let uri = format!("/fhir/{rt}?{name}={v}");
                let r = app
                    .raw(
                        Method::GET,
                        &uri,
                        &[("authorization", auth.as_str()), ("prefer", "handling=strict")],
                        Vec::new(),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{b:?}: {uri}: {}", r.text);
                checked += 1;
            }
        }
        assert!(checked > 1000, "{b:?}: only {checked} parameters checked");
    }
}
