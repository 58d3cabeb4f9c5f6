//! Structural validation of FHIR R4 resources (JSON form), before anything is stored.
//!
//! What is checked (and why it is ours to check: the typed `fhir` crate drops unknown
//! elements and skips id/date formats, see STACK.md pitfall 9):
//! - `resourceType` is present and a known R4 type;
//! - every element exists on its type (from the R4 JSON Schema, compacted by
//!   `tools/gen_fhir_schema.py` into `data/schema-r4.json`), including expanded choice types
//!   (`valueQuantity`) and `_x` primitive-extension companions;
//! - each element has the right JSON kind and cardinality form (array or single);
//! - primitive formats (ids, dates with a real calendar, instants, integers in range, codes,
//!   URIs, base64 …) and required-binding codes (`gender`, `status` …);
//! - `Reference.reference` shapes, local `#id` references resolve to a contained resource;
//! - contained resources recursively (and not nested), Bundle entries recursively;
//! - narrative XHTML has no scripts, event handlers or script URLs.
//!
//! What is deliberately *not* checked: minimum cardinality other than `resourceType` (the
//! R4 schema's `required` lists are unreliable), invariants, profiles and terminology beyond
//! required bindings.
//!
//! Unknown elements are reported as `Severity::Error` with code `"structure"` and
//! diagnostics starting `"Unknown element"` ([`is_unknown_element`]), so the server can
//! downgrade exactly those under `Prefer: handling=lenient`.

mod primitives;
mod reference;
mod schema;
mod temporal;
mod walk;
mod xhtml;

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod tests;

use serde_json::Value;

/// How bad an issue is. `Error` means the resource must not be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding, shaped like an OperationOutcome.issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    /// FHIR IssueType code: "structure", "invalid", "value", "required", "code-invalid",
    /// "not-supported" or "too-long".
    pub code: &'static str,
    /// Human-readable; quotes at most a short excerpt of the offending value.
    pub diagnostics: String,
    /// FHIRPath-like location, e.g. `Patient.name[0].family`.
    pub expression: Option<String>,
}

/// Prefix of the diagnostics of every unknown-element issue (see [`is_unknown_element`]).
const UNKNOWN_ELEMENT: &str = "Unknown element";

/// Is this an "element not defined on this type" issue? Those are the only issues a server
/// may downgrade to warnings under lenient handling.
pub fn is_unknown_element(issue: &Issue) -> bool {
    issue.code == "structure" && issue.diagnostics.starts_with(UNKNOWN_ELEMENT)
}

/// Validate one resource. Never panics; an empty result means "valid". Issues are capped
/// (see `walk::MAX_ISSUES`): past the cap a single summary issue stands for the rest,
/// keeping the error/unknown-element/warning distinction.
pub fn validate_resource(resource: &Value) -> Vec<Issue> {
    walk::Walker::new(schema::schema()).run(resource)
}

/// Is `name` an R4 resource type (from the same schema the validator uses)?
pub fn is_known_resource_type(name: &str) -> bool {
    schema::schema().is_resource_type(name)
}
