//! Opaque access tokens at the FHIR API, and introspection (RFC 7662).
//! Checklist: "JWTs … flipped bytes → 401 invalid_token, no hint which check failed";
//! "Token-type confusion (id/refresh token as bearer) → 401".

use crate::common::oauth::*;
use crate::common::*;
use crate::oauth::{LAUNCH_SCOPES, access, alice_and_diary, refresh_of, works};
use axum::http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn altered_random_and_other_kinds_of_token_as_bearer_get_one_identical_401() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let t = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        let good = access(&t);
        let id_token = t["id_token"].as_str().expect("id_token").to_string();
        let refresh = refresh_of(&t);
        let cases = [
            ("a flipped character", flipped(&good)),
            ("a truncated token", good[..good.len() - 1].to_string()),
            ("a token with a character added", format!("{good}A")),
            ("a random token", portico_identity::secret::random_token()),
            ("an id_token", id_token),
            ("a refresh token", refresh),
            ("an empty token", String::new()),
        ];
        let mut bodies = Vec::new();
        for (what, token) in &cases {
            let r = app.get_as(token, "/fhir/Patient/pa").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?} {what}: {}", app.backend, r.text);
            let challenge = r.header("www-authenticate").unwrap_or("");
            assert!(
                challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""),
                "{what}: {challenge}"
            );
            bodies.push((what, r.text));
        }
        for (what, body) in &bodies[1..] {
            assert_eq!(body, &bodies[0].1, "{what} is answered differently from {}", bodies[0].0);
        }
        // Each refusal was about the token, not the request: the real one still reads.
        assert!(works(&app, &good).await);
    }
}

#[tokio::test]
async fn introspection_reports_a_live_token_to_the_operator_and_its_own_client_only() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        app.public_client("other-app", "patient/*.rs launch/patient").await;
        let t = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        let token = access(&t);

        let op = app.introspect(None, &token).await;
        assert_eq!(op.status, StatusCode::OK, "{}", op.text);
        assert_eq!(op.json["active"], true, "{}", op.text);
        assert_eq!(op.json["client_id"], "diary");
        assert_eq!(op.json["patient"], "pa");
        assert_eq!(op.json["scope"], t["scope"]);
        assert_eq!(op.header("cache-control"), Some("no-store"));

        let own = app.introspect(Some("diary"), &token).await;
        assert_eq!(own.status, StatusCode::OK, "{}", own.text);
        assert_eq!(own.json["active"], true, "{}", own.text);

        let foreign = app.introspect(Some("other-app"), &token).await;
        assert_eq!(foreign.status, StatusCode::OK, "{}", foreign.text);
        assert_eq!(foreign.json, json!({"active": false}), "another client learns nothing");

        let unknown = app.introspect(None, &portico_identity::secret::random_token()).await;
        assert_eq!(unknown.json, json!({"active": false}));
    }
}

#[tokio::test]
async fn introspection_reports_a_revoked_token_inactive() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let t = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        let token = access(&t);
        assert_eq!(app.introspect(None, &token).await.json["active"], true);
        let r = app.revoke("diary", &refresh_of(&t)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(app.introspect(None, &token).await.json, json!({"active": false}));
        assert_eq!(app.introspect(Some("diary"), &token).await.json, json!({"active": false}));
    }
}

#[tokio::test]
async fn an_expired_access_token_gets_the_same_401() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::with_config(backend, |c| c.auth.access_token_secs = 1).await else { continue };
        alice_and_diary(&app).await;
        let t = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        assert_eq!(t["expires_in"], 1);
        let token = access(&t);
        let unknown = app.get_as(&portico_identity::secret::random_token(), "/fhir/Patient/pa").await;
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        let r = app.get_as(&token, "/fhir/Patient/pa").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{backend:?}: {}", r.text);
        assert!(r.header("www-authenticate").unwrap_or("").contains("error=\"invalid_token\""));
        assert_eq!(r.text, unknown.text, "expiry is not told apart from an unknown token");
        // The refresh token outlives it and brings a working one.
        let fresh = app.refresh("diary", &refresh_of(&t), None).await;
        assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text);
        assert!(works(&app, &access(&fresh.json)).await);
    }
}
