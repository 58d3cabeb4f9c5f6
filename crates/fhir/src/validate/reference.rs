//! Shape of `Reference.reference`.
//!
//! The store, the compartment and the gate all read references, so a malformed one must be
//! refused at the door rather than half-understood later. Accepted forms:
//! - `Type/id` and `Type/id/_history/vid` (known R4 type, valid ids);
//! - `Type?search` conditional references, which R4 allows in transaction Bundles (the
//!   server resolves them before storing);
//! - absolute URLs (`scheme:` followed by non-whitespace), which covers `urn:uuid:` and
//!   `urn:oid:` (checked for their own format);
//! - `#id` (a contained resource; checked against the container by the caller) and `#`
//!   (the container itself, used from inside contained resources).

use super::primitives::{is_id, is_oid, is_uuid_urn};

/// What kind of reference a well-formed string is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RefKind<'a> {
    /// `#id`; `""` for `#`.
    Local(&'a str),
    Other,
}

/// Check a reference string; the error is a short reason (the caller adds the value).
pub(crate) fn check_reference<'a>(
    s: &'a str,
    is_resource_type: impl Fn(&str) -> bool,
) -> Result<RefKind<'a>, &'static str> {
    if s.chars().any(char::is_whitespace) {
        return Err("references may not contain whitespace");
    }
    if let Some(local) = s.strip_prefix('#') {
        if local.is_empty() || is_id(local) {
            return Ok(RefKind::Local(local));
        }
        return Err("a local reference must be '#' followed by a contained resource id");
    }
    if s.starts_with("urn:uuid:") {
        return if is_uuid_urn(s) { Ok(RefKind::Other) } else { Err("malformed urn:uuid reference") };
    }
    if s.starts_with("urn:oid:") {
        return if is_oid(s) { Ok(RefKind::Other) } else { Err("malformed urn:oid reference") };
    }
    if let Some(scheme_len) = scheme_length(s) {
        return if s.len() > scheme_len + 1 { Ok(RefKind::Other) } else { Err("empty absolute URL") };
    }
    // Relative: Type/id[/_history/vid] or Type?query.
    if let Some((ty, query)) = s.split_once('?') {
        if !is_resource_type(ty) {
            return Err("conditional reference to an unknown resource type");
        }
        return if query.is_empty() { Err("empty search in conditional reference") } else { Ok(RefKind::Other) };
    }
    let mut parts = s.split('/');
    let ty = parts.next().unwrap_or_default();
    if !is_resource_type(ty) {
        return Err("relative reference must start with a known R4 resource type");
    }
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(id), None, None, None) if is_id(id) => Ok(RefKind::Other),
        (Some(id), Some("_history"), Some(vid), None) if is_id(id) && is_id(vid) => Ok(RefKind::Other),
        _ => Err("relative reference must be Type/id or Type/id/_history/vid with valid ids"),
    }
}

/// Length of a URI scheme (`http`, `urn`, …) when `s` starts with `scheme:`.
fn scheme_length(s: &str) -> Option<usize> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    (first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))).then_some(colon)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> Result<RefKind<'_>, &'static str> {
        check_reference(s, |t| matches!(t, "Patient" | "Observation"))
    }

    #[test]
    fn accepted_forms() {
        for ok in [
            "Patient/123",
            "Patient/a-b.c",
            "Patient/123/_history/2",
            "Patient?identifier=http://x|1",
            "http://example.org/fhir/Patient/123",
            "https://x.y/fhir/Observation/1/_history/1",
            "urn:uuid:c757873d-ec9a-4326-a141-556f43239520",
            "urn:oid:1.2.840.113619.6.197",
        ] {
            assert_eq!(check(ok), Ok(RefKind::Other), "{ok}");
        }
        assert_eq!(check("#p1"), Ok(RefKind::Local("p1")));
        assert_eq!(check("#"), Ok(RefKind::Local("")));
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "Patient/",
            "Patient",
            "Patient/bad id",
            "Patient/bad_id",
            "Patient/1/2",
            "Patient/1/_history/",
            "Patient/1/_history/2/3",
            "Unknown/1",
            "patient/1",
            "Project/1",
            "#bad id",
            "#a/b",
            "urn:uuid:nope",
            "urn:oid:9.9",
            "http:",
            "",
            "Patient?",
            "../Patient/1",
            "/Patient/1",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
