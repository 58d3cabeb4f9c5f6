//! The Consent lifecycle over FHIR: validation on write (the element named), signed consent
//! events in the write's own transaction, revocation by PATCH and `$revoke` (idempotent),
//! `_history` keeping every version, `portico consent verify` catching tampering, and "what
//! was permitted at time T" before and after a revocation — SQLite and PostgreSQL.

use crate::common::oauth::FHIR_BASE;
use crate::common::*;
use axum::http::{Method, StatusCode};
use portico::consent::shares::{Recipient, RecipientKind, Share, to_consent};
use portico_store::ConsentEvent;
use serde_json::{Value, json};

pub fn lee_share() -> Share {
    Share {
        recipient: Recipient {
            kind: RecipientKind::Practitioner,
            id: "lee".into(),
            display: Some("Dr. Lee at Riverside Cardiology".into()),
        },
        categories: vec!["labs".into(), "medications".into()],
        purpose: "TREAT".into(),
        start: None,
        end: Some("2099-12-31".into()),
    }
}

/// A valid Consent of `patient` (a share with Dr. Lee), without an id.
pub fn consent_of(patient: &str) -> Value {
    let mut c = to_consent(&lee_share(), "x", patient, "2026-01-05T00:00:00Z");
    c.as_object_mut().unwrap().remove("id");
    c
}

async fn events(app: &TestApp, id: &str) -> Vec<ConsentEvent> {
    app.state.consents.consent_events_of(id).await.expect("consent events")
}

async fn verify(app: &TestApp) -> Vec<String> {
    let key = app.state.audit.key().public();
    portico::cli::consent::verify(app.state.consents.as_ref(), &[key]).await.expect("verify").1
}

/// `portico consent verify` run as the binary over the app's data dir and database: its exit
/// success and what it printed.
fn verify_command(app: &TestApp) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portico"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTICO_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["consent", "verify"])
        .env("PORTICO_DATA_DIR", &app.data_dir)
        .env("PORTICO_DATABASE_URL", &app.database_url)
        .env("RUST_LOG", "error");
    let out = cmd.output().expect("run portico consent verify");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

async fn patch(app: &TestApp, uri: &str, ops: Value) -> Resp {
    app.raw(
        Method::PATCH,
        uri,
        &[("authorization", &format!("Bearer {TOKEN}")), ("content-type", "application/json-patch+json")],
        ops.to_string().into_bytes(),
    )
    .await
}

fn expression(r: &Resp) -> Vec<String> {
    r.json["issue"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .flat_map(|i| i["expression"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn invalid_consents_are_refused_naming_the_element() {
    for app in TestApp::all().await {
        let good = consent_of("p1");
        let mut cases: Vec<(Value, &str)> = Vec::new();
        let mut c = good.clone();
        c["scope"] =
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]});
        cases.push((c, "Consent.scope"));
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove("patient");
        cases.push((c, "Consent.patient"));
        let mut c = good.clone();
        c["provision"]["provision"][0]["actor"][0]["reference"]["reference"] = json!("Organization/o1");
        cases.push((c, "Consent.provision.provision[0].actor[0]"));
        let mut c = good.clone();
        c["provision"]["period"] = json!({"start": "2026-05-01", "end": "2026-04-01"});
        cases.push((c, "Consent.provision.period"));
        let mut c = good.clone();
        c["provision"]["provision"][0]["class"][0]["code"] = json!("gossip");
        cases.push((c, "Consent.provision.provision[0].class"));
        for (body, element) in cases {
            let r = app.post("/fhir/Consent", body.clone()).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?} {element}: {}", app.backend, r.text);
            assert_eq!(r.json["resourceType"], "OperationOutcome");
            assert!(
                expression(&r).iter().any(|e| e.starts_with(element)),
                "{:?}: expected {element} in {}",
                app.backend,
                r.text
            );
            let r = app.put("/fhir/Consent/c-bad", body.clone()).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "PUT {element}: {}", r.text);
            // In a transaction the entry is refused and nothing is stored.
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": {"resourceType": "Patient", "id": "tx-p"}, "request": {"method": "PUT", "url": "Patient/tx-p"}},
                {"resource": body, "request": {"method": "POST", "url": "Consent"}},
            ]});
            let r = app.post("/fhir", bundle).await;
            assert!(r.status.is_client_error(), "transaction {element}: {} {}", r.status, r.text);
            assert!(r.text.contains(element), "transaction names {element}: {}", r.text);
            assert_eq!(app.get("/fhir/Patient/tx-p").await.status, StatusCode::NOT_FOUND);
        }
        assert_eq!(app.get("/fhir/Consent?_count=10").await.ids(), Vec::<String>::new(), "nothing was stored");
        assert!(verify(&app).await.is_empty());
        // A valid one is accepted.
        let id = app.create(good).await;
        assert_eq!(events(&app, &id).await.len(), 1);
    }
}

#[tokio::test]
async fn every_consent_change_has_a_signed_event_and_revocation_is_idempotent() {
    for app in TestApp::all().await {
        let key = app.state.audit.key().public();
        let r = app.post("/fhir/Consent", consent_of("p1")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.json["id"].as_str().unwrap().to_string();
        let uri = format!("/fhir/Consent/{id}");

        let ev = events(&app, &id).await;
        assert_eq!(ev.len(), 1, "{:?}", app.backend);
        let e = &ev[0];
        assert_eq!((e.kind.as_str(), e.version, e.prev_version), ("create", 1, 0));
        assert_eq!((e.patient.as_str(), e.status.as_str()), ("p1", "active"));
        assert_eq!((e.actor.as_str(), e.channel.as_str()), ("operator/operator", "operator"));
        assert!(e.signature_valid(&key), "the event's signature verifies");
        let stored = app.get(&uri).await;
        assert_eq!(e.resource_sha256, portico_store::consent::body_sha256(&stored.text));

        // Revoke by JSON Patch.
        let r = patch(&app, &uri, json!([{"op": "replace", "path": "/status", "value": "inactive"}])).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["status"], "inactive");
        let ev = events(&app, &id).await;
        assert_eq!(ev.len(), 2);
        assert_eq!((ev[1].kind.as_str(), ev[1].version, ev[1].prev_version), ("revoke", 2, 1));

        // $revoke of an inactive consent: 200, nothing written.
        let r = app.req(Method::POST, &format!("{uri}/$revoke"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["meta"]["versionId"], "2");
        assert_eq!(events(&app, &id).await.len(), 2, "revoking again is idempotent");

        // Active again (an update), then $revoke with a reason.
        let mut again = app.get(&uri).await.json;
        again["status"] = json!("active");
        assert_eq!(app.put(&uri, again).await.status, StatusCode::OK);
        let params = json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "moved to another clinic"}]});
        let r = app.post(&format!("{uri}/$revoke"), params).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!((r.json["status"].as_str(), r.json["meta"]["versionId"].as_str()), (Some("inactive"), Some("4")));
        let kinds: Vec<String> = events(&app, &id).await.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(kinds, ["create", "revoke", "update", "revoke"], "{:?}", app.backend);
        let meta = app.get("/fhir/metadata").await;
        let consent =
            meta.json["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Consent").cloned();
        assert_eq!(consent.unwrap()["operation"][0]["name"], "revoke", "the CapabilityStatement declares $revoke");
        assert_eq!(app.req(Method::POST, "/fhir/Patient/p1/$revoke", None).await.status, StatusCode::NOT_FOUND);
        let r = app
            .post(&format!("{uri}/$revoke"), json!({"resourceType": "Parameters", "parameter": [{"name": "why"}]}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

        // _history holds every version; every version has its event; delete too.
        let h = app.get(&format!("{uri}/_history")).await;
        assert_eq!(h.entries().len(), 4, "{}", h.text);
        assert_eq!(app.delete(&uri).await.status, StatusCode::NO_CONTENT);
        let ev = events(&app, &id).await;
        assert_eq!((ev[4].kind.as_str(), ev[4].status.as_str(), ev[4].patient.as_str()), ("delete", "", "p1"));
        assert!(ev.iter().all(|e| e.signature_valid(&key)));
        assert_eq!(verify(&app).await, Vec::<String>::new(), "{:?}", app.backend);

        // One audit record per change, none twice; the $revoke record carries its reason.
        let records = app.audit_records().await;
        let writes: Vec<_> = records
            .iter()
            .filter(|a| a.interaction.is_write() && a.entities.iter().any(|e| e.reference.starts_with(&uri[6..])))
            .collect();
        // Five changes, plus the $revoke that found the consent already inactive (audited,
        // though it wrote nothing).
        assert_eq!(writes.len(), 6, "{:?}: {writes:#?}", app.backend);
        for v in 1..=5 {
            let n = writes
                .iter()
                .filter(|a| a.entities.iter().any(|e| e.reference.ends_with(&format!("/_history/{v}"))))
                .count();
            assert_eq!(n, if v == 2 { 2 } else { 1 }, "version {v}: {writes:#?}");
        }
        assert_eq!(writes[2].query.as_deref(), Some("$revoke"));
        assert!(writes.iter().any(|a| a.query.as_deref() == Some("$revoke reason=moved to another clinic")));
    }
}

#[tokio::test]
async fn tampering_with_the_event_log_is_detected_by_verify() {
    for app in TestApp::all().await {
        let a = app.create(consent_of("p1")).await;
        let b = app.create(consent_of("p2")).await;
        let c = app.create(consent_of("p3")).await;
        assert_eq!(app.req(Method::POST, &format!("/fhir/Consent/{a}/$revoke"), None).await.status, StatusCode::OK);
        assert!(verify(&app).await.is_empty());
        let (ok, text) = verify_command(&app);
        assert!(ok, "{text}");
        assert!(text.contains("consent events: 4 verified"), "{text}");

        let run = |sql: String| {
            let url = app.database_url.clone();
            let backend = app.backend;
            async move {
                use sqlx::Connection;
                match backend {
                    Backend::Sqlite => {
                        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
                    }
                    Backend::Postgres => {
                        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
                    }
                }
            }
        };
        // An edited event: who made the revocation is rewritten.
        run(format!("UPDATE consent_events SET actor = 'patient/p1' WHERE consent_id = '{a}' AND version = 2")).await;
        // A stored version edited behind the event's back.
        run(format!(
            "UPDATE resource_versions SET body = replace(body, 'Riverside', 'Lakeside') WHERE res_type = 'Consent' AND id = '{b}'"
        ))
        .await;
        // An event removed.
        run(format!("DELETE FROM consent_events WHERE consent_id = '{c}'")).await;
        let findings = verify(&app).await;
        assert_eq!(findings.len(), 3, "{:?}: {findings:#?}", app.backend);
        assert!(findings.iter().any(|f| f.contains(&format!("Consent/{a}/_history/2")) && f.contains("signature")));
        assert!(
            findings.iter().any(|f| f.contains(&format!("Consent/{b}/_history/1")) && f.contains("does not match"))
        );
        assert!(findings.iter().any(|f| f.contains(&format!("Consent/{c}/_history/1 has no consent event"))));
        let (ok, text) = verify_command(&app);
        assert!(!ok, "the command fails on a finding: {text}");
        for f in &findings {
            assert!(text.contains(f.as_str()), "{text}");
        }
    }
}

#[tokio::test]
async fn a_consent_write_for_another_patient_is_refused() {
    for app in TestApp::all().await {
        // A patient token (operator-issued) for p1 may record p1's consents only.
        let (resp, _) = app
            .state
            .identity
            .issue_operator_token(None, Some("p1".into()), portico::identity::CLI_CLIENT, "patient/*.*", FHIR_BASE)
            .await
            .expect("token");
        let token = resp.access_token;
        let app = &app;
        let send = |body: Value| {
            let t = token.clone();
            async move {
                app.raw(
                    Method::POST,
                    "/fhir/Consent",
                    &[("authorization", &format!("Bearer {t}")), ("content-type", "application/fhir+json")],
                    body.to_string().into_bytes(),
                )
                .await
            }
        };
        let r = send(consent_of("p2")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}: {}", app.backend, r.text);
        let r = send(consent_of("p1")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}: {}", app.backend, r.text);
        let ev = events(app, r.json["id"].as_str().unwrap()).await;
        assert_eq!((ev[0].actor.as_str(), ev[0].channel.as_str()), ("patient/p1", "app"));
    }
}

#[tokio::test]
async fn what_was_permitted_at_a_time_answers_differently_before_and_after_a_revoke() {
    for app in TestApp::all().await {
        let before = portico::identity::now_ms() - 60_000;
        let id = app.create(consent_of("p1")).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let while_active = portico::identity::now_ms();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(app.req(Method::POST, &format!("/fhir/Consent/{id}/$revoke"), None).await.status, StatusCode::OK);
        let after = portico::identity::now_ms() + 10;
        let at = |ms: i64| portico_fhir::datetime::format_instant(ms);
        let app = &app;
        let ask = |ms: i64| {
            let uri = format!(
                "/api/portal/consents/permitted?patient=p1&recipient=Practitioner/lee&at={}",
                at(ms).replace(':', "%3A")
            );
            async move { app.get(&uri).await }
        };
        let decision = |r: &Resp, category: &str| -> (String, String) {
            let c =
                r.json["categories"].as_array().unwrap().iter().find(|c| c["category"] == category).unwrap().clone();
            (c["decision"].as_str().unwrap().to_string(), c["reason"].as_str().unwrap().to_string())
        };

        let r = ask(while_active).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}: {}", app.backend, r.text);
        assert_eq!(r.json["consents"][0]["status"], "active", "{}", r.text);
        let (d, reason) = decision(&r, "labs");
        assert_eq!(d, "permit", "{}", r.text);
        assert!(reason.contains("because you shared them"), "{reason}");
        assert_eq!(decision(&r, "medications").0, "permit");
        assert_eq!(decision(&r, "conditions").0, "deny", "only what was shared");

        let r = ask(after).await;
        assert_eq!(r.json["consents"][0]["status"], "inactive", "{}", r.text);
        assert_eq!(decision(&r, "labs").0, "deny", "{:?}: {}", app.backend, r.text);
        let r = ask(before).await;
        assert_eq!(r.json["consents"], json!([]));
        assert_eq!(decision(&r, "labs").0, "deny");

        // The patient asks about themself; another patient's name is not found.
        assert_eq!(
            app.get("/api/portal/consents/permitted?recipient=Practitioner/lee").await.status,
            StatusCode::BAD_REQUEST
        );
        let r = app.get("/api/portal/consents/permitted?patient=p1&recipient=Organization/o").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    }
}
