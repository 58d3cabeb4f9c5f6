//! Portal web sessions: the cookie, its lookup, CSRF tokens.
//!
//! The cookie holds a random id; the database keeps its SHA-256 with the user, device,
//! CSRF token, step-up time and the patient a caregiver acts for. Under TLS the cookie is
//! `__Host-portico-session; Secure; HttpOnly; SameSite=Lax; Path=/` (the `__Host-` prefix
//! requires `Secure`, so on plain HTTP — local development — it is `portico-session`
//! without it). Idle and absolute timeouts are enforced by the database lookup.

use super::AppState;
use crate::config::Config;
use crate::identity::{PORTAL_CLIENT, now_ms};
use axum::http::{HeaderMap, HeaderValue, header};
use portico_identity::secret;
use portico_store::identity::{SessionRow, UserRow};

/// A live session and its user.
#[derive(Debug, Clone)]
pub struct Session {
    pub row: SessionRow,
    pub user: UserRow,
}

fn secure(cfg: &Config) -> bool {
    cfg.tls_enabled() || cfg.auth.public_url.starts_with("https://")
}

/// The session cookie's name for this deployment.
pub fn session_cookie(cfg: &Config) -> &'static str {
    if secure(cfg) { "__Host-portico-session" } else { "portico-session" }
}

/// The pre-login CSRF cookie's name (double-submit on the login form).
pub fn login_cookie(cfg: &Config) -> &'static str {
    if secure(cfg) { "__Host-portico-login" } else { "portico-login" }
}

/// A `Set-Cookie` value; `max_age` None clears it.
pub fn set_cookie(cfg: &Config, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure(cfg) {
        c.push_str("; Secure");
    }
    match max_age {
        Some(s) => c.push_str(&format!("; Max-Age={s}")),
        None => c.push_str("; Max-Age=0"),
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("portico-invalid=; Max-Age=0"))
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The request's live session, if it has one.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let value = cookie(headers, session_cookie(&state.config))?;
    let a = &state.config.auth;
    let row = state
        .identity
        .store
        .session_get(&secret::digest(value), now_ms(), a.session_idle_secs * 1000, a.session_absolute_secs * 1000)
        .await
        .ok()??;
    let user = state.identity.store.user_by_id(&row.user_id).await.ok()??;
    (!user.disabled).then_some(Session { row, user })
}

/// Start a session for a user who just signed in: always a new id (no fixation), on the
/// device this browser is. Returns the cookie value and the row.
pub async fn start(
    state: &AppState,
    user: &UserRow,
    user_agent: &str,
) -> Result<(String, SessionRow), portico_store::StoreError> {
    let now = now_ms();
    let device = state.identity.store.device_touch(&user.id, PORTAL_CLIENT, user_agent, now).await?;
    let value = secret::random_token();
    let row = SessionRow {
        id_hash: secret::digest(&value),
        user_id: user.id.clone(),
        device_id: device,
        csrf: secret::random_token(),
        created_ms: now,
        last_seen_ms: now,
        stepup_ms: None,
        acting_for: None,
        revoked: false,
    };
    state.identity.store.session_create(&row).await?;
    Ok((value, row))
}

/// Whether a presented CSRF token is the session's.
pub fn csrf_ok(session: &SessionRow, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| secret::ct_eq(p.as_bytes(), session.csrf.as_bytes()))
}

/// The `User-Agent`, trimmed for storage.
pub fn user_agent(headers: &HeaderMap) -> String {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; portico-session=abc; portico-session2=x"));
        assert_eq!(cookie(&h, "portico-session"), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn secure_deployments_use_host_prefixed_secure_cookies() {
        let mut cfg = Config::default();
        assert_eq!(session_cookie(&cfg), "portico-session");
        cfg.auth.public_url = "https://portal.example".into();
        assert_eq!(session_cookie(&cfg), "__Host-portico-session");
        let v = set_cookie(&cfg, session_cookie(&cfg), "v", Some(60));
        let v = v.to_str().unwrap();
        assert!(v.contains("Secure") && v.contains("HttpOnly") && v.contains("SameSite=Lax") && v.contains("Path=/"));
    }
}
