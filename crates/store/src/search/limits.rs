//! SMART scope limits in SQL, and the stored form of a resource's own category codings
//! that they are matched against.
//!
//! # The `category_codes` column
//!
//! `resources.category_codes` and `resource_versions.category_codes` hold the codings of
//! [`portico_policy::ResourceFacts::category_codes`] (`system|code`): `''` when there are
//! none, otherwise every coding followed by a newline, the list preceded by one
//! (`"\na|b\nc|d\n"`). A coding's own `%` and newline (FHIR `code` allows single internal
//! whitespace, newline included) are written `%25` and `%0A`, so the form is lossless and a
//! newline always separates codings. Matching is a substring test on that text:
//!
//! * `system|code` matches the coding exactly: the text contains `"\n" + coding + "\n"`;
//! * a bare `code` (no `|`) matches that code in any system: the text contains
//!   `"|" + code + "\n"`, i.e. some coding ends with `|code`.
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
        out.push_str(&escape(c));
        out.push('\n');
    }
    out
}

/// Codings back from their stored form.
pub(crate) fn decode_codes(stored: &str) -> Vec<String> {
    stored.split('\n').filter(|s| !s.is_empty()).map(unescape).collect()
}

fn escape(c: &str) -> String {
    c.replace('%', "%25").replace('\n', "%0A")
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
        if let Some(t) = tail.strip_prefix("%25") {
            out.push('%');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("%0A") {
            out.push('\n');
            rest = t;
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The substring a row's stored codings must contain to carry category `entry`.
fn pattern(entry: &str) -> String {
    if entry.contains('|') { format!("\n{}\n", escape(entry)) } else { format!("|{}\n", escape(entry)) }
}

/// Whether stored codings (as [`decode_codes`] returns them) carry category `entry` — the
/// same test the SQL makes (the reference for `SearchPermit::admits`).
#[cfg(test)]
pub(crate) fn carries_category(codes: &[String], entry: &str) -> bool {
    codes
        .iter()
        .any(|c| c == entry || (!entry.contains('|') && c.strip_suffix(entry).is_some_and(|s| s.ends_with('|'))))
}

/// Whether a row of `resource_type` with these codings meets the limits (`None`: no limits).
#[cfg(test)]
pub(crate) fn limits_admit(limits: Option<&[TypeLimit]>, resource_type: &str, codes: &[String]) -> bool {
    let Some(limits) = limits else { return true };
    limits.iter().any(|l| {
        (l.resource_type == "*" || l.resource_type == resource_type)
            && l.categories.as_ref().is_none_or(|cats| cats.iter().any(|c| carries_category(codes, c)))
    })
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
                    sql.push("REPLACE(r.category_codes, ").text(&pattern(c)).push(", '') <> r.category_codes");
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
        let c = codes(&["http://x|laboratory", "|local", "s|50%\nodd", "%0A"]);
        let stored = encode_codes(&c);
        assert_eq!(stored, "\nhttp://x|laboratory\n|local\ns|50%25%0Aodd\n%250A\n");
        assert_eq!(decode_codes(&stored), c);
        assert_eq!(encode_codes(&[]), "");
        assert!(decode_codes("").is_empty());
    }

    #[test]
    fn category_entries_match_exactly_or_by_code_in_any_system() {
        let c = codes(&["http://x|laboratory", "|local"]);
        assert!(carries_category(&c, "http://x|laboratory"));
        assert!(carries_category(&c, "laboratory"));
        assert!(carries_category(&c, "local"));
        assert!(carries_category(&c, "|local"));
        assert!(!carries_category(&c, "Laboratory"));
        assert!(!carries_category(&c, "aboratory"));
        assert!(!carries_category(&c, "http://y|laboratory"));
        assert!(!carries_category(&c, "http://x|"));
        let stored = encode_codes(&c);
        for entry in ["http://x|laboratory", "laboratory", "local", "|local"] {
            assert!(stored.contains(&pattern(entry)), "{entry}");
        }
        for entry in ["Laboratory", "aboratory", "http://y|laboratory", "http://x|", "x|lab"] {
            assert!(!stored.contains(&pattern(entry)), "{entry}");
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
                assert_eq!(all.len(), if table == "resources" { 8 } else { 9 });
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
}
