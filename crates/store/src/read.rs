//! Reads by id and version, handed out sealed: the caller sees the facts, and opens the body
//! only with the gate's decision on exactly those facts.

use crate::backend::{SqlStore, with_pool};
use crate::error::StoreError;
use crate::search::exec::row_to_version;
use crate::search::limits::decode_codes;
use crate::{Head, StoredVersion};
use portico_policy::{ResourceFacts, Sealed};
use sqlx::Row;

fn split_words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

impl SqlStore {
    pub(crate) async fn read_sealed(
        &self,
        resource_type: &str,
        id: &str,
        version: Option<i64>,
    ) -> Result<Option<Sealed<StoredVersion>>, StoreError> {
        let sql = match version {
            None => {
                "SELECT r.res_type, r.id, r.version_id, r.last_updated, r.seq, r.deleted, r.body, r.compartments, r.category, r.labels, r.category_codes, r.date_ms, r.author FROM resources r WHERE r.res_type = $1 AND r.id = $2"
            }
            Some(_) => {
                "SELECT r.res_type, r.id, r.version_id, r.last_updated, r.seq, r.deleted, r.body, r.compartments, r.category, r.labels, r.category_codes, r.date_ms, r.author FROM resource_versions r WHERE r.res_type = $1 AND r.id = $2 AND r.version_id = $3"
            }
        };
        with_pool!(&self.db, pool => {
            let row = sqlx::query(sql)
                .bind(resource_type.to_string())
                .bind(id.to_string())
                .bind(version.unwrap_or(0))
                .fetch_optional(pool)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let v = row_to_version!(&row)?;
            let facts = ResourceFacts {
                resource_type: v.resource_type.clone(),
                id: Some(v.id.clone()),
                version: Some(v.version),
                compartments: split_words(&row.try_get::<String, _>("compartments")?),
                category: row.try_get("category")?,
                labels: split_words(&row.try_get::<String, _>("labels")?),
                category_codes: decode_codes(&row.try_get::<String, _>("category_codes")?),
                date_ms: row.try_get("date_ms")?,
                author: Some(row.try_get::<String, _>("author")?).filter(|a| !a.is_empty()),
            };
            Ok(Some(Sealed::new(facts, v)))
        })
    }

    pub(crate) async fn read_head(&self, resource_type: &str, id: &str) -> Result<Option<Head>, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query("SELECT version_id, deleted FROM resources WHERE res_type = $1 AND id = $2")
                .bind(resource_type.to_string())
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?;
            match row {
                None => Ok(None),
                Some(r) => Ok(Some(Head { version: r.try_get("version_id")?, deleted: r.try_get::<i64, _>("deleted")? != 0 })),
            }
        })
    }
}
