//! `private_key_jwt` assertion ids: remembered per client until the assertion expires.

use super::rows::in_tx;
use crate::backend::SqlStore;
use crate::error::StoreError;

impl SqlStore {
    /// Insert under the unique key (client, jti): false when it is already there. Expired
    /// entries are deleted first (in the same transaction), so a table of remembered ids
    /// stays as small as the assertions' lifetimes.
    pub(super) async fn id_jti_claim(
        &self,
        client_id: &str,
        jti: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        in_tx!(self, tx => {
            sqlx::query("DELETE FROM client_jtis WHERE expires_ms <= $1").bind(now_ms).execute(&mut *tx).await?;
            let n = sqlx::query(
                "INSERT INTO client_jtis (client_id, jti, expires_ms) VALUES ($1, $2, $3) ON CONFLICT (client_id, jti) DO NOTHING",
            )
            .bind(client_id.to_string())
            .bind(jti.to_string())
            .bind(expires_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            Ok::<bool, StoreError>(n == 1)
        })
    }
}
