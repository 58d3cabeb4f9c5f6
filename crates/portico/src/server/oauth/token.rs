//! `/oauth2/token`, `/oauth2/revoke` (RFC 7009), `/oauth2/introspect` (RFC 7662) and
//! `/oauth2/userinfo`.

use super::audit::{record, user_actor};
use super::{OAuthError, parse_form, single};
use crate::identity::tokens::credentials_from;
use crate::identity::{AuthError, now_ms};
use crate::server::AppState;
use crate::server::fhir::urls;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use portico_audit::{Actor, Interaction, Scope};
use portico_identity::secret;
use portico_policy::scopes::Scope as SmartScope;
use serde_json::json;

/// `Authorization: Basic` client credentials (RFC 6749 §2.3.1: form-urlencoded inside).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    let dec =
        |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8().ok().map(|c| c.into_owned());
    Some((dec(id)?, dec(secret)?))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::trim)
}

fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// `POST /oauth2/token`.
pub async fn post_token(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = single(&parse_form(&body, &[])?);
    let origin = urls::origin(&headers);
    let issuer = format!("{origin}/fhir");
    let token_endpoint = format!("{origin}/oauth2/token");
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let interaction = if grant_type == "refresh_token" { Interaction::TokenRefresh } else { Interaction::TokenIssue };
    let mut creds = credentials_from(&form, basic_credentials(&headers));
    if creds.client_id.is_none() && creds.assertion.is_none() && grant_type == "refresh_token" {
        // SMART's refresh request need not name a public client: the refresh token does.
        // Only a public client is found this way; a confidential one must still authenticate.
        creds.client_id =
            state.identity.public_client_of_refresh(form.get("refresh_token").map(String::as_str)).await?;
    }
    let client = match state.identity.authenticate_client(&creds, &token_endpoint).await {
        Ok(c) => c,
        Err(e) => {
            record(
                &scope,
                interaction,
                None,
                creds.client_id.as_deref(),
                &[],
                Some(("client-auth-failed", "The app could not prove who it is.")),
            );
            return Err(e.into());
        }
    };
    let need = |k: &str| form.get(k).cloned().ok_or_else(|| AuthError::InvalidRequest(format!("{k} is required")));
    let result = match grant_type.as_str() {
        "authorization_code" => {
            // A missing verifier is a failed PKCE check like a wrong one (invalid_grant, the
            // code spent), not a malformed request the code survives.
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let (code, redirect) = (need("code")?, need("redirect_uri")?);
            state.identity.exchange_code(&client, &code, &redirect, &verifier, &issuer).await
        }
        "refresh_token" => {
            let token = need("refresh_token")?;
            state.identity.refresh(&client, &token, form.get("scope").map(String::as_str), &issuer).await
        }
        "client_credentials" => {
            let scope_param = need("scope")?;
            state.identity.client_credentials(&client, &scope_param, &issuer).await
        }
        "" => Err(AuthError::InvalidRequest("grant_type is required".into())),
        _ => Err(AuthError::UnsupportedGrantType),
    };
    match result {
        Ok((resp, grant)) => {
            let actor = match &grant.user_id {
                Some(id) => match state.identity.store.user_by_id(id).await {
                    Ok(Some(u)) => user_actor(&u),
                    _ => Actor::new("user", id),
                },
                None => Actor::new("system", &grant.client_id),
            };
            let patients: Vec<String> = grant.patient.iter().cloned().collect();
            record(&scope, interaction, Some(actor), Some(&client.client_id), &patients, None);
            Ok(no_store(Json(resp).into_response()))
        }
        Err(e) => {
            let reason = e.to_string();
            record(
                &scope,
                interaction,
                Some(Actor::new("client", &client.client_id)),
                Some(&client.client_id),
                &[],
                Some((e.code(), &reason)),
            );
            Err(e.into())
        }
    }
}

/// `POST /oauth2/revoke`: always 200 for a well-formed request by an authenticated client.
pub async fn post_revoke(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = single(&parse_form(&body, &[])?);
    let token_endpoint = format!("{}/oauth2/token", urls::origin(&headers));
    let creds = credentials_from(&form, basic_credentials(&headers));
    let client = match state.identity.authenticate_client(&creds, &token_endpoint).await {
        Ok(c) => c,
        Err(e) => {
            let who = creds.client_id.as_deref();
            record(
                &scope,
                Interaction::Revoke,
                None,
                who,
                &[],
                Some(("client-auth-failed", "The app could not prove who it is.")),
            );
            return Err(e.into());
        }
    };
    let token = form.get("token").ok_or_else(|| AuthError::InvalidRequest("token is required".into()))?;
    state.identity.revoke_token(&client, token).await?;
    record(
        &scope,
        Interaction::Revoke,
        Some(Actor::new("client", &client.client_id)),
        Some(&client.client_id),
        &[],
        None,
    );
    Ok(no_store(StatusCode::OK.into_response()))
}

/// `POST /oauth2/introspect`: for the operator (admin bearer token) or an authenticated
/// client (its own tokens only).
pub async fn post_introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = single(&parse_form(&body, &[])?);
    let token = form.get("token").ok_or_else(|| AuthError::InvalidRequest("token is required".into()))?;
    let admin = state.config.admin_token.as_bytes();
    let is_operator = !admin.is_empty() && bearer(&headers).is_some_and(|b| secret::ct_eq(b.as_bytes(), admin));
    let caller = if is_operator {
        None
    } else {
        let token_endpoint = format!("{}/oauth2/token", urls::origin(&headers));
        let creds = credentials_from(&form, basic_credentials(&headers));
        Some(state.identity.authenticate_client(&creds, &token_endpoint).await?)
    };
    let v = state.identity.introspect(caller.as_ref(), token).await?;
    Ok(no_store(Json(v).into_response()))
}

/// `GET|POST /oauth2/userinfo`: the signed-in user behind an `openid` access token.
pub async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, OAuthError> {
    let invalid = || AuthError::InvalidToken("The access token is missing, invalid or expired.".into());
    let token = bearer(&headers).ok_or_else(invalid)?;
    let auth = state.identity.store.access_lookup(&secret::digest(token), now_ms()).await?.ok_or_else(invalid)?;
    let scopes = portico_policy::ScopeSet::parse(&auth.grant.scope).unwrap_or_default();
    let user = auth.user.filter(|_| scopes.has(&SmartScope::OpenId)).ok_or_else(invalid)?;
    let origin = urls::origin(&headers);
    let mut v = json!({"sub": user.id, "name": user.display_name, "preferred_username": user.username});
    if let (true, Some(f)) = (scopes.has(&SmartScope::FhirUser), &user.fhir_user) {
        v["fhirUser"] = json!(format!("{origin}/fhir/{f}"));
    }
    Ok(no_store(Json(v).into_response()))
}
