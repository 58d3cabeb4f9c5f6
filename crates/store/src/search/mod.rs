//! FHIR search: the parsed query ([`SearchQuery`]), its parser from URL parameters, the SQL
//! it compiles to, and paging cursors.

pub(crate) mod consent;
mod cursor;
pub(crate) mod exec;
pub(crate) mod limits;
mod parse;
pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod test_stores;
#[cfg(test)]
pub(crate) mod testdb;

pub use cursor::Cursor;
pub use parse::{ParseError, Parsed, parse_search};

use crate::StoredVersion;
use portico_fhir::search_params::ParamType;

/// Upper bound of `_count`, advertised in the CapabilityStatement.
pub const MAX_COUNT: usize = 1000;
/// `_count` when the client gives none.
pub const DEFAULT_COUNT: usize = 50;
/// Most resources `_include`/`_revinclude` add to one page.
pub const MAX_INCLUDED: usize = 1000;

/// Comparison prefix of date, number and quantity values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

/// How a string value matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrMode {
    Prefix,
    Exact,
    Contains,
}

/// One alternative (comma-separated value) of a search parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `system|code`, `|code` (no system: `system = Some(None)`), `system|`, `code`.
    Token {
        system: Option<Option<String>>,
        code: Option<String>,
    },
    /// `:text` on a token: match in the display/text.
    TokenText(String),
    Str {
        value: String,
        mode: StrMode,
    },
    /// A date range [lo, hi) in epoch ms with its prefix.
    Date {
        prefix: Prefix,
        lo: i64,
        hi: i64,
    },
    /// A number with its implicit precision range [lo, hi).
    Number {
        prefix: Prefix,
        value: f64,
        lo: f64,
        hi: f64,
    },
    Quantity {
        prefix: Prefix,
        value: f64,
        lo: f64,
        hi: f64,
        system: Option<String>,
        code: Option<String>,
    },
    /// Reference: by type and id, by id alone, or by exact URL.
    Reference {
        target_type: Option<String>,
        id: Option<String>,
        url: Option<String>,
    },
    Uri {
        value: String,
        below: bool,
    },
}

/// Where a parameter's values live.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The logical id column.
    Id,
    /// The lastUpdated column.
    LastUpdated,
    /// An index table for a search parameter.
    Index { param: String, kind: ParamType },
}

/// One search parameter occurrence: the alternatives are ORed, occurrences are ANDed.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub target: Target,
    /// `:not` (tokens) and `ne`-style negation of the whole occurrence.
    pub negate: bool,
    /// `:missing=true|false`; when set, `alternatives` is empty.
    pub missing: Option<bool>,
    pub alternatives: Vec<Cond>,
}

/// One `_sort` key.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub target: Target,
    pub descending: bool,
}

/// `_include` / `_revinclude` (non-iterative): `source:param[:target]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    pub source_type: String,
    pub param: String,
    pub target_type: Option<String>,
}

/// A parsed search, ready to compile to SQL.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchQuery {
    /// Types searched (empty: every type — `$everything` and system search).
    pub resource_types: Vec<String>,
    /// Confine to one patient's compartment (`$everything`, `Patient/{id}/Type`).
    pub in_compartment: Option<String>,
    /// Only resources changed at or after this instant (epoch ms).
    pub since_ms: Option<i64>,
    pub filters: Vec<Filter>,
    pub sort: Vec<SortKey>,
    pub count: usize,
    pub cursor: Option<Cursor>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    /// Compute the total number of matches (`_total=accurate`, `_summary=count`).
    pub total: bool,
    /// Only the count is wanted (`_summary=count`): no entries.
    pub count_only: bool,
}

/// A history request: instance (`type` + `id`), type (`type`) or system (neither).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryQuery {
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub since_ms: Option<i64>,
    pub at_ms: Option<i64>,
    pub count: usize,
    pub cursor: Option<Cursor>,
}

/// One page of results.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub entries: Vec<StoredVersion>,
    pub included: Vec<StoredVersion>,
    /// Cursor for the next page, if there is one.
    pub next: Option<Cursor>,
    pub total: Option<i64>,
}
