//! URLs the server writes into responses, built from the request's own base URL.

use axum::http::{HeaderMap, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters left unescaped in query components.
const QUERY: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b':').remove(b'|');

/// The request's public origin (`https://host:port`), set by the origin layer
/// (`server::origin`) from the configured public URL, trusted forwarded headers or `Host`.
/// Clients cannot set it: the layer removes any inbound copy.
pub const ORIGIN_HEADER: &str = "x-portico-origin";

/// `http://host:port/fhir`: the FHIR base as the client reached it.
pub fn base_url(headers: &HeaderMap) -> String {
    format!("{}/fhir", origin(headers))
}

/// `http://host:port`: the origin the origin layer worked out, or one from `Host` (only
/// host-name characters are accepted, so a hostile header cannot inject into links).
pub fn origin(headers: &HeaderMap) -> String {
    if let Some(o) = headers.get(ORIGIN_HEADER).and_then(|v| v.to_str().ok()) {
        return o.to_string();
    }
    host_origin("http", headers)
}

/// `scheme://host` from the `Host` header.
pub fn host_origin(scheme: &str, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// Re-encode query parameters, leaving out `_cursor`, then append `extra`.
pub fn query_string(params: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = params
        .iter()
        .filter(|(k, _)| k != "_cursor")
        .map(|(k, v)| format!("{}={}", utf8_percent_encode(k, QUERY), utf8_percent_encode(v, QUERY)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{}={}", utf8_percent_encode(k, QUERY), utf8_percent_encode(v, QUERY)));
    }
    parts.join("&")
}

/// `path?query`, without the `?` when there is no query.
pub fn with_query(path: String, query: String) -> String {
    if query.is_empty() { path } else { format!("{path}?{query}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_host_falls_back() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "evil.com/\r\nx".parse().unwrap_or(axum::http::HeaderValue::from_static("a b")));
        assert_eq!(base_url(&h), "http://localhost/fhir");
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(base_url(&h), "http://127.0.0.1:8080/fhir");
    }

    #[test]
    fn cursor_is_replaced() {
        let p = vec![("a".to_string(), "x y".to_string()), ("_cursor".to_string(), "old".to_string())];
        assert_eq!(query_string(&p, Some(("_cursor", "new"))), "a=x%20y&_cursor=new");
    }
}
