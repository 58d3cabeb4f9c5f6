//! The audit trail: what every access to clinical data leaves behind, and how to prove that
//! nobody changed it afterwards.
//!
//! * [`record`]: one record per interaction — who (actor, role, for whom, client, device,
//!   address), what (interaction, resource, query and returned items, patients), why (the
//!   rules and consents that decided, purpose), when, and how it ended.
//! * [`canonical`]: the one byte encoding of a record that the chain hashes.
//! * [`chain`]: `hash_i = SHA-256(hash_{i-1} || canonical_i)` and a per-record MAC.
//! * [`keys`] and [`head`]: the Ed25519 audit key and signed heads / checkpoints.
//! * [`verify`]: names the first bad record of a stored log.
//! * [`scope`]: the per-request collector the gate writes every decision into.
//! * [`fhir`] and [`plain`]: records as R4 AuditEvents (BALP) and as sentences a patient
//!   can read.
//!
//! No I/O happens here: the store persists links, the server owns key files.

pub mod canonical;
pub mod chain;
pub mod fhir;
pub mod head;
pub mod keys;
pub mod plain;
pub mod record;
pub mod scope;
pub mod verify;

#[cfg(test)]
mod tests;

pub use chain::{Chainer, GENESIS, Hash, Link, MacKey};
pub use head::{HeadKind, SignedHead};
pub use keys::{AuditKey, KeyError, PublicKey};
pub use record::{Actor, AuditRecord, Entity, EntityRole, Interaction, Outcome};
pub use scope::{DecisionNote, PendingRecord, Scope, Slot};
pub use verify::{ChainState, Finding, Problem, Report, RowBatch, RowRef, RowSpans, Span, StoredRow, Trust, Verifier};
