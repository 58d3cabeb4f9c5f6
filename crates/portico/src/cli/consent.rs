//! `portico consent verify`: check the consent event log — every event's signature, that it
//! matches the stored Consent version it names, and that every stored version has its event
//! — and name each problem (exit status 1 when there is one).

use crate::audit::keyfile;
use crate::config::Config;
use anyhow::Context;
use clap::Subcommand;
use portico_audit::PublicKey;
use portico_store::ConsentStore;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ConsentCommand {
    /// Verify the consent events against their signatures and the stored Consent versions.
    Verify {
        /// Verify with this public key (PEM) instead of the key file. May be given several
        /// times (events signed before a key rotation).
        #[arg(long = "public-key")]
        public_keys: Vec<PathBuf>,
    },
}

pub async fn run(config: Config, cmd: ConsentCommand) -> anyhow::Result<()> {
    match cmd {
        ConsentCommand::Verify { public_keys } => {
            let keys = if public_keys.is_empty() {
                vec![keyfile::load(&config.audit_key_path())?.public()]
            } else {
                public_keys
                    .iter()
                    .map(|p| {
                        let pem = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
                        PublicKey::from_pem(&pem)
                            .with_context(|| format!("{} is not an Ed25519 public key", p.display()))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            let store = super::audit::open_store(&config).await?;
            let (events, findings) = verify(&store, &keys).await?;
            for f in &findings {
                println!("{f}");
            }
            if findings.is_empty() {
                println!("consent events: {events} verified, every stored Consent version has its event");
                Ok(())
            } else {
                println!("consent events: {} problem(s) among {events} events", findings.len());
                std::process::exit(1);
            }
        }
    }
}

/// The events read and the problems found (what `portico consent verify` prints).
pub async fn verify(store: &dyn ConsentStore, keys: &[PublicKey]) -> anyhow::Result<(usize, Vec<String>)> {
    let ledger = store.consent_ledger().await?;
    Ok((ledger.events.len(), crate::consent::verify::check(&ledger, keys)))
}
