//! Throttling and lockout. Checklist: "Login and token endpoints throttled (429 +
//! Retry-After), lockouts audited". The per-address limit keys on the peer address, so
//! these requests come from a given address (`Browser::at`, `TestApp::send_from`).

use crate::common::oauth::*;
use crate::common::*;
use crate::oauth::alice_and_diary;
use axum::http::{Method, StatusCode};
use portico_audit::{Interaction, Outcome};

/// Sign-in and token requests allowed per address per minute in these tests (the burst is
/// the whole allowance: at least 5).
const AUTH_LIMIT: u32 = 5;

async fn throttled_app(backend: Backend) -> Option<TestApp> {
    TestApp::with_config(backend, |c| c.limits.auth_per_ip_per_minute = AUTH_LIMIT).await
}

/// A 429 whose `Retry-After` is between 1 s and `max` s. Returns the wait.
fn assert_throttled(r: &Resp, max: i64, what: &str) -> i64 {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{what}: {}", r.text);
    let wait: i64 = r.header("retry-after").unwrap_or_else(|| panic!("{what}: no Retry-After")).parse().unwrap();
    assert!((1..=max).contains(&wait), "{what}: Retry-After {wait}");
    wait
}

#[tokio::test]
async fn sign_in_is_throttled_per_address_with_retry_after() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = throttled_app(backend).await else { continue };
        alice_and_diary(&app).await;
        let mut b = Browser::at("203.0.113.7");
        // Showing the sign-in page does not count; each sign-in attempt does.
        let mut page = b.get(&app, "/oauth2/login").await;
        assert_eq!(page.status, StatusCode::OK);
        for i in 1..=AUTH_LIMIT {
            // Unknown users: no account is locked along the way, only the address counts.
            let r = app.sign_in(&mut b, &page, &format!("nobody-{i}"), "wrong password").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{backend:?} attempt {i}: {}", r.text);
            page = r;
        }
        let r = app.sign_in(&mut b, &page, "alice", PASSWORD).await;
        assert_throttled(&r, 60, "sign-in over the limit");
        assert!(b.session().is_none(), "a throttled sign-in starts no session");
        // Other addresses are not held up.
        let r = app.portal_sign_in(&mut Browser::at("198.51.100.9"), "alice", PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
}

#[tokio::test]
async fn the_token_endpoint_is_throttled_per_address_with_retry_after() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = throttled_app(backend).await else { continue };
        alice_and_diary(&app).await;
        let ip = Some("203.0.113.8".parse().unwrap());
        let post = |form: &[(&str, &str)]| {
            app.send_from(
                ip,
                Method::POST,
                "/oauth2/token",
                &[("content-type", "application/x-www-form-urlencoded")],
                form_body(form).into_bytes(),
            )
        };
        let guess = [("grant_type", "authorization_code"), ("client_id", "diary"), ("code", "guess")];
        for i in 0..AUTH_LIMIT {
            let r = post(&guess).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?} attempt {i}: {}", r.text);
        }
        assert_throttled(&post(&guess).await, 60, "token requests over the limit");
        // The other token-side endpoints share the allowance.
        let r = app
            .send_from(
                ip,
                Method::POST,
                "/oauth2/revoke",
                &[("content-type", "application/x-www-form-urlencoded")],
                form_body(&[("client_id", "diary"), ("token", "x")]).into_bytes(),
            )
            .await;
        assert_throttled(&r, 60, "revocation over the limit");
        let other = app
            .send_from(
                Some("198.51.100.10".parse().unwrap()),
                Method::POST,
                "/oauth2/token",
                &[("content-type", "application/x-www-form-urlencoded")],
                form_body(&guess).into_bytes(),
            )
            .await;
        assert_eq!(other.status, StatusCode::BAD_REQUEST, "another address is not throttled: {}", other.text);
    }
}

#[tokio::test]
async fn failed_sign_ins_lock_the_account_and_the_lockout_is_audited() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let alice = app.state.identity.store.user_by_username("alice").await.unwrap().unwrap();
        let threshold = app.state.config.auth.lockout_threshold;
        let mut b = Browser::default();
        let mut page = b.get(&app, "/oauth2/login").await;
        for i in 1..threshold {
            let r = app.sign_in(&mut b, &page, "alice", "not the password").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?} failure {i}: {}", app.backend, r.text);
            page = r;
        }
        // The threshold-th failure locks.
        let r = app.sign_in(&mut b, &page, "alice", "not the password").await;
        let lock_secs = app.state.config.auth.lockout_secs;
        assert_throttled(&r, lock_secs, "the failure that locks");
        assert!(r.text.contains("name=\"password\""), "the page is the sign-in form again");
        // The right password is refused while locked, and says when to come back.
        let r = app.sign_in(&mut b, &r, "alice", PASSWORD).await;
        let wait = assert_throttled(&r, lock_secs, "the right password while locked");
        assert!(wait > lock_secs - 60, "Retry-After {wait} is the rest of the lockout");
        assert!(b.session().is_none(), "no session while locked");

        // Audited: each locked refusal is a denied `login` record naming the rule and the user.
        let locked: Vec<_> = app
            .audit_records()
            .await
            .into_iter()
            .filter(|a| a.interaction == Interaction::Login && a.rules.iter().any(|r| r == "login-locked"))
            .collect();
        assert_eq!(locked.len(), 2, "{:?}: {locked:?}", app.backend);
        for a in &locked {
            assert_eq!(a.outcome, Outcome::Denied, "{a:?}");
            assert_eq!(a.status, 429);
            assert_eq!(a.actor.id, alice.id);
        }
        let failed = app
            .audit_records()
            .await
            .into_iter()
            .filter(|a| a.interaction == Interaction::Login && a.rules.iter().any(|r| r == "login-failed"))
            .count();
        assert_eq!(failed as i64, threshold - 1);
    }
}
