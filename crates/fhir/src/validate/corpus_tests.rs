//! Real-world corpora must validate without errors: the 198 official HL7 R4 examples and
//! the synthetic Synthea patients. Both live outside the crate; each test looks in the
//! project's fixtures first (`crates/portico/tests/fixtures/`), then in `../shared/testdata/`
//! beside the checkout, and skips with a notice when neither is there.

use std::path::{Path, PathBuf};

use super::validate_resource;
use crate::json::parse_resource_json;

fn corpus_dir(fixture: &str, shared: &str) -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    [manifest.join("../portico/tests/fixtures").join(fixture), manifest.join("../../../shared/testdata").join(shared)]
        .into_iter()
        .find(|p| p.is_dir())
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == ext));
    files.sort();
    files
}

/// Validates one body; returns its errors (and warnings too when `PORTICO_SHOW_WARNINGS`
/// is set, to review what the corpus trips over).
fn check_body(label: &str, body: &[u8]) -> Vec<String> {
    let value = match parse_resource_json(body) {
        Ok(v) => v,
        Err(e) => return vec![format!("{label}: JSON refused: {e}")],
    };
    validate_resource(&value)
        .into_iter()
        .map(|i| format!("{label}: {:?} {} {} at {:?}", i.severity, i.code, i.diagnostics, i.expression))
        .filter(|s| std::env::var_os("PORTICO_SHOW_WARNINGS").is_some() || !s.contains(": Warning "))
        .collect()
}

#[test]
fn hl7_r4_examples_are_valid() {
    let Some(dir) = corpus_dir("hl7-r4-examples", "hl7-r4-examples") else {
        eprintln!("SKIPPED hl7_r4_examples_are_valid: no hl7-r4-examples folder (fixtures or ../shared/testdata)");
        return;
    };
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in files_with_ext(&dir, "json") {
        // The npm package manifest sits beside the examples; it is not a resource.
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('_')) {
            continue;
        }
        let body = std::fs::read(&path).expect("readable fixture");
        failures.extend(check_body(&path.file_name().unwrap_or_default().to_string_lossy(), &body));
        checked += 1;
    }
    assert!(failures.is_empty(), "{} errors:\n{}", failures.len(), failures.join("\n"));
    // 198 in the full HL7 package; a fixtures copy may hold a subset.
    assert!(checked > 0, "no examples found in {}", dir.display());
    eprintln!("validated {checked} HL7 R4 examples");
}

#[test]
fn synthea_ndjson_is_valid() {
    let Some(dir) = corpus_dir("small-synthea/ndjson", "small-synthea/ndjson") else {
        eprintln!("SKIPPED synthea_ndjson_is_valid: no small-synthea/ndjson folder (fixtures or ../shared/testdata)");
        return;
    };
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in files_with_ext(&dir, "ndjson") {
        let text = std::fs::read_to_string(&path).expect("readable fixture");
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            failures.extend(check_body(&format!("{name}:{}", n + 1), line.as_bytes()));
            checked += 1;
        }
    }
    let shown: Vec<&String> = failures.iter().take(50).collect();
    assert!(failures.is_empty(), "{} errors, first ones:\n{shown:#?}", failures.len());
    assert!(checked > 0, "no resources found in {}", dir.display());
    eprintln!("validated {checked} synthea resources");
}

#[test]
fn synthea_transaction_bundles_are_valid() {
    let Some(dir) = corpus_dir("small-synthea/bundles", "small-synthea/bundles") else {
        eprintln!("SKIPPED synthea_transaction_bundles_are_valid: no small-synthea/bundles folder");
        return;
    };
    let mut failures = Vec::new();
    let files = files_with_ext(&dir, "json");
    for path in &files {
        let body = std::fs::read(path).expect("readable fixture");
        failures.extend(check_body(&path.file_name().unwrap_or_default().to_string_lossy(), &body));
    }
    let shown: Vec<&String> = failures.iter().take(50).collect();
    assert!(failures.is_empty(), "{} errors, first ones:\n{shown:#?}", failures.len());
    assert!(!files.is_empty());
}
