//! RFC 7591 dynamic client registration (`POST /oauth2/register`), off unless
//! `auth.dynamic_registration` is set. Only public clients (PKCE) may register themselves;
//! their scopes are capped to patient-facing ones.

use super::OAuthError;
use crate::identity::AuthError;
use crate::identity::clients::{ClientAuth, NewClient};
use crate::server::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portico_policy::ScopeSet;
use serde::Deserialize;
use serde_json::json;

/// The most a self-registered client may ask for.
const SELF_REGISTERED_SCOPES: &str =
    "openid fhirUser launch launch/patient offline_access online_access patient/*.rs patient/*.read";

#[derive(Deserialize)]
struct Metadata {
    client_name: Option<String>,
    redirect_uris: Vec<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

pub async fn post_register(State(state): State<AppState>, body: Bytes) -> Result<Response, OAuthError> {
    if !state.config.auth.dynamic_registration {
        return Ok((StatusCode::NOT_FOUND, Json(json!({"error": "invalid_request", "error_description": "Dynamic client registration is not enabled on this server."}))).into_response());
    }
    if body.len() > 16 * 1024 {
        return Err(AuthError::InvalidRequest("The registration request is too large.".into()).into());
    }
    let m: Metadata = serde_json::from_slice(&body)
        .map_err(|e| AuthError::InvalidRequest(format!("invalid_client_metadata: {e}")))?;
    if m.token_endpoint_auth_method.as_deref().is_some_and(|t| t != "none") {
        return Err(AuthError::InvalidRequest(
            "Only public clients (token_endpoint_auth_method none) may register themselves.".into(),
        )
        .into());
    }
    let cap = ScopeSet::parse(SELF_REGISTERED_SCOPES).unwrap_or_default();
    let asked = ScopeSet::parse(m.scope.as_deref().unwrap_or(SELF_REGISTERED_SCOPES))
        .map_err(|e| AuthError::InvalidScope(e.0))?;
    let scopes = asked.restrict_to(&cap).to_scope_string();
    let (row, _) = state
        .identity
        .register_client(NewClient {
            client_id: None,
            name: m.client_name.unwrap_or_else(|| "Unnamed app".into()),
            redirect_uris: m.redirect_uris,
            scopes,
            auth: ClientAuth::Public,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "client_id": row.client_id,
            "client_name": row.name,
            "redirect_uris": row.redirect_uris,
            "scope": row.scopes,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_id_issued_at": row.created_ms / 1000,
        })),
    )
        .into_response())
}
