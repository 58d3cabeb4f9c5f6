//! Planning a batch of writes against the rows stored now, and the batched SQL that
//! carries the plan out.

use super::{INDEX_TABLES, ROWS_PER_INSERT, same_content, stamp};
use crate::error::StoreError;
use crate::search::limits::encode_codes;
use crate::search::sql::Sql;
use crate::{StoredVersion, WriteKind, WriteOp, WriteResult};
use portico_fhir::IndexValue;
use portico_policy::WritePermit;
use serde_json::Value;
use std::collections::BTreeMap;

/// The stored current row of a write's target.
#[derive(Debug)]
pub(crate) struct Current {
    pub version: i64,
    pub deleted: bool,
    pub last_updated: String,
    pub seq: i64,
    pub body: String,
    pub compartments: String,
    pub category: String,
    pub labels: String,
    /// Stored form of the category codings (see `search::limits`).
    pub category_codes: String,
    pub date_ms: Option<i64>,
    /// `Type/id`, `''` when unknown (migration 0004).
    pub author: String,
}

/// What one op comes to.
pub(crate) enum Step<'a> {
    /// Nothing to write (deleting what is gone, an update that changes nothing).
    Done(WriteResult),
    Write(Planned<'a>),
}

/// One version to write.
pub(crate) struct Planned<'a> {
    /// Position of the op in the batch.
    pub index: usize,
    rt: &'a str,
    id: &'a str,
    version: i64,
    deleted: bool,
    created: bool,
    /// A row existed before (its index rows must go).
    existed: bool,
    body_value: Option<&'a Value>,
    body: String,
    compartments: Vec<String>,
    category: String,
    labels: String,
    /// Stored form of the category codings (see `search::limits`).
    category_codes: String,
    date_ms: Option<i64>,
    author: String,
    index_values: &'a [IndexValue],
    seq: i64,
    last_updated: String,
    lu_ms: i64,
}

/// Check one op against the current row: `If-Match`, the permit's pre-image, create over a
/// live resource, no-ops.
pub(crate) fn plan<'a>(permit: &WritePermit, op: &'a WriteOp, cur: Option<&Current>) -> Result<Step<'a>, StoreError> {
    let prev_version = cur.map(|c| c.version);
    let live = cur.filter(|c| !c.deleted);
    let live_version = live.map(|c| c.version);
    if let Some(m) = op.if_match
        && live_version != Some(m)
    {
        return Err(StoreError::VersionConflict { current: live_version });
    }
    if !permit.covers(&op.resource_type, &op.id, live_version) {
        return Err(StoreError::StalePermit);
    }
    if matches!(op.kind, WriteKind::Create) && live.is_some() {
        return Err(StoreError::Conflict);
    }
    let stored = |c: &Current, deleted: bool| StoredVersion {
        resource_type: op.resource_type.clone(),
        id: op.id.clone(),
        version: c.version,
        last_updated: c.last_updated.clone(),
        seq: c.seq,
        deleted,
        body: if deleted { String::new() } else { c.body.clone() },
        compartments: c.compartments.split_whitespace().map(str::to_string).collect(),
        category: c.category.clone(),
    };
    if matches!(op.kind, WriteKind::Delete) && live.is_none() {
        let stored = match cur {
            Some(c) => stored(c, true),
            None => StoredVersion {
                resource_type: op.resource_type.clone(),
                id: op.id.clone(),
                version: 0,
                last_updated: String::new(),
                seq: 0,
                deleted: true,
                body: String::new(),
                compartments: Vec::new(),
                category: String::new(),
            },
        };
        return Ok(Step::Done(WriteResult { stored, created: false, noop: true }));
    }
    if let (WriteKind::Update, Some(c), Some(p)) = (&op.kind, live, &op.prepared)
        && same_content(&c.body, &p.body)
    {
        return Ok(Step::Done(WriteResult { stored: stored(c, false), created: false, noop: true }));
    }
    let deleted = matches!(op.kind, WriteKind::Delete);
    // A tombstone keeps the facts of what it deletes, so the gate can still decide who may
    // learn of the deletion.
    let (compartments, category, labels, category_codes, date_ms, author) = match (&op.prepared, cur) {
        (Some(p), _) => (
            p.facts.compartments.clone(),
            p.facts.category.clone(),
            p.facts.labels.join(" "),
            encode_codes(&p.facts.category_codes),
            p.facts.date_ms,
            p.facts.author.clone().unwrap_or_default(),
        ),
        (None, Some(c)) => (
            c.compartments.split_whitespace().map(str::to_string).collect(),
            c.category.clone(),
            c.labels.clone(),
            c.category_codes.clone(),
            c.date_ms,
            c.author.clone(),
        ),
        (None, None) => (Vec::new(), String::new(), String::new(), String::new(), None, String::new()),
    };
    Ok(Step::Write(Planned {
        index: 0,
        rt: &op.resource_type,
        id: &op.id,
        version: prev_version.unwrap_or(0) + 1,
        deleted,
        created: live.is_none() && !deleted,
        existed: cur.is_some(),
        body_value: op.prepared.as_ref().map(|p| &p.body),
        body: String::new(),
        compartments,
        category,
        labels,
        category_codes,
        date_ms,
        author,
        index_values: op.prepared.as_ref().map_or(&[][..], |p| p.index.as_slice()),
        seq: 0,
        last_updated: String::new(),
        lu_ms: 0,
    }))
}

impl Planned<'_> {
    /// Give the version its sequence number and time, and render its body.
    pub fn finish(&mut self, seq: i64, last_updated: &str, lu_ms: i64) {
        self.seq = seq;
        self.last_updated = last_updated.to_string();
        self.lu_ms = lu_ms;
        if let Some(b) = self.body_value {
            let mut b = b.clone();
            stamp(&mut b, self.id, self.version, last_updated);
            self.body = b.to_string();
        }
    }

    pub fn into_result(self) -> WriteResult {
        WriteResult {
            stored: StoredVersion {
                resource_type: self.rt.to_string(),
                id: self.id.to_string(),
                version: self.version,
                last_updated: self.last_updated,
                seq: self.seq,
                deleted: self.deleted,
                body: self.body,
                compartments: self.compartments,
                category: self.category,
            },
            created: self.created,
            noop: false,
        }
    }

    fn compartment(&self) -> &str {
        self.compartments.first().map_or("", String::as_str)
    }
}

/// `WHERE (res_type = $a AND id IN (…)) OR …`, grouped by type so each group uses the
/// primary key.
fn where_targets<'a>(sql: &mut Sql, targets: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (rt, id) in targets {
        by_type.entry(rt).or_default().push(id);
    }
    sql.push(" WHERE ");
    for (g, (rt, ids)) in by_type.iter().enumerate() {
        if g > 0 {
            sql.push(" OR ");
        }
        sql.push("(res_type = ").text(rt).push(" AND id IN (");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.text(id);
        }
        sql.push("))");
    }
}

/// Select the current rows of these ops' targets (`lock` appended, e.g. ` FOR UPDATE`).
pub(crate) fn select_current<'a>(ops: impl Iterator<Item = &'a WriteOp>, lock: &str) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "SELECT res_type, id, version_id, deleted, last_updated, seq, body, compartments, category, labels, category_codes, date_ms, \
         author FROM resources",
    );
    where_targets(&mut sql, ops.map(|op| (op.resource_type.as_str(), op.id.as_str())));
    sql.push(lock);
    sql
}

const RESOURCE_COLUMNS: &str = "(res_type, id, version_id, last_updated, lu_ms, seq, compartment, compartments, category, labels, \
     deleted, body, category_codes, date_ms, author)";

fn version_row(sql: &mut Sql, p: &Planned) {
    sql.push("(").text(p.rt).push(", ").text(p.id).push(", ").int(p.version).push(", ").text(&p.last_updated);
    sql.push(", ").int(p.lu_ms).push(", ").int(p.seq).push(", ").text(p.compartment()).push(", ");
    sql.text(&p.compartments.join(" ")).push(", ").text(&p.category).push(", ").text(&p.labels).push(", ");
    sql.int(i64::from(p.deleted)).push(", ").text(&p.body).push(", ").text(&p.category_codes).push(", ");
    match p.date_ms {
        Some(d) => sql.int(d),
        None => sql.push("NULL"),
    };
    sql.push(", ").text(&p.author).push(")");
}

/// Every statement that writes the plans: few, multi-row, and of repeating shapes so the
/// drivers' statement caches hit.
pub(crate) fn statements(plans: &[Planned]) -> Vec<Sql> {
    let mut out = Vec::new();
    for chunk in plans.chunks(ROWS_PER_INSERT) {
        let mut up = Sql::default();
        up.push("INSERT INTO resources ").push(RESOURCE_COLUMNS).push(" VALUES ");
        let mut hist = Sql::default();
        hist.push("INSERT INTO resource_versions ").push(RESOURCE_COLUMNS).push(" VALUES ");
        for (i, p) in chunk.iter().enumerate() {
            if i > 0 {
                up.push(", ");
                hist.push(", ");
            }
            version_row(&mut up, p);
            version_row(&mut hist, p);
        }
        up.push(
            " ON CONFLICT (res_type, id) DO UPDATE SET version_id = excluded.version_id, last_updated = excluded.last_updated, \
             lu_ms = excluded.lu_ms, seq = excluded.seq, compartment = excluded.compartment, compartments = excluded.compartments, \
             category = excluded.category, labels = excluded.labels, deleted = excluded.deleted, body = excluded.body, \
             category_codes = excluded.category_codes, date_ms = excluded.date_ms, author = excluded.author",
        );
        out.push(up);
        out.push(hist);
        let existing: Vec<&Planned> = chunk.iter().filter(|p| p.existed).collect();
        if !existing.is_empty() {
            for table in INDEX_TABLES {
                let mut del = Sql::default();
                del.push("DELETE FROM ").push(table);
                where_targets(&mut del, existing.iter().map(|p| (p.rt, p.id)));
                out.push(del);
            }
        }
    }
    out.extend(index_inserts(plans.iter().filter(|p| !p.deleted)));
    out
}

/// One index row to insert: its plan, and its value or (for `idx_compartment`) its patient.
type IndexRow<'a> = (&'a Planned<'a>, Option<&'a IndexValue>, Option<&'a str>);

/// Multi-row INSERTs of the plans' index values and compartment memberships.
fn index_inserts<'a>(plans: impl Iterator<Item = &'a Planned<'a>>) -> Vec<Sql> {
    const TABLES: [(&str, &str); 8] = [
        ("idx_token", "(res_type, id, param, system, code, text, compartment)"),
        ("idx_string", "(res_type, id, param, norm, exact, compartment)"),
        ("idx_date", "(res_type, id, param, lo, hi, compartment)"),
        ("idx_reference", "(res_type, id, param, ref_type, ref_id, url, compartment)"),
        ("idx_number", "(res_type, id, param, value, compartment)"),
        ("idx_quantity", "(res_type, id, param, value, system, code, compartment)"),
        ("idx_uri", "(res_type, id, param, value, compartment)"),
        ("idx_compartment", "(res_type, id, patient, compartment)"),
    ];
    // Rows per table: (plan, value) or (plan, compartment patient).
    let mut rows: [Vec<IndexRow>; 8] = Default::default();
    for p in plans {
        for v in p.index_values {
            let slot = match v {
                IndexValue::Token { .. } => 0,
                IndexValue::Str { .. } => 1,
                IndexValue::Date { .. } => 2,
                IndexValue::Reference { .. } => 3,
                IndexValue::Number { .. } => 4,
                IndexValue::Quantity { .. } => 5,
                IndexValue::Uri { .. } => 6,
            };
            rows[slot].push((p, Some(v), None));
        }
        for c in &p.compartments {
            rows[7].push((p, None, Some(c.as_str())));
        }
    }
    let mut out = Vec::new();
    for ((table, cols), values) in TABLES.iter().zip(rows.iter()) {
        for chunk in values.chunks(ROWS_PER_INSERT) {
            let mut s = Sql::default();
            s.push("INSERT INTO ").push(table).push(" ").push(cols).push(" VALUES ");
            for (i, (p, v, patient)) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.push("(").text(p.rt).push(", ").text(p.id).push(", ");
                match (v, patient) {
                    (Some(v), _) => {
                        s.text(v.param()).push(", ");
                        index_columns(&mut s, v);
                    }
                    (None, Some(patient)) => {
                        s.text(patient);
                    }
                    (None, None) => {}
                }
                s.push(", ").text(p.compartment()).push(")");
            }
            out.push(s);
        }
    }
    out
}

fn index_columns(s: &mut Sql, v: &IndexValue) {
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
}
