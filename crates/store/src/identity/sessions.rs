//! Portal web sessions, looked up by the digest of the cookie. A lookup is one conditional
//! `UPDATE … RETURNING`: it finds the session only when every limit holds, and advances
//! `last_seen_ms` in the same statement.

use super::SessionRow;
use crate::backend::{SqlStore, with_pool};
use crate::error::StoreError;
use sqlx::Row;

impl SqlStore {
    pub(super) async fn id_session_create(&self, s: &SessionRow) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO sessions (id_hash, user_id, device_id, csrf, created_ms, last_seen_ms, stepup_ms, acting_for, revoked) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(s.id_hash.clone())
            .bind(s.user_id.clone())
            .bind(s.device_id.clone())
            .bind(s.csrf.clone())
            .bind(s.created_ms)
            .bind(s.last_seen_ms)
            .bind(s.stepup_ms)
            .bind(s.acting_for.clone())
            .bind(i64::from(s.revoked))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Live only when: not revoked, within the idle and absolute limits, its user exists and
    /// is enabled, and its device exists, belongs to the user and is not revoked.
    pub(super) async fn id_session_get(
        &self,
        id_hash: &str,
        now_ms: i64,
        idle_ms: i64,
        absolute_ms: i64,
    ) -> Result<Option<SessionRow>, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query(
                "UPDATE sessions SET last_seen_ms = CASE WHEN last_seen_ms < $2 THEN $2 ELSE last_seen_ms END \
                 WHERE id_hash = $1 AND revoked = 0 AND last_seen_ms >= $2 - $3 AND created_ms >= $2 - $4 \
                 AND EXISTS (SELECT 1 FROM users u WHERE u.id = sessions.user_id AND u.disabled = 0) \
                 AND EXISTS (SELECT 1 FROM devices d WHERE d.id = sessions.device_id AND d.user_id = sessions.user_id \
                 AND d.revoked_ms IS NULL) \
                 RETURNING id_hash, user_id, device_id, csrf, created_ms, last_seen_ms, stepup_ms, acting_for, revoked",
            )
            .bind(id_hash.to_string())
            .bind(now_ms)
            .bind(idle_ms)
            .bind(absolute_ms)
            .fetch_optional(pool)
            .await?;
            let Some(r) = row else { return Ok(None) };
            Ok(Some(SessionRow {
                id_hash: r.try_get("id_hash")?,
                user_id: r.try_get("user_id")?,
                device_id: r.try_get("device_id")?,
                csrf: r.try_get("csrf")?,
                created_ms: r.try_get("created_ms")?,
                last_seen_ms: r.try_get("last_seen_ms")?,
                stepup_ms: r.try_get("stepup_ms")?,
                acting_for: r.try_get("acting_for")?,
                revoked: r.try_get::<i64, _>("revoked")? != 0,
            }))
        })
    }

    pub(super) async fn id_session_set_stepup(&self, id_hash: &str, at_ms: i64) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query("UPDATE sessions SET stepup_ms = $2 WHERE id_hash = $1")
                .bind(id_hash.to_string())
                .bind(at_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub(super) async fn id_session_set_acting_for(
        &self,
        id_hash: &str,
        patient: Option<&str>,
    ) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query("UPDATE sessions SET acting_for = $2 WHERE id_hash = $1")
                .bind(id_hash.to_string())
                .bind(patient.map(str::to_string))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub(super) async fn id_session_revoke(&self, id_hash: &str) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query("UPDATE sessions SET revoked = 1 WHERE id_hash = $1").bind(id_hash.to_string()).execute(pool).await?;
        });
        Ok(())
    }
}
