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
    /// Too many failures: locked until this time (Unix ms). `user` is None for a username
    /// that does not exist — it locks the same way, so lockout reveals nothing.
    Locked { user: Option<String>, until_ms: i64 },
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
                return Err(self.unknown_user_failed(&username, now));
            }
            Err(_) => return Err(LoginFailure::Unavailable),
        };
        if user.locked_until_ms > now {
            return Err(LoginFailure::Locked { user: Some(user.id), until_ms: user.locked_until_ms });
        }
        if user.locked_until_ms > 0 {
            // The lockout is over: the count starts again, so one more mistake does not
            // lock the account straight away.
            self.store.user_login_succeeded(&user.id).await.map_err(|_| LoginFailure::Unavailable)?;
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
            Some(u) if u.locked_until_ms > now => {
                Err(LoginFailure::Locked { user: Some(u.id), until_ms: u.locked_until_ms })
            }
            _ => Err(LoginFailure::BadCredentials { user: Some(user.id) }),
        }
    }

    /// Count a failure for a username that does not exist, exactly as for one that does
    /// (per process, bounded), so lockout cannot be used to find out which usernames exist.
    fn unknown_user_failed(&self, username: &str, now: i64) -> LoginFailure {
        let mut m = self.unknown_failures.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 10_000 {
            m.retain(|_, (_, until)| *until > now);
            if m.len() > 10_000 {
                m.clear();
            }
        }
        let entry = m.entry(username.to_string()).or_insert((0, 0));
        if entry.1 > now {
            return LoginFailure::Locked { user: None, until_ms: entry.1 };
        }
        if entry.1 > 0 {
            *entry = (0, 0);
        }
        entry.0 += 1;
        if entry.0 >= self.cfg.lockout_threshold {
            entry.1 = now + self.cfg.lockout_secs * 1000;
            return LoginFailure::Locked { user: None, until_ms: entry.1 };
        }
        LoginFailure::BadCredentials { user: None }
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
