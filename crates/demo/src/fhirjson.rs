//! Small builders for FHIR R4 JSON fragments: decimals with fixed places, codings,
//! references, quantities, security labels, and `transaction` Bundles of `PUT` entries.

use serde_json::{Map, Value, json};

/// Code systems and identifier systems used throughout the demo data.
pub(crate) mod sys {
    pub(crate) const LOINC: &str = "http://loinc.org";
    pub(crate) const SNOMED: &str = "http://snomed.info/sct";
    pub(crate) const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
    pub(crate) const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
    pub(crate) const CVX: &str = "http://hl7.org/fhir/sid/cvx";
    pub(crate) const UCUM: &str = "http://unitsofmeasure.org";
    pub(crate) const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
    pub(crate) const NUCC: &str = "http://nucc.org/provider-taxonomy";
    /// The demo hospital's medical record number system.
    pub(crate) const MRN: &str = "urn:oid:2.16.840.1.113883.19.5";
    pub(crate) const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
    pub(crate) const V2_0276: &str = "http://terminology.hl7.org/CodeSystem/v2-0276";
    pub(crate) const V3_ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
    pub(crate) const V3_ROLE_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
    pub(crate) const V3_CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
    pub(crate) const V3_INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
    pub(crate) const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
    /// Tag carried by every generated resource, so demo data can be found with `_tag`.
    pub(crate) const DEMO_TAG: &str = "urn:portico:demo";
}

/// A JSON number with exactly `places` decimal places (`5.4`, 2 → `5.40`).
///
/// The workspace enables serde_json's `arbitrary_precision`, so a number parsed from text
/// keeps that text verbatim, trailing zeros included. Non-finite input becomes `0`.
pub(crate) fn decimal(value: f64, places: usize) -> Value {
    let value = if value.is_finite() { value } else { 0.0 };
    let mut text = format!("{value:.places$}");
    if text.starts_with('-') && text.bytes().all(|b| matches!(b, b'-' | b'0' | b'.')) {
        text.remove(0); // no "-0.00"
    }
    serde_json::from_str::<Value>(&text).unwrap_or_else(|_| Value::from(0))
}

/// The numeric value of a decimal built by [`decimal`] (what a reader of the JSON sees).
pub(crate) fn rounded(value: f64, places: usize) -> f64 {
    let text = format!("{value:.places$}");
    text.parse().unwrap_or(value)
}

/// `{system, code, display}`.
pub(crate) fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

/// A CodeableConcept with one coding and `text` = the display.
pub(crate) fn concept(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [coding(system, code, display)], "text": display })
}

/// A CodeableConcept with one coding and no text (status-like elements).
pub(crate) fn status_concept(system: &str, code: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code }] })
}

/// A relative reference `{"reference": "Type/id"}`.
pub(crate) fn reference(kind: &str, id: &str) -> Value {
    json!({ "reference": format!("{kind}/{id}") })
}

/// A relative reference with a display.
pub(crate) fn reference_display(kind: &str, id: &str, display: &str) -> Value {
    json!({ "reference": format!("{kind}/{id}"), "display": display })
}

/// A UCUM Quantity with a fixed number of decimal places.
pub(crate) fn quantity(value: f64, places: usize, unit: &str) -> Value {
    json!({ "value": decimal(value, places), "unit": unit, "system": sys::UCUM, "code": unit })
}

/// A sensitivity label class, as HL7 v3 ActCode privacy codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sensitivity {
    /// Psychiatry / behavioral health information.
    Psy,
    /// Substance abuse information (42 CFR Part 2).
    Eth,
    /// Sexuality and reproductive health information.
    Sex,
    /// HIV/AIDS information.
    Hiv,
}

impl Sensitivity {
    fn code_display(self) -> (&'static str, &'static str) {
        match self {
            Self::Psy => ("PSY", "psychiatry information sensitivity"),
            Self::Eth => ("ETH", "substance abuse information sensitivity"),
            Self::Sex => ("SEX", "sexuality and reproductive health information sensitivity"),
            Self::Hiv => ("HIV", "HIV/AIDS information sensitivity"),
        }
    }

    /// `meta.security` codings: the sensitivity plus confidentiality `R` (restricted).
    pub(crate) fn security(self) -> Value {
        let (code, display) = self.code_display();
        json!([coding(sys::V3_ACT_CODE, code, display), coding(sys::V3_CONFIDENTIALITY, "R", "restricted"),])
    }

    /// The same label as a CodeableConcept (for `DocumentReference.securityLabel`).
    pub(crate) fn label_concept(self) -> Value {
        let (code, display) = self.code_display();
        concept(sys::V3_ACT_CODE, code, display)
    }
}

/// Standard base64 (RFC 4648, with padding).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |n: u32, shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        out.push(sym(n, 18));
        out.push(sym(n, 12));
        out.push(if chunk.len() > 1 { sym(n, 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n, 0) } else { '=' });
    }
    out
}

/// Orders a resource's members as `resourceType, id, meta, …` and adds the demo tag.
fn with_demo_meta(resource: Value) -> Value {
    let Value::Object(mut body) = resource else {
        return resource;
    };
    let mut meta = match body.shift_remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.insert("tag".into(), json!([coding(sys::DEMO_TAG, "synthetic", "portico demo data")]));
    let mut out = Map::new();
    for key in ["resourceType", "id"] {
        if let Some(v) = body.shift_remove(key) {
            out.insert(key.into(), v);
        }
    }
    out.insert("meta".into(), Value::Object(meta));
    out.extend(body);
    Value::Object(out)
}

/// A `transaction` Bundle with one `PUT Type/id` entry per resource.
pub(crate) fn transaction(resources: Vec<Value>) -> Value {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|resource| {
            let kind = resource["resourceType"].as_str().unwrap_or_default();
            let id = resource["id"].as_str().unwrap_or_default();
            let url = format!("{kind}/{id}");
            json!({ "resource": with_demo_meta(resource), "request": { "method": "PUT", "url": url } })
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_trailing_zeros() {
        assert_eq!(decimal(5.4, 2).to_string(), "5.40");
        assert_eq!(decimal(0.9, 2).to_string(), "0.90");
        assert_eq!(decimal(98.4, 0).to_string(), "98");
        assert_eq!(decimal(-0.001, 2).to_string(), "0.00");
        assert_eq!(decimal(f64::NAN, 1).to_string(), "0.0");
        let q = quantity(5.4, 2, "mmol/L");
        assert_eq!(
            serde_json::to_string(&q).unwrap_or_default(),
            r#"{"value":5.40,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"}"#
        );
        assert!((rounded(5.404, 2) - 5.40).abs() < 1e-12);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn bundle_entries_are_puts_with_meta_first() {
        let b = transaction(vec![json!({"resourceType": "Patient", "id": "pt-1", "active": true})]);
        assert_eq!(b["entry"][0]["request"]["url"], "Patient/pt-1");
        let text = serde_json::to_string(&b["entry"][0]["resource"]).unwrap_or_default();
        assert!(text.starts_with(r#"{"resourceType":"Patient","id":"pt-1","meta":{"tag""#));
    }
}
