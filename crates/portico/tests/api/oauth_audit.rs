//! Identity events in the audit trail: each sign-in (good or bad) and each token issue,
//! refresh and revocation leaves exactly one record, durable before the response.

use crate::common::oauth::*;
use crate::common::*;
use crate::oauth::{LAUNCH_SCOPES, access, alice_and_diary, refresh_of};
use axum::http::{Method, StatusCode};
use portico_audit::{AuditRecord, Interaction, Outcome};

/// The one record a request left.
async fn the_record(app: &TestApp, r: &Resp, what: &str) -> AuditRecord {
    let mut records = app.audit_of(r).await;
    assert_eq!(records.len(), 1, "{:?} {what}: exactly one record, got {records:#?}", app.backend);
    records.remove(0)
}

#[tokio::test]
async fn a_successful_sign_in_leaves_one_success_record() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let alice = app.state.identity.store.user_by_username("alice").await.unwrap().unwrap();
        let r = app.portal_sign_in(&mut Browser::default(), "alice", PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let a = the_record(&app, &r, "sign-in").await;
        assert_eq!(a.interaction, Interaction::Login);
        assert_eq!(a.outcome, Outcome::Success);
        assert_eq!(a.actor.id, alice.id);
        assert_eq!(a.client.as_deref(), Some("portal"));
        assert_eq!(a.patients, vec!["pa".to_string()]);
    }
}

#[tokio::test]
async fn a_failed_sign_in_leaves_one_denied_record_without_the_password() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let alice = app.state.identity.store.user_by_username("alice").await.unwrap().unwrap();
        for (who, actor) in [("alice", Some(alice.id.as_str())), ("nobody", None)] {
            let r = app.portal_sign_in(&mut Browser::default(), who, "hunter2-wrong-pass").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
            let a = the_record(&app, &r, who).await;
            assert_eq!(a.interaction, Interaction::Login);
            assert_eq!(a.outcome, Outcome::Denied, "{a:?}");
            assert_eq!(a.status, 401);
            assert_eq!(a.rules, vec!["login-failed".to_string()]);
            if let Some(id) = actor {
                assert_eq!(a.actor.id, id);
            }
            assert!(!format!("{a:?}").contains("hunter2"), "the password is never recorded: {a:?}");
        }
    }
}

#[tokio::test]
async fn token_issue_refresh_and_revocation_each_leave_one_record() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let alice = app.state.identity.store.user_by_username("alice").await.unwrap().unwrap();
        let (verifier, challenge) = pkce();
        let mut b = Browser::default();
        let code = app.authorize(&mut b, "diary", LAUNCH_SCOPES, "alice", &challenge).await;

        let issued = app.exchange("diary", &code, &verifier).await;
        assert_eq!(issued.status, StatusCode::OK, "{}", issued.text);
        let a = the_record(&app, &issued, "token issue").await;
        assert_eq!((a.interaction, a.outcome), (Interaction::TokenIssue, Outcome::Success));
        assert_eq!(a.actor.id, alice.id);
        assert_eq!(a.client.as_deref(), Some("diary"));
        assert_eq!(a.patients, vec!["pa".to_string()]);
        let text = format!("{a:?}");
        assert!(!text.contains(&access(&issued.json)) && !text.contains(&code), "no secrets in the record");

        let refreshed = app.refresh("diary", &refresh_of(&issued.json), None).await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
        let a = the_record(&app, &refreshed, "refresh").await;
        assert_eq!((a.interaction, a.outcome), (Interaction::TokenRefresh, Outcome::Success));
        assert_eq!(a.client.as_deref(), Some("diary"));

        let revoked = app.revoke("diary", &refresh_of(&refreshed.json)).await;
        assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
        let a = the_record(&app, &revoked, "revocation").await;
        assert_eq!((a.interaction, a.outcome), (Interaction::Revoke, Outcome::Success));
        assert_eq!(a.client.as_deref(), Some("diary"));

        // Refusals are recorded once too.
        let replay = app.exchange("diary", &code, &verifier).await;
        assert_eq!(replay.status, StatusCode::BAD_REQUEST);
        let a = the_record(&app, &replay, "a replayed code").await;
        assert_eq!((a.interaction, a.outcome), (Interaction::TokenIssue, Outcome::Denied));
        let stale = app.refresh("diary", &refresh_of(&issued.json), None).await;
        assert_eq!(stale.status, StatusCode::BAD_REQUEST);
        let a = the_record(&app, &stale, "a refused refresh").await;
        assert_eq!((a.interaction, a.outcome), (Interaction::TokenRefresh, Outcome::Denied));
        let bad_client = app.exchange("no-such-app", &code, &verifier).await;
        assert_eq!(bad_client.status, StatusCode::UNAUTHORIZED);
        let a = the_record(&app, &bad_client, "an unknown client").await;
        assert_eq!(a.rules, vec!["client-auth-failed".to_string()]);
    }
}

#[tokio::test]
async fn a_request_without_a_valid_credential_leaves_one_denied_record_without_the_token() {
    for app in TestApp::all().await {
        let bogus = "Bearer not-a-token-hunter2-credential";
        for (uri, headers) in [
            ("/fhir/Patient?name=smith", vec![]),
            ("/fhir/Observation/o1", vec![("authorization", bogus)]),
            ("/api/portal/me", vec![]),
        ] {
            let r = app.raw(Method::GET, uri, &headers, Vec::new()).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}: {}", r.text);
            let a = the_record(&app, &r, uri).await;
            assert_eq!(a.interaction, Interaction::Authenticate);
            assert_eq!((a.outcome, a.status), (Outcome::Denied, 401), "{a:?}");
            assert_eq!(a.rules, vec!["authentication-required".to_string()]);
            assert_eq!(a.actor.role, None);
            assert_eq!(a.query.as_deref(), Some(uri.split('?').next().unwrap()), "the path, not the query");
            assert!(!format!("{a:?}").contains("hunter2"), "the credential is never recorded: {a:?}");
        }
    }
}
