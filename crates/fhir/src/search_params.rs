//! The R4 search parameter table, per resource type, with compiled expressions.
//!
//! Built once from the embedded `data/search-parameters.json` (generated from the official
//! R4 definitions by `tools/gen_fhir_tables.py`). The official table shares one expression
//! among many bases (`AllergyIntolerance.code | Condition.code | …`); each type here keeps
//! only its own branches, so evaluation on every write does no wasted work and the
//! CapabilityStatement can show each type its own expression. The `Resource`-level
//! parameters (`_id`, `_lastUpdated`, `_tag`, `_security`, `_profile`, `_source`, …) are
//! copied into every type, `DomainResource`-level ones (`_text`) into every type except
//! Bundle, Binary and Parameters. `_text`, `_content` and `_query` have no expression.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use crate::fhirpath::{Compiled, Typed};
use crate::resource_types;

const DATA: &str = include_str!("../data/search-parameters.json");

/// The R4 search parameter types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    /// The FHIR code (`token`, `date`, …), as the CapabilityStatement writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Special => "special",
        }
    }

    /// Parse a FHIR search parameter type code.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "number" => ParamType::Number,
            "date" => ParamType::Date,
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "composite" => ParamType::Composite,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            "special" => ParamType::Special,
            _ => return None,
        })
    }
}

/// One part of a composite parameter: the component's parameter code and its expression,
/// relative to each node the composite's own expression selects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Component {
    pub code: String,
    pub expression: String,
}

/// A search parameter as it applies to one resource type.
#[derive(Debug, Clone)]
pub struct SearchParam {
    pub code: String,
    pub kind: ParamType,
    /// FHIRPath, only the branches for this resource type; empty for `_text`, `_content`,
    /// `_query` (the server implements those itself).
    pub expression: String,
    /// Allowed target types of a reference parameter (empty otherwise).
    pub targets: Vec<String>,
    /// Components of a composite parameter (empty otherwise).
    pub components: Vec<Component>,
    compiled: Option<Compiled>,
}

impl SearchParam {
    /// The parsed expression (`None` when there is none).
    pub fn compiled(&self) -> Option<&Compiled> {
        self.compiled.as_ref()
    }

    /// Evaluate this parameter's expression on a resource of its type.
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Vec<Typed<'a>> {
        self.compiled.as_ref().map(|c| c.evaluate_typed(resource)).unwrap_or_default()
    }
}

/// The parameter `code` of `resource_type` (including the Resource-level ones), if any.
pub fn lookup(resource_type: &str, code: &str) -> Option<&'static SearchParam> {
    let params = registry().get(resource_type)?;
    params.binary_search_by(|p| p.code.as_str().cmp(code)).ok().and_then(|i| params.get(i))
}

/// Every parameter of `resource_type`, sorted by code (empty for an unknown type).
pub fn params_for(resource_type: &str) -> Vec<&'static SearchParam> {
    all_for(resource_type).iter().collect()
}

/// Like [`params_for`], without allocating: the table's own sorted slice.
pub fn all_for(resource_type: &str) -> &'static [SearchParam] {
    registry().get(resource_type).map_or(&[], Vec::as_slice)
}

#[derive(Deserialize)]
struct Row {
    code: String,
    base: Vec<String>,
    #[serde(rename = "type")]
    kind: String,
    expression: String,
    target: Vec<String>,
    #[serde(default)]
    component: Vec<Component>,
}

fn registry() -> &'static HashMap<&'static str, Vec<SearchParam>> {
    static REGISTRY: OnceLock<HashMap<&'static str, Vec<SearchParam>>> = OnceLock::new();
    REGISTRY.get_or_init(build)
}

fn build() -> HashMap<&'static str, Vec<SearchParam>> {
    // Embedded, generated and covered by tests: a failure here is a build defect.
    let rows: Vec<Row> = serde_json::from_str(DATA).expect("data/search-parameters.json matches its schema");
    let mut by_type: HashMap<&'static str, Vec<SearchParam>> =
        resource_types::all().iter().map(|t| (*t, Vec::new())).collect();
    for row in &rows {
        let Some(kind) = ParamType::from_code(&row.kind) else {
            continue;
        };
        for base in &row.base {
            let applies_to: Vec<&'static str> = match base.as_str() {
                "Resource" => resource_types::all().to_vec(),
                "DomainResource" => resource_types::all()
                    .iter()
                    .copied()
                    .filter(|t| !matches!(*t, "Bundle" | "Binary" | "Parameters"))
                    .collect(),
                other => resource_types::all().iter().copied().filter(|t| *t == other).collect(),
            };
            if applies_to.is_empty() {
                continue;
            }
            let expression = expression_for(&row.expression, base);
            let compiled = Compiled::parse(&expression).ok();
            let param = SearchParam {
                code: row.code.clone(),
                kind,
                expression,
                targets: row.target.clone(),
                components: row.component.clone(),
                compiled,
            };
            for t in applies_to {
                if let Some(list) = by_type.get_mut(t) {
                    list.push(param.clone());
                }
            }
        }
    }
    for list in by_type.values_mut() {
        list.sort_by(|a, b| a.code.cmp(&b.code));
        list.dedup_by(|a, b| a.code == b.code);
    }
    by_type
}

/// Keep the union branches of `expr` that belong to `base`: those rooted at `base`, at
/// `Resource`/`DomainResource`, or not rooted at a type at all (`name | alias`). If no
/// branch qualifies the whole expression is kept (evaluation filters by type anyway).
pub(crate) fn expression_for(expr: &str, base: &str) -> String {
    let kept: Vec<&str> = split_union(expr)
        .into_iter()
        .filter(|branch| match branch_root(branch) {
            Some(root) => {
                root == base
                    || root == "Resource"
                    || root == "DomainResource"
                    || !resource_types::is_resource_type(root)
            }
            None => true,
        })
        .collect();
    if kept.is_empty() { expr.trim().to_owned() } else { kept.join(" | ") }
}

/// Split at `|` outside parentheses, brackets and string literals.
fn split_union(expr: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut escaped, mut start) = (0i32, None, false, 0);
    for (i, c) in expr.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '`' => quote = Some(c),
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            '|' if depth == 0 => {
                parts.push(expr[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(expr[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The first identifier of a branch, past any opening parentheses.
fn branch_root(branch: &str) -> Option<&str> {
    let s = branch.trim_start_matches(|c: char| c == '(' || c.is_whitespace());
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_known_and_every_expression_parses() {
        let rows: Vec<Row> = serde_json::from_str(DATA).unwrap_or_default();
        assert_eq!(rows.len(), 1378);
        for row in &rows {
            assert!(ParamType::from_code(&row.kind).is_some(), "{}", row.kind);
        }
        let mut n = 0;
        for t in resource_types::all() {
            for p in all_for(t) {
                n += 1;
                assert_eq!(p.compiled().is_some(), !p.expression.is_empty(), "{t}.{}: {}", p.code, p.expression);
                for c in &p.components {
                    assert!(Compiled::parse(&c.expression).is_ok(), "{t}.{} {}", p.code, c.expression);
                }
            }
        }
        assert!(n > 2500, "{n}");
    }

    #[test]
    fn multi_base_expressions_are_split() {
        let code = lookup("Condition", "code").map(|p| p.expression.as_str());
        assert_eq!(code, Some("Condition.code"));
        let code = lookup("AllergyIntolerance", "code").map(|p| p.expression.as_str());
        assert_eq!(code, Some("AllergyIntolerance.code | AllergyIntolerance.reaction.substance"));
        let med = lookup("MedicationRequest", "code").map(|p| p.expression.as_str());
        assert_eq!(med, Some("(MedicationRequest.medication as CodeableConcept)"));
        let pat = lookup("Observation", "patient").map(|p| p.expression.as_str());
        assert_eq!(pat, Some("Observation.subject.where(resolve() is Patient)"));
        let date = lookup("Observation", "date").map(|p| p.expression.as_str());
        assert_eq!(date, Some("Observation.effective"));
        let name = lookup("InsurancePlan", "name").map(|p| p.expression.as_str());
        assert_eq!(name, Some("name | alias"));
        let email = lookup("Patient", "email").map(|p| p.expression.as_str());
        assert_eq!(email, Some("Patient.telecom.where(system='email')"));
        let combo = lookup("Observation", "combo-code-value-quantity");
        assert_eq!(combo.map(|p| p.components.len()), Some(2));
        assert_eq!(combo.map(|p| p.kind), Some(ParamType::Composite));
    }

    #[test]
    fn resource_level_params_everywhere() {
        for t in ["Patient", "Parameters", "Binary", "Observation"] {
            for code in ["_id", "_lastUpdated", "_tag", "_security", "_profile", "_source"] {
                assert!(lookup(t, code).is_some(), "{t}.{code}");
            }
        }
        assert!(lookup("Patient", "_text").is_some());
        assert!(lookup("Bundle", "_text").is_none());
        assert_eq!(lookup("Observation", "_tag").map(|p| p.kind), Some(ParamType::Token));
        assert!(lookup("Nope", "_id").is_none());
        assert!(lookup("Patient", "nope").is_none());
        let codes: Vec<&str> = params_for("Patient").iter().map(|p| p.code.as_str()).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        assert_eq!(codes, sorted);
        assert!(codes.contains(&"birthdate") && codes.contains(&"general-practitioner"));
        assert_eq!(lookup("Encounter", "subject").map(|p| p.targets.contains(&"Patient".to_owned())), Some(true));
    }

    #[test]
    fn union_splitting_respects_nesting() {
        assert_eq!(split_union("a.where(x='|') | (b | c) | d[0]"), vec!["a.where(x='|')", "(b | c)", "d[0]"]);
        assert_eq!(branch_root("  ((Observation.value as Quantity)"), Some("Observation"));
        assert_eq!(branch_root("%resource"), None);
    }
}
