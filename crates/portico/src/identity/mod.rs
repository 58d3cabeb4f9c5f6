//! Who is asking: users, passwords and step-up, OAuth clients, grants and tokens — the
//! rules of portico's authorization server over [`IdentityStore`]. HTTP lives elsewhere:
//! `server::oauth` (the endpoints and pages) and `server::auth` (the gateway that turns a
//! credential into the gate's `RequestContext`).

pub mod authorize;
pub mod clients;
pub mod error;
pub mod login;
pub mod principal;
pub mod tokens;
pub mod users;

pub use error::AuthError;

use crate::config::AuthConfig;
use portico_identity::jose::SigningKey;
use portico_identity::password::Hasher;
use portico_store::IdentityStore;
use std::sync::Arc;

/// The client id under which the portal's own pages and the operator CLI act.
pub const PORTAL_CLIENT: &str = "portal";
pub const CLI_CLIENT: &str = "portico-cli";

/// The identity service shared by the server, the CLI and tests.
#[derive(Clone)]
pub struct Identity {
    pub store: Arc<dyn IdentityStore>,
    pub hasher: Hasher,
    /// Signs id_tokens.
    pub keys: Arc<SigningKey>,
    pub cfg: Arc<AuthConfig>,
    /// TOTP codes already used (`user:code` → when the memory may be dropped), so a code
    /// cannot be replayed within its validity window.
    used_totp: Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
    /// Failed sign-ins for usernames that do not exist: (count, locked until).
    unknown_failures: Arc<std::sync::Mutex<std::collections::HashMap<String, (i64, i64)>>>,
}

impl Identity {
    pub fn new(store: Arc<dyn IdentityStore>, keys: Arc<SigningKey>, cfg: &AuthConfig) -> Identity {
        Identity {
            store,
            hasher: Hasher::new(cfg.argon2_memory_kib, cfg.argon2_iterations),
            keys,
            cfg: Arc::new(cfg.clone()),
            used_totp: Arc::default(),
            unknown_failures: Arc::default(),
        }
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    portico_policy::now_ms()
}
