//! Consent events and break-the-glass sessions (migration 0005).
//!
//! Every change of a Consent — create, update, revoke, delete — appends one row to
//! `consent_events` **in the same transaction** as the Consent version it describes
//! ([`ConsentStore::write_with_events`]); a Consent write without its event is refused
//! (`Store::write` fails closed on Consent ops), so no acknowledged consent change lacks
//! its event. Each row is signed with the server's Ed25519 audit key over
//! [`ConsentEvent::canonical`] and carries the SHA-256 of the version's stored JSON, so
//! `portico consent verify` can tell an edited, forged or missing event, and an event that
//! no longer matches its stored version. The Consent resource and its `_history` remain
//! the projection the engine reads.

use crate::backend::{Db, SqlStore, with_pool};
use crate::error::StoreError;
use crate::{WriteAudit, WriteOp, WriteResult};
use async_trait::async_trait;
use portico_audit::AuditKey;
use portico_policy::WritePermit;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Who made a consent change, and through which channel (from the request context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentEventContext {
    /// The actor as the audit trail names it (`kind/id`, e.g. `patient/p1`).
    pub actor: String,
    /// The patient a caregiver acted for (`''`: nobody).
    pub on_behalf_of: String,
    /// `portal`, `app`, `clinician` or `operator`.
    pub channel: String,
}

/// What a Consent write needs to append its signed events.
pub struct ConsentEvents<'a> {
    pub key: &'a AuditKey,
    pub context: ConsentEventContext,
}

/// One stored consent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentEvent {
    pub consent_id: String,
    pub version: i64,
    /// `create`, `update`, `revoke` or `delete`.
    pub kind: String,
    pub patient: String,
    /// The Consent's status after the change (`''` for a delete).
    pub status: String,
    pub actor: String,
    pub on_behalf_of: String,
    pub channel: String,
    pub at_ms: i64,
    /// The version before this one (0: none; it may be a deletion).
    pub prev_version: i64,
    /// The change sequence number of the write.
    pub seq: i64,
    /// SHA-256 (hex) of the version's stored JSON (of `""` for a delete tombstone).
    pub resource_sha256: String,
    pub key_id: String,
    /// Ed25519 signature (hex) over [`ConsentEvent::canonical`].
    pub signature: String,
}

impl ConsentEvent {
    /// The signed encoding: a JSON array of every field but the key id and signature, in a
    /// fixed order (serde_json's escaping is deterministic).
    pub fn canonical(&self) -> String {
        json!([
            "portico-consent-event/1",
            self.consent_id,
            self.version,
            self.kind,
            self.patient,
            self.status,
            self.actor,
            self.on_behalf_of,
            self.channel,
            self.at_ms,
            self.prev_version,
            self.seq,
            self.resource_sha256,
        ])
        .to_string()
    }

    /// Whether `key` signed exactly this event.
    pub fn signature_valid(&self, key: &portico_audit::PublicKey) -> bool {
        let Some(sig) = hex::decode(&self.signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            return false;
        };
        self.key_id == key.key_id() && key.verify_consent_event(self.canonical().as_bytes(), &sig)
    }
}

/// SHA-256 (hex) of a stored resource body.
pub fn body_sha256(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// `Patient/<id>` of a Consent body's `patient`, without the prefix.
pub(crate) fn patient_of(body: &Value) -> Option<String> {
    let r = body.get("patient")?.get("reference")?.as_str()?;
    let (t, id) = portico_policy::consent::normalise_reference(r)?;
    (t == "Patient").then_some(id)
}

pub(crate) fn status_of(body: &Value) -> String {
    body.get("status").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Statuses under which a consent lets nobody see anything any more.
pub(crate) fn is_ended(status: &str) -> bool {
    matches!(status, "inactive" | "rejected" | "entered-in-error")
}

/// Append the events of the Consent writes among `$results` in the open transaction `$tx`.
macro_rules! append_consent_events {
    ($tx:ident, $events:expr, $results:expr) => {
        async {
            let results: &[$crate::WriteResult] = $results;
            let Some(events) = $events else { return Ok::<(), $crate::StoreError>(()) };
            for r in results.iter().filter(|r| r.stored.resource_type == "Consent" && !r.noop) {
                let s = &r.stored;
                let prev_version = s.version - 1;
                let prev: Option<serde_json::Value> = if prev_version > 0 {
                    sqlx::query(
                        "SELECT body FROM resource_versions WHERE res_type = 'Consent' AND id = $1 AND version_id = $2 AND deleted = 0",
                    )
                    .bind(s.id.clone())
                    .bind(prev_version)
                    .fetch_optional(&mut *$tx)
                    .await?
                    .map(|row| sqlx::Row::try_get::<String, _>(&row, "body"))
                    .transpose()?
                    .and_then(|b| serde_json::from_str(&b).ok())
                } else {
                    None
                };
                let new: Option<serde_json::Value> = if s.deleted { None } else { serde_json::from_str(&s.body).ok() };
                let status = new.as_ref().map($crate::consent::status_of).unwrap_or_default();
                let prev_status = prev.as_ref().map($crate::consent::status_of).unwrap_or_default();
                let kind = if s.deleted {
                    "delete"
                } else if prev.is_none() {
                    "create"
                } else if $crate::consent::is_ended(&status) && !$crate::consent::is_ended(&prev_status) {
                    "revoke"
                } else {
                    "update"
                };
                let patient = new
                    .as_ref()
                    .and_then($crate::consent::patient_of)
                    .or_else(|| prev.as_ref().and_then($crate::consent::patient_of))
                    .or_else(|| s.compartments.first().cloned())
                    .unwrap_or_default();
                let mut e = $crate::consent::ConsentEvent {
                    consent_id: s.id.clone(),
                    version: s.version,
                    kind: kind.to_string(),
                    patient,
                    status,
                    actor: events.context.actor.clone(),
                    on_behalf_of: events.context.on_behalf_of.clone(),
                    channel: events.context.channel.clone(),
                    at_ms: portico_fhir::datetime::parse_instant(&s.last_updated)
                        .unwrap_or_else(|| $crate::write::now_rfc3339().1),
                    prev_version,
                    seq: s.seq,
                    resource_sha256: $crate::consent::body_sha256(&s.body),
                    key_id: events.key.public().key_id(),
                    signature: String::new(),
                };
                e.signature = hex::encode(events.key.sign_consent_event(e.canonical().as_bytes()));
                sqlx::query(
                    "INSERT INTO consent_events (consent_id, version, kind, patient, status, actor, on_behalf_of, channel, \
                     at_ms, prev_version, seq, resource_sha256, key_id, signature) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(e.consent_id)
                .bind(e.version)
                .bind(e.kind)
                .bind(e.patient)
                .bind(e.status)
                .bind(e.actor)
                .bind(e.on_behalf_of)
                .bind(e.channel)
                .bind(e.at_ms)
                .bind(e.prev_version)
                .bind(e.seq)
                .bind(e.resource_sha256)
                .bind(e.key_id)
                .bind(e.signature)
                .execute(&mut *$tx)
                .await?;
            }
            Ok(())
        }
        .await
    };
}
pub(crate) use append_consent_events;

/// Whether a batch of ops writes a Consent (and so needs its events).
pub(crate) fn writes_consent(ops: &[(WritePermit, WriteOp)]) -> bool {
    ops.iter().any(|(_, op)| op.resource_type == "Consent")
}

/// A clinician's declared emergency access to one patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassRow {
    pub id: String,
    pub user_id: String,
    pub patient: String,
    pub reason: String,
    pub started_ms: i64,
    pub expires_ms: i64,
}

/// What `portico consent verify` reads: every event, and every stored Consent version's
/// body digest (`''` for tombstones, as events record them).
#[derive(Debug, Clone, Default)]
pub struct ConsentLedger {
    pub events: Vec<ConsentEvent>,
    /// (consent id, version, SHA-256 of the stored body).
    pub versions: Vec<(String, i64, String)>,
}

/// Storage of consent events and break-the-glass sessions.
#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// [`crate::Store::write`], appending the signed event of every Consent write in the
    /// same transaction.
    async fn write_with_events(
        &self,
        ops: Vec<(WritePermit, WriteOp)>,
        audit: &WriteAudit<'_>,
        events: &ConsentEvents<'_>,
    ) -> Result<Vec<WriteResult>, StoreError>;

    /// The events made at or before `at_ms` (all: `i64::MAX`) of every consent that ever
    /// belonged to `patient`, in the order they were made (a later version may name another
    /// patient: the caller looks at each consent's last event).
    async fn consent_events(&self, patient: &str, at_ms: i64) -> Result<Vec<ConsentEvent>, StoreError>;

    /// The events of one consent, in order.
    async fn consent_events_of(&self, consent_id: &str) -> Result<Vec<ConsentEvent>, StoreError>;

    /// Every event and stored Consent version, read in one snapshot (for verification).
    async fn consent_ledger(&self) -> Result<ConsentLedger, StoreError>;

    /// Record a break-the-glass session.
    async fn break_glass_start(&self, row: &BreakGlassRow) -> Result<(), StoreError>;

    /// The user's newest break-the-glass session not expired at `now_ms`.
    async fn break_glass_active(&self, user_id: &str, now_ms: i64) -> Result<Option<BreakGlassRow>, StoreError>;
}

const EVENT_COLUMNS: &str = "consent_id, version, kind, patient, status, actor, on_behalf_of, channel, at_ms, \
                             prev_version, seq, resource_sha256, key_id, signature";

macro_rules! row_to_event {
    ($row:expr) => {{
        let row = $row;
        Ok::<ConsentEvent, sqlx::Error>(ConsentEvent {
            consent_id: row.try_get("consent_id")?,
            version: row.try_get("version")?,
            kind: row.try_get("kind")?,
            patient: row.try_get("patient")?,
            status: row.try_get("status")?,
            actor: row.try_get("actor")?,
            on_behalf_of: row.try_get("on_behalf_of")?,
            channel: row.try_get("channel")?,
            at_ms: row.try_get("at_ms")?,
            prev_version: row.try_get("prev_version")?,
            seq: row.try_get("seq")?,
            resource_sha256: row.try_get("resource_sha256")?,
            key_id: row.try_get("key_id")?,
            signature: row.try_get("signature")?,
        })
    }};
}

#[async_trait]
impl ConsentStore for SqlStore {
    async fn write_with_events(
        &self,
        ops: Vec<(WritePermit, WriteOp)>,
        audit: &WriteAudit<'_>,
        events: &ConsentEvents<'_>,
    ) -> Result<Vec<WriteResult>, StoreError> {
        self.run_writes_with(ops, audit, Some(events)).await
    }

    async fn consent_events(&self, patient: &str, at_ms: i64) -> Result<Vec<ConsentEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM consent_events WHERE consent_id IN \
             (SELECT consent_id FROM consent_events WHERE patient = $1) AND at_ms <= $2 ORDER BY seq, consent_id"
        );
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(patient.to_string()).bind(at_ms).fetch_all(pool).await?;
            Ok(rows.iter().map(|r| row_to_event!(r)).collect::<Result<Vec<_>, _>>()?)
        })
    }

    async fn consent_events_of(&self, consent_id: &str) -> Result<Vec<ConsentEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM consent_events WHERE consent_id = $1 ORDER BY version");
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(consent_id.to_string()).fetch_all(pool).await?;
            Ok(rows.iter().map(|r| row_to_event!(r)).collect::<Result<Vec<_>, _>>()?)
        })
    }

    async fn consent_ledger(&self) -> Result<ConsentLedger, StoreError> {
        let events_sql = format!("SELECT {EVENT_COLUMNS} FROM consent_events ORDER BY seq, consent_id, version");
        let versions_sql = "SELECT id, version_id, deleted, body FROM resource_versions WHERE res_type = 'Consent' \
                            ORDER BY id, version_id";
        // One snapshot: a change committed between the two reads would look like a
        // version without its event.
        match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let events = sqlx::query(sqlx::AssertSqlSafe(events_sql)).fetch_all(&mut *tx).await?;
                let versions = sqlx::query(versions_sql).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                ledger(&events, &versions)
            }
            Db::Pg(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
                let events = sqlx::query(sqlx::AssertSqlSafe(events_sql)).fetch_all(&mut *tx).await?;
                let versions = sqlx::query(versions_sql).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                ledger(&events, &versions)
            }
        }
    }

    async fn break_glass_start(&self, row: &BreakGlassRow) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO break_glass (id, user_id, patient, reason, started_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(row.id.clone())
            .bind(row.user_id.clone())
            .bind(row.patient.clone())
            .bind(row.reason.clone())
            .bind(row.started_ms)
            .bind(row.expires_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    async fn break_glass_active(&self, user_id: &str, now_ms: i64) -> Result<Option<BreakGlassRow>, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT id, user_id, patient, reason, started_ms, expires_ms FROM break_glass \
                 WHERE user_id = $1 AND expires_ms > $2 ORDER BY started_ms DESC LIMIT 1",
            )
            .bind(user_id.to_string())
            .bind(now_ms)
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                Some(r) => Some(BreakGlassRow {
                    id: r.try_get("id")?,
                    user_id: r.try_get("user_id")?,
                    patient: r.try_get("patient")?,
                    reason: r.try_get("reason")?,
                    started_ms: r.try_get("started_ms")?,
                    expires_ms: r.try_get("expires_ms")?,
                }),
                None => None,
            })
        })
    }
}

fn ledger<R: Row>(events: &[R], versions: &[R]) -> Result<ConsentLedger, StoreError>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let events = events.iter().map(|r| row_to_event!(r)).collect::<Result<Vec<_>, _>>()?;
    let versions = versions
        .iter()
        .map(|r| {
            let deleted: i64 = r.try_get("deleted")?;
            let body: String = if deleted != 0 { String::new() } else { r.try_get("body")? };
            Ok((r.try_get("id")?, r.try_get("version_id")?, body_sha256(&body)))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(ConsentLedger { events, versions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::testdb;
    use crate::{Store, WriteKind, prepare};
    use portico_audit::{Chainer, MacKey};
    use portico_fhir::classify::Classifier;
    use portico_policy::{Action, Gate, Principal, RequestContext, TracingSink};
    use std::sync::Arc;

    fn consent(id: &str, patient: &str, status: &str) -> Value {
        json!({"resourceType": "Consent", "id": id, "status": status, "patient": {"reference": format!("Patient/{patient}")},
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "provision": {"provision": [{"type": "permit", "actor": [{"role": {"coding": [{"code": "IRCP"}]},
                "reference": {"reference": "Practitioner/lee"}}]}]}})
    }

    async fn op(store: &SqlStore, body: Value) -> (WritePermit, WriteOp) {
        let gate = Gate::new(Arc::new(TracingSink));
        let ctx = RequestContext::new(Principal::Operator, "t");
        let id = body["id"].as_str().unwrap().to_string();
        let prepared = prepare("Consent", &id, body, Classifier::builtin());
        let pre = store.read("Consent", &id).await.unwrap().map(|s| s.facts().clone());
        let permit = gate.permit_write(&ctx, Action::Update, pre.as_ref(), &prepared.facts).unwrap();
        let op = WriteOp {
            kind: WriteKind::Update,
            resource_type: "Consent".into(),
            id,
            if_match: None,
            prepared: Some(prepared),
            condition: None,
        };
        (permit, op)
    }

    #[tokio::test]
    async fn consent_writes_are_stored_with_their_event_or_not_at_all() {
        let key = AuditKey::from_seed(&[3; 32]);
        let chainer = Chainer::new(MacKey::new(&[7; 32]));
        let records = |_: &[WriteResult]| Vec::new();
        let audit = WriteAudit { chainer: &chainer, records: &records };
        let events = ConsentEvents {
            key: &key,
            context: ConsentEventContext {
                actor: "patient/p1".into(),
                on_behalf_of: String::new(),
                channel: "portal".into(),
            },
        };
        for store in testdb::stores().await {
            // Without its event a Consent write is refused, and nothing is stored.
            let r = store.write(vec![op(&store, consent("c1", "p1", "active")).await], &audit).await;
            assert!(matches!(r, Err(StoreError::AuditChain(_))), "{r:?}");
            assert!(store.head("Consent", "c1").await.unwrap().is_none());

            let r = store
                .write_with_events(vec![op(&store, consent("c1", "p1", "active")).await], &audit, &events)
                .await
                .unwrap();
            assert_eq!(r[0].stored.version, 1);
            let r = store
                .write_with_events(vec![op(&store, consent("c1", "p1", "inactive")).await], &audit, &events)
                .await
                .unwrap();
            let ev = store.consent_events_of("c1").await.unwrap();
            assert_eq!(ev.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["create", "revoke"]);
            assert_eq!(ev[1].resource_sha256, body_sha256(&r[0].stored.body));
            assert!(ev.iter().all(|e| e.signature_valid(&key.public())));
            assert!(!ev[0].signature_valid(&AuditKey::from_seed(&[4; 32]).public()), "another key's events fail");
            // Writing the same content again is a no-op: no event either.
            store
                .write_with_events(vec![op(&store, consent("c1", "p1", "inactive")).await], &audit, &events)
                .await
                .unwrap();
            assert_eq!(store.consent_events_of("c1").await.unwrap().len(), 2);

            // An event that cannot be appended takes its Consent version down with it.
            with_pool!(&store.db, pool => {
                sqlx::query("INSERT INTO consent_events (consent_id, version, kind, patient, status, actor, on_behalf_of, channel, at_ms, prev_version, seq, resource_sha256, key_id, signature) VALUES ('c2', 1, 'create', 'p2', 'active', '', '', '', 0, 0, 0, '', '', '')")
                    .execute(pool).await.unwrap();
            });
            let r =
                store.write_with_events(vec![op(&store, consent("c2", "p2", "active")).await], &audit, &events).await;
            assert!(r.is_err(), "{r:?}");
            assert!(store.head("Consent", "c2").await.unwrap().is_none(), "{}", store.backend_name());

            let ledger = store.consent_ledger().await.unwrap();
            assert_eq!(ledger.events.len(), 3);
            assert_eq!(ledger.versions.len(), 2);
            assert_eq!(store.consent_events("p1", i64::MAX).await.unwrap().len(), 2);
            assert_eq!(store.consent_events("p1", ev[0].at_ms - 1).await.unwrap().len(), 0);
        }
    }
}
