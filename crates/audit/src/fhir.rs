//! Records as FHIR R4 AuditEvents, shaped after IHE Basic Audit Log Patterns (BALP): type
//! `rest`, the RESTful interaction as subtype, the user, client and server agents, the
//! server as source, and entities for the data, the patients and the query.

use crate::record::{AuditRecord, EntityRole, Interaction, Outcome};
use base64::Engine;
use serde_json::{Value, json};

const BALP: &str = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";

/// Who is viewing: the whole record, or only what concerns some patients.
#[derive(Debug, Clone, Copy)]
pub enum View<'a> {
    Full,
    /// Only entities of these patients; the query text is left out (it may name others).
    Patients(&'a [String]),
}

/// The server as it appears in records.
#[derive(Debug, Clone, Copy)]
pub struct Server<'a> {
    /// Name of the server (observer).
    pub name: &'a str,
    /// Its FHIR base URL.
    pub base_url: &'a str,
}

/// The FHIR `restful-interaction` code of an interaction.
pub fn subtype(i: Interaction) -> &'static str {
    match i {
        Interaction::Everything | Interaction::BulkExport => "operation",
        Interaction::AccessLog => "search-type",
        other => other.code(),
    }
}

/// AuditEvent.type: `rest` for FHIR interactions; DICOM "User Authentication" for sign-in,
/// sign-out and step-up; DICOM "Security Alert" for tokens, grants and settings.
fn event_type(i: Interaction) -> Value {
    match i {
        Interaction::Login | Interaction::Logout | Interaction::StepUp => coding(DCM, "110114", "User Authentication"),
        i if i.is_security() => coding(DCM, "110113", "Security Alert"),
        _ => coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "Restful Operation"),
    }
}

fn event_subtype(i: Interaction) -> Value {
    match i {
        Interaction::Login => coding(DCM, "110122", "Login"),
        Interaction::Logout => coding(DCM, "110123", "Logout"),
        i if i.is_security() => coding("urn:portico:audit-subtype", i.code(), i.code()),
        i => coding("http://hl7.org/fhir/restful-interaction", subtype(i), subtype(i)),
    }
}

/// AuditEvent.outcome: 0 success, 4 minor failure (refused, client error), 8 serious failure.
pub fn outcome_code(r: &AuditRecord) -> &'static str {
    match r.outcome {
        Outcome::Success => "0",
        Outcome::Denied => "4",
        Outcome::Failed if r.status >= 500 => "8",
        Outcome::Failed => "4",
    }
}

fn profile(r: &AuditRecord) -> Option<String> {
    if r.outcome != Outcome::Success {
        return None;
    }
    let base = match r.interaction {
        Interaction::Read | Interaction::VRead | Interaction::HistoryInstance => "Read",
        Interaction::Create => "Create",
        Interaction::Update | Interaction::Patch => "Update",
        Interaction::Delete => "Delete",
        _ => "Query",
    };
    let patient = if r.patients.is_empty() { "" } else { "Patient" };
    Some(format!("{BALP}{patient}{base}"))
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn actor_who(r: &AuditRecord, view: View<'_>) -> Value {
    match r.actor.kind.as_str() {
        "patient" => match view {
            View::Patients(mine) if !mine.contains(&r.actor.id) => json!({"display": "another patient"}),
            _ => json!({"reference": format!("Patient/{}", r.actor.id)}),
        },
        "anonymous" => json!({"display": "not signed in"}),
        kind => json!({
            "identifier": {"system": format!("urn:portico:{kind}"), "value": r.actor.id},
            "display": if kind == "operator" { "server operator".to_string() } else { format!("{kind} {}", r.actor.id) },
        }),
    }
}

/// Render record number `seq` as an R4 AuditEvent.
pub fn audit_event(seq: i64, r: &AuditRecord, server: Server<'_>, view: View<'_>) -> Value {
    let recorded = crate::plain::instant(r.time_ms);
    let visible = |patients: &[String]| match view {
        View::Full => true,
        View::Patients(mine) => patients.iter().any(|p| mine.contains(p)),
    };
    let mut meta = json!({"versionId": "1", "lastUpdated": recorded});
    if let Some(p) = profile(r) {
        meta["profile"] = json!([p]);
    }
    let mut user = json!({
        "type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient")]},
        "who": actor_who(r, view),
        "requestor": true,
    });
    let policy: Vec<String> = r
        .rules
        .iter()
        .map(|rule| format!("urn:portico:rule:{rule}"))
        .chain(r.consents.iter().map(|c| format!("Consent/{c}")))
        .collect();
    if !policy.is_empty() {
        user["policy"] = json!(policy);
    }
    if let Some(role) = &r.actor.role {
        user["role"] = json!([{"text": role}]);
    }
    if let Some(obo) = &r.on_behalf_of {
        user["altId"] = json!(format!("on behalf of Patient/{obo}"));
    }
    let mut client = json!({
        "type": {"coding": [coding(DCM, "110153", "Source Role ID")]},
        "who": {"display": r.client.as_deref().unwrap_or("unidentified client")},
        "requestor": false,
    });
    if let Some(src) = &r.source {
        client["network"] = json!({"address": src, "type": "2"});
    }
    if let Some(device) = &r.device {
        client["altId"] = json!(device);
    }
    let server_agent = json!({
        "type": {"coding": [coding(DCM, "110152", "Destination Role ID")]},
        "who": {"display": server.name},
        "requestor": false,
        "network": {"address": server.base_url, "type": "5"},
    });
    let mut entities = Vec::new();
    for e in &r.entities {
        if !visible(&e.patients) {
            continue;
        }
        let mut ent = json!({
            "what": {"reference": e.reference},
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "4", "Domain Resource"),
        });
        let mut detail = vec![json!({"type": "portico-role", "valueString": e.role.code()})];
        if !e.category.is_empty() {
            detail.push(json!({"type": "category", "valueString": e.category}));
        }
        ent["detail"] = json!(detail);
        if e.role != EntityRole::Target {
            ent["description"] = json!(format!("returned ({})", e.role.code()));
        }
        entities.push(ent);
    }
    for p in &r.patients {
        if !visible(std::slice::from_ref(p)) {
            continue;
        }
        entities.push(json!({
            "what": {"reference": format!("Patient/{p}")},
            "type": coding(ENTITY_TYPE, "1", "Person"),
            "role": coding(OBJECT_ROLE, "1", "Patient"),
        }));
    }
    if r.interaction.is_query() {
        let mut q = json!({
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "24", "Query"),
        });
        let text = format!("{}?{}", r.resource_type.as_deref().unwrap_or(""), r.query.as_deref().unwrap_or(""));
        if matches!(view, View::Full) {
            q["query"] = json!(base64::engine::general_purpose::STANDARD.encode(text.as_bytes()));
            q["description"] = json!(text);
        }
        entities.push(q);
    }
    entities.push(json!({
        "what": {"identifier": {"value": r.request_id}},
        "type": coding("https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "XrequestId", "X-Request-Id"),
    }));
    let mut ev = json!({
        "resourceType": "AuditEvent",
        "id": seq.to_string(),
        "meta": meta,
        "type": event_type(r.interaction),
        "subtype": [event_subtype(r.interaction)],
        "action": r.interaction.action(),
        "recorded": recorded,
        "outcome": outcome_code(r),
        "agent": [user, client, server_agent],
        "source": {
            "site": server.name,
            "observer": {"display": server.name},
            "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
        },
        "entity": entities,
    });
    let desc = match (&r.reason, r.outcome) {
        (Some(reason), _) => Some(format!("HTTP {}: {reason}", r.status)),
        (None, Outcome::Success) => None,
        (None, _) => Some(format!("HTTP {}", r.status)),
    };
    if let Some(d) = desc {
        ev["outcomeDesc"] = json!(d);
    }
    if let Some(pou) = &r.purpose {
        ev["purposeOfEvent"] =
            json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": pou}]}]);
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Actor, Entity};
    use portico_fhir::validate::{Severity, validate_resource};

    const SERVER: Server<'static> = Server { name: "portico", base_url: "http://localhost/fhir" };

    fn record(interaction: Interaction, outcome: Outcome) -> AuditRecord {
        let mut r = AuditRecord::new(1_714_740_000_000, "req-1", interaction, Actor::new("operator", "operator"));
        r.outcome = outcome;
        r.status = if outcome == Outcome::Success { 200 } else { 404 };
        r.source = Some("10.0.0.1".into());
        r.client = Some("demo-app".into());
        r.purpose = Some("TREAT".into());
        r.resource_type = Some("Observation".into());
        r.query = Some("patient=a&code=x".into());
        r.entities = vec![
            Entity {
                reference: "Observation/o1/_history/1".into(),
                role: EntityRole::Match,
                category: "labs".into(),
                patients: vec!["a".into()],
            },
            Entity {
                reference: "Observation/o2/_history/1".into(),
                role: EntityRole::Match,
                category: "labs".into(),
                patients: vec!["b".into()],
            },
        ];
        r.rules = vec!["operator".into()];
        if outcome == Outcome::Denied {
            r.reason = Some("Not yours.".into());
        }
        r.normalise();
        r
    }

    #[test]
    fn every_rendering_is_valid_r4() {
        for i in Interaction::ALL {
            for o in [Outcome::Success, Outcome::Denied, Outcome::Failed] {
                let ev = audit_event(7, &record(i, o), SERVER, View::Full);
                let errors: Vec<_> =
                    validate_resource(&ev).into_iter().filter(|x| x.severity == Severity::Error).collect();
                assert!(errors.is_empty(), "{i:?} {o:?}: {errors:?}\n{ev:#}");
                assert_eq!(ev["action"], i.action());
            }
        }
    }

    #[test]
    fn balp_shape_of_a_patient_query() {
        let ev = audit_event(7, &record(Interaction::SearchType, Outcome::Success), SERVER, View::Full);
        assert_eq!(ev["id"], "7");
        assert_eq!(ev["meta"]["profile"][0], format!("{BALP}PatientQuery"));
        assert_eq!(ev["subtype"][0]["code"], "search-type");
        assert_eq!(ev["outcome"], "0");
        assert_eq!(ev["agent"][1]["network"]["address"], "10.0.0.1");
        let roles: Vec<&str> =
            ev["entity"].as_array().unwrap().iter().filter_map(|e| e["role"]["code"].as_str()).collect();
        assert_eq!(roles, vec!["4", "4", "1", "1", "24"]);
        let denied = audit_event(8, &record(Interaction::Read, Outcome::Denied), SERVER, View::Full);
        assert_eq!(denied["outcome"], "4");
        assert!(denied.get("meta").and_then(|m| m.get("profile")).is_none());
        assert_eq!(denied["outcomeDesc"], "HTTP 404: Not yours.");
    }

    #[test]
    fn a_patient_view_shows_only_that_patient() {
        let mine = vec!["a".to_string()];
        let ev = audit_event(7, &record(Interaction::SearchType, Outcome::Success), SERVER, View::Patients(&mine));
        let text = ev.to_string();
        assert!(text.contains("Observation/o1") && text.contains("Patient/a"));
        assert!(!text.contains("Observation/o2") && !text.contains("Patient/b") && !text.contains("code=x"));
    }
}
