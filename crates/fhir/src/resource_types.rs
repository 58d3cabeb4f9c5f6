//! The closed set of FHIR R4 resource type names.
//!
//! URL segments, references and `resourceType` fields are all checked against this list,
//! so an unknown or mis-cased type is rejected before it can reach storage or SQL.
//! The list is generated (`tools/gen_fhir_tables.py`) and embedded at compile time.

use std::sync::OnceLock;

const DATA: &str = include_str!("../data/resource-types.json");

fn table() -> &'static [&'static str] {
    static TABLE: OnceLock<Vec<&'static str>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // Embedded, generated and covered by tests: a failure here is a build defect.
        let mut v: Vec<&'static str> =
            serde_json::from_str(DATA).expect("data/resource-types.json is a JSON string array");
        v.sort_unstable();
        v
    })
}

/// True for a concrete R4 resource type (case-sensitive: `Patient`, not `patient`).
/// The abstract `Resource` and `DomainResource` are not resource types.
pub fn is_resource_type(name: &str) -> bool {
    table().binary_search(&name).is_ok()
}

/// Every R4 resource type, sorted.
pub fn all() -> &'static [&'static str] {
    table()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_all_r4_types() {
        assert_eq!(all().len(), 146);
        for t in ["Patient", "Observation", "Parameters", "Bundle", "Binary", "Consent"] {
            assert!(is_resource_type(t), "{t}");
        }
        for t in ["patient", "Resource", "DomainResource", "", "Patient "] {
            assert!(!is_resource_type(t), "{t}");
        }
    }
}
