//! The authorization request and the code: single use, short-lived, bound to client and
//! exact redirect URI; PKCE S256 required; redirect URIs matched exactly (an error page,
//! never a redirect, when they are not); `aud` must be this server.

use crate::common::oauth::*;
use crate::common::*;
use crate::oauth::{APP_SCOPES, LAUNCH_SCOPES, access, alice_and_diary, refresh_of, works};
use axum::http::StatusCode;

/// A fresh code for alice and diary, with its verifier (and the browser that got it).
async fn code(app: &TestApp) -> (String, String) {
    let (verifier, challenge) = pkce();
    let mut b = Browser::default();
    let code = app.authorize(&mut b, "diary", LAUNCH_SCOPES, "alice", &challenge).await;
    (code, verifier)
}

fn assert_invalid_grant(r: &Resp, what: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
    assert_eq!(r.json["error"], "invalid_grant", "{what}: {}", r.text);
    assert!(r.json.get("access_token").is_none(), "{what}");
}

#[tokio::test]
async fn a_code_works_once_and_its_replay_revokes_what_the_first_use_issued() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let (code, verifier) = code(&app).await;
        let first = app.exchange("diary", &code, &verifier).await;
        assert_eq!(first.status, StatusCode::OK, "{:?}: {}", app.backend, first.text);
        let (token, refresh) = (access(&first.json), refresh_of(&first.json));
        assert!(works(&app, &token).await);

        let second = app.exchange("diary", &code, &verifier).await;
        assert_invalid_grant(&second, "the same code again");
        assert!(!works(&app, &token).await, "the first exchange's access token must die with the replay");
        let r = app.refresh("diary", &refresh, None).await;
        assert_invalid_grant(&r, "the first exchange's refresh token after the replay");
    }
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::with_config(backend, |c| c.auth.code_secs = 1).await else { continue };
        alice_and_diary(&app).await;
        let (code, verifier) = code(&app).await;
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        assert_invalid_grant(&app.exchange("diary", &code, &verifier).await, "an expired code");
    }
}

#[tokio::test]
async fn a_code_is_bound_to_the_client_it_was_issued_to() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        app.public_client("intruder", APP_SCOPES).await;
        let (code, verifier) = code(&app).await;
        assert_invalid_grant(&app.exchange("intruder", &code, &verifier).await, "another client's code");
        // The code is spent: it was seen by the wrong party.
        assert_invalid_grant(&app.exchange("diary", &code, &verifier).await, "the code after misuse");
    }
}

#[tokio::test]
async fn a_code_is_bound_to_the_exact_redirect_uri() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        for other in ["https://app.example/callback/", "https://app.example/callback?x=1", "https://app.example/other"]
        {
            let (code, verifier) = code(&app).await;
            let r = app
                .token(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", other),
                    ("client_id", "diary"),
                    ("code_verifier", &verifier),
                ])
                .await;
            assert_invalid_grant(&r, other);
            assert_invalid_grant(&app.exchange("diary", &code, &verifier).await, "the code after misuse");
        }
    }
}

/// The error redirect an authorization request got, checked: back to the registered URI,
/// `state` kept, no code. Returns the `error` parameter.
fn error_redirect(r: &Resp, what: &str) -> String {
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{what}: {}", r.text);
    let loc = r.header("location").unwrap_or_else(|| panic!("{what}: no location"));
    assert!(loc.starts_with(&format!("{REDIRECT}?")), "{what}: {loc}");
    assert_eq!(query_param(loc, "state").as_deref(), Some("st-1"), "{what}: {loc}");
    assert_eq!(query_param(loc, "code"), None, "{what}: {loc}");
    query_param(loc, "error").unwrap_or_default()
}

/// Parameters of an authorization request to change, add or leave out.
type Changes<'a> = Vec<(&'a str, Option<&'a str>)>;

#[tokio::test]
async fn pkce_s256_is_required_at_the_authorization_endpoint() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let (verifier, challenge) = pkce();
        let stars = "*".repeat(43);
        let cases: [(&str, Changes); 6] = [
            ("no code_challenge", vec![("code_challenge", None)]),
            ("no code_challenge nor method", vec![("code_challenge", None), ("code_challenge_method", None)]),
            ("no method", vec![("code_challenge_method", None)]),
            ("plain", vec![("code_challenge_method", Some("plain")), ("code_challenge", Some(verifier.as_str()))]),
            ("a malformed challenge", vec![("code_challenge", Some("too-short"))]),
            ("a challenge that is not base64url", vec![("code_challenge", Some(stars.as_str()))]),
        ];
        for (what, changes) in &cases {
            let mut b = Browser::default();
            let url = app.authorize_url_with("diary", LAUNCH_SCOPES, &challenge, "st-1", changes);
            let r = b.get(&app, &url).await;
            assert_eq!(error_redirect(&r, what), "invalid_request", "{:?} {what}", app.backend);
        }
    }
}

#[tokio::test]
async fn a_wrong_missing_or_downgraded_verifier_is_invalid_grant() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let cases = ["wrong", "missing", "the challenge itself (plain)", "too short"];
        for what in cases {
            let (verifier, challenge) = pkce();
            let mut b = Browser::default();
            let code = app.authorize(&mut b, "diary", LAUNCH_SCOPES, "alice", &challenge).await;
            let other = pkce().0;
            let presented = match what {
                "wrong" => Some(other.as_str()),
                "missing" => None,
                "the challenge itself (plain)" => Some(challenge.as_str()),
                _ => Some(&verifier[..20]),
            };
            let mut form = vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("client_id", "diary"),
            ];
            if let Some(v) = presented {
                form.push(("code_verifier", v));
            }
            assert_invalid_grant(&app.token(&form).await, what);
            // A failed attempt spends the code, so guessing gets one try.
            assert_invalid_grant(&app.exchange("diary", &code, &verifier).await, "the code after a bad verifier");
        }
    }
}

/// A page saying no, with no redirect anywhere.
fn assert_error_page(r: &Resp, what: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
    assert!(r.header("location").is_none(), "{what}: redirected to {:?}", r.header("location"));
    assert!(r.header("content-type").unwrap_or("").starts_with("text/html"), "{what}");
    assert!(!r.text.contains("name=\"password\""), "{what}: no sign-in for a request that cannot continue");
}

#[tokio::test]
async fn unregistered_or_near_miss_redirect_uris_get_an_error_page_never_a_redirect() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let (_, challenge) = pkce();
        let near_misses = [
            "https://app.example/callback/",
            "https://app.example/callback?next=https://evil.example",
            "https://app.example:8443/callback",
            "http://app.example/callback",
            "https://APP.example/callback",
            "https://app.example/callback#frag",
            "https://app.example.evil.example/callback",
            "https://evil.example/callback",
        ];
        for uri in near_misses {
            let url =
                app.authorize_url_with("diary", LAUNCH_SCOPES, &challenge, "st-1", &[("redirect_uri", Some(uri))]);
            let r = Browser::default().get(&app, &url).await;
            assert_error_page(&r, uri);
        }
        let url = app.authorize_url_with("diary", LAUNCH_SCOPES, &challenge, "st-1", &[("redirect_uri", None)]);
        assert_error_page(&Browser::default().get(&app, &url).await, "no redirect_uri");
        // A signed-in browser is stopped the same way (no approval page, no redirect).
        let mut b = Browser::default();
        app.portal_sign_in(&mut b, "alice", PASSWORD).await;
        let url = app.authorize_url_with(
            "diary",
            LAUNCH_SCOPES,
            &challenge,
            "st-1",
            &[("redirect_uri", Some("https://evil.example/callback"))],
        );
        assert_error_page(&b.get(&app, &url).await, "signed in, foreign redirect_uri");
    }
}

#[tokio::test]
async fn an_unknown_client_gets_an_error_page_never_a_redirect() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let (_, challenge) = pkce();
        let url = app.authorize_url("no-such-app", LAUNCH_SCOPES, &challenge, "st-1");
        assert_error_page(&Browser::default().get(&app, &url).await, "unknown client");
        let url = app.authorize_url_with("diary", LAUNCH_SCOPES, &challenge, "st-1", &[("client_id", None)]);
        assert_error_page(&Browser::default().get(&app, &url).await, "no client_id");
    }
}

#[tokio::test]
async fn an_aud_other_than_this_fhir_base_is_an_error_redirect() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let (_, challenge) = pkce();
        for aud in [Some("https://other-server.example/fhir"), Some("http://localhost/fhir/Patient"), None] {
            let url = app.authorize_url_with("diary", LAUNCH_SCOPES, &challenge, "st-1", &[("aud", aud)]);
            let r = Browser::default().get(&app, &url).await;
            assert_eq!(error_redirect(&r, &format!("aud {aud:?}")), "invalid_request", "{:?}", app.backend);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_exchanges_of_one_code_leave_no_live_token() {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;
    const N: usize = 5;
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let (code, verifier) = code(&app).await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(N));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..N {
            let (router, barrier) = (app.router.clone(), barrier.clone());
            let body = form_body(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_id", "diary"),
                ("code_verifier", &verifier),
            ]);
            set.spawn(async move {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri("/oauth2/token")
                    .header("host", "localhost")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(body))
                    .unwrap();
                barrier.wait().await;
                let resp = router.oneshot(req).await.unwrap();
                let status = resp.status();
                let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
                (status, serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default())
            });
        }
        let results = set.join_all().await;
        // The first redemption wins; every other is a replay, which revokes the grant — possibly
        // before the winner has read it, so the winner may be refused too.
        let winners: Vec<_> = results.iter().filter(|(s, _)| *s == StatusCode::OK).collect();
        assert!(winners.len() <= 1, "{:?}: at most one exchange: {results:?}", app.backend);
        for (s, j) in results.iter().filter(|(s, _)| *s != StatusCode::OK) {
            assert_eq!((*s, j["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{j}");
        }
        for (_, w) in winners {
            assert!(!works(&app, &access(w)).await, "{:?}: a token from a replayed code must not work", app.backend);
        }
    }
}
