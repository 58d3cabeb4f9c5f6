//! The write path: versions, tombstones, index rows and the change sequence, all in one
//! transaction. SQLite serialises writers with `BEGIN IMMEDIATE`; PostgreSQL locks the
//! resource row with `FOR UPDATE`, so concurrent `If-Match` writers see each other.

use crate::backend::{Db, SqlStore};
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
        let ops = &ops;
        crate::error::retry_transient(move || async move {
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
                    // The request's audit records, in the same transaction as the write.
                    let out = match out {
                        Ok(v) => crate::audit::append_audit!(tx, audit.chainer, &(audit.records)(&v), "").map(|_| v),
                        Err(e) => Err(e),
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
        .await
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
        if let Value::Object(o) = v {
            if o.get("meta").is_some_and(|m| m.as_object().is_some_and(|m| m.is_empty())) {
                o.remove("meta");
            }
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
