//! The two resource facts the consent engine needs beyond category and labels, computed
//! from a resource body **at write time** (by `store::prepare`, beside compartments and
//! classification) and stored as columns (`date_ms`, `author`) so that reads can rebuild
//! [`crate::ResourceFacts`] and searches can filter on them in SQL.

use crate::consent::normalise_reference;
use serde_json::Value;

/// Elements holding the clinically relevant date, in order of preference (the first present
/// wins): when it happened, then when it was reported or recorded.
pub const DATE_ELEMENTS: &[&str] = &[
    "effectiveDateTime",
    "effectiveInstant",
    "effectivePeriod",
    "issued",
    "recordedDate",
    "recorded",
    "occurrenceDateTime",
    "occurrencePeriod",
    "performedDateTime",
    "performedPeriod",
    "authoredOn",
    "onsetDateTime",
    "onsetPeriod",
    "date",
    "period",
    "created",
];

/// Elements naming who wrote a resource, in order of preference (the first reference found
/// wins; for `performer` lists, the first entry, or its `actor`).
pub const AUTHOR_ELEMENTS: &[&str] = &["author", "recorder", "asserter", "requester", "performer", "sender", "source"];

/// [`crate::ResourceFacts::date_ms`]: the start (Unix ms, UTC) of the first date element
/// present ([`DATE_ELEMENTS`]; a Period counts by its `start`, else its `end`).
pub fn clinical_date_ms(body: &Value) -> Option<i64> {
    for key in DATE_ELEMENTS {
        let Some(v) = body.get(*key) else { continue };
        let text = match v {
            Value::String(s) => Some(s.as_str()),
            Value::Object(p) => p.get("start").or_else(|| p.get("end")).and_then(Value::as_str),
            _ => None,
        };
        if let Some((low, _)) = text.and_then(portico_fhir::datetime::parse_range) {
            return Some(low);
        }
    }
    None
}

/// [`crate::ResourceFacts::author`]: the first author reference ([`AUTHOR_ELEMENTS`]) as a
/// relative `Type/id`.
pub fn author_reference(body: &Value) -> Option<String> {
    fn reference(v: &Value) -> Option<String> {
        match v {
            Value::Array(items) => items.iter().find_map(reference),
            Value::Object(o) => o
                .get("reference")
                .and_then(Value::as_str)
                .and_then(normalise_reference)
                .map(|(t, id)| format!("{t}/{id}"))
                .or_else(|| o.get("actor").and_then(reference)),
            _ => None,
        }
    }
    AUTHOR_ELEMENTS.iter().find_map(|k| body.get(*k).and_then(reference))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_in_order_of_preference() {
        let obs =
            json!({"resourceType": "Observation", "issued": "2026-03-02T10:00:00Z", "effectiveDateTime": "2026-03-01"});
        assert_eq!(clinical_date_ms(&obs), portico_fhir::datetime::parse_range("2026-03-01").map(|r| r.0));
        let period = json!({"effectivePeriod": {"start": "2026-01-01T00:00:00Z"}});
        assert_eq!(clinical_date_ms(&period), Some(1_767_225_600_000));
        assert_eq!(
            clinical_date_ms(&json!({"effectiveDateTime": "garbage", "issued": "2026-01-01"})),
            Some(1_767_225_600_000)
        );
        assert_eq!(clinical_date_ms(&json!({"resourceType": "Patient"})), None);
    }

    #[test]
    fn authors_as_relative_references() {
        assert_eq!(
            author_reference(&json!({"performer": [{"reference": "https://x/fhir/Practitioner/p1"}]})),
            Some("Practitioner/p1".into())
        );
        assert_eq!(
            author_reference(&json!({"performer": [{"actor": {"reference": "Patient/me"}}]})),
            Some("Patient/me".into())
        );
        assert_eq!(
            author_reference(
                &json!({"recorder": {"display": "nobody"}, "asserter": {"reference": "RelatedPerson/mum"}})
            ),
            Some("RelatedPerson/mum".into())
        );
        assert_eq!(author_reference(&json!({"subject": {"reference": "Patient/me"}})), None);
    }
}
