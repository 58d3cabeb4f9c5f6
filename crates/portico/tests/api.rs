//! Integration tests: the real router over real stores (SQLite always, PostgreSQL when
//! `PORTICO_TEST_DATABASE_URL` is set — and required under `CI=true`). One test binary.

mod common;

#[path = "api/audit.rs"]
mod audit;
#[path = "api/bundles.rs"]
mod bundles;
#[path = "api/capability.rs"]
mod capability;
#[path = "api/concurrency.rs"]
mod concurrency;
#[path = "api/consent_access.rs"]
mod consent_access;
#[path = "api/consent_lifecycle.rs"]
mod consent_lifecycle;
#[path = "api/consent_shares.rs"]
mod consent_shares;
#[path = "api/corpus.rs"]
mod corpus;
#[path = "api/crud.rs"]
mod crud;
#[path = "api/durability.rs"]
mod durability;
#[path = "api/errors.rs"]
mod errors;
#[path = "api/export.rs"]
mod export;
#[path = "api/export_links.rs"]
mod export_links;
#[path = "api/export_resume.rs"]
mod export_resume;
#[path = "api/export_storage.rs"]
mod export_storage;
#[path = "api/export_workers.rs"]
mod export_workers;
#[path = "api/history.rs"]
mod history;
#[path = "api/import.rs"]
mod import;
#[path = "api/oauth.rs"]
mod oauth;
#[path = "api/oauth_assertions.rs"]
mod oauth_assertions;
#[path = "api/oauth_audit.rs"]
mod oauth_audit;
#[path = "api/oauth_code.rs"]
mod oauth_code;
#[path = "api/oauth_refresh.rs"]
mod oauth_refresh;
#[path = "api/oauth_revocation.rs"]
mod oauth_revocation;
#[path = "api/oauth_session.rs"]
mod oauth_session;
#[path = "api/oauth_throttle.rs"]
mod oauth_throttle;
#[path = "api/oauth_tokens.rs"]
mod oauth_tokens;
#[path = "api/relabel.rs"]
mod relabel;
#[path = "api/search.rs"]
mod search;

mod api_smoke {
    use super::common::*;
    use axum::http::StatusCode;
    use serde_json::json;

    #[tokio::test]
    async fn create_read_search_on_every_backend() {
        for app in TestApp::all().await {
            let id = app.create(json!({"resourceType": "Patient", "name": [{"family": "Okafor"}]})).await;
            let r = app.get(&format!("/fhir/Patient/{id}")).await;
            assert_eq!(r.status, StatusCode::OK, "{:?}: {}", app.backend, r.text);
            assert_eq!(r.header("etag"), Some("W/\"1\""));
            let s = app.get("/fhir/Patient?name=oka").await;
            assert_eq!(s.ids(), vec![id], "{:?}", app.backend);
        }
    }
}
