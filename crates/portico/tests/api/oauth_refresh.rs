//! Refresh tokens: rotation, replay inside and outside the grace period, concurrent
//! refreshes, scope on refresh. Checklist: "Refresh tokens rotate; a replay outside a short
//! grace revokes the whole family and its access tokens; concurrent refreshes rotate once;
//! broader scope → invalid_scope".

use crate::common::oauth::*;
use crate::common::*;
use crate::oauth::{LAUNCH_SCOPES, access, alice_and_diary, refresh_of, works};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use portico_policy::ScopeSet;
use serde_json::Value;
use tower::ServiceExt;

fn assert_refused(r: &Resp, error: &str, what: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
    assert_eq!(r.json["error"], error, "{what}: {}", r.text);
    assert!(r.json.get("access_token").is_none(), "{what}");
}

fn ok(r: &Resp, what: &str) -> Value {
    assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.text);
    r.json.clone()
}

#[tokio::test]
async fn refresh_rotates_and_the_old_token_within_grace_is_refused_without_killing_the_family() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let t0 = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        let r0 = refresh_of(&t0);
        let t1 = ok(&app.refresh("diary", &r0, None).await, "first refresh");
        let r1 = refresh_of(&t1);
        assert_ne!(r1, r0, "the refresh token rotates");
        assert_ne!(access(&t1), access(&t0));
        assert_eq!(t1["scope"], t0["scope"]);
        assert_eq!(t1["patient"], "pa");
        assert!(works(&app, &access(&t1)).await);

        // The old one again, inside the grace period: refused, nothing else harmed.
        assert_refused(&app.refresh("diary", &r0, None).await, "invalid_grant", "the rotated-out token");
        assert!(works(&app, &access(&t0)).await, "the family lives on");
        assert!(works(&app, &access(&t1)).await, "the family lives on");
        let t2 = ok(&app.refresh("diary", &r1, None).await, "the current refresh token");
        assert!(works(&app, &access(&t2)).await);
        // Not another client's to use.
        app.public_client("other-app", "launch/patient offline_access patient/*.rs").await;
        assert_refused(&app.refresh("other-app", &refresh_of(&t2), None).await, "invalid_grant", "another client");
    }
}

#[tokio::test]
async fn an_old_refresh_token_replayed_after_the_grace_period_revokes_the_family_and_its_access_tokens() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::with_config(backend, |c| c.auth.refresh_grace_secs = 1).await else { continue };
        alice_and_diary(&app).await;
        let t0 = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        let r0 = refresh_of(&t0);
        let t1 = ok(&app.refresh("diary", &r0, None).await, "first refresh");
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        assert_refused(&app.refresh("diary", &r0, None).await, "invalid_grant", "replay after the grace");
        assert!(!works(&app, &access(&t0)).await, "{backend:?}: the family's first access token must die");
        assert!(!works(&app, &access(&t1)).await, "{backend:?}: the family's current access token must die");
        assert_refused(&app.refresh("diary", &refresh_of(&t1), None).await, "invalid_grant", "the current one");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_with_one_token_rotate_exactly_once() {
    const N: usize = 6;
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let t0 = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        let r0 = refresh_of(&t0);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(N));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..N {
            let router = app.router.clone();
            let barrier = barrier.clone();
            let body = form_body(&[("grant_type", "refresh_token"), ("refresh_token", &r0), ("client_id", "diary")]);
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
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            });
        }
        let results = set.join_all().await;
        let winners: Vec<&Value> = results.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, j)| j).collect();
        assert_eq!(winners.len(), 1, "{:?}: exactly one rotation: {results:?}", app.backend);
        for (s, j) in results.iter().filter(|(s, _)| *s != StatusCode::OK) {
            assert_eq!((*s, j["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{j}");
        }
        // The race did not look like theft: the winner's tokens work and rotate on.
        let winner = winners[0];
        assert!(works(&app, &access(winner)).await);
        let next = ok(&app.refresh("diary", &refresh_of(winner), None).await, "the winner's refresh token");
        assert!(works(&app, &access(&next)).await);
    }
}

#[tokio::test]
async fn a_refresh_asking_for_more_than_was_granted_is_invalid_scope() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let t0 = app.launch("diary", "launch/patient offline_access patient/Observation.rs", "alice").await;
        assert_eq!(t0["scope"], "launch/patient offline_access patient/Observation.rs");
        let r0 = refresh_of(&t0);
        for broader in [
            "patient/*.rs",
            "patient/Observation.cruds",
            "patient/Observation.rs patient/Condition.rs",
            "patient/Observation.rs openid",
            "user/Observation.rs",
            "system/Observation.rs",
        ] {
            assert_refused(&app.refresh("diary", &r0, Some(broader)).await, "invalid_scope", broader);
        }
        // A refused widening does not spend the token.
        let t1 = ok(&app.refresh("diary", &r0, None).await, "after the refusals");
        assert_eq!(t1["scope"], t0["scope"]);
    }
}

/// The scope an access token really carries, as introspection reports it.
async fn real_scope(app: &TestApp, token: &str) -> ScopeSet {
    let r = app.introspect(None, token).await;
    assert_eq!(r.json["active"], true, "{}", r.text);
    ScopeSet::parse(r.json["scope"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_refresh_asking_for_less_is_accepted_and_never_widens_the_grant() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let t0 = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        let granted = ScopeSet::parse(t0["scope"].as_str().unwrap()).unwrap();
        let t1 = ok(
            &app.refresh("diary", &refresh_of(&t0), Some("patient/Observation.rs offline_access")).await,
            "narrower",
        );
        let answered = ScopeSet::parse(t1["scope"].as_str().unwrap()).unwrap();
        assert!(answered.is_subset_of(&granted), "{} is wider than {}", t1["scope"], t0["scope"]);
        // The response tells the truth about the token it hands out.
        let carried = real_scope(&app, &access(&t1)).await;
        assert!(carried.is_subset_of(&answered) && answered.is_subset_of(&carried), "{} vs {carried:?}", t1["scope"]);
        // And a later refresh without a scope is back to the grant, not beyond it.
        let t2 = ok(&app.refresh("diary", &refresh_of(&t1), None).await, "after narrowing");
        let again = ScopeSet::parse(t2["scope"].as_str().unwrap()).unwrap();
        assert!(again.is_subset_of(&granted) && granted.is_subset_of(&again), "{}", t2["scope"]);
    }
}

/// Known gap (flips when fixed): a narrower refresh is accepted, but the new access token
/// still carries the whole grant's scope, because access tokens have no scope of their own
/// (`IdentityStore::access_put` stores only the grant). The response says so honestly.
#[tokio::test]
async fn known_gap_a_narrowed_refresh_still_issues_the_whole_grant_scope() {
    for app in TestApp::all().await {
        alice_and_diary(&app).await;
        let t0 = app.launch("diary", LAUNCH_SCOPES, "alice").await;
        let t1 = ok(&app.refresh("diary", &refresh_of(&t0), Some("patient/Observation.rs")).await, "narrower");
        assert_eq!(t1["scope"], t0["scope"], "if this fails, narrowing now works: turn this into a positive test");
        let condition = app.get_as(&access(&t1), "/fhir/Patient/pa").await;
        assert_eq!(condition.status, StatusCode::OK, "the narrowed token still reads Patient");
    }
}
