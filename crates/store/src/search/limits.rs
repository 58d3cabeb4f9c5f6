//! SMART scope limits in SQL, and the stored form of a resource's own category codings
//! that they are matched against.
//!
//! # The `category_codes` column
//!
//! `resources.category_codes` and `resource_versions.category_codes` hold the codings of
//! [`portico_policy::ResourceFacts::category_codes`] (`system|code`): `''` when there are
//! none, otherwise every coding followed by a newline, the list preceded by one
//! (`"\na|b\nc|d\n"`). Inside a coding, `%`, newline (FHIR `code` allows single internal
//! whitespace, newline included) and every `|` after the first are written `%25`, `%0A` and
//! `%7C`: the form is lossless, a newline always separates codings, and each coding holds
//! exactly one raw `|` — the one between system and code, where
//! `portico_policy::scopes::category_matches` splits it too. (The comment in migration 0003
//! predates the `%7C` rule; it is left as applied, since migrations are checksummed.)
//!
//! Matching is a substring test on that text, the same predicate as
//! `portico_policy::TypeLimit::admits`:
//!
//! * `system|code` matches a coding exactly: the text contains `"\n" + coding + "\n"`;
//! * a bare `code` (no `|`) matches that code in any system: the text contains
//!   `"|" + code + "\n"`, i.e. some coding's part after its (only raw) `|` is `code`.
//!
//! The test is `REPLACE(col, pattern, '') <> col`: the same text on both engines and
//! case-sensitive on both (SQLite's `LIKE` is not), with nothing to escape.

use super::sql::Sql;
use portico_policy::TypeLimit;

/// The stored form of a resource's category codings (see the module documentation).
pub(crate) fn encode_codes(codes: &[String]) -> String {
    if codes.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n");
    for c in codes {
        out.push_str(&escape_coding(c));
        out.push('\n');
    }
    out
}

/// Codings back from their stored form.
pub(crate) fn decode_codes(stored: &str) -> Vec<String> {
    stored.split('\n').filter(|s| !s.is_empty()).map(unescape).collect()
}

/// A coding with its first `|` kept raw and everything else escaped.
fn escape_coding(c: &str) -> String {
    match c.split_once('|') {
        Some((system, code)) => format!("{}|{}", escape(system), escape(code)),
        None => escape(c),
    }
}

fn escape(part: &str) -> String {
    part.replace('%', "%25").replace('\n', "%0A").replace('|', "%7C")
}

fn unescape(c: &str) -> String {
    if !c.contains('%') {
        return c.to_string();
    }
    let mut out = String::with_capacity(c.len());
    let mut rest = c;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (ch, skip) = match tail.get(..3) {
            Some("%25") => ('%', 3),
            Some("%0A") => ('\n', 3),
            Some("%7C") => ('|', 3),
            _ => ('%', 1),
        };
        out.push(ch);
        rest = &tail[skip..];
    }
    out.push_str(rest);
    out
}

/// The substring a row's stored codings must contain to carry category `entry`.
pub(crate) fn category_pattern(entry: &str) -> String {
    if entry.contains('|') { format!("\n{}\n", escape_coding(entry)) } else { format!("|{}\n", escape(entry)) }
}

/// The scope limits as one more `AND` condition on the row `r` (columns `res_type`,
/// `category_codes`): OR over the limits of (type matches — `*` matches every type — AND
/// (any category, or the row carries one of the limit's)). `None` adds nothing; an empty
/// list admits nothing. `types` are the types the rest of the query already confines `r`
/// to (empty: any), so limits for other types are dropped and, with one type, the type
/// test is left out.
///
/// The type test is written `(r.res_type || '') = $n`: an extra filter, never an index
/// the planner might prefer to drive the lookup from over the query's selective filters
/// (see `sql::where_clause`).
pub(crate) fn limits_filter(sql: &mut Sql, limits: Option<&[TypeLimit]>, types: &[&str]) {
    let Some(limits) = limits else { return };
    let relevant: Vec<&TypeLimit> = limits
        .iter()
        .filter(|l| l.resource_type == "*" || types.is_empty() || types.contains(&l.resource_type.as_str()))
        .collect();
    if relevant.is_empty() {
        sql.push(" AND 1 = 0");
        return;
    }
    let one_type = types.len() == 1;
    let type_free = |l: &TypeLimit| l.resource_type == "*" || one_type;
    if relevant.iter().any(|l| l.categories.is_none() && type_free(l)) {
        return;
    }
    sql.push(" AND (");
    for (i, l) in relevant.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        let mut any = false;
        if !type_free(l) {
            sql.push("(r.res_type || '') = ").text(&l.resource_type);
            any = true;
        }
        if let Some(cats) = &l.categories {
            if any {
                sql.push(" AND ");
            }
            if cats.is_empty() {
                sql.push("1 = 0");
            } else {
                sql.push("(");
                for (j, c) in cats.iter().enumerate() {
                    if j > 0 {
                        sql.push(" OR ");
                    }
                    sql.push("REPLACE(r.category_codes, ").text(&category_pattern(c)).push(", '') <> r.category_codes");
                }
                sql.push(")");
            }
            any = true;
        }
        if !any {
            sql.push("1 = 1");
        }
        sql.push(")");
    }
    sql.push(")");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::backend::{SqlStore, with_pool};
    use crate::search::exec::query_of;
    use crate::search::testdb::{self, put};
    use portico_policy::scopes::category_matches;
    use serde_json::json;
    use sqlx::Row;

    fn codes(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn limit(t: &str, cats: Option<&[&str]>) -> TypeLimit {
        TypeLimit { resource_type: t.into(), categories: cats.map(codes) }
    }

    #[test]
    fn stored_form_round_trips_and_separates_codings() {
        let c = codes(&["http://x|laboratory", "|local", "s|50%\nodd", "%0A", "a|b|c"]);
        let stored = encode_codes(&c);
        assert_eq!(stored, "\nhttp://x|laboratory\n|local\ns|50%25%0Aodd\n%250A\na|b%7Cc\n");
        assert_eq!(decode_codes(&stored), c);
        assert_eq!(encode_codes(&[]), "");
        assert!(decode_codes("").is_empty());
    }

    /// The policy's own rule, which the SQL must agree with.
    fn limits_admit(limits: Option<&[TypeLimit]>, resource_type: &str, codes: &[String]) -> bool {
        limits.is_none_or(|ls| ls.iter().any(|l| l.admits(resource_type, codes)))
    }

    /// The substring test the SQL makes, applied to a stored value in Rust.
    fn sql_matches(codes: &[String], entry: &str) -> bool {
        let stored = encode_codes(codes);
        stored.replace(&category_pattern(entry), "") != stored
    }

    #[test]
    fn the_substring_test_is_the_policys_category_rule() {
        let c = codes(&["http://x|laboratory", "|local", "a|b|c", "s|50%\nodd"]);
        let entries = [
            "http://x|laboratory",
            "laboratory",
            "local",
            "|local",
            "Laboratory",
            "aboratory",
            "http://y|laboratory",
            "x|lab",
            "a|b|c",
            "b|c",
            "c",
            "a|b",
            "s|50%\nodd",
            "50%\nodd",
            "odd",
        ];
        for entry in entries {
            assert_eq!(sql_matches(&c, entry), category_matches(entry, &c), "{entry:?}");
        }
        for entry in ["http://x|laboratory", "laboratory", "local", "|local", "a|b|c"] {
            assert!(sql_matches(&c, entry), "{entry}");
        }
        // `b|c` names system `b`; `c` is not the code of `a|b|c` (its code is `b|c`).
        for entry in ["Laboratory", "aboratory", "http://y|laboratory", "c", "a|b", "b|c"] {
            assert!(!sql_matches(&c, entry), "{entry}");
        }
    }

    #[test]
    fn limits_in_rust() {
        let lab = codes(&["http://x|laboratory"]);
        assert!(limits_admit(None, "Observation", &[]));
        assert!(!limits_admit(Some(&[]), "Observation", &lab));
        let l = [limit("Observation", Some(&["laboratory"])), limit("Condition", None)];
        assert!(limits_admit(Some(&l), "Observation", &lab));
        assert!(!limits_admit(Some(&l), "Observation", &[]));
        assert!(limits_admit(Some(&l), "Condition", &[]));
        assert!(!limits_admit(Some(&l), "Patient", &lab));
        assert!(limits_admit(Some(&[limit("*", Some(&["laboratory"]))]), "Patient", &lab));
        assert!(!limits_admit(Some(&[limit("Observation", Some(&[]))]), "Observation", &lab));
    }

    fn text(limits: Option<&[TypeLimit]>, types: &[&str]) -> String {
        let mut s = Sql::default();
        limits_filter(&mut s, limits, types);
        s.text
    }

    #[test]
    fn sql_shapes() {
        assert_eq!(text(None, &[]), "");
        assert_eq!(text(Some(&[]), &["Observation"]), " AND 1 = 0");
        let l = [limit("Observation", Some(&["laboratory", "x|vital-signs"])), limit("Condition", None)];
        // A Patient search under these limits sees nothing; a Condition search everything.
        assert_eq!(text(Some(&l), &["Patient"]), " AND 1 = 0");
        assert_eq!(text(Some(&l), &["Condition"]), "");
        assert_eq!(
            text(Some(&l), &["Observation"]),
            " AND (((REPLACE(r.category_codes, $1, '') <> r.category_codes OR REPLACE(r.category_codes, $2, '') <> r.category_codes)))"
        );
        assert_eq!(
            text(Some(&l), &[]),
            " AND (((r.res_type || '') = $1 AND (REPLACE(r.category_codes, $2, '') <> r.category_codes OR \
             REPLACE(r.category_codes, $3, '') <> r.category_codes)) OR ((r.res_type || '') = $4))"
        );
        assert_eq!(text(Some(&[limit("*", None)]), &[]), "");
        assert_eq!(text(Some(&[limit("Observation", Some(&[]))]), &["Observation"]), " AND ((1 = 0))");
    }

    /// Rows (type, id, version) of `table` the SQL filter lets through.
    async fn selected(store: &SqlStore, table: &str, limits: Option<&[TypeLimit]>, types: &[&str]) -> Vec<String> {
        let mut sql = Sql::default();
        sql.push("SELECT r.res_type, r.id, r.version_id FROM ").push(table).push(" r WHERE r.deleted = 0");
        if !types.is_empty() {
            sql.push(" AND r.res_type IN (");
            for (i, t) in types.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.text(t);
            }
            sql.push(")");
        }
        limits_filter(&mut sql, limits, types);
        let mut out: Vec<String> = with_pool!(&store.db, pool => {
            query_of!(sql)
                .fetch_all(pool)
                .await
                .expect("query")
                .iter()
                .map(|r| {
                    let (t, id, v): (String, String, i64) =
                        (r.try_get("res_type").unwrap(), r.try_get("id").unwrap(), r.try_get("version_id").unwrap());
                    format!("{t}/{id}/{v}")
                })
                .collect()
        });
        out.sort();
        out
    }

    #[tokio::test]
    async fn the_sql_filter_selects_what_the_rule_admits_on_both_engines() {
        let cat = |system: Option<&str>, code: &str| {
            let mut c = json!({"code": code});
            if let Some(s) = system {
                c["system"] = json!(s);
            }
            json!([{"coding": [c]}])
        };
        const OBS: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
        for store in testdb::stores().await {
            let docs = [
                json!({"resourceType": "Observation", "id": "lab", "category": cat(Some(OBS), "laboratory")}),
                json!({"resourceType": "Observation", "id": "vitals", "category": cat(Some(OBS), "vital-signs")}),
                json!({"resourceType": "Observation", "id": "local", "category": cat(None, "laboratory")}),
                json!({"resourceType": "Observation", "id": "upper", "category": cat(Some(OBS), "Laboratory")}),
                json!({"resourceType": "Observation", "id": "odd", "category": cat(Some("s%"), "a\nb")}),
                json!({"resourceType": "Observation", "id": "bar", "category": cat(Some("a"), "b|c")}),
                json!({"resourceType": "Observation", "id": "none"}),
                json!({"resourceType": "Condition", "id": "c1", "category": cat(Some("http://c"), "problem-list-item")}),
                json!({"resourceType": "Patient", "id": "p1"}),
                // A second version with another category: history rows keep their own.
                json!({"resourceType": "Observation", "id": "lab", "category": cat(Some(OBS), "vital-signs"), "status": "final"}),
            ];
            for d in docs {
                put(&store, d).await;
            }
            let limits: Vec<Option<Vec<TypeLimit>>> = vec![
                None,
                Some(vec![]),
                Some(vec![limit("*", None)]),
                Some(vec![limit("Observation", None)]),
                Some(vec![limit("Observation", Some(&["laboratory"]))]),
                Some(vec![limit("Observation", Some(&[&format!("{OBS}|laboratory")]))]),
                Some(vec![limit("Observation", Some(&["|laboratory"]))]),
                Some(vec![limit("Observation", Some(&["Laboratory", "s%|a\nb"]))]),
                Some(vec![limit("Observation", Some(&[]))]),
                Some(vec![limit("Observation", Some(&["vital-signs"])), limit("Condition", None)]),
                Some(vec![limit("*", Some(&["problem-list-item", "laboratory"]))]),
                Some(vec![limit("Patient", None), limit("Observation", Some(&["nothing"]))]),
                Some(vec![limit("Observation", Some(&["c", "a|b"]))]),
                Some(vec![limit("Observation", Some(&["a|b|c"]))]),
                Some(vec![limit("Observation", Some(&["b|c"]))]),
            ];
            let type_sets: [&[&str]; 4] = [&[], &["Observation"], &["Patient", "Condition"], &["Patient"]];
            for table in ["resources", "resource_versions"] {
                // Every row with the codings the read path hands to the gate.
                let all = selected(&store, table, None, &[]).await;
                let mut facts = Vec::new();
                for key in &all {
                    let mut parts = key.split('/');
                    let (t, id, v) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
                    let version = if table == "resources" { None } else { Some(v.parse().unwrap()) };
                    let sealed = store.read_sealed(t, id, version).await.unwrap().unwrap();
                    facts.push((key.clone(), sealed.facts().clone()));
                }
                assert_eq!(all.len(), if table == "resources" { 9 } else { 10 });
                for l in &limits {
                    for types in type_sets {
                        let expected: Vec<String> = facts
                            .iter()
                            .filter(|(_, f)| types.is_empty() || types.contains(&f.resource_type.as_str()))
                            .filter(|(_, f)| limits_admit(l.as_deref(), &f.resource_type, &f.category_codes))
                            .map(|(k, _)| k.clone())
                            .collect();
                        let got = selected(&store, table, l.as_deref(), types).await;
                        assert_eq!(got, expected, "{} {table}: {l:?} over {types:?}", store.backend_name());
                    }
                }
            }
            // Spot checks that the rule itself is the intended one.
            let lab_only = [limit("Observation", Some(&["laboratory"]))];
            assert_eq!(
                selected(&store, "resources", Some(&lab_only), &["Observation"]).await,
                vec!["Observation/local/1"]
            );
            assert_eq!(
                selected(&store, "resource_versions", Some(&lab_only), &["Observation"]).await,
                vec!["Observation/lab/1", "Observation/local/1"]
            );
            for entry in ["s%|a\nb", "a\nb"] {
                let odd = [limit("Observation", Some(&[entry]))];
                assert_eq!(
                    selected(&store, "resources", Some(&odd), &[]).await,
                    vec!["Observation/odd/1"],
                    "{entry:?}"
                );
            }
        }
    }

    /// The limits are an extra condition, never what the lookup starts from: `$everything`
    /// under scopes naming several types still starts from the patient's compartment list
    /// (a plain `r.res_type = …` in an OR would tempt SQLite into a MULTI-INDEX OR over
    /// every resource of those types).
    #[tokio::test]
    async fn limits_never_drive_the_lookup_on_sqlite() {
        use portico_policy::{Action, Gate, Principal, RequestContext, ScopeSet, TracingSink};
        let stores = testdb::stores().await;
        let store = stores.first();
        assert_eq!(store.backend_name(), "sqlite");
        let gate = Gate::new(std::sync::Arc::new(TracingSink));
        let mut ctx = RequestContext::new(Principal::Patient { patient: "p1".into() }, "t");
        ctx.scopes = Some(
            ScopeSet::parse("patient/Observation.rs?category=laboratory patient/Patient.rs patient/Condition.rs")
                .unwrap(),
        );
        let permit = gate.permit_search(&ctx, Action::Everything, None).unwrap();
        assert_eq!(permit.limits().map(<[TypeLimit]>::len), Some(3));
        let q = crate::SearchQuery { in_compartment: Some("p1".into()), count: 50, ..Default::default() };
        for sql in [crate::search::sql::page_query(&permit, &q), crate::search::sql::count_query(&permit, &q)] {
            assert!(sql.text.contains("(r.res_type || '') = "), "{}", sql.text);
            let explain =
                Sql { text: format!("EXPLAIN QUERY PLAN {}", sql.text), binds: sql.binds.clone(), reused: sql.reused };
            let plan: Vec<String> = with_pool!(&store.db, pool => {
                query_of!(explain).fetch_all(pool).await.unwrap().iter().map(|r| r.try_get("detail").unwrap()).collect()
            });
            let plan = plan.join("\n");
            assert!(!plan.contains("MULTI-INDEX OR"), "{plan}");
            assert!(plan.contains("idx_compartment_patient"), "{plan}");
        }
    }
}
