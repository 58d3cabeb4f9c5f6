//! The JSON intake guard: the only way a request body becomes a `serde_json::Value`.
//!
//! `serde_json::from_slice::<Value>` is not enough for a FHIR server:
//! - it silently keeps the *last* of two duplicate keys, so `{"id":"a","id":"b"}` would be
//!   stored as something the client may not have meant (and two parsers in a chain could
//!   disagree about which one counts — a classic smuggling vector);
//! - its nesting limit is 128, far more than any FHIR resource needs.
//!
//! So we drive serde_json's (fast, well-tested) tokenizer with our own visitor, which builds
//! the `Value` itself, rejects duplicate keys at any level and stops at [`MAX_DEPTH`] levels
//! before recursing any further (the visitor returns an error at the first too-deep level,
//! so a hostile `[[[[…` of any length costs one shallow unwind, not a stack overflow).
//!
//! Numbers keep their exact text (`1.50` stays `1.50`) because the workspace enables
//! serde_json's `arbitrary_precision`. With that feature serde_json hands each number to a
//! visitor as a one-entry map keyed by a private marker string; we recognise that marker
//! exactly as serde_json's own `Value` does. (A body that literally contains that marker as a
//! key therefore behaves as it does with `serde_json::Value`: the object collapses to the
//! number in its value or fails to parse; it can never smuggle a non-number.)

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Deepest nesting of objects/arrays accepted. The deepest path in R4 resources seen in
/// practice (Questionnaire items, nested extensions) stays well below 30 levels.
pub const MAX_DEPTH: usize = 64;

/// Longest key excerpt echoed back in a duplicate-key message: diagnostics must never
/// reflect large parts of the input.
const KEY_ECHO_LIMIT: usize = 40;

/// serde_json's private marker for numbers under `arbitrary_precision` (see module docs).
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Why a body was refused. `Display` is short, human-readable and safe to put into an
/// OperationOutcome `diagnostics` string: it carries positions, never more than a short
/// excerpt of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("body is not valid UTF-8 (invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("body is not a JSON object (a FHIR resource must be a JSON object)")]
    NotAnObject,
    #[error("JSON nesting deeper than {limit} levels at line {line} column {column}")]
    TooDeep { limit: usize, line: usize, column: usize },
    #[error("duplicate key \"{key}\" at line {line} column {column}")]
    DuplicateKey { key: String, line: usize, column: usize },
    #[error("invalid JSON: {message}")]
    Syntax { message: String },
}

/// Parse a request body into a JSON object, refusing what a FHIR server must not store.
///
/// Accepts an optional leading UTF-8 byte-order mark (some Windows clients send one).
pub fn parse_resource_json(bytes: &[u8]) -> Result<Value, JsonError> {
    let text = std::str::from_utf8(bytes).map_err(|e| JsonError::InvalidUtf8 { offset: e.valid_up_to() })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    // Decide "not an object" from the first token, before building anything: a huge array
    // body is refused without allocating it.
    match text.trim_start_matches([' ', '\t', '\n', '\r']).as_bytes().first() {
        Some(b'{') => {}
        None => {
            return Err(JsonError::Syntax { message: "empty body".to_owned() });
        }
        Some(_) => {
            // Still report real syntax errors as such (e.g. `}{`), else "not an object".
            return match serde_json::from_str::<de::IgnoredAny>(text) {
                Err(e) if !e.is_data() => Err(syntax_error(&e)),
                _ => Err(JsonError::NotAnObject),
            };
        }
    }

    let state = State::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = ValueSeed { depth: 1, state: &state }.deserialize(&mut de).and_then(|v| {
        de.end()?;
        Ok(v)
    });
    match parsed {
        Ok(value) => Ok(value),
        Err(e) => Err(match state.failure.take() {
            Some(Failure::TooDeep) => JsonError::TooDeep { limit: MAX_DEPTH, line: e.line(), column: e.column() },
            Some(Failure::Duplicate(key)) => JsonError::DuplicateKey { key, line: e.line(), column: e.column() },
            None => syntax_error(&e),
        }),
    }
}

fn syntax_error(e: &serde_json::Error) -> JsonError {
    // serde_json's syntax messages ("expected value at line 1 column 5", "EOF while parsing
    // an object …", "invalid escape …") describe the token class, never echo input text.
    JsonError::Syntax { message: e.to_string() }
}

/// Why our visitor stopped; serde_json's error only carries a string, so the structured
/// reason travels beside it.
enum Failure {
    TooDeep,
    Duplicate(String),
}

#[derive(Default)]
struct State {
    failure: Cell<Option<Failure>>,
}

/// Builds one `Value` at nesting level `depth` (the top-level object is level 1).
#[derive(Clone, Copy)]
struct ValueSeed<'s> {
    depth: usize,
    state: &'s State,
}

impl ValueSeed<'_> {
    /// Called when this seed turns out to be a container (object or array): refuses it if it
    /// sits deeper than [`MAX_DEPTH`], otherwise returns the seed for its children.
    fn enter_container<E: de::Error>(self) -> Result<Self, E> {
        if self.depth > MAX_DEPTH {
            self.state.failure.set(Some(Failure::TooDeep));
            return Err(E::custom("nesting too deep"));
        }
        Ok(ValueSeed { depth: self.depth + 1, state: self.state })
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    // Without arbitrary_precision serde_json would call these; keep them correct anyway.
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("not a JSON number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter_container()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            // An empty object is still a container: it counts towards the depth limit.
            self.enter_container::<A::Error>()?;
            return Ok(Value::Object(Map::new()));
        };
        if first == NUMBER_TOKEN {
            // A number under arbitrary_precision: its exact text follows as a string.
            let text: String = map.next_value()?;
            return text.parse::<Number>().map(Value::Number).map_err(|_| de::Error::custom("invalid number"));
        }
        let inner = self.enter_container()?;
        let mut out = Map::new();
        let mut key = first;
        loop {
            if out.contains_key(&key) {
                self.state.failure.set(Some(Failure::Duplicate(truncate_key(&key))));
                return Err(de::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(inner)?;
            out.insert(key, value);
            match map.next_key::<String>()? {
                Some(k) => key = k,
                None => break,
            }
        }
        Ok(Value::Object(out))
    }
}

/// First [`KEY_ECHO_LIMIT`] characters of a key, with `…` when cut.
fn truncate_key(key: &str) -> String {
    match key.char_indices().nth(KEY_ECHO_LIMIT) {
        Some((cut, _)) => format!("{}…", &key[..cut]),
        None => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn parse(s: &str) -> Result<Value, JsonError> {
        parse_resource_json(s.as_bytes())
    }

    #[test]
    fn accepts_a_plain_resource_and_keeps_key_order() {
        let v = parse(r#"{"resourceType":"Patient","id":"p1","active":true,"name":[{"family":"Ng"}]}"#).expect("valid");
        let keys: Vec<&str> = v.as_object().into_iter().flatten().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["resourceType", "id", "active", "name"]);
        assert_eq!(v["name"][0]["family"], "Ng");
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        let body = r#"{"a":1.50,"b":12345678901234567890.1,"c":-0.000,"d":1e400,"e":7,"f":[0.10]}"#;
        let v = parse(body).expect("valid");
        assert_eq!(v["a"].to_string(), "1.50");
        assert_eq!(v["b"].to_string(), "12345678901234567890.1");
        assert_eq!(v["c"].to_string(), "-0.000");
        // serde_json spells exponents as `e+N`/`e-N` (value-preserving); digits and trailing
        // zeros of the mantissa are kept as sent.
        assert_eq!(v["d"].to_string(), "1e+400");
        assert_eq!(v["e"].as_i64(), Some(7));
        assert_eq!(serde_json::to_string(&v).expect("serialises"), body.replace("1e400", "1e+400"));
    }

    #[test]
    fn rejects_duplicate_keys_at_any_level() {
        for body in [
            r#"{"id":"a","id":"b"}"#,
            r#"{"name":[{"family":"x","given":["a"],"family":"y"}]}"#,
            r#"{"a":{"b":{"c":{"d":1,"d":1}}}}"#,
        ] {
            match parse(body) {
                Err(JsonError::DuplicateKey { key, line, column }) => {
                    assert!(["id", "family", "d"].contains(&key.as_str()), "{key}");
                    assert_eq!(line, 1);
                    assert!(column > 0);
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        // Same key in sibling objects is fine.
        assert!(parse(r#"{"a":{"x":1},"b":{"x":1}}"#).is_ok());
    }

    #[test]
    fn escaped_duplicate_is_still_a_duplicate() {
        assert!(matches!(parse(r#"{"id":"a","\u0069d":"b"}"#), Err(JsonError::DuplicateKey { .. })));
    }

    #[test]
    fn duplicate_key_message_is_bounded() {
        let key = "k".repeat(10_000);
        let body = format!(r#"{{"{key}":1,"{key}":2}}"#);
        let err = parse(&body).expect_err("duplicate");
        assert!(err.to_string().len() < 200, "{}", err.to_string().len());
    }

    #[test]
    fn rejects_invalid_utf8_with_offset() {
        let mut body = br#"{"name":""#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(br#""}"#);
        assert_eq!(parse_resource_json(&body), Err(JsonError::InvalidUtf8 { offset: 9 }));
    }

    #[test]
    fn rejects_non_objects() {
        for body in ["[]", "[{}]", "\"x\"", "1", "null", "true"] {
            assert_eq!(parse(body), Err(JsonError::NotAnObject), "{body}");
        }
        for body in ["", "   ", "{", "{\"a\":}", "{}{}", "{\"a\":1,}", "{'a':1}", "}{"] {
            assert!(matches!(parse(body), Err(JsonError::Syntax { .. })), "{body}: {:?}", parse(body));
        }
    }

    #[test]
    fn accepts_a_leading_bom() {
        assert!(parse_resource_json(b"\xef\xbb\xbf{\"a\":1}").is_ok());
    }

    #[test]
    fn depth_limit_is_exact() {
        // MAX_DEPTH levels: the object plus MAX_DEPTH-1 arrays.
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert!(parse(&ok).is_ok());
        let too_deep = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let empty_too_deep = format!("{{\"a\":{}{{}}{}}}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert!(matches!(parse(&empty_too_deep), Err(JsonError::TooDeep { .. })));
        assert!(matches!(parse(&too_deep), Err(JsonError::TooDeep { limit: MAX_DEPTH, .. })));
    }

    #[test]
    fn hostile_nesting_fails_fast() {
        for open in ["[", "{\"a\":"] {
            let body = format!("{{\"x\":{}", open.repeat(100_000));
            let start = Instant::now();
            let err = parse(&body).expect_err("too deep");
            assert!(matches!(err, JsonError::TooDeep { .. }), "{err:?}");
            assert!(start.elapsed() < Duration::from_secs(2));
        }
        // Top-level array nesting is refused as "not an object" without building it.
        let start = Instant::now();
        assert!(parse(&"[".repeat(100_000)).is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn number_marker_key_cannot_smuggle_a_non_number() {
        let v = parse(r#"{"a":{"$serde_json::private::Number":"x"}}"#);
        assert!(v.is_err());
    }

    #[test]
    fn errors_carry_positions() {
        let err = parse("{\n  \"a\": 1,\n  \"a\": 2\n}").expect_err("dup");
        assert_eq!(err, JsonError::DuplicateKey { key: "a".into(), line: 3, column: 5 });
        let msg = parse("{\"a\": tru}").expect_err("syntax").to_string();
        assert!(msg.contains("line 1"), "{msg}");
    }
}
