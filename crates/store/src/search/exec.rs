//! Run compiled search and history SQL on either backend.

use super::consent::consent_filter;
use super::limits::limits_filter;
use super::sql::{self, COLUMNS, Sql};
use super::{Cursor, HistoryQuery, Include, MAX_INCLUDED, SearchPage, SearchQuery};
use crate::StoredVersion;
use crate::backend::{SqlStore, with_pool};
use crate::error::StoreError;
use portico_policy::SearchPermit;
use serde_json::Value;
use sqlx::Row;

/// Bind every value of `$sql` onto a fresh query for the pool's driver.
macro_rules! query_of {
    ($sql:expr) => {
        query_of!($sql, false)
    };
    ($sql:expr, $anonymous:expr) => {{
        let mut q = sqlx::query(sqlx::AssertSqlSafe($sql.text_for($anonymous)));
        for b in &$sql.binds {
            q = match b {
                $crate::search::sql::Bind::Text(s) => q.bind(s.clone()),
                $crate::search::sql::Bind::Int(i) => q.bind(*i),
                $crate::search::sql::Bind::Float(f) => q.bind(*f),
                $crate::search::sql::Bind::NullText => q.bind(None::<String>),
            };
        }
        q
    }};
}
pub(crate) use query_of;

/// Turn a result row (columns as in [`sql::COLUMNS`]) into a version.
macro_rules! row_to_version {
    ($row:expr) => {{
        let row = $row;
        Ok::<StoredVersion, sqlx::Error>(StoredVersion {
            resource_type: row.try_get("res_type")?,
            id: row.try_get("id")?,
            version: row.try_get("version_id")?,
            last_updated: row.try_get("last_updated")?,
            seq: row.try_get("seq")?,
            deleted: row.try_get::<i64, _>("deleted")? != 0,
            body: row.try_get("body")?,
            compartments: row.try_get::<String, _>("compartments")?.split_whitespace().map(str::to_string).collect(),
            category: row.try_get("category")?,
        })
    }};
}
pub(crate) use row_to_version;

/// Read the value of sort key `i` from a row as JSON (text, integer or real).
macro_rules! sort_value {
    ($row:expr, $i:expr) => {{
        let name = format!("k{}", $i);
        if let Ok(s) = $row.try_get::<String, _>(name.as_str()) {
            Value::from(s)
        } else if let Ok(n) = $row.try_get::<i64, _>(name.as_str()) {
            Value::from(n)
        } else {
            Value::from($row.try_get::<f64, _>(name.as_str()).unwrap_or(0.0))
        }
    }};
}

impl SqlStore {
    pub(crate) async fn run_search(&self, permit: &SearchPermit, q: &SearchQuery) -> Result<SearchPage, StoreError> {
        let mut page = SearchPage::default();
        if q.total {
            let count = sql::count_query(permit, q);
            page.total = Some(with_pool!(&self.db, pool => {
                let row = query_of!(count).fetch_one(pool).await?;
                row.try_get::<i64, _>("n")?
            }));
        }
        if q.count_only {
            return Ok(page);
        }
        let page_sql = sql::page_query(permit, q);
        let anonymous = self.is_sqlite();
        let key_count = q.sort.len();
        let (mut rows, mut keys): (Vec<StoredVersion>, Vec<Vec<Value>>) = with_pool!(&self.db, pool => {
            let raw = query_of!(page_sql, anonymous).fetch_all(pool).await?;
            let mut rows = Vec::with_capacity(raw.len());
            let mut keys = Vec::with_capacity(raw.len());
            for r in raw {
                let mut k = Vec::with_capacity(key_count * 2);
                for i in 0..key_count {
                    k.push(Value::from(r.try_get::<i64, _>(format!("f{i}").as_str())?));
                    k.push(sort_value!(r, i));
                }
                keys.push(k);
                rows.push(row_to_version!(&r)?);
            }
            (rows, keys)
        });
        if rows.len() > q.count {
            rows.truncate(q.count);
            keys.truncate(q.count);
            if let (Some(last), Some(k)) = (rows.last(), keys.pop()) {
                page.next = Some(Cursor { keys: k, seq: last.seq });
            }
        }
        page.included = self.run_includes(permit, q, &rows).await?;
        page.entries = rows;
        Ok(page)
    }

    async fn run_includes(
        &self,
        permit: &SearchPermit,
        q: &SearchQuery,
        rows: &[StoredVersion],
    ) -> Result<Vec<StoredVersion>, StoreError> {
        if rows.is_empty() || (q.includes.is_empty() && q.revincludes.is_empty()) {
            return Ok(Vec::new());
        }
        let mut out: Vec<StoredVersion> = Vec::new();
        for inc in &q.includes {
            let sql = include_sql(permit, inc, rows, false);
            out.extend(self.fetch_versions(&sql).await?);
        }
        for inc in &q.revincludes {
            let sql = include_sql(permit, inc, rows, true);
            out.extend(self.fetch_versions(&sql).await?);
        }
        let mut seen = std::collections::HashSet::new();
        for r in rows {
            seen.insert((r.resource_type.clone(), r.id.clone()));
        }
        out.retain(|v| seen.insert((v.resource_type.clone(), v.id.clone())));
        out.truncate(MAX_INCLUDED);
        Ok(out)
    }

    pub(crate) async fn fetch_versions(&self, sql: &Sql) -> Result<Vec<StoredVersion>, StoreError> {
        let anonymous = self.is_sqlite();
        with_pool!(&self.db, pool => {
            let raw = query_of!(sql, anonymous).fetch_all(pool).await?;
            raw.iter().map(|r| row_to_version!(r)).collect::<Result<Vec<_>, _>>().map_err(StoreError::from)
        })
    }

    pub(crate) async fn run_history(&self, permit: &SearchPermit, q: &HistoryQuery) -> Result<SearchPage, StoreError> {
        let mut sql = Sql::default();
        sql.push("SELECT ").push(COLUMNS).push(" FROM resource_versions r WHERE 1 = 1");
        if let Some(t) = &q.resource_type {
            sql.push(" AND r.res_type = ").text(t);
        }
        if let Some(id) = &q.id {
            sql.push(" AND r.id = ").text(id);
        }
        if let Some(allowed) = permit.compartments() {
            // History rows carry the compartments of their own version (space-separated).
            // A substring test by `REPLACE`, which is case-sensitive on both engines
            // (SQLite's `LIKE` is not: patient `abc` would have matched `ABC`).
            sql.push(" AND (1 = 0");
            for p in allowed {
                sql.push(" OR REPLACE(' ' || r.compartments || ' ', ")
                    .text(&format!(" {p} "))
                    .push(", '') <> (' ' || r.compartments || ' ')");
            }
            sql.push(")");
        }
        // Scope limits: history rows carry the category codings of their own version.
        let types: Vec<&str> = q.resource_type.as_deref().into_iter().collect();
        limits_filter(&mut sql, permit.limits(), &types);
        // Consent filter: history rows carry the facts of their own version too.
        consent_filter(&mut sql, permit.filter());
        if let Some(since) = q.since_ms {
            sql.push(" AND r.lu_ms >= ").int(since);
        }
        if let Some(at) = q.at_ms {
            sql.push(" AND r.lu_ms <= ").int(at);
            sql.push(" AND NOT EXISTS (SELECT 1 FROM resource_versions v2 WHERE v2.res_type = r.res_type AND v2.id = r.id AND v2.version_id > r.version_id AND v2.lu_ms <= ").int(at).push(")");
        }
        if let Some(c) = &q.cursor {
            sql.push(" AND r.seq < ").int(c.seq);
        }
        sql.push(" ORDER BY r.seq DESC LIMIT ").int(q.count as i64 + 1);
        let mut rows = self.fetch_versions(&sql).await?;
        let mut page = SearchPage::default();
        if rows.len() > q.count {
            rows.truncate(q.count);
            page.next = rows.last().map(|l| Cursor { keys: Vec::new(), seq: l.seq });
        }
        page.entries = rows;
        Ok(page)
    }
}

/// Resources the page's rows point at (`_include`) or that point at them (`_revinclude`),
/// confined by the same permit.
fn include_sql(permit: &SearchPermit, inc: &Include, rows: &[StoredVersion], reverse: bool) -> Sql {
    let mut sql = Sql::default();
    sql.push("SELECT ").push(COLUMNS).push(" FROM resources r WHERE r.deleted = 0");
    sql::compartment_filter(&mut sql, permit.compartments());
    // The types an include can return: the revinclude's source type, the include's named
    // target type (any, when it names none).
    let types: Vec<&str> =
        if reverse { vec![inc.source_type.as_str()] } else { inc.target_type.as_deref().into_iter().collect() };
    limits_filter(&mut sql, permit.limits(), &types);
    consent_filter(&mut sql, permit.filter());
    if reverse {
        sql.push(" AND r.res_type = ").text(&inc.source_type);
        sql.push(" AND r.id IN (SELECT x.id FROM idx_reference x WHERE x.res_type = ").text(&inc.source_type);
        sql.push(" AND x.param = ").text(&inc.param).push(" AND x.ref_type = ");
        let target = rows.first().map(|r| r.resource_type.clone()).unwrap_or_default();
        sql.text(&target).push(" AND x.ref_id IN (");
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.text(&r.id);
        }
        sql.push("))");
    } else {
        let sources: Vec<&StoredVersion> = rows.iter().filter(|r| r.resource_type == inc.source_type).collect();
        if sources.is_empty() {
            sql.push(" AND 1 = 0");
            return sql;
        }
        sql.push(" AND EXISTS (SELECT 1 FROM idx_reference x WHERE x.ref_type = r.res_type AND x.ref_id = r.id AND x.res_type = ")
            .text(&inc.source_type)
            .push(" AND x.param = ")
            .text(&inc.param);
        if let Some(t) = &inc.target_type {
            sql.push(" AND x.ref_type = ").text(t);
        }
        sql.push(" AND x.id IN (");
        for (i, r) in sources.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.text(&r.id);
        }
        sql.push("))");
    }
    sql.push(" LIMIT ").int(MAX_INCLUDED as i64);
    sql
}
