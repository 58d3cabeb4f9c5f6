//! `portico demo`: deterministic synthetic patients, loaded through the normal import path,
//! then served, with everything a first-time user needs printed.

use crate::config::Config;
use anyhow::Context;
use portico_demo::DemoConfig;
use std::io::Write;

pub async fn run(mut config: Config, patients: usize, no_serve: bool) -> anyhow::Result<()> {
    if config.admin_token.is_empty() {
        // A fresh random token for this demo run, printed below; never a fixed default.
        config.admin_token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    }
    let state = super::open(&config).await?;
    let demo = DemoConfig { patients, ..DemoConfig::default() };
    let start = std::time::Instant::now();
    let mut resources = 0usize;
    let bar = indicatif::ProgressBar::new(patients as u64 + 1);
    for bundle in portico_demo::all_bundles(&demo) {
        resources += crate::import::import_value(&state, bundle).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!("imported {resources} resources in {secs:.2} s ({:.0} resources/s)", resources as f64 / secs.max(1e-9));
    let users_path = config.data_dir.join("demo-users.txt");
    write_users(&users_path, &demo).context("cannot write the demo users file")?;
    if no_serve {
        return Ok(());
    }
    let listener_hint = config.listen.clone();
    println!("demo users (for the patient portal, once identity lands): {}", users_path.display());
    println!("admin token: {}", config.admin_token);
    println!("try:");
    println!("  curl -H 'Authorization: Bearer {}' http://{listener_hint}/fhir/Patient?_count=5", config.admin_token);
    println!(
        "  curl -H 'Authorization: Bearer {}' 'http://{listener_hint}/fhir/Observation?patient=pt-00001&category=laboratory&_count=50'",
        config.admin_token
    );
    super::serve(state).await
}

fn write_users(path: &std::path::Path, demo: &DemoConfig) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(path)?;
    writeln!(f, "# portico demo users (synthetic; passwords are for local demos only)")?;
    writeln!(f, "# username\trole\tpassword\tpatient\tpractitioner\trelated_to")?;
    for u in portico_demo::demo_users(demo) {
        writeln!(
            f,
            "{}\t{}\t{}\t{}\t{}\t{}",
            u.username,
            u.role,
            u.password,
            u.patient.unwrap_or_default(),
            u.practitioner.unwrap_or_default(),
            u.related_to.join(",")
        )?;
    }
    Ok(())
}
