//! The consent filter ([`portico_policy::SearchFilter`]) in SQL: one more `AND` condition on
//! the row `r`, applied wherever the SMART scope limits are (`limits.rs`): the page, the
//! `total`, `_include`/`_revinclude`, history and paging — so a search admits exactly what
//! `SearchFilter::admits` admits for the facts a read of each row would hand the gate.
//!
//! The semantics are the table at the top of `crates/policy/src/filter.rs`. Every
//! condition written here is **two-valued** (never SQL `NULL`): the filter negates clauses
//! (`unless`, `exclude`), and `NOT NULL` is `NULL`, which would drop a row the policy admits.
//! The only nullable column, `date_ms`, is therefore always tested with `IS [NOT] NULL`
//! first; `author` is `''` (not `NULL`) when unknown.
//!
//! Columns: `res_type`, `id`, `category`, `labels` (space-separated; labels are
//! `[A-Za-z0-9._-]{1,32}`, see `fhir::classify`), `category_codes` (`limits.rs`), `date_ms`,
//! `author` (migration 0004). Like the limits, type tests are written `(r.res_type || '')`
//! so they never become what the planner drives the lookup from.

use super::limits::category_pattern;
use super::sql::Sql;
use portico_policy::filter::{DataSet, DateRange};
use portico_policy::{Clause, Match, SearchFilter};

/// Append ` AND <filter>` (nothing for `None` or an unrestricted filter).
pub(crate) fn consent_filter(sql: &mut Sql, filter: Option<&SearchFilter>) {
    let Some(f) = filter else { return };
    if f.is_unrestricted() {
        return;
    }
    sql.push(" AND ");
    filter_expr(sql, f);
}

/// `(include) AND NOT (exclude)`.
fn filter_expr(sql: &mut Sql, f: &SearchFilter) {
    sql.push("(");
    match &f.include {
        None => {
            sql.push("1 = 1");
        }
        Some(clauses) => any_of(sql, clauses, clause),
    }
    if !f.exclude.is_empty() {
        sql.push(" AND NOT ");
        any_of(sql, &f.exclude, clause);
    }
    sql.push(")");
}

/// `(a OR b OR …)`; an empty list is false.
fn any_of<T>(sql: &mut Sql, items: &[T], mut each: impl FnMut(&mut Sql, &T)) {
    if items.is_empty() {
        sql.push("(1 = 0)");
        return;
    }
    sql.push("(");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        each(sql, it);
    }
    sql.push(")");
}

/// `(m1 AND m2 AND NOT u1 AND NOT u2)`.
fn clause(sql: &mut Sql, c: &Clause) {
    sql.push("(1 = 1");
    for m in &c.when {
        sql.push(" AND ");
        match_expr(sql, m);
    }
    for m in &c.unless {
        sql.push(" AND NOT ");
        match_expr(sql, m);
    }
    sql.push(")");
}

/// A conjunction of the criteria that are set.
fn match_expr(sql: &mut Sql, m: &Match) {
    sql.push("(1 = 1");
    if let Some(types) = &m.resource_types {
        sql.push(" AND ");
        in_list(sql, "(r.res_type || '')", types);
    }
    if let Some(cats) = &m.categories {
        sql.push(" AND ");
        in_list(sql, "r.category", cats);
    }
    if let Some(class) = &m.class {
        sql.push(" AND (");
        in_list(sql, "(r.res_type || '')", &class.resource_types);
        sql.push(" OR ");
        in_list(sql, "r.category", &class.categories);
        sql.push(")");
    }
    if let Some(codes) = &m.category_codes {
        sql.push(" AND ");
        any_of(sql, codes, |sql, c| {
            sql.push("REPLACE(r.category_codes, ").text(&category_pattern(c)).push(", '') <> r.category_codes");
        });
    }
    if let Some(labels) = &m.labels {
        sql.push(" AND ");
        any_of(sql, labels, |sql, l| {
            // A label with whitespace (or none at all) is never one of a row's labels.
            if l.is_empty() || l.chars().any(char::is_whitespace) {
                sql.push("1 = 0");
            } else {
                sql.push("REPLACE(' ' || r.labels || ' ', ")
                    .text(&format!(" {l} "))
                    .push(", '') <> (' ' || r.labels || ' ')");
            }
        });
    }
    if let Some(d) = &m.date {
        sql.push(" AND ");
        date_expr(sql, d);
    }
    if let Some(d) = &m.data {
        sql.push(" AND ");
        data_expr(sql, d);
    }
    sql.push(")");
}

/// `col IN (…)`, false for an empty list.
fn in_list(sql: &mut Sql, col: &str, values: &[String]) {
    if values.is_empty() {
        sql.push("1 = 0");
        return;
    }
    sql.push(col).push(" IN (");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.text(v);
    }
    sql.push(")");
}

fn date_expr(sql: &mut Sql, d: &DateRange) {
    sql.push("(");
    if d.or_missing {
        sql.push("r.date_ms IS NULL OR ");
    }
    sql.push("(r.date_ms IS NOT NULL");
    if let Some(from) = d.from_ms {
        sql.push(" AND r.date_ms >= ").int(from);
    }
    if let Some(to) = d.to_ms {
        sql.push(" AND r.date_ms < ").int(to);
    }
    sql.push("))");
}

/// One of the references (`Type/id`, exactly) or written by one of the authors.
fn data_expr(sql: &mut Sql, d: &DataSet) {
    sql.push("(");
    in_list(sql, "(r.res_type || '/' || r.id)", &d.references);
    sql.push(" OR ");
    // `author` is '' when unknown, and '' is never an author reference the engine names.
    let authors: Vec<String> = d.authors.iter().filter(|a| !a.is_empty()).cloned().collect();
    in_list(sql, "r.author", &authors);
    sql.push(")");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::backend::{SqlStore, with_pool};
    use crate::search::exec::query_of;
    use crate::search::testdb;
    use portico_policy::ResourceFacts;
    use portico_policy::filter::ClassSet;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use sqlx::Row;
    use std::sync::Arc;

    const TYPES: &[&str] = &["Observation", "Condition", "Patient", "MedicationRequest"];
    const CATEGORIES: &[&str] = &["labs", "medications", "conditions", "reproductive-health", "other"];
    const LABELS: &[&str] = &["PSY", "ETH", "N", "R", "V", "HIV"];
    const CODES: &[&str] = &["http://x|laboratory", "|laboratory", "laboratory", "http://x|vital-signs", "vital-signs"];
    const AUTHORS: &[&str] = &["Practitioner/d1", "Patient/p1", "RelatedPerson/rp1", ""];
    const IDS: &[&str] = &["a", "b", "c"];

    fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> {
        proptest::sample::select(list).prop_map(str::to_string)
    }

    fn subset(list: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<String>> {
        proptest::sample::subsequence(list, 0..=max.min(list.len()))
            .prop_map(|v| v.into_iter().map(str::to_string).collect())
    }

    /// Dates around a few boundaries, or none.
    fn date() -> impl Strategy<Value = Option<i64>> {
        prop_oneof![Just(None), (0i64..6).prop_map(|d| Some(d * 1000)), Just(Some(-1)), Just(Some(i64::MAX))]
    }

    /// A stored row's facts (what `read_sealed` returns): no `author` of `''`.
    #[derive(Debug, Clone)]
    struct StoredRow {
        rt: String,
        id: String,
        category: String,
        labels: Vec<String>,
        codes: Vec<String>,
        date: Option<i64>,
        author: Option<String>,
    }

    fn row() -> impl Strategy<Value = StoredRow> {
        (
            pick(TYPES),
            pick(IDS),
            pick(CATEGORIES),
            subset(LABELS, 3),
            subset(&["http://x|laboratory", "|laboratory", "http://x|vital-signs", "y|a b"], 2),
            date(),
            pick(AUTHORS),
        )
            .prop_map(|(rt, id, category, labels, codes, date, author)| StoredRow {
                rt,
                id,
                category,
                labels,
                codes,
                date,
                author: Some(author).filter(|a| !a.is_empty()),
            })
    }

    fn opt<T: std::fmt::Debug + Clone + 'static>(s: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Option<T>> {
        prop_oneof![2 => Just(None), 1 => s.prop_map(Some)].boxed()
    }

    fn a_match() -> impl Strategy<Value = Match> {
        (
            opt(subset(TYPES, 2)),
            opt(subset(CATEGORIES, 2)),
            opt((subset(TYPES, 2), subset(CATEGORIES, 2))),
            opt(subset(CODES, 2)),
            opt(subset(&["PSY", "ETH", "N", "P SY", ""], 2)),
            opt((date(), date(), any::<bool>())),
            opt((subset(&["Observation/a", "Patient/b", "Condition/c", "Observation/"], 2), subset(AUTHORS, 2))),
        )
            .prop_map(|(resource_types, categories, class, category_codes, labels, date, data)| Match {
                resource_types,
                categories,
                class: class.map(|(resource_types, categories)| ClassSet { resource_types, categories }),
                category_codes,
                labels,
                date: date.map(|(from_ms, to_ms, or_missing)| DateRange { from_ms, to_ms, or_missing }),
                data: data.map(|(references, authors)| DataSet { references, authors }),
            })
    }

    fn a_clause() -> impl Strategy<Value = Clause> {
        (proptest::collection::vec(a_match(), 0..3), proptest::collection::vec(a_match(), 0..2)).prop_map(
            |(when, unless)| Clause {
                when: when.into_iter().map(Arc::new).collect(),
                unless: unless.into_iter().map(Arc::new).collect(),
            },
        )
    }

    fn a_filter() -> impl Strategy<Value = SearchFilter> {
        (opt(proptest::collection::vec(a_clause(), 0..3)), proptest::collection::vec(a_clause(), 0..3))
            .prop_map(|(include, exclude)| SearchFilter { include, exclude })
    }

    /// Store the rows as they are (direct inserts of the facts columns: the property is
    /// about the SQL, not about extraction), replacing what was there.
    async fn store_rows(store: &SqlStore, rows: &[StoredRow]) {
        with_pool!(&store.db, pool => {
            sqlx::query("DELETE FROM resources").execute(pool).await.unwrap();
            for (seq, r) in rows.iter().enumerate() {
                let mut sql = Sql::default();
                sql.push("INSERT INTO resources (res_type, id, version_id, last_updated, lu_ms, seq, compartment, compartments, \
                          category, labels, deleted, body, category_codes, date_ms, author) VALUES (")
                    .text(&r.rt).push(", ").text(&r.id).push(", 1, '', 0, ").int(seq as i64 + 1)
                    .push(", 'p1', 'p1', ").text(&r.category).push(", ").text(&r.labels.join(" "))
                    .push(", 0, '{}', ").text(&crate::search::limits::encode_codes(&r.codes)).push(", ");
                match r.date {
                    Some(d) => sql.int(d),
                    None => sql.push("NULL"),
                };
                sql.push(", ").text(r.author.as_deref().unwrap_or("")).push(") ON CONFLICT (res_type, id) DO NOTHING");
                query_of!(sql).execute(pool).await.unwrap();
            }
        });
    }

    async fn selected(store: &SqlStore, filter: &SearchFilter) -> Vec<String> {
        let mut sql = Sql::default();
        sql.push("SELECT r.res_type, r.id FROM resources r WHERE r.deleted = 0");
        consent_filter(&mut sql, Some(filter));
        let mut out: Vec<String> = with_pool!(&store.db, pool => {
            query_of!(sql).fetch_all(pool).await.unwrap_or_else(|e| panic!("{e}: {}", sql.text)).iter().map(|r| {
                format!("{}/{}", r.try_get::<String, _>("res_type").unwrap(), r.try_get::<String, _>("id").unwrap())
            }).collect()
        });
        out.sort();
        out
    }

    /// Random stored facts rows and random filters: the SQL admits exactly the rows
    /// `SearchFilter::admits` admits for the facts the read path rebuilds from those rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sql_admits_exactly_what_the_filter_admits_on_both_engines() {
        for store in testdb::stores().await {
            let mut runner = TestRunner::new(Config { cases: 96, ..Config::default() });
            let strategy = (proptest::collection::vec(row(), 1..10), proptest::collection::vec(a_filter(), 1..6));
            let handle = tokio::runtime::Handle::current();
            let store = &store;
            runner
                .run(&strategy, |(rows, filters)| {
                    tokio::task::block_in_place(|| {
                        handle.block_on(async {
                            store_rows(store, &rows).await;
                            // The facts as the gate would see them: read back through the store.
                            let mut facts: Vec<ResourceFacts> = Vec::new();
                            let mut keys: Vec<String> = rows.iter().map(|r| format!("{}/{}", r.rt, r.id)).collect();
                            keys.sort();
                            keys.dedup();
                            for k in &keys {
                                let (t, id) = k.split_once('/').unwrap();
                                let sealed = store.read(t, id).await.unwrap().unwrap();
                                facts.push(sealed.facts().clone());
                            }
                            for f in &filters {
                                let expected: Vec<String> = facts
                                    .iter()
                                    .filter(|x| f.admits(x))
                                    .map(|x| format!("{}/{}", x.resource_type, x.id.as_deref().unwrap()))
                                    .collect();
                                let got = selected(store, f).await;
                                prop_assert_eq!(got, expected, "{} {:?}", store.backend_name(), f);
                            }
                            Ok(())
                        })
                    })
                })
                .unwrap_or_else(|e| panic!("{}: {e}", store.backend_name()));
        }
    }

    #[test]
    fn shapes() {
        let mut s = Sql::default();
        consent_filter(&mut s, None);
        consent_filter(&mut s, Some(&SearchFilter::default()));
        assert_eq!(s.text, "");
        consent_filter(&mut s, Some(&SearchFilter { include: Some(vec![]), exclude: vec![] }));
        assert_eq!(s.text, " AND ((1 = 0))");
    }
}
