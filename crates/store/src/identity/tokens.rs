//! Access and refresh tokens. Neither carries any state of its own beyond expiry (and a
//! refresh token's use): whether it still works is decided at every use by joining its
//! grant, the grant's client, user and device.

use super::oauth::REVOKE_GRANT;
use super::rows::{grant_cols, grant_of, in_tx, reason, user_of};
use super::{GrantRow, Rotated, TokenAuth};
use crate::backend::{SqlStore, with_pool};
use crate::error::StoreError;
use sqlx::Row;

/// The conditions under which grant `g` (joined to client `c`, user `u`, device `d`) may be
/// used: not revoked, not pending its code's redemption, client registered and enabled, user
/// (if any) present and enabled, device (if any) present and not revoked.
macro_rules! live_grant {
    () => {
        "g.revoked_ms IS NULL AND g.pending = 0 AND c.disabled = 0 \
         AND (g.user_id IS NULL OR (u.id IS NOT NULL AND u.disabled = 0)) \
         AND (g.device_id IS NULL OR (d.id IS NOT NULL AND d.revoked_ms IS NULL))"
    };
}

/// The joins from grant `g` to its client, user and device.
macro_rules! grant_joins {
    () => {
        " JOIN oauth_clients c ON c.client_id = g.client_id \
         LEFT JOIN users u ON u.id = g.user_id LEFT JOIN devices d ON d.id = g.device_id"
    };
}

impl SqlStore {
    pub(super) async fn id_access_put(
        &self,
        token_hash: &str,
        grant_id: &str,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query("INSERT INTO access_tokens (token_hash, grant_id, expires_ms) VALUES ($1, $2, $3)")
                .bind(token_hash.to_string())
                .bind(grant_id.to_string())
                .bind(expires_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// One query: token → grant → client → user → device, refusing anything expired,
    /// revoked, pending, disabled or removed.
    pub(super) async fn id_access_lookup(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<TokenAuth>, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query(concat!(
                "SELECT a.expires_ms AS a_expires_ms, \
                 g.id AS g_id, g.user_id AS g_user_id, g.client_id AS g_client_id, g.device_id AS g_device_id, \
                 g.scope AS g_scope, g.patient AS g_patient, g.stepup_ms AS g_stepup_ms, g.auth_time_ms AS g_auth_time_ms, \
                 g.created_ms AS g_created_ms, g.revoked_ms AS g_revoked_ms, g.revoked_reason AS g_revoked_reason, \
                 u.id AS u_id, u.username AS u_username, u.password_hash AS u_password_hash, u.role AS u_role, \
                 u.display_name AS u_display_name, u.fhir_user AS u_fhir_user, u.links AS u_links, \
                 u.totp_secret AS u_totp_secret, u.disabled AS u_disabled, u.failed_logins AS u_failed_logins, \
                 u.locked_until_ms AS u_locked_until_ms, u.created_ms AS u_created_ms \
                 FROM access_tokens a JOIN grants g ON g.id = a.grant_id",
                grant_joins!(),
                " WHERE a.token_hash = $1 AND a.expires_ms > $2 AND ",
                live_grant!()
            ))
            .bind(token_hash.to_string())
            .bind(now_ms)
            .fetch_optional(pool)
            .await?;
            let Some(r) = row else { return Ok(None) };
            let user = match r.try_get::<Option<String>, _>("u_id")? {
                Some(_) => Some(user_of!(&r, "u_")),
                None => None,
            };
            Ok(Some(TokenAuth { grant: grant_of!(&r, "g_"), user, expires_ms: r.try_get("a_expires_ms")? }))
        })
    }

    pub(super) async fn id_access_delete(&self, token_hash: &str) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM access_tokens WHERE token_hash = $1").bind(token_hash.to_string()).execute(pool).await?;
        });
        Ok(())
    }

    pub(super) async fn id_refresh_put(
        &self,
        token_hash: &str,
        grant_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, grant_id, created_ms, expires_ms, used_ms) VALUES ($1, $2, $3, $4, NULL)",
            )
            .bind(token_hash.to_string())
            .bind(grant_id.to_string())
            .bind(now_ms)
            .bind(expires_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Use `old_hash` and store `new_hash` in its family, atomically: the conditional
    /// `UPDATE … RETURNING` lets exactly one of concurrent rotations through (PostgreSQL
    /// re-checks `used_ms IS NULL` after waiting for the first one's row lock; SQLite
    /// serialises the transactions).
    pub(super) async fn id_refresh_rotate(
        &self,
        old_hash: &str,
        new_hash: &str,
        now_ms: i64,
        new_expires_ms: i64,
        grace_ms: i64,
    ) -> Result<Rotated, StoreError> {
        in_tx!(self, tx => {
            let used = sqlx::query(concat!(
                "UPDATE refresh_tokens SET used_ms = $2 WHERE token_hash = $1 AND used_ms IS NULL AND expires_ms > $2 \
                 AND EXISTS (SELECT 1 FROM grants g",
                grant_joins!(),
                " WHERE g.id = refresh_tokens.grant_id AND ",
                live_grant!(),
                ") RETURNING grant_id"
            ))
            .bind(old_hash.to_string())
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = used {
                let grant_id: String = r.try_get("grant_id")?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, grant_id, created_ms, expires_ms, used_ms) VALUES ($1, $2, $3, $4, NULL)",
                )
                .bind(new_hash.to_string())
                .bind(grant_id.clone())
                .bind(now_ms)
                .bind(new_expires_ms)
                .execute(&mut *tx)
                .await?;
                let g = sqlx::query(concat!("SELECT ", grant_cols!(), " FROM grants WHERE id = $1"))
                    .bind(grant_id)
                    .fetch_one(&mut *tx)
                    .await?;
                return Ok(Rotated::Rotated(grant_of!(&g, "")));
            }
            let seen = sqlx::query(
                "SELECT t.used_ms, t.grant_id, g.revoked_ms FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id \
                 WHERE t.token_hash = $1",
            )
            .bind(old_hash.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(r) = seen else { return Ok(Rotated::Invalid) };
            let used: Option<i64> = r.try_get("used_ms")?;
            let revoked: Option<i64> = r.try_get("revoked_ms")?;
            match used {
                // Unused but refused above: expired, or its grant is not live.
                None => Ok(Rotated::Invalid),
                Some(_) if revoked.is_some() => Ok(Rotated::Invalid),
                Some(at) if now_ms.saturating_sub(at) <= grace_ms => Ok(Rotated::Concurrent),
                Some(_) => {
                    let grant_id: String = r.try_get("grant_id")?;
                    sqlx::query(REVOKE_GRANT)
                        .bind(grant_id)
                        .bind(now_ms)
                        .bind(reason::REFRESH_REUSE)
                        .execute(&mut *tx)
                        .await?;
                    Ok::<Rotated, StoreError>(Rotated::Reused)
                }
            }
        })
    }

    /// The grant behind a refresh token, live or not: (grant, token expiry, token used).
    pub(super) async fn id_refresh_grant(&self, token_hash: &str) -> Result<Option<(GrantRow, i64, bool)>, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT t.expires_ms AS t_expires_ms, t.used_ms AS t_used_ms, \
                 g.id AS g_id, g.user_id AS g_user_id, g.client_id AS g_client_id, g.device_id AS g_device_id, \
                 g.scope AS g_scope, g.patient AS g_patient, g.stepup_ms AS g_stepup_ms, g.auth_time_ms AS g_auth_time_ms, \
                 g.created_ms AS g_created_ms, g.revoked_ms AS g_revoked_ms, g.revoked_reason AS g_revoked_reason \
                 FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id WHERE t.token_hash = $1",
            )
            .bind(token_hash.to_string())
            .fetch_optional(pool)
            .await?;
            let Some(r) = row else { return Ok(None) };
            let used = r.try_get::<Option<i64>, _>("t_used_ms")?.is_some();
            Ok(Some((grant_of!(&r, "g_"), r.try_get("t_expires_ms")?, used)))
        })
    }
}
