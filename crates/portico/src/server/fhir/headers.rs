//! FHIR HTTP headers: ETag / If-Match, Prefer, content types, and single-resource responses.

use super::service::Handling;
use crate::server::FHIR_JSON;
use crate::server::error::ApiError;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portico_store::StoredVersion;

/// `Prefer: return=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    Minimal,
    #[default]
    Representation,
    OperationOutcome,
}

/// The parsed `Prefer` header.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prefer {
    pub ret: Return,
    pub handling: Handling,
    pub respond_async: bool,
}

pub fn prefer(headers: &HeaderMap) -> Prefer {
    let mut p = Prefer::default();
    for v in headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()) {
        for part in v.split([',', ';']).map(str::trim) {
            match part {
                "return=minimal" => p.ret = Return::Minimal,
                "return=representation" => p.ret = Return::Representation,
                "return=OperationOutcome" => p.ret = Return::OperationOutcome,
                "handling=strict" => p.handling = Handling::Strict,
                "handling=lenient" => p.handling = Handling::Lenient,
                "respond-async" => p.respond_async = true,
                _ => {}
            }
        }
    }
    p
}

/// A version number from an ETag: `W/"3"`, `"3"` or `3` (some clients drop the wrapper).
pub fn parse_etag(v: &str) -> Option<i64> {
    let v = v.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v.trim_matches('"');
    v.parse().ok().filter(|n: &i64| *n > 0)
}

/// `If-Match` as a version; a malformed value is a 400, not a silent pass.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(parse_etag)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("If-Match must be an ETag like W/\"3\"")),
    }
}

/// Check the request body's media type for a resource (`application/fhir+json` or
/// `application/json`); 415 otherwise.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if matches!(mime.as_str(), "application/fhir+json" | "application/json" | "application/json+fhir") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "Send resources as application/fhir+json.",
        ))
    }
}

/// HTTP-date of an RFC 3339 instant, for `Last-Modified`.
pub fn http_date(rfc3339: &str) -> Option<String> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).ok()?;
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC).format(&fmt).ok()
}

/// Parse an HTTP-date (`If-Modified-Since`) to epoch seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(s.trim(), &fmt).ok().map(|t| t.assume_utc().unix_timestamp())
}

/// Version headers of a stored version.
pub fn version_headers(h: &mut HeaderMap, v: &StoredVersion) {
    if let Ok(etag) = HeaderValue::from_str(&format!("W/\"{}\"", v.version)) {
        h.insert(header::ETAG, etag);
    }
    if let Some(lm) = http_date(&v.last_updated).and_then(|d| HeaderValue::from_str(&d).ok()) {
        h.insert(header::LAST_MODIFIED, lm);
    }
}

/// A JSON body with the FHIR content type.
pub fn fhir_json(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    r
}

/// Respond with a stored resource, honouring `Prefer: return`.
pub fn resource_response(status: StatusCode, v: &StoredVersion, base: &str, ret: Return) -> Response {
    let mut r = match ret {
        Return::Representation => fhir_json(status, v.body.clone()),
        Return::Minimal => status.into_response(),
        Return::OperationOutcome => fhir_json(
            status,
            serde_json::json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational", "diagnostics": format!("{} {}/{} version {}", if status == StatusCode::CREATED { "Created" } else { "Stored" }, v.resource_type, v.id, v.version)}]}).to_string(),
        ),
    };
    let h = r.headers_mut();
    version_headers(h, v);
    if let Ok(loc) = HeaderValue::from_str(&format!("{base}/{}/{}/_history/{}", v.resource_type, v.id, v.version)) {
        h.insert(header::LOCATION, loc.clone());
        if status == StatusCode::CREATED {
            h.insert(header::CONTENT_LOCATION, loc);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_with_and_without_wrapper() {
        assert_eq!(parse_etag("W/\"3\""), Some(3));
        assert_eq!(parse_etag("\"3\""), Some(3));
        assert_eq!(parse_etag("3"), Some(3));
        assert_eq!(parse_etag("W/\"x\""), None);
        assert_eq!(parse_etag("0"), None);
    }

    #[test]
    fn http_dates_round_trip() {
        let d = http_date("2026-11-28T13:48:43.123Z").unwrap();
        assert_eq!(d, "Sat, 28 Nov 2026 13:48:43 GMT");
        assert_eq!(parse_http_date(&d), Some(1_795_873_723));
    }
}

/// `POST _search` bodies are `application/x-www-form-urlencoded`.
pub fn require_form(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "POST _search takes application/x-www-form-urlencoded parameters.",
        ))
    }
}
