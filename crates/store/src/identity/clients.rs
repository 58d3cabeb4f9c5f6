//! OAuth client registrations. Removing a client revokes its grants; a disabled or removed
//! client's tokens stop working at once because `access_lookup` joins the client.

use super::ClientRow;
use super::rows::{in_tx, reason, to_json, uris_from};
use crate::backend::{SqlStore, with_pool};
use crate::error::StoreError;
use sqlx::Row;

macro_rules! client_cols {
    () => {
        "client_id, name, auth_method, secret_hash, redirect_uris, scopes, jwks, jwks_url, disabled, created_ms"
    };
}

macro_rules! client_of {
    ($row:expr) => {{
        let row = $row;
        ClientRow {
            client_id: row.try_get("client_id")?,
            name: row.try_get("name")?,
            auth_method: row.try_get("auth_method")?,
            secret_hash: row.try_get("secret_hash")?,
            redirect_uris: uris_from(&row.try_get::<String, _>("redirect_uris")?)?,
            scopes: row.try_get("scopes")?,
            jwks: row.try_get("jwks")?,
            jwks_url: row.try_get("jwks_url")?,
            disabled: row.try_get::<i64, _>("disabled")? != 0,
            created_ms: row.try_get("created_ms")?,
        }
    }};
}

impl SqlStore {
    /// Create, or replace everything but the registration time.
    pub(super) async fn id_client_put(&self, c: &ClientRow) -> Result<(), StoreError> {
        let uris = to_json(&c.redirect_uris)?;
        with_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO oauth_clients (client_id, name, auth_method, secret_hash, redirect_uris, scopes, jwks, jwks_url, \
                 disabled, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (client_id) DO UPDATE SET name = excluded.name, auth_method = excluded.auth_method, \
                 secret_hash = excluded.secret_hash, redirect_uris = excluded.redirect_uris, scopes = excluded.scopes, \
                 jwks = excluded.jwks, jwks_url = excluded.jwks_url, disabled = excluded.disabled",
            )
            .bind(c.client_id.clone())
            .bind(c.name.clone())
            .bind(c.auth_method.clone())
            .bind(c.secret_hash.clone())
            .bind(uris)
            .bind(c.scopes.clone())
            .bind(c.jwks.clone())
            .bind(c.jwks_url.clone())
            .bind(i64::from(c.disabled))
            .bind(c.created_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub(super) async fn id_client_get(&self, client_id: &str) -> Result<Option<ClientRow>, StoreError> {
        let sql = concat!("SELECT ", client_cols!(), " FROM oauth_clients WHERE client_id = $1");
        with_pool!(&self.db, pool => {
            match sqlx::query(sql).bind(client_id.to_string()).fetch_optional(pool).await? {
                Some(r) => Ok(Some(client_of!(&r))),
                None => Ok(None),
            }
        })
    }

    pub(super) async fn id_clients_list(&self) -> Result<Vec<ClientRow>, StoreError> {
        let sql = concat!("SELECT ", client_cols!(), " FROM oauth_clients ORDER BY client_id");
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(client_of!(r));
            }
            Ok(out)
        })
    }

    /// Delete the registration, revoke its grants (pending ones included, so its unredeemed
    /// codes become invalid) and drop its pending authorization requests and unused codes.
    pub(super) async fn id_client_remove(&self, client_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        in_tx!(self, tx => {
            let n = sqlx::query("DELETE FROM oauth_clients WHERE client_id = $1")
                .bind(client_id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                sqlx::query(
                    "UPDATE grants SET revoked_ms = $2, revoked_reason = $3 WHERE client_id = $1 AND revoked_ms IS NULL",
                )
                .bind(client_id.to_string())
                .bind(now_ms)
                .bind(reason::CLIENT_REMOVED)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM auth_requests WHERE client_id = $1")
                    .bind(client_id.to_string())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM auth_codes WHERE client_id = $1 AND used_ms IS NULL")
                    .bind(client_id.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            Ok::<bool, StoreError>(n > 0)
        })
    }
}
