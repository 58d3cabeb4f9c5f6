//! The Patient compartment: which patients a resource belongs to.
//!
//! The compartment id is the shard key and the first filter of every patient-scoped read,
//! so it follows the R4 Patient CompartmentDefinition exactly (embedded as
//! `data/compartment-patient.json`): a resource belongs to each patient that one of the
//! listed search parameters references. Only *relative* `Patient/{id}` references count:
//! an absolute URL names a patient on some other server, and `urn:uuid:` references must be
//! resolved to local ids (transaction processing) before the resource is stored.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::extract::{is_fhir_id, reference_target};
use crate::search_params;

const DATA: &str = include_str!("../data/compartment-patient.json");

fn table() -> &'static HashMap<String, Vec<String>> {
    static TABLE: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();
    // Embedded, generated and covered by tests: a failure here is a build defect.
    TABLE.get_or_init(|| serde_json::from_str(DATA).expect("data/compartment-patient.json is a map"))
}

/// The search parameter codes linking `resource_type` to a patient (empty when the type is
/// outside the Patient compartment). For `Patient` itself this is `link`.
pub fn compartment_params(resource_type: &str) -> &'static [String] {
    table().get(resource_type).map_or(&[], Vec::as_slice)
}

/// Whether resources of this type can belong to a patient's compartment.
pub fn in_patient_compartment(resource_type: &str) -> bool {
    !compartment_params(resource_type).is_empty()
}

/// Ids of the patients whose compartment holds `resource`, without duplicates, in the
/// order the compartment parameters list them. A Patient is in its own compartment only
/// (`Patient.link` does not merge records). Empty for types outside the compartment and
/// for resources that reference no local patient.
pub fn patient_compartments(resource_type: &str, resource: &Value) -> Vec<String> {
    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
        return Vec::new();
    }
    if resource_type == "Patient" {
        return resource
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| is_fhir_id(id))
            .map(|id| vec![id.to_owned()])
            .unwrap_or_default();
    }
    let mut ids: Vec<String> = Vec::new();
    for code in compartment_params(resource_type) {
        let Some(param) = search_params::lookup(resource_type, code) else {
            continue;
        };
        for item in param.evaluate(resource) {
            let Some(reference) = item.value.get("reference").and_then(Value::as_str) else {
                continue;
            };
            if reference.contains(':') {
                continue; // absolute URL or urn: not a local patient
            }
            if let Some(("Patient", id)) = reference_target(reference)
                && !ids.iter().any(|known| known == id)
            {
                ids.push(id.to_owned());
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_compartment_param_exists() {
        for (ty, params) in table() {
            assert!(crate::resource_types::is_resource_type(ty), "{ty}");
            for code in params {
                let p = search_params::lookup(ty, code);
                assert!(p.is_some_and(|p| p.kind == search_params::ParamType::Reference), "{ty}.{code}");
            }
        }
        assert!(in_patient_compartment("Observation") && in_patient_compartment("Patient"));
        assert!(!in_patient_compartment("Practitioner") && !in_patient_compartment("Nope"));
        assert!(compartment_params("Organization").is_empty());
    }

    #[test]
    fn patient_is_its_own_compartment() {
        let p = json!({"resourceType": "Patient", "id": "p1", "link": [{"other": {"reference": "Patient/p2"}}]});
        assert_eq!(patient_compartments("Patient", &p), ["p1"]);
        assert!(patient_compartments("Patient", &json!({"resourceType": "Patient"})).is_empty());
        assert!(patient_compartments("Patient", &json!({"resourceType": "Patient", "id": "bad id"})).is_empty());
    }

    #[test]
    fn observation_and_encounter() {
        let o = json!({
            "resourceType": "Observation",
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Practitioner/d1"}, {"reference": "Patient/p2"}, {"reference": "Patient/p1"}]
        });
        assert_eq!(patient_compartments("Observation", &o), ["p1", "p2"]);
        assert!(patient_compartments("Encounter", &o).is_empty(), "type must match the body");
        let device_subject = json!({"resourceType": "Observation", "subject": {"reference": "Device/x"}});
        assert!(patient_compartments("Observation", &device_subject).is_empty());
        let e = json!({"resourceType": "Encounter", "subject": {"reference": "Patient/p1/_history/3"},
                       "participant": [{"individual": {"reference": "Practitioner/d1"}}]});
        assert_eq!(patient_compartments("Encounter", &e), ["p1"]);
        let ext = json!({"resourceType": "Encounter", "subject": {"reference": "https://elsewhere/fhir/Patient/p9"}});
        assert!(patient_compartments("Encounter", &ext).is_empty());
        let urn = json!({"resourceType": "Encounter", "subject": {"reference": "urn:uuid:2d9b4f34-0d8a-4f0e-9a53-0c1d2e3f4a5b"}});
        assert!(patient_compartments("Encounter", &urn).is_empty());
    }

    #[test]
    fn appointment_actor_and_allergy() {
        let a = json!({
            "resourceType": "Appointment",
            "participant": [
                {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"},
                {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
                {"actor": {"reference": "Location/l1"}, "status": "accepted"}
            ]
        });
        assert_eq!(patient_compartments("Appointment", &a), ["p1"]);
        let ai = json!({
            "resourceType": "AllergyIntolerance",
            "patient": {"reference": "Patient/p1"},
            "recorder": {"reference": "Practitioner/d1"},
            "asserter": {"reference": "Patient/p1"}
        });
        assert_eq!(patient_compartments("AllergyIntolerance", &ai), ["p1"]);
        let by_proxy = json!({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"},
                              "asserter": {"reference": "RelatedPerson/r1"}});
        assert_eq!(patient_compartments("AllergyIntolerance", &by_proxy), ["p1"]);
    }
}
