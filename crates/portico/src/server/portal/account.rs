//! The signed-in user's account: who they are and whom they act for, their devices and
//! connected apps (each revocable), step-up verification, password and TOTP.
//!
//! These endpoints take the portal session only (never an app's token: an app must not
//! manage the account that authorised it); unsafe methods need `X-CSRF-Token`.

use crate::identity::now_ms;
use crate::identity::principal::{apply_session, principal_of_user};
use crate::server::AppState;
use crate::server::error::ApiError;
use crate::server::oauth::audit::{record, user_actor};
use crate::server::session::{self, Session};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use portico_audit::{Interaction, Scope};
use portico_policy::{RequestContext, Sensitive};
use serde::Deserialize;
use serde_json::{Value, json};

/// A portal session with its request context (for step-up decisions at the gate).
pub struct Account {
    pub session: Session,
    pub ctx: RequestContext,
    pub scope: Scope,
}

impl FromRequestParts<AppState> for Account {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let scope =
            parts.extensions.get::<Scope>().cloned().unwrap_or_else(|| Scope::new(&uuid::Uuid::new_v4().to_string()));
        let Some(s) = session::current(state, &parts.headers).await else {
            return Err(ApiError::unauthorized("Sign in to the portal first (POST /oauth2/login)."));
        };
        let safe = matches!(parts.method, Method::GET | Method::HEAD);
        let presented = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        if !safe && !session::csrf_ok(&s.row, presented) {
            return Err(ApiError::forbidden("This request needs the session's CSRF token in X-CSRF-Token."));
        }
        let mut ctx = RequestContext::with_scope(principal_of_user(&s.user), scope.clone());
        apply_session(&mut ctx, &s.user, &s.row.device_id, s.row.acting_for.as_deref(), s.row.stepup_ms);
        Ok(Account { session: s, ctx, scope })
    }
}

/// 403 telling the client how to step up (RFC 9470's `insufficient_user_authentication`).
pub fn step_up_required(reason: &str) -> ApiError {
    let mut e = ApiError::forbidden(format!(
        "{reason} Confirm a current code from your authenticator app with POST /api/portal/step-up {{\"code\": \"123456\"}}, then retry."
    ));
    e.challenge = Some(
        "Bearer realm=\"portico\", error=\"insufficient_user_authentication\", acr_values=\"urn:portico:acr:totp\""
            .into(),
    );
    e
}

/// Ask the gate whether the action's step-up is fresh.
fn require_step_up(state: &AppState, a: &Account, what: Sensitive) -> Result<(), ApiError> {
    state.gate.require_step_up(&a.ctx, what, state.identity.step_up_fresh_ms()).map_err(|r| match r.audit_failure {
        Some(_) => ApiError::unavailable(),
        None => step_up_required(&r.verdict.map(|v| v.reason).unwrap_or_default()),
    })
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    if body.len() > 16 * 1024 {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", "The request body is too large."));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("The JSON body is not valid: {e}")))
}

fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// `GET /api/portal/me`.
pub async fn get_me(State(state): State<AppState>, a: Account) -> Json<Value> {
    let u = &a.session.user;
    let fresh_until = a.session.row.stepup_ms.map(|t| t + state.identity.step_up_fresh_ms());
    Json(json!({
        "id": u.id,
        "username": u.username,
        "role": u.role,
        "name": u.display_name,
        "fhirUser": u.fhir_user,
        "patients": u.links,
        "actingFor": a.ctx.acting_for,
        "totpEnrolled": u.totp_secret.is_some(),
        "stepUp": {"fresh": fresh_until.is_some_and(|t| t > now_ms()), "until": fresh_until.map(iso)},
        "csrf": a.session.row.csrf,
        "device": a.session.row.device_id,
    }))
}

#[derive(Deserialize)]
pub struct ActingFor {
    patient: String,
}

/// `POST /api/portal/acting-for {"patient": "…"}`: a caregiver chooses whose record the
/// session shows (one patient at a time).
pub async fn post_acting_for(State(state): State<AppState>, a: Account, body: Bytes) -> Result<Response, ApiError> {
    let req: ActingFor = json_body(&body)?;
    if !a.session.user.links.iter().any(|l| l.patient == req.patient) {
        return Err(ApiError::not_found("No such patient."));
    }
    state.identity.store.session_set_acting_for(&a.session.row.id_hash, Some(&req.patient)).await?;
    Ok(Json(json!({"actingFor": req.patient})).into_response())
}

/// `GET /api/portal/devices`.
pub async fn get_devices(State(state): State<AppState>, a: Account) -> Result<Json<Value>, ApiError> {
    let devices = state.identity.store.devices_list(&a.session.user.id).await?;
    let list: Vec<Value> = devices
        .into_iter()
        .map(|d| {
            json!({
                "id": d.id,
                "app": d.client_id,
                "userAgent": d.user_agent,
                "firstSeen": iso(d.first_seen_ms),
                "lastSeen": iso(d.last_seen_ms),
                "revoked": d.revoked_ms.map(iso),
                "wipe": d.wipe,
                "current": d.id == a.session.row.device_id,
            })
        })
        .collect();
    Ok(Json(json!({"devices": list})))
}

/// `DELETE /api/portal/devices/{id}`: its sessions and tokens end; it is marked for wipe.
pub async fn delete_device(
    State(state): State<AppState>,
    a: Account,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !state.identity.store.device_revoke(&a.session.user.id, &id, now_ms()).await? {
        return Err(ApiError::not_found("No such device."));
    }
    record(&a.scope, Interaction::Revoke, Some(user_actor(&a.session.user)), Some("portal"), &[], None);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/portal/apps`: connected apps (live grants).
pub async fn get_apps(State(state): State<AppState>, a: Account) -> Result<Json<Value>, ApiError> {
    let grants = state.identity.store.grants_for_user(&a.session.user.id).await?;
    let mut list = Vec::new();
    for g in grants {
        let name = match state.identity.store.client_get(&g.client_id).await? {
            Some(c) => c.name,
            None => g.client_id.clone(),
        };
        let scopes = portico_policy::ScopeSet::parse(&g.scope).unwrap_or_default();
        list.push(json!({
            "id": g.id,
            "app": g.client_id,
            "name": name,
            "scope": g.scope,
            "access": scopes.describe().into_iter().map(|(_, text)| text).collect::<Vec<_>>(),
            "patient": g.patient,
            "connected": iso(g.created_ms),
            "device": g.device_id,
        }));
    }
    Ok(Json(json!({"apps": list})))
}

/// `DELETE /api/portal/apps/{id}`: disconnect an app; its tokens stop working at once.
pub async fn delete_app(
    State(state): State<AppState>,
    a: Account,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let grant = state.identity.store.grant_get(&id).await?;
    let Some(grant) = grant.filter(|g| g.user_id.as_deref() == Some(a.session.user.id.as_str())) else {
        return Err(ApiError::not_found("No such app connection."));
    };
    state.identity.store.grant_revoke(&grant.id, "revoked-by-user", now_ms()).await?;
    let patients: Vec<String> = grant.patient.iter().cloned().collect();
    record(&a.scope, Interaction::Revoke, Some(user_actor(&a.session.user)), Some(&grant.client_id), &patients, None);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct Code {
    code: String,
}

/// `POST /api/portal/step-up {"code": "123456"}`: confirm a TOTP code; sensitive actions
/// are allowed for the configured window.
pub async fn post_step_up(State(state): State<AppState>, a: Account, body: Bytes) -> Result<Response, ApiError> {
    let req: Code = json_body(&body)?;
    let actor = Some(user_actor(&a.session.user));
    if a.session.user.totp_secret.is_none() {
        return Err(ApiError::bad_request("Set up an authenticator app first (POST /api/portal/totp)."));
    }
    if !state.identity.check_totp(&a.session.user, &req.code) {
        record(
            &a.scope,
            Interaction::StepUp,
            actor,
            Some("portal"),
            &[],
            Some(("step-up-failed", "The verification code was wrong.")),
        );
        return Err(ApiError::forbidden("That code is not right. Use the current code from your authenticator app."));
    }
    let now = now_ms();
    state.identity.store.session_set_stepup(&a.session.row.id_hash, now).await?;
    record(&a.scope, Interaction::StepUp, actor, Some("portal"), &[], None);
    let until = now + state.identity.step_up_fresh_ms();
    Ok(Json(json!({"stepUp": {"fresh": true, "until": iso(until)}})).into_response())
}

#[derive(Deserialize)]
pub struct PasswordChange {
    current: String,
    new: String,
}

/// `POST /api/portal/password {"current": "…", "new": "…"}`: needs a fresh step-up when the
/// user has TOTP; every other session and every app grant ends.
pub async fn post_password(State(state): State<AppState>, a: Account, body: Bytes) -> Result<Response, ApiError> {
    let req: PasswordChange = json_body(&body)?;
    if a.session.user.totp_secret.is_some() {
        require_step_up(&state, &a, Sensitive::SecuritySettings)?;
    }
    let actor = Some(user_actor(&a.session.user));
    match state.identity.change_password(&a.session.user, req.current, req.new, Some(&a.session.row.id_hash)).await {
        Ok(()) => {
            record(&a.scope, Interaction::SecuritySettings, actor, Some("portal"), &[], None);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => {
            let msg = e.to_string();
            record(
                &a.scope,
                Interaction::SecuritySettings,
                actor,
                Some("portal"),
                &[],
                Some(("password-change-refused", &msg)),
            );
            Err(match e {
                crate::identity::AuthError::AccessDenied(m) => ApiError::forbidden(m),
                crate::identity::AuthError::InvalidRequest(m) => ApiError::bad_request(m),
                _ => ApiError::unavailable(),
            })
        }
    }
}

#[derive(Deserialize)]
pub struct TotpEnrol {
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// `POST /api/portal/totp`: `{}` proposes a new secret (not yet active); `{"secret": s,
/// "code": c}` activates it once a code from it checks out. Replacing an enrolled secret
/// needs a fresh step-up.
pub async fn post_totp(State(state): State<AppState>, a: Account, body: Bytes) -> Result<Response, ApiError> {
    let req: TotpEnrol = json_body(&body)?;
    if a.session.user.totp_secret.is_some() {
        require_step_up(&state, &a, Sensitive::SecuritySettings)?;
    }
    match (req.secret, req.code) {
        (None, _) => {
            let secret = portico_identity::totp::new_secret();
            let uri = portico_identity::totp::provisioning_uri(&secret, &a.session.user.username, "portico");
            Ok(Json(json!({"secret": secret, "otpauthUri": uri})).into_response())
        }
        (Some(secret), Some(code)) => {
            let secs = u64::try_from(now_ms() / 1000).unwrap_or(0);
            let actor = Some(user_actor(&a.session.user));
            if !portico_identity::totp::verify(&secret, code.trim(), secs) {
                record(
                    &a.scope,
                    Interaction::SecuritySettings,
                    actor,
                    Some("portal"),
                    &[],
                    Some(("totp-enrol-failed", "The code did not match the new secret.")),
                );
                return Err(ApiError::bad_request("That code does not match the new secret."));
            }
            state.identity.store.user_set_totp(&a.session.user.id, Some(&secret)).await?;
            record(&a.scope, Interaction::SecuritySettings, actor, Some("portal"), &[], None);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Some(_), None) => Err(ApiError::bad_request("Give the code your authenticator app shows for the new secret.")),
    }
}

#[derive(Deserialize)]
pub struct LaunchReq {
    patient: String,
}

/// `POST /api/portal/launch {"patient": "…"}`: an EHR-launch context for an app (the
/// portal acting as the EHR); pass it to the app as `launch`.
pub async fn post_launch(State(state): State<AppState>, a: Account, body: Bytes) -> Result<Response, ApiError> {
    let req: LaunchReq = json_body(&body)?;
    if !a.session.user.links.iter().any(|l| l.patient == req.patient) {
        return Err(ApiError::not_found("No such patient."));
    }
    let launch = state.identity.make_launch(&req.patient).map_err(|_| ApiError::internal())?;
    Ok(Json(json!({"launch": launch})).into_response())
}
