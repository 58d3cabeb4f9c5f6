//! Fresh stores for the store's integration tests, one per configured backend: a new SQLite
//! file, and a new schema in the PostgreSQL named by `PORTICO_TEST_DATABASE_URL` (its run is
//! skipped with a notice when the variable is unset, unless `CI=true`) — the approach of
//! `crates/portico/tests/common`.

#![allow(dead_code)]

use portico_audit::{Chainer, MacKey};
use portico_fhir::classify::Classifier;
use portico_policy::{Action, Gate, Principal, RequestContext, TracingSink};
use portico_store::{SqlStore, Store, StoreConfig, WriteAudit, WriteKind, WriteOp, WriteResult, prepare};
use serde_json::Value;
use std::sync::Arc;

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

#[path = "../../src/search/test_stores.rs"]
mod test_stores;
use test_stores::{Stores, TempDir};

/// A store over a fresh database of every configured backend: SQLite always, PostgreSQL
/// when configured. The SQLite file's directory is removed after the last store.
pub async fn stores() -> Stores<SqlStore> {
    let dir = TempDir::new("portico-store-test");
    let mut urls = vec![format!("sqlite://{}", dir.path().join("portico.db").display())];
    if let Some(pg) = postgres_url() {
        urls.push(fresh_pg_schema(&pg).await);
    }
    let mut out = Vec::new();
    for url in urls {
        let mut cfg = StoreConfig::new(url);
        cfg.max_connections = 8;
        out.push(SqlStore::open(&cfg).await.expect("open store"));
    }
    Stores::new(out, dir)
}

pub fn operator() -> (Gate, RequestContext) {
    (Gate::new(Arc::new(TracingSink)), RequestContext::new(Principal::Operator, "test"))
}

/// Write one op as the operator, without audit records.
async fn write(store: &SqlStore, kind: WriteKind, rt: &str, id: &str, body: Option<Value>) -> WriteResult {
    let (gate, ctx) = operator();
    let live = store.head(rt, id).await.expect("head").is_some_and(|h| !h.deleted);
    let pre = if live { store.read(rt, id).await.expect("read").map(|s| s.facts().clone()) } else { None };
    let prepared = body.map(|b| prepare(rt, id, b, Classifier::builtin()));
    let post = match &prepared {
        Some(p) => p.facts.clone(),
        None => pre.clone().expect("a delete of something live"),
    };
    let action = if matches!(kind, WriteKind::Delete) { Action::Delete } else { Action::Update };
    let permit = gate.permit_write(&ctx, action, pre.as_ref(), &post).expect("permit");
    let op = WriteOp { kind, resource_type: rt.into(), id: id.into(), if_match: None, prepared, condition: None };
    let chainer = Chainer::new(MacKey::new(&[7; 32]));
    let records = |_: &[WriteResult]| Vec::new();
    store
        .write(vec![(permit, op)], &WriteAudit { chainer: &chainer, records: &records })
        .await
        .expect("write")
        .remove(0)
}

/// Store `body` as the new current version of its `resourceType/id`.
pub async fn put(store: &SqlStore, body: Value) -> WriteResult {
    let rt = body["resourceType"].as_str().expect("resourceType").to_string();
    let id = body["id"].as_str().expect("id").to_string();
    write(store, WriteKind::Update, &rt, &id, Some(body)).await
}

pub async fn delete(store: &SqlStore, rt: &str, id: &str) -> WriteResult {
    write(store, WriteKind::Delete, rt, id, None).await
}
