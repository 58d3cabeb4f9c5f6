//! The test fixture: a real portico router over a real store, one fresh database per test —
//! a new SQLite file, or a new schema in the PostgreSQL named by `PORTICO_TEST_DATABASE_URL`.
//! Requests go through the whole router in-process (tower `oneshot`).

#![allow(dead_code)]

pub mod oauth;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use portico::config::Config;
use portico::server::{self, AppState};
use serde_json::Value;
use std::path::PathBuf;
use tower::ServiceExt;

pub const TOKEN: &str = "test-admin-token-0123456789";

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running application over a fresh database.
pub struct TestApp {
    pub backend: Backend,
    pub state: AppState,
    pub router: Router,
    pub data_dir: PathBuf,
    pub database_url: String,
}

/// A response, body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Resources of a Bundle's entries (match mode or all).
    pub fn entries(&self) -> Vec<Value> {
        self.json["entry"].as_array().cloned().unwrap_or_default().into_iter().map(|e| e["resource"].clone()).collect()
    }
    pub fn ids(&self) -> Vec<String> {
        self.json["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["search"]["mode"] == "match")
            .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
            .collect()
    }
    pub fn next_link(&self) -> Option<String> {
        self.json["link"].as_array()?.iter().find(|l| l["relation"] == "next")?["url"].as_str().map(str::to_string)
    }
}

pub fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("portico-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The PostgreSQL URL for tests, if configured. Under `CI=true` it must be configured.
pub fn postgres_url() -> Option<String> {
    match std::env::var("PORTICO_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but PORTICO_TEST_DATABASE_URL is not set: PostgreSQL tests cannot be skipped in CI");
            }
            eprintln!("notice: PORTICO_TEST_DATABASE_URL is not set; skipping the PostgreSQL run of this test");
            None
        }
    }
}

/// Create a fresh schema and return a URL whose connections use it.
pub async fn fresh_pg_schema(admin_url: &str) -> String {
    use sqlx::Connection;
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url).await.expect("connect to PORTICO_TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let sep = if admin_url.contains('?') { '&' } else { '?' };
    format!("{admin_url}{sep}options[search_path]={schema}")
}

impl TestApp {
    /// An app over a fresh database of the given backend (None: PostgreSQL not configured).
    pub async fn new(backend: Backend) -> Option<TestApp> {
        Self::with_config(backend, |_| {}).await
    }

    pub async fn with_config(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let data_dir = temp_dir();
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", data_dir.join("portico.db").display()),
            Backend::Postgres => fresh_pg_schema(&postgres_url()?).await,
        };
        let mut config = Config {
            data_dir: data_dir.clone(),
            database_url: database_url.clone(),
            admin_token: TOKEN.to_string(),
            max_connections: 4,
            ..Config::default()
        };
        // Cheap Argon2 (the debug build is slow) and one RSA signing key for every test:
        // generating a key per test would dominate the run.
        config.auth.argon2_memory_kib = 64;
        config.auth.argon2_iterations = 1;
        config.auth.signing_key_file =
            std::env::temp_dir().join("portico-test-oauth-signing-key.pem").display().to_string();
        // Tests read the audit log right after a request: records are committed before the
        // response (the deferred mode has its own tests in api/audit.rs).
        config.audit.append = "batched".into();
        tweak(&mut config);
        let state = portico::cli::open(&config).await.expect("open store");
        let router = server::router(state.clone());
        Some(TestApp { backend, state, router, data_dir, database_url })
    }

    /// A second, independent server instance (its own pools, caches, audit appender and
    /// rate limiters) over the same database — what another server process would be.
    pub async fn sharing(&self) -> TestApp {
        let data_dir = temp_dir();
        let mut config = self.state.config.as_ref().clone();
        config.data_dir = data_dir.clone();
        // Every process on one database shares the audit key.
        config.audit.key_file = self.state.config.audit_key_path().display().to_string();
        let state = portico::cli::open(&config).await.expect("open second instance");
        let router = server::router(state.clone());
        TestApp { backend: self.backend, state, router, data_dir, database_url: self.database_url.clone() }
    }

    /// Every configured backend: SQLite always, PostgreSQL when configured.
    pub async fn all() -> Vec<TestApp> {
        let mut v = vec![TestApp::new(Backend::Sqlite).await.expect("sqlite")];
        if let Some(pg) = TestApp::new(Backend::Postgres).await {
            v.push(pg);
        }
        v
    }

    /// Send a request with the admin token and the FHIR JSON content type.
    pub async fn req(&self, method: Method, uri: &str, body: Option<Value>) -> Resp {
        let mut headers = vec![("authorization", format!("Bearer {TOKEN}"))];
        if body.is_some() {
            headers.push(("content-type", "application/fhir+json".to_string()));
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, uri, &headers.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>(), body).await
    }

    /// Send exactly these headers and bytes.
    pub async fn raw(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri).header("host", "localhost");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self.router.clone().oneshot(b.body(Body::from(body)).expect("request")).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, text, json }
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.req(Method::GET, uri, None).await
    }
    pub async fn post(&self, uri: &str, body: Value) -> Resp {
        self.req(Method::POST, uri, Some(body)).await
    }
    pub async fn put(&self, uri: &str, body: Value) -> Resp {
        self.req(Method::PUT, uri, Some(body)).await
    }
    pub async fn delete(&self, uri: &str) -> Resp {
        self.req(Method::DELETE, uri, None).await
    }

    /// Create a resource and return its id (asserting 201).
    pub async fn create(&self, body: Value) -> String {
        let rt = body["resourceType"].as_str().expect("resourceType").to_string();
        let r = self.post(&format!("/fhir/{rt}"), body).await;
        assert_eq!(r.status, StatusCode::CREATED, "create {rt}: {}", r.text);
        r.json["id"].as_str().expect("id").to_string()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The test fixtures folder of this crate.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}
