//! `/api/admin/...`: the operator's administration API (admin bearer token only): OAuth
//! clients and users. Every change is audited.

use super::AppState;
use super::auth::Ctx;
use super::error::ApiError;
use super::oauth::audit::record;
use crate::identity::AuthError;
use crate::identity::clients::{ClientAuth, NewClient};
use crate::identity::users::NewUser;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use portico_audit::{Actor, Interaction};
use portico_policy::Principal;
use portico_store::identity::PatientLink;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/clients", get(list_clients).post(add_client))
        .route("/clients/{id}", delete(remove_client))
        .route("/users", get(list_users).post(add_user))
        .route("/users/{username}/disable", post(disable_user))
        .route("/users/{username}/enable", post(enable_user))
}

fn operator(ctx: &portico_policy::RequestContext) -> Result<(), ApiError> {
    match ctx.principal {
        Principal::Operator if ctx.scopes.is_none() => Ok(()),
        _ => Err(ApiError::forbidden("Administration needs the operator's admin token.")),
    }
}

fn from_auth(e: AuthError) -> ApiError {
    match e {
        AuthError::InvalidRequest(m) | AuthError::InvalidScope(m) => ApiError::bad_request(m),
        AuthError::Store(s) => s.into(),
        _ => ApiError::internal(),
    }
}

fn body<T: for<'de> Deserialize<'de>>(b: &Bytes) -> Result<T, ApiError> {
    if b.len() > 256 * 1024 {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", "The request body is too large."));
    }
    serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("The JSON body is not valid: {e}")))
}

fn admin_event(ctx: &portico_policy::RequestContext) {
    record(&ctx.scope, Interaction::SecuritySettings, Some(Actor::new("operator", "operator")), None, &[], None);
}

async fn list_clients(State(state): State<AppState>, Ctx(ctx): Ctx) -> Result<Json<Value>, ApiError> {
    operator(&ctx)?;
    let clients = state.identity.store.clients_list().await?;
    let list: Vec<Value> = clients
        .into_iter()
        .map(|c| {
            json!({"client_id": c.client_id, "name": c.name, "token_endpoint_auth_method": c.auth_method,
                "redirect_uris": c.redirect_uris, "scope": c.scopes, "jwks_uri": c.jwks_url, "disabled": c.disabled})
        })
        .collect();
    Ok(Json(json!({"clients": list})))
}

/// Field names follow RFC 7591 client metadata.
#[derive(Deserialize)]
struct ClientReq {
    client_id: Option<String>,
    client_name: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    scope: Option<String>,
    /// `none`, `client_secret_basic` or `private_key_jwt`.
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    jwks: Option<Value>,
    #[serde(default)]
    jwks_uri: Option<String>,
}

async fn add_client(State(state): State<AppState>, Ctx(ctx): Ctx, b: Bytes) -> Result<Response, ApiError> {
    operator(&ctx)?;
    let req: ClientReq = body(&b)?;
    let auth = match (req.token_endpoint_auth_method.as_deref().unwrap_or("none"), req.jwks, req.jwks_uri) {
        ("none", None, None) => ClientAuth::Public,
        ("client_secret_basic" | "client_secret_post", None, None) => ClientAuth::Secret,
        ("private_key_jwt", Some(set), None) => ClientAuth::Jwks(set.to_string()),
        ("private_key_jwt", None, Some(url)) => ClientAuth::JwksUrl(url),
        _ => {
            return Err(ApiError::bad_request(
                "token_endpoint_auth_method is none, client_secret_basic, or private_key_jwt with jwks or jwks_uri",
            ));
        }
    };
    let scopes =
        req.scope.unwrap_or_else(|| "openid fhirUser launch launch/patient offline_access patient/*.rs".into());
    let (row, secret) = state
        .identity
        .register_client(NewClient {
            client_id: req.client_id,
            name: req.client_name,
            redirect_uris: req.redirect_uris,
            scopes,
            auth,
        })
        .await
        .map_err(from_auth)?;
    admin_event(&ctx);
    let mut v = json!({"client_id": row.client_id, "client_name": row.name, "redirect_uris": row.redirect_uris,
        "scope": row.scopes, "token_endpoint_auth_method": row.auth_method});
    if let Some(s) = secret {
        v["client_secret"] = json!(s);
    }
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn remove_client(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    operator(&ctx)?;
    if !state.identity.store.client_remove(&id, crate::identity::now_ms()).await? {
        return Err(ApiError::not_found("No such client."));
    }
    admin_event(&ctx);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_users(State(state): State<AppState>, Ctx(ctx): Ctx) -> Result<Json<Value>, ApiError> {
    operator(&ctx)?;
    let users = state.identity.store.users_list().await?;
    let list: Vec<Value> = users
        .into_iter()
        .map(|u| {
            json!({"id": u.id, "username": u.username, "role": u.role, "name": u.display_name,
                "fhirUser": u.fhir_user, "patients": u.links, "disabled": u.disabled, "totpEnrolled": u.totp_secret.is_some()})
        })
        .collect();
    Ok(Json(json!({"users": list})))
}

#[derive(Deserialize)]
struct UserReq {
    username: String,
    password: String,
    role: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "fhirUser", default)]
    fhir_user: Option<String>,
    #[serde(default)]
    patients: Vec<PatientLink>,
}

async fn add_user(State(state): State<AppState>, Ctx(ctx): Ctx, b: Bytes) -> Result<Response, ApiError> {
    operator(&ctx)?;
    let req: UserReq = body(&b)?;
    let user = state
        .identity
        .create_user(NewUser {
            display_name: req.name.unwrap_or_else(|| req.username.clone()),
            username: req.username,
            password: req.password,
            role: req.role,
            fhir_user: req.fhir_user,
            links: req.patients,
            totp_secret: None,
        })
        .await
        .map_err(from_auth)?;
    admin_event(&ctx);
    Ok((StatusCode::CREATED, Json(json!({"id": user.id, "username": user.username, "role": user.role})))
        .into_response())
}

async fn set_disabled(
    state: &AppState,
    ctx: &portico_policy::RequestContext,
    username: &str,
    disabled: bool,
) -> Result<Response, ApiError> {
    operator(ctx)?;
    let Some(u) = state.identity.store.user_by_username(&username.to_ascii_lowercase()).await? else {
        return Err(ApiError::not_found("No such user."));
    };
    state.identity.store.user_set_disabled(&u.id, disabled, crate::identity::now_ms()).await?;
    admin_event(ctx);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn disable_user(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(&state, &ctx, &username, true).await
}

async fn enable_user(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(&state, &ctx, &username, false).await
}
