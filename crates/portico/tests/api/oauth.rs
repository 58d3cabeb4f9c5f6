//! The authorization server end to end through the router: standalone launch, tokens on
//! FHIR requests, and the token/session items of the security checklist.

use crate::common::*;
use axum::http::StatusCode;
use serde_json::json;

const APP_SCOPES: &str = "openid fhirUser launch/patient offline_access patient/*.rs patient/Observation.rs";

async fn with_patient(app: &TestApp, id: &str) {
    let r = app
        .put(&format!("/fhir/Patient/{id}"), json!({"resourceType": "Patient", "id": id, "name": [{"family": id}]}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
}

#[tokio::test]
async fn standalone_launch_reads_only_the_patients_own_data() {
    for app in TestApp::all().await {
        with_patient(&app, "pa").await;
        with_patient(&app, "pb").await;
        app.user("alice", "patient", &["pa"]).await;
        app.public_client("diary", APP_SCOPES).await;
        let t = app.launch("diary", "launch/patient openid fhirUser offline_access patient/*.rs", "alice").await;
        assert_eq!(t["patient"], "pa");
        assert_eq!(t["token_type"], "Bearer");
        assert!(t["refresh_token"].is_string() && t["id_token"].is_string(), "{t}");
        let access = t["access_token"].as_str().unwrap();
        let own = app.get_as(access, "/fhir/Patient/pa").await;
        assert_eq!(own.status, StatusCode::OK, "{}", own.text);
        let other = app.get_as(access, "/fhir/Patient/pb").await;
        assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.text);
        let bad = app.get_as("not-a-token", "/fhir/Patient/pa").await;
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
        assert!(bad.header("www-authenticate").unwrap_or("").contains("invalid_token"));
    }
}
