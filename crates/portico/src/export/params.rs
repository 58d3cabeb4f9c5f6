//! Kick-off parameters: `_type`, `_since`, `_typeFilter`, `_outputFormat`, and portico's
//! `includeSensitive`, from a query string (GET) or a Parameters body (POST).

use crate::server::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Output formats accepted for NDJSON (Bulk Data 2.0 lists these three spellings).
pub const NDJSON_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// What the client asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExportParams {
    /// Resource types (empty: every type the export level covers).
    #[serde(default)]
    pub types: Vec<String>,
    /// `_since`, epoch ms.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// `_typeFilter`: per type, one search query (`Observation?category=laboratory`).
    #[serde(default)]
    pub type_filters: Vec<(String, String)>,
    /// Sensitive categories included (in separate files): patient opt-in with step-up.
    #[serde(default)]
    pub include_sensitive: bool,
    /// `_outputFormat=application/pdf`: besides the NDJSON files, a PDF health summary made
    /// from them (patient-level exports only; see `export::summary`).
    #[serde(default)]
    pub summary_pdf: bool,
    /// Patients named in a POST body (`patient` parameter) for system/group exports.
    #[serde(default)]
    pub patients: Vec<String>,
}

/// Parse `(name, value)` pairs (from the query string or a Parameters body).
pub fn parse(pairs: &[(String, String)]) -> Result<ExportParams, ApiError> {
    let mut p = ExportParams::default();
    for (k, v) in pairs {
        match k.as_str() {
            "_outputFormat" => {
                if v == "application/pdf" {
                    p.summary_pdf = true;
                    continue;
                }
                if !NDJSON_FORMATS.contains(&v.as_str()) {
                    return Err(unsupported(format!(
                        "_outputFormat '{}' is not supported; use application/fhir+ndjson.",
                        clip(v)
                    )));
                }
            }
            "_type" => {
                for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !portico_fhir::resource_types::is_resource_type(t) {
                        return Err(ApiError::bad_request(format!(
                            "_type names an unknown resource type '{}'.",
                            clip(t)
                        )));
                    }
                    if !p.types.iter().any(|x| x == t) {
                        p.types.push(t.to_string());
                    }
                }
            }
            "_since" => {
                let (lo, _) = portico_fhir::datetime::parse_range(v)
                    .ok_or_else(|| ApiError::bad_request("_since must be a FHIR instant."))?;
                p.since_ms = Some(lo);
            }
            "_typeFilter" => {
                for f in v.split(',').filter(|f| !f.is_empty()) {
                    let (t, q) =
                        f.split_once('?').ok_or_else(|| ApiError::bad_request("_typeFilter must be Type?query."))?;
                    if !portico_fhir::resource_types::is_resource_type(t) {
                        return Err(ApiError::bad_request(format!("_typeFilter names an unknown type '{}'.", clip(t))));
                    }
                    if p.type_filters.iter().any(|(x, _)| x == t) {
                        return Err(unsupported(format!(
                            "More than one _typeFilter for {t} is not supported; combine them in one query."
                        )));
                    }
                    // Checked now so a bad filter fails the kick-off, not the job.
                    let params = crate::server::fhir::service::parse_query_string(q);
                    let parsed = portico_store::search::parse_search(Some(t), &params)
                        .map_err(|e| ApiError::bad_request(format!("_typeFilter for {t}: {}", e.0)))?;
                    if !parsed.unknown.is_empty()
                        || params.iter().any(|(k, _)| k.starts_with('_') && k != "_id" && k != "_lastUpdated")
                    {
                        return Err(unsupported(format!(
                            "_typeFilter for {t} uses parameters this server does not support there."
                        )));
                    }
                    p.type_filters.push((t.to_string(), q.to_string()));
                }
            }
            "includeSensitive" => {
                p.include_sensitive = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::bad_request("includeSensitive must be true or false.")),
                }
            }
            "patient" => {
                let id = v.strip_prefix("Patient/").unwrap_or(v);
                if !portico_fhir::extract::is_fhir_id(id) {
                    return Err(ApiError::bad_request("patient must reference Patient/{id}."));
                }
                p.patients.push(id.to_string());
            }
            "_format" | "_pretty" => {}
            "_elements" | "includeAssociatedData" | "_until" | "organizeOutputBy" | "allowPartialManifests" => {
                return Err(unsupported(format!("The {k} parameter is not supported by this server.")));
            }
            other => return Err(ApiError::bad_request(format!("'{}' is not an $export parameter.", clip(other)))),
        }
    }
    for (t, _) in &p.type_filters {
        if !p.types.is_empty() && !p.types.contains(t) {
            return Err(ApiError::bad_request(format!("_typeFilter names {t}, which _type leaves out.")));
        }
    }
    Ok(p)
}

/// `(name, value)` pairs of a Parameters body (`valueString`, `valueCode`, `valueInstant`,
/// `valueBoolean`, `valueReference`).
pub fn from_parameters(body: &Value) -> Result<Vec<(String, String)>, ApiError> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(ApiError::bad_request("The POST body must be a Parameters resource."));
    }
    let mut out = Vec::new();
    for p in body.get("parameter").and_then(Value::as_array).into_iter().flatten() {
        let name =
            p.get("name").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request("A parameter has no name."))?;
        let value = ["valueString", "valueCode", "valueInstant", "valueDateTime", "valueUri"]
            .iter()
            .find_map(|k| p.get(*k).and_then(Value::as_str).map(str::to_string))
            .or_else(|| p.get("valueBoolean").and_then(Value::as_bool).map(|b| b.to_string()))
            .or_else(|| p.pointer("/valueReference/reference").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| ApiError::bad_request(format!("Parameter '{}' has no supported value.", clip(name))))?;
        out.push((name.to_string(), value));
    }
    Ok(out)
}

fn unsupported(msg: impl Into<String>) -> ApiError {
    ApiError::new(axum::http::StatusCode::BAD_REQUEST, "not-supported", msg)
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn accepts_the_spec_parameters_and_refuses_the_rest_clearly() {
        let p = parse(&pairs(&[
            ("_type", "Observation,Patient"),
            ("_since", "2020-01-01T00:00:00Z"),
            ("_outputFormat", "ndjson"),
            ("_typeFilter", "Observation?category=laboratory"),
        ]))
        .unwrap();
        assert_eq!(p.types, ["Observation", "Patient"]);
        assert!(p.since_ms.is_some());
        assert_eq!(p.type_filters.len(), 1);
        assert!(parse(&pairs(&[("_outputFormat", "text/csv")])).is_err());
        assert!(parse(&pairs(&[("_type", "Nope")])).is_err());
        assert!(parse(&pairs(&[("_typeFilter", "Observation?nonsense=1")])).is_err());
        assert!(parse(&pairs(&[("_elements", "id")])).is_err());
        assert!(parse(&pairs(&[("_type", "Patient"), ("_typeFilter", "Observation?code=1")])).is_err());
        assert!(parse(&pairs(&[("includeSensitive", "yes")])).is_err());
    }
}
