//! The presentation layer: HTTP routes, the request context, errors as OperationOutcomes.
//! Handlers never touch the store directly; they go through [`fhir::service::Fhir`], which
//! asks the gate first.

pub mod admin;
pub mod audit_layer;
pub mod auth;
pub mod error;
pub mod fhir;
pub mod oauth;
pub mod ops;
pub mod origin;
pub mod portal;
pub mod ratelimit;
pub mod session;

use crate::config::Config;
use axum::Router;
use axum::http::StatusCode;
use portico_fhir::classify::Classifier;
use portico_policy::Gate;
use portico_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

/// The FHIR JSON media type with charset, used on every FHIR response.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Shared state of a running server.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// The audit trail: every interaction's record is durable before its response leaves.
    pub audit: Arc<crate::audit::AuditTrail>,
    pub gate: Gate,
    pub classifier: Arc<Classifier>,
    pub config: Arc<Config>,
    /// Users, clients, sessions, grants and tokens.
    pub identity: crate::identity::Identity,
    pub limits: ratelimit::Limits,
    /// Consent events and break-the-glass sessions (the same database as `store`).
    pub consents: Arc<dyn portico_store::ConsentStore>,
    /// Bulk `$export` jobs and files.
    pub export: crate::export::Exports,
}

/// Build the whole application router.
pub fn router(state: AppState) -> Router {
    let fhir = fhir::routes(state.clone());
    Router::new()
        .nest("/fhir", fhir)
        .nest("/api/portal", portal::routes())
        .nest("/api/admin", admin::routes())
        .merge(oauth::routes())
        .merge(ops::routes())
        .fallback(ops::not_found)
        .with_state(state.clone())
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(60)))
        .layer(CatchPanicLayer::custom(ops::panic_response))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::rate_limit_layer))
        // A request that panicked, timed out or was throttled is still audited.
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit_layer::audit_layer))
        // Outermost: the origin and client address everything else relies on.
        .layer(axum::middleware::from_fn_with_state(state, origin::origin_layer))
}
