//! The authorization-code flow's pages: `/oauth2/authorize` checks the request, the user
//! signs in (`/oauth2/login`), sees in plain language what the app asks for, may untick
//! scopes and choose the patient, and approves or denies (`/oauth2/approve`).
//! Form fields are documented in `docs/AUTH.md`.

use super::audit::{record, user_actor};
use super::pages::{self, Approve, Login, Message};
use super::{parse_form, single};
use crate::identity::authorize::{AuthorizeError, redirect_with};
use crate::identity::login::LoginFailure;
use crate::identity::{AuthError, Identity};
use crate::server::AppState;
use crate::server::fhir::urls;
use crate::server::session::{self, Session};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portico_audit::{Interaction, Scope};
use portico_identity::secret;
use portico_policy::ScopeSet;
use std::collections::HashMap;

fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn error_redirect(redirect_uri: &str, state: Option<&str>, e: &AuthError) -> Response {
    let description = e.to_string();
    see_other(&redirect_with(
        redirect_uri,
        &[("error", Some(e.code())), ("error_description", Some(description.as_str())), ("state", state)],
    ))
}

/// The login page with a fresh double-submit CSRF cookie.
fn login_page(
    state: &AppState,
    status: StatusCode,
    req: &str,
    app_name: Option<String>,
    error: Option<String>,
) -> Response {
    let csrf = secret::random_token();
    let mut resp = pages::html(status, &Login { csrf: csrf.clone(), req: req.to_string(), app_name, error });
    let cfg = &state.config;
    resp.headers_mut()
        .append(header::SET_COOKIE, session::set_cookie(cfg, session::login_cookie(cfg), &csrf, Some(3600)));
    resp
}

/// `GET /oauth2/authorize`.
pub async fn get_authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Some((k, _)) = q.iter().enumerate().find(|(i, (k, _))| q[..*i].iter().any(|(p, _)| p == k)).map(|(_, kv)| kv)
    {
        return pages::error_page(StatusCode::BAD_REQUEST, format!("The parameter '{k}' was given more than once."));
    }
    let q: HashMap<String, String> = q.into_iter().collect();
    let fhir_base = urls::base_url(&headers);
    match state.identity.start_authorization(&q, &fhir_base).await {
        Err(AuthorizeError::Page(m)) => pages::error_page(StatusCode::BAD_REQUEST, m),
        Err(AuthorizeError::Redirect { redirect_uri, state: st, error }) => {
            error_redirect(&redirect_uri, st.as_deref(), &error)
        }
        Ok((req, client)) => match session::current(&state, &headers).await {
            Some(_) => see_other(&format!("/oauth2/approve?req={}", req.id)),
            None => login_page(&state, StatusCode::OK, &req.id, Some(client.name), None),
        },
    }
}

/// `GET /oauth2/login`: the portal's own sign-in.
pub async fn get_login(State(state): State<AppState>) -> Response {
    login_page(&state, StatusCode::OK, "", None, None)
}

/// `POST /oauth2/login`: fields `csrf`, `req` (may be empty), `username`, `password`.
pub async fn post_login(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(form) = parse_form(&body, &[]).map(|p| single(&p)) else {
        return pages::error_page(StatusCode::BAD_REQUEST, "The sign-in form was malformed.");
    };
    let cookie = session::cookie(&headers, session::login_cookie(&state.config));
    let csrf_ok = match (cookie, form.get("csrf")) {
        (Some(c), Some(f)) => secret::ct_eq(c.as_bytes(), f.as_bytes()),
        _ => false,
    };
    if !csrf_ok {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "This sign-in form has expired. Go back, reload the page and try again.",
        );
    }
    let req = form.get("req").cloned().unwrap_or_default();
    let username = form.get("username").map(String::as_str).unwrap_or("");
    let password = form.get("password").map(String::as_str).unwrap_or("");
    match state.identity.login(username, password).await {
        Ok(user) => {
            // The browser gives up the session it had (if any) for the new one: end it, so
            // no copy of the old cookie outlives the sign-in that replaced it.
            if let Some(old) = session::cookie(&headers, session::session_cookie(&state.config)) {
                let _ = state.identity.store.session_revoke(&secret::digest(old)).await;
            }
            let (value, _row) = match session::start(&state, &user, &session::user_agent(&headers)).await {
                Ok(s) => s,
                Err(_) => {
                    return pages::error_page(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The server is busy; try again shortly.",
                    );
                }
            };
            let patients: Vec<String> = user.links.iter().map(|l| l.patient.clone()).collect();
            record(
                &scope,
                Interaction::Login,
                Some(user_actor(&user)),
                Some(crate::identity::PORTAL_CLIENT),
                &patients,
                None,
            );
            let cfg = &state.config;
            let mut resp = if req.is_empty() {
                pages::html(
                    StatusCode::OK,
                    &Message {
                        title: "Signed in".into(),
                        message: format!("Welcome, {}.", user.display_name),
                        is_error: false,
                    },
                )
            } else {
                see_other(&format!("/oauth2/approve?req={}", urlencode(&req)))
            };
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                session::set_cookie(
                    cfg,
                    session::session_cookie(cfg),
                    &value,
                    Some(state.config.auth.session_absolute_secs),
                ),
            );
            h.append(header::SET_COOKIE, session::set_cookie(cfg, session::login_cookie(cfg), "", None));
            resp
        }
        Err(LoginFailure::BadCredentials { user }) => {
            let actor = user.map(|id| portico_audit::Actor::new("user", &id));
            record(
                &scope,
                Interaction::Login,
                actor,
                None,
                &[],
                Some(("login-failed", "The username or password was wrong.")),
            );
            login_page(
                &state,
                StatusCode::UNAUTHORIZED,
                &req,
                None,
                Some("The username or password is not right.".into()),
            )
        }
        Err(LoginFailure::Locked { user, until_ms }) => {
            record(
                &scope,
                Interaction::Login,
                user.map(|id| portico_audit::Actor::new("user", &id)),
                None,
                &[],
                Some(("login-locked", "Too many failed sign-ins: the account is temporarily locked.")),
            );
            let wait = ((until_ms - crate::identity::now_ms()) / 1000).max(1);
            let mut resp = login_page(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                &req,
                None,
                Some(format!("Too many failed attempts. Try again in {} minutes.", (wait + 59) / 60)),
            );
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait as u64));
            resp
        }
        Err(LoginFailure::Unavailable) => {
            pages::error_page(StatusCode::SERVICE_UNAVAILABLE, "The server is busy; try again shortly.")
        }
    }
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The approval page for a pending request.
async fn approval_page(state: &AppState, s: &Session, req_id: &str, error: Option<String>) -> Response {
    let now = crate::identity::now_ms();
    let Ok(Some(req)) = state.identity.store.auth_request_get(req_id, now).await else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "This authorization request has expired. Start again from the app.",
        );
    };
    let app_name = match state.identity.store.client_get(&req.client_id).await {
        Ok(Some(c)) => c.name,
        _ => return pages::error_page(StatusCode::BAD_REQUEST, "This app is no longer registered."),
    };
    let scopes = ScopeSet::parse(&req.scope).unwrap_or_default().describe();
    let patients = if req.launch_patient.is_some() { Vec::new() } else { Identity::patient_choices(&s.user) };
    pages::html(
        StatusCode::OK,
        &Approve {
            csrf: s.row.csrf.clone(),
            req: req.id,
            app_name,
            user_name: s.user.display_name.clone(),
            scopes,
            patients,
            error,
        },
    )
}

/// `GET /oauth2/approve?req=…`.
pub async fn get_approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let req = q.get("req").cloned().unwrap_or_default();
    match session::current(&state, &headers).await {
        Some(s) => approval_page(&state, &s, &req, None).await,
        None => login_page(&state, StatusCode::OK, &req, None, None),
    }
}

/// `POST /oauth2/approve`: fields `csrf`, `req`, `scope` (repeated, the scopes left ticked),
/// `patient` (when choosing), `decision` = `approve` | `deny`.
pub async fn post_approve(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(s) = session::current(&state, &headers).await else {
        return pages::error_page(StatusCode::UNAUTHORIZED, "Your session has ended. Start again from the app.");
    };
    let Ok(pairs) = parse_form(&body, &["scope"]) else {
        return pages::error_page(StatusCode::BAD_REQUEST, "The approval form was malformed.");
    };
    let form = single(&pairs);
    if !session::csrf_ok(&s.row, form.get("csrf").map(String::as_str)) {
        return pages::error_page(StatusCode::FORBIDDEN, "This form has expired. Start again from the app.");
    }
    let req_id = form.get("req").cloned().unwrap_or_default();
    let now = crate::identity::now_ms();
    let Ok(Some(req)) = state.identity.store.auth_request_get(&req_id, now).await else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "This authorization request has expired. Start again from the app.",
        );
    };
    let actor = Some(user_actor(&s.user));
    if form.get("decision").map(String::as_str) != Some("approve") {
        let _ = state.identity.store.auth_request_delete(&req.id).await;
        record(
            &scope,
            Interaction::Authorize,
            actor,
            Some(&req.client_id),
            &[],
            Some(("user-denied", "You did not allow the app.")),
        );
        let e = AuthError::AccessDenied("The user did not allow access.".into());
        return error_redirect(&req.redirect_uri, req.state.as_deref(), &e);
    }
    let kept: Vec<String> = pairs.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
    let chosen = form.get("patient").map(String::as_str);
    // The app's tokens get their own device record: this user, this app, this browser.
    let device = match state
        .identity
        .store
        .device_touch(&s.user.id, &req.client_id, &session::user_agent(&headers), now)
        .await
    {
        Ok(d) => d,
        Err(_) => return pages::error_page(StatusCode::SERVICE_UNAVAILABLE, "The server is busy; try again shortly."),
    };
    match state.identity.approve(&req, &s.user, &device, s.row.created_ms, s.row.stepup_ms, &kept, chosen).await {
        Ok(url) => {
            let patients: Vec<String> =
                chosen.map(str::to_string).into_iter().chain(req.launch_patient.clone()).collect();
            record(&scope, Interaction::Authorize, actor, Some(&req.client_id), &patients, None);
            see_other(&url)
        }
        Err(AuthError::InvalidRequest(m)) => approval_page(&state, &s, &req_id, Some(m)).await,
        Err(e @ (AuthError::AccessDenied(_) | AuthError::InvalidScope(_))) => {
            let _ = state.identity.store.auth_request_delete(&req.id).await;
            record(
                &scope,
                Interaction::Authorize,
                actor,
                Some(&req.client_id),
                &[],
                Some(("authorize-refused", &e.to_string())),
            );
            error_redirect(&req.redirect_uri, req.state.as_deref(), &AuthError::AccessDenied(e.to_string()))
        }
        Err(_) => pages::error_page(StatusCode::SERVICE_UNAVAILABLE, "The server is busy; try again shortly."),
    }
}

/// `POST /oauth2/logout`: field `csrf`. Ends the session; the old cookie is dead.
pub async fn post_logout(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = parse_form(&body, &[]).map(|p| single(&p)).unwrap_or_default();
    let Some(s) = session::current(&state, &headers).await else {
        return pages::html(
            StatusCode::OK,
            &Message { title: "Signed out".into(), message: "You are signed out.".into(), is_error: false },
        );
    };
    if !session::csrf_ok(&s.row, form.get("csrf").map(String::as_str)) {
        return pages::error_page(StatusCode::FORBIDDEN, "This form has expired. Reload the page and try again.");
    }
    let _ = state.identity.store.session_revoke(&s.row.id_hash).await;
    record(&scope, Interaction::Logout, Some(user_actor(&s.user)), Some(crate::identity::PORTAL_CLIENT), &[], None);
    let cfg = &state.config;
    let mut resp = pages::html(
        StatusCode::OK,
        &Message { title: "Signed out".into(), message: "You are signed out.".into(), is_error: false },
    );
    resp.headers_mut().append(header::SET_COOKIE, session::set_cookie(cfg, session::session_cookie(cfg), "", None));
    resp
}
