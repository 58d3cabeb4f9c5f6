//! FHIR R4 REST under `/fhir`.

pub mod audit_event;
pub mod body;
pub mod bundle;
pub mod capability;
pub mod export;
pub mod headers;
pub mod history;
pub mod instance;
pub mod obligations;
pub mod revoke;
pub mod search;
pub mod service;
pub mod shape;
pub mod trail;
pub mod transaction;
pub mod urls;

use crate::server::AppState;
use axum::Router;
use axum::routing::{get, post};

/// The `/fhir` routes. Static segments (`_history`, `_search`, `metadata`) take precedence
/// over the `{type}`/`{id}` captures; `$operations` on an instance share one route.
pub fn routes(_state: AppState) -> Router<AppState> {
    Router::new()
        .route("/metadata", get(capability::get_metadata))
        .route("/.well-known/smart-configuration", get(crate::server::oauth::discovery::smart_configuration))
        .route("/.well-known/openid-configuration", get(crate::server::oauth::discovery::openid_configuration))
        .route("/", post(transaction::post_bundle))
        .route("/_history", get(history::get_system_history))
        // Bulk Data `$export` (server/fhir/export.rs).
        .route("/$export", get(export::get_system).post(export::post_system))
        .route("/Patient/$export", get(export::get_system).post(export::post_system))
        .route("/Patient/{id}/$export", get(export::get_patient).post(export::post_patient))
        .route("/Group/{id}/$export", get(export::get_group).post(export::post_group))
        // Some clients (httpx) send `$` percent-encoded; routes match the raw path.
        .route("/%24export", get(export::get_system).post(export::post_system))
        .route("/Patient/%24export", get(export::get_system).post(export::post_system))
        .route("/Patient/{id}/%24export", get(export::get_patient).post(export::post_patient))
        .route("/Group/{id}/%24export", get(export::get_group).post(export::post_group))
        .route("/_export/{job}", get(export::status).delete(export::cancel))
        .route("/_export/{job}/{file}", get(export::download))
        // The audit trail: read-only (other methods answer 405), served from the audit log.
        .route("/AuditEvent", get(audit_event::get_search))
        .route("/AuditEvent/_search", post(audit_event::post_search))
        .route("/AuditEvent/_history", get(audit_event::get_history))
        .route("/AuditEvent/{id}", get(audit_event::get_read))
        .route("/AuditEvent/{id}/{op}", get(audit_event::get_instance_op))
        .route("/AuditEvent/{id}/_history/{vid}", get(audit_event::get_vread))
        .route(
            "/{rt}",
            get(search::get_search)
                .post(instance::post_create)
                .put(instance::put_conditional)
                .delete(instance::delete_conditional),
        )
        .route("/{rt}/_search", post(search::post_search))
        .route("/{rt}/_history", get(history::get_type_history))
        .route(
            "/{rt}/{id}",
            get(instance::get_read)
                .put(instance::put_update)
                .patch(instance::patch_resource)
                .delete(instance::delete_resource),
        )
        .route("/{rt}/{id}/{op}", get(instance::get_instance_op).post(revoke::post_instance_op))
        .route("/{rt}/{id}/_history/{vid}", get(instance::get_vread))
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> crate::server::error::ApiError {
    crate::server::error::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "This interaction is not supported on this URL.",
    )
}
