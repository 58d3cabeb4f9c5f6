//! Configuration: defaults, then an optional TOML file, then `PORTICO_*` environment
//! variables (the names scripts and deployments rely on). Validated once at start-up.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Everything `serve` needs. Secrets are kept out of `Debug`.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `host:port`; port 0 picks a free port (the chosen address is printed).
    pub listen: String,
    /// Where the SQLite file and generated files live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty: SQLite in the data dir.
    pub database_url: String,
    /// Bearer token of the operator principal; empty: the FHIR API answers 401.
    pub admin_token: String,
    /// SQLite `synchronous`: `full` (default) or `normal`.
    pub sqlite_synchronous: String,
    /// Database pool size.
    pub max_connections: u32,
    /// Whether `PUT` to an id that does not exist creates it.
    pub create_on_update: bool,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Operator rule file for categories and sensitivity labels (empty: built-in rules).
    pub classification_file: String,
    /// Operator rules of the consent engine (adolescent confidentiality, Part 2, results hold,
    /// caregiver redactions, break-the-glass; format in `crates/policy/src/rules.rs`). Empty:
    /// the shipped `crates/policy/data/operator-rules.json`. Validated at start-up.
    pub policy_file: String,
    /// The audit trail (`[audit]` in the file).
    pub audit: AuditConfig,
    /// Identity, OAuth and sessions (`[auth]` in the file).
    pub auth: AuthConfig,
    /// Rate limits (`[limits]` in the file).
    pub limits: LimitsConfig,
    /// HTTPS and proxies (`[tls]` in the file).
    pub tls: TlsConfig,
    /// Bulk `$export` jobs (`[export]` in the file).
    pub export: ExportConfig,
}

/// Bulk `$export`: where files go, how long they live, how many jobs may run at once.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// Directory for export files (with `store` set: the staging area of running jobs);
    /// empty: `exports` in the data dir.
    pub dir: String,
    /// Where finished files are kept: empty for `dir`, or `s3://bucket/prefix` for an
    /// S3-compatible object store. Checked at start-up (the bucket is listed once).
    pub store: String,
    /// S3 endpoint (`https://…`, for stores other than AWS); empty: `AWS_ENDPOINT_URL` or AWS.
    pub s3_endpoint: String,
    /// S3 region; empty: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub s3_region: String,
    /// Static credentials; empty: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    /// `AWS_SESSION_TOKEN`, then the usual AWS credential chain (web identity, ECS, IMDS).
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    /// Allow an `http://` endpoint (development stores on loopback only).
    pub s3_allow_http: bool,
    /// How long a finished export's files are kept (and downloadable).
    pub expiry_secs: i64,
    /// Concurrent (accepted or running) jobs per OAuth client / per patient (0: unlimited).
    pub max_jobs_per_client: i64,
    pub max_jobs_per_patient: i64,
    /// A worker's claim on a job lasts this long unless renewed (after a crash, another
    /// worker takes the job over once it lapses).
    pub lease_secs: i64,
    /// Worker tasks per server process (0: this process runs no export work).
    pub workers: usize,
    /// Resources per batch: one gate decision, fsync, audit record and checkpoint each (a
    /// crash repeats at most one batch). Rows stream to the files, so a larger batch costs
    /// no memory; `_typeFilter` and deletion pages are capped at a search page (1,000).
    pub batch: usize,
    /// Manifest URLs carry a signature and an expiry, so files can be fetched without the
    /// access token (`requiresAccessToken: false`); each status poll issues fresh links.
    pub signed_urls: bool,
    /// How long a signed link lives (at most 15 minutes).
    pub url_ttl_secs: i64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            dir: String::new(),
            store: String::new(),
            s3_endpoint: String::new(),
            s3_region: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_allow_http: false,
            expiry_secs: 24 * 3600,
            max_jobs_per_client: 4,
            max_jobs_per_patient: 2,
            lease_secs: 30,
            workers: 1,
            batch: 10_000,
            signed_urls: false,
            url_ttl_secs: 600,
        }
    }
}

impl ExportConfig {
    /// [`ExportConfig::lease_secs`] in milliseconds (at least one second).
    pub fn lease_ms(&self) -> i64 {
        self.lease_secs.max(1) * 1000
    }

    /// The object store settings (None: files stay in `dir`).
    pub fn s3_settings(&self) -> Result<Option<crate::export::storage::S3Settings>, String> {
        if self.store.is_empty() {
            return Ok(None);
        }
        let (bucket, prefix) = crate::export::storage::S3Settings::parse_url(&self.store)
            .map_err(|e| format!("PORTICO_EXPORT_STORE: {e}"))?;
        Ok(Some(crate::export::storage::S3Settings {
            bucket,
            prefix,
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            allow_http: self.s3_allow_http,
        }))
    }
}

impl std::fmt::Debug for ExportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportConfig")
            .field("dir", &self.dir)
            .field("store", &self.store)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &if self.s3_secret_access_key.is_empty() { "(none)" } else { "(set)" })
            .field("s3_allow_http", &self.s3_allow_http)
            .field("expiry_secs", &self.expiry_secs)
            .field("max_jobs_per_client", &self.max_jobs_per_client)
            .field("max_jobs_per_patient", &self.max_jobs_per_patient)
            .field("lease_secs", &self.lease_secs)
            .field("workers", &self.workers)
            .field("batch", &self.batch)
            .finish()
    }
}

/// The authorization server, users and web sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The public base URL (`https://portal.example.org`); empty: taken from each request's
    /// `Host` (and, behind a trusted proxy, its forwarded headers).
    pub public_url: String,
    /// The RS256 key that signs id_tokens (PKCS#8 PEM); empty: `oauth-signing-key.pem` in
    /// the data dir, made on first start.
    pub signing_key_file: String,
    /// Access-token lifetime.
    pub access_token_secs: i64,
    /// Refresh-token lifetime (`offline_access`); `online_access` refresh tokens end with
    /// the web session's absolute timeout.
    pub refresh_token_days: i64,
    /// A reused refresh token within this window is taken for a concurrent refresh (refused
    /// without revoking the family); later reuse revokes the family.
    pub refresh_grace_secs: i64,
    /// Authorization-code lifetime.
    pub code_secs: i64,
    /// How long a step-up verification stays fresh.
    pub step_up_fresh_secs: i64,
    /// Web sessions end after this much inactivity…
    pub session_idle_secs: i64,
    /// …and this long after login, whatever the activity.
    pub session_absolute_secs: i64,
    /// Consecutive failed logins before a temporary lockout…
    pub lockout_threshold: i64,
    /// …which lasts this long.
    pub lockout_secs: i64,
    /// Argon2id cost: memory (KiB) and passes.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    /// Let the server fetch client JWK Sets from loopback, link-local and private addresses
    /// (development only).
    pub allow_private_jwks_urls: bool,
    /// RFC 7591 dynamic client registration (`POST /oauth2/register`).
    pub dynamic_registration: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            public_url: String::new(),
            signing_key_file: String::new(),
            access_token_secs: 900,
            refresh_token_days: 30,
            refresh_grace_secs: 10,
            code_secs: 60,
            step_up_fresh_secs: 300,
            session_idle_secs: 30 * 60,
            session_absolute_secs: 12 * 3600,
            lockout_threshold: 5,
            lockout_secs: 15 * 60,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            allow_private_jwks_urls: false,
            dynamic_registration: false,
        }
    }
}

/// Requests per minute before 429 (0: unlimited).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Every request, per source address.
    pub per_ip_per_minute: u32,
    /// Every request, per OAuth client.
    pub per_client_per_minute: u32,
    /// Login and token endpoints, per source address.
    pub auth_per_ip_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { per_ip_per_minute: 60_000, per_client_per_minute: 60_000, auth_per_ip_per_minute: 60 }
    }
}

/// TLS termination and proxies.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain and private key: when both are set, `serve` speaks HTTPS
    /// (TLS 1.2+) and reloads them when the files change.
    pub cert_file: String,
    pub key_file: String,
    /// Trust `X-Forwarded-For`/`-Proto`/`-Host` (only behind a proxy you run).
    pub trust_forwarded: bool,
    /// How often (seconds) the certificate files are checked for changes (0: 30).
    pub reload_secs: u64,
}

/// Audit trail settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The Ed25519 audit key (PKCS#8 PEM); empty: `audit-key.pem` in the data dir, made on
    /// first start with mode 0600. Every process writing to one database must use the same key.
    pub key_file: String,
    /// Where the newest signed head is also kept, outside the data dir (another disk or
    /// machine); empty: no witness. `audit verify` uses it to catch truncation and rollback.
    pub witness_file: String,
    /// Seconds between signed heads (0: only at shutdown).
    pub head_interval_secs: u64,
    /// Records older than this many days are pruned behind a signed checkpoint (0: keep all).
    pub retention_days: u64,
    /// How records not tied to a write are appended: `deferred` (default: the response does
    /// not wait; committed within `flush_ms`, bounded by `queue_records`), `batched` (group
    /// commit before the response) or `direct` (one transaction per request).
    pub append: String,
    /// Deferred mode: longest a record waits before its commit starts, in milliseconds.
    pub flush_ms: u64,
    /// Deferred mode: commit as soon as this many records wait.
    pub flush_records: usize,
    /// Deferred mode: most answered records not yet committed; beyond it (or while commits
    /// fail) responses wait for their records' commit again (0: never defer).
    pub queue_records: usize,
    /// Start although the log's newest signed head is under another audit key (a deliberate
    /// key rotation); otherwise such a start is refused.
    pub rotate_key: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_file: String::new(),
            witness_file: String::new(),
            head_interval_secs: 60,
            retention_days: 0,
            append: "deferred".into(),
            flush_ms: 50,
            flush_records: 1_000,
            queue_records: 10_000,
            rotate_key: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data"),
            database_url: String::new(),
            admin_token: String::new(),
            sqlite_synchronous: "full".into(),
            max_connections: 8,
            create_on_update: true,
            max_body_bytes: 16 * 1024 * 1024,
            classification_file: String::new(),
            policy_file: String::new(),
            audit: AuditConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            tls: TlsConfig::default(),
            export: ExportConfig::default(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("admin_token", &if self.admin_token.is_empty() { "(none)" } else { "(set)" })
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .field("max_connections", &self.max_connections)
            .field("create_on_update", &self.create_on_update)
            .field("audit", &self.audit)
            .field("auth", &self.auth)
            .field("limits", &self.limits)
            .field("tls", &self.tls)
            .field("export", &self.export)
            .finish_non_exhaustive()
    }
}

/// Hide the password in a database URL before it reaches a log.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl Config {
    /// Load from an optional TOML file and the process environment.
    /// The consent engine's operator rules: the file named by `policy_file` (read and
    /// validated as a whole; an error names the file and the problem), or the shipped ones.
    pub fn operator_rules(&self) -> anyhow::Result<portico_policy::OperatorRules> {
        if self.policy_file.is_empty() {
            return Ok(portico_policy::OperatorRules::builtin().clone());
        }
        let text = std::fs::read_to_string(&self.policy_file).map_err(|e| {
            anyhow::anyhow!("cannot read the policy file {} (PORTICO_POLICY_FILE): {e}", self.policy_file)
        })?;
        portico_policy::OperatorRules::from_json(&text)
            .map_err(|e| anyhow::anyhow!("invalid policy file {} (PORTICO_POLICY_FILE): {e}", self.policy_file))
    }

    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        Self::load_from(file, |k| std::env::var(k).ok())
    }

    /// Load with an explicit environment (testable).
    pub fn load_from(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(v) = env("PORTICO_LISTEN") {
            cfg.listen = v;
        }
        if let Some(v) = env("PORTICO_DATA_DIR") {
            cfg.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("PORTICO_DATABASE_URL") {
            cfg.database_url = v;
        }
        if let Some(v) = env("PORTICO_ADMIN_TOKEN") {
            cfg.admin_token = v;
        }
        if let Some(path) = env("PORTICO_ADMIN_TOKEN_FILE") {
            cfg.admin_token = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read PORTICO_ADMIN_TOKEN_FILE: {e}"))?
                .trim()
                .to_string();
        }
        if let Some(v) = env("PORTICO_SQLITE_SYNCHRONOUS") {
            cfg.sqlite_synchronous = v;
        }
        if let Some(v) = env("PORTICO_MAX_CONNECTIONS") {
            cfg.max_connections = v.parse().map_err(|_| anyhow::anyhow!("PORTICO_MAX_CONNECTIONS must be a number"))?;
        }
        if let Some(v) = env("PORTICO_CREATE_ON_UPDATE") {
            cfg.create_on_update = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = env("PORTICO_CLASSIFICATION_FILE") {
            cfg.classification_file = v;
        }
        if let Some(v) = env("PORTICO_POLICY_FILE") {
            cfg.policy_file = v;
        }
        if let Some(v) = env("PORTICO_AUDIT_KEY_FILE") {
            cfg.audit.key_file = v;
        }
        if let Some(v) = env("PORTICO_AUDIT_WITNESS_FILE") {
            cfg.audit.witness_file = v;
        }
        if let Some(v) = env("PORTICO_AUDIT_HEAD_INTERVAL_SECS") {
            cfg.audit.head_interval_secs =
                v.parse().map_err(|_| anyhow::anyhow!("PORTICO_AUDIT_HEAD_INTERVAL_SECS must be a number"))?;
        }
        if let Some(v) = env("PORTICO_AUDIT_RETENTION_DAYS") {
            cfg.audit.retention_days =
                v.parse().map_err(|_| anyhow::anyhow!("PORTICO_AUDIT_RETENTION_DAYS must be a number"))?;
        }
        if let Some(v) = env("PORTICO_AUDIT_ROTATE_KEY") {
            cfg.audit.rotate_key = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = env("PORTICO_AUDIT_APPEND") {
            cfg.audit.append = v;
        }
        for (name, slot) in [
            ("PORTICO_AUDIT_FLUSH_RECORDS", &mut cfg.audit.flush_records),
            ("PORTICO_AUDIT_QUEUE_RECORDS", &mut cfg.audit.queue_records),
        ] {
            if let Some(v) = env(name) {
                *slot = v.parse().map_err(|_| anyhow::anyhow!("{name} must be a number"))?;
            }
        }
        if let Some(v) = env("PORTICO_AUDIT_FLUSH_MS") {
            cfg.audit.flush_ms = v.parse().map_err(|_| anyhow::anyhow!("PORTICO_AUDIT_FLUSH_MS must be a number"))?;
        }
        let num = |name: &str| -> anyhow::Result<Option<i64>> {
            env(name)
                .map(|v| v.parse::<i64>().map_err(|_| anyhow::anyhow!("{name} must be a whole number")))
                .transpose()
        };
        let flag = |name: &str| env(name).map(|v| matches!(v.as_str(), "1" | "true" | "yes"));
        if let Some(v) = env("PORTICO_PUBLIC_URL") {
            cfg.auth.public_url = v.trim_end_matches('/').to_string();
        }
        if let Some(v) = env("PORTICO_SIGNING_KEY_FILE") {
            cfg.auth.signing_key_file = v;
        }
        let a = &mut cfg.auth;
        for (name, slot) in [
            ("PORTICO_ACCESS_TOKEN_SECS", &mut a.access_token_secs),
            ("PORTICO_REFRESH_TOKEN_DAYS", &mut a.refresh_token_days),
            ("PORTICO_REFRESH_GRACE_SECS", &mut a.refresh_grace_secs),
            ("PORTICO_CODE_SECS", &mut a.code_secs),
            ("PORTICO_STEP_UP_FRESH_SECS", &mut a.step_up_fresh_secs),
            ("PORTICO_SESSION_IDLE_SECS", &mut a.session_idle_secs),
            ("PORTICO_SESSION_ABSOLUTE_SECS", &mut a.session_absolute_secs),
            ("PORTICO_LOCKOUT_THRESHOLD", &mut a.lockout_threshold),
            ("PORTICO_LOCKOUT_SECS", &mut a.lockout_secs),
        ] {
            if let Some(v) = num(name)? {
                *slot = v;
            }
        }
        if let Some(v) = num("PORTICO_ARGON2_MEMORY_KIB")? {
            a.argon2_memory_kib = u32::try_from(v).map_err(|_| anyhow::anyhow!("PORTICO_ARGON2_MEMORY_KIB"))?;
        }
        if let Some(v) = num("PORTICO_ARGON2_ITERATIONS")? {
            a.argon2_iterations = u32::try_from(v).map_err(|_| anyhow::anyhow!("PORTICO_ARGON2_ITERATIONS"))?;
        }
        if let Some(v) = flag("PORTICO_ALLOW_PRIVATE_JWKS_URLS") {
            a.allow_private_jwks_urls = v;
        }
        if let Some(v) = flag("PORTICO_DYNAMIC_REGISTRATION") {
            a.dynamic_registration = v;
        }
        let l = &mut cfg.limits;
        for (name, slot) in [
            ("PORTICO_RATE_PER_IP", &mut l.per_ip_per_minute),
            ("PORTICO_RATE_PER_CLIENT", &mut l.per_client_per_minute),
            ("PORTICO_RATE_AUTH_PER_IP", &mut l.auth_per_ip_per_minute),
        ] {
            if let Some(v) = num(name)? {
                *slot = u32::try_from(v).map_err(|_| anyhow::anyhow!("{name} must be ≥ 0"))?;
            }
        }
        if let Some(v) = env("PORTICO_TLS_CERT_FILE") {
            cfg.tls.cert_file = v;
        }
        if let Some(v) = env("PORTICO_TLS_KEY_FILE") {
            cfg.tls.key_file = v;
        }
        if let Some(v) = flag("PORTICO_TRUST_FORWARDED") {
            cfg.tls.trust_forwarded = v;
        }
        if let Some(v) = num("PORTICO_TLS_RELOAD_SECS")? {
            cfg.tls.reload_secs =
                u64::try_from(v).map_err(|_| anyhow::anyhow!("PORTICO_TLS_RELOAD_SECS must be ≥ 0"))?;
        }
        if let Some(v) = env("PORTICO_EXPORT_DIR") {
            cfg.export.dir = v;
        }
        let e = &mut cfg.export;
        for (name, slot) in [
            ("PORTICO_EXPORT_STORE", &mut e.store),
            ("PORTICO_EXPORT_S3_ENDPOINT", &mut e.s3_endpoint),
            ("PORTICO_EXPORT_S3_REGION", &mut e.s3_region),
            ("PORTICO_EXPORT_S3_ACCESS_KEY_ID", &mut e.s3_access_key_id),
            ("PORTICO_EXPORT_S3_SECRET_ACCESS_KEY", &mut e.s3_secret_access_key),
        ] {
            if let Some(v) = env(name) {
                *slot = v.trim().to_string();
            }
        }
        if let Some(path) = env("PORTICO_EXPORT_S3_SECRET_ACCESS_KEY_FILE") {
            e.s3_secret_access_key = std::fs::read_to_string(&path)
                .map_err(|err| anyhow::anyhow!("cannot read PORTICO_EXPORT_S3_SECRET_ACCESS_KEY_FILE: {err}"))?
                .trim()
                .to_string();
        }
        if let Some(v) = flag("PORTICO_EXPORT_S3_ALLOW_HTTP") {
            e.s3_allow_http = v;
        }
        if let Some(v) = num("PORTICO_EXPORT_WORKERS")? {
            cfg.export.workers =
                usize::try_from(v).map_err(|_| anyhow::anyhow!("PORTICO_EXPORT_WORKERS must be ≥ 0"))?;
        }
        if let Some(v) = num("PORTICO_EXPORT_BATCH")? {
            cfg.export.batch = usize::try_from(v.max(1)).unwrap_or(1);
        }
        if let Some(v) = num("PORTICO_EXPORT_LEASE_SECS")? {
            cfg.export.lease_secs = v.max(1);
        }
        if let Some(v) = flag("PORTICO_EXPORT_SIGNED_URLS") {
            cfg.export.signed_urls = v;
        }
        if let Some(v) = num("PORTICO_EXPORT_URL_TTL_SECS")? {
            cfg.export.url_ttl_secs = v;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            anyhow::bail!("PORTICO_LISTEN must be host:port with an IP address, got '{}'", self.listen);
        }
        if !matches!(self.sqlite_synchronous.as_str(), "full" | "normal") {
            anyhow::bail!("sqlite_synchronous must be 'full' or 'normal'");
        }
        if crate::audit::AppendMode::parse(&self.audit.append).is_none() {
            anyhow::bail!("audit.append must be 'deferred', 'batched' or 'direct'");
        }
        if !(1..=10_000).contains(&self.audit.flush_ms) || self.audit.flush_records == 0 {
            anyhow::bail!("audit.flush_ms must be 1..10000 and audit.flush_records at least 1");
        }
        if !(1..=crate::export::links::MAX_TTL_SECS).contains(&self.export.url_ttl_secs) {
            anyhow::bail!(
                "PORTICO_EXPORT_URL_TTL_SECS must be between 1 and 900 (signed links live at most 15 minutes)"
            );
        }
        if !self.admin_token.is_empty() && self.admin_token.len() < 16 {
            anyhow::bail!("PORTICO_ADMIN_TOKEN must be at least 16 characters");
        }
        let a = &self.auth;
        if a.access_token_secs < 30 || a.access_token_secs > 24 * 3600 {
            anyhow::bail!("auth.access_token_secs must be between 30 and 86400");
        }
        if a.code_secs < 10 || a.code_secs > 600 {
            anyhow::bail!("auth.code_secs must be between 10 and 600");
        }
        if a.session_idle_secs <= 0 || a.session_absolute_secs < a.session_idle_secs {
            anyhow::bail!("auth.session_idle_secs must be positive and not above auth.session_absolute_secs");
        }
        if a.lockout_threshold < 1 || a.argon2_iterations < 1 || a.argon2_memory_kib < 8 {
            anyhow::bail!("auth.lockout_threshold, argon2_iterations and argon2_memory_kib must be positive");
        }
        if !a.public_url.is_empty() && !(a.public_url.starts_with("https://") || a.public_url.starts_with("http://")) {
            anyhow::bail!("PORTICO_PUBLIC_URL must be an http(s) URL");
        }
        if self.tls.cert_file.is_empty() != self.tls.key_file.is_empty() {
            anyhow::bail!("tls.cert_file and tls.key_file must be set together");
        }
        self.validate_export_store()?;
        if !self.database_url.is_empty()
            && !["sqlite:", "postgres://", "postgresql://"].iter().any(|p| self.database_url.starts_with(p))
        {
            anyhow::bail!("PORTICO_DATABASE_URL must start with sqlite: or postgres://");
        }
        Ok(())
    }

    /// The export store's settings, as far as they can be checked without the network
    /// (`Exports::open` then lists the bucket).
    fn validate_export_store(&self) -> anyhow::Result<()> {
        let e = &self.export;
        let Some(s3) = e.s3_settings().map_err(anyhow::Error::msg)? else {
            if !e.s3_endpoint.is_empty() || !e.s3_access_key_id.is_empty() || !e.s3_secret_access_key.is_empty() {
                anyhow::bail!(
                    "PORTICO_EXPORT_S3_* settings are given but PORTICO_EXPORT_STORE (s3://bucket/prefix) is not"
                );
            }
            return Ok(());
        };
        if !s3.endpoint.is_empty() {
            let scheme_ok = s3.endpoint.starts_with("https://") || s3.endpoint.starts_with("http://");
            if !scheme_ok || url::Url::parse(&s3.endpoint).is_err() {
                anyhow::bail!("PORTICO_EXPORT_S3_ENDPOINT must be an http(s) URL, got '{}'", s3.endpoint);
            }
            if s3.endpoint.starts_with("http://") && !s3.allow_http {
                anyhow::bail!(
                    "PORTICO_EXPORT_S3_ENDPOINT is plain http: export files would cross the network unencrypted; \
                     use https, or set PORTICO_EXPORT_S3_ALLOW_HTTP=true for a store on this machine"
                );
            }
        }
        if s3.access_key_id.is_empty() != s3.secret_access_key.is_empty() {
            anyhow::bail!(
                "PORTICO_EXPORT_S3_ACCESS_KEY_ID and PORTICO_EXPORT_S3_SECRET_ACCESS_KEY must be set together"
            );
        }
        Ok(())
    }

    /// The audit key file, defaulting to `audit-key.pem` in the data dir.
    pub fn audit_key_path(&self) -> PathBuf {
        if self.audit.key_file.is_empty() {
            self.data_dir.join("audit-key.pem")
        } else {
            PathBuf::from(&self.audit.key_file)
        }
    }

    /// The id_token signing key, defaulting to `oauth-signing-key.pem` in the data dir.
    pub fn signing_key_path(&self) -> PathBuf {
        if self.auth.signing_key_file.is_empty() {
            self.data_dir.join("oauth-signing-key.pem")
        } else {
            PathBuf::from(&self.auth.signing_key_file)
        }
    }

    /// Whether `serve` terminates TLS itself.
    pub fn tls_enabled(&self) -> bool {
        !self.tls.cert_file.is_empty()
    }

    /// The database URL, defaulting to a SQLite file in the data dir.
    pub fn effective_database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("portico.db").display())
        } else {
            self.database_url.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_overrides_defaults_and_validates() {
        let env: HashMap<&str, &str> = [
            ("PORTICO_LISTEN", "127.0.0.1:0"),
            ("PORTICO_DATA_DIR", "/tmp/x"),
            ("PORTICO_ADMIN_TOKEN", "0123456789abcdef"),
        ]
        .into();
        let cfg = Config::load_from(None, |k| env.get(k).map(|s| s.to_string())).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:0");
        assert!(cfg.effective_database_url().starts_with("sqlite://"));
        assert!(!format!("{cfg:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn bad_values_fail_fast() {
        assert!(Config::load_from(None, |k| (k == "PORTICO_LISTEN").then(|| "nope".to_string())).is_err());
        assert!(Config::load_from(None, |k| (k == "PORTICO_ADMIN_TOKEN").then(|| "short".to_string())).is_err());
        assert!(Config::load_from(None, |k| (k == "PORTICO_DATABASE_URL").then(|| "mysql://x".to_string())).is_err());
        assert!(Config::load_from(None, |k| (k == "PORTICO_AUDIT_APPEND").then(|| "later".to_string())).is_err());
    }

    #[test]
    fn the_policy_file_is_read_and_validated() {
        let dir = std::env::temp_dir().join(format!("portico-policy-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |path: &Path| {
            let p = path.display().to_string();
            Config::load_from(None, |k| (k == "PORTICO_POLICY_FILE").then(|| p.clone())).unwrap()
        };
        assert_eq!(Config::default().operator_rules().unwrap(), *portico_policy::OperatorRules::builtin());
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"version": 1, "breakGlass": {"enabled": true, "maxMinutes": 5}}"#).unwrap();
        let rules = load(&good).operator_rules().unwrap();
        assert_eq!(rules.break_glass_minutes, Some(5));
        assert!(rules.proxy_redactions.is_empty(), "an operator file replaces the shipped one as a whole");
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"version": 1, "proxyRedactions": {"enabled": true, "redact": [{"resourceType": "Nope", "elements": ["note"]}]}}"#).unwrap();
        let e = load(&bad).operator_rules().unwrap_err().to_string();
        assert!(e.contains("invalid policy file") && e.contains("bad.json") && e.contains("Nope"), "{e}");
        let e = load(&dir.join("missing.json")).operator_rules().unwrap_err().to_string();
        assert!(e.contains("cannot read the policy file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_export_store_is_validated() {
        let load = |pairs: &[(&str, &str)]| {
            let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Config::load_from(None, |k| env.get(k).cloned())
        };
        let err = |pairs: &[(&str, &str)]| load(pairs).unwrap_err().to_string();
        assert!(load(&[]).unwrap().export.s3_settings().unwrap().is_none(), "local by default");
        let cfg = load(&[
            ("PORTICO_EXPORT_STORE", "s3://exports/portico"),
            ("PORTICO_EXPORT_S3_ENDPOINT", "https://s3.example.org"),
            ("PORTICO_EXPORT_S3_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("PORTICO_EXPORT_S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
        ])
        .unwrap();
        let s3 = cfg.export.s3_settings().unwrap().unwrap();
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("exports", "portico"));
        assert!(!format!("{cfg:?}").contains("wJalrXUtnFEMI"), "the secret stays out of Debug");
        assert!(err(&[("PORTICO_EXPORT_STORE", "/var/exports")]).contains("PORTICO_EXPORT_STORE"));
        assert!(err(&[("PORTICO_EXPORT_STORE", "s3://No_Such")]).contains("bucket name"));
        let e =
            err(&[("PORTICO_EXPORT_STORE", "s3://exports"), ("PORTICO_EXPORT_S3_ENDPOINT", "http://127.0.0.1:9000")]);
        assert!(e.contains("PORTICO_EXPORT_S3_ALLOW_HTTP"), "{e}");
        assert!(
            load(&[
                ("PORTICO_EXPORT_STORE", "s3://exports"),
                ("PORTICO_EXPORT_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("PORTICO_EXPORT_S3_ALLOW_HTTP", "true"),
            ])
            .is_ok()
        );
        assert!(
            err(&[("PORTICO_EXPORT_STORE", "s3://exports"), ("PORTICO_EXPORT_S3_ENDPOINT", "ftp://x")])
                .contains("http(s) URL")
        );
        assert!(
            err(&[("PORTICO_EXPORT_STORE", "s3://exports"), ("PORTICO_EXPORT_S3_ACCESS_KEY_ID", "AKID")])
                .contains("set together")
        );
        assert!(err(&[("PORTICO_EXPORT_S3_ENDPOINT", "https://s3.example.org")]).contains("PORTICO_EXPORT_STORE"));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://***@h:5432/db");
    }
}
