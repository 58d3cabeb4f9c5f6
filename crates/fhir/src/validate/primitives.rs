//! Format checks for FHIR primitive values, hand-written instead of the R4 schema's regexes:
//! they are faster than a regex engine without its optional perf features, they can check
//! the calendar (`2019-02-29` matches the regex but is not a date), and none of them
//! allocates unless it reports a problem.

use serde_json::Value;

use super::Severity;
use super::schema::Prim;
use super::temporal::{is_date_time, is_instant, parse_date, parse_time};

/// FHIR caps string-like primitives at 1 MB.
const MAX_STRING_BYTES: usize = 1024 * 1024;
/// How much of an offending value a message may quote.
const ECHO_LIMIT: usize = 40;

/// One problem with one primitive value.
#[derive(Debug)]
pub(crate) struct Problem {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
}

fn error(code: &'static str, message: String) -> Option<Problem> {
    Some(Problem { severity: Severity::Error, code, message })
}

/// `value` quoted for a message, cut to a few characters so diagnostics never echo much.
pub(crate) fn quote(value: &str) -> String {
    match value.char_indices().nth(ECHO_LIMIT) {
        Some((cut, _)) => format!("'{}…'", &value[..cut]),
        None => format!("'{value}'"),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn type_name(p: Prim) -> &'static str {
    match p {
        Prim::Base64Binary => "base64Binary",
        Prim::Boolean => "boolean",
        Prim::Canonical => "canonical",
        Prim::Code => "code",
        Prim::Date => "date",
        Prim::DateTime => "dateTime",
        Prim::Decimal => "decimal",
        Prim::Id => "id",
        Prim::Instant => "instant",
        Prim::Integer => "integer",
        Prim::Markdown => "markdown",
        Prim::Oid => "oid",
        Prim::PositiveInt => "positiveInt",
        Prim::String => "string",
        Prim::Time => "time",
        Prim::UnsignedInt => "unsignedInt",
        Prim::Uri => "uri",
        Prim::Url => "url",
        Prim::Uuid => "uuid",
        Prim::Xhtml => "xhtml",
    }
}

/// Check one (non-null, non-array) JSON value against primitive type `p`.
pub(crate) fn check(p: Prim, v: &Value) -> Option<Problem> {
    match p {
        Prim::Boolean => match v {
            Value::Bool(_) => None,
            _ => wrong_kind(p, v),
        },
        Prim::Decimal => match v {
            // serde_json only produces numbers that match the JSON grammar, which is the
            // FHIR decimal grammar; arbitrary_precision keeps the text exactly.
            Value::Number(_) => None,
            _ => wrong_kind(p, v),
        },
        Prim::Integer | Prim::PositiveInt | Prim::UnsignedInt => match v {
            Value::Number(n) => {
                let min = match p {
                    Prim::PositiveInt => 1,
                    Prim::UnsignedInt => 0,
                    _ => i64::from(i32::MIN),
                };
                match n.as_i64() {
                    Some(i) if (min..=i64::from(i32::MAX)).contains(&i) => None,
                    _ => error(
                        "value",
                        format!("{} is not a valid {} (whole number in range)", quote(&n.to_string()), type_name(p)),
                    ),
                }
            }
            _ => wrong_kind(p, v),
        },
        _ => match v {
            Value::String(s) => check_string(p, s),
            _ => wrong_kind(p, v),
        },
    }
}

fn wrong_kind(p: Prim, v: &Value) -> Option<Problem> {
    let expected = match p {
        Prim::Boolean => "a JSON boolean",
        Prim::Decimal | Prim::Integer | Prim::PositiveInt | Prim::UnsignedInt => "a JSON number",
        _ => "a JSON string",
    };
    error("structure", format!("{} must be {expected}, found {}", type_name(p), kind_name(v)))
}

fn check_string(p: Prim, s: &str) -> Option<Problem> {
    if s.is_empty() {
        return error("value", format!("empty {} (FHIR values may not be empty strings)", type_name(p)));
    }
    if s.len() > MAX_STRING_BYTES && p != Prim::Base64Binary {
        return error("too-long", format!("{} value longer than 1 MB", type_name(p)));
    }
    let ok = match p {
        Prim::String | Prim::Markdown => {
            // "SHOULD NOT contain control characters": a warning, not a rejection.
            if s.chars().any(|c| c < ' ' && !matches!(c, '\t' | '\r' | '\n')) {
                return Some(Problem {
                    severity: Severity::Warning,
                    code: "value",
                    message: format!("{} contains control characters", type_name(p)),
                });
            }
            true
        }
        Prim::Xhtml => true, // checked by the narrative rules
        Prim::Code => is_code(s),
        Prim::Id => is_id(s),
        Prim::Uri | Prim::Url | Prim::Canonical => !s.chars().any(char::is_whitespace),
        Prim::Oid => is_oid(s),
        Prim::Uuid => is_uuid_urn(s),
        Prim::Base64Binary => is_base64(s),
        Prim::Date => parse_date(s).is_some_and(|rest| rest.is_empty()),
        Prim::DateTime => is_date_time(s),
        Prim::Instant => is_instant(s),
        Prim::Time => parse_time(s).is_some_and(|rest| rest.is_empty()),
        Prim::Boolean | Prim::Decimal | Prim::Integer | Prim::PositiveInt | Prim::UnsignedInt => true,
    };
    if ok { None } else { error("value", format!("{} is not a valid {}", quote(s), type_name(p))) }
}

/// `[A-Za-z0-9\-\.]{1,64}`
pub(crate) fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Non-empty, no leading/trailing whitespace, whitespace only as single separators.
pub(crate) fn is_code(s: &str) -> bool {
    let mut prev_ws = true; // rejects leading whitespace
    for c in s.chars() {
        let ws = c.is_whitespace();
        if ws && prev_ws {
            return false;
        }
        prev_ws = ws;
    }
    !prev_ws // rejects trailing whitespace (and the empty string)
}

/// `urn:oid:[0-2](\.(0|[1-9][0-9]*))+`
pub(crate) fn is_oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else {
        return false;
    };
    let mut arcs = rest.split('.');
    if !matches!(arcs.next(), Some("0" | "1" | "2")) {
        return false;
    }
    let mut n = 0;
    for arc in arcs {
        let digits = !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit());
        if !digits || (arc.len() > 1 && arc.starts_with('0')) {
            return false;
        }
        n += 1;
    }
    n > 0
}

/// `urn:uuid:` + 8-4-4-4-12 hex. R4 writes the hex in lower case; upper case is accepted
/// because RFC 4122 makes UUID input case-insensitive.
pub(crate) fn is_uuid_urn(s: &str) -> bool {
    s.strip_prefix("urn:uuid:").is_some_and(is_uuid)
}

pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Base64 with optional whitespace between characters (as the R4 schema allows):
/// alphabet `A-Za-z0-9+/`, `=` padding only at the end, a multiple of 4 characters.
pub(crate) fn is_base64(s: &str) -> bool {
    let mut count = 0usize;
    let mut padding = 0usize;
    for b in s.bytes() {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            b'=' => padding += 1,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' if padding == 0 => {}
            _ => return false,
        }
        count += 1;
    }
    count > 0 && count.is_multiple_of(4) && padding <= 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(p: Prim, v: Value) -> bool {
        check(p, &v).is_none()
    }

    #[test]
    fn numbers_and_booleans() {
        assert!(ok(Prim::Integer, json!(-5)) && ok(Prim::Integer, json!(2147483647)));
        assert!(!ok(Prim::Integer, json!(2147483648i64)) && !ok(Prim::Integer, json!(1.5)));
        assert!(!ok(Prim::Integer, json!("5")));
        assert!(ok(Prim::PositiveInt, json!(1)) && !ok(Prim::PositiveInt, json!(0)));
        assert!(ok(Prim::UnsignedInt, json!(0)) && !ok(Prim::UnsignedInt, json!(-1)));
        let decimal: Value = serde_json::from_str("1.50").expect("number");
        assert!(ok(Prim::Decimal, decimal) && !ok(Prim::Decimal, json!("1.5")));
        assert!(ok(Prim::Boolean, json!(false)) && !ok(Prim::Boolean, json!("true")));
        // A whole number written with a fraction is not an integer in FHIR JSON.
        let v: Value = serde_json::from_str("3.0").expect("number");
        assert!(!ok(Prim::Integer, v));
    }

    #[test]
    fn strings_codes_ids_uris() {
        assert!(!ok(Prim::String, json!("")));
        assert_eq!(check(Prim::String, &json!("a\u{1}b")).map(|p| p.severity), Some(Severity::Warning));
        assert!(ok(Prim::String, json!(" spaced \n text ")));
        assert!(ok(Prim::Code, json!("a b")));
        for bad in [" a", "a ", "a  b", "", "a\tb\t"] {
            assert!(!ok(Prim::Code, json!(bad)), "{bad:?}");
        }
        assert!(ok(Prim::Id, json!("a-B.9")) && ok(Prim::Id, json!("x".repeat(64))));
        for bad in ["bad id!", "", "a_b", "é"] {
            assert!(!ok(Prim::Id, json!(bad)), "{bad}");
        }
        assert!(!ok(Prim::Id, json!("x".repeat(65))));
        assert!(ok(Prim::Uri, json!("http://x/y")) && !ok(Prim::Uri, json!("http://x/ y")));
        assert!(ok(Prim::Url, json!("relative/path.png")));
        assert!(ok(Prim::Oid, json!("urn:oid:2.16.840.1.113883")));
        for bad in ["urn:oid:3.1", "urn:oid:1", "urn:oid:1.02", "1.2.3", "urn:oid:1..2"] {
            assert!(!ok(Prim::Oid, json!(bad)), "{bad}");
        }
        assert!(ok(Prim::Uuid, json!("urn:uuid:c757873d-ec9a-4326-a141-556f43239520")));
        assert!(!ok(Prim::Uuid, json!("urn:uuid:c757873d-ec9a-4326-a141-556f4323952")));
        assert!(ok(Prim::Base64Binary, json!("SGVsbG8=")) && ok(Prim::Base64Binary, json!("SGVs\nbG8h")));
        for bad in ["SGVsbG8", "SGV=bG8=", "SGVsbG8===", "SG*sbG8="] {
            assert!(!ok(Prim::Base64Binary, json!(bad)), "{bad}");
        }
    }

    #[test]
    fn messages_do_not_echo_long_values() {
        let long = format!("{}!", "x".repeat(5000));
        let p = check(Prim::Id, &json!(long)).expect("invalid");
        assert!(p.message.len() < 120, "{}", p.message);
        let too_long = "y".repeat(MAX_STRING_BYTES + 1);
        assert_eq!(check(Prim::String, &json!(too_long)).map(|p| p.code), Some("too-long"));
    }
}
