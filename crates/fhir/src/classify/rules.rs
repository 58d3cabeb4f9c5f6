//! Parsing and validating a classification rule file (format: `data/README-classification.md`).
//!
//! Parsed by hand from a `serde_json::Value` rather than derived: every mistake gets a message
//! naming the rule and the field ("rule 12: unknown category \"lab\""), which is what an
//! operator editing the file needs, and unknown keys are refused so a typo (`"lables"`)
//! cannot silently disable a rule.

use serde_json::{Map, Value};

/// Category ids, stable and lower-case; the order is the documentation order.
pub const CATEGORIES: &[&str] = &[
    "labs",
    "vitals",
    "imaging",
    "notes",
    "medications",
    "conditions",
    "allergies",
    "immunizations",
    "procedures",
    "encounters",
    "insurance",
    "documents",
    "demographics",
    "care-plans",
    "administrative",
    "other",
];

/// Sensitivity labels a rule may assign (HL7 v3 ActCode information-sensitivity codes).
pub const SENSITIVITY_LABELS: &[&str] =
    &["BH", "ETH", "GDIS", "HIV", "MH", "PSY", "SCA", "SDV", "SEX", "STD", "SUD", "TBOO"];

/// Confidentiality codes (HL7 v3 Confidentiality), lowest to highest.
pub const CONFIDENTIALITY: &[&str] = &["U", "L", "M", "N", "R", "V"];

/// Fields a rule may look for codings in (dotted paths through nested elements/arrays).
pub const KNOWN_PATHS: &[&str] = &[
    "code",
    "category",
    "type",
    "class",
    "valueCodeableConcept",
    "reasonCode",
    "medicationCodeableConcept",
    "vaccineCode",
    "serviceType",
    "serviceCategory",
    "specialty",
    "context.practiceSetting",
    "component.code",
];

/// Where a rule looks when it names no `path`.
pub const DEFAULT_PATHS: &[&str] = &["code", "category", "type", "valueCodeableConcept", "reasonCode"];

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Empty: any resource type.
    pub resource_types: Vec<String>,
    /// Split dotted paths; only used when the rule has coding criteria.
    pub paths: Vec<Vec<String>>,
    /// Empty: any system.
    pub systems: Vec<String>,
    pub codes: Vec<String>,
    pub prefixes: Vec<String>,
    /// Inclusive ranges over the code's first `lo.len()` characters (`F20`–`F48`).
    pub ranges: Vec<(String, String)>,
    pub category: Option<&'static str>,
    /// Sensitivity and/or confidentiality codes.
    pub labels: Vec<&'static str>,
}

impl Rule {
    pub fn has_coding_criteria(&self) -> bool {
        !self.systems.is_empty() || self.has_code_criteria()
    }
    pub fn has_code_criteria(&self) -> bool {
        !(self.codes.is_empty() && self.prefixes.is_empty() && self.ranges.is_empty())
    }
}

pub(crate) fn parse(text: &str) -> Result<Vec<Rule>, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let root = root.as_object().ok_or("the rule file must be a JSON object")?;
    for key in root.keys() {
        if !matches!(key.as_str(), "rules" | "_about" | "version") {
            return Err(format!("unknown top-level key \"{}\"", short(key)));
        }
    }
    let rules = root.get("rules").and_then(Value::as_array).ok_or("\"rules\" must be a list")?;
    rules.iter().enumerate().map(|(i, rule)| parse_rule(rule).map_err(|e| format!("rule {}: {e}", i + 1))).collect()
}

fn parse_rule(rule: &Value) -> Result<Rule, String> {
    let rule = rule.as_object().ok_or("must be an object")?;
    for key in rule.keys() {
        if !matches!(key.as_str(), "match" | "category" | "labels" | "note") {
            return Err(format!("unknown key \"{}\"", short(key)));
        }
    }
    let m = rule.get("match").and_then(Value::as_object).ok_or("\"match\" must be an object")?;
    for key in m.keys() {
        if !matches!(key.as_str(), "resourceType" | "path" | "system" | "code" | "codePrefix" | "codeRange") {
            return Err(format!("unknown match key \"{}\"", short(key)));
        }
    }
    let resource_types = strings(m, "resourceType")?;
    if let Some(bad) = resource_types.iter().find(|t| !crate::validate::is_known_resource_type(t)) {
        return Err(format!("unknown resource type \"{}\"", short(bad)));
    }
    let path_names = strings(m, "path")?;
    if let Some(bad) = path_names.iter().find(|p| !KNOWN_PATHS.contains(&p.as_str())) {
        return Err(format!("unknown path \"{}\" (known: {})", short(bad), KNOWN_PATHS.join(", ")));
    }
    let ranges = match m.get("codeRange") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(parse_range).collect::<Result<_, _>>()?,
        Some(_) => return Err("\"codeRange\" must be a list of [low, high] pairs".into()),
    };
    let category = match rule.get("category") {
        None => None,
        Some(Value::String(c)) => Some(
            *CATEGORIES
                .iter()
                .find(|k| **k == c.as_str())
                .ok_or_else(|| format!("unknown category \"{}\" (known: {})", short(c), CATEGORIES.join(", ")))?,
        ),
        Some(_) => return Err("\"category\" must be a string".into()),
    };
    let labels = strings(rule, "labels")?
        .iter()
        .map(|l| {
            SENSITIVITY_LABELS
                .iter()
                .chain(CONFIDENTIALITY)
                .find(|k| **k == l.as_str())
                .copied()
                .ok_or_else(|| format!("unknown label \"{}\"", short(l)))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let paths =
        if path_names.is_empty() { DEFAULT_PATHS.iter().map(|p| p.to_string()).collect() } else { path_names.clone() };
    let parsed = Rule {
        resource_types,
        paths: paths.iter().map(|p| p.split('.').map(str::to_owned).collect()).collect(),
        systems: strings(m, "system")?,
        codes: strings(m, "code")?,
        prefixes: strings(m, "codePrefix")?,
        ranges,
        category,
        labels,
    };
    if category.is_none() && parsed.labels.is_empty() {
        return Err("a rule must set a \"category\" or \"labels\"".into());
    }
    if parsed.resource_types.is_empty() && !parsed.has_coding_criteria() {
        return Err("\"match\" must name a resourceType, a system or codes".into());
    }
    if !path_names.is_empty() && !parsed.has_coding_criteria() {
        return Err("\"path\" needs a \"system\" or code criteria to match".into());
    }
    if parsed.prefixes.iter().any(String::is_empty) {
        return Err("an empty \"codePrefix\" would match every code".into());
    }
    Ok(parsed)
}

fn parse_range(v: &Value) -> Result<(String, String), String> {
    match v.as_array().map(Vec::as_slice) {
        Some([Value::String(lo), Value::String(hi)]) if !lo.is_empty() && lo.len() == hi.len() && lo <= hi => {
            Ok((lo.clone(), hi.clone()))
        }
        _ => Err("each \"codeRange\" entry must be [low, high]: non-empty, equal length, low <= high".into()),
    }
}

/// A string or a list of strings (absent: empty).
fn strings(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match obj.get(key) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| format!("\"{key}\" must hold strings")))
            .collect(),
        Some(_) => Err(format!("\"{key}\" must be a string or a non-empty list of strings")),
    }
}

/// Echo at most a few characters of operator input in messages.
fn short(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((cut, _)) => &s[..cut],
        None => s,
    }
}
