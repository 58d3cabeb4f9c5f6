//! The write path: versions, tombstones, index rows and the change sequence, all in one
//! transaction. SQLite serialises writers with `BEGIN IMMEDIATE`; PostgreSQL locks the
//! resource row with `FOR UPDATE`, so concurrent `If-Match` writers see each other.

use crate::backend::{Db, SqlStore, with_pool};
use crate::error::StoreError;
mod plan;

use crate::search::SearchQuery;
use crate::search::exec::{query_of, row_to_version};
use crate::search::sql;
use crate::{StoredVersion, WriteKind, WriteOp, WriteResult};
pub(crate) use plan::{Current, Planned, Step, plan, select_current, statements};
use portico_policy::{SearchPermit, WritePermit};
use serde_json::{Map, Value};
use sqlx::Row;

/// Index rows per multi-row INSERT (well under both engines' bind-parameter limits).
pub(crate) const ROWS_PER_INSERT: usize = 200;

/// The current time as (RFC 3339 with milliseconds, epoch ms).
pub(crate) fn now_rfc3339() -> (String, i64) {
    let now = time::OffsetDateTime::now_utc();
    let ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    (portico_fhir::datetime::format_instant(ms), ms)
}

/// A conditional create: the permit and criteria whose match makes the create a no-op.
#[derive(Debug, Clone)]
pub struct Condition {
    pub permit: SearchPermit,
    pub query: SearchQuery,
    /// Canonical form of the criteria, used to serialise creators with the same criteria.
    pub key: String,
    /// When the criteria match, fail the whole write with [`StoreError::ConditionMatched`]
    /// instead of answering the match: a transaction that already pointed references at the
    /// new id must be planned again, not committed half-right.
    pub abort_on_match: bool,
}

/// The ops, in one open transaction `$tx`. `$lock` is appended to the current-rows select;
/// `$seq` takes the number of sequence numbers wanted (`$1`) and yields them (SQLite: the
/// last of the reserved range, one row; PostgreSQL: one row per number) in column `value`.
///
/// Statements are batched: one select of every target's current row, one sequence
/// reservation, then multi-row inserts — a few statements per transaction rather than a
/// dozen per resource, because each statement costs a round trip to the driver.
macro_rules! write_ops {
    ($tx:ident, $ops:expr, $lock:expr, $seq:expr, $seq_is_range:expr, $anonymous:expr) => {
        async {
            let ops = $ops;
            let mut results: Vec<Option<WriteResult>> = vec![None; ops.len()];
            // 1. Current rows of every target, in chunks.
            let mut current: std::collections::HashMap<(String, String), Current> = std::collections::HashMap::new();
            for chunk in ops.chunks(crate::write::ROWS_PER_INSERT) {
                let sql = crate::write::select_current(chunk.iter().map(|(_, op)| op), $lock);
                for row in query_of!(sql, $anonymous).fetch_all(&mut *$tx).await? {
                    let c = Current {
                        version: row.try_get("version_id")?,
                        deleted: row.try_get::<i64, _>("deleted")? != 0,
                        last_updated: row.try_get("last_updated")?,
                        seq: row.try_get("seq")?,
                        body: row.try_get("body")?,
                        compartments: row.try_get("compartments")?,
                        category: row.try_get("category")?,
                        labels: row.try_get("labels")?,
                        category_codes: row.try_get("category_codes")?,
                        date_ms: row.try_get("date_ms")?,
                        author: row.try_get("author")?,
                    };
                    current.insert((row.try_get("res_type")?, row.try_get("id")?), c);
                }
            }
            // 2. Decide each op against what is stored; collect the rows to write.
            let mut plans: Vec<crate::write::Planned> = Vec::with_capacity(ops.len());
            for (i, (permit, op)) in ops.iter().enumerate() {
                // Conditional create: serialise creators with the same criteria, then look.
                if let (WriteKind::Create, Some(cond)) = (&op.kind, &op.condition) {
                    sqlx::query("INSERT INTO conditional_locks (res_type, criteria, n) VALUES ($1, $2, 1) ON CONFLICT (res_type, criteria) DO UPDATE SET n = conditional_locks.n + 1")
                        .bind(op.resource_type.clone())
                        .bind(cond.key.clone())
                        .execute(&mut *$tx)
                        .await?;
                    let mut q = cond.query.clone();
                    q.count = 1;
                    q.cursor = None;
                    q.sort.clear();
                    let page_sql = sql::page_query(&cond.permit, &q);
                    let found = query_of!(page_sql).fetch_all(&mut *$tx).await?;
                    if found.len() > 1 {
                        return Err(StoreError::MultipleMatches);
                    }
                    if let Some(row) = found.first() {
                        if cond.abort_on_match {
                            return Err(StoreError::ConditionMatched);
                        }
                        results[i] = Some(WriteResult { stored: row_to_version!(row)?, created: false, noop: true });
                        continue;
                    }
                }
                let key = (op.resource_type.clone(), op.id.clone());
                match crate::write::plan(permit, op, current.get(&key))? {
                    crate::write::Step::Done(r) => results[i] = Some(r),
                    crate::write::Step::Write(mut p) => {
                        p.index = i;
                        plans.push(p);
                    }
                }
            }
            if !plans.is_empty() {
                // 3. Change sequence numbers for every write.
                let n = plans.len() as i64;
                let rows = sqlx::query($seq).bind(n).fetch_all(&mut *$tx).await?;
                let mut seqs: Vec<i64> = rows.iter().map(|r| r.try_get::<i64, _>("value")).collect::<Result<_, _>>()?;
                if $seq_is_range {
                    let last = seqs.first().copied().unwrap_or(0);
                    seqs = ((last - n + 1)..=last).collect();
                }
                seqs.sort_unstable();
                let (last_updated, lu_ms) = crate::write::now_rfc3339();
                for (p, seq) in plans.iter_mut().zip(seqs) {
                    p.finish(seq, &last_updated, lu_ms);
                }
                // 4. Rows: current versions, history, old index rows out, new index rows in.
                for stmt in crate::write::statements(&plans) {
                    query_of!(stmt, $anonymous).execute(&mut *$tx).await?;
                }
                for p in plans {
                    let i = p.index;
                    results[i] = Some(p.into_result());
                }
            }
            Ok::<Vec<WriteResult>, StoreError>(results.into_iter().flatten().collect())
        }
        .await
    };
}

impl SqlStore {
    pub(crate) async fn run_writes(
        &self,
        ops: Vec<(WritePermit, WriteOp)>,
        audit: &crate::WriteAudit<'_>,
    ) -> Result<Vec<WriteResult>, StoreError> {
        self.run_writes_with(ops, audit, None).await
    }

    /// The writes, with the signed events of Consent writes (required when any op writes a
    /// Consent: no consent change is stored without its event).
    pub(crate) async fn run_writes_with(
        &self,
        ops: Vec<(WritePermit, WriteOp)>,
        audit: &crate::WriteAudit<'_>,
        events: Option<&crate::consent::ConsentEvents<'_>>,
    ) -> Result<Vec<WriteResult>, StoreError> {
        if events.is_none() && crate::consent::writes_consent(&ops) {
            return Err(StoreError::AuditChain("a Consent write needs its signed consent event".into()));
        }
        if let Some(writer) = self.audit_writer.as_ref().filter(|w| w.is_failing()) {
            // Records cannot be chained: a write is refused (fails closed) rather than
            // committed with records that would wait in the outbox, unless the chain works
            // again now.
            writer.append(audit.chainer, &[]).await?;
        }
        let ops = &ops;
        let written = crate::error::retry_transient(move || async move {
            match &self.db {
                Db::Sqlite(pool) => {
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    let out = write_ops!(
                        tx,
                        &ops,
                        "",
                        "UPDATE counters SET value = value + $1 WHERE name = 'change_seq' RETURNING value",
                        true,
                        true
                    );
                    let out = match out {
                        Ok(v) => crate::consent::append_consent_events!(tx, events, &v).map(|_| v),
                        Err(e) => Err(e),
                    };
                    // The request's audit records, in the same transaction as the write: in the
                    // outbox when the audit log has a file of its own (chained just below).
                    let out = match (out, &self.audit_writer) {
                        (Ok(v), Some(_)) => {
                            crate::audit_file::outbox_insert(&mut tx, &(audit.records)(&v)).await.map(|_| v)
                        }
                        (Ok(v), None) => {
                            crate::audit::append_audit!(tx, audit.chainer, &(audit.records)(&v), "").map(|_| v)
                        }
                        (Err(e), _) => Err(e),
                    };
                    match out {
                        Ok(v) => tx.commit().await.map(|_| v).map_err(StoreError::from),
                        Err(e) => Err(e),
                    }
                }
                Db::Pg(pool) => {
                    let mut tx = pool.begin().await?;
                    let out = write_ops!(
                        tx,
                        &ops,
                        " FOR UPDATE",
                        "SELECT nextval('change_seq') AS value FROM generate_series(1, $1)",
                        false,
                        false
                    );
                    let out = match out {
                        Ok(v) => crate::consent::append_consent_events!(tx, events, &v).map(|_| v),
                        Err(e) => Err(e),
                    };
                    // The head row is locked last, so writers hold it only for the commit.
                    let out = match out {
                        Ok(v) => crate::audit::append_audit!(tx, audit.chainer, &(audit.records)(&v), " FOR UPDATE")
                            .map(|_| v),
                        Err(e) => Err(e),
                    };
                    match out {
                        Ok(v) => tx.commit().await.map(|_| v).map_err(StoreError::from),
                        Err(e) => Err(e),
                    }
                }
            }
        })
        .await?;
        if let Some(writer) = &self.audit_writer {
            // The records are durable in the outbox; chained now so that the response comes
            // after them, as in one file. If this fails the next append chains them.
            if let Err(e) = writer.append(audit.chainer, &[]).await {
                tracing::warn!(error = %e, "the write's audit records wait in the outbox");
            }
        }
        Ok(written)
    }
}

/// Versions read per batch by [`SqlStore::backfill_category_codes`].
const BACKFILL_BATCH: i64 = 500;

impl SqlStore {
    /// Fill in `category_codes` (migration 0003) for versions stored before the column
    /// existed, from their bodies; tombstones take their predecessor's, current rows their
    /// version's. Until this has run, such resources carry no category codings, so SMART
    /// scopes narrowed by category do not reach them (fail closed). Safe to run at any time
    /// and more than once, next to writers: it only fills values still `''`, and only on the
    /// exact version it read. Returns the number of rows filled.
    pub async fn backfill_category_codes(&self) -> Result<u64, StoreError> {
        let mut filled = 0u64;
        let mut after = (String::new(), String::new(), 0i64);
        loop {
            let rows: Vec<(String, String, i64, String)> = with_pool!(&self.db, pool => {
                sqlx::query(
                    "SELECT res_type, id, version_id, body FROM resource_versions WHERE (res_type, id, version_id) > ($1, $2, $3) \
                     AND category_codes = '' AND deleted = 0 ORDER BY res_type, id, version_id LIMIT $4",
                )
                .bind(after.0.clone())
                .bind(after.1.clone())
                .bind(after.2)
                .bind(BACKFILL_BATCH)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("res_type")?, r.try_get("id")?, r.try_get("version_id")?, r.try_get("body")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
            });
            let Some(last) = rows.last() else { break };
            after = (last.0.clone(), last.1.clone(), last.2);
            let n = rows.len() as i64;
            for (rt, id, version, body) in rows {
                let Ok(body) = serde_json::from_str::<Value>(&body) else { continue };
                let codes = crate::prepared::category_codes(&body);
                if codes.is_empty() {
                    continue;
                }
                let stored = crate::search::limits::encode_codes(&codes);
                filled += with_pool!(&self.db, pool => {
                    sqlx::query(
                        "UPDATE resource_versions SET category_codes = $4 WHERE res_type = $1 AND id = $2 AND version_id = $3 \
                         AND category_codes = ''",
                    )
                    .bind(rt)
                    .bind(id)
                    .bind(version)
                    .bind(stored)
                    .execute(pool)
                    .await?
                    .rows_affected()
                });
            }
            if n < BACKFILL_BATCH {
                break;
            }
        }
        filled += with_pool!(&self.db, pool => {
            let tombstones = sqlx::query(
                "UPDATE resource_versions SET category_codes = (SELECT p.category_codes FROM resource_versions p \
                 WHERE p.res_type = resource_versions.res_type AND p.id = resource_versions.id \
                 AND p.version_id = resource_versions.version_id - 1) \
                 WHERE deleted = 1 AND category_codes = '' AND EXISTS (SELECT 1 FROM resource_versions p \
                 WHERE p.res_type = resource_versions.res_type AND p.id = resource_versions.id \
                 AND p.version_id = resource_versions.version_id - 1 AND p.category_codes <> '')",
            )
            .execute(pool)
            .await?
            .rows_affected();
            let current = sqlx::query(
                "UPDATE resources SET category_codes = (SELECT v.category_codes FROM resource_versions v \
                 WHERE v.res_type = resources.res_type AND v.id = resources.id AND v.version_id = resources.version_id) \
                 WHERE category_codes = '' AND EXISTS (SELECT 1 FROM resource_versions v WHERE v.res_type = resources.res_type \
                 AND v.id = resources.id AND v.version_id = resources.version_id AND v.category_codes <> '')",
            )
            .execute(pool)
            .await?
            .rows_affected();
            tombstones + current
        });
        Ok(filled)
    }
}

impl SqlStore {
    /// Fill in `date_ms` and `author` (migration 0004) for versions stored before the columns
    /// existed, from their bodies; tombstones take their predecessor's, current rows their
    /// version's. Until this has run such resources have no clinical date and no author, so
    /// consent periods and the results hold judge them as undated (what a read decides on
    /// too: reads and searches agree either way). Like [`Self::backfill_category_codes`]:
    /// safe next to writers, only fills rows that have neither, only on the exact version it
    /// read. Returns the number of rows filled.
    pub async fn backfill_resource_facts(&self) -> Result<u64, StoreError> {
        let mut filled = 0u64;
        let mut after = (String::new(), String::new(), 0i64);
        loop {
            let rows: Vec<(String, String, i64, String)> = with_pool!(&self.db, pool => {
                sqlx::query(
                    "SELECT res_type, id, version_id, body FROM resource_versions WHERE (res_type, id, version_id) > ($1, $2, $3) \
                     AND date_ms IS NULL AND author = '' AND deleted = 0 ORDER BY res_type, id, version_id LIMIT $4",
                )
                .bind(after.0.clone())
                .bind(after.1.clone())
                .bind(after.2)
                .bind(BACKFILL_BATCH)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("res_type")?, r.try_get("id")?, r.try_get("version_id")?, r.try_get("body")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
            });
            let Some(last) = rows.last() else { break };
            after = (last.0.clone(), last.1.clone(), last.2);
            let n = rows.len() as i64;
            for (rt, id, version, body) in rows {
                let Ok(body) = serde_json::from_str::<Value>(&body) else { continue };
                let date = portico_policy::extract::clinical_date_ms(&body);
                let author = portico_policy::extract::author_reference(&body).unwrap_or_default();
                if date.is_none() && author.is_empty() {
                    continue;
                }
                filled += with_pool!(&self.db, pool => {
                    sqlx::query(
                        "UPDATE resource_versions SET date_ms = $4, author = $5 WHERE res_type = $1 AND id = $2 \
                         AND version_id = $3 AND date_ms IS NULL AND author = ''",
                    )
                    .bind(rt)
                    .bind(id)
                    .bind(version)
                    .bind(date)
                    .bind(author)
                    .execute(pool)
                    .await?
                    .rows_affected()
                });
            }
            if n < BACKFILL_BATCH {
                break;
            }
        }
        filled += with_pool!(&self.db, pool => {
            let tombstones = sqlx::query(
                "UPDATE resource_versions SET date_ms = (SELECT p.date_ms FROM resource_versions p \
                 WHERE p.res_type = resource_versions.res_type AND p.id = resource_versions.id \
                 AND p.version_id = resource_versions.version_id - 1), author = (SELECT p.author FROM resource_versions p \
                 WHERE p.res_type = resource_versions.res_type AND p.id = resource_versions.id \
                 AND p.version_id = resource_versions.version_id - 1) \
                 WHERE deleted = 1 AND date_ms IS NULL AND author = '' AND EXISTS (SELECT 1 FROM resource_versions p \
                 WHERE p.res_type = resource_versions.res_type AND p.id = resource_versions.id \
                 AND p.version_id = resource_versions.version_id - 1 AND (p.date_ms IS NOT NULL OR p.author <> ''))",
            )
            .execute(pool)
            .await?
            .rows_affected();
            let current = sqlx::query(
                "UPDATE resources SET date_ms = (SELECT v.date_ms FROM resource_versions v \
                 WHERE v.res_type = resources.res_type AND v.id = resources.id AND v.version_id = resources.version_id), \
                 author = (SELECT v.author FROM resource_versions v \
                 WHERE v.res_type = resources.res_type AND v.id = resources.id AND v.version_id = resources.version_id) \
                 WHERE date_ms IS NULL AND author = '' AND EXISTS (SELECT 1 FROM resource_versions v \
                 WHERE v.res_type = resources.res_type AND v.id = resources.id AND v.version_id = resources.version_id \
                 AND (v.date_ms IS NOT NULL OR v.author <> ''))",
            )
            .execute(pool)
            .await?
            .rows_affected();
            tombstones + current
        });
        Ok(filled)
    }
}

/// Set `id`, `meta.versionId` and `meta.lastUpdated` on the body (client values ignored),
/// and put `resourceType`, `id`, `meta` first, as people expect to read them.
pub(crate) fn stamp(body: &mut Value, id: &str, version: i64, last_updated: &str) {
    let Value::Object(obj) = body else { return };
    let mut meta = match obj.remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.insert("versionId".into(), Value::from(version.to_string()));
    meta.insert("lastUpdated".into(), Value::from(last_updated));
    let mut out = Map::with_capacity(obj.len() + 2);
    if let Some(rt) = obj.remove("resourceType") {
        out.insert("resourceType".into(), rt);
    }
    obj.remove("id");
    out.insert("id".into(), Value::from(id));
    out.insert("meta".into(), Value::Object(meta));
    out.append(obj);
    *obj = out;
}

/// Whether two bodies are the same resource content, ignoring the server's bookkeeping
/// (`meta.versionId`, `meta.lastUpdated`): an update that changes nothing is a no-op.
pub(crate) fn same_content(stored: &str, new: &Value) -> bool {
    let Ok(mut old) = serde_json::from_str::<Value>(stored) else { return false };
    let mut new = new.clone();
    for v in [&mut old, &mut new] {
        if let Some(Value::Object(m)) = v.get_mut("meta") {
            m.remove("versionId");
            m.remove("lastUpdated");
        }
        if let Value::Object(o) = v
            && o.get("meta").is_some_and(|m| m.as_object().is_some_and(|m| m.is_empty()))
        {
            o.remove("meta");
        }
    }
    old == new
}

pub(crate) const INDEX_TABLES: &[&str] = &[
    "idx_token",
    "idx_string",
    "idx_date",
    "idx_reference",
    "idx_number",
    "idx_quantity",
    "idx_uri",
    "idx_compartment",
];

#[cfg(test)]
mod tests {
    use crate::Store;
    use crate::backend::with_pool;
    use crate::search::testdb::{self, put};
    use serde_json::json;

    #[tokio::test]
    async fn backfill_restores_the_category_codes_of_older_rows() {
        let obs = |id: &str, code: &str| {
            json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": code},
                "subject": {"reference": "Patient/p1"},
                "category": [{"coding": [{"system": "http://x", "code": code}]}]})
        };
        for store in testdb::stores().await {
            put(&store, obs("a", "laboratory")).await;
            put(&store, obs("a", "vital-signs")).await;
            put(&store, obs("b", "laboratory")).await;
            put(&store, json!({"resourceType": "Patient", "id": "p1"})).await;
            // `b` deleted: its tombstone keeps the codes of what it deleted.
            let gate = portico_policy::Gate::new(std::sync::Arc::new(portico_policy::TracingSink));
            let ctx = portico_policy::RequestContext::new(portico_policy::Principal::Operator, "t");
            let pre = store.read("Observation", "b").await.unwrap().unwrap().facts().clone();
            let permit = gate.permit_write(&ctx, portico_policy::Action::Delete, Some(&pre), &pre).unwrap();
            let op = crate::WriteOp {
                kind: crate::WriteKind::Delete,
                resource_type: "Observation".into(),
                id: "b".into(),
                if_match: None,
                prepared: None,
                condition: None,
            };
            let chainer = portico_audit::Chainer::new(portico_audit::MacKey::new(&[1; 32]));
            let records = |_: &[crate::WriteResult]| Vec::new();
            store.write(vec![(permit, op)], &crate::WriteAudit { chainer: &chainer, records: &records }).await.unwrap();

            let facts = async |rt: &str, id: &str, v: Option<i64>| {
                store.read_sealed(rt, id, v).await.unwrap().unwrap().facts().category_codes.clone()
            };
            let before = [
                facts("Observation", "a", None).await,
                facts("Observation", "a", Some(1)).await,
                facts("Observation", "b", None).await,
                facts("Observation", "b", Some(2)).await,
            ];
            assert_eq!(before[0], ["http://x|vital-signs"]);
            assert_eq!(before[1], ["http://x|laboratory"]);
            assert_eq!(before[2], ["http://x|laboratory"]);
            assert_eq!(before[3], ["http://x|laboratory"]);
            // As written before migration 0003.
            with_pool!(&store.db, pool => {
                sqlx::query("UPDATE resources SET category_codes = ''").execute(pool).await.unwrap();
                sqlx::query("UPDATE resource_versions SET category_codes = ''").execute(pool).await.unwrap();
            });
            assert!(facts("Observation", "a", None).await.is_empty());
            // 3 live versions with codes, 1 tombstone, 2 current rows (a, b).
            assert_eq!(store.backfill_category_codes().await.unwrap(), 6);
            let after = [
                facts("Observation", "a", None).await,
                facts("Observation", "a", Some(1)).await,
                facts("Observation", "b", None).await,
                facts("Observation", "b", Some(2)).await,
            ];
            assert_eq!(after, before, "{}", store.backend_name());
            assert!(facts("Patient", "p1", None).await.is_empty());
            assert_eq!(store.backfill_category_codes().await.unwrap(), 0, "nothing left to fill");
        }
    }

    #[tokio::test]
    async fn backfill_restores_the_clinical_date_and_author_of_older_rows() {
        let obs = |id: &str, date: &str| {
            json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/p1"}, "effectiveDateTime": date,
                "performer": [{"reference": "Practitioner/d1"}]})
        };
        for store in testdb::stores().await {
            put(&store, obs("a", "2020-01-02")).await;
            put(&store, obs("a", "2021-01-02")).await;
            put(&store, json!({"resourceType": "Patient", "id": "p1"})).await;
            let facts = async |rt: &str, id: &str, v: Option<i64>| {
                let f = store.read_sealed(rt, id, v).await.unwrap().unwrap().facts().clone();
                (f.date_ms, f.author)
            };
            let before = [facts("Observation", "a", None).await, facts("Observation", "a", Some(1)).await];
            assert_eq!(before[1], (Some(1_577_923_200_000), Some("Practitioner/d1".to_string())));
            assert_ne!(before[0], before[1]);
            with_pool!(&store.db, pool => {
                sqlx::query("UPDATE resources SET date_ms = NULL, author = ''").execute(pool).await.unwrap();
                sqlx::query("UPDATE resource_versions SET date_ms = NULL, author = ''").execute(pool).await.unwrap();
            });
            assert_eq!(facts("Observation", "a", None).await, (None, None));
            // 2 versions, 1 current row; the Patient has neither.
            assert_eq!(store.backfill_resource_facts().await.unwrap(), 3);
            let after = [facts("Observation", "a", None).await, facts("Observation", "a", Some(1)).await];
            assert_eq!(after, before, "{}", store.backend_name());
            assert_eq!(facts("Patient", "p1", None).await, (None, None));
            assert_eq!(store.backfill_resource_facts().await.unwrap(), 0, "nothing left to fill");
        }
    }
}
