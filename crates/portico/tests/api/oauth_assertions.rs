//! SMART Backend Services: `client_credentials` with `private_key_jwt` client assertions,
//! signed with real RS384 and ES384 keys generated here. Checklist: "JWTs: alg:none, HS/RS
//! confusion, unknown kid, jku/x5u, expired, not-yet-valid, flipped bytes → 401, no hint
//! which check failed".

use crate::common::oauth::*;
use crate::common::*;
use crate::oauth::with_patient;
use axum::http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

const SERVICE_SCOPES: &str = "system/*.rs";

#[tokio::test]
async fn backend_services_get_system_tokens_with_rs384_and_es384_assertions() {
    let (rsa, ec) = (rsa_key("rsa-1"), ec_key("ec-1"));
    for app in TestApp::all().await {
        with_patient(&app, "pa").await;
        app.backend_client("svc-rs", jwks(&[&rsa]), SERVICE_SCOPES).await;
        app.backend_client("svc-ec", jwks(&[&ec]), SERVICE_SCOPES).await;
        for (client, key) in [("svc-rs", &rsa), ("svc-ec", &ec)] {
            let r = app.client_credentials(&key.sign(&assertion_claims(client)), "system/Patient.rs").await;
            assert_eq!(r.status, StatusCode::OK, "{:?} {client}: {}", app.backend, r.text);
            assert_eq!(r.json["scope"], "system/Patient.rs");
            assert_eq!(r.json["token_type"], "Bearer");
            assert!(r.json.get("refresh_token").is_none(), "no refresh token for a backend service: {}", r.json);
            assert!(r.json.get("id_token").is_none());
            assert_eq!(r.header("cache-control"), Some("no-store"));
            let token = r.json["access_token"].as_str().unwrap();
            let read = app.get_as(token, "/fhir/Patient/pa").await;
            assert_eq!(read.status, StatusCode::OK, "{client}: {}", read.text);
        }
        // Scopes beyond the registration are not granted, and a patient/ scope never is.
        let r = app.client_credentials(&rsa.sign(&assertion_claims("svc-rs")), "patient/*.rs").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.json["error"], "invalid_scope");
    }
}

/// The claims with some changed.
fn claims_with(client: &str, changes: &[(&str, Value)]) -> Value {
    let mut c = assertion_claims(client);
    for (k, v) in changes {
        c[*k] = v.clone();
    }
    c
}

/// A token with one byte of its signature changed.
fn flip_signature(token: &str) -> String {
    let (msg, sig) = token.rsplit_once('.').unwrap();
    let mut bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    format!("{msg}.{}", base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes))
}

#[tokio::test]
async fn forged_stale_misdirected_and_replayed_assertions_get_one_identical_401() {
    let (rsa, ec) = (rsa_key("rsa-1"), ec_key("ec-1"));
    // A key the client never registered, under the registered kid.
    let stranger = rsa_key("rsa-1");
    let b64 = |v: &Value| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string());
    for app in TestApp::all().await {
        with_patient(&app, "pa").await;
        app.backend_client("svc-rs", jwks(&[&rsa]), SERVICE_SCOPES).await;
        app.backend_client("svc-ec", jwks(&[&ec]), SERVICE_SCOPES).await;
        let now = now_secs();
        let c = || assertion_claims("svc-rs");
        let hs_secret = |secret: &[u8]| EncodingKey::from_secret(secret).unwrap();
        let unsigned = |alg: &str| format!("{}.{}.", b64(&json!({"alg": alg, "kid": "rsa-1"})), b64(&c()));
        let mut cases: Vec<(&str, String)> = vec![
            ("alg none", unsigned("none")),
            ("alg none with a signature", format!("{}AAAA", unsigned("none"))),
            (
                "HS384 keyed with the public key PEM (alg confusion)",
                compact_jws(
                    &json!({"alg": "HS384", "kid": "rsa-1", "typ": "JWT"}),
                    &c(),
                    &hs_secret(rsa.public_pem.as_bytes()),
                    Algorithm::HS384,
                ),
            ),
            (
                "HS384 keyed with the JWK text (alg confusion)",
                compact_jws(
                    &json!({"alg": "HS384", "kid": "rsa-1"}),
                    &c(),
                    &hs_secret(rsa.jwk.to_string().as_bytes()),
                    Algorithm::HS384,
                ),
            ),
            (
                "RS256 with the registered key",
                compact_jws(
                    &json!({"alg": "RS256", "kid": "rsa-1"}),
                    &c(),
                    rsa.rs256.as_ref().unwrap(),
                    Algorithm::RS256,
                ),
            ),
            ("an unknown kid", compact_jws(&json!({"alg": "RS384", "kid": "rsa-2"}), &c(), &rsa.enc, Algorithm::RS384)),
            ("no kid", compact_jws(&json!({"alg": "RS384"}), &c(), &rsa.enc, Algorithm::RS384)),
            (
                "a jku header",
                compact_jws(
                    &json!({"alg": "RS384", "kid": "rsa-1", "jku": "https://attacker.example/jwks.json"}),
                    &c(),
                    &rsa.enc,
                    Algorithm::RS384,
                ),
            ),
            (
                "an x5u header",
                compact_jws(
                    &json!({"alg": "RS384", "kid": "rsa-1", "x5u": "https://attacker.example/cert.pem"}),
                    &c(),
                    &rsa.enc,
                    Algorithm::RS384,
                ),
            ),
            (
                "an embedded jwk header",
                compact_jws(
                    &json!({"alg": "RS384", "kid": "rsa-1", "jwk": stranger.jwk}),
                    &c(),
                    &stranger.enc,
                    Algorithm::RS384,
                ),
            ),
            ("a key not in the registered set", stranger.sign(&c())),
            ("the other client's key", ec.sign(&c())),
            ("expired", rsa.sign(&claims_with("svc-rs", &[("exp", json!(now - 5)), ("iat", json!(now - 65))]))),
            ("not yet valid (nbf)", rsa.sign(&claims_with("svc-rs", &[("nbf", json!(now + 600))]))),
            ("issued in the future (iat)", rsa.sign(&claims_with("svc-rs", &[("iat", json!(now + 600))]))),
            ("exp too far ahead", rsa.sign(&claims_with("svc-rs", &[("exp", json!(now + 3600))]))),
            ("no exp", {
                let mut cl = c();
                cl.as_object_mut().unwrap().remove("exp");
                rsa.sign(&cl)
            }),
            ("a wrong aud", rsa.sign(&claims_with("svc-rs", &[("aud", json!("https://other.example/oauth2/token"))]))),
            ("the FHIR base as aud", rsa.sign(&claims_with("svc-rs", &[("aud", json!(FHIR_BASE))]))),
            ("a sub that is not the client", rsa.sign(&claims_with("svc-rs", &[("sub", json!("svc-ec"))]))),
            ("no jti", {
                let mut cl = c();
                cl.as_object_mut().unwrap().remove("jti");
                rsa.sign(&cl)
            }),
            ("a flipped signature byte", flip_signature(&rsa.sign(&c()))),
            ("a flipped ES384 signature byte", flip_signature(&ec.sign(&assertion_claims("svc-ec")))),
            ("garbage", "not.a.jwt".to_string()),
        ];
        // A replay: the first use succeeds, the second is one more refusal.
        let once = rsa.sign(&c());
        let first = app.client_credentials(&once, "system/Patient.rs").await;
        assert_eq!(first.status, StatusCode::OK, "{:?}: {}", app.backend, first.text);
        cases.push(("a replayed jti", once));

        let mut answers = Vec::new();
        for (what, assertion) in &cases {
            let r = app.client_credentials(assertion, "system/Patient.rs").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?} {what}: {}", app.backend, r.text);
            assert_eq!(r.json["error"], "invalid_client", "{what}: {}", r.text);
            assert!(r.json.get("access_token").is_none());
            answers.push((what, r.text));
        }
        for (what, body) in &answers[1..] {
            assert_eq!(body, &answers[0].1, "{what} is answered differently from {}", answers[0].0);
        }
        // The client itself is fine: a good assertion still works after all that.
        let ok = app.client_credentials(&rsa.sign(&c()), "system/Patient.rs").await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    }
}

#[tokio::test]
async fn a_public_client_cannot_use_client_credentials() {
    for app in TestApp::all().await {
        app.public_client("spa", "system/*.rs patient/*.rs launch/patient").await;
        let r =
            app.token(&[("grant_type", "client_credentials"), ("client_id", "spa"), ("scope", "system/*.rs")]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}: {}", app.backend, r.text);
        assert_eq!(r.json["error"], "unauthorized_client", "{}", r.text);
        assert!(r.json.get("access_token").is_none());
        // Pretending to be confidential does not help.
        let r = app
            .token(&[
                ("grant_type", "client_credentials"),
                ("client_id", "spa"),
                ("client_secret", "guess"),
                ("scope", "system/*.rs"),
            ])
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert_eq!(r.json["error"], "invalid_client");
    }
}
