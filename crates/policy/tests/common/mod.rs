//! Builders shared by the consent engine's integration tests: FHIR Consents as JSON (parsed
//! through the public `parse_consent`), principals with patient facts, resource facts.

#![allow(dead_code)]

use portico_policy::consent::{ACTION_SYSTEM, CATEGORY_SYSTEM, PURPOSE_SYSTEM, RESOURCE_TYPE_SYSTEM, SCOPE_SYSTEM};
use portico_policy::{
    Action, BirthDate, ConsentRecord, PatientFacts, Principal, RequestContext, ResourceFacts, parse_consent,
};
use serde_json::{Value, json};
use std::sync::Arc;

pub const DAY: i64 = 86_400_000;
/// 2026-06-15T12:00:00Z: "now" in every test.
pub const NOW: i64 = 1_781_524_800_000;

pub const ALL_ACTIONS: [Action; 9] = [
    Action::Read,
    Action::VRead,
    Action::Search,
    Action::History,
    Action::Create,
    Action::Update,
    Action::Patch,
    Action::Delete,
    Action::Everything,
];

/// A provision under construction.
#[derive(Debug, Clone)]
pub struct P(pub Value);

fn push(v: &mut Value, key: &str, item: Value) {
    match v.get_mut(key) {
        Some(Value::Array(a)) => a.push(item),
        _ => v[key] = json!([item]),
    }
}

impl P {
    pub fn permit() -> P {
        P(json!({"type": "permit"}))
    }
    pub fn deny() -> P {
        P(json!({"type": "deny"}))
    }
    /// An untyped root (a deny base).
    pub fn base() -> P {
        P(json!({}))
    }
    /// `RelatedPerson/x`, `Practitioner/y`, with a display name for explanations.
    pub fn actor(mut self, reference: &str) -> P {
        push(
            &mut self.0,
            "actor",
            json!({"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                   "reference": {"reference": reference}}),
        );
        self
    }
    pub fn actor_named(mut self, reference: &str, display: &str) -> P {
        push(
            &mut self.0,
            "actor",
            json!({"role": {"coding": [{"code": "IRCP"}]}, "reference": {"reference": reference, "display": display}}),
        );
        self
    }
    pub fn category(mut self, c: &str) -> P {
        push(&mut self.0, "class", json!({"system": CATEGORY_SYSTEM, "code": c}));
        self
    }
    pub fn class(mut self, t: &str) -> P {
        push(&mut self.0, "class", json!({"system": RESOURCE_TYPE_SYSTEM, "code": t}));
        self
    }
    pub fn label(mut self, l: &str) -> P {
        push(&mut self.0, "securityLabel", json!({"code": l}));
        self
    }
    pub fn code(mut self, system: &str, code: &str) -> P {
        push(&mut self.0, "code", json!({"coding": [{"system": system, "code": code}]}));
        self
    }
    pub fn purpose(mut self, p: &str) -> P {
        push(&mut self.0, "purpose", json!({"system": PURPOSE_SYSTEM, "code": p}));
        self
    }
    pub fn action(mut self, a: &str) -> P {
        push(&mut self.0, "action", json!({"coding": [{"system": ACTION_SYSTEM, "code": a}]}));
        self
    }
    pub fn period(mut self, start: Option<&str>, end: Option<&str>) -> P {
        let mut p = json!({});
        if let Some(s) = start {
            p["start"] = json!(s);
        }
        if let Some(e) = end {
            p["end"] = json!(e);
        }
        self.0["period"] = p;
        self
    }
    pub fn data_period(mut self, start: Option<&str>, end: Option<&str>) -> P {
        let mut p = json!({});
        if let Some(s) = start {
            p["start"] = json!(s);
        }
        if let Some(e) = end {
            p["end"] = json!(e);
        }
        self.0["dataPeriod"] = p;
        self
    }
    pub fn data(mut self, meaning: &str, reference: &str) -> P {
        push(&mut self.0, "data", json!({"meaning": meaning, "reference": {"reference": reference}}));
        self
    }
    pub fn child(mut self, c: P) -> P {
        push(&mut self.0, "provision", c.0);
        self
    }
}

/// A Consent of patient `p1` as JSON.
pub fn consent_json(id: &str, status: &str, root: P) -> Value {
    json!({
        "resourceType": "Consent",
        "id": id,
        "status": status,
        "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"},
        "dateTime": "2026-01-10",
        "provision": root.0,
    })
}

pub fn consent(id: &str, status: &str, root: P) -> Arc<ConsentRecord> {
    let v = consent_json(id, status, root);
    Arc::new(parse_consent(&v).unwrap_or_else(|e| panic!("{e}: {v}")))
}

/// An active consent of `p1` with this root.
pub fn active(id: &str, root: P) -> Arc<ConsentRecord> {
    consent(id, "active", root)
}

pub fn patient_facts(consents: Vec<Arc<ConsentRecord>>) -> PatientFacts {
    PatientFacts {
        patient: "p1".into(),
        birth_date: BirthDate::parse("1980-05-05"),
        consents,
        care_team: vec!["dr-kim".into()],
        proxies: vec!["rp-mom".into()],
    }
}

fn ctx(principal: Principal, acting_for: Option<&str>, facts: Option<PatientFacts>) -> RequestContext {
    let mut c = RequestContext::new(principal, "test");
    c.now_ms = NOW;
    c.acting_for = acting_for.map(str::to_string);
    c.patient = facts.map(Arc::new);
    c
}

pub fn patient_ctx() -> RequestContext {
    ctx(Principal::Patient { patient: "p1".into() }, Some("p1"), None)
}

/// Mum, linked to p1 through RelatedPerson/rp-mom.
pub fn mum(facts: PatientFacts) -> RequestContext {
    ctx(Principal::Caregiver { user: "u-mum".into(), patients: vec!["p1".into()] }, Some("p1"), Some(facts))
}

/// A caregiver linked to p9 only, asking about p1 (facts not loaded: not linked).
pub fn stranger() -> RequestContext {
    ctx(Principal::Caregiver { user: "u-x".into(), patients: vec!["p9".into()] }, Some("p1"), None)
}

pub fn clinician(practitioner: &str, facts: PatientFacts) -> RequestContext {
    ctx(
        Principal::Clinician { user: format!("u-{practitioner}"), practitioner: practitioner.into() },
        Some("p1"),
        Some(facts),
    )
}

/// A resource in p1's compartment.
pub fn res(resource_type: &str, id: &str, category: &str, labels: &[&str]) -> ResourceFacts {
    let mut f = ResourceFacts::type_level(resource_type);
    f.id = Some(id.into());
    f.version = Some(1);
    f.compartments = vec!["p1".into()];
    f.category = category.into();
    f.labels = labels.iter().map(|s| s.to_string()).collect();
    f.date_ms = Some(NOW - 30 * DAY);
    f
}
