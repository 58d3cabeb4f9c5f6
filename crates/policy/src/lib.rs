//! The gate: every access to clinical data is decided here, and only here.
//!
//! * [`engine::evaluate`] is the pure decision function: request context, action and the
//!   resource's facts in, a [`Verdict`] with the rule that decided and a plain-language
//!   reason out. No I/O, deny by default.
//! * [`Gate`] wraps the engine and hands every verdict to an [`AuditSink`] before the caller
//!   sees it, turning a permit into a [`Decision`] token.
//! * [`Sealed`] is how the store hands out resources: the body can only be opened with a
//!   permitting [`Decision`] made for that very resource. [`SearchPermit`] carries the
//!   filter a search must apply in SQL. Neither can be built outside this crate except
//!   through the gate, so a handler cannot read clinical data around it.

pub mod context;
pub mod engine;
pub mod gate;
pub mod scopes;
pub mod sealed;
pub mod stepup;

pub use context::{Action, Principal, RequestContext, ResourceFacts, now_ms};
pub use engine::{Effect, Verdict};
pub use gate::{AuditFailure, AuditSink, Decision, Gate, Refusal, SearchPermit, TracingSink, WritePermit};
pub use scopes::{ScopeSet, TypeLimit};
pub use sealed::{Denied, Sealed};
pub use stepup::Sensitive;
