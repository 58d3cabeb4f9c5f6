//! FHIR R4 domain layer: what a resource is, how it is validated, which search values,
//! patient compartment, category and sensitivity labels it carries.
//!
//! This crate knows nothing of HTTP, users or storage. Everything here is a pure function of
//! a resource's JSON (kept as `serde_json::Value` with `arbitrary_precision`, so decimals
//! survive exactly as the client sent them).

pub mod classify;
pub mod compartment;
pub mod datetime;
pub mod extract;
pub mod fhirpath;
pub mod index;
pub mod json;
pub mod resource_types;
pub mod search_params;
pub mod validate;

pub use index::IndexValue;
