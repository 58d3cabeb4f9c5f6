//! The Consent lifecycle around the pure engine (`portico_policy::consent`): what a Consent
//! write must satisfy ([`validate`]), who made a change and through which channel (the
//! context of its signed event, [`events`]), revocation ([`revoke`]), the portal's
//! simplified shares mapped to and from FHIR Consent ([`shares`]), "what was permitted at
//! time T" rebuilt from the event log ([`permitted`]), verification of the event log
//! ([`verify`]) and break-the-glass sessions ([`break_glass`]).
//!
//! Every Consent change goes through the one FHIR write path (`Fhir::store_writes`), which
//! appends its signed event and its audit record in the write's own transaction.

pub mod break_glass;
pub mod events;
pub mod permitted;
pub mod revoke;
pub mod shares;
pub mod validate;
pub mod verify;
