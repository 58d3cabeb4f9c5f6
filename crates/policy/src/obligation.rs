//! Obligations: what the server must do to a permitted resource before it leaves.
//!
//! A permitting [`crate::Verdict`] (and a [`crate::SearchPermit`]) carries its obligations;
//! the server applies them in **one place**, on every path that returns resource bodies
//! (read, vread, search and `_include`, history, `$everything`, export, sync):
//! [`apply`] does it for one parsed resource. A body the store hands out as stored text must
//! be parsed for a type that has a `Redact` obligation.

use serde::Serialize;
use serde_json::{Value, json};

/// The code system of the `REDACTED` security label added to a redacted resource.
pub const REDACTED_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Obligation {
    /// Remove these top-level elements from resources of `resource_type` (an operator rule,
    /// e.g. `Observation.note` hidden from caregivers) and mark the resource `REDACTED`.
    Redact { resource_type: String, elements: Vec<String> },
    /// Break-the-glass: flag the access for review and tell the patient. The audit record
    /// carries rule `break-the-glass`; `reason` is what the clinician stated.
    Flag { reason: String },
}

/// Apply every `Redact` obligation that concerns this resource's type; returns whether
/// anything was removed. (`Flag` is for the audit trail and notifications, not the body.)
pub fn apply(obligations: &[Obligation], resource: &mut Value) -> bool {
    let Some(ty) = resource.get("resourceType").and_then(Value::as_str).map(str::to_string) else { return false };
    let mut removed = false;
    for o in obligations {
        if let Obligation::Redact { resource_type, elements } = o
            && *resource_type == ty
            && let Some(obj) = resource.as_object_mut()
        {
            for e in elements {
                removed |= obj.remove(e.as_str()).is_some();
            }
        }
    }
    if removed && let Some(obj) = resource.as_object_mut() {
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let security = meta.entry("security").or_insert_with(|| json!([]));
            if let Some(list) = security.as_array_mut()
                && !list.iter().any(|c| c.get("code").and_then(Value::as_str) == Some("REDACTED"))
            {
                list.push(json!({"system": REDACTED_SYSTEM, "code": "REDACTED"}));
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_its_type_and_marks_the_resource() {
        let ob = vec![Obligation::Redact { resource_type: "Observation".into(), elements: vec!["note".into()] }];
        let mut o = json!({"resourceType": "Observation", "id": "o", "note": [{"text": "worried about mum"}]});
        assert!(apply(&ob, &mut o));
        assert!(o.get("note").is_none());
        assert_eq!(o["meta"]["security"][0]["code"], "REDACTED");
        assert!(!apply(&ob, &mut o), "nothing left to remove");
        assert_eq!(o["meta"]["security"].as_array().unwrap().len(), 1);
        let mut c = json!({"resourceType": "Condition", "note": [{"text": "x"}]});
        assert!(!apply(&ob, &mut c));
        assert!(c.get("note").is_some());
        assert!(!apply(&[Obligation::Flag { reason: "x".into() }], &mut c));
    }
}
