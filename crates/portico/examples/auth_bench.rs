//! Microbenchmark: what authenticating one request with an OAuth access token costs — the
//! SHA-256 of the presented token plus the store lookup joined to its grant, user and device
//! (`server::auth::lookup_token`), and the context built from it. Compared with the admin
//! token's constant-time compare.
//!
//!   cargo run --release -p portico --example auth_bench -- [sqlite|postgres URL] [iterations]

use portico::config::Config;
use portico::identity::principal::{apply_grant, principal_of_grant};
use portico_identity::secret;
use portico_policy::RequestContext;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::env::temp_dir().join(format!("portico-auth-bench-{}", uuid::Uuid::new_v4().simple()));
    let mut config =
        Config { data_dir: dir.clone(), admin_token: "bench-admin-token-0123456789".into(), ..Config::default() };
    let mut iterations = 20_000usize;
    match args.get(1).map(String::as_str) {
        Some(url) if url.starts_with("postgres") => config.database_url = url.to_string(),
        _ => {}
    }
    if let Some(n) = args.get(2).and_then(|s| s.parse().ok()) {
        iterations = n;
    }
    config.auth.argon2_memory_kib = 64;
    config.auth.argon2_iterations = 1;
    let state = portico::cli::open(&config).await?;
    let id = &state.identity;
    let (resp, _) = id
        .issue_operator_token(
            None,
            Some("pt-00001".into()),
            portico::identity::CLI_CLIENT,
            "patient/*.rs",
            "http://x/fhir",
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let token = resp.access_token;

    // The admin token's path: a constant-time compare.
    let admin = config.admin_token.clone();
    let t = Instant::now();
    let mut hits = 0usize;
    for _ in 0..iterations * 10 {
        hits += usize::from(secret::ct_eq(std::hint::black_box(admin.as_bytes()), admin.as_bytes()));
    }
    let admin_ns = t.elapsed().as_nanos() as f64 / (iterations * 10) as f64;
    assert_eq!(hits, iterations * 10);

    // Hashing alone.
    let t = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(secret::digest(std::hint::black_box(&token)));
    }
    let digest_ns = t.elapsed().as_nanos() as f64 / iterations as f64;

    // The whole lookup + context, sequentially (one request at a time).
    let t = Instant::now();
    for _ in 0..iterations {
        let auth = id.store.access_lookup(&secret::digest(&token), portico_policy::now_ms()).await?.expect("live");
        let mut ctx = RequestContext::new(principal_of_grant(&auth.grant, auth.user.as_ref()), "bench");
        apply_grant(&mut ctx, &auth.grant, auth.user.as_ref());
        std::hint::black_box(ctx);
    }
    let lookup_ns = t.elapsed().as_nanos() as f64 / iterations as f64;
    println!("backend: {}", state.store.backend_name());
    println!("admin token compare:            {admin_ns:>10.0} ns");
    println!("access token SHA-256:           {digest_ns:>10.0} ns");
    println!("access token lookup + context:  {lookup_ns:>10.0} ns  ({iterations} sequential lookups)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
