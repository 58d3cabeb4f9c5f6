//! `portico audit …`: verify the log, export the public key, sign the head, prune.

use crate::audit::{self, VerifyError, keyfile, witness};
use crate::config::Config;
use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use portico_audit::{PublicKey, Trust};
use portico_store::{SqlStore, StoreConfig};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the whole audit log — hash chain, record MACs, signed heads, the witness file,
    /// index entries — and name the first bad record if there is one (exit status 1).
    Verify {
        /// Witness file holding a signed head (default: the configured audit.witness_file).
        #[arg(long)]
        witness: Option<PathBuf>,
        /// Verify with this public key (PEM) instead of the key file; record MACs, which
        /// need the secret key, are then not checked. May be given several times.
        #[arg(long = "public-key")]
        public_keys: Vec<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Print the audit public key (PEM), for auditors and `verify --public-key`.
    PublicKey,
    /// Sign the chain's head now and update the witness file.
    SignHead,
    /// Delete records older than the retention (or `--before`), leaving a signed checkpoint.
    Prune {
        /// Prune records made before this date or instant (default: now minus
        /// audit.retention_days).
        #[arg(long)]
        before: Option<String>,
    },
}

/// Open the database without migrating or starting anything.
pub(crate) async fn open_store(config: &Config) -> anyhow::Result<SqlStore> {
    let url = config.effective_database_url();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let file = path.split('?').next().unwrap_or(path);
        if !std::path::Path::new(file).exists() {
            bail!("no database at {file}");
        }
    }
    let cfg = StoreConfig {
        url: url.clone(),
        max_connections: 2,
        sqlite_synchronous: config.sqlite_synchronous.clone(),
        migrate: false,
    };
    SqlStore::open(&cfg).await.with_context(|| format!("cannot open database {}", crate::config::redact_url(&url)))
}

pub async fn run(config: Config, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify { witness, public_keys, quiet } => verify(&config, witness, public_keys, quiet).await,
        AuditCommand::PublicKey => {
            let key = keyfile::load(&config.audit_key_path())?;
            print!("{}", key.public().to_pem());
            eprintln!("key id: {}", key.public().key_id());
            Ok(())
        }
        AuditCommand::SignHead => {
            let state = super::open(&config).await?;
            match state.audit.sign_head().await? {
                Some(h) => println!("signed head #{} ({})", h.seq, portico_audit::chain::to_hex(&h.hash)),
                None => println!("the audit log is empty: nothing to sign"),
            }
            Ok(())
        }
        AuditCommand::Prune { before } => {
            let before_ms = match before {
                Some(d) => portico_fhir::datetime::parse_range(&d)
                    .map(|(lo, _)| lo)
                    .context("--before must be a date or instant")?,
                None if config.audit.retention_days > 0 => {
                    audit::now_ms() - (config.audit.retention_days as i64) * 24 * 3600 * 1000
                }
                None => bail!("give --before or set audit.retention_days"),
            };
            let state = super::open(&config).await?;
            match state.audit.prune_before(before_ms).await? {
                (n, Some(cp)) => {
                    println!("pruned {n} records; the chain continues from the signed checkpoint at #{}", cp.seq)
                }
                _ => println!("nothing to prune"),
            }
            Ok(())
        }
    }
}

async fn verify(
    config: &Config,
    witness_path: Option<PathBuf>,
    public_keys: Vec<PathBuf>,
    quiet: bool,
) -> anyhow::Result<()> {
    let trust = if public_keys.is_empty() {
        let key = keyfile::load(&config.audit_key_path())?;
        Trust { keys: vec![key.public()], mac: Some(key.mac_key()) }
    } else {
        let mut keys = Vec::new();
        for p in &public_keys {
            let pem = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            keys.push(
                PublicKey::from_pem(&pem).with_context(|| format!("{} is not an Ed25519 public key", p.display()))?,
            );
        }
        Trust { keys, mac: None }
    };
    let witness_path = witness_path
        .or_else(|| (!config.audit.witness_file.is_empty()).then(|| PathBuf::from(&config.audit.witness_file)));
    let witness = match &witness_path {
        Some(p) => {
            let w = witness::read(p)?;
            if w.is_none() {
                eprintln!(
                    "warning: the witness file {} does not exist; truncation and rollback cannot be detected",
                    p.display()
                );
            }
            w
        }
        None => {
            eprintln!(
                "note: no witness file configured (audit.witness_file); truncation and rollback are checked against the database's own heads only"
            );
            None
        }
    };
    let store = open_store(config).await?;
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let result = audit::verify_store(&store, trust.clone(), witness, &mut progress).await;
    bar.finish_and_clear();
    store.close().await;
    let secs = start.elapsed().as_secs_f64();
    match result {
        Ok(r) => {
            println!(
                "audit log verified: {} records (#{}..#{}) in {:.2} s ({:.0} records/s)",
                r.records,
                r.first_seq,
                r.last_seq,
                secs,
                r.records as f64 / secs.max(1e-9)
            );
            println!(
                "  signed heads matched: {}; witness: {}; record MACs: {}; checkpoint: {}",
                r.heads_checked,
                r.witness_seq.map_or("none".to_string(), |s| format!("#{s}")),
                if r.macs_checked { "checked" } else { "not checked (public key only)" },
                r.checkpoint_seq.map_or("none".to_string(), |s| format!("#{s}"))
            );
            if r.outbox_waiting > 0 {
                println!("  records of writes being chained (in the outbox): {}", r.outbox_waiting);
            }
            Ok(())
        }
        Err(e @ (VerifyError::Tampered(_) | VerifyError::Unchained { .. })) => {
            println!("AUDIT LOG FAILED VERIFICATION");
            println!("{e}");
            bail!("the audit log did not verify")
        }
        Err(e) => Err(e.into()),
    }
}
