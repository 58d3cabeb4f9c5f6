//! `/api/portal/downloads`: the signed-in user's exports (each app's `$export` jobs made
//! with their authorization), with status, progress, what they hold, when they were made
//! and expire, their files — and cancel. Files are downloaded by the app that asked, with
//! its token (`requiresAccessToken`); the portal lists and cancels.

use super::account::Account;
use crate::export::manifest::instant;
use crate::export::params::ExportParams;
use crate::identity::now_ms;
use crate::server::AppState;
use crate::server::error::ApiError;
use crate::server::fhir::urls;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use portico_audit::Interaction;
use portico_store::export::state as js;
use serde_json::{Value, json};

/// `GET /api/portal/downloads`.
pub async fn get_downloads(State(s): State<AppState>, a: Account, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    a.scope.begin(Interaction::BulkExport, None);
    a.scope.edit(|r| r.query = Some("op=list".into()));
    let base = urls::base_url(&headers);
    let jobs = s.export.store.export_list(Some(&a.session.user.id), "").await?;
    let mut list = Vec::new();
    for j in jobs {
        let p: ExportParams = serde_json::from_str(&j.params).unwrap_or_default();
        let progress: Value = serde_json::from_str(&j.progress).unwrap_or_default();
        let files = if j.state == js::COMPLETED {
            s.export
                .store
                .export_files(&j.id)
                .await?
                .into_iter()
                .filter(|f| f.complete)
                .map(|f| {
                    json!({"type": f.res_type, "url": format!("{base}/_export/{}/{}", j.id, f.name), "count": f.line_count,
                        "bytes": f.bytes, "sha256": f.sha256, "sensitive": f.sensitive})
                })
                .collect()
        } else {
            Vec::new()
        };
        let patients: Vec<String> = serde_json::from_str(&j.patients).unwrap_or_default();
        list.push(json!({
            "id": j.id,
            "app": j.client_id,
            "status": j.state,
            "progress": {"resources": progress["done"], "part": progress["unit"], "parts": progress["units"]},
            "composition": {"types": p.types, "since": p.since_ms.map(instant), "includeSensitive": p.include_sensitive},
            "consent": {"patients": patients, "stepUp": j.principal == "patient" || j.principal == "caregiver"},
            "created": instant(j.created_ms),
            "expires": instant(j.expires_ms),
            "stopped": j.stop_reason,
            "status_url": format!("{base}/_export/{}", j.id),
            "files": files,
            "cancel": if j.is_active() || j.state == js::COMPLETED { Some(format!("/api/portal/downloads/{}", j.id)) } else { None },
        }));
    }
    Ok(Json(json!({"downloads": list})))
}

/// `DELETE /api/portal/downloads/{id}`: the patient cancels an export of their record,
/// whichever of their apps asked for it; its files go at once.
pub async fn delete_download(
    State(s): State<AppState>,
    a: Account,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    a.scope.begin(Interaction::BulkExport, None);
    a.scope.edit(|r| r.query = Some(format!("op=cancel&job={id}&via=portal")));
    let missing = || ApiError::not_found("No such export.");
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(missing());
    }
    let job = s.export.store.export_get(&id).await?.ok_or_else(missing)?;
    if job.user_id.as_deref() != Some(a.session.user.id.as_str()) {
        return Err(missing());
    }
    let moved = s
        .export
        .store
        .export_transition(
            &id,
            &[js::ACCEPTED, js::RUNNING, js::COMPLETED],
            js::CANCELLED,
            None,
            "cancelled in the portal",
            now_ms(),
        )
        .await?;
    if !moved {
        return Err(ApiError::not_found("This export has already ended."));
    }
    s.export.withdraw(&id).await?;
    Ok((StatusCode::OK, Json(json!({"cancelled": id}))).into_response())
}
