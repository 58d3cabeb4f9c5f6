//! The write path: versions, tombstones, index rows and the change sequence, all in one
//! transaction. SQLite serialises writers with `BEGIN IMMEDIATE`; PostgreSQL locks the
//! resource row with `FOR UPDATE`, so concurrent `If-Match` writers see each other.

use crate::backend::{Db, SqlStore};
use crate::error::StoreError;
use crate::search::exec::{query_of, row_to_version};
use crate::search::sql::{self, Bind, Sql};
use crate::search::SearchQuery;
use crate::{StoredVersion, WriteKind, WriteOp, WriteResult};
use portico_fhir::IndexValue;
use portico_policy::{SearchPermit, WritePermit};
use serde_json::{Map, Value};
use sqlx::Row;

/// Index rows per multi-row INSERT (well under both engines' bind-parameter limits).
const ROWS_PER_INSERT: usize = 400;
/// Attempts for a write that hit a transient conflict.
const ATTEMPTS: usize = 4;

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
}

/// The ops, in one open transaction `$tx`; `$lock` is appended to the current-row select,
/// `$seq` yields the next change sequence number in column `value`.
macro_rules! write_ops {
    ($tx:ident, $ops:expr, $lock:expr, $seq:expr) => {
        async {
            let mut results: Vec<WriteResult> = Vec::with_capacity($ops.len());
            for (permit, op) in $ops.iter() {
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
                        results.push(WriteResult { stored: row_to_version!(row)?, created: false, noop: true });
                        continue;
                    }
                }
                let current = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT version_id, deleted, last_updated, seq, body FROM resources WHERE res_type = $1 AND id = $2{}",
                    $lock
                )))
                .bind(op.resource_type.clone())
                .bind(op.id.clone())
                .fetch_optional(&mut *$tx)
                .await?;
                let (prev_version, live_version, prev_row) = match &current {
                    Some(row) => {
                        let v: i64 = row.try_get("version_id")?;
                        let deleted: i64 = row.try_get("deleted")?;
                        (Some(v), if deleted == 0 { Some(v) } else { None }, Some(row))
                    }
                    None => (None, None, None),
                };
                if let Some(m) = op.if_match {
                    if live_version != Some(m) {
                        return Err(StoreError::VersionConflict { current: live_version });
                    }
                }
                if !permit.covers(&op.resource_type, &op.id, live_version) {
                    return Err(StoreError::StalePermit);
                }
                if matches!(op.kind, WriteKind::Create) && live_version.is_some() {
                    return Err(StoreError::Conflict);
                }
                if matches!(op.kind, WriteKind::Delete) && live_version.is_none() {
                    let stored = StoredVersion {
                        resource_type: op.resource_type.clone(),
                        id: op.id.clone(),
                        version: prev_version.unwrap_or(0),
                        last_updated: match prev_row {
                            Some(r) => r.try_get("last_updated")?,
                            None => String::new(),
                        },
                        seq: match prev_row {
                            Some(r) => r.try_get("seq")?,
                            None => 0,
                        },
                        deleted: true,
                        body: String::new(),
                    };
                    results.push(WriteResult { stored, created: false, noop: true });
                    continue;
                }
                if let (WriteKind::Update, Some(row), Some(p)) = (&op.kind, prev_row, &op.prepared) {
                    if live_version.is_some() {
                        let stored_body: String = row.try_get("body")?;
                        if crate::write::same_content(&stored_body, &p.body) {
                            let stored = StoredVersion {
                                resource_type: op.resource_type.clone(),
                                id: op.id.clone(),
                                version: live_version.unwrap_or(0),
                                last_updated: row.try_get("last_updated")?,
                                seq: row.try_get("seq")?,
                                deleted: false,
                                body: stored_body,
                            };
                            results.push(WriteResult { stored, created: false, noop: true });
                            continue;
                        }
                    }
                }
                let seq: i64 = sqlx::query($seq).fetch_one(&mut *$tx).await?.try_get("value")?;
                let version = prev_version.unwrap_or(0) + 1;
                let (last_updated, lu_ms) = crate::write::now_rfc3339();
                let (body, facts, index) = match &op.prepared {
                    Some(p) => {
                        let mut b = p.body.clone();
                        crate::write::stamp(&mut b, &op.id, version, &last_updated);
                        (b.to_string(), Some(&p.facts), p.index.as_slice())
                    }
                    None => (String::new(), None, &[][..]),
                };
                let deleted = matches!(op.kind, WriteKind::Delete);
                // A tombstone keeps the compartments of what it deletes, so the gate can
                // still decide who may learn of the deletion.
                let (compartments, category, labels) = match facts {
                    Some(f) => (f.compartments.clone(), f.category.clone(), f.labels.join(" ")),
                    None => {
                        let comps: Vec<String> = sqlx::query("SELECT patient FROM idx_compartment WHERE res_type = $1 AND id = $2")
                            .bind(op.resource_type.clone())
                            .bind(op.id.clone())
                            .fetch_all(&mut *$tx)
                            .await?
                            .iter()
                            .map(|r| r.try_get::<String, _>("patient"))
                            .collect::<Result<_, _>>()?;
                        let (cat, lab): (String, String) = match prev_row {
                            Some(_) => {
                                let r = sqlx::query("SELECT category, labels FROM resources WHERE res_type = $1 AND id = $2")
                                    .bind(op.resource_type.clone())
                                    .bind(op.id.clone())
                                    .fetch_one(&mut *$tx)
                                    .await?;
                                (r.try_get("category")?, r.try_get("labels")?)
                            }
                            None => (String::new(), String::new()),
                        };
                        (comps, cat, lab)
                    }
                };
                let compartment = compartments.first().cloned().unwrap_or_default();
                let comps_text = compartments.join(" ");
                let del_flag: i64 = if deleted { 1 } else { 0 };
                sqlx::query(
                    "INSERT INTO resources (res_type, id, version_id, last_updated, lu_ms, seq, compartment, compartments, category, labels, deleted, body) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (res_type, id) DO UPDATE SET version_id = excluded.version_id, last_updated = excluded.last_updated, \
                     lu_ms = excluded.lu_ms, seq = excluded.seq, compartment = excluded.compartment, compartments = excluded.compartments, \
                     category = excluded.category, labels = excluded.labels, deleted = excluded.deleted, body = excluded.body",
                )
                .bind(op.resource_type.clone())
                .bind(op.id.clone())
                .bind(version)
                .bind(last_updated.clone())
                .bind(lu_ms)
                .bind(seq)
                .bind(compartment.clone())
                .bind(comps_text.clone())
                .bind(category.clone())
                .bind(labels.clone())
                .bind(del_flag)
                .bind(body.clone())
                .execute(&mut *$tx)
                .await?;
                sqlx::query(
                    "INSERT INTO resource_versions (res_type, id, version_id, last_updated, lu_ms, seq, compartment, compartments, category, labels, deleted, body) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(op.resource_type.clone())
                .bind(op.id.clone())
                .bind(version)
                .bind(last_updated.clone())
                .bind(lu_ms)
                .bind(seq)
                .bind(compartment.clone())
                .bind(comps_text)
                .bind(category)
                .bind(labels)
                .bind(del_flag)
                .bind(body.clone())
                .execute(&mut *$tx)
                .await?;
                if prev_version.is_some() {
                    for table in crate::write::INDEX_TABLES {
                        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE res_type = $1 AND id = $2")))
                            .bind(op.resource_type.clone())
                            .bind(op.id.clone())
                            .execute(&mut *$tx)
                            .await?;
                    }
                }
                if !deleted {
                    for ins in crate::write::index_inserts(&op.resource_type, &op.id, &compartment, &compartments, index) {
                        query_of!(ins).execute(&mut *$tx).await?;
                    }
                }
                results.push(WriteResult {
                    stored: StoredVersion {
                        resource_type: op.resource_type.clone(),
                        id: op.id.clone(),
                        version,
                        last_updated,
                        seq,
                        deleted,
                        body,
                    },
                    created: live_version.is_none() && !deleted,
                    noop: false,
                });
            }
            Ok::<Vec<WriteResult>, StoreError>(results)
        }
        .await
    };
}

impl SqlStore {
    pub(crate) async fn run_writes(&self, ops: Vec<(WritePermit, WriteOp)>) -> Result<Vec<WriteResult>, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = match &self.db {
                Db::Sqlite(pool) => {
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    let out = write_ops!(tx, &ops, "", "UPDATE counters SET value = value + 1 WHERE name = 'change_seq' RETURNING value");
                    match out {
                        Ok(v) => tx.commit().await.map(|_| v).map_err(StoreError::from),
                        Err(e) => Err(e),
                    }
                }
                Db::Pg(pool) => {
                    let mut tx = pool.begin().await?;
                    let out = write_ops!(tx, &ops, " FOR UPDATE", "SELECT nextval('change_seq') AS value");
                    match out {
                        Ok(v) => tx.commit().await.map(|_| v).map_err(StoreError::from),
                        Err(e) => Err(e),
                    }
                }
            };
            match r {
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt as u64)).await;
                }
                other => return other,
            }
        }
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

/// Multi-row INSERTs of a resource's index values.
pub(crate) fn index_inserts(rt: &str, id: &str, compartment: &str, compartments: &[String], index: &[IndexValue]) -> Vec<Sql> {
    let mut out = Vec::new();
    let mut by_table: Vec<(&'static str, &'static str, Vec<&IndexValue>)> = vec![
        ("idx_token", "(res_type, id, param, system, code, text, compartment)", vec![]),
        ("idx_string", "(res_type, id, param, norm, exact, compartment)", vec![]),
        ("idx_date", "(res_type, id, param, lo, hi, compartment)", vec![]),
        ("idx_reference", "(res_type, id, param, ref_type, ref_id, url, compartment)", vec![]),
        ("idx_number", "(res_type, id, param, value, compartment)", vec![]),
        ("idx_quantity", "(res_type, id, param, value, system, code, compartment)", vec![]),
        ("idx_uri", "(res_type, id, param, value, compartment)", vec![]),
    ];
    for v in index {
        let slot = match v {
            IndexValue::Token { .. } => 0,
            IndexValue::Str { .. } => 1,
            IndexValue::Date { .. } => 2,
            IndexValue::Reference { .. } => 3,
            IndexValue::Number { .. } => 4,
            IndexValue::Quantity { .. } => 5,
            IndexValue::Uri { .. } => 6,
        };
        by_table[slot].2.push(v);
    }
    for (table, cols, values) in by_table {
        for chunk in values.chunks(ROWS_PER_INSERT) {
            let mut s = Sql::default();
            s.push("INSERT INTO ").push(table).push(" ").push(cols).push(" VALUES ");
            for (i, v) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.push("(").text(rt).push(", ").text(id).push(", ").text(v.param()).push(", ");
                match v {
                    IndexValue::Token { system, code, text, .. } => {
                        s.opt_text(system.as_deref()).push(", ").text(code).push(", ").opt_text(text.as_deref());
                    }
                    IndexValue::Str { norm, exact, .. } => {
                        s.text(norm).push(", ").text(exact);
                    }
                    IndexValue::Date { low, high, .. } => {
                        s.int(*low).push(", ").int(*high);
                    }
                    IndexValue::Reference { target_type, target_id, url, .. } => {
                        s.opt_text(target_type.as_deref()).push(", ").opt_text(target_id.as_deref()).push(", ").text(url);
                    }
                    IndexValue::Number { value, .. } => {
                        s.float(*value);
                    }
                    IndexValue::Quantity { value, system, code, .. } => {
                        s.float(*value).push(", ").opt_text(system.as_deref()).push(", ").opt_text(code.as_deref());
                    }
                    IndexValue::Uri { value, .. } => {
                        s.text(value);
                    }
                }
                s.push(", ").text(compartment).push(")");
            }
            out.push(s);
        }
    }
    for chunk in compartments.chunks(ROWS_PER_INSERT) {
        let mut s = Sql::default();
        s.push("INSERT INTO idx_compartment (res_type, id, patient, compartment) VALUES ");
        for (i, p) in chunk.iter().enumerate() {
            if i > 0 {
                s.push(", ");
            }
            s.push("(").text(rt).push(", ").text(id).push(", ").text(p).push(", ").text(compartment).push(")");
        }
        out.push(s);
    }
    out
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

