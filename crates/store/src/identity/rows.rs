//! What the identity modules share: the write-transaction wrapper, column lists and the
//! decoding of rows into the agreed row types.

use super::PatientLink;
use crate::error::StoreError;

/// Run `$body` (which uses the open transaction `$tx` and yields
/// `Result<T, StoreError>`) in one write transaction on whichever pool the store holds —
/// SQLite `BEGIN IMMEDIATE`, so it never has to upgrade a read snapshot; PostgreSQL READ
/// COMMITTED, where the conditional `UPDATE … RETURNING`s make the races safe — and run it
/// again when it fails transiently ([`crate::error::retry_transient`]). Everything the body
/// captures must be `Copy` (references, numbers).
macro_rules! in_tx {
    ($store:expr, $tx:ident => $body:expr) => {{
        let store: &$crate::backend::SqlStore = $store;
        $crate::error::retry_transient(move || async move {
            match &store.db {
                $crate::backend::Db::Sqlite(pool) => {
                    let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    let out = async { $body }.await;
                    match out {
                        Ok(v) => $tx.commit().await.map(|_| v).map_err($crate::error::StoreError::from),
                        Err(e) => Err(e),
                    }
                }
                $crate::backend::Db::Pg(pool) => {
                    let mut $tx = pool.begin().await?;
                    let out = async { $body }.await;
                    match out {
                        Ok(v) => $tx.commit().await.map(|_| v).map_err($crate::error::StoreError::from),
                        Err(e) => Err(e),
                    }
                }
            }
        })
        .await
    }};
}
pub(super) use in_tx;

/// Columns of `users`, in the order [`user_of`] reads (any order works: by name).
macro_rules! user_cols {
    () => {
        "id, username, password_hash, role, display_name, fhir_user, links, totp_secret, disabled, failed_logins, locked_until_ms, created_ms"
    };
}
pub(super) use user_cols;

/// Columns of `grants` as [`grant_of`] reads them.
macro_rules! grant_cols {
    () => {
        "id, user_id, client_id, device_id, scope, patient, stepup_ms, auth_time_ms, created_ms, revoked_ms, revoked_reason"
    };
}
pub(super) use grant_cols;

/// A `UserRow` from a row whose user columns carry the prefix `$p` (a literal).
macro_rules! user_of {
    ($row:expr, $p:literal) => {{
        let row = $row;
        $crate::identity::UserRow {
            id: row.try_get(concat!($p, "id"))?,
            username: row.try_get(concat!($p, "username"))?,
            password_hash: row.try_get(concat!($p, "password_hash"))?,
            role: row.try_get(concat!($p, "role"))?,
            display_name: row.try_get(concat!($p, "display_name"))?,
            fhir_user: row.try_get(concat!($p, "fhir_user"))?,
            links: $crate::identity::rows::links_from(&row.try_get::<String, _>(concat!($p, "links"))?)?,
            totp_secret: row.try_get(concat!($p, "totp_secret"))?,
            disabled: row.try_get::<i64, _>(concat!($p, "disabled"))? != 0,
            failed_logins: row.try_get(concat!($p, "failed_logins"))?,
            locked_until_ms: row.try_get(concat!($p, "locked_until_ms"))?,
            created_ms: row.try_get(concat!($p, "created_ms"))?,
        }
    }};
}
pub(super) use user_of;

/// A `GrantRow` from a row whose grant columns carry the prefix `$p` (a literal).
macro_rules! grant_of {
    ($row:expr, $p:literal) => {{
        let row = $row;
        $crate::identity::GrantRow {
            id: row.try_get(concat!($p, "id"))?,
            user_id: row.try_get(concat!($p, "user_id"))?,
            client_id: row.try_get(concat!($p, "client_id"))?,
            device_id: row.try_get(concat!($p, "device_id"))?,
            scope: row.try_get(concat!($p, "scope"))?,
            patient: row.try_get(concat!($p, "patient"))?,
            stepup_ms: row.try_get(concat!($p, "stepup_ms"))?,
            auth_time_ms: row.try_get(concat!($p, "auth_time_ms"))?,
            created_ms: row.try_get(concat!($p, "created_ms"))?,
            revoked_ms: row.try_get(concat!($p, "revoked_ms"))?,
            revoked_reason: row.try_get(concat!($p, "revoked_reason"))?,
        }
    }};
}
pub(super) use grant_of;

/// Why grants are revoked (`grants.revoked_reason`), besides the caller's own reasons.
pub(super) mod reason {
    pub const CODE_REPLAY: &str = "code-replay";
    pub const REFRESH_REUSE: &str = "refresh-reuse";
    pub const USER_DISABLED: &str = "user-disabled";
    pub const PASSWORD_CHANGED: &str = "password-changed";
    pub const DEVICE_REVOKED: &str = "device-revoked";
    pub const CLIENT_REMOVED: &str = "client-removed";
}

/// JSON text of a list column.
pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub(crate) fn links_from(s: &str) -> Result<Vec<PatientLink>, sqlx::Error> {
    from_json(s)
}

pub(crate) fn uris_from(s: &str) -> Result<Vec<String>, sqlx::Error> {
    from_json(s)
}
