//! `_elements` and `_summary`: reshaping returned resources, marked SUBSETTED.

use serde_json::{Value, json};

/// Keep only the named top-level elements (plus the mandatory ones).
pub fn elements(body: &str, keep: &[String]) -> Value {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(body) else { return Value::Null };
    let mut out = serde_json::Map::new();
    for (k, v) in obj {
        if matches!(k.as_str(), "resourceType" | "id" | "meta") || keep.iter().any(|e| e == &k) {
            out.insert(k, v);
        }
    }
    let mut v = Value::Object(out);
    mark_subsetted(&mut v);
    v
}

/// `_summary=true`: drop the narrative and contained resources. (A documented
/// approximation: R4's per-element summary flags are not in the tables we ship.)
pub fn summary(body: &str) -> Value {
    let Ok(mut v) = serde_json::from_str::<Value>(body) else { return Value::Null };
    if let Value::Object(o) = &mut v {
        o.remove("text");
        o.remove("contained");
    }
    mark_subsetted(&mut v);
    v
}

fn mark_subsetted(v: &mut Value) {
    let tag = json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"});
    if let Value::Object(o) = v {
        let meta = o.entry("meta").or_insert_with(|| json!({}));
        if let Value::Object(m) = meta {
            let tags = m.entry("tag").or_insert_with(|| json!([]));
            if let Value::Array(a) = tags {
                a.push(tag);
            }
        }
    }
}
