//! Users: accounts, passwords, TOTP, login throttling; disabling a user or changing their
//! password ends their sessions and grants in the same transaction.

use super::UserRow;
use super::rows::{in_tx, reason, to_json, user_cols, user_of};
use crate::backend::{SqlStore, with_pool};
use crate::error::StoreError;
use sqlx::Row;

/// Revoke every live grant of user `$1` (`$2` now, `$3` reason).
pub(super) const REVOKE_USER_GRANTS: &str =
    "UPDATE grants SET revoked_ms = $2, revoked_reason = $3 WHERE user_id = $1 AND revoked_ms IS NULL";

impl SqlStore {
    pub(super) async fn id_user_create(&self, u: &UserRow) -> Result<(), StoreError> {
        let links = to_json(&u.links)?;
        // One statement, not retried: a taken username is `Conflict` at once.
        with_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO users (id, username, password_hash, role, display_name, fhir_user, links, totp_secret, disabled, \
                 failed_logins, locked_until_ms, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(u.id.clone())
            .bind(u.username.clone())
            .bind(u.password_hash.clone())
            .bind(u.role.clone())
            .bind(u.display_name.clone())
            .bind(u.fhir_user.clone())
            .bind(links)
            .bind(u.totp_secret.clone())
            .bind(i64::from(u.disabled))
            .bind(u.failed_logins)
            .bind(u.locked_until_ms)
            .bind(u.created_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub(super) async fn id_user_by(&self, by_username: bool, key: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = if by_username {
            concat!("SELECT ", user_cols!(), " FROM users WHERE username = $1")
        } else {
            concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1")
        };
        with_pool!(&self.db, pool => {
            match sqlx::query(sql).bind(key.to_string()).fetch_optional(pool).await? {
                Some(r) => Ok(Some(user_of!(&r, ""))),
                None => Ok(None),
            }
        })
    }

    pub(super) async fn id_users_list(&self) -> Result<Vec<UserRow>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(concat!("SELECT ", user_cols!(), " FROM users ORDER BY username")).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(user_of!(r, ""));
            }
            Ok(out)
        })
    }

    pub(super) async fn id_user_set_disabled(&self, id: &str, disabled: bool, now_ms: i64) -> Result<bool, StoreError> {
        in_tx!(self, tx => {
            let n = sqlx::query("UPDATE users SET disabled = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(i64::from(disabled))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 && disabled {
                sqlx::query("UPDATE sessions SET revoked = 1 WHERE user_id = $1 AND revoked = 0")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(REVOKE_USER_GRANTS)
                    .bind(id.to_string())
                    .bind(now_ms)
                    .bind(reason::USER_DISABLED)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok::<bool, StoreError>(n > 0)
        })
    }

    pub(super) async fn id_user_set_password(
        &self,
        id: &str,
        password_hash: &str,
        keep_session: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        in_tx!(self, tx => {
            sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(password_hash.to_string())
                .execute(&mut *tx)
                .await?;
            match keep_session {
                Some(keep) => {
                    sqlx::query("UPDATE sessions SET revoked = 1 WHERE user_id = $1 AND revoked = 0 AND id_hash <> $2")
                        .bind(id.to_string())
                        .bind(keep.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query("UPDATE sessions SET revoked = 1 WHERE user_id = $1 AND revoked = 0")
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            sqlx::query(REVOKE_USER_GRANTS)
                .bind(id.to_string())
                .bind(now_ms)
                .bind(reason::PASSWORD_CHANGED)
                .execute(&mut *tx)
                .await?;
            Ok::<(), StoreError>(())
        })
    }

    pub(super) async fn id_user_set_totp(&self, id: &str, secret: Option<&str>) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query("UPDATE users SET totp_secret = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(secret.map(str::to_string))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub(super) async fn id_user_login_failed(
        &self,
        id: &str,
        now_ms: i64,
        threshold: i64,
        lock_ms: i64,
    ) -> Result<Option<UserRow>, StoreError> {
        // One statement: concurrent failures each count (the increment is atomic), and the
        // lock is set by whichever reaches the threshold. SET expressions see the old row.
        with_pool!(&self.db, pool => {
            let row = sqlx::query(concat!(
                "UPDATE users SET failed_logins = failed_logins + 1, \
                 locked_until_ms = CASE WHEN failed_logins + 1 >= $3 THEN $2 + $4 ELSE locked_until_ms END \
                 WHERE id = $1 RETURNING ",
                user_cols!()
            ))
            .bind(id.to_string())
            .bind(now_ms)
            .bind(threshold)
            .bind(lock_ms)
            .fetch_optional(pool)
            .await?;
            match row {
                Some(r) => Ok(Some(user_of!(&r, ""))),
                None => Ok(None),
            }
        })
    }

    pub(super) async fn id_user_login_succeeded(&self, id: &str) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query("UPDATE users SET failed_logins = 0, locked_until_ms = 0 WHERE id = $1")
                .bind(id.to_string())
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
