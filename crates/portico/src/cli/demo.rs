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
    let users = create_users(&state, &demo).await?;
    let users_path = config.data_dir.join("demo-users.txt");
    write_users(&users_path, &users).context("cannot write the demo users file")?;
    if no_serve {
        return Ok(());
    }
    let listener_hint = config.listen.clone();
    println!("demo users (username, role, password, TOTP secret): {}", users_path.display());
    for (u, secret) in users.iter().take(8) {
        println!("  {:<24} {:<10} {:<18} totp {}", u.username, u.role, u.password, secret);
    }
    println!("sign in: http://{listener_hint}/oauth2/login");
    println!("SMART discovery: http://{listener_hint}/fhir/.well-known/smart-configuration");
    println!("admin token: {}", config.admin_token);
    println!("try:");
    println!("  curl -H 'Authorization: Bearer {}' http://{listener_hint}/fhir/Patient?_count=5", config.admin_token);
    println!(
        "  curl -H 'Authorization: Bearer {}' 'http://{listener_hint}/fhir/Observation?patient=pt-00001&category=laboratory&_count=50'",
        config.admin_token
    );
    super::serve(state).await
}

/// A deterministic TOTP secret per demo user (base32 of a hash of the username), so the
/// users file stays right across `portico demo` runs on the same data.
fn demo_totp_secret(username: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("portico-demo-totp:{username}").as_bytes());
    totp_rs::Secret::from(digest[..20].to_vec()).to_base32()
}

/// Create the demo users (those that do not exist yet) with their TOTP enrolled.
async fn create_users(
    state: &crate::server::AppState,
    demo: &DemoConfig,
) -> anyhow::Result<Vec<(portico_demo::DemoUser, String)>> {
    use portico_store::identity::PatientLink;
    let mut out = Vec::new();
    for u in portico_demo::demo_users(demo) {
        let secret = demo_totp_secret(&u.username);
        if state.identity.store.user_by_username(&u.username).await?.is_none() {
            let mut links: Vec<PatientLink> =
                u.patient.iter().map(|p| PatientLink { patient: p.clone(), via: None, name: None }).collect();
            links.extend(u.related_to.iter().map(|p| PatientLink {
                patient: p.clone(),
                via: Some(format!("RelatedPerson/{}", portico_demo::related_person_id(p))),
                name: None,
            }));
            let fhir_user = match (&u.patient, &u.practitioner, links.first().and_then(|l| l.via.clone())) {
                (Some(p), _, _) => Some(format!("Patient/{p}")),
                (_, Some(pr), _) => Some(format!("Practitioner/{pr}")),
                (_, _, Some(rp)) => Some(rp),
                _ => None,
            };
            state
                .identity
                .create_user(crate::identity::users::NewUser {
                    username: u.username.clone(),
                    password: u.password.clone(),
                    role: u.role.to_string(),
                    display_name: u.username.clone(),
                    fhir_user,
                    links,
                    totp_secret: Some(secret.clone()),
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot create demo user {}: {e}", u.username))?;
        }
        out.push((u, secret));
    }
    Ok(out)
}

fn write_users(path: &std::path::Path, users: &[(portico_demo::DemoUser, String)]) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(path)?;
    writeln!(f, "# portico demo users (synthetic; passwords and TOTP secrets are for local demos only)")?;
    writeln!(f, "# username\trole\tpassword\ttotp_secret\tpatient\tpractitioner\trelated_to")?;
    for (u, secret) in users {
        writeln!(
            f,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            u.username,
            u.role,
            u.password,
            secret,
            u.patient.clone().unwrap_or_default(),
            u.practitioner.clone().unwrap_or_default(),
            u.related_to.join(",")
        )?;
    }
    Ok(())
}
