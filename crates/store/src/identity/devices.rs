//! Devices: one live row per (user, client, user agent). Revoking one ends its sessions
//! and grants and marks it for remote wipe.

use super::DeviceRow;
use super::rows::{in_tx, reason};
use crate::backend::{SqlStore, with_pool};
use crate::error::StoreError;
use sqlx::Row;

/// Longest user agent kept (longer ones are cut at a character boundary): the value is part
/// of a unique index, whose entries PostgreSQL limits to about 2.7 kB.
pub(super) const MAX_USER_AGENT: usize = 512;

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl SqlStore {
    /// Upsert on the unique index of live devices, so concurrent first visits share one row.
    pub(super) async fn id_device_touch(
        &self,
        user_id: &str,
        client_id: &str,
        user_agent: &str,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        let new_id = uuid::Uuid::new_v4().to_string();
        let ua = clip(user_agent, MAX_USER_AGENT);
        with_pool!(&self.db, pool => {
            let row = sqlx::query(
                "INSERT INTO devices (id, user_id, client_id, user_agent, first_seen_ms, last_seen_ms, revoked_ms, wipe) \
                 VALUES ($1, $2, $3, $4, $5, $5, NULL, 0) \
                 ON CONFLICT (user_id, client_id, user_agent) WHERE revoked_ms IS NULL DO UPDATE SET last_seen_ms = \
                 CASE WHEN devices.last_seen_ms < excluded.last_seen_ms THEN excluded.last_seen_ms ELSE devices.last_seen_ms END \
                 RETURNING id",
            )
            .bind(new_id)
            .bind(user_id.to_string())
            .bind(client_id.to_string())
            .bind(ua.to_string())
            .bind(now_ms)
            .fetch_one(pool)
            .await?;
            Ok(row.try_get("id")?)
        })
    }

    /// Every device of the user, revoked ones included, most recently seen first.
    pub(super) async fn id_devices_list(&self, user_id: &str) -> Result<Vec<DeviceRow>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT id, user_id, client_id, user_agent, first_seen_ms, last_seen_ms, revoked_ms, wipe FROM devices \
                 WHERE user_id = $1 ORDER BY last_seen_ms DESC, id",
            )
            .bind(user_id.to_string())
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(DeviceRow {
                    id: r.try_get("id")?,
                    user_id: r.try_get("user_id")?,
                    client_id: r.try_get("client_id")?,
                    user_agent: r.try_get("user_agent")?,
                    first_seen_ms: r.try_get("first_seen_ms")?,
                    last_seen_ms: r.try_get("last_seen_ms")?,
                    revoked_ms: r.try_get("revoked_ms")?,
                    wipe: r.try_get::<i64, _>("wipe")? != 0,
                });
            }
            Ok(out)
        })
    }

    /// Revoke (again: the first revocation time is kept) and mark for wipe; its sessions and
    /// grants end in the same transaction.
    pub(super) async fn id_device_revoke(
        &self,
        user_id: &str,
        device_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        in_tx!(self, tx => {
            let n = sqlx::query(
                "UPDATE devices SET revoked_ms = COALESCE(revoked_ms, $3), wipe = 1 WHERE id = $2 AND user_id = $1",
            )
            .bind(user_id.to_string())
            .bind(device_id.to_string())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                sqlx::query("UPDATE sessions SET revoked = 1 WHERE device_id = $1 AND revoked = 0")
                    .bind(device_id.to_string())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE grants SET revoked_ms = $2, revoked_reason = $3 WHERE device_id = $1 AND revoked_ms IS NULL",
                )
                .bind(device_id.to_string())
                .bind(now_ms)
                .bind(reason::DEVICE_REVOKED)
                .execute(&mut *tx)
                .await?;
            }
            Ok::<bool, StoreError>(n > 0)
        })
    }
}
