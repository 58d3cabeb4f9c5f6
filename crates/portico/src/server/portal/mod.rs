//! `/api/portal/...`: the patient-facing JSON API behind the portal's pages — the access
//! log, and the account: devices, connected apps, step-up, password and TOTP.

pub mod access_log;
pub mod account;
pub mod break_glass;
pub mod downloads;
pub mod shares;

use crate::server::AppState;
use axum::Router;
use axum::routing::{delete, get, post};

pub use access_log::subject_patient;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/access-log", get(access_log::get_access_log))
        .route("/me", get(account::get_me))
        .route("/acting-for", post(account::post_acting_for))
        .route("/devices", get(account::get_devices))
        .route("/devices/{id}", delete(account::delete_device))
        .route("/apps", get(account::get_apps))
        .route("/apps/{id}", delete(account::delete_app))
        .route("/step-up", post(account::post_step_up))
        .route("/password", post(account::post_password))
        .route("/totp", post(account::post_totp))
        .route("/launch", post(account::post_launch))
        .route("/shares", get(shares::get_shares).post(shares::post_share))
        .route("/shares/{id}", delete(shares::delete_share))
        .route("/consents/permitted", get(shares::get_permitted))
        .route("/break-glass", post(break_glass::post_break_glass))
        .route("/downloads", get(downloads::get_downloads))
        .route("/downloads/{id}", delete(downloads::delete_download))
}
