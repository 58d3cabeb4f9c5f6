//! The gate: every access to clinical data is decided here, and only here.
//!
//! * [`engine::evaluate_with`] is the pure decision function: request context (with the
//!   acted-for patient's consents and relationships, [`PatientFacts`]), operator rules
//!   ([`OperatorRules`]), action and the resource's facts in; a [`Verdict`] with the rule
//!   and consents that decided, obligations and a plain-language reason out — and, for a
//!   search, the [`SearchFilter`] the store applies in SQL. No I/O, deny by default.
//! * [`consent::parse_consent`] turns a FHIR Consent into the engine's [`ConsentRecord`]
//!   (refusing what cannot be enforced); [`explain`] renders consents and decisions in plain
//!   language from the same data.
//! * [`Gate`] wraps the engine and hands every verdict to an [`AuditSink`] before the caller
//!   sees it, turning a permit into a [`Decision`] token.
//! * [`Sealed`] is how the store hands out resources: the body can only be opened with a
//!   permitting [`Decision`] made for that very resource. [`SearchPermit`] carries the
//!   filter a search must apply in SQL. Neither can be built outside this crate except
//!   through the gate, so a handler cannot read clinical data around it.

mod calendar;
pub mod consent;
pub mod context;
pub mod engine;
pub mod explain;
pub mod extract;
pub mod filter;
pub mod gate;
pub mod obligation;
pub mod rules;
pub mod scopes;
pub mod sealed;
pub mod stepup;
mod walk;

pub use consent::{ConsentError, ConsentRecord, parse_consent};
pub use context::{Action, BirthDate, PatientFacts, Principal, RequestContext, ResourceFacts, now_ms};
pub use engine::{Effect, Verdict};
pub use filter::{Clause, Match, SearchFilter};
pub use gate::{AuditFailure, AuditSink, Decision, Gate, Refusal, SearchPermit, TracingSink, WritePermit};
pub use obligation::Obligation;
pub use rules::OperatorRules;
pub use scopes::{ScopeSet, TypeLimit};
pub use sealed::{Denied, Sealed};
pub use stepup::Sensitive;
