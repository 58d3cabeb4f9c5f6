//! The rendered PDF, read back with poppler's `pdftotext` (Debian `poppler-utils`, which
//! `.ci/run` installs): what a person opening the file would read.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portico_fhir::classify::Classifier;
use portico_summary::{MAX_LABS, SummaryError, SummaryInput, render};
use serde_json::{Value, json};
use time::macros::datetime;

/// The synthetic data's reference date ("today" when it was generated).
const NOW: time::OffsetDateTime = datetime!(2026-01-01 09:00 UTC);

fn bundle(name: &str) -> (Value, Vec<Value>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bundle: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut resources: Vec<Value> = bundle["entry"]
        .as_array()
        .map(|entries| entries.iter().filter_map(|e| e.get("resource").cloned()).collect())
        .unwrap_or_default();
    let at = resources.iter().position(|r| r["resourceType"] == "Patient").expect("a Patient in the bundle");
    let patient = resources.swap_remove(at);
    (patient, resources)
}

fn input(patient: Value, resources: Vec<Value>) -> SummaryInput {
    SummaryInput { patient, resources, generated_at: NOW, server_name: "portico test".to_owned() }
}

/// The PDF's text as `pdftotext -layout` reads it (table rows stay on one line).
fn pdf_text(pdf: &[u8]) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    let path = std::env::temp_dir().join(format!(
        "portico-summary-{}-{}.pdf",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, pdf).expect("write temp pdf");
    let out = Command::new("pdftotext").arg("-layout").arg("-enc").arg("UTF-8").arg(&path).arg("-").output();
    let _ = std::fs::remove_file(&path);
    let out = out.expect("pdftotext not found: install Debian's poppler-utils (.ci/run does)");
    assert!(out.status.success(), "pdftotext failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("pdftotext writes UTF-8")
}

fn page_count(text: &str) -> usize {
    let marker = "Page 1 of ";
    let at = text.find(marker).expect("a page footer");
    text[at + marker.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a page count")
}

fn line_with<'t>(text: &'t str, needle: &str) -> Option<&'t str> {
    text.lines().find(|l| l.contains(needle))
}

#[test]
fn typical_record_shows_patient_problems_medicines_and_flagged_labs() {
    let (patient, resources) = bundle("patient-00008.json");
    let pdf = render(&input(patient, resources)).expect("render");
    let text = pdf_text(&pdf);

    assert!(text.contains("Health summary"));
    assert!(text.contains("Ms. Lucy Turner"), "name");
    assert!(text.contains("21 Jul 1997 (age 28)"), "birth date and age");
    assert!(line_with(&text, "Medical record number").is_some_and(|l| l.contains("5593259")), "MRN");
    assert!(!text.contains("999-38-4096"), "the full SSN is not printed");
    assert!(text.contains("ending in 4096"));

    // Active problems, de-duplicated; a resolved one is not listed.
    assert!(text.contains("Chronic intractable migraine without aura (disorder)"), "problem");
    assert_eq!(text.matches("Chronic pain (finding)").count(), 1, "nine records, one problem");
    assert!(!text.contains("Streptococcal sore throat"), "resolved problems are not current");

    // The active medicine, not the stopped ones.
    assert!(text.contains("Penicillin V Potassium 250 MG Oral Tablet"), "medicine");
    assert!(!text.contains("Oxycodone"), "stopped medicines are not listed");

    // A lab value with its unit, range and flag on one row; vital signs are not labs.
    let platelet = line_with(&text, "Platelet distribution width").expect("lab row");
    assert!(platelet.contains("297.356 fL"), "{platelet}");
    assert!(platelet.contains("7.5 to 11.5 fL"), "{platelet}");
    assert!(platelet.contains("HIGH"), "{platelet}");
    let hemoglobin = line_with(&text, "Hemoglobin [Mass/volume]").expect("lab row");
    assert!(hemoglobin.contains("normal") && !hemoglobin.contains("HIGH"), "{hemoglobin}");
    assert!(!text.contains("Heart rate"), "vital signs are not lab results");

    assert!(line_with(&text, "Grass pollen").is_some(), "allergy");
    assert!(text.contains("Hep B, adult"), "immunization");

    // Upcoming: the booked appointment; the cancelled one and the past ones are not.
    let appt = line_with(&text, "23 Jan 2026, 14:45 (UTC)").expect("upcoming appointment");
    assert!(appt.contains("Annual physical") && appt.contains("booked"), "{appt}");
    assert!(!text.contains("19 Jan 2026"), "cancelled appointment");
    assert!(!text.contains("13 Aug 2025, 17:13"), "past appointment");

    assert!(text.contains("Generated 1 Jan 2026, 09:00 UTC by portico test"), "footer");
    let pages = page_count(&text);
    assert!(pages >= 2, "{pages}");
    assert!(text.contains(&format!("Page {pages} of {pages}")));
    assert!(text.contains("This summary shows only the records that were included"));
    assert!(!text.contains("cannot be shown with this document's font"), "nothing was substituted");
}

/// An HIV diagnosis: ICD-10 B20, which the built-in classification labels HIV (restricted).
fn sensitive_condition() -> Value {
    json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "B20", "display": "Human immunodeficiency virus [HIV] disease"}]},
        "onsetDateTime": "2024-05-02"
    })
}

#[test]
fn a_resource_not_passed_in_does_not_appear() {
    let hidden = sensitive_condition();
    let labels = Classifier::builtin().classify("Condition", &hidden);
    assert!(!labels.sensitivity().is_empty(), "the fixture is a labelled (sensitive) condition: {labels:?}");

    let (patient, resources) = bundle("patient-00008.json");
    // What a gate that withholds it hands over: everything else.
    let without = render(&input(patient.clone(), resources.clone())).expect("render");
    let text = pdf_text(&without);
    assert!(!text.contains("Human immunodeficiency virus"), "left out, so not shown");
    assert!(!text.contains("B20"));
    assert!(!text.contains("2 May 2024"));

    // Control: the very same resource, passed in, is shown, so the check above can fail.
    let mut with = resources;
    with.push(hidden);
    let text = pdf_text(&render(&input(patient, with)).expect("render"));
    let row = line_with(&text, "Human immunodeficiency virus").expect("passed in, so shown");
    assert!(row.contains("2 May 2024"), "{row}");
}

#[test]
fn an_empty_record_renders_one_page_that_says_so() {
    let pdf = render(&input(json!({"resourceType": "Patient"}), Vec::new())).expect("render");
    let text = pdf_text(&pdf);
    assert!(text.contains("Name not recorded"));
    assert!(text.contains("Date of birth") && text.contains("not recorded"));
    for empty in [
        "No current health problems are included in this summary.",
        "No current medicines are included in this summary.",
        "No allergies are included in this summary. That does not mean there are none.",
        "No immunizations are included in this summary.",
        "No lab results are included in this summary.",
        "No upcoming appointments are included in this summary.",
    ] {
        assert!(text.contains(empty), "missing: {empty}");
    }
    assert!(text.contains("Made from 0 records"));
    assert_eq!(page_count(&text), 1);
    assert!(text.contains("Page 1 of 1"));
}

fn lab(i: usize) -> Value {
    let day = 1 + i % 28;
    let month = 1 + (i / 28) % 12;
    let year = 2000 + i / (28 * 12);
    let value = 3.0 + (i % 40) as f64 * 0.1;
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": format!("{}-{}", 1000 + i % 97, i % 10), "display": format!("Generated test number {i}")}]},
        "effectiveDateTime": format!("{year:04}-{month:02}-{day:02}T08:30:00Z"),
        "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "referenceRange": [{"low": {"value": 3.5, "unit": "mmol/L"}, "high": {"value": 5.5, "unit": "mmol/L"}}]
    })
}

#[test]
fn two_thousand_labs_make_a_bounded_multi_page_document() {
    let (patient, _) = bundle("patient-00008.json");
    let labs: Vec<Value> = (0..2000).map(lab).collect();
    let start = Instant::now();
    let pdf = render(&input(patient, labs)).expect("render");
    let took = start.elapsed();
    // Debug build on a shared 2-core machine; a release render is a few milliseconds.
    assert!(took < Duration::from_secs(20), "render took {took:?}");
    assert!(pdf.len() < 512 * 1024, "{} bytes", pdf.len());

    let text = pdf_text(&pdf);
    let pages = page_count(&text);
    assert!((2..=12).contains(&pages), "{pages} pages");
    assert!(text.contains(&format!("and {} older lab results not shown", 2000 - MAX_LABS)));
    // Newest first: lab 1999 is the latest date, lab 0 the oldest and cut.
    assert!(text.contains("Generated test number 1999"));
    assert!(!text.contains("Generated test number 0 "));
    // No interpretation given: the value is compared with its range.
    let row = line_with(&text, "Generated test number 1999").expect("row");
    assert!(row.contains("6.9 mmol/L") && row.contains("ABOVE RANGE"), "{row}");
    let low = line_with(&text, "Generated test number 1960 ").expect("row 1960: value 3.0, below 3.5");
    assert!(low.contains("BELOW RANGE"), "{low}");
    // The continuation pages name the patient.
    assert!(text.matches("Health summary of Ms. Lucy Turner (continued)").count() == pages - 1);
}

#[test]
fn hostile_text_is_wrapped_cut_and_substituted_visibly() {
    let long = "Supercalifragilistic".repeat(5_000);
    let patient = json!({
        "resourceType": "Patient",
        "name": [{"family": "王", "given": ["小明", "Łucja"], "prefix": ["\u{202E}Dr.\u{0000}\n"]}],
        "gender": "not-a-code",
        "birthDate": "1990-02-30",
        "identifier": [{"type": {"text": long.clone()}, "value": long.clone()}]
    });
    let resources = vec![
        json!({"resourceType": "Condition", "code": {"text": format!("{long} 🩺 مرض")}}),
        json!({"resourceType": "MedicationRequest", "status": "active", "medicationCodeableConcept": {"text": "Ibuprofène 400 mg"},
               "dosageInstruction": [{"text": "x".repeat(100_000)}]}),
        json!({"resourceType": "AllergyIntolerance", "criticality": "high", "code": {"text": "Erdnüsse"}}),
        json!({"resourceType": "Immunization", "vaccineCode": {"text": "PDF syntax (a) \\ b) ET BT %%EOF"}, "occurrenceDateTime": "2020"}),
        json!({"resourceType": "Appointment", "status": "booked", "start": "2027-03-04T10:00:00+05:30", "description": "Контроль"}),
    ];
    let pdf = render(&input(patient, resources)).expect("render");
    assert!(pdf.len() < 256 * 1024, "{} bytes", pdf.len());
    let text = pdf_text(&pdf);
    assert!(text.contains("Dr. ?? Lucja ?"), "unshowable letters are visible as '?', Ł as L:\n{text}");
    assert!(text.contains("cannot be shown with this document's font"), "and the reader is told");
    assert!(text.contains("Ibuprofène 400 mg"), "Latin-1 accents are kept");
    assert!(text.contains("Erdnüsse") && line_with(&text, "Erdnüsse").is_some_and(|l| l.contains("HIGH RISK")));
    assert!(text.contains("4 Mar 2027, 10:00 (UTC+05:30)") && text.contains("????????"), "Cyrillic description");
    assert!(text.contains("1990-02-30"), "an invalid date is shown as written");
    assert!(text.contains("PDF syntax (a) \\ b) ET BT %%EOF"), "PDF string delimiters are text, not syntax");
    assert!(text.contains("…"), "long text is cut with an ellipsis");
    assert!(page_count(&text) <= 3, "hostile lengths are bounded");
}

#[test]
fn a_non_patient_is_refused() {
    let err = render(&input(json!({"resourceType": "Observation"}), Vec::new())).expect_err("not a patient");
    assert!(matches!(err, SummaryError::NotAPatient { ref found } if found == "Observation"), "{err}");
    assert!(render(&input(json!("Patient"), Vec::new())).is_err());
}

/// printpdf puts a random document ID in the trailer, so the bytes differ; what a reader
/// sees must not.
#[test]
fn the_same_input_gives_the_same_text() {
    let (patient, resources) = bundle("patient-00008.json");
    let i = input(patient, resources);
    let a = pdf_text(&render(&i).expect("render"));
    let b = pdf_text(&render(&i).expect("render"));
    assert!(a == b, "two renders of one input read differently");
}
