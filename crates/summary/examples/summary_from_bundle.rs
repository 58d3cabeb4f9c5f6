//! Render the summary of a FHIR Bundle (one patient) and report time and size.
//!
//!     cargo run --release -p portico-summary --example summary_from_bundle -- \
//!         crates/summary/tests/data/patient-00008.json /tmp/summary.pdf [runs]
//!
//! Every resource in the bundle is passed in (no gate here: this is a rendering benchmark).
//! "Now" is 2026-01-01, the reference date of the synthetic data.

use std::time::Instant;

use portico_summary::{SummaryInput, render};
use serde_json::Value;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bundle_path = args.next().ok_or("usage: summary_from_bundle BUNDLE.json OUT.pdf [RUNS]")?;
    let out_path = args.next().ok_or("usage: summary_from_bundle BUNDLE.json OUT.pdf [RUNS]")?;
    let runs: u32 = args.next().map(|r| r.parse()).transpose()?.unwrap_or(20).max(1);

    let bundle: Value = serde_json::from_slice(&std::fs::read(&bundle_path)?)?;
    let mut resources: Vec<Value> = bundle["entry"]
        .as_array()
        .ok_or("not a Bundle with entries")?
        .iter()
        .filter_map(|e| e.get("resource").cloned())
        .collect();
    let at = resources.iter().position(|r| r["resourceType"] == "Patient").ok_or("no Patient in the bundle")?;
    let patient = resources.swap_remove(at);
    let input = SummaryInput {
        patient,
        resources,
        generated_at: time::macros::datetime!(2026-01-01 09:00 UTC),
        server_name: "portico example".to_owned(),
    };

    let mut pdf = render(&input)?; // warm-up (font width tables, classifier)
    let start = Instant::now();
    for _ in 0..runs {
        pdf = render(&input)?;
    }
    let per_run = start.elapsed() / runs;
    std::fs::write(&out_path, &pdf)?;
    println!(
        "{} resources -> {} bytes of PDF; render {:.2} ms per run (mean of {runs})",
        input.resources.len() + 1,
        pdf.len(),
        per_run.as_secs_f64() * 1000.0
    );
    Ok(())
}
