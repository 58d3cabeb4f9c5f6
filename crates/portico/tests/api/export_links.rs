//! Signed download links (`export.signed_urls`): the manifest says no token is needed, each
//! link works without one for its file only and only until it expires, every status poll
//! issues fresh links, and a revoked grant makes a signed link fail like a token.

use crate::common::oauth::Browser;
use crate::common::{Backend, TestApp};
use crate::export::{ASYNC, as_token, bulk_ops, observations, path_of, poll, sha256_hex, stepped_up_token};
use crate::oauth::{access, alice_and_diary, refresh_of};
use axum::http::{Method, StatusCode};
use portico::identity::now_ms;

/// The value of query parameter `k` in `url`.
fn param(url: &str, k: &str) -> String {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    q.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).unwrap_or_default().to_string()
}

/// `url` with parameter `k` set to `v`.
fn with_param(url: &str, k: &str, v: &str) -> String {
    let (path, q) = url.split_once('?').unwrap_or((url, ""));
    let rest: Vec<&str> = q.split('&').filter(|kv| !kv.starts_with(&format!("{k}="))).collect();
    format!("{path}?{}&{k}={v}", rest.join("&"))
}

#[tokio::test]
async fn signed_links_stand_in_for_the_token_for_fifteen_minutes_at_most() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::with_config(backend, |c| {
            c.export.signed_urls = true;
            c.export.url_ttl_secs = 300;
        })
        .await
        else {
            continue;
        };
        alice_and_diary(&app).await;
        observations(&app, "pa", 6).await;
        portico::export::spawn(&app.state);
        let mut b = Browser::default();
        let t = stepped_up_token(&app, &mut b, "diary").await;
        let token = access(&t);
        let r = as_token(&app, &token, Method::GET, "/fhir/Patient/pa/$export?_type=Patient,Observation").await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let status_url = path_of(r.header("content-location").unwrap());
        let job = status_url.rsplit('/').next().unwrap().to_string();
        let done = poll(&app, &token, &status_url).await;
        assert_eq!(done.status, StatusCode::OK, "{backend:?}: {}", done.text);
        assert_eq!(done.json["requiresAccessToken"], false);
        let outputs = done.json["output"].as_array().unwrap().clone();
        assert_eq!(outputs.len(), 2, "{}", done.text);
        let obs = outputs.iter().find(|o| o["type"] == "Observation").unwrap();
        let pat = outputs.iter().find(|o| o["type"] == "Patient").unwrap();
        let url = path_of(obs["url"].as_str().unwrap());

        // The link expires within the configured time (and never beyond 15 minutes).
        let expires: i64 = param(&url, "expires").parse().unwrap();
        let now = now_ms();
        assert!(expires > now && expires <= now + 300_000 + 1_000, "{expires} vs {now}");

        // No token: the signed link is enough, and the bytes are the manifest's.
        let r = app.raw(Method::GET, &url, &[], vec![]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text);
        assert_eq!(sha256_hex(r.text.as_bytes()), obs["extension"]["https://portico.invalid/fhir/bulk/sha256"]);
        assert_eq!(r.text.lines().count(), 6);
        // With the token as well: still served.
        assert_eq!(as_token(&app, &token, Method::GET, &url).await.status, StatusCode::OK);

        // The signature is for one file of one job at one expiry.
        let other_file = url.replace("Observation.ndjson", "Patient.ndjson");
        assert_eq!(app.raw(Method::GET, &other_file, &[], vec![]).await.status, StatusCode::UNAUTHORIZED);
        let stretched = with_param(&url, "expires", &(expires + 60_000).to_string());
        assert_eq!(app.raw(Method::GET, &stretched, &[], vec![]).await.status, StatusCode::UNAUTHORIZED);
        let other_job = url.replace(&job, &uuid::Uuid::new_v4().to_string());
        assert_eq!(app.raw(Method::GET, &other_job, &[], vec![]).await.status, StatusCode::UNAUTHORIZED);
        for bad in ["", "AAAA", "%00", &"A".repeat(4000)] {
            let r = app.raw(Method::GET, &with_param(&url, "signature", bad), &[], vec![]).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "signature {bad:.20}: {}", r.text);
            assert_eq!(r.json["resourceType"], "OperationOutcome");
        }
        // Without a signature the token rule stands.
        let bare = url.split('?').next().unwrap().to_string();
        assert_eq!(app.raw(Method::GET, &bare, &[], vec![]).await.status, StatusCode::UNAUTHORIZED);

        // Each poll issues fresh links; the Patient link of this poll works too.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let again = poll(&app, &token, &status_url).await;
        let fresh = again.json["output"].as_array().unwrap().iter().find(|o| o["type"] == "Observation").unwrap();
        assert_ne!(fresh["url"], obs["url"], "a new link on every poll");
        let r = app.raw(Method::GET, &path_of(pat["url"].as_str().unwrap()), &[], vec![]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);

        // Downloads by link are audited under the requester, marked as such.
        let records = app.audit_records().await;
        let by_link: Vec<_> = records
            .iter()
            .filter(|r| r.query.as_deref().is_some_and(|q| q.contains(&job) && q.contains("via=signed-link")))
            .collect();
        assert!(
            by_link
                .iter()
                .any(|r| r.status == 200 && r.client.as_deref() == Some("diary") && r.actor.kind != "anonymous"),
            "{by_link:?}"
        );
        assert!(by_link.iter().any(|r| r.status == 401), "refused links are recorded: {by_link:?}");

        // A revoked grant: the signed link fails, the job is stopped and its files withdrawn.
        assert_eq!(app.revoke("diary", &refresh_of(&t)).await.status, StatusCode::OK);
        let r = app.raw(Method::GET, &path_of(fresh["url"].as_str().unwrap()), &[], vec![]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{backend:?}: {}", r.text);
        assert!(!app.state.export.job_dir(&job).exists(), "files withdrawn");
        assert!(bulk_ops(&app.audit_records().await, &job).iter().any(|o| o == "op=stopped"));
    }
}

#[tokio::test]
async fn without_signed_links_a_link_signature_opens_nothing() {
    let app = TestApp::new(Backend::Sqlite).await.unwrap();
    crate::export::patient(&app, "pz").await;
    observations(&app, "pz", 2).await;
    portico::export::spawn(&app.state);
    let r = app
        .raw(
            Method::GET,
            "/fhir/Patient/pz/$export",
            &[("authorization", &format!("Bearer {}", crate::common::TOKEN)), ASYNC],
            vec![],
        )
        .await;
    let status_url = path_of(r.header("content-location").unwrap());
    let done = poll(&app, crate::common::TOKEN, &status_url).await;
    assert_eq!(done.json["requiresAccessToken"], true);
    let url = path_of(done.json["output"][0]["url"].as_str().unwrap());
    assert!(!url.contains('?'));
    // A link signed with the server's own key is still refused while the setting is off.
    let job = status_url.rsplit('/').next().unwrap();
    let name = url.rsplit('/').next().unwrap();
    let q = portico::export::links::query(app.state.audit.key(), job, name, now_ms() + 60_000);
    let r = app.raw(Method::GET, &format!("{url}?{q}"), &[], vec![]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
}
