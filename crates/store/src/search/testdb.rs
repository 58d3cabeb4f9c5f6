//! Fresh databases for the crate's own tests, like `tests/common`: a new SQLite file, and a
//! new schema in the PostgreSQL named by `PORTICO_TEST_DATABASE_URL` (skipped with a notice
//! when it is unset, unless `CI=true`).

use super::test_stores::{Stores, TempDir};
use crate::backend::{SqlStore, StoreConfig};
use crate::{Store, WriteAudit, WriteKind, WriteOp, WriteResult, prepare};
use portico_audit::{Chainer, MacKey};
use portico_fhir::classify::Classifier;
use portico_policy::{Action, Gate, Principal, RequestContext, TracingSink};
use serde_json::Value;
use std::sync::Arc;

fn postgres_url() -> Option<String> {
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

async fn fresh_pg_schema(admin_url: &str) -> String {
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

/// A store on every configured backend: SQLite always, PostgreSQL when configured. The
/// SQLite file's directory is removed after the last store.
pub(crate) async fn stores() -> Stores<SqlStore> {
    let dir = TempDir::new("portico-store-test");
    let mut urls = vec![format!("sqlite://{}", dir.path().join("t.db").display())];
    if let Some(pg) = postgres_url() {
        urls.push(fresh_pg_schema(&pg).await);
    }
    let mut stores = Vec::new();
    for url in urls {
        let mut cfg = StoreConfig::new(url);
        cfg.max_connections = 4;
        stores.push(SqlStore::open(&cfg).await.expect("open store"));
    }
    Stores::new(stores, dir)
}

/// Store `body` as the current version of `Type/id` (the operator's write, no audit records).
pub(crate) async fn put(store: &SqlStore, body: Value) -> WriteResult {
    let rt = body["resourceType"].as_str().expect("resourceType").to_string();
    let id = body["id"].as_str().expect("id").to_string();
    let gate = Gate::new(Arc::new(TracingSink));
    let ctx = RequestContext::new(Principal::Operator, "test");
    let prepared = prepare(&rt, &id, body, Classifier::builtin());
    let live = store.head(&rt, &id).await.expect("head").is_some_and(|h| !h.deleted);
    let pre = if live { store.read(&rt, &id).await.expect("read").map(|s| s.facts().clone()) } else { None };
    let permit = gate.permit_write(&ctx, Action::Update, pre.as_ref(), &prepared.facts).expect("permit");
    let op = WriteOp {
        kind: WriteKind::Update,
        resource_type: rt,
        id,
        if_match: None,
        prepared: Some(prepared),
        condition: None,
    };
    let chainer = Chainer::new(MacKey::new(&[7; 32]));
    let records = |_: &[WriteResult]| Vec::new();
    let audit = WriteAudit { chainer: &chainer, records: &records };
    // A Consent is stored only with its signed event (as the server writes it).
    let key = portico_audit::AuditKey::from_seed(&[3; 32]);
    let events = crate::consent::ConsentEvents {
        key: &key,
        context: crate::consent::ConsentEventContext {
            actor: "operator/operator".into(),
            on_behalf_of: String::new(),
            channel: "operator".into(),
        },
    };
    let written = if op.resource_type == "Consent" {
        crate::ConsentStore::write_with_events(store, vec![(permit, op)], &audit, &events).await
    } else {
        store.write(vec![(permit, op)], &audit).await
    };
    written.expect("write").remove(0)
}
