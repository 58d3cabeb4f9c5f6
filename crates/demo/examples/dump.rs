//! Writes the demo bundles as JSON files, for inspection or for loading with another tool:
//!
//! ```text
//! cargo run -p portico-demo --example dump -- OUT_DIR [PATIENTS [SEED]]
//! ```
//!
//! `OUT_DIR/shared.json`, then `OUT_DIR/pt-00001.json`, … (one transaction Bundle each).

use std::{env, fs, path::PathBuf, process::ExitCode};

use portico_demo::{DemoConfig, all_bundles, patient_id};

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        eprintln!("usage: dump OUT_DIR [PATIENTS [SEED]]");
        return ExitCode::FAILURE;
    };
    let mut cfg = DemoConfig::default();
    if let Some(n) = args.next().and_then(|n| n.parse().ok()) {
        cfg.patients = n;
    }
    if let Some(seed) = args.next().and_then(|s| s.parse().ok()) {
        cfg.seed = seed;
    }
    if let Err(e) = fs::create_dir_all(&out) {
        eprintln!("cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    for (n, bundle) in all_bundles(&cfg).enumerate() {
        let name = if n == 0 { "shared".to_owned() } else { patient_id(n - 1) };
        let path = out.join(format!("{name}.json"));
        if let Err(e) = fs::write(&path, bundle.to_string()) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("wrote {} bundles to {}", cfg.patients + 1, out.display());
    ExitCode::SUCCESS
}
