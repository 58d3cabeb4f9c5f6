//! Portal shares (step-up, the Consent they become, explanations, revocation, who may manage
//! them, no existence leak) and break-the-glass (reason required, time-boxed, audited) —
//! through a signed-in browser, on SQLite and PostgreSQL.

use crate::common::oauth::*;
use crate::common::*;
use crate::consent_lifecycle::lee_share;
use axum::http::{Method, StatusCode};
use serde_json::json;

fn share_body() -> serde_json::Value {
    serde_json::to_value(lee_share()).unwrap()
}

async fn signed_in(app: &TestApp, username: &str, role: &str, patients: &[&str]) -> Browser {
    app.user(username, role, patients).await;
    let mut b = Browser::with_agent(username);
    let r = app.portal_sign_in(&mut b, username, PASSWORD).await;
    assert!(r.status.is_success() || r.status.is_redirection(), "sign in {username}: {} {}", r.status, r.text);
    b
}

async fn step_up(app: &TestApp, b: &mut Browser) {
    let r = b.portal(app, Method::POST, "/api/portal/step-up", Some(json!({"code": totp_now()}))).await;
    assert_eq!(r.status, StatusCode::OK, "step-up: {}", r.text);
}

#[tokio::test]
async fn creating_a_share_needs_a_fresh_step_up_and_makes_a_signed_consent() {
    for app in TestApp::all().await {
        let mut b = signed_in(&app, "pat", "patient", &["p1"]).await;
        let r = b.portal(&app, Method::POST, "/api/portal/shares", Some(share_body())).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}: {}", app.backend, r.text);
        let challenge = r.header("www-authenticate").unwrap_or("");
        assert!(challenge.contains("error=\"insufficient_user_authentication\""), "{challenge}");
        assert_eq!(app.get("/fhir/Consent").await.ids(), Vec::<String>::new(), "nothing was shared");

        step_up(&app, &mut b).await;
        let r = b.portal(&app, Method::POST, "/api/portal/shares", Some(share_body())).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}: {}", app.backend, r.text);
        let id = r.json["id"].as_str().unwrap().to_string();
        assert_eq!(r.json["share"], share_body(), "the share reads back as it was given");
        assert_eq!(
            r.json["explanation"],
            "Dr. Lee at Riverside Cardiology can see your lab results and medications for your treatment until 31 \
             December 2099. You can stop this at any time."
        );
        // A FHIR Consent, with its signed event (portal channel) and audit record.
        let c = app.get(&format!("/fhir/Consent/{id}")).await;
        assert_eq!(c.status, StatusCode::OK);
        assert_eq!(
            (c.json["status"].as_str(), c.json["patient"]["reference"].as_str()),
            (Some("active"), Some("Patient/p1"))
        );
        let ev = app.state.consents.consent_events_of(&id).await.unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].kind.as_str(), ev[0].actor.as_str(), ev[0].channel.as_str()),
            ("create", "patient/p1", "portal")
        );
        assert!(ev[0].signature_valid(&app.state.audit.key().public()));
        let created: Vec<_> = app
            .audit_of(&r)
            .await
            .into_iter()
            .filter(|a| a.interaction == portico_audit::Interaction::Create)
            .collect();
        assert_eq!(created.len(), 1, "{created:#?}");
        assert_eq!(created[0].entities[0].reference, format!("Consent/{id}/_history/1"));

        // Listed with its explanation.
        let list = b.get(&app, "/api/portal/shares").await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.text);
        assert_eq!(list.json["shares"].as_array().unwrap().len(), 1);
        assert_eq!(list.json["shares"][0]["id"], id.as_str());
        assert!(
            list.json["shares"][0]["explanation"]
                .as_str()
                .unwrap()
                .starts_with("Dr. Lee at Riverside Cardiology can see")
        );

        // What the patient's sharing permits Dr. Lee now, asked by the patient.
        let p = b.get(&app, "/api/portal/consents/permitted?recipient=Practitioner/lee").await;
        assert_eq!(p.status, StatusCode::OK, "{}", p.text);
        let labs = p.json["categories"].as_array().unwrap().iter().find(|c| c["category"] == "labs").unwrap().clone();
        assert_eq!(labs["decision"], "permit", "{}", p.text);
        assert_eq!(labs["consents"], json!([id.as_str()]));

        // Stopped; stopping again changes nothing.
        let r = b.portal(&app, Method::DELETE, &format!("/api/portal/shares/{id}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["status"], "inactive");
        assert_eq!(r.json["explanation"], "This sharing was stopped; it no longer lets anyone see your records.");
        let r = b.portal(&app, Method::DELETE, &format!("/api/portal/shares/{id}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let kinds: Vec<String> =
            app.state.consents.consent_events_of(&id).await.unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["create", "revoke"]);

        // Refused shapes name the field.
        let mut org = share_body();
        org["recipient"]["type"] = json!("Organization");
        let r = b.portal(&app, Method::POST, "/api/portal/shares", Some(org)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert!(r.text.contains("recipient.type"), "{}", r.text);
        let r = b.portal(&app, Method::POST, "/api/portal/shares", Some(json!({"recipient": 1}))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    }
}

#[tokio::test]
async fn only_the_patient_manages_shares_and_other_patients_shares_are_not_found() {
    for app in TestApp::all().await {
        let mut pat = signed_in(&app, "pat", "patient", &["p1"]).await;
        step_up(&app, &mut pat).await;
        let r = pat.portal(&app, Method::POST, "/api/portal/shares", Some(share_body())).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.json["id"].as_str().unwrap().to_string();

        // A caregiver of the same patient, stepped up, still cannot share or stop sharing.
        let mut carer = signed_in(&app, "carer", "caregiver", &["p1"]).await;
        step_up(&app, &mut carer).await;
        let r = carer.portal(&app, Method::POST, "/api/portal/shares", Some(share_body())).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}: {}", app.backend, r.text);
        let r = carer.portal(&app, Method::DELETE, &format!("/api/portal/shares/{id}"), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

        // Another patient: the share id answers exactly like one that does not exist.
        let mut other = signed_in(&app, "other", "patient", &["p2"]).await;
        let theirs = other.portal(&app, Method::DELETE, &format!("/api/portal/shares/{id}"), None).await;
        let absent = other.portal(&app, Method::DELETE, "/api/portal/shares/no-such-share", None).await;
        assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{:?}: {}", app.backend, theirs.text);
        assert_eq!(absent.status, StatusCode::NOT_FOUND);
        assert_eq!(theirs.json, absent.json);
        let list = other.get(&app, "/api/portal/shares").await;
        assert_eq!(list.json["shares"], json!([]), "{}", list.text);
        assert_eq!(app.get(&format!("/fhir/Consent/{id}")).await.json["status"], "active", "nothing was revoked");
        let r = other.get(&app, "/api/portal/shares?patient=p1").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = other.get(&app, "/api/portal/consents/permitted?patient=p1&recipient=Practitioner/lee").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

        // The operator manages any patient's shares by naming the patient.
        let r = app.get("/api/portal/shares?patient=p1").await;
        assert_eq!(r.json["shares"][0]["id"], id.as_str(), "{}", r.text);
        let r = app.get("/api/portal/shares").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn break_the_glass_needs_a_reason_is_time_boxed_and_audited() {
    for app in TestApp::all().await {
        app.put("/fhir/Patient/p1", json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Okafor"}]}))
            .await;
        let mut doc = signed_in(&app, "drlee", "clinician", &[]).await;
        assert_eq!(doc.get(&app, "/fhir/Patient/p1").await.status, StatusCode::NOT_FOUND, "no care relationship");

        for (reason, why) in [(json!(null), "missing"), (json!("   "), "blank"), (json!("x".repeat(501)), "too long")] {
            let r = doc
                .portal(&app, Method::POST, "/api/portal/break-glass", Some(json!({"patient": "p1", "reason": reason})))
                .await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {}", r.text);
        }
        assert_eq!(
            doc.get(&app, "/fhir/Patient/p1").await.status,
            StatusCode::NOT_FOUND,
            "refused starts grant nothing"
        );
        // A patient cannot break the glass.
        let mut pat = signed_in(&app, "pat", "patient", &["p1"]).await;
        let r = pat
            .portal(&app, Method::POST, "/api/portal/break-glass", Some(json!({"patient": "p1", "reason": "curious"})))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

        let reason = "Unconscious in the ED, \"allergies\" unknown\nline two";
        let r = doc
            .portal(&app, Method::POST, "/api/portal/break-glass", Some(json!({"patient": "p1", "reason": reason})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}: {}", app.backend, r.text);
        let start = app.audit_of(&r).await;
        let start =
            start.iter().find(|a| a.interaction == portico_audit::Interaction::BreakGlass).expect("start record");
        assert_eq!(start.purpose.as_deref(), Some("ETREAT"));
        assert_eq!(
            start.query.as_deref(),
            Some("break-glass reason=Unconscious in the ED, \"allergies\" unknown line two")
        );
        assert_eq!(start.patients, ["p1"]);

        let read = doc.get(&app, "/fhir/Patient/p1").await;
        assert_eq!(read.status, StatusCode::OK, "{:?}: emergency access reads: {}", app.backend, read.text);
        let rec = app.audit_of(&read).await;
        let rec = rec.iter().find(|a| a.interaction == portico_audit::Interaction::Read).expect("read record");
        assert_eq!(rec.purpose.as_deref(), Some("ETREAT"), "{rec:#?}");
        assert!(rec.rules.iter().any(|r| r == "break-the-glass"), "{rec:#?}");
        // Reads only.
        let w = doc
            .portal(&app, Method::PUT, "/fhir/Patient/p1", Some(json!({"resourceType": "Patient", "id": "p1"})))
            .await;
        assert!(w.status.is_client_error(), "{}", w.text);

        // Time-boxed: a session that began longer ago than breakGlass.maxMinutes grants nothing.
        let user = app.state.identity.store.user_by_username("drlee").await.unwrap().unwrap();
        let mut later = signed_in(&app, "drkim", "clinician", &[]).await;
        let kim = app.state.identity.store.user_by_username("drkim").await.unwrap().unwrap();
        let long_ago = portico::identity::now_ms() - 61 * 60_000;
        let row = portico_store::consent::BreakGlassRow {
            id: "expired".into(),
            user_id: kim.id.clone(),
            patient: "p1".into(),
            reason: "an hour ago".into(),
            started_ms: long_ago,
            expires_ms: long_ago + 60 * 60_000,
        };
        app.state.consents.break_glass_start(&row).await.unwrap();
        assert_eq!(later.get(&app, "/fhir/Patient/p1").await.status, StatusCode::NOT_FOUND, "expired");
        // …and even a row that claimed to last longer is cut at the operator's window.
        let row = portico_store::consent::BreakGlassRow {
            id: "overlong".into(),
            expires_ms: long_ago + 24 * 3_600_000,
            ..row
        };
        app.state.consents.break_glass_start(&row).await.unwrap();
        let r = later.get(&app, "/fhir/Patient/p1").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        let rec = app.audit_of(&r).await;
        assert!(rec.iter().any(|a| a.rules.iter().any(|r| r == "break-the-glass-expired")), "{rec:#?}");
        assert!(app.state.consents.break_glass_active(&user.id, portico::identity::now_ms()).await.unwrap().is_some());
    }
}
