//! Revocation bites on the next request: RFC 7009 by the app, the user disconnecting the
//! app, the operator disabling the user, a password change (behind step-up), a device
//! revoked. Checklist: "Revocation (app, consent, user disabled, password changed) bites on
//! the next request".

use crate::common::oauth::*;
use crate::common::*;
use crate::oauth::{APP_SCOPES, LAUNCH_SCOPES, access, alice_and_diary, refresh_of, works};
use axum::http::{Method, StatusCode};
use serde_json::json;

fn assert_invalid_grant(r: &Resp, what: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
    assert_eq!(r.json["error"], "invalid_grant", "{what}: {}", r.text);
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_its_family_on_the_next_request() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        app.public_client("other-app", APP_SCOPES).await;
        let t = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        let (token, refresh) = (access(&t), refresh_of(&t));
        assert!(works(&app, &token).await);

        // Another client cannot revoke it (answered 200 all the same: RFC 7009 §2.2).
        let r = app.revoke("other-app", &refresh).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(works(&app, &token).await, "another client's revocation must change nothing");

        let r = app.revoke("diary", &refresh).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(!works(&app, &token).await, "{:?}: the family's access token must stop at once", app.backend);
        assert_invalid_grant(&app.refresh("diary", &refresh, None).await, "the revoked refresh token");
        // Revoking again, or revoking garbage, is still 200 and reveals nothing.
        assert_eq!(app.revoke("diary", &refresh).await.status, StatusCode::OK);
        assert_eq!(app.revoke("diary", "no-such-token").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn revoking_an_access_token_ends_it_on_the_next_request() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let t = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        let token = access(&t);
        assert!(works(&app, &token).await);
        let r = app.revoke("diary", &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(!works(&app, &token).await, "{:?}", app.backend);
    }
}

#[tokio::test]
async fn disconnecting_an_app_in_the_portal_ends_its_tokens() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        let t = app.launch_in(&mut b, "diary", LAUNCH_SCOPES, "alice").await;
        let token = access(&t);
        assert!(works(&app, &token).await);
        let apps = b.get(&app, "/api/portal/apps").await;
        assert_eq!(apps.status, StatusCode::OK, "{}", apps.text);
        let list = apps.json["apps"].as_array().expect("apps");
        assert_eq!(list.len(), 1, "{}", apps.text);
        assert_eq!(list[0]["app"], "diary");
        let id = list[0]["id"].as_str().unwrap();

        let r = b.portal(&app, Method::DELETE, &format!("/api/portal/apps/{id}"), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert!(!works(&app, &token).await, "{:?}", app.backend);
        assert_invalid_grant(&app.refresh("diary", &refresh_of(&t), None).await, "after disconnecting");
        let apps = b.get(&app, "/api/portal/apps").await;
        assert_eq!(apps.json["apps"], json!([]), "{}", apps.text);
        // Someone else's connection cannot be disconnected by guessing its id.
        app.user("bob", "patient", &["pb"]).await;
        let mut bob = Browser::default();
        let tb = app.launch_in(&mut bob, "diary", "launch/patient patient/*.rs", "bob").await;
        let bobs = bob.get(&app, "/api/portal/apps").await.json["apps"][0]["id"].as_str().unwrap().to_string();
        let r = b.portal(&app, Method::DELETE, &format!("/api/portal/apps/{bobs}"), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        let read = app.get_as(&access(&tb), "/fhir/Patient/pb").await;
        assert_ne!(read.status, StatusCode::UNAUTHORIZED, "bob's app must be untouched: {}", read.text);
    }
}

#[tokio::test]
async fn disabling_a_user_ends_their_tokens_and_sessions_on_the_next_request() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let alice = app.state.identity.store.user_by_username("alice").await.unwrap().unwrap();
        let mut b = Browser::default();
        let t = app.launch_in(&mut b, "diary", LAUNCH_SCOPES, "alice").await;
        assert!(works(&app, &access(&t)).await);
        assert_eq!(b.get(&app, "/api/portal/me").await.status, StatusCode::OK);

        // What `portico user disable` does.
        let now = portico::identity::now_ms();
        assert!(app.state.identity.store.user_set_disabled(&alice.id, true, now).await.unwrap());

        assert!(!works(&app, &access(&t)).await, "{:?}", app.backend);
        assert_invalid_grant(&app.refresh("diary", &refresh_of(&t), None).await, "a disabled user's refresh");
        assert_eq!(b.get(&app, "/api/portal/me").await.status, StatusCode::UNAUTHORIZED);
        let r = app.portal_sign_in(&mut Browser::default(), "alice", PASSWORD).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a disabled user cannot sign in: {}", r.text);
    }
}

#[tokio::test]
async fn changing_the_password_needs_a_fresh_step_up_and_ends_every_grant_and_other_session() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let mut b = Browser::with_agent("laptop");
        let t = app.launch_in(&mut b, "diary", LAUNCH_SCOPES, "alice").await;
        let mut phone = Browser::with_agent("phone");
        assert_eq!(app.portal_sign_in(&mut phone, "alice", PASSWORD).await.status, StatusCode::OK);
        let new_password = "a new and longer passphrase";
        let change = json!({"current": PASSWORD, "new": new_password});

        // TOTP is enrolled, so the change needs a fresh step-up first.
        let r = b.portal(&app, Method::POST, "/api/portal/password", Some(change.clone())).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        let challenge = r.header("www-authenticate").unwrap_or("");
        assert!(challenge.contains("error=\"insufficient_user_authentication\""), "{challenge}");
        assert!(works(&app, &access(&t)).await, "a refused change changes nothing");

        let wrong = b.portal(&app, Method::POST, "/api/portal/step-up", Some(json!({"code": "000000"}))).await;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.text);
        let r = b.portal(&app, Method::POST, "/api/portal/step-up", Some(json!({"code": totp_now()}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["stepUp"]["fresh"], true);

        let r = b.portal(&app, Method::POST, "/api/portal/password", Some(change)).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}: {}", app.backend, r.text);
        assert!(!works(&app, &access(&t)).await, "{:?}: the app's token must stop", app.backend);
        assert_invalid_grant(&app.refresh("diary", &refresh_of(&t), None).await, "after the password change");
        assert_eq!(phone.get(&app, "/api/portal/me").await.status, StatusCode::UNAUTHORIZED, "other sessions end");
        assert_eq!(b.get(&app, "/api/portal/me").await.status, StatusCode::OK, "the session that changed it stays");
        let old = app.portal_sign_in(&mut Browser::default(), "alice", PASSWORD).await;
        assert_eq!(old.status, StatusCode::UNAUTHORIZED, "{}", old.text);
        let new = app.portal_sign_in(&mut Browser::default(), "alice", new_password).await;
        assert_eq!(new.status, StatusCode::OK, "{}", new.text);
    }
}

/// The id of the user's device for this app and user agent, from the portal's list.
async fn device_of(app: &TestApp, b: &mut Browser, client: &str, agent: &str) -> String {
    let devices = b.get(app, "/api/portal/devices").await;
    assert_eq!(devices.status, StatusCode::OK, "{}", devices.text);
    let list = devices.json["devices"].as_array().unwrap();
    let d = list.iter().find(|d| d["app"] == client && d["userAgent"] == agent);
    d.unwrap_or_else(|| panic!("no {client} device for {agent}: {}", devices.text))["id"].as_str().unwrap().to_string()
}

/// A device's row in the portal's list.
async fn device_row(app: &TestApp, b: &mut Browser, id: &str) -> serde_json::Value {
    let devices = b.get(app, "/api/portal/devices").await;
    let list = devices.json["devices"].as_array().unwrap();
    list.iter().find(|d| d["id"] == id).unwrap_or_else(|| panic!("{id} not listed: {}", devices.text)).clone()
}

#[tokio::test]
async fn revoking_a_device_ends_its_sessions_and_tokens_and_marks_it_for_wipe() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        // The same app approved on two devices; each browser also has its portal session.
        let mut phone = Browser::with_agent("phone");
        let t = app.launch_in(&mut phone, "diary", LAUNCH_SCOPES, "alice").await;
        let mut laptop = Browser::with_agent("laptop");
        let lt = app.launch_in(&mut laptop, "diary", LAUNCH_SCOPES, "alice").await;
        let phone_app = device_of(&app, &mut laptop, "diary", "phone").await;
        let phone_portal = device_of(&app, &mut laptop, "portal", "phone").await;
        let laptop_app = device_of(&app, &mut laptop, "diary", "laptop").await;

        // The app on the phone: its tokens stop, the device is marked for wipe.
        let r = laptop.portal(&app, Method::DELETE, &format!("/api/portal/devices/{phone_app}"), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert!(!works(&app, &access(&t)).await, "{:?}: the phone's app token must stop", app.backend);
        assert_invalid_grant(&app.refresh("diary", &refresh_of(&t), None).await, "the phone's refresh token");
        let row = device_row(&app, &mut laptop, &phone_app).await;
        assert_eq!(row["wipe"], true, "{row}");
        assert!(row["revoked"].is_string(), "{row}");

        // The phone's browser: its portal session ends.
        assert_eq!(phone.get(&app, "/api/portal/me").await.status, StatusCode::OK, "not revoked yet");
        let r = laptop.portal(&app, Method::DELETE, &format!("/api/portal/devices/{phone_portal}"), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(phone.get(&app, "/api/portal/me").await.status, StatusCode::UNAUTHORIZED, "{:?}", app.backend);
        assert_eq!(device_row(&app, &mut laptop, &phone_portal).await["wipe"], true);

        // The laptop and what was approved there carry on.
        assert!(works(&app, &access(&lt)).await);
        assert_eq!(laptop.get(&app, "/api/portal/me").await.status, StatusCode::OK);
        assert_eq!(device_row(&app, &mut laptop, &laptop_app).await["wipe"], false);
        // Another user's device is not found, and stays as it was.
        app.user("bob", "patient", &["pb"]).await;
        let mut bob = Browser::with_agent("bob's");
        app.portal_sign_in(&mut bob, "bob", PASSWORD).await;
        let r = bob.portal(&app, Method::DELETE, &format!("/api/portal/devices/{laptop_app}"), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        assert!(works(&app, &access(&lt)).await);
    }
}

#[tokio::test]
async fn a_step_up_goes_stale_after_its_window() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::with_config(backend, |c| c.auth.step_up_fresh_secs = 1).await else { continue };
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        let t = app.launch_in(&mut b, "diary", LAUNCH_SCOPES, "alice").await;
        let r = b.portal(&app, Method::POST, "/api/portal/step-up", Some(json!({"code": totp_now()}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        let change = json!({"current": PASSWORD, "new": "a new and longer passphrase"});
        let r = b.portal(&app, Method::POST, "/api/portal/password", Some(change)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{backend:?}: a stale step-up is no step-up: {}", r.text);
        assert!(r.header("www-authenticate").unwrap_or("").contains("insufficient_user_authentication"));
        assert!(works(&app, &access(&t)).await, "nothing changed");
        let ok = app.portal_sign_in(&mut Browser::default(), "alice", PASSWORD).await;
        assert_eq!(ok.status, StatusCode::OK, "the password is unchanged");
    }
}

#[tokio::test]
async fn a_revocation_in_one_server_process_bites_in_another_on_the_next_request() {
    for app in TestApp::all().await {
        let other = app.sharing().await;
        alice_and_diary(&app).await;
        let t = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        let token = access(&t);
        assert!(works(&app, &token).await && works(&other, &token).await, "{:?}", app.backend);
        // Revoked through the second instance (the family, by its refresh token)…
        let r = other.revoke("diary", &refresh_of(&t)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        // …and refused by the first on its very next request, with no cache in between.
        assert!(!works(&app, &token).await, "{:?}: the first instance still accepts the token", app.backend);
        assert!(!works(&other, &token).await);
        // An operator disabling the user in one instance ends a fresh grant in the other.
        let t2 = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        assert!(works(&other, &access(&t2)).await);
        let alice = app.state.identity.store.user_by_username("alice").await.unwrap().unwrap();
        other.state.identity.store.user_set_disabled(&alice.id, true, portico::identity::now_ms()).await.unwrap();
        assert!(!works(&app, &access(&t2)).await, "{:?}", app.backend);
    }
}
