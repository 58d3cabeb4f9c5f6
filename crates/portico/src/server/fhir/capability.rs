//! `/fhir/metadata`: the CapabilityStatement, generated from the same tables the server
//! uses (resource types, search parameters, the `_count` cap), so it lists exactly what
//! is implemented.

use super::headers::fhir_json;
use super::urls;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_fhir::search_params::{self, ParamType};
use portico_store::search::MAX_COUNT;
use serde_json::{Value, json};
use std::sync::OnceLock;

/// Interactions every resource type supports.
const TYPE_INTERACTIONS: &[&str] =
    &["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"];

/// Result parameters the search engine understands (besides the per-type ones).
const COMMON_PARAMS: &[(&str, &str, &str)] = &[
    ("_id", "token", "Logical id"),
    ("_lastUpdated", "date", "When the resource last changed"),
    ("_count", "number", "Page size; capped"),
    ("_sort", "special", "Sort keys, '-' for descending"),
    ("_include", "special", "Non-iterative include of referenced resources"),
    ("_revinclude", "special", "Non-iterative reverse include"),
    ("_summary", "special", "count, true (narrative and contained removed), false"),
    ("_elements", "special", "Top-level elements to return"),
    ("_total", "special", "none, estimate, accurate"),
];

pub async fn get_metadata(headers: HeaderMap) -> Response {
    let base = urls::base_url(&headers);
    let mut cs = statement().clone();
    cs["implementation"] = json!({"description": "portico FHIR R4 server", "url": base});
    // SMART discovery as older clients read it (the Python fhirclient reads only this).
    let uris: Vec<Value> = crate::server::oauth::discovery::endpoints(&urls::origin(&headers))
        .into_iter()
        .filter(|(name, _)| *name != "jwks")
        .map(|(name, url)| json!({"url": name, "valueUri": url}))
        .collect();
    cs["rest"][0]["security"]["extension"] =
        json!([{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris", "extension": uris}]);
    fhir_json(StatusCode::OK, cs.to_string())
}

/// The statement without request-specific parts, built once.
pub fn statement() -> &'static Value {
    static CS: OnceLock<Value> = OnceLock::new();
    CS.get_or_init(build)
}

fn build() -> Value {
    let resources: Vec<Value> = portico_fhir::resource_types::all()
        .iter()
        .map(|rt| {
            if *rt == "AuditEvent" {
                return super::audit_event::capability();
            }
            let mut params: Vec<Value> = search_params::params_for(rt)
                .into_iter()
                .filter(|p| !matches!(p.kind, ParamType::Composite | ParamType::Special))
                .filter(|p| !matches!(p.code.as_str(), "_text" | "_content" | "_query" | "_list" | "_has" | "_id" | "_lastUpdated"))
                .map(|p| json!({"name": p.code, "type": p.kind.as_str()}))
                .collect();
            params.extend(COMMON_PARAMS.iter().map(|(n, t, d)| json!({"name": n, "type": t, "documentation": d})));
            let mut r = json!({
                "type": rt,
                "interaction": TYPE_INTERACTIONS.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchInclude": ["*"],
                "searchRevInclude": ["*"],
                "searchParam": params,
            });
            if *rt == "Patient" {
                r["operation"] = json!([{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]);
            }
            // `server/fhir/revoke.rs`: status inactive, with its signed consent event.
            if *rt == "Consent" {
                r["operation"] = json!([{"name": "revoke", "definition": "urn:portico:OperationDefinition/Consent-revoke"}]);
            }
            r
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-28",
        "kind": "instance",
        "software": {"name": "portico", "version": env!("CARGO_PKG_VERSION")},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "documentation": format!("Search pages hold at most {MAX_COUNT} entries (_count is capped); paging uses opaque cursors."),
            "security": {
                "cors": false,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}], "text": "OAuth2 using the SMART App Launch profile (also: the operator's admin bearer token)"}],
            },
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
        }],
    })
}
