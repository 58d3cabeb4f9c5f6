//! Paging cursors: the last row's sort values and change sequence number. Keyset paging
//! means a page boundary never moves when rows are inserted elsewhere, and the sequence
//! number breaks ties between identical sort values (e.g. identical timestamps).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Where the next page starts. Opaque to clients (base64url of a small JSON array).
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// Values of the sort keys of the last row, in order (flag, value pairs).
    pub keys: Vec<Value>,
    /// Change sequence number of the last row.
    pub seq: i64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let v = Value::Array(vec![Value::Array(self.keys.clone()), Value::from(self.seq)]);
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// Parse a cursor from a client; anything malformed is `None` (the caller answers 400).
    pub fn decode(s: &str) -> Option<Cursor> {
        if s.len() > 4096 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        let arr = v.as_array()?;
        let [keys, seq] = arr.as_slice() else { return None };
        let keys = keys.as_array()?.clone();
        if keys.iter().any(|k| !(k.is_string() || k.is_number()) || k.as_str().is_some_and(|s| s.contains('\0'))) {
            return None;
        }
        Some(Cursor { keys, seq: seq.as_i64()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let c = Cursor { keys: vec![Value::from(0), Value::from("smith")], seq: 42 };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Cursor::decode("!!!"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("{\"a\":1}")), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("[[{}],1]")), None);
    }
}
