//! One test per rule (positive and negative), plus a never-panics property test.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn errors(v: &Value) -> Vec<Issue> {
    validate_resource(v).into_iter().filter(|i| i.severity == Severity::Error).collect()
}

/// Asserts exactly one error, with this code and location, and returns it.
#[track_caller]
fn one_error(v: Value, code: &str, expression: &str) -> Issue {
    let errs = errors(&v);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let issue = errs.into_iter().next().expect("one");
    assert_eq!(issue.code, code, "{issue:?}");
    assert_eq!(issue.expression.as_deref(), Some(expression), "{issue:?}");
    issue
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"versionId": "3", "lastUpdated": "2024-01-02T03:04:05.678Z"},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Pat</div>"},
        "name": [{"family": "Ng", "given": ["Ann", null], "_given": [null, {"extension": [{"url": "http://x", "valueString": "A."}]}]}],
        "gender": "female",
        "birthDate": "1970-01-31",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1970-01-31T10:00:00+01:00"}]},
        "deceasedBoolean": false,
        "multipleBirthInteger": 2,
        "managingOrganization": {"reference": "Organization/o1"},
        "generalPractitioner": [{"reference": "#pr1"}],
        "contained": [{"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Who"}]}]
    })
}

fn with(mut base: Value, pointer: &str, value: Value) -> Value {
    // Minimal JSON-pointer setter for object paths (`/a/0/b`).
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let target = if parent.is_empty() { &mut base } else { base.pointer_mut(parent).expect("parent") };
    match target {
        Value::Object(m) => {
            m.insert(key.to_owned(), value);
        }
        Value::Array(a) => a[key.parse::<usize>().expect("index")] = value,
        _ => panic!("not a container"),
    }
    base
}

#[test]
fn a_good_patient_has_no_issues() {
    assert_eq!(validate_resource(&patient()), vec![]);
}

#[test]
fn resource_type_rules() {
    let mut p = patient();
    p.as_object_mut().expect("object").remove("resourceType");
    let errs = errors(&p);
    assert_eq!((errs.len(), errs[0].code), (1, "required"));
    assert_eq!(errors(&with(patient(), "/resourceType", json!("Patients")))[0].code, "not-supported");
    assert_eq!(errors(&with(patient(), "/resourceType", json!(["Patient"])))[0].code, "structure");
    // Medplum's own types are in the shared schema file but are not R4.
    assert_eq!(errors(&json!({"resourceType": "Project"}))[0].code, "not-supported");
    assert_eq!(errors(&json!([1, 2]))[0].code, "structure");
    assert!(is_known_resource_type("Consent") && !is_known_resource_type("User"));
}

#[test]
fn unknown_elements_are_tagged() {
    let issue = one_error(with(patient(), "/favouriteColour", json!("red")), "structure", "Patient.favouriteColour");
    assert!(is_unknown_element(&issue), "{issue:?}");
    let nested = one_error(with(patient(), "/name/0/nickname", json!("x")), "structure", "Patient.name[0].nickname");
    assert!(is_unknown_element(&nested));
    // A choice type that does not exist for this element.
    let choice = one_error(with(patient(), "/deceasedString", json!("x")), "structure", "Patient.deceasedString");
    assert!(is_unknown_element(&choice));
    // A companion for a non-primitive element does not exist either.
    assert!(is_unknown_element(&one_error(with(patient(), "/_name", json!({})), "structure", "Patient._name")));
    // Other issues are not unknown-element issues.
    let bad_id = one_error(with(patient(), "/id", json!("bad id!")), "value", "Patient.id");
    assert!(!is_unknown_element(&bad_id));
}

#[test]
fn wrong_json_kinds() {
    one_error(with(patient(), "/gender", json!(1)), "structure", "Patient.gender");
    one_error(with(patient(), "/name", json!({"family": "x"})), "structure", "Patient.name");
    one_error(
        with(patient(), "/managingOrganization", json!([{"reference": "Organization/1"}])),
        "structure",
        "Patient.managingOrganization",
    );
    one_error(
        with(patient(), "/managingOrganization", json!("Organization/1")),
        "structure",
        "Patient.managingOrganization",
    );
    one_error(with(patient(), "/birthDate", json!(null)), "structure", "Patient.birthDate");
    one_error(with(patient(), "/deceasedBoolean", json!("false")), "structure", "Patient.deceasedBoolean");
    one_error(with(patient(), "/multipleBirthInteger", json!("2")), "structure", "Patient.multipleBirthInteger");
    one_error(with(patient(), "/name/0/family", json!(["a"])), "structure", "Patient.name[0].family");
    one_error(with(patient(), "/name", json!([null])), "structure", "Patient.name[0]");
    one_error(with(patient(), "/name", json!([[{"family": "x"}]])), "structure", "Patient.name[0]");
}

#[test]
fn primitive_formats() {
    one_error(with(patient(), "/id", json!("x".repeat(65))), "value", "Patient.id");
    one_error(with(patient(), "/birthDate", json!("1970-13-45")), "value", "Patient.birthDate");
    one_error(with(patient(), "/birthDate", json!("2019-02-29")), "value", "Patient.birthDate");
    one_error(with(patient(), "/meta/lastUpdated", json!("2024-01-02")), "value", "Patient.meta.lastUpdated");
    one_error(with(patient(), "/meta/versionId", json!("v 1")), "value", "Patient.meta.versionId");
    one_error(with(patient(), "/multipleBirthInteger", json!(1.5)), "value", "Patient.multipleBirthInteger");
    one_error(with(patient(), "/name/0/family", json!("")), "value", "Patient.name[0].family");
    one_error(with(patient(), "/implicitRules", json!("http://a b")), "value", "Patient.implicitRules");
    one_error(with(patient(), "/language", json!(" en")), "value", "Patient.language");
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "valueTime": "25:00:00", "component": [{"code": {"text": "c"}, "valueInteger": 3000000000i64}]});
    let errs = errors(&obs);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    let att = json!({"resourceType": "DocumentReference", "status": "current",
        "content": [{"attachment": {"data": "not base64!", "size": -1, "creation": "2020-01-01T10:00:00"}}]});
    let errs = errors(&att);
    let at: Vec<_> = errs.iter().filter_map(|i| i.expression.as_deref()).collect();
    assert_eq!(
        at,
        [
            "DocumentReference.content[0].attachment.data",
            "DocumentReference.content[0].attachment.size",
            "DocumentReference.content[0].attachment.creation"
        ]
    );
}

#[test]
fn decimals_keep_precision_and_are_numbers() {
    let body = r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50,"unit":"mg"}}"#;
    let v = crate::json::parse_resource_json(body.as_bytes()).expect("valid JSON");
    assert_eq!(validate_resource(&v), vec![]);
    assert_eq!(v["valueQuantity"]["value"].to_string(), "1.50");
    let bad = with(v, "/valueQuantity/value", json!("1.50"));
    one_error(bad, "structure", "Observation.valueQuantity.value");
}

#[test]
fn required_bindings() {
    let issue = one_error(with(patient(), "/gender", json!("purple")), "code-invalid", "Patient.gender");
    assert!(issue.diagnostics.contains("female"), "{}", issue.diagnostics);
    let obs = json!({"resourceType": "Observation", "status": "done", "code": {"text": "x"}});
    one_error(obs, "code-invalid", "Observation.status");
    one_error(with(patient(), "/name/0/use", json!("nick")), "code-invalid", "Patient.name[0].use");
    // Codes from required bindings still need the code format.
    one_error(with(patient(), "/gender", json!("female ")), "value", "Patient.gender");
}

#[test]
fn references() {
    for ok in [
        "Organization/o1",
        "Organization/o1/_history/2",
        "http://x.org/fhir/Organization/1",
        "urn:uuid:c757873d-ec9a-4326-a141-556f43239520",
        "urn:oid:1.2.3",
        "Organization?identifier=x|1",
    ] {
        assert_eq!(errors(&with(patient(), "/managingOrganization/reference", json!(ok))), vec![], "{ok}");
    }
    for bad in [
        "Organisation/o1",
        "Organization/o 1",
        "Organization/",
        "o1",
        "Organization/1/2",
        "urn:uuid:123",
        "#nope",
        "#bad id",
    ] {
        one_error(
            with(patient(), "/managingOrganization/reference", json!(bad)),
            "invalid",
            "Patient.managingOrganization.reference",
        );
    }
    // References inside contained resources and Bundle entries are checked too.
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "resource": with(patient(), "/managingOrganization/reference", json!("Nope/1"))}]});
    one_error(bundle, "invalid", "Bundle.entry[0].resource.managingOrganization.reference");
}

#[test]
fn contained_resources() {
    let bad_inner = with(patient(), "/contained/0/gender", json!("x"));
    assert_eq!(errors(&bad_inner).len(), 1);
    one_error(
        with(patient(), "/contained/0/name/0/family", json!(7)),
        "structure",
        "Patient.contained[0].name[0].family",
    );
    one_error(with(patient(), "/contained/0/resourceType", json!("Nope")), "not-supported", "Patient.contained[0]");
    one_error(
        with(patient(), "/contained/0/contained", json!([{"resourceType": "Basic", "code": {"text": "x"}}])),
        "invalid",
        "Patient.contained[0]",
    );
    // From inside a contained resource, '#' points back at the container.
    let back = with(patient(), "/contained/0/identifier", json!([{"assigner": {"reference": "#"}}]));
    assert_eq!(errors(&back), vec![]);
}

#[test]
fn narrative_safety() {
    for bad in [
        "<div><script>alert(1)</script></div>",
        "<div><img src=\"x\" onerror=\"alert(1)\"/></div>",
        "<div><a href=\"javascript:alert(1)\">x</a></div>",
        "<p>no div root</p>",
    ] {
        one_error(with(patient(), "/text/div", json!(bad)), "value", "Patient.text.div");
    }
    one_error(with(patient(), "/text/status", json!("made-up")), "code-invalid", "Patient.text.status");
}

#[test]
fn warnings_do_not_block() {
    let v = with(patient(), "/identifier", json!([]));
    let issues = validate_resource(&v);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].severity, Severity::Warning);
    assert!(errors(&with(patient(), "/name/0/text", json!("tab\u{7}bell"))).is_empty());
}

#[test]
fn issues_are_capped_and_summarised() {
    let mut p = patient();
    let obj = p.as_object_mut().expect("object");
    for i in 0..500 {
        obj.insert(format!("x{i}"), json!(1));
    }
    let issues = validate_resource(&p);
    assert_eq!(issues.len(), walk::MAX_ISSUES + 1);
    assert!(issues.iter().all(is_unknown_element), "only unknown elements: lenient may downgrade all");

    // A real error past the cap must keep the summary a non-downgradable error.
    let mut late_error = patient();
    let obj = late_error.as_object_mut().expect("object");
    obj.shift_remove("birthDate");
    for i in 0..200 {
        obj.insert(format!("y{i}"), json!(1));
    }
    obj.insert("birthDate".into(), json!("nope"));
    let issues = validate_resource(&late_error);
    let last = issues.last().expect("summary");
    assert!(!is_unknown_element(last), "{last:?}");
    assert_eq!(last.severity, Severity::Error);
}

#[test]
fn deep_values_do_not_overflow() {
    // Built in memory (not through the JSON guard): 10,000 nested extensions.
    // (Built by hand: `json!` would serialise the interpolated value, recursively.)
    let mut ext = json!({"url": "http://x", "valueString": "leaf"});
    for _ in 0..10_000 {
        let mut m = serde_json::Map::new();
        m.insert("url".into(), json!("http://x"));
        m.insert("extension".into(), Value::Array(vec![ext]));
        ext = Value::Object(m);
    }
    let p = with(patient(), "/extension", Value::Array(vec![ext]));
    let errs = errors(&p);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].diagnostics.contains("nesting"), "{:?}", errs[0]);
    // serde_json's Value drops recursively; keep the drop of this test value shallow.
    std::mem::forget(p);
}

#[test]
fn expressions_for_long_hostile_keys_are_bounded() {
    let key = "k".repeat(100_000);
    let issues = validate_resource(&with(patient(), &format!("/{key}"), json!(1)));
    let issue = &issues[0];
    assert!(issue.diagnostics.len() < 200 && issue.expression.as_ref().is_some_and(|e| e.len() < 200));
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 #:/._<>=-]{0,20}".prop_map(Value::String),
        prop::sample::select(vec![
            "Patient",
            "Observation",
            "Bundle",
            "#x",
            "Patient/1",
            "<div>",
            "2019-02-29",
            "male"
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "resourceType",
                        "id",
                        "name",
                        "contained",
                        "extension",
                        "url",
                        "valueString",
                        "reference",
                        "text",
                        "div",
                        "entry",
                        "resource",
                        "code",
                        "given",
                        "_given",
                        "status",
                        "x"
                    ]),
                    inner
                ),
                0..6,
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn never_panics_on_arbitrary_json(v in arb_json(), rt in prop::sample::select(vec!["Patient", "Observation", "Bundle", "Parameters"])) {
        let _ = validate_resource(&v);
        if let Value::Object(mut m) = v {
            m.insert("resourceType".into(), json!(rt));
            let _ = validate_resource(&Value::Object(m));
        }
    }
}
