//! Role subcommands: `serve`, `demo`, `import`, `migrate`, `audit`, `consent`.

mod audit;
pub mod consent;
mod demo;
mod identity;
pub mod tls;

use crate::config::Config;
use crate::server::{self, AppState};
use anyhow::Context;
use clap::{Parser, Subcommand};
use portico_fhir::classify::Classifier;
use portico_policy::{Gate, TracingSink};
use portico_store::{SqlStore, StoreConfig};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "portico", version, about = "Consent-first patient access server (FHIR R4)")]
pub struct Cli {
    /// TOML configuration file (PORTICO_* environment variables override it).
    #[arg(long, global = true, env = "PORTICO_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the FHIR API.
    Serve,
    /// Load deterministic synthetic patients, then serve.
    Demo {
        /// How many patients to generate.
        #[arg(long, default_value_t = 50)]
        patients: usize,
        /// Load the data and exit instead of serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Import NDJSON files, resources, Bundles or directories of them.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Re-apply the classification rules (PORTICO_CLASSIFICATION_FILE) to every stored
    /// version after they changed: categories and sensitivity labels, with a progress bar.
    Relabel,
    /// The audit trail: verify, public key, sign head, prune.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Consent events: verify their signatures against the stored Consent versions.
    Consent {
        #[command(subcommand)]
        command: consent::ConsentCommand,
    },
    /// OAuth clients (apps and backend services): add, list, remove.
    Client {
        #[command(subcommand)]
        command: identity::ClientCommand,
    },
    /// Users: add, list, disable.
    User {
        #[command(subcommand)]
        command: identity::UserCommand,
    },
    /// Operator-issued access tokens (for scripts, support and black-box tests).
    Token {
        #[command(subcommand)]
        command: identity::TokenCommand,
    },
}

/// Operational logs go to stderr; `RUST_LOG` sets the filter (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => {
            let state = open(&config).await?;
            serve(state).await
        }
        Command::Demo { patients, no_serve } => demo::run(config, patients, no_serve).await,
        Command::Import { paths } => {
            let state = open(&config).await?;
            let stats = crate::import::import_paths(&state, &paths, true).await?;
            println!(
                "imported {} resources in {:.2} s ({:.0} resources/s)",
                stats.resources,
                stats.seconds,
                stats.rate()
            );
            Ok(())
        }
        Command::Relabel => relabel(&config).await,
        Command::Migrate => {
            open(&config).await?;
            // Versions stored before migration 0003 carry no category codings until this
            // fills them in (category-narrowed SMART scopes do not reach them until then).
            let store = SqlStore::open(&StoreConfig {
                url: config.effective_database_url(),
                max_connections: 2,
                sqlite_synchronous: config.sqlite_synchronous.clone(),
                migrate: false,
            })
            .await?;
            let filled = store.backfill_category_codes().await?;
            // Likewise the clinical date and author of migration 0004 (consent periods, the
            // results hold and `authoredby` consents judge rows without them as undated).
            let facts = store.backfill_resource_facts().await?;
            println!(
                "database schema is up to date ({filled} stored versions given their category codings, {facts} their \
                 clinical date and author)"
            );
            Ok(())
        }
        Command::Audit { command } => audit::run(config, command).await,
        Command::Consent { command } => consent::run(config, command).await,
        Command::Client { command } => identity::client(config, command).await,
        Command::User { command } => identity::user(config, command).await,
        Command::Token { command } => identity::token(config, command).await,
    }
}

/// Open the store (migrating it) and assemble the server state.
pub async fn open(config: &Config) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let url = config.effective_database_url();
    let store_cfg = StoreConfig {
        url: url.clone(),
        max_connections: config.max_connections,
        sqlite_synchronous: config.sqlite_synchronous.clone(),
        migrate: true,
    };
    let store = SqlStore::open(&store_cfg)
        .await
        .with_context(|| format!("cannot open database {}", crate::config::redact_url(&url)))?;
    let classifier = load_classifier(config)?;
    let rules = Arc::new(config.operator_rules()?);
    let store = Arc::new(store);
    let identity_store: Arc<dyn portico_store::IdentityStore> = store.clone();
    let consents: Arc<dyn portico_store::ConsentStore> = store.clone();
    let export = crate::export::Exports::open(store.clone(), &config.data_dir, &config.export).await?;
    let store: Arc<dyn portico_store::Store> = store;
    let key_path = config.audit_key_path();
    let (key, made) = crate::audit::keyfile::load_or_create(&key_path)?;
    if made {
        tracing::info!(key_id = %key.public().key_id(), "audit key created");
    }
    if config.audit.witness_file.is_empty() {
        tracing::info!("no audit.witness_file: truncation and rollback are checked against the database's own heads");
    } else if std::path::Path::new(&config.audit.witness_file).starts_with(&config.data_dir) {
        tracing::warn!(
            "audit.witness_file lies inside the data dir: keep it where the data dir's keepers cannot write"
        );
    }
    check_audit_key(store.as_ref(), &key, &key_path, config.audit.rotate_key).await?;
    let audit = crate::audit::AuditTrail::start(store.clone(), key, &config.audit);
    let keys = portico_identity::jose::SigningKey::load_or_create(&config.signing_key_path())
        .map_err(|e| anyhow::anyhow!("cannot load or create the OAuth signing key: {e}"))?;
    let identity = crate::identity::Identity::new(identity_store, Arc::new(keys), &config.auth);
    identity.ensure_builtin_clients().await.map_err(|e| anyhow::anyhow!("cannot set up the built-in clients: {e}"))?;
    Ok(AppState {
        export,
        identity,
        limits: crate::server::ratelimit::Limits::new(&config.limits),
        store,
        consents,
        audit,
        gate: Gate::with_rules(Arc::new(TracingSink), rules),
        classifier: Arc::new(classifier),
        config: Arc::new(config.clone()),
    })
}

/// The operator's classification rules (`PORTICO_CLASSIFICATION_FILE`), or the built-in ones.
fn load_classifier(config: &Config) -> anyhow::Result<Classifier> {
    if config.classification_file.is_empty() {
        return Ok(Classifier::builtin().clone());
    }
    let text = std::fs::read_to_string(&config.classification_file)
        .with_context(|| format!("cannot read classification file {}", config.classification_file))?;
    Classifier::from_json(&text).map_err(|e| anyhow::anyhow!("invalid classification file: {e}"))
}

/// `portico relabel`: the stored data judged by today's classification rules.
async fn relabel(config: &Config) -> anyhow::Result<()> {
    let classifier = load_classifier(config)?;
    let url = config.effective_database_url();
    let store = SqlStore::open(&StoreConfig {
        url: url.clone(),
        max_connections: 2,
        sqlite_synchronous: config.sqlite_synchronous.clone(),
        migrate: true,
    })
    .await
    .with_context(|| format!("cannot open database {}", crate::config::redact_url(&url)))?;
    let total = store.relabel_total().await?;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("relabel {bar:40} {pos}/{len} versions ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = store.relabel(&classifier, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    println!(
        "relabelled: {} of {} stored versions changed category or sensitivity labels",
        report.changed, report.versions
    );
    Ok(())
}

/// Every process appending to one database must hold the same audit key: records carry a MAC
/// under it and heads its signature, so a process with another key would leave a log that
/// `audit verify` rejects. The newest signed head tells which key the log is under; a
/// mismatch stops start-up (unless the operator rotates the key on purpose).
async fn check_audit_key(
    store: &dyn portico_store::Store,
    key: &portico_audit::AuditKey,
    key_path: &std::path::Path,
    rotate: bool,
) -> anyhow::Result<()> {
    let Some(head) = store.audit_latest_head().await.context("cannot read the audit log's signed heads")? else {
        return Ok(());
    };
    if head.verify(&[key.public()]) {
        return Ok(());
    }
    if rotate {
        tracing::warn!(
            key_id = %key.public().key_id(),
            "PORTICO_AUDIT_ROTATE_KEY: the audit log's newest signed head is under another key; \
             records from now on are under this one (verify older records with both public keys)"
        );
        return Ok(());
    }
    anyhow::bail!(
        "the audit log's newest signed head (#{}) was not signed by this process's audit key {} ({}): every \
         process on one database must use the same audit key file. Copy the key the other processes use, or set \
         PORTICO_AUDIT_ROTATE_KEY=1 for one start to rotate it on purpose",
        head.seq,
        key.public().key_id(),
        key_path.display()
    )
}

/// Bind, print where we listen, serve until SIGINT/SIGTERM.
pub async fn serve(state: AppState) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(&state.config.listen)
        .with_context(|| format!("cannot listen on {}", state.config.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scheme = if state.config.tls_enabled() { "https" } else { "http" };
    println!("portico listening on {scheme}://{addr}");
    if state.config.admin_token.is_empty() {
        println!("note: PORTICO_ADMIN_TOKEN is not set: only OAuth access tokens and portal sessions are accepted");
    }
    let app = server::router(state.clone());
    crate::export::spawn(&state);
    crate::audit::spawn_head_signer(
        state.audit.clone(),
        std::time::Duration::from_secs(state.config.audit.head_interval_secs),
    );
    crate::audit::spawn_retention(state.audit.clone(), state.config.audit.retention_days);
    let limits = state.limits.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            limits.retain_recent();
        }
    });
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if state.config.tls_enabled() {
        let every = match state.config.tls.reload_secs {
            0 => 30,
            s => s,
        };
        let tls = tls::load(&state.config, std::time::Duration::from_secs(every)).await?;
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stopper.graceful_shutdown(Some(std::time::Duration::from_secs(30)));
        });
        axum_server::from_tcp_rustls(listener, tls)?.handle(handle).serve(service).await?;
    } else {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await?;
    }
    tracing::info!("shutting down");
    // Commit the records of answered requests still queued (deferred mode), then sign where
    // the chain ends.
    match state.audit.shutdown_flush(std::time::Duration::from_secs(10)).await {
        0 => {}
        lost => {
            tracing::error!(records = lost, "audit records of answered requests could not be committed at shutdown")
        }
    }
    match state.audit.sign_head().await {
        Ok(Some(h)) => tracing::info!(seq = h.seq, "audit head signed"),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot sign the audit head at shutdown"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
