//! The values a resource contributes to the search index, one per extracted element.

/// One extracted search value. `param` is the search parameter code (e.g. `code`,
/// `subject`, `date`). Numbers are `f64` *only* for comparison in SQL; the resource body
/// keeps the exact decimal text.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// token: Coding/CodeableConcept/Identifier/code/boolean/ContactPoint.
    /// `text` carries CodeableConcept.text / Coding.display for `:text`.
    Token { param: String, system: Option<String>, code: String, text: Option<String> },
    /// string: `norm` is lower-cased, accents stripped, whitespace collapsed (prefix
    /// match and `:contains` use it); `exact` is the value as written (`:exact`).
    Str { param: String, norm: String, exact: String },
    /// date: the instant range the value covers, in epoch milliseconds, inclusive low,
    /// exclusive high (a date `2020-01` covers [2020-01-01T00:00Z, 2020-02-01T00:00Z)).
    Date { param: String, low: i64, high: i64 },
    /// reference: `target_type`/`target_id` for relative (`Patient/1`) or absolute URLs whose
    /// tail is `Type/id`; `url` is the reference string as written.
    Reference { param: String, target_type: Option<String>, target_id: Option<String>, url: String },
    /// number.
    Number { param: String, value: f64 },
    /// quantity: value plus system and code (or unit when no code).
    Quantity { param: String, value: f64, system: Option<String>, code: Option<String> },
    /// uri (also canonical).
    Uri { param: String, value: String },
}

impl IndexValue {
    /// The search parameter this value belongs to.
    pub fn param(&self) -> &str {
        match self {
            IndexValue::Token { param, .. }
            | IndexValue::Str { param, .. }
            | IndexValue::Date { param, .. }
            | IndexValue::Reference { param, .. }
            | IndexValue::Number { param, .. }
            | IndexValue::Quantity { param, .. }
            | IndexValue::Uri { param, .. } => param,
        }
    }
}
