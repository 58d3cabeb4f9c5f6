//! The authorization server end to end through the router: a standalone launch with its
//! tokens on FHIR requests, and discovery (SMART configuration, the CapabilityStatement's
//! oauth-uris, the JWK Set that verifies a real id_token). The checklist's other token and
//! session items are in the `oauth_*` modules.

use crate::common::oauth::*;
use crate::common::*;
use axum::http::StatusCode;
use serde_json::{Value, json};

pub const APP_SCOPES: &str =
    "openid fhirUser launch/patient offline_access online_access patient/*.rs patient/Observation.rs";
/// What the tests' apps usually ask for.
pub const LAUNCH_SCOPES: &str = "launch/patient openid fhirUser offline_access patient/*.rs";

pub async fn with_patient(app: &TestApp, id: &str) {
    let r = app
        .put(&format!("/fhir/Patient/{id}"), json!({"resourceType": "Patient", "id": id, "name": [{"family": id}]}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
}

/// An app with a patient user "alice" (Patient/pa) and a public client "diary".
pub async fn alice_and_diary(app: &TestApp) {
    with_patient(app, "pa").await;
    app.user("alice", "patient", &["pa"]).await;
    app.public_client("diary", APP_SCOPES).await;
}

/// The access token of a token response.
pub fn access(t: &Value) -> String {
    t["access_token"].as_str().expect("access_token").to_string()
}

/// The refresh token of a token response.
pub fn refresh_of(t: &Value) -> String {
    t["refresh_token"].as_str().expect("refresh_token").to_string()
}

/// Whether an access token still reads the patient's record.
pub async fn works(app: &TestApp, token: &str) -> bool {
    let r = app.get_as(token, "/fhir/Patient/pa").await;
    match r.status {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => false,
        s => panic!("unexpected {s}: {}", r.text),
    }
}

#[tokio::test]
async fn standalone_launch_reads_only_the_patients_own_data() {
    for app in TestApp::all().await {
        with_patient(&app, "pa").await;
        with_patient(&app, "pb").await;
        app.user("alice", "patient", &["pa"]).await;
        app.public_client("diary", APP_SCOPES).await;
        let t = app.launch("diary", LAUNCH_SCOPES, "alice").await;
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

#[tokio::test]
async fn smart_configuration_is_served_at_the_root_and_under_the_fhir_base() {
    for app in TestApp::all().await {
        for path in ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"] {
            let r = app.raw(axum::http::Method::GET, path, &[], Vec::new()).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
            let d = &r.json;
            assert_eq!(d["issuer"], FHIR_BASE, "{path}");
            assert_eq!(d["authorization_endpoint"], "http://localhost/oauth2/authorize", "{path}");
            assert_eq!(d["token_endpoint"], TOKEN_ENDPOINT, "{path}");
            assert_eq!(d["revocation_endpoint"], "http://localhost/oauth2/revoke", "{path}");
            assert_eq!(d["introspection_endpoint"], "http://localhost/oauth2/introspect", "{path}");
            assert_eq!(d["jwks_uri"], "http://localhost/oauth2/jwks", "{path}");
            assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]), "{path}");
            let auth_methods = d["token_endpoint_auth_methods_supported"].as_array().expect("auth methods");
            assert!(auth_methods.contains(&json!("private_key_jwt")), "{path}: {d}");
            assert_eq!(d["token_endpoint_auth_signing_alg_values_supported"], json!(["RS384", "ES384"]), "{path}");
            let caps = d["capabilities"].as_array().expect("capabilities");
            for c in ["launch-standalone", "client-public", "client-confidential-asymmetric", "sso-openid-connect"] {
                assert!(caps.contains(&json!(c)), "{path}: {c} missing from {d}");
            }
        }
    }
}

#[tokio::test]
async fn capability_statement_carries_the_oauth_uris_extension() {
    for app in TestApp::all().await {
        let r = app.raw(axum::http::Method::GET, "/fhir/metadata", &[], Vec::new()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let security = &r.json["rest"][0]["security"];
        let ext = security["extension"]
            .as_array()
            .and_then(|e| {
                e.iter().find(|x| x["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris")
            })
            .unwrap_or_else(|| panic!("no oauth-uris extension in {security}"));
        let uri = |name: &str| {
            ext["extension"]
                .as_array()
                .and_then(|e| e.iter().find(|x| x["url"] == name))
                .and_then(|x| x["valueUri"].as_str())
                .map(str::to_string)
        };
        assert_eq!(uri("authorize").as_deref(), Some("http://localhost/oauth2/authorize"), "{ext}");
        assert_eq!(uri("token").as_deref(), Some(TOKEN_ENDPOINT), "{ext}");
        assert_eq!(uri("revoke").as_deref(), Some("http://localhost/oauth2/revoke"), "{ext}");
    }
}

#[tokio::test]
async fn the_published_jwks_verifies_a_real_id_token() {
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    for app in TestApp::all().await {
        let alice = {
            with_patient(&app, "pa").await;
            app.public_client("diary", APP_SCOPES).await;
            app.user("alice", "patient", &["pa"]).await
        };
        let (verifier, challenge) = pkce();
        let mut b = Browser::default();
        let url = app.authorize_url_with(
            "diary",
            "openid fhirUser launch/patient patient/*.rs",
            &challenge,
            "st-1",
            &[("nonce", Some("n-0S6_WzA2Mj"))],
        );
        let page = app.approval_page(&mut b, &url, "alice").await;
        let code = app.approve(&mut b, &page, None).await;
        let t = app.exchange("diary", &code, &verifier).await;
        assert_eq!(t.status, StatusCode::OK, "{}", t.text);
        let id_token = t.json["id_token"].as_str().expect("id_token");

        let set = app.raw(axum::http::Method::GET, "/oauth2/jwks", &[], Vec::new()).await;
        assert_eq!(set.status, StatusCode::OK);
        let set: JwkSet = serde_json::from_str(&set.text).expect("a JWK Set");
        let header = jsonwebtoken::decode_header(id_token).expect("header");
        assert_eq!(header.alg, Algorithm::RS256);
        let jwk = set.find(header.kid.as_deref().expect("kid")).expect("the id_token's kid is published");
        let key = DecodingKey::from_jwk(jwk).expect("key");
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["diary"]);
        v.set_issuer(&[FHIR_BASE]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(id_token, &key, &v).expect("the id_token verifies").claims;
        assert_eq!(claims["sub"], alice.id.as_str());
        assert_eq!(claims["fhirUser"], "http://localhost/fhir/Patient/pa");
        assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
        assert_eq!(t.json["fhirUser"], "http://localhost/fhir/Patient/pa");

        // Another client cannot take it for its own (aud), and a changed byte breaks it.
        let mut other = Validation::new(Algorithm::RS256);
        other.set_audience(&["someone-else"]);
        assert!(jsonwebtoken::decode::<Value>(id_token, &key, &other).is_err());
        assert!(jsonwebtoken::decode::<Value>(&flipped(id_token), &key, &v).is_err());
    }
}
