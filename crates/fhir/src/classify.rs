//! Data category and sensitivity labels of a resource, from an operator-editable rule table.
//!
//! The gate and the search SQL decide visibility by category (labs, vitals, …) and by
//! sensitivity labels (HL7 v3 ActCode: PSY, ETH, HIV …) plus a confidentiality code
//! (N, R, V …). Both are derived once, when a resource is stored, by [`Classifier::classify`]
//! and stored beside it. The rules are data (`data/classification.json`, format in
//! `data/README-classification.md`) so that an operator can adapt them to local coding and
//! law without a rebuild.
//!
//! Semantics, in short:
//! - **category**: the first rule (in file order) that matches and sets a category wins;
//!   no match gives `other`;
//! - **labels**: every matching rule contributes its labels; sensitivity labels already in
//!   `meta.security` (v3-ActCode) are kept, and so is a v3-Confidentiality code there;
//! - **confidentiality**: the highest of `N` (default), any confidentiality code from rules
//!   or `meta.security`, and `R` when there is any sensitivity label.
//!
//! Only the resource's own codings are examined, not contained resources or referenced ones.

mod rules;

#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use serde_json::Value;

use rules::Rule;
pub use rules::{CATEGORIES, CONFIDENTIALITY, DEFAULT_PATHS, KNOWN_PATHS, SENSITIVITY_LABELS};

const BUILTIN_RULES: &str = include_str!("../data/classification.json");

/// Security-label code systems whose codes in `meta.security` are kept.
const ACT_CODE_SYSTEMS: &[&str] =
    &["http://terminology.hl7.org/CodeSystem/v3-ActCode", "http://hl7.org/fhir/v3/ActCode"];
const CONFIDENTIALITY_SYSTEMS: &[&str] =
    &["http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "http://hl7.org/fhir/v3/Confidentiality"];
/// `meta.security` is client input: keep at most this many labels, of sane shape.
const MAX_KEPT_LABELS: usize = 16;

/// Where a resource belongs and how sensitive it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// One of [`CATEGORIES`].
    pub category: String,
    /// Sensitivity labels, sorted and unique, followed by exactly one confidentiality code
    /// (one of [`CONFIDENTIALITY`]), which is always the last element.
    pub labels: Vec<String>,
}

impl Classification {
    /// The confidentiality code (`N`, `R`, `V`, …).
    pub fn confidentiality(&self) -> &str {
        self.labels.last().map_or("N", String::as_str)
    }

    /// The sensitivity labels (all labels but the confidentiality code).
    pub fn sensitivity(&self) -> &[String] {
        match self.labels.split_last() {
            Some((_, rest)) => rest,
            None => &[],
        }
    }
}

/// A validated rule table.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Vec<Rule>,
}

impl Classifier {
    /// Parse and validate a rule file. Unknown categories, labels, paths, resource types or
    /// keys, and rules that could never (or would always) match, are errors naming the rule.
    pub fn from_json(s: &str) -> Result<Classifier, String> {
        rules::parse(s).map(|rules| Classifier { rules })
    }

    /// The rules shipped with portico (`data/classification.json`).
    pub fn builtin() -> &'static Classifier {
        static BUILTIN: OnceLock<Classifier> = OnceLock::new();
        BUILTIN.get_or_init(|| match Classifier::from_json(BUILTIN_RULES) {
            Ok(c) => c,
            // Embedded data: a broken file is a build defect, caught by `builtin_rules_load`.
            Err(e) => panic!("embedded data/classification.json is invalid: {e}"),
        })
    }

    /// Classify one resource. `resource_type` is the type the server stores it under (the
    /// caller has already checked it equals the body's `resourceType`).
    pub fn classify(&self, resource_type: &str, resource: &Value) -> Classification {
        let mut category: Option<&'static str> = None;
        let mut sensitivity: Vec<String> = Vec::new();
        let mut confidentiality = rank("N");

        for rule in &self.rules {
            if rule.category.is_none() && rule.labels.is_empty() {
                continue;
            }
            // Category already decided and nothing to add: skip the coding scan.
            if category.is_some() && rule.labels.is_empty() {
                continue;
            }
            if !rule_matches(rule, resource_type, resource) {
                continue;
            }
            if category.is_none() {
                category = rule.category;
            }
            for label in &rule.labels {
                match CONFIDENTIALITY.iter().position(|c| c == label) {
                    Some(r) => confidentiality = confidentiality.max(r),
                    None => sensitivity.push((*label).to_owned()),
                }
            }
        }

        for (system, code) in codings_at(resource, &["meta", "security"]) {
            if !is_label_code(code) {
                continue;
            }
            if CONFIDENTIALITY_SYSTEMS.contains(&system.unwrap_or_default()) {
                if let Some(r) = CONFIDENTIALITY.iter().position(|c| *c == code) {
                    confidentiality = confidentiality.max(r);
                }
            } else if ACT_CODE_SYSTEMS.contains(&system.unwrap_or_default()) && sensitivity.len() < MAX_KEPT_LABELS {
                sensitivity.push(code.to_owned());
            }
        }

        sensitivity.sort_unstable();
        sensitivity.dedup();
        if !sensitivity.is_empty() {
            confidentiality = confidentiality.max(rank("R"));
        }
        let mut labels = sensitivity;
        labels.push(CONFIDENTIALITY[confidentiality].to_owned());
        Classification { category: category.unwrap_or("other").to_owned(), labels }
    }
}

fn rank(code: &str) -> usize {
    CONFIDENTIALITY.iter().position(|c| *c == code).unwrap_or(3)
}

/// Label codes copied from client input must look like codes: short, no spaces/controls.
fn is_label_code(code: &str) -> bool {
    (1..=32).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn rule_matches(rule: &Rule, resource_type: &str, resource: &Value) -> bool {
    if !rule.resource_types.is_empty() && !rule.resource_types.iter().any(|t| t == resource_type) {
        return false;
    }
    if !rule.has_coding_criteria() {
        return true;
    }
    rule.paths
        .iter()
        .any(|path| codings_at(resource, path).into_iter().any(|(system, code)| coding_matches(rule, system, code)))
}

fn coding_matches(rule: &Rule, system: Option<&str>, code: &str) -> bool {
    if !rule.systems.is_empty() && !system.is_some_and(|s| rule.systems.iter().any(|r| r == s)) {
        return false;
    }
    if !rule.has_code_criteria() {
        return true;
    }
    rule.codes.iter().any(|c| c == code)
        || rule.prefixes.iter().any(|p| code.starts_with(p.as_str()))
        || rule
            .ranges
            .iter()
            .any(|(lo, hi)| code.get(..lo.len()).is_some_and(|head| lo.as_str() <= head && head <= hi.as_str()))
}

/// Every (system, code) of the Codings found at `path`: follows objects, flattens arrays,
/// and at the end accepts a CodeableConcept (its `coding` list) or a bare Coding.
fn codings_at<'v, S: AsRef<str>>(resource: &'v Value, path: &[S]) -> Vec<(Option<&'v str>, &'v str)> {
    let mut found = Vec::new();
    collect(resource, path, &mut found);
    found
}

fn collect<'v, S: AsRef<str>>(value: &'v Value, path: &[S], out: &mut Vec<(Option<&'v str>, &'v str)>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| collect(item, path, out)),
        Value::Object(obj) => match path.split_first() {
            Some((head, rest)) => {
                if let Some(next) = obj.get(head.as_ref()) {
                    collect(next, rest, out);
                }
            }
            None => match obj.get("coding") {
                Some(coding) => collect::<&str>(coding, &[], out),
                None => {
                    if let Some(Value::String(code)) = obj.get("code") {
                        out.push((obj.get("system").and_then(Value::as_str), code.as_str()));
                    }
                }
            },
        },
        _ => {}
    }
}
