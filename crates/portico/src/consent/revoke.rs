//! Revoking a consent: its status becomes `inactive`, through the ordinary write path (so
//! the change gets its signed event and audit record). Revoking a consent that is already
//! inactive changes nothing and succeeds (idempotent).

use crate::server::error::ApiError;
use crate::server::fhir::service::{Fhir, Handling};
use portico_audit::Interaction;
use portico_policy::RequestContext;
use portico_store::{StoredVersion, WriteKind};
use serde_json::Value;

/// Longest revocation reason kept (it goes into the audit record).
pub const MAX_REASON: usize = 500;

/// How often a revocation is retried when the consent changed between reading and writing.
const ATTEMPTS: usize = 5;

/// Revoke `Consent/{id}` as `ctx`; answers the current version and whether this call
/// changed it. A consent the caller may not see answers 404, like an absent one.
pub async fn revoke(
    fhir: &Fhir<'_>,
    ctx: &RequestContext,
    id: &str,
    reason: Option<&str>,
) -> Result<(StoredVersion, bool), ApiError> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(ApiError::bad_request(format!("The reason may be at most {MAX_REASON} characters long.")));
    }
    ctx.scope.begin(Interaction::Update, Some("Consent"));
    ctx.scope.edit(|r| {
        r.query = Some(match reason {
            Some(text) => format!("$revoke reason={text}"),
            None => "$revoke".to_string(),
        })
    });
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = fhir.read(ctx, "Consent", id).await?;
        let mut doc: Value = serde_json::from_str(&current.body).map_err(|_| ApiError::internal())?;
        if doc.get("status").and_then(Value::as_str) == Some("inactive") {
            return Ok((current, false));
        }
        doc["status"] = Value::from("inactive");
        let body = fhir.validated_body("Consent", id, doc, Handling::Strict)?;
        match fhir.write_one(ctx, WriteKind::Update, "Consent", id, Some(body), Some(current.version), None).await {
            Ok(r) => return Ok((r.stored, true)),
            Err(e) if attempt < ATTEMPTS && e.status == axum::http::StatusCode::PRECONDITION_FAILED => continue,
            Err(e) => return Err(e),
        }
    }
}
