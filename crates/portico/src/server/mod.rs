//! The presentation layer: HTTP routes, the request context, errors as OperationOutcomes.
//! Handlers never touch the store directly; they go through [`fhir::service::Fhir`], which
//! asks the gate first.

pub mod auth;
pub mod error;
pub mod fhir;
pub mod ops;

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
    pub gate: Gate,
    pub classifier: Arc<Classifier>,
    pub config: Arc<Config>,
}

/// Build the whole application router.
pub fn router(state: AppState) -> Router {
    let fhir = fhir::routes(state.clone());
    Router::new()
        .nest("/fhir", fhir)
        .merge(ops::routes())
        .fallback(ops::not_found)
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(60)))
        .layer(CatchPanicLayer::custom(ops::panic_response))
}
