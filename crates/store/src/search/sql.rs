//! Compile a [`SearchQuery`] to one SQL statement per page. All values are bind
//! parameters (`$n`, accepted by both drivers); only identifiers this module chooses from
//! fixed lists are written into the text.

use super::consent::consent_filter;
use super::limits::limits_filter;
use super::{Cond, Cursor, Filter, Prefix, SearchQuery, SortKey, StrMode, Target};
use portico_fhir::search_params::ParamType;
use portico_policy::SearchPermit;

/// A bind value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    Float(f64),
    /// SQL NULL in a text column.
    NullText,
}

/// SQL text under construction with its bind values.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
    /// A placeholder was written more than once (so `?` cannot stand in for `$n`).
    pub reused: bool,
}

impl Sql {
    /// The text with `$n` placeholders, or — for SQLite, when every value is bound exactly
    /// once in order — with anonymous `?` placeholders. SQLite resolves named parameters by
    /// a linear search per parameter while parsing, which is quadratic for the multi-row
    /// statements of the write path; `?` is not.
    pub fn text_for(&self, anonymous: bool) -> String {
        if !anonymous || self.reused {
            return self.text.clone();
        }
        let mut out = String::with_capacity(self.text.len());
        let mut chars = self.text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    chars.next();
                }
                out.push('?');
            } else {
                out.push(c);
            }
        }
        out
    }
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    /// Append a placeholder bound to `b`.
    pub fn bind(&mut self, b: Bind) -> &mut Self {
        self.binds.push(b);
        let n = self.binds.len();
        self.text.push('$');
        self.text.push_str(&n.to_string());
        self
    }
    pub fn opt_text(&mut self, s: Option<&str>) -> &mut Self {
        self.bind(s.map_or(Bind::NullText, |s| Bind::Text(s.to_string())))
    }
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.bind(Bind::Text(s.to_string()))
    }
    pub fn int(&mut self, i: i64) -> &mut Self {
        self.bind(Bind::Int(i))
    }
    pub fn float(&mut self, f: f64) -> &mut Self {
        self.bind(Bind::Float(f))
    }
}

/// Columns every result query selects, in this order (see `exec::row_to_version`).
pub(crate) const COLUMNS: &str =
    "r.res_type, r.id, r.version_id, r.last_updated, r.seq, r.deleted, r.body, r.compartments, r.category";

fn index_table(kind: ParamType) -> Option<&'static str> {
    Some(match kind {
        ParamType::Token => "idx_token",
        ParamType::String => "idx_string",
        ParamType::Date => "idx_date",
        ParamType::Reference => "idx_reference",
        ParamType::Number => "idx_number",
        ParamType::Quantity => "idx_quantity",
        ParamType::Uri => "idx_uri",
        ParamType::Composite | ParamType::Special => return None,
    })
}

/// `WHERE` conditions shared by the page and count queries: the permit's compartments and
/// scope limits, then the query's own filters.
pub(crate) fn where_clause(sql: &mut Sql, permit: &SearchPermit, q: &SearchQuery) {
    sql.push(" WHERE r.deleted = 0");
    match q.resource_types.as_slice() {
        [] => {}
        [one] => {
            sql.push(" AND r.res_type = ").text(one);
        }
        many => {
            sql.push(" AND r.res_type IN (");
            for (i, t) in many.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.text(t);
            }
            sql.push(")");
        }
    }
    compartment_filter(sql, permit.compartments());
    let types: Vec<&str> = q.resource_types.iter().map(String::as_str).collect();
    limits_filter(sql, permit.limits(), &types);
    consent_filter(sql, permit.filter());
    if let Some(p) = &q.in_compartment {
        // Uncorrelated, so the patient's membership list drives the lookup.
        sql.push(" AND (r.res_type, r.id) IN (SELECT c.res_type, c.id FROM idx_compartment c WHERE c.patient = ")
            .text(p)
            .push(")");
    }
    if let Some(since) = q.since_ms {
        sql.push(" AND r.lu_ms >= ").int(since);
    }
    // With one resource type the index subqueries name it, so they are not correlated
    // with the outer row: each is evaluated once (and can drive the lookup) instead of once
    // per candidate resource, which made unselective filters quadratic.
    let only_type = match q.resource_types.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    };
    // Most selective first: SQLite drives the lookup from the first usable `IN` list.
    let mut filters: Vec<&Filter> = q.filters.iter().collect();
    filters.sort_by_key(|f| selectivity_rank(f));
    for (i, f) in filters.into_iter().enumerate() {
        filter(sql, f, only_type, i == 0);
    }
}

/// Rough selectivity of a filter (lower: fewer matches expected).
fn selectivity_rank(f: &Filter) -> u8 {
    if f.negate || f.missing.is_some() {
        return 9;
    }
    match &f.target {
        Target::Id => 0,
        Target::Index { kind: ParamType::Reference, .. } => 1,
        Target::Index { kind: ParamType::String | ParamType::Uri, .. } => 2,
        Target::Index { kind: ParamType::Token, .. } => 3,
        _ => 4,
    }
}

/// Whether the query has a filter selective enough to drive the lookup, so the sort
/// should not (see `page_query`).
fn has_selective_filter(q: &SearchQuery) -> bool {
    q.in_compartment.is_some() || q.filters.iter().any(|f| selectivity_rank(f) <= 2)
}

/// The gate's confinement: only rows in one of the permitted patient compartments.
pub(crate) fn compartment_filter(sql: &mut Sql, compartments: Option<&[String]>) {
    let Some(allowed) = compartments else { return };
    if allowed.is_empty() {
        sql.push(" AND 1 = 0");
        return;
    }
    sql.push(" AND (r.res_type, r.id) IN (SELECT c.res_type, c.id FROM idx_compartment c WHERE c.patient IN (");
    for (i, p) in allowed.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.text(p);
    }
    sql.push("))");
}

fn filter(sql: &mut Sql, f: &Filter, only_type: Option<&str>, drive: bool) {
    // `:missing` on a column every resource has: nothing is missing it. (Without this the
    // alternatives are empty and the SQL below would be `IN ()` / `AND ()`.)
    if let (Target::Id | Target::LastUpdated, Some(missing)) = (&f.target, f.missing) {
        if missing {
            sql.push(" AND 1 = 0");
        }
        return;
    }
    match &f.target {
        Target::Id => {
            sql.push(if f.negate { " AND r.id NOT IN (" } else { " AND r.id IN (" });
            for (i, c) in f.alternatives.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                if let Cond::Token { code: Some(code), .. } = c {
                    sql.text(code);
                }
            }
            sql.push(")");
        }
        Target::LastUpdated => {
            sql.push(" AND (");
            for (i, c) in f.alternatives.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                if let Cond::Date { prefix, lo, hi } = c {
                    // A lastUpdated instant covers its millisecond.
                    date_cond(sql, "r.lu_ms", "(r.lu_ms + 1)", *prefix, *lo, *hi);
                }
            }
            sql.push(")");
        }
        Target::Index { param, kind } => {
            let Some(table) = index_table(*kind) else { return };
            let present = match f.missing {
                Some(true) => false,
                Some(false) => true,
                None => !f.negate,
            };
            if drive && present {
                // The driving filter: an uncorrelated list the lookup starts from.
                sql.push(" AND r.id IN (SELECT x.id FROM ").push(table).push(" x WHERE ");
                match only_type {
                    Some(t) => sql.push("x.res_type = ").text(t),
                    None => sql.push("x.res_type = r.res_type"),
                };
            } else {
                // Every other filter probes the candidate's own index rows through
                // `(res_type, id)`, instead of materialising every match of an unselective
                // value (all laboratory results) on each request.
                sql.push(if present { " AND EXISTS (SELECT 1 FROM " } else { " AND NOT EXISTS (SELECT 1 FROM " });
                sql.push(table).push(" x WHERE x.res_type = r.res_type AND x.id = r.id");
            }
            sql.push(" AND x.param = ").text(param);
            if f.missing.is_none() && !f.alternatives.is_empty() {
                sql.push(" AND (");
                for (i, c) in f.alternatives.iter().enumerate() {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    sql.push("(");
                    cond(sql, c);
                    sql.push(")");
                }
                sql.push(")");
            }
            sql.push(")");
        }
    }
}

fn cond(sql: &mut Sql, c: &Cond) {
    match c {
        Cond::Token { system, code } => {
            let mut any = false;
            if let Some(code) = code {
                sql.push("x.code = ").text(code);
                any = true;
            }
            match system {
                None => {}
                Some(None) => {
                    sql.push(if any { " AND " } else { "" }).push("x.system IS NULL");
                    any = true;
                }
                Some(Some(s)) => {
                    sql.push(if any { " AND " } else { "" }).push("x.system = ").text(s);
                    any = true;
                }
            }
            if !any {
                sql.push("1 = 1");
            }
        }
        Cond::TokenText(t) => {
            sql.push("LOWER(x.text) LIKE ").text(&like_contains(t)).push(" ESCAPE '\\'");
        }
        Cond::Str { value, mode } => match mode {
            StrMode::Exact => {
                sql.push("x.exact = ").text(value);
            }
            StrMode::Contains => {
                sql.push("x.norm LIKE ").text(&like_contains(value)).push(" ESCAPE '\\'");
            }
            StrMode::Prefix => {
                // A range scan on the index: norm >= v AND norm < v-with-last-char-bumped.
                sql.push("x.norm >= ").text(value);
                if let Some(upper) = prefix_upper_bound(value) {
                    sql.push(" AND x.norm < ").text(&upper);
                }
            }
        },
        Cond::Date { prefix, lo, hi } => date_cond(sql, "x.lo", "x.hi", *prefix, *lo, *hi),
        Cond::Number { prefix, value, lo, hi } => number_cond(sql, *prefix, *value, *lo, *hi),
        Cond::Quantity { prefix, value, lo, hi, system, code } => {
            number_cond(sql, *prefix, *value, *lo, *hi);
            if let Some(s) = system {
                sql.push(" AND x.system = ").text(s);
            }
            if let Some(c) = code {
                sql.push(" AND x.code = ").text(c);
            }
        }
        Cond::Reference { target_type, id, url } => {
            let mut any = false;
            if let Some(id) = id {
                sql.push("x.ref_id = ").text(id);
                any = true;
            }
            if let Some(t) = target_type {
                sql.push(if any { " AND " } else { "" }).push("x.ref_type = ").text(t);
                any = true;
            }
            if let Some(u) = url {
                sql.push(if any { " AND " } else { "" }).push("x.url = ").text(u);
                any = true;
            }
            if !any {
                sql.push("1 = 0");
            }
        }
        Cond::Uri { value, below } => {
            if *below {
                sql.push("x.value >= ").text(value);
                if let Some(upper) = prefix_upper_bound(value) {
                    sql.push(" AND x.value < ").text(&upper);
                }
            } else {
                sql.push("x.value = ").text(value);
            }
        }
    }
}

/// Range semantics of FHIR date search: the resource's [rlo, rhi) against the value's [lo, hi).
fn date_cond(sql: &mut Sql, rlo: &str, rhi: &str, prefix: Prefix, lo: i64, hi: i64) {
    match prefix {
        Prefix::Eq => sql.push(rlo).push(" >= ").int(lo).push(" AND ").push(rhi).push(" <= ").int(hi),
        Prefix::Ne => {
            sql.push("NOT (").push(rlo).push(" >= ").int(lo).push(" AND ").push(rhi).push(" <= ").int(hi).push(")")
        }
        Prefix::Gt => sql.push(rhi).push(" > ").int(hi),
        Prefix::Ge => sql.push(rhi).push(" > ").int(lo),
        Prefix::Lt => sql.push(rlo).push(" < ").int(lo),
        Prefix::Le => sql.push(rlo).push(" < ").int(hi),
        Prefix::Sa => sql.push(rlo).push(" >= ").int(hi),
        Prefix::Eb => sql.push(rhi).push(" <= ").int(lo),
        Prefix::Ap => {
            // Approximately: overlaps the value widened by 10 % of its distance from now,
            // at least a day (a documented simplification).
            let widen = ((hi - lo) / 10).max(86_400_000);
            sql.push(rlo)
                .push(" < ")
                .int(hi.saturating_add(widen))
                .push(" AND ")
                .push(rhi)
                .push(" > ")
                .int(lo.saturating_sub(widen))
        }
    };
}

fn number_cond(sql: &mut Sql, prefix: Prefix, value: f64, lo: f64, hi: f64) {
    match prefix {
        Prefix::Eq => sql.push("x.value >= ").float(lo).push(" AND x.value < ").float(hi),
        Prefix::Ne => sql.push("NOT (x.value >= ").float(lo).push(" AND x.value < ").float(hi).push(")"),
        Prefix::Gt | Prefix::Sa => sql.push("x.value > ").float(value),
        Prefix::Lt | Prefix::Eb => sql.push("x.value < ").float(value),
        Prefix::Ge => sql.push("x.value >= ").float(value),
        Prefix::Le => sql.push("x.value <= ").float(value),
        Prefix::Ap => {
            let d = (value * 0.1).abs();
            sql.push("x.value >= ").float(value - d).push(" AND x.value <= ").float(value + d)
        }
    };
}

fn like_contains(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('%');
    for c in v.chars() {
        if matches!(c, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('%');
    s
}

/// The smallest string greater than every string starting with `v` (None: no bound).
fn prefix_upper_bound(v: &str) -> Option<String> {
    let mut chars: Vec<char> = v.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The SQL expression for a sort key, and whether it is numeric.
fn sort_expr(key: &SortKey) -> Option<(String, bool, Option<String>)> {
    let agg = if key.descending { "MAX" } else { "MIN" };
    Some(match &key.target {
        Target::Id => ("r.id".to_string(), false, None),
        Target::LastUpdated => ("r.lu_ms".to_string(), true, None),
        Target::Index { param, kind } => {
            let (table, col, numeric) = match kind {
                ParamType::String => ("idx_string", "norm", false),
                ParamType::Token => ("idx_token", "code", false),
                ParamType::Reference => ("idx_reference", "url", false),
                ParamType::Uri => ("idx_uri", "value", false),
                ParamType::Date => ("idx_date", if key.descending { "hi" } else { "lo" }, true),
                ParamType::Number => ("idx_number", "value", true),
                ParamType::Quantity => ("idx_quantity", "value", true),
                _ => return None,
            };
            (
                format!(
                    "(SELECT {agg}(s.{col}) FROM {table} s WHERE s.res_type = r.res_type AND s.id = r.id AND s.param = "
                ),
                numeric,
                Some(param.clone()),
            )
        }
    })
}

/// The page query: filters, keyset from the cursor, order, `count + 1` rows (the extra row
/// tells whether a next page exists).
pub(crate) fn page_query(permit: &SearchPermit, q: &SearchQuery) -> Sql {
    let mut sql = Sql::default();
    if q.sort.is_empty() {
        sql.push("SELECT ").push(COLUMNS).push(" FROM resources r");
        where_clause(&mut sql, permit, q);
        if let Some(c) = &q.cursor {
            sql.push(" AND r.seq > ").int(c.seq);
        }
        // `+r.seq` keeps SQLite from walking the whole type in sequence order when a
        // selective filter (a patient, an id) can drive the lookup; PostgreSQL ignores it.
        let order = if has_selective_filter(q) { " ORDER BY +r.seq LIMIT " } else { " ORDER BY r.seq LIMIT " };
        sql.push(order).int(q.count as i64 + 1);
        return sql;
    }
    // Sorted: compute each key (with a null flag so missing values sort last either way)
    // in an inner query, page on the outer one.
    sql.push("SELECT res_type, id, version_id, last_updated, seq, deleted, body, compartments, category");
    let keys: Vec<_> = q.sort.iter().filter_map(|k| sort_expr(k).map(|e| (k, e))).collect();
    for i in 0..keys.len() {
        sql.push(&format!(", f{i}, k{i}"));
    }
    sql.push(" FROM (SELECT ").push(COLUMNS);
    for (i, (_, (expr, numeric, param))) in keys.iter().enumerate() {
        let zero = if *numeric { "0" } else { "''" };
        // The parameter name is a bind value like everything else; `$n` may repeat.
        let e = match param {
            Some(p) => {
                sql.binds.push(Bind::Text(p.clone()));
                sql.reused = true;
                format!("{expr}${})", sql.binds.len())
            }
            None => expr.clone(),
        };
        // The flag is cast so both drivers return a 64-bit integer (PostgreSQL's CASE of
        // literals is int4, which the executor cannot read as i64).
        sql.push(&format!(
            ", CAST(CASE WHEN {e} IS NULL THEN 1 ELSE 0 END AS BIGINT) AS f{i}, COALESCE({e}, {zero}) AS k{i}"
        ));
    }
    sql.push(" FROM resources r");
    where_clause(&mut sql, permit, q);
    sql.push(") t");
    if let Some(c) = &q.cursor {
        keyset(&mut sql, &keys.iter().map(|(k, (_, numeric, _))| (k.descending, *numeric)).collect::<Vec<_>>(), c);
    }
    sql.push(" ORDER BY ");
    for (i, (k, _)) in keys.iter().enumerate() {
        sql.push(&format!("f{i}, k{i}{}, ", if k.descending { " DESC" } else { "" }));
    }
    sql.push("seq LIMIT ").int(q.count as i64 + 1);
    sql
}

/// `WHERE (f0, k0, …, seq) > cursor` in the mixed directions of the sort.
fn keyset(sql: &mut Sql, dirs: &[(bool, bool)], c: &Cursor) {
    // Terms in order: (column, descending, cursor value).
    let mut terms: Vec<(String, bool, Bind)> = Vec::new();
    for (i, (desc, numeric)) in dirs.iter().enumerate() {
        let flag = c.keys.get(2 * i).and_then(|v| v.as_i64()).unwrap_or(0);
        let val = c.keys.get(2 * i + 1);
        let bind = if *numeric {
            match val.and_then(|v| v.as_i64()) {
                Some(n) => Bind::Int(n),
                None => Bind::Float(val.and_then(|v| v.as_f64()).unwrap_or(0.0)),
            }
        } else {
            Bind::Text(val.and_then(|v| v.as_str()).unwrap_or_default().to_string())
        };
        terms.push((format!("f{i}"), false, Bind::Int(flag)));
        terms.push((format!("k{i}"), *desc, bind));
    }
    terms.push(("seq".into(), false, Bind::Int(c.seq)));
    sql.push(" WHERE (");
    for i in 0..terms.len() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        for (col, _, b) in &terms[..i] {
            sql.push(col).push(" = ").bind(b.clone()).push(" AND ");
        }
        let (col, desc, b) = &terms[i];
        sql.push(col).push(if *desc { " < " } else { " > " }).bind(b.clone());
        sql.push(")");
    }
    sql.push(")");
}

/// `SELECT COUNT(*)` over the same filters.
pub(crate) fn count_query(permit: &SearchPermit, q: &SearchQuery) -> Sql {
    let mut sql = Sql::default();
    sql.push("SELECT COUNT(*) AS n FROM resources r");
    where_clause(&mut sql, permit, q);
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bound() {
        assert_eq!(prefix_upper_bound("abc").as_deref(), Some("abd"));
        assert_eq!(prefix_upper_bound(""), None);
    }

    #[test]
    fn like_escapes_wildcards() {
        assert_eq!(like_contains("a%_\\"), "%a\\%\\_\\\\%");
    }

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut s = Sql::default();
        s.push("a = ").text("x").push(" AND b = ").int(1);
        assert_eq!(s.text, "a = $1 AND b = $2");
        assert_eq!(s.binds, vec![Bind::Text("x".into()), Bind::Int(1)]);
    }
}
