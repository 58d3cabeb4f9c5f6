//! Authorization requests, codes and grants.
//!
//! A code is stored with the grant it will activate, and that grant is `pending` — no token
//! of it is accepted — until the code's first redemption clears the flag. Redemption is one
//! conditional `UPDATE … RETURNING`, so of any number of concurrent redemptions exactly one
//! finds the code unused; every later one revokes the grant (`code-replay`).

use super::rows::{grant_cols, grant_of, in_tx, reason};
use super::{AuthRequestRow, CodeRow, GrantRow, Redeemed};
use crate::backend::{SqlStore, with_pool};
use crate::error::StoreError;
use sqlx::Row;

/// Insert a grant: `$12` is the pending flag.
const INSERT_GRANT: &str = "INSERT INTO grants (id, user_id, client_id, device_id, scope, patient, stepup_ms, auth_time_ms, \
     created_ms, revoked_ms, revoked_reason, pending) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

macro_rules! insert_grant {
    ($g:expr, $pending:expr) => {{
        let g: &GrantRow = $g;
        sqlx::query(INSERT_GRANT)
            .bind(g.id.clone())
            .bind(g.user_id.clone())
            .bind(g.client_id.clone())
            .bind(g.device_id.clone())
            .bind(g.scope.clone())
            .bind(g.patient.clone())
            .bind(g.stepup_ms)
            .bind(g.auth_time_ms)
            .bind(g.created_ms)
            .bind(g.revoked_ms)
            .bind(g.revoked_reason.clone())
            .bind(i64::from($pending))
    }};
}

/// Revoke grant `$1` if it is live (`$2` now, `$3` reason).
pub(super) const REVOKE_GRANT: &str =
    "UPDATE grants SET revoked_ms = $2, revoked_reason = $3 WHERE id = $1 AND revoked_ms IS NULL";

impl SqlStore {
    pub(super) async fn id_auth_request_put(&self, r: &AuthRequestRow) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            // Opportunistically forget requests that expired (the new one's creation is "now").
            sqlx::query("DELETE FROM auth_requests WHERE expires_ms <= $1").bind(r.created_ms).execute(pool).await?;
            sqlx::query(
                "INSERT INTO auth_requests (id, client_id, redirect_uri, scope, state, code_challenge, nonce, launch_patient, \
                 created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(r.id.clone())
            .bind(r.client_id.clone())
            .bind(r.redirect_uri.clone())
            .bind(r.scope.clone())
            .bind(r.state.clone())
            .bind(r.code_challenge.clone())
            .bind(r.nonce.clone())
            .bind(r.launch_patient.clone())
            .bind(r.created_ms)
            .bind(r.expires_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub(super) async fn id_auth_request_get(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<AuthRequestRow>, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT id, client_id, redirect_uri, scope, state, code_challenge, nonce, launch_patient, created_ms, expires_ms \
                 FROM auth_requests WHERE id = $1 AND expires_ms > $2",
            )
            .bind(id.to_string())
            .bind(now_ms)
            .fetch_optional(pool)
            .await?;
            let Some(r) = row else { return Ok(None) };
            Ok(Some(AuthRequestRow {
                id: r.try_get("id")?,
                client_id: r.try_get("client_id")?,
                redirect_uri: r.try_get("redirect_uri")?,
                scope: r.try_get("scope")?,
                state: r.try_get("state")?,
                code_challenge: r.try_get("code_challenge")?,
                nonce: r.try_get("nonce")?,
                launch_patient: r.try_get("launch_patient")?,
                created_ms: r.try_get("created_ms")?,
                expires_ms: r.try_get("expires_ms")?,
            }))
        })
    }

    pub(super) async fn id_auth_request_delete(&self, id: &str) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM auth_requests WHERE id = $1").bind(id.to_string()).execute(pool).await?;
        });
        Ok(())
    }

    /// The code and its pending grant, together.
    pub(super) async fn id_code_put(&self, code: &CodeRow, grant: &GrantRow) -> Result<(), StoreError> {
        if code.grant_id != grant.id {
            return Err(StoreError::BadQuery("the code names another grant than the one stored with it".into()));
        }
        in_tx!(self, tx => {
            insert_grant!(grant, true).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO auth_codes (code_hash, client_id, redirect_uri, code_challenge, nonce, grant_id, created_ms, \
                 expires_ms, used_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)",
            )
            .bind(code.code_hash.clone())
            .bind(code.client_id.clone())
            .bind(code.redirect_uri.clone())
            .bind(code.code_challenge.clone())
            .bind(code.nonce.clone())
            .bind(code.grant_id.clone())
            .bind(code.created_ms)
            .bind(code.expires_ms)
            .execute(&mut *tx)
            .await?;
            Ok::<(), StoreError>(())
        })
    }

    pub(super) async fn id_code_redeem(&self, code_hash: &str, now_ms: i64) -> Result<Redeemed, StoreError> {
        in_tx!(self, tx => {
            // The one statement that decides who is first: it matches only an unused, unexpired
            // code whose grant has not been revoked, and marks it used.
            let fresh = sqlx::query(
                "UPDATE auth_codes SET used_ms = $2 WHERE code_hash = $1 AND used_ms IS NULL AND expires_ms > $2 \
                 AND EXISTS (SELECT 1 FROM grants g WHERE g.id = auth_codes.grant_id AND g.revoked_ms IS NULL) \
                 RETURNING code_hash, client_id, redirect_uri, code_challenge, nonce, grant_id, created_ms, expires_ms",
            )
            .bind(code_hash.to_string())
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = fresh {
                let code = CodeRow {
                    code_hash: r.try_get("code_hash")?,
                    client_id: r.try_get("client_id")?,
                    redirect_uri: r.try_get("redirect_uri")?,
                    code_challenge: r.try_get("code_challenge")?,
                    nonce: r.try_get("nonce")?,
                    grant_id: r.try_get("grant_id")?,
                    created_ms: r.try_get("created_ms")?,
                    expires_ms: r.try_get("expires_ms")?,
                };
                sqlx::query("UPDATE grants SET pending = 0 WHERE id = $1")
                    .bind(code.grant_id.clone())
                    .execute(&mut *tx)
                    .await?;
                return Ok(Redeemed::Fresh(code));
            }
            let seen = sqlx::query("SELECT used_ms, grant_id FROM auth_codes WHERE code_hash = $1")
                .bind(code_hash.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(r) = seen else { return Ok(Redeemed::Invalid) };
            let used: Option<i64> = r.try_get("used_ms")?;
            if used.is_none() {
                // Expired, or its grant was revoked before it was redeemed.
                return Ok(Redeemed::Invalid);
            }
            let grant_id: String = r.try_get("grant_id")?;
            sqlx::query(REVOKE_GRANT).bind(grant_id).bind(now_ms).bind(reason::CODE_REPLAY).execute(&mut *tx).await?;
            Ok::<Redeemed, StoreError>(Redeemed::Replayed)
        })
    }

    pub(super) async fn id_grant_create(&self, grant: &GrantRow) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            insert_grant!(grant, false).execute(pool).await?;
        });
        Ok(())
    }

    /// A grant as stored (pending and revoked ones too).
    pub(super) async fn id_grant_get(&self, id: &str) -> Result<Option<GrantRow>, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query(concat!("SELECT ", grant_cols!(), " FROM grants WHERE id = $1"))
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?;
            match row {
                Some(r) => Ok(Some(grant_of!(&r, ""))),
                None => Ok(None),
            }
        })
    }

    /// Live (not revoked, not pending) grants of the user, newest first.
    pub(super) async fn id_grants_for_user(&self, user_id: &str) -> Result<Vec<GrantRow>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(concat!(
                "SELECT ",
                grant_cols!(),
                " FROM grants WHERE user_id = $1 AND revoked_ms IS NULL AND pending = 0 ORDER BY created_ms DESC, id"
            ))
            .bind(user_id.to_string())
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(grant_of!(r, ""));
            }
            Ok(out)
        })
    }

    pub(super) async fn id_grant_revoke(&self, id: &str, why: &str, now_ms: i64) -> Result<bool, StoreError> {
        with_pool!(&self.db, pool => {
            let n = sqlx::query(REVOKE_GRANT)
                .bind(id.to_string())
                .bind(now_ms)
                .bind(why.to_string())
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n > 0)
        })
    }
}
