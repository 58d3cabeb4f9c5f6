//! `render` never panics, whatever JSON it is given: random values shaped loosely like the
//! resources it reads (the right resourceTypes and element names, anything as values), and
//! plain random JSON.

use portico_summary::{SummaryInput, render};
use proptest::prelude::*;
use serde_json::{Map, Value};

const TYPES: &[&str] = &[
    "Patient",
    "Condition",
    "MedicationRequest",
    "MedicationStatement",
    "AllergyIntolerance",
    "Immunization",
    "Observation",
    "Appointment",
    "Encounter",
];

/// Element names the renderer looks at, so random values reach its code paths.
const KEYS: &[&str] = &[
    "name",
    "text",
    "family",
    "given",
    "prefix",
    "suffix",
    "use",
    "birthDate",
    "gender",
    "identifier",
    "type",
    "system",
    "value",
    "code",
    "coding",
    "display",
    "clinicalStatus",
    "verificationStatus",
    "onsetDateTime",
    "onsetPeriod",
    "start",
    "end",
    "recordedDate",
    "abatementDateTime",
    "status",
    "medicationCodeableConcept",
    "medicationReference",
    "dosageInstruction",
    "dosage",
    "timing",
    "repeat",
    "frequency",
    "period",
    "periodUnit",
    "doseAndRate",
    "doseQuantity",
    "asNeededBoolean",
    "requester",
    "authoredOn",
    "effectiveDateTime",
    "effectivePeriod",
    "criticality",
    "category",
    "reaction",
    "manifestation",
    "severity",
    "vaccineCode",
    "occurrenceDateTime",
    "occurrenceString",
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueInteger",
    "valueRange",
    "valueRatio",
    "numerator",
    "denominator",
    "low",
    "high",
    "unit",
    "comparator",
    "referenceRange",
    "interpretation",
    "component",
    "dataAbsentReason",
    "issued",
    "description",
    "serviceType",
    "appointmentType",
    "participant",
    "actor",
    "requestedPeriod",
    "deceasedBoolean",
    "deceasedDateTime",
    "meta",
    "security",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,40}".prop_map(Value::String),
        prop::sample::select(vec![
            "active",
            "final",
            "booked",
            "proposed",
            "high",
            "H",
            "LL",
            "laboratory",
            "2026-03-04T10:00:00Z",
            "2025",
            "2025-13",
            "1999-02-28",
            "http://loinc.org",
            "mg",
            "d",
            "SS",
            "MR",
            "entered-in-error",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn shaped() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| ((*k).to_owned(), v)).collect::<Map<_, _>>())
            }),
        ]
    })
}

fn resource() -> impl Strategy<Value = Value> {
    (prop::sample::select(TYPES), prop::collection::vec((prop::sample::select(KEYS), shaped()), 0..10)).prop_map(
        |(ty, kv)| {
            let mut m: Map<String, Value> = kv.into_iter().map(|(k, v)| ((*k).to_owned(), v)).collect();
            m.insert("resourceType".to_owned(), Value::String(ty.to_owned()));
            Value::Object(m)
        },
    )
}

fn check(patient: Value, resources: Vec<Value>, server_name: String, secs: i64) -> Result<(), TestCaseError> {
    let generated_at = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let is_patient = patient.get("resourceType").and_then(Value::as_str) == Some("Patient");
    match render(&SummaryInput { patient, resources, generated_at, server_name }) {
        Ok(pdf) => {
            prop_assert!(is_patient);
            prop_assert!(pdf.starts_with(b"%PDF-"));
        }
        Err(_) => prop_assert!(!is_patient),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn shaped_random_resources_never_panic(
        mut patient in resource(),
        resources in prop::collection::vec(resource(), 0..24),
        server_name in "\\PC{0,80}",
        secs in -377_705_116_800i64..253_402_300_799,
    ) {
        if let Some(m) = patient.as_object_mut() {
            m.insert("resourceType".to_owned(), Value::String("Patient".to_owned()));
        }
        check(patient, resources, server_name, secs)?;
    }

    #[test]
    fn arbitrary_json_never_panics(
        patient in shaped(),
        resources in prop::collection::vec(shaped(), 0..8),
    ) {
        check(patient, resources, String::new(), 0)?;
    }
}
