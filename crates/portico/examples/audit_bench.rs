//! Audit trail micro-benchmarks (run in release, outside the shared target dir):
//!
//! ```sh
//! CARGO_TARGET_DIR=/var/tmp/portico-release cargo run --release -p portico --example audit_bench -- \
//!     append sqlite batched 16 10      # appends/s with 16 concurrent requests for 10 s
//! ... -- append postgres://… direct 16 10
//! ... -- fill DATA_DIR 1000000         # a data dir whose log holds 1,000,000 records
//! ... -- verify-core 1000000           # the verifier alone, over rows in memory (all cores)
//! ... -- scan DATA_DIR                  # the store's verify scan alone, without the checks
//! ... -- batch-cost sqlite 1000          # one appender commit of 1000 records
//! ```
//!
//! `SQLITE_SYNCHRONOUS=normal` runs SQLite without an fsync per commit.
//!
//! `append` measures what one read costs the audit trail: each of N tasks hands over one
//! record at a time exactly as a response does (`AuditTrail::append_response`). `direct`
//! commits each in its own transaction and `batched` goes through the server's group-commit
//! appender, both waiting for the commit; `deferred` queues it and returns (the figure then
//! includes the final flush of the queue).

use portico::audit::{AuditTrail, now_ms};
use portico::config::AuditConfig;
use portico_audit::{
    Actor, AuditKey, AuditRecord, ChainState, Chainer, Entity, EntityRole, GENESIS, Interaction, StoredRow, Trust,
    Verifier, chain,
};
use portico_store::{SqlStore, Store, StoreConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A record shaped like a patient read.
fn read_record(i: i64) -> AuditRecord {
    let pt = format!("pt-{:05}", i % 1000 + 1);
    let mut r = AuditRecord::new(
        now_ms(),
        &format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
        Interaction::Read,
        Actor::new("operator", "operator"),
    );
    r.source = Some("127.0.0.1".into());
    r.resource_type = Some("Patient".into());
    r.entities.push(Entity {
        reference: format!("Patient/{pt}/_history/1"),
        role: EntityRole::Target,
        category: "demographics".into(),
        patients: vec![pt],
    });
    r.rules.push("operator".into());
    r.normalise();
    r
}

fn temp_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("portico-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

async fn open(url: &str, connections: u32) -> Arc<dyn Store> {
    let mut cfg = StoreConfig::new(url);
    cfg.max_connections = connections;
    // SQLite `synchronous` (full: fsync every commit; normal: survives a crash of the
    // process, not of the machine).
    cfg.sqlite_synchronous = std::env::var("SQLITE_SYNCHRONOUS").unwrap_or_else(|_| "full".into());
    Arc::new(SqlStore::open(&cfg).await.expect("open store"))
}

async fn append(target: &str, mode: &str, tasks: usize, secs: u64) {
    let dir = temp_dir();
    let url =
        if target == "sqlite" { format!("sqlite://{}", dir.join("bench.db").display()) } else { target.to_string() };
    let store = open(&url, 8).await;
    let config = AuditConfig { append: mode.to_string(), ..AuditConfig::default() };
    let trail = AuditTrail::start(store.clone(), AuditKey::generate().expect("key"), &config);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let trail = trail.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = t as i64 * 1_000_000_000;
            while Instant::now() < deadline {
                let start = Instant::now();
                trail.append_response(vec![read_record(i)]).await.expect("append");
                lat.push(start.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for h in handles {
        lat.extend(h.await.expect("task"));
    }
    trail.flush().await.expect("flush");
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let n = lat.len();
    let pct = |p: f64| lat[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1000.0;
    println!(
        "{target} {mode} x{tasks}: {n} appends in {secs:.1} s = {:.0} appends/s; latency p50 {:.3} ms, p99 {:.3} ms",
        n as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn fill(data_dir: &str, n: usize) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let path = std::path::Path::new(data_dir);
    let (key, _) = portico::audit::keyfile::load_or_create(&path.join("audit-key.pem")).expect("key");
    let url = format!("sqlite://{}", path.join("portico.db").display());
    let store = open(&url, 2).await;
    let chainer = Chainer::new(key.mac_key());
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<AuditRecord> = (i..(i + 5000).min(n)).map(|j| read_record(j as i64)).collect();
        i += batch.len();
        store.audit_append(&chainer, &batch).await.expect("append");
    }
    let trail = AuditTrail::start(store, key, &AuditConfig::default());
    trail.sign_head().await.expect("sign head");
    println!("{n} records written in {:.1} s", start.elapsed().as_secs_f64());
}

fn verify_core(n: usize) {
    let key = AuditKey::from_seed(&[9; 32]);
    let chainer = Chainer::new(key.mac_key());
    let mut prev = GENESIS;
    let mut rows = Vec::with_capacity(n);
    let mut bytes = 0;
    for i in 0..n {
        let r = read_record(i as i64);
        let link = chainer.link(&prev, i as i64 + 1, &r);
        prev = link.hash;
        bytes += link.canonical.len();
        rows.push(StoredRow {
            seq: link.seq,
            ts: r.time_ms,
            interaction: r.interaction.code().into(),
            action: r.interaction.action().into(),
            outcome: r.outcome.code().into(),
            actor: r.actor.key(),
            client: String::new(),
            record: link.canonical,
            hash: chain::to_hex(&link.hash),
            mac: chain::to_hex(&link.mac),
            subjects: r.subjects(),
        });
    }
    // The parts of the check, alone.
    let t = Instant::now();
    let mut k = 0;
    for r in &rows {
        k += portico_audit::canonical::Indexed::parse(&r.record).expect("canonical").seq;
    }
    let parse = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut h = GENESIS;
    for r in &rows {
        h = chain::link_hash(&h, r.record.as_bytes());
    }
    let hash = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mac = key.mac_key();
    for r in &rows {
        h = mac.mac(&h);
        k += i64::from(r.hash.len() == 64);
    }
    let macs = t.elapsed().as_secs_f64();
    println!(
        "parts per record: strict parse {:.0} ns, hash {:.0} ns, mac {:.0} ns ({k} {})",
        parse * 1e9 / n as f64,
        hash * 1e9 / n as f64,
        macs * 1e9 / n as f64,
        h[0]
    );
    let state = ChainState { head_seq: n as i64, head_hash: chain::to_hex(&prev), ..ChainState::default() };
    let trust = Trust { keys: vec![key.public()], mac: Some(key.mac_key()) };
    let start = Instant::now();
    let mut v = Verifier::new(trust, state, None).expect("verifier");
    // In windows of 1,000 rows, on every core, as `portico audit verify` checks them.
    for w in rows.chunks(1_000) {
        v.push_rows(w.len(), |i| w[i].as_row()).expect("row");
    }
    let report = v.finish().expect("verified");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "verify core: {} records ({} bytes/record) in {secs:.2} s = {:.0} records/s",
        report.records,
        bytes / n.max(1),
        report.records as f64 / secs
    );
}

/// The store's consistent scan alone (what `audit verify` reads), without the checks.
async fn scan(data_dir: &str, batch: usize) {
    let url = format!("sqlite://{}", std::path::Path::new(data_dir).join("portico.db").display());
    let mut cfg = StoreConfig::new(url);
    cfg.migrate = false;
    cfg.max_connections = 2;
    let store = SqlStore::open(&cfg).await.expect("open store");
    let start = Instant::now();
    let mut rows = 0usize;
    let mut bytes = 0usize;
    let mut on = |item: portico_store::ScanItem| {
        if let portico_store::ScanItem::Rows(b) = item {
            rows += b.len();
            bytes += (0..b.len()).map(|i| b.row(i).record.len()).sum::<usize>();
        }
        true
    };
    store.audit_scan(batch, &mut on).await.expect("scan");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "scan: {rows} rows ({} record bytes/row) in {secs:.2} s = {:.0} rows/s",
        bytes / rows.max(1),
        rows as f64 / secs
    );
}

/// What one appender commit of `n` records costs, alone (`target`: sqlite or a PostgreSQL
/// URL).
async fn batch_cost(target: &str, n: usize) {
    let dir = temp_dir();
    let url =
        if target == "sqlite" { format!("sqlite://{}", dir.join("bench.db").display()) } else { target.to_string() };
    let store = open(&url, 2).await;
    let chainer = Chainer::new(AuditKey::generate().expect("key").mac_key());
    let rounds = (300_000 / n.max(1)).clamp(3, 300);
    let start = Instant::now();
    for i in 0..rounds {
        let batch: Vec<AuditRecord> = (0..n).map(|j| read_record((i * n + j) as i64)).collect();
        store.audit_append(&chainer, &batch).await.expect("append");
    }
    let per = start.elapsed().as_secs_f64() / rounds as f64;
    println!("one commit of {n} records: {:.3} ms ({:.1} us per record)", per * 1000.0, per * 1e6 / n as f64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(1).as_str() {
        "append" => {
            append(&arg(2), &arg(3), arg(4).parse().unwrap_or(16), arg(5).parse().unwrap_or(10)).await;
        }
        "fill" => fill(&arg(2), arg(3).parse().unwrap_or(1_000_000)).await,
        "verify-core" => verify_core(arg(2).parse().unwrap_or(1_000_000)),
        "scan" => scan(&arg(2), arg(3).parse().unwrap_or(10_000)).await,
        "batch-cost" => batch_cost(&arg(2), arg(3).parse().unwrap_or(16)).await,
        _ => eprintln!(
            "usage: audit_bench append sqlite|POSTGRES_URL direct|batched|deferred TASKS SECS | fill DATA_DIR N | verify-core N | scan DATA_DIR [BATCH] | batch-cost sqlite|POSTGRES_URL N"
        ),
    }
}
