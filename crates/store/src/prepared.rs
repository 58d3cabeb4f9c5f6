//! A resource made ready to store: its facts for the gate and its index values, computed
//! once from the body.

use portico_fhir::classify::Classifier;
use portico_fhir::{IndexValue, compartment, extract};
use portico_policy::ResourceFacts;
use serde_json::Value;

/// The body plus everything derived from it.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub body: Value,
    pub facts: ResourceFacts,
    pub index: Vec<IndexValue>,
}

/// Derive facts (compartments, category, labels, clinical date, author) and search index values for a body whose
/// `resourceType` and `id` are already set and validated.
pub fn prepare(resource_type: &str, id: &str, body: Value, classifier: &Classifier) -> Prepared {
    let compartments = compartment::patient_compartments(resource_type, &body);
    let class = classifier.classify(resource_type, &body);
    let index = extract::index_values(resource_type, &body);
    Prepared {
        facts: ResourceFacts {
            resource_type: resource_type.to_string(),
            id: Some(id.to_string()),
            version: None,
            compartments,
            category: class.category,
            labels: class.labels,
            category_codes: category_codes(&body),
            date_ms: portico_policy::extract::clinical_date_ms(&body),
            author: portico_policy::extract::author_reference(&body),
        },
        body,
        index,
    }
}

/// The resource's own `category` codings as `system|code` (what SMART scopes narrowed with
/// `?category=` are matched against). Resources whose `category` is not a CodeableConcept
/// (AllergyIntolerance's codes) have none.
pub(crate) fn category_codes(body: &Value) -> Vec<String> {
    let concepts: Vec<&Value> = match body.get("category") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    };
    let mut codes: Vec<String> = concepts
        .iter()
        .filter_map(|c| c.get("coding").and_then(Value::as_array))
        .flatten()
        .filter_map(|coding| {
            let code = coding.get("code")?.as_str()?;
            let system = coding.get("system").and_then(Value::as_str).unwrap_or("");
            Some(format!("{system}|{code}"))
        })
        .collect();
    codes.sort();
    codes.dedup();
    codes
}

#[cfg(test)]
mod tests {
    use super::category_codes;
    use serde_json::json;

    #[test]
    fn category_codings_become_system_bar_code() {
        let body = json!({"category": [{"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"},
            {"code": "local"}]}]});
        assert_eq!(
            category_codes(&body),
            vec!["http://terminology.hl7.org/CodeSystem/observation-category|laboratory", "|local"]
        );
        assert!(category_codes(&json!({"category": ["food"]})).is_empty());
    }
}
