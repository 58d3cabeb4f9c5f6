//! HTTPS termination: rustls (ring provider; TLS 1.2 and 1.3), with the certificate and key
//! reloaded from their files when they change — a renewed certificate takes effect without
//! a restart.

use crate::config::Config;
use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

fn mtime(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Load the configured certificate and key, and start a task that reloads them when
/// either file changes (checked every `every`).
pub async fn load(config: &Config, every: Duration) -> anyhow::Result<RustlsConfig> {
    // One process-wide provider: ring (never aws-lc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = PathBuf::from(&config.tls.cert_file);
    let key = PathBuf::from(&config.tls.key_file);
    let tls = RustlsConfig::from_pem_file(&cert, &key)
        .await
        .with_context(|| format!("cannot load TLS certificate {} and key {}", cert.display(), key.display()))?;
    let reloading = tls.clone();
    tokio::spawn(async move {
        let mut seen = (mtime(&cert), mtime(&key));
        loop {
            tokio::time::sleep(every).await;
            let now = (mtime(&cert), mtime(&key));
            if now != seen {
                match reloading.reload_from_pem_file(&cert, &key).await {
                    Ok(()) => {
                        tracing::info!("TLS certificate reloaded");
                        seen = now;
                    }
                    // A half-written pair is retried on the next tick; the old one keeps serving.
                    Err(e) => tracing::warn!(error = %e, "TLS certificate changed but cannot be loaded yet"),
                }
            }
        }
    });
    Ok(tls)
}
