//! The portal's simplified consent — a *share* — and its FHIR Consent form, both ways.
//!
//! A share names one recipient, the data categories shared, one purpose and an effective
//! period; the patient can stop it at any time (revocation sets the Consent inactive). As a
//! Consent it is a deny base (the root provision carries only the period) with one nested
//! permit: the recipient as actor (role IRCP), action `access`, the purpose, and one
//! `class` per category (system `urn:portico:category`). [`from_consent`] reads exactly
//! that shape back; any other Consent is not a share (it is still listed, with its
//! explanation).
//!
//! Recipients the engine can enforce today are practitioners and related people
//! (caregivers). Organisations and apps are part of the share's shape but refused on
//! creation: the engine cannot yet tell whether a request comes from an organisation's
//! staff, and apps are connected through the app's own authorization (SMART), not a share.

use portico_policy::consent::{ACTION_SYSTEM, CATEGORY_SYSTEM, PURPOSE_SYSTEM, SCOPE_SYSTEM};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Who a share is with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecipientKind {
    Practitioner,
    RelatedPerson,
    Organization,
    App,
}

impl RecipientKind {
    pub fn resource_type(self) -> &'static str {
        match self {
            RecipientKind::Practitioner => "Practitioner",
            RecipientKind::RelatedPerson => "RelatedPerson",
            RecipientKind::Organization => "Organization",
            RecipientKind::App => "Device",
        }
    }

    fn from_resource_type(t: &str) -> Option<RecipientKind> {
        match t {
            "Practitioner" => Some(RecipientKind::Practitioner),
            "RelatedPerson" => Some(RecipientKind::RelatedPerson),
            "Organization" => Some(RecipientKind::Organization),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    #[serde(rename = "type")]
    pub kind: RecipientKind,
    /// The FHIR id of the Practitioner / RelatedPerson / Organization.
    pub id: String,
    /// How the patient knows them ("Dr. Lee at Riverside Cardiology").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// A share as the portal sends and shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Share {
    pub recipient: Recipient,
    /// portico data categories (`labs`, `medications`, …).
    pub categories: Vec<String>,
    /// HL7 v3 PurposeOfUse code (default `TREAT`).
    #[serde(default = "default_purpose")]
    pub purpose: String,
    /// First day (or instant) the share is in effect; absent: from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Last day (or instant) it is in effect; absent: until stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

fn default_purpose() -> String {
    "TREAT".to_string()
}

/// Purposes a patient may share for (emergency access is not shared: it is break-the-glass).
pub const PURPOSES: &[&str] =
    &["TREAT", "CAREMGT", "COC", "PATRQT", "FAMRQT", "PWATRNY", "SUPNWK", "HPAYMT", "HOPERAT", "HRESCH", "CLINTRCH"];

/// Most categories in one share (there are fewer than this many).
const MAX_CATEGORIES: usize = 32;
/// Longest recipient display name.
const MAX_DISPLAY: usize = 200;

/// Why a share cannot be made: the field and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareError {
    pub field: &'static str,
    pub message: String,
}

fn fail<T>(field: &'static str, message: impl Into<String>) -> Result<T, ShareError> {
    Err(ShareError { field, message: message.into() })
}

/// Check what the engine could not enforce or the patient did not mean.
pub fn check(s: &Share) -> Result<(), ShareError> {
    match s.recipient.kind {
        RecipientKind::Practitioner | RecipientKind::RelatedPerson => {}
        RecipientKind::Organization => {
            return fail(
                "recipient.type",
                "Sharing with a whole organisation is not supported yet: share with a practitioner there instead.",
            );
        }
        RecipientKind::App => {
            return fail(
                "recipient.type",
                "Apps are connected by signing in to them (they ask for your permission); they are not shared with here.",
            );
        }
    }
    if !portico_fhir::extract::is_fhir_id(&s.recipient.id) {
        return fail("recipient.id", "The recipient id is not a valid FHIR id.");
    }
    if s.recipient.display.as_deref().is_some_and(|d| d.trim().is_empty() || d.chars().count() > MAX_DISPLAY) {
        return fail("recipient.display", format!("The recipient's name must be 1 to {MAX_DISPLAY} characters."));
    }
    if s.categories.is_empty() {
        return fail("categories", "Choose at least one kind of record to share.");
    }
    if s.categories.len() > MAX_CATEGORIES {
        return fail("categories", "Too many categories.");
    }
    for c in &s.categories {
        if !portico_fhir::classify::CATEGORIES.contains(&c.as_str()) {
            return fail(
                "categories",
                format!(
                    "'{}' is not a kind of record; use one of {}.",
                    c.chars().take(32).collect::<String>(),
                    portico_fhir::classify::CATEGORIES.join(", ")
                ),
            );
        }
    }
    if !PURPOSES.contains(&s.purpose.as_str()) {
        return fail("purpose", format!("The purpose must be one of {}.", PURPOSES.join(", ")));
    }
    Ok(())
}

/// The FHIR Consent of a share for `patient`, given (`dateTime`) at `given`.
pub fn to_consent(s: &Share, id: &str, patient: &str, given: &str) -> Value {
    let mut period = serde_json::Map::new();
    if let Some(start) = &s.start {
        period.insert("start".into(), Value::from(start.clone()));
    }
    if let Some(end) = &s.end {
        period.insert("end".into(), Value::from(end.clone()));
    }
    let mut reference = json!({"reference": format!("{}/{}", s.recipient.kind.resource_type(), s.recipient.id)});
    if let Some(d) = &s.recipient.display {
        reference["display"] = Value::from(d.clone());
    }
    let permit = json!({
        "type": "permit",
        "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": reference,
        }],
        "action": [{"coding": [{"system": ACTION_SYSTEM, "code": "access"}]}],
        "purpose": [{"system": PURPOSE_SYSTEM, "code": s.purpose}],
        "class": s.categories.iter().map(|c| json!({"system": CATEGORY_SYSTEM, "code": c})).collect::<Vec<_>>(),
    });
    let mut root = json!({"provision": [permit]});
    if !period.is_empty() {
        root["period"] = Value::Object(period);
    }
    json!({
        "resourceType": "Consent",
        "id": id,
        "status": "active",
        "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "dateTime": given,
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": root,
    })
}

/// The share a Consent expresses, if it has exactly a share's shape.
pub fn from_consent(c: &Value) -> Option<Share> {
    let root = c.get("provision")?.as_object()?;
    if root.keys().any(|k| k != "provision" && k != "period") || root.contains_key("type") {
        return None;
    }
    let (start, end) = match root.get("period") {
        Some(p) => {
            let p = p.as_object()?;
            if p.keys().any(|k| k != "start" && k != "end") {
                return None;
            }
            (text(p.get("start"))?, text(p.get("end"))?)
        }
        None => (None, None),
    };
    let [permit] = root.get("provision")?.as_array()?.as_slice() else { return None };
    let permit = permit.as_object()?;
    if permit.keys().any(|k| !matches!(k.as_str(), "type" | "actor" | "action" | "purpose" | "class")) {
        return None;
    }
    if permit.get("type")?.as_str()? != "permit" {
        return None;
    }
    let [actor] = permit.get("actor")?.as_array()?.as_slice() else { return None };
    let reference = actor.get("reference")?;
    let (rt, id) = portico_policy::consent::normalise_reference(reference.get("reference")?.as_str()?)?;
    let kind = RecipientKind::from_resource_type(&rt)?;
    let display = reference.get("display").and_then(Value::as_str).map(str::to_string);
    let [action] = permit.get("action")?.as_array()?.as_slice() else { return None };
    let [coding] = action.get("coding")?.as_array()?.as_slice() else { return None };
    if coding.get("code")?.as_str()? != "access" {
        return None;
    }
    let [purpose] = permit.get("purpose")?.as_array()?.as_slice() else { return None };
    let purpose = purpose.get("code")?.as_str()?.to_string();
    let categories = permit
        .get("class")?
        .as_array()?
        .iter()
        .map(|c| {
            (c.get("system")?.as_str()? == CATEGORY_SYSTEM).then(|| c.get("code")?.as_str().map(str::to_string))?
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Share { recipient: Recipient { kind, id, display }, categories, purpose, start, end })
}

/// `Some(None)` when absent, `Some(Some(text))` when text, `None` when something else.
fn text(v: Option<&Value>) -> Option<Option<String>> {
    match v {
        None => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_policy::consent::parse_consent;

    fn lee() -> Share {
        Share {
            recipient: Recipient {
                kind: RecipientKind::Practitioner,
                id: "lee".into(),
                display: Some("Dr. Lee at Riverside Cardiology".into()),
            },
            categories: vec!["labs".into(), "medications".into()],
            purpose: "TREAT".into(),
            start: None,
            end: Some("2026-12-31".into()),
        }
    }

    #[test]
    fn a_share_round_trips_through_its_consent_and_the_engine_accepts_it() {
        let shares = [
            lee(),
            Share {
                recipient: Recipient { kind: RecipientKind::RelatedPerson, id: "rp-1".into(), display: None },
                categories: vec!["immunizations".into()],
                purpose: "FAMRQT".into(),
                start: Some("2026-01-01".into()),
                end: None,
            },
            Share { start: Some("2026-02-01T10:00:00Z".into()), end: None, ..lee() },
        ];
        for s in shares {
            check(&s).unwrap();
            let c = to_consent(&s, "c1", "p1", "2026-01-05T00:00:00Z");
            let issues = portico_fhir::validate::validate_resource(&c);
            assert!(issues.iter().all(|i| i.severity != portico_fhir::validate::Severity::Error), "{issues:?}");
            let record = parse_consent(&c).unwrap();
            assert_eq!(record.patient, "p1");
            assert_eq!(from_consent(&c), Some(s.clone()));
            // And back again: the consent of the read share is the same consent.
            assert_eq!(to_consent(&from_consent(&c).unwrap(), "c1", "p1", "2026-01-05T00:00:00Z"), c);
        }
    }

    #[test]
    fn the_explanation_reads_as_the_portal_shows_it() {
        let c = to_consent(&lee(), "c1", "p1", "2026-01-05T00:00:00Z");
        let record = parse_consent(&c).unwrap();
        let now = portico_fhir::datetime::parse_instant("2026-06-01T00:00:00Z").unwrap();
        assert_eq!(
            portico_policy::explain::consent(&record, now).join(" "),
            "Dr. Lee at Riverside Cardiology can see your lab results and medications for your treatment until 31 \
             December 2026. You can stop this at any time."
        );
    }

    #[test]
    fn other_consents_are_not_shares() {
        let mut c = to_consent(&lee(), "c1", "p1", "2026-01-05T00:00:00Z");
        c["provision"]["provision"][0]["type"] = json!("deny");
        assert_eq!(from_consent(&c), None);
        let mut c = to_consent(&lee(), "c1", "p1", "2026-01-05T00:00:00Z");
        c["provision"]["type"] = json!("permit");
        assert_eq!(from_consent(&c), None);
        let mut c = to_consent(&lee(), "c1", "p1", "2026-01-05T00:00:00Z");
        c["provision"]["provision"][0]["securityLabel"] = json!([{"code": "R"}]);
        assert_eq!(from_consent(&c), None);
    }

    #[test]
    fn shares_the_engine_cannot_enforce_are_refused_with_the_field() {
        let org = Share {
            recipient: Recipient { kind: RecipientKind::Organization, id: "o1".into(), display: None },
            ..lee()
        };
        assert_eq!(check(&org).unwrap_err().field, "recipient.type");
        let app = Share { recipient: Recipient { kind: RecipientKind::App, id: "a".into(), display: None }, ..lee() };
        assert_eq!(check(&app).unwrap_err().field, "recipient.type");
        assert_eq!(check(&Share { categories: vec![], ..lee() }).unwrap_err().field, "categories");
        assert_eq!(check(&Share { categories: vec!["gossip".into()], ..lee() }).unwrap_err().field, "categories");
        assert_eq!(check(&Share { purpose: "ETREAT".into(), ..lee() }).unwrap_err().field, "purpose");
        let bad_id = Share {
            recipient: Recipient { kind: RecipientKind::Practitioner, id: "a/b".into(), display: None },
            ..lee()
        };
        assert_eq!(check(&bad_id).unwrap_err().field, "recipient.id");
    }
}
