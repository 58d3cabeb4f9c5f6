//! `portico relabel`: re-apply the operator's classification rules (category and
//! sensitivity labels, `PORTICO_CLASSIFICATION_FILE`) to what is already stored, after the
//! rules changed. Every version is reclassified from its own body — the consent engine, the
//! search filters and the export's sensitive files all read these columns, so a stored
//! resource is judged by today's rules, not by the rules of the day it was written.
//!
//! It runs beside a live server: each version row is rewritten only when its labels change,
//! a deletion tombstone takes its predecessor's labels (as on write), and the current-row
//! copy is refreshed from the version it points at, in one statement per batch.

use crate::backend::{SqlStore, with_pool};
use crate::error::StoreError;
use portico_fhir::classify::Classifier;
use serde_json::Value;
use sqlx::Row;

/// Versions read per batch.
const BATCH: i64 = 500;

/// What a relabel pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelabelReport {
    /// Live (non-deleted) versions examined.
    pub versions: u64,
    /// Versions whose category or labels changed.
    pub changed: u64,
}

impl SqlStore {
    /// Live versions a relabel pass will examine (for a progress bar).
    pub async fn relabel_total(&self) -> Result<u64, StoreError> {
        let n: i64 = with_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM resource_versions WHERE deleted = 0").fetch_one(pool).await?
        });
        Ok(n.max(0) as u64)
    }

    /// Reclassify every stored version with `classifier`; `progress` hears how many
    /// versions were examined so far.
    pub async fn relabel(
        &self,
        classifier: &Classifier,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<RelabelReport, StoreError> {
        let mut report = RelabelReport::default();
        let mut after = (String::new(), String::new(), 0i64);
        loop {
            let rows: Vec<(String, String, i64, String, String, String)> = with_pool!(&self.db, pool => {
                sqlx::query(
                    "SELECT res_type, id, version_id, category, labels, body FROM resource_versions \
                     WHERE (res_type, id, version_id) > ($1, $2, $3) AND deleted = 0 \
                     ORDER BY res_type, id, version_id LIMIT $4",
                )
                .bind(after.0.clone())
                .bind(after.1.clone())
                .bind(after.2)
                .bind(BATCH)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get("res_type")?,
                        r.try_get("id")?,
                        r.try_get("version_id")?,
                        r.try_get("category")?,
                        r.try_get("labels")?,
                        r.try_get("body")?,
                    ))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
            });
            let Some(last) = rows.last() else { break };
            after = (last.0.clone(), last.1.clone(), last.2);
            let n = rows.len() as i64;
            for (rt, id, version, category, labels, body) in rows {
                report.versions += 1;
                let Ok(body) = serde_json::from_str::<Value>(&body) else { continue };
                let class = classifier.classify(&rt, &body);
                let new_labels = class.labels.join(" ");
                if class.category == category && new_labels == labels {
                    continue;
                }
                report.changed += with_pool!(&self.db, pool => {
                    sqlx::query(
                        "UPDATE resource_versions SET category = $4, labels = $5 \
                         WHERE res_type = $1 AND id = $2 AND version_id = $3",
                    )
                    .bind(rt)
                    .bind(id)
                    .bind(version)
                    .bind(class.category)
                    .bind(new_labels)
                    .execute(pool)
                    .await?
                    .rows_affected()
                });
            }
            progress(report.versions);
            if n < BATCH {
                break;
            }
        }
        with_pool!(&self.db, pool => {
            // A tombstone keeps what its predecessor was (a deleted record stays as sensitive
            // as it was when its history is read).
            sqlx::query(
                "UPDATE resource_versions SET \
                 category = (SELECT p.category FROM resource_versions p WHERE p.res_type = resource_versions.res_type \
                   AND p.id = resource_versions.id AND p.version_id = resource_versions.version_id - 1), \
                 labels = (SELECT p.labels FROM resource_versions p WHERE p.res_type = resource_versions.res_type \
                   AND p.id = resource_versions.id AND p.version_id = resource_versions.version_id - 1) \
                 WHERE deleted = 1 AND EXISTS (SELECT 1 FROM resource_versions p WHERE p.res_type = resource_versions.res_type \
                   AND p.id = resource_versions.id AND p.version_id = resource_versions.version_id - 1)",
            )
            .execute(pool)
            .await?;
            sqlx::query(
                "UPDATE resources SET \
                 category = (SELECT v.category FROM resource_versions v WHERE v.res_type = resources.res_type \
                   AND v.id = resources.id AND v.version_id = resources.version_id), \
                 labels = (SELECT v.labels FROM resource_versions v WHERE v.res_type = resources.res_type \
                   AND v.id = resources.id AND v.version_id = resources.version_id) \
                 WHERE EXISTS (SELECT 1 FROM resource_versions v WHERE v.res_type = resources.res_type \
                   AND v.id = resources.id AND v.version_id = resources.version_id \
                   AND (v.category <> resources.category OR v.labels <> resources.labels))",
            )
            .execute(pool)
            .await?;
        });
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use crate::search::testdb;
    use crate::{Store, StoreError};
    use portico_fhir::classify::Classifier;
    use serde_json::json;

    /// The built-in rules plus one that labels a local code behavioural health (as an
    /// operator adding a value set would).
    fn rules_with_local_code() -> Classifier {
        let mut table: serde_json::Value =
            serde_json::from_str(include_str!("../../fhir/data/classification.json")).expect("builtin table");
        let rules = table["rules"].as_array_mut().expect("rules");
        rules.insert(0, json!({"match": {"system": "urn:example:local-codes", "code": "X1"}, "labels": ["BH"]}));
        Classifier::from_json(&table.to_string()).expect("valid table")
    }

    #[tokio::test]
    async fn changed_rules_reach_every_stored_version_and_the_current_row() -> Result<(), StoreError> {
        let new_rules = rules_with_local_code();
        for store in testdb::stores().await {
            let body = |note: &str| {
                json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                       "code": {"coding": [{"system": "urn:example:local-codes", "code": "X1"}]},
                       "note": [{"text": note}]})
            };
            testdb::put(&store, body("one")).await;
            testdb::put(&store, body("two")).await;
            let before = store.read("Condition", "c1").await?.expect("stored");
            assert!(!before.facts().labels.contains(&"BH".to_string()), "the built-in rules do not know X1");

            let total = store.relabel_total().await?;
            let mut seen = 0;
            let report = store.relabel(&new_rules, |n| seen = n).await?;
            assert_eq!((report.versions, seen), (total, total));
            assert_eq!(report.changed, 2, "both versions of the Condition");
            let after = store.read("Condition", "c1").await?.expect("stored");
            assert!(after.facts().labels.contains(&"BH".to_string()), "{:?}", after.facts().labels);
            // A second pass changes nothing.
            assert_eq!(store.relabel(&new_rules, |_| {}).await?.changed, 0);
            // The old rules put it back.
            assert_eq!(store.relabel(Classifier::builtin(), |_| {}).await?.changed, 2);
            let back = store.read("Condition", "c1").await?.expect("stored");
            assert_eq!(back.facts().labels, before.facts().labels);
        }
        Ok(())
    }
}
