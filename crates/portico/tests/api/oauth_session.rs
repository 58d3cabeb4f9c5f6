//! The portal's web session. Checklist: "New session id at login, old cookie dead after
//! logout, idle and absolute timeouts, CSRF tokens, cookies Secure; HttpOnly; SameSite with
//! the __Host- prefix".

use crate::common::oauth::*;
use crate::common::*;
use crate::oauth::{LAUNCH_SCOPES, alice_and_diary};
use axum::http::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

/// Whether this session cookie value opens the portal.
async fn alive(app: &TestApp, session: &str) -> bool {
    let mut b = Browser::default();
    b.cookies.insert("portico-session".into(), session.into());
    let r = b.get(app, "/api/portal/me").await;
    match r.status {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => false,
        s => panic!("unexpected {s}: {}", r.text),
    }
}

async fn sign_in(app: &TestApp, b: &mut Browser) -> String {
    let r = app.portal_sign_in(b, "alice", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    b.session().expect("a session cookie")
}

async fn logout(app: &TestApp, b: &mut Browser) -> Resp {
    let csrf = b.csrf(app).await;
    b.post_form(app, "/oauth2/logout", &[("csrf", &csrf)]).await
}

#[tokio::test]
async fn every_sign_in_gets_a_new_session_id_and_replaces_the_browsers_old_one() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        let first = sign_in(&app, &mut b).await;
        let second = sign_in(&app, &mut b).await;
        assert_ne!(first, second, "a sign-in never keeps the session id it found");
        assert!(!alive(&app, &first).await, "{:?}: the session the browser gave up must end", app.backend);
        assert!(alive(&app, &second).await);
        // Signing in elsewhere does not end this browser's session, until it logs out.
        let elsewhere = sign_in(&app, &mut Browser::default()).await;
        assert_ne!(elsewhere, second);
        assert!(alive(&app, &second).await && alive(&app, &elsewhere).await);
        assert_eq!(logout(&app, &mut b).await.status, StatusCode::OK);
        assert!(!alive(&app, &second).await);
        assert!(alive(&app, &elsewhere).await, "logging out one session leaves the others");
    }
}

#[tokio::test]
async fn the_old_cookie_is_dead_after_logout() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        let session = sign_in(&app, &mut b).await;
        let r = logout(&app, &mut b).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let cleared = r.headers.get_all("set-cookie").iter().any(|v| {
            let v = v.to_str().unwrap();
            v.starts_with("portico-session=;") && v.contains("Max-Age=0")
        });
        assert!(cleared, "logout clears the cookie: {:?}", r.headers);
        assert!(b.session().is_none());
        // Presented anyway (a copy kept by an attacker), it opens nothing.
        assert!(!alive(&app, &session).await, "{:?}", app.backend);
        let mut thief = Browser::default();
        thief.cookies.insert("portico-session".into(), session.clone());
        let r = thief.get(&app, "/fhir/Patient/pa").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        // An authorization request with it asks for a sign-in again.
        let (_, challenge) = pkce();
        let r = thief.get(&app, &app.authorize_url("diary", LAUNCH_SCOPES, &challenge, "st-1")).await;
        assert!(r.text.contains("name=\"password\""), "{}", r.text);
    }
}

#[tokio::test]
async fn an_idle_session_times_out() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::with_config(backend, |c| c.auth.session_idle_secs = 2).await else { continue };
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        let session = sign_in(&app, &mut b).await;
        assert!(alive(&app, &session).await);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!alive(&app, &session).await, "{backend:?}: idle past the limit");
        // Once timed out it stays dead: the failed lookup did not refresh it.
        assert!(!alive(&app, &session).await);
    }
}

#[tokio::test]
async fn activity_keeps_a_session_alive_only_until_its_absolute_timeout() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::with_config(backend, |c| {
            c.auth.session_idle_secs = 3;
            c.auth.session_absolute_secs = 5;
        })
        .await
        else {
            continue;
        };
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        let session = sign_in(&app, &mut b).await;
        // Activity every 1.2 s keeps it past the idle limit…
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            assert!(alive(&app, &session).await, "{backend:?}: active sessions do not idle out");
        }
        // …but not past the absolute one.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        assert!(!alive(&app, &session).await, "{backend:?}: past the absolute limit");
    }
}

#[tokio::test]
async fn the_approval_form_needs_the_sessions_csrf_token() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        let (_, challenge) = pkce();
        let page =
            app.approval_page(&mut b, &app.authorize_url("diary", LAUNCH_SCOPES, &challenge, "st-1"), "alice").await;
        // The page itself can be neither framed (clickjacking) nor cached.
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert!(page.header("content-security-policy").unwrap_or("").contains("frame-ancestors 'none'"));
        assert_eq!(page.header("cache-control"), Some("no-store"));
        // Another session's token is as wrong as a made-up one.
        let mut other = Browser::default();
        sign_in(&app, &mut other).await;
        let others = other.csrf(&app).await;
        for (what, csrf) in
            [("no token", None), ("a wrong token", Some("forged")), ("another session's", Some(&*others))]
        {
            let r = app.approve_form(&mut b, &page, None, csrf).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?} {what}: {}", app.backend, r.text);
            assert!(r.header("location").is_none(), "{what}: no code, no redirect");
        }
        // The request is still there for the real form.
        let code = app.approve(&mut b, &page, None).await;
        assert!(!code.is_empty());
    }
}

#[tokio::test]
async fn the_logout_form_needs_the_sessions_csrf_token() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        let session = sign_in(&app, &mut b).await;
        for (what, form) in [("no token", vec![]), ("a wrong token", vec![("csrf", "forged")])] {
            let r = b.post_form(&app, "/oauth2/logout", &form).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?} {what}: {}", app.backend, r.text);
            assert!(alive(&app, &session).await, "{what}: a forged logout ends nothing");
        }
        assert_eq!(logout(&app, &mut b).await.status, StatusCode::OK);
        assert!(!alive(&app, &session).await);
    }
}

#[tokio::test]
async fn portal_and_fhir_writes_with_the_session_cookie_need_the_csrf_header() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        sign_in(&app, &mut b).await;
        let writes: [(Method, &str, Option<serde_json::Value>); 4] = [
            (Method::POST, "/api/portal/step-up", Some(json!({"code": totp_now()}))),
            (Method::POST, "/api/portal/password", Some(json!({"current": PASSWORD, "new": "x y z w v u t s"}))),
            (Method::DELETE, "/api/portal/devices/any", None),
            (Method::POST, "/fhir/Observation", Some(json!({"resourceType": "Observation"}))),
        ];
        for (method, uri, body) in &writes {
            for csrf in [None, Some("forged")] {
                let r = b.portal_csrf(&app, method.clone(), uri, body.clone(), csrf).await;
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{:?} {method} {uri} with {csrf:?}: {}",
                    app.backend,
                    r.text
                );
            }
        }
        // Nothing happened: no step-up was recorded and the password is unchanged.
        let me = b.get(&app, "/api/portal/me").await;
        assert_eq!(me.json["stepUp"]["fresh"], false, "{}", me.text);
        assert_eq!(app.portal_sign_in(&mut Browser::default(), "alice", PASSWORD).await.status, StatusCode::OK);
        // With the token, the same request goes through.
        let r = b.portal(&app, Method::POST, "/api/portal/step-up", Some(json!({"code": totp_now()}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
}

type Headers<'a> = Vec<(&'a str, &'a str)>;

#[tokio::test]
async fn the_sign_in_form_needs_its_double_submit_cookie() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        let page = b.get(&app, "/oauth2/login").await;
        let csrf = hidden(&page.text, "csrf").unwrap();
        let form = |csrf: &str| {
            form_body(&[("csrf", csrf), ("req", ""), ("username", "alice"), ("password", PASSWORD)]).into_bytes()
        };
        let ct = ("content-type", "application/x-www-form-urlencoded");
        let login_cookie = format!("portico-login={csrf}");
        let cases: [(&str, Headers, Vec<u8>); 4] = [
            ("the form's token without the cookie", vec![ct], form(&csrf)),
            ("the cookie without the form's token", vec![ct, ("cookie", &login_cookie)], {
                form_body(&[("req", ""), ("username", "alice"), ("password", PASSWORD)]).into_bytes()
            }),
            ("a cookie that does not match", vec![ct, ("cookie", "portico-login=something-else")], form(&csrf)),
            ("a forged pair in the form only", vec![ct], form("attacker-chosen")),
        ];
        for (what, headers, body) in cases {
            let r = app.raw(Method::POST, "/oauth2/login", &headers, body).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?} {what}: {}", app.backend, r.text);
            assert!(r.header("set-cookie").is_none_or(|c| !c.starts_with("portico-session=")), "{what}");
        }
        // With both, it signs in.
        let r = app.sign_in(&mut b, &page, "alice", PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
}

/// The `Set-Cookie` header that sets `name`.
fn set_cookie<'a>(r: &'a Resp, name: &str) -> &'a str {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")) && !v.starts_with(&format!("{name}=;")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {:?}", r.headers))
}

fn attributes(cookie: &str) -> Vec<String> {
    cookie.split(';').skip(1).map(|a| a.trim().to_string()).collect()
}

#[tokio::test]
async fn session_and_login_cookies_are_httponly_samesite_lax_and_path_root() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        let page = b.get(&app, "/oauth2/login").await;
        let login = attributes(set_cookie(&page, "portico-login"));
        let r = app.sign_in(&mut b, &page, "alice", PASSWORD).await;
        let session = attributes(set_cookie(&r, "portico-session"));
        for (what, attrs) in [("login", login), ("session", session)] {
            for want in ["HttpOnly", "SameSite=Lax", "Path=/"] {
                assert!(attrs.iter().any(|a| a == want), "{what} cookie lacks {want}: {attrs:?}");
            }
            assert!(!attrs.iter().any(|a| a.starts_with("Domain")), "{what}: no Domain attribute: {attrs:?}");
        }
    }
}

#[tokio::test]
async fn behind_https_cookies_are_host_prefixed_and_secure() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) =
            TestApp::with_config(backend, |c| c.auth.public_url = "https://portal.example.org".into()).await
        else {
            continue;
        };
        alice_and_diary(&app).await;
        let mut b = Browser::default();
        let page = b.get(&app, "/oauth2/login").await;
        let login = attributes(set_cookie(&page, "__Host-portico-login"));
        let r = app.sign_in(&mut b, &page, "alice", PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let session = attributes(set_cookie(&r, "__Host-portico-session"));
        for (what, attrs) in [("login", login), ("session", session)] {
            for want in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
                assert!(attrs.iter().any(|a| a == want), "{what} cookie lacks {want}: {attrs:?}");
            }
            assert!(!attrs.iter().any(|a| a.starts_with("Domain")), "__Host- cookies carry no Domain: {attrs:?}");
        }
        assert!(!b.cookies.contains_key("portico-session"), "no unprefixed session cookie");
        // The prefixed cookie is the one the server reads; the unprefixed name opens nothing.
        let me = b.get(&app, "/api/portal/me").await;
        assert_eq!(me.status, StatusCode::OK, "{}", me.text);
        let session = b.session().unwrap();
        let mut plain = Browser::default();
        plain.cookies.insert("portico-session".into(), session);
        assert_eq!(plain.get(&app, "/api/portal/me").await.status, StatusCode::UNAUTHORIZED);
    }
}
