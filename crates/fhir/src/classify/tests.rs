use serde_json::{Value, json};

use super::*;

const OBS_CAT: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const SCT: &str = "http://snomed.info/sct";
const LOINC: &str = "http://loinc.org";

fn classify(resource: &Value) -> Classification {
    let rt = resource["resourceType"].as_str().expect("resourceType");
    Classifier::builtin().classify(rt, resource)
}

fn cc(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}]})
}

fn obs(category: &str, code: Value) -> Value {
    json!({"resourceType": "Observation", "status": "final", "category": [cc(OBS_CAT, category)], "code": code})
}

#[test]
fn builtin_rules_load() {
    let c = Classifier::builtin();
    assert!(c.rules.len() > 30);
}

#[test]
fn every_category_from_a_small_resource() {
    let cases: Vec<(Value, &str)> = vec![
        (obs("laboratory", cc(LOINC, "2345-7")), "labs"),
        (obs("vital-signs", cc(LOINC, "8867-4")), "vitals"),
        (obs("imaging", cc(LOINC, "24627-2")), "imaging"),
        (obs("social-history", cc(LOINC, "72166-2")), "other"),
        (json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}), "other"),
        (
            json!({"resourceType": "DiagnosticReport", "category": [cc("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB")]}),
            "labs",
        ),
        (
            json!({"resourceType": "DiagnosticReport", "category": [cc("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD")]}),
            "imaging",
        ),
        (json!({"resourceType": "DiagnosticReport", "category": [cc(LOINC, "34117-2")]}), "notes"),
        (json!({"resourceType": "ClinicalImpression", "status": "completed"}), "notes"),
        (json!({"resourceType": "MedicationRequest"}), "medications"),
        (json!({"resourceType": "Condition"}), "conditions"),
        (json!({"resourceType": "AllergyIntolerance"}), "allergies"),
        (json!({"resourceType": "Immunization"}), "immunizations"),
        (json!({"resourceType": "Procedure"}), "procedures"),
        (json!({"resourceType": "Encounter"}), "encounters"),
        (json!({"resourceType": "Appointment"}), "encounters"),
        (json!({"resourceType": "Coverage"}), "insurance"),
        (json!({"resourceType": "ExplanationOfBenefit"}), "insurance"),
        (json!({"resourceType": "DocumentReference"}), "documents"),
        (json!({"resourceType": "Patient"}), "demographics"),
        (json!({"resourceType": "RelatedPerson"}), "demographics"),
        (json!({"resourceType": "CarePlan"}), "care-plans"),
        (json!({"resourceType": "Practitioner"}), "administrative"),
        (json!({"resourceType": "Device"}), "other"),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (resource, expected) in cases {
        let c = classify(&resource);
        assert_eq!(c.category, expected, "{resource}");
        assert_eq!(c.labels, ["N"], "{resource}");
        seen.insert(expected);
    }
    for category in CATEGORIES {
        assert!(seen.contains(category), "no test for {category}");
    }
}

#[test]
fn every_sensitivity_label_from_a_small_resource() {
    let condition = |system: &str, code: &str| json!({"resourceType": "Condition", "code": cc(system, code)});
    let cases: Vec<(Value, &[&str])> = vec![
        (condition(ICD10CM, "F32.9"), &["BH", "PSY", "R"]),
        (condition(ICD10CM, "F60.3"), &["BH", "PSY", "R"]),
        (condition(SCT, "370143000"), &["BH", "PSY", "R"]),
        (condition(ICD10CM, "F10.20"), &["BH", "ETH", "R"]),
        (condition(SCT, "6525002"), &["BH", "ETH", "R"]),
        (condition(ICD10CM, "B20"), &["HIV", "R"]),
        (condition(ICD10CM, "Z21"), &["HIV", "R"]),
        (obs("laboratory", cc(LOINC, "75622-1")), &["HIV", "R"]),
        (condition(ICD10CM, "O09.90"), &["SEX", "R"]),
        (condition(ICD10CM, "O9A.211"), &["SEX", "R"]),
        (condition(ICD10CM, "Z30.011"), &["SEX", "R"]),
        (condition(SCT, "72892002"), &["SEX", "R"]),
        (condition(ICD10CM, "T74.11XA"), &["SDV", "R"]),
        (condition(SCT, "706893006"), &["SDV", "R"]),
        (obs("laboratory", cc(LOINC, "55233-1")), &["GDIS", "R"]),
        (obs("survey", cc(LOINC, "44261-6")), &["BH", "PSY", "R"]),
        (json!({"resourceType": "DocumentReference", "type": cc(LOINC, "11510-5")}), &["BH", "PSY", "R"]),
        (
            json!({"resourceType": "DocumentReference", "type": cc(LOINC, "34117-2"),
            "context": {"practiceSetting": cc(SCT, "394587001")}}),
            &["BH", "PSY", "R"],
        ),
        (json!({"resourceType": "Encounter", "type": [cc(SCT, "424619006")]}), &["SEX", "R"]),
        // reasonCode counts too.
        (
            json!({"resourceType": "Procedure", "code": cc(SCT, "1"), "reasonCode": [cc(ICD10CM, "F41.1")]}),
            &["BH", "PSY", "R"],
        ),
        // Near misses stay unlabelled: F01 dementia, F50 eating disorders are outside the
        // listed ranges; ICD codes under another system do not count.
        (condition(ICD10CM, "F01.50"), &["N"]),
        (condition(ICD10CM, "F49"), &["N"]),
        (condition(SCT, "F32.9"), &["N"]),
        (condition(ICD10CM, "O"), &["N"]),
    ];
    for (resource, expected) in cases {
        assert_eq!(classify(&resource).labels, expected, "{resource}");
    }
}

#[test]
fn several_labels_and_categories_together() {
    let c = classify(&json!({"resourceType": "Condition",
        "code": {"coding": [{"system": ICD10CM, "code": "F11.20"}, {"system": ICD10CM, "code": "B20"}]}}));
    assert_eq!(c.category, "conditions");
    assert_eq!(c.labels, ["BH", "ETH", "HIV", "R"]);
    assert_eq!(c.confidentiality(), "R");
    assert_eq!(c.sensitivity(), ["BH", "ETH", "HIV"]);
}

#[test]
fn meta_security_labels_are_kept() {
    let r = json!({"resourceType": "Condition", "meta": {"security": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "TBOO"},
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"},
        {"system": "http://example.org/other", "code": "XYZ"},
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "has space"}]}});
    assert_eq!(classify(&r).labels, ["TBOO", "V"]);
    // Confidentiality alone: kept as is, no sensitivity.
    let r = json!({"resourceType": "Patient", "meta": {"security": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}});
    assert_eq!(classify(&r).labels, ["R"]);
    // A lower explicit confidentiality never undercuts the R that sensitivity implies.
    let r = json!({"resourceType": "Condition", "code": cc(ICD10CM, "B20"), "meta": {"security": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "L"}]}});
    assert_eq!(classify(&r).labels, ["HIV", "R"]);
}

#[test]
fn custom_rule_file_changes_a_category() {
    let rules = r#"{"rules": [
        {"match": {"resourceType": "Observation", "path": "category",
                   "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "social-history"},
         "category": "conditions", "note": "this site files social history with conditions"},
        {"match": {"resourceType": ["Observation", "Condition"]}, "category": "labs"},
        {"match": {"system": "http://loinc.org", "codePrefix": "72166"}, "labels": ["ETH", "V"]}
    ]}"#;
    let c = Classifier::from_json(rules).expect("valid rules");
    let smoking = obs("social-history", cc(LOINC, "72166-2"));
    assert_eq!(
        c.classify("Observation", &smoking),
        Classification { category: "conditions".into(), labels: vec!["ETH".into(), "V".into()] }
    );
    assert_eq!(c.classify("Observation", &obs("laboratory", cc(LOINC, "1"))).category, "labs");
    assert_eq!(c.classify("Patient", &json!({"resourceType": "Patient"})).category, "other");
}

#[test]
fn invalid_rule_files_are_refused() {
    let cases = [
        ("not json", "JSON"),
        (r#"[]"#, "object"),
        (r#"{"rulez": []}"#, "rulez"),
        (r#"{"rules": [{"match": {"resourceType": "Patient"}, "category": "lab"}]}"#, "unknown category \"lab\""),
        (r#"{"rules": [{"match": {"resourceType": "Patient"}, "labels": ["PYS"]}]}"#, "unknown label"),
        (r#"{"rules": [{"match": {"resourceType": "Patient"}}]}"#, "category"),
        (r#"{"rules": [{"match": {}, "category": "labs"}]}"#, "must name"),
        (r#"{"rules": [{"match": {"resourceType": "Patients"}, "category": "labs"}]}"#, "unknown resource type"),
        (r#"{"rules": [{"match": {"path": "code.text", "code": "x"}, "category": "labs"}]}"#, "unknown path"),
        (r#"{"rules": [{"match": {"resourceType": "Patient", "path": "code"}, "category": "labs"}]}"#, "needs"),
        (r#"{"rules": [{"match": {"code": ["x", 1]}, "category": "labs"}]}"#, "strings"),
        (r#"{"rules": [{"match": {"code": []}, "category": "labs"}]}"#, "non-empty"),
        (r#"{"rules": [{"match": {"codeRange": [["F20", "F4"]]}, "category": "labs"}]}"#, "codeRange"),
        (r#"{"rules": [{"match": {"codeRange": [["F48", "F20"]]}, "category": "labs"}]}"#, "codeRange"),
        (r#"{"rules": [{"match": {"codePrefix": ""}, "category": "labs"}]}"#, "every code"),
        (r#"{"rules": [{"match": {"code": "x"}, "category": "labs", "lables": ["PSY"]}]}"#, "lables"),
        (r#"{"rules": [{"match": {"cod": "x"}, "category": "labs"}]}"#, "cod"),
    ];
    for (text, expected) in cases {
        match Classifier::from_json(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => assert!(e.contains(expected), "{text}: {e}"),
        }
    }
    let err = Classifier::from_json(
        r#"{"rules": [{"match": {"code": "x"}, "category": "labs"}, {"match": {"code": "x"}, "category": "nope"}]}"#,
    )
    .expect_err("invalid");
    assert!(err.starts_with("rule 2:"), "{err}");
}

#[test]
fn classifies_the_synthea_corpus_sensibly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/small-synthea/ndjson");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../portico/tests/fixtures/small-synthea/ndjson");
    let Some(dir) = [fixture, dir].into_iter().find(|d| d.is_dir()) else {
        eprintln!("SKIPPED classifies_the_synthea_corpus_sensibly: no small-synthea/ndjson folder");
        return;
    };
    let mut counts = std::collections::BTreeMap::<(String, String), usize>::new();
    let mut labelled = std::collections::BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(&dir).expect("readable").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("readable");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let r: Value = serde_json::from_str(line).expect("json");
            let rt = r["resourceType"].as_str().unwrap_or_default().to_owned();
            let c = Classifier::builtin().classify(&rt, &r);
            assert!(CATEGORIES.contains(&c.category.as_str()));
            for l in c.sensitivity() {
                *labelled.entry(l.clone()).or_default() += 1;
            }
            *counts.entry((rt, c.category)).or_default() += 1;
        }
    }
    // The corpus's README: 1,877 laboratory and 1,202 vital-signs Observations.
    assert_eq!(counts.get(&("Observation".into(), "labs".into())), Some(&1877));
    assert_eq!(counts.get(&("Observation".into(), "vitals".into())), Some(&1202));
    assert!(!counts.keys().any(|(rt, c)| rt == "Patient" && c != "demographics"));
    for label in ["PSY", "ETH", "SEX", "SDV", "HIV"] {
        assert!(labelled.get(label).is_some_and(|n| *n > 0), "no {label} in synthea: {labelled:?}");
    }
    eprintln!("synthea labels: {labelled:?}");
}
