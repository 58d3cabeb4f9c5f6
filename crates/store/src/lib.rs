//! Storage behind one trait, [`Store`], with an embedded SQLite backend (the default) and a
//! PostgreSQL backend. Both run the same SQL text where the dialects agree (`$n`
//! placeholders, `ON CONFLICT`, `RETURNING`), and each has its own migrations.
//!
//! The store hands out clinical data only against the gate's proofs: reads return
//! [`Sealed`] versions that open with a [`portico_policy::Decision`]; searches and
//! histories need a [`SearchPermit`], whose compartment filter is applied in SQL; writes
//! need a [`WritePermit`] for the exact resource and pre-image version.

mod audit;
mod audit_file;
mod audit_writer;
mod backend;
pub mod consent;
mod direct;
mod error;
pub mod export;
mod facts;
pub mod identity;
mod migrate;
mod prepared;
mod read;
mod relabel;
pub mod scan;
pub mod search;
mod write;

use async_trait::async_trait;
use portico_audit::{AuditRecord, Chainer, SignedHead};
use portico_policy::{PatientFacts, Sealed, SearchPermit, WritePermit};

pub use audit::{AUDIT_INDEX_MERGE, AuditEntry, AuditPage, AuditQuery, ScanItem, WriteAudit, audit_facts};
pub use audit_file::sqlite_audit_path;
pub use backend::{SqlStore, StoreConfig};
pub use consent::{ConsentEvent, ConsentEventContext, ConsentEvents, ConsentStore};
pub use error::StoreError;
pub use export::ExportStore;
pub use facts::FactsWanted;
pub use identity::IdentityStore;
pub use prepared::{Prepared, prepare};
pub use relabel::RelabelReport;
pub use scan::{ExportRow, ExportScan};
pub use search::{HistoryQuery, SearchPage, SearchQuery};
pub use write::Condition;

/// One stored version of a resource, as it leaves the store.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    /// RFC 3339 instant of the write, as in `meta.lastUpdated`.
    pub last_updated: String,
    /// Global change sequence number of this write.
    pub seq: i64,
    pub deleted: bool,
    /// The resource JSON as stored (with `meta.versionId`/`meta.lastUpdated`); empty for
    /// a delete tombstone.
    pub body: String,
    /// Patients whose compartment holds this version (what the audit trail records).
    pub compartments: Vec<String>,
    /// Its data category.
    pub category: String,
}

/// Bookkeeping about the current version of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub version: i64,
    pub deleted: bool,
}

/// What a write does.
#[derive(Debug, Clone)]
pub enum WriteKind {
    /// Create with a server-assigned id (already chosen by the caller) or update-as-create.
    Create,
    /// Replace the current version (or create when `create_on_update` allowed it).
    Update,
    /// Write a tombstone.
    Delete,
}

/// A write request the store carries out atomically.
#[derive(Debug, Clone)]
pub struct WriteOp {
    pub kind: WriteKind,
    pub resource_type: String,
    pub id: String,
    /// `If-Match` version the client requires (412 otherwise).
    pub if_match: Option<i64>,
    /// The new content (None for deletes).
    pub prepared: Option<Prepared>,
    /// Conditional create (`If-None-Exist`): if the criteria match, nothing is written.
    pub condition: Option<Condition>,
}

/// The outcome of one write.
#[derive(Debug, Clone)]
pub struct WriteResult {
    pub stored: StoredVersion,
    /// True when the write created the resource (201), false for an update (200).
    pub created: bool,
    /// For deletes of something already deleted or absent: nothing was written.
    pub noop: bool,
}

/// Storage for FHIR resources: versions, history, search index, change sequence.
#[async_trait]
pub trait Store: Send + Sync {
    /// Which backend this is (`sqlite` or `postgres`), for logs and `/readyz`.
    fn backend_name(&self) -> &'static str;

    /// The current version (possibly a tombstone) of a resource, sealed.
    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<Sealed<StoredVersion>>, StoreError>;

    /// Version number and deletion state of the current version: bookkeeping only, no
    /// clinical content, so it needs no decision.
    async fn head(&self, resource_type: &str, id: &str) -> Result<Option<Head>, StoreError>;

    /// One historical version, sealed.
    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<Sealed<StoredVersion>>, StoreError>;

    /// Carry out writes atomically: all succeed or none is stored. Each op needs its permit,
    /// and the audit records of the request's writes are appended in the same transaction.
    async fn write(
        &self,
        ops: Vec<(WritePermit, WriteOp)>,
        audit: &WriteAudit<'_>,
    ) -> Result<Vec<WriteResult>, StoreError>;

    /// One page of search results, filtered, sorted and paged in SQL.
    async fn search(&self, permit: &SearchPermit, query: &SearchQuery) -> Result<SearchPage, StoreError>;

    /// One page of history (instance, type or system level), newest first.
    async fn history(&self, permit: &SearchPermit, query: &HistoryQuery) -> Result<SearchPage, StoreError>;

    /// One page of a bulk-export unit (a type, optionally one patient's compartment) in id
    /// order, confined by the permit exactly like `search`, each live row handed to `on` as
    /// it is read (until `on` returns false). True when more rows follow the page.
    async fn export_scan(
        &self,
        permit: &SearchPermit,
        scan: &ExportScan,
        on: &mut (dyn for<'r> FnMut(ExportRow<'r>) -> bool + Send),
    ) -> Result<bool, StoreError>;

    /// The gate's input about the patient a caregiver or clinician acts for: birth date,
    /// every Consent, care relationships, the requester's RelatedPerson links (see
    /// `facts.rs`). Not a clinical read: nothing read here is returned to a caller.
    async fn patient_facts(&self, patient: &str, wanted: &FactsWanted) -> Result<PatientFacts, StoreError>;

    /// Check the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Append audit records on their own (reads, searches, denials, failures), durably and
    /// in chain order; returns the new head's number.
    async fn audit_append(&self, chainer: &Chainer, records: &[AuditRecord]) -> Result<i64, StoreError>;

    /// One AuditEvent, sealed by the patients it concerns.
    async fn audit_read(&self, seq: i64) -> Result<Option<Sealed<AuditEntry>>, StoreError>;

    /// Records the permit admits, newest first (confinement applied in SQL).
    async fn audit_search(&self, permit: &SearchPermit, query: &AuditQuery) -> Result<AuditPage, StoreError>;

    /// The chain's head: last record number and its hash.
    async fn audit_head(&self) -> Result<(i64, portico_audit::Hash), StoreError>;

    /// Keep a signed head or checkpoint.
    async fn audit_put_head(&self, head: &SignedHead) -> Result<(), StoreError>;

    /// The newest signed head.
    async fn audit_latest_head(&self) -> Result<Option<SignedHead>, StoreError>;

    /// The newest record made before `before_ms`, with its hash (where pruning may stop).
    async fn audit_prune_point(&self, before_ms: i64) -> Result<Option<(i64, portico_audit::Hash)>, StoreError>;

    /// Delete the records a signed checkpoint covers, keeping the checkpoint.
    async fn audit_prune(&self, checkpoint: &SignedHead) -> Result<u64, StoreError>;

    /// Read the whole log in one consistent snapshot (for `audit verify`): the chain state,
    /// then rows in order, `batch` at a time, until `on` returns false.
    async fn audit_scan(&self, batch: usize, on: &mut (dyn FnMut(ScanItem) -> bool + Send)) -> Result<(), StoreError>;
}

#[async_trait]
impl Store for SqlStore {
    fn backend_name(&self) -> &'static str {
        if self.is_sqlite() { "sqlite" } else { "postgres" }
    }

    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<Sealed<StoredVersion>>, StoreError> {
        self.read_sealed(resource_type, id, None).await
    }

    async fn head(&self, resource_type: &str, id: &str) -> Result<Option<Head>, StoreError> {
        self.read_head(resource_type, id).await
    }

    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<Sealed<StoredVersion>>, StoreError> {
        self.read_sealed(resource_type, id, Some(version)).await
    }

    async fn write(
        &self,
        ops: Vec<(WritePermit, WriteOp)>,
        audit: &WriteAudit<'_>,
    ) -> Result<Vec<WriteResult>, StoreError> {
        self.run_writes(ops, audit).await
    }

    async fn search(&self, permit: &SearchPermit, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        self.run_search(permit, query).await
    }

    async fn history(&self, permit: &SearchPermit, query: &HistoryQuery) -> Result<SearchPage, StoreError> {
        self.run_history(permit, query).await
    }

    async fn export_scan(
        &self,
        permit: &SearchPermit,
        scan: &ExportScan,
        on: &mut (dyn for<'r> FnMut(ExportRow<'r>) -> bool + Send),
    ) -> Result<bool, StoreError> {
        self.run_export_scan(permit, scan, on).await
    }

    async fn patient_facts(&self, patient: &str, wanted: &FactsWanted) -> Result<PatientFacts, StoreError> {
        self.load_patient_facts(patient, wanted).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        backend::with_pool!(&self.db, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    async fn audit_append(&self, chainer: &Chainer, records: &[AuditRecord]) -> Result<i64, StoreError> {
        self.run_audit_append(chainer, records).await
    }

    async fn audit_read(&self, seq: i64) -> Result<Option<Sealed<AuditEntry>>, StoreError> {
        self.run_audit_read(seq).await
    }

    async fn audit_search(&self, permit: &SearchPermit, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        self.run_audit_search(permit, query).await
    }

    async fn audit_head(&self) -> Result<(i64, portico_audit::Hash), StoreError> {
        self.run_audit_head().await
    }

    async fn audit_put_head(&self, head: &SignedHead) -> Result<(), StoreError> {
        self.run_audit_put_head(head).await
    }

    async fn audit_latest_head(&self) -> Result<Option<SignedHead>, StoreError> {
        self.run_audit_latest_head().await
    }

    async fn audit_prune_point(&self, before_ms: i64) -> Result<Option<(i64, portico_audit::Hash)>, StoreError> {
        self.run_audit_prune_point(before_ms).await
    }

    async fn audit_prune(&self, checkpoint: &SignedHead) -> Result<u64, StoreError> {
        self.run_audit_prune(checkpoint).await
    }

    async fn audit_scan(&self, batch: usize, on: &mut (dyn FnMut(ScanItem) -> bool + Send)) -> Result<(), StoreError> {
        self.run_audit_scan(batch, on).await
    }
}
