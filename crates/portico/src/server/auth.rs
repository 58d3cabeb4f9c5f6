//! The gateway: who is asking. Every FHIR and portal request is authenticated here, and the
//! result is the `RequestContext` the gate receives — principal, patient acted for, client,
//! scopes, step-up state, device.
//!
//! Credentials, in order: the operator's admin token; an OAuth access token (opaque, looked
//! up by its SHA-256 together with its grant, user and device, so revocation bites on the
//! next request in every process); a portal session cookie (unsafe methods also need the
//! session's CSRF token in `X-CSRF-Token`).

use super::AppState;
use super::error::ApiError;
use super::session;
use crate::identity::now_ms;
use crate::identity::principal::{
    apply_grant, apply_session, load_patient_facts, principal_of_grant, principal_of_user,
};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use portico_identity::secret;
use portico_policy::{Principal, RequestContext};
use portico_store::identity::TokenAuth;

/// The authenticated request context. Extracting it fails with 401 when no valid
/// credential is presented.
pub struct Ctx(pub RequestContext);

/// The bearer token of a request, if it carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

/// The live grant behind an access token (what the microbenchmark measures).
pub async fn lookup_token(state: &AppState, token: &str) -> Result<Option<TokenAuth>, ApiError> {
    // Our tokens are 43 base64url characters; anything else cannot be one.
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    state.identity.store.access_lookup(&secret::digest(token), now_ms()).await.map_err(ApiError::from)
}

/// The request's audit scope. The audit layer made it; without it (a handler called outside
/// the router) a fresh one still collects every decision.
pub fn request_scope(parts: &Parts) -> portico_audit::Scope {
    parts
        .extensions
        .get::<portico_audit::Scope>()
        .cloned()
        .unwrap_or_else(|| portico_audit::Scope::new(&uuid::Uuid::new_v4().to_string()))
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let scope = request_scope(parts);
        if let Some(token) = bearer(&parts.headers) {
            let admin = state.config.admin_token.as_bytes();
            if !admin.is_empty() && secret::ct_eq(token.as_bytes(), admin) {
                return Ok(Ctx(RequestContext::with_scope(Principal::Operator, scope)));
            }
            let Some(auth) = lookup_token(state, token).await? else {
                return Err(ApiError::invalid_token());
            };
            state.limits.check_client(&auth.grant.client_id)?;
            let principal = principal_of_grant(&auth.grant, auth.user.as_ref());
            let mut ctx = RequestContext::with_scope(principal, scope);
            apply_grant(&mut ctx, &auth.grant, auth.user.as_ref());
            crate::consent::break_glass::apply(state, &mut ctx).await?;
            return with_patient_facts(state, ctx, auth.user.as_ref()).await;
        }
        if let Some(s) = session::current(state, &parts.headers).await {
            let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
            let presented = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
            if !safe && !session::csrf_ok(&s.row, presented) {
                return Err(ApiError::forbidden("This request needs the session's CSRF token in X-CSRF-Token."));
            }
            let mut ctx = RequestContext::with_scope(principal_of_user(&s.user), scope);
            apply_session(&mut ctx, &s.user, &s.row.device_id, s.row.acting_for.as_deref(), s.row.stepup_ms);
            crate::consent::break_glass::apply(state, &mut ctx).await?;
            return with_patient_facts(state, ctx, Some(&s.user)).await;
        }
        Err(ApiError::unauthorized(
            "Authorization: Bearer <token> is required (an access token from /oauth2/token, or the operator's admin token).",
        ))
    }
}

/// The one place a request's patient facts are loaded (consents, care relationships; see
/// `identity::principal::load_patient_facts`).
async fn with_patient_facts(
    state: &AppState,
    mut ctx: RequestContext,
    user: Option<&portico_store::identity::UserRow>,
) -> Result<Ctx, ApiError> {
    load_patient_facts(state.store.as_ref(), &mut ctx, user).await?;
    Ok(Ctx(ctx))
}
