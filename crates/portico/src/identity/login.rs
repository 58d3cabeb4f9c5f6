//! Password sign-in with throttling and temporary lockout, and TOTP step-up.

use super::{Identity, now_ms};
use crate::identity::users::normalise_username;
use portico_store::identity::UserRow;

/// Why a sign-in failed. The page shows the same words for `BadCredentials` whatever the
/// cause (unknown user, wrong password, disabled account), so it reveals nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFailure {
    /// Wrong username or password; `user` is set when the username exists (for the audit
    /// record), never shown.
    BadCredentials { user: Option<String> },
    /// Too many failures: locked until this time (Unix ms).
    Locked { user: String, until_ms: i64 },
    /// Storage failed.
    Unavailable,
}

impl Identity {
    /// Check a username and password. Unknown users cost the same time as known ones.
    pub async fn login(&self, username: &str, password: &str) -> Result<UserRow, LoginFailure> {
        let now = now_ms();
        let Some(username) = normalise_username(username) else {
            self.burn(password).await;
            return Err(LoginFailure::BadCredentials { user: None });
        };
        let user = match self.store.user_by_username(&username).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                self.burn(password).await;
                return Err(LoginFailure::BadCredentials { user: None });
            }
            Err(_) => return Err(LoginFailure::Unavailable),
        };
        if user.locked_until_ms > now {
            return Err(LoginFailure::Locked { user: user.id, until_ms: user.locked_until_ms });
        }
        let ok = self.verify_password(user.password_hash.clone(), password.to_string()).await;
        if ok && !user.disabled {
            self.store.user_login_succeeded(&user.id).await.map_err(|_| LoginFailure::Unavailable)?;
            return Ok(user);
        }
        let after = self
            .store
            .user_login_failed(&user.id, now, self.cfg.lockout_threshold, self.cfg.lockout_secs * 1000)
            .await
            .map_err(|_| LoginFailure::Unavailable)?;
        match after {
            Some(u) if u.locked_until_ms > now => Err(LoginFailure::Locked { user: u.id, until_ms: u.locked_until_ms }),
            _ => Err(LoginFailure::BadCredentials { user: Some(user.id) }),
        }
    }

    async fn burn(&self, password: &str) {
        let hasher = self.hasher.clone();
        let password = password.to_string();
        let _ = tokio::task::spawn_blocking(move || hasher.dummy_verify(&password)).await;
    }

    /// Check a TOTP code against the user's enrolled secret. A code is accepted once: the
    /// same code for the same user is refused for as long as it could still verify (the
    /// ±1 step window, 90 s). The memory of used codes is per server process.
    pub fn check_totp(&self, user: &UserRow, code: &str) -> bool {
        let now = now_ms();
        let secs = u64::try_from(now / 1000).unwrap_or(0);
        let code = code.trim();
        if !user.totp_secret.as_deref().is_some_and(|s| portico_identity::totp::verify(s, code, secs)) {
            return false;
        }
        let mut used = self.used_totp.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, expires| *expires > now);
        used.insert(format!("{}:{code}", user.id), now + 90_000).is_none()
    }

    /// The step-up freshness window in milliseconds.
    pub fn step_up_fresh_ms(&self) -> i64 {
        self.cfg.step_up_fresh_secs * 1000
    }
}
