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

/// Derive facts (compartments, category, labels) and search index values for a body whose
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
        },
        body,
        index,
    }
}
