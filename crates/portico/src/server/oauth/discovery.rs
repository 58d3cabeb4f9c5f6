//! Discovery: `.well-known/smart-configuration` (SMART App Launch 2.x), the OpenID
//! configuration, and the JWK Set that verifies id_tokens. Served at the root and under the
//! FHIR base (SMART clients look under `[base]/.well-known/`).

use crate::server::AppState;
use crate::server::fhir::urls;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// The SMART capabilities portico implements.
pub const CAPABILITIES: &[&str] = &[
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-standalone-patient",
    "context-banner",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
];

/// The endpoints under an origin (also used by the CapabilityStatement's oauth-uris).
pub fn endpoints(origin: &str) -> [(&'static str, String); 6] {
    [
        ("authorize", format!("{origin}/oauth2/authorize")),
        ("token", format!("{origin}/oauth2/token")),
        ("revoke", format!("{origin}/oauth2/revoke")),
        ("introspect", format!("{origin}/oauth2/introspect")),
        ("userinfo", format!("{origin}/oauth2/userinfo")),
        ("jwks", format!("{origin}/oauth2/jwks")),
    ]
}

fn document(state: &AppState, headers: &HeaderMap) -> Value {
    let origin = urls::origin(headers);
    let [authorize, token, revoke, introspect, userinfo, jwks] = endpoints(&origin).map(|(_, u)| u);
    let mut doc = json!({
        "issuer": format!("{origin}/fhir"),
        "jwks_uri": jwks,
        "authorization_endpoint": authorize,
        "token_endpoint": token,
        "revocation_endpoint": revoke,
        "introspection_endpoint": introspect,
        "userinfo_endpoint": userinfo,
        "management_endpoint": format!("{origin}/api/portal/apps"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "subject_types_supported": ["public"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient", "offline_access", "online_access",
            "patient/*.cruds", "patient/*.rs", "user/*.rs", "system/*.rs", "patient/*.read", "user/*.read", "system/*.read"],
        "capabilities": CAPABILITIES,
    });
    if state.config.auth.dynamic_registration {
        doc["registration_endpoint"] = json!(format!("{origin}/oauth2/register"));
    }
    doc
}

pub async fn smart_configuration(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    Json(document(&state, &headers))
}

pub async fn openid_configuration(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    Json(document(&state, &headers))
}

pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.identity.keys.jwks())
}
