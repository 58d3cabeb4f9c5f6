//! "What was permitted at time T": the patient's consents as they stood at T, rebuilt from
//! the consent event log (the last event of each consent at or before T names its version,
//! read from the Consent's history through the gate), and the real engine run with
//! `now_ms = T` for a recipient and one record of each data category.
//!
//! The answer covers what *consents* permitted: care relationships (care teams, encounters)
//! are not part of the event log and are not rebuilt, and age-based operator rules are not
//! applied (the patient's birth date is not read). Each category is judged on a record
//! dated 90 days before T, so a results hold on brand-new results does not hide the
//! consent's effect.

use crate::server::AppState;
use crate::server::error::ApiError;
use crate::server::fhir::service::refusal;
use portico_policy::consent::{ConsentRecord, normalise_reference, parse_consent};
use portico_policy::engine::evaluate_with;
use portico_policy::explain::{Audience, decision};
use portico_policy::{Action, PatientFacts, Principal, RequestContext, ResourceFacts};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How old the hypothetical record of each category is at T.
const RECORD_AGE_MS: i64 = 90 * 24 * 3600 * 1000;

/// A resource type that holds each category's records (the engine matches consent classes
/// by category, so any of the category's types answers the same).
const CATEGORY_TYPES: &[(&str, &str)] = &[
    ("labs", "Observation"),
    ("vitals", "Observation"),
    ("imaging", "DiagnosticReport"),
    ("notes", "DocumentReference"),
    ("medications", "MedicationRequest"),
    ("conditions", "Condition"),
    ("allergies", "AllergyIntolerance"),
    ("immunizations", "Immunization"),
    ("procedures", "Procedure"),
    ("encounters", "Encounter"),
    ("insurance", "Coverage"),
    ("documents", "DocumentReference"),
    ("demographics", "Patient"),
    ("care-plans", "CarePlan"),
    ("administrative", "Appointment"),
    ("other", "Basic"),
];

/// The consents of `patient` in force as of `at_ms` (every status: the engine filters),
/// read through the gate as `ctx`.
pub async fn consents_at(
    state: &AppState,
    ctx: &RequestContext,
    patient: &str,
    at_ms: i64,
) -> Result<Vec<Arc<ConsentRecord>>, ApiError> {
    let events = state.consents.consent_events(patient, at_ms).await?;
    let mut last: BTreeMap<String, (i64, bool)> = BTreeMap::new();
    for e in events {
        // Deleted, or moved to another patient by then: not this patient's consent at T.
        let gone = e.kind == "delete" || e.patient != patient;
        last.insert(e.consent_id.clone(), (e.version, gone));
    }
    let mut out = Vec::new();
    for (id, (version, gone)) in last {
        if gone {
            continue;
        }
        let Some(sealed) = state.store.vread("Consent", &id, version).await? else { continue };
        let d = state.gate.decide(ctx, Action::VRead, sealed.facts()).map_err(|r| refusal(r, true))?;
        let v = sealed.open(&d).map_err(|_| ApiError::not_found("No such patient."))?;
        let body: Value = serde_json::from_str(&v.body).map_err(|_| ApiError::internal())?;
        // A stored consent always parsed when it was written.
        match parse_consent(&body) {
            Ok(c) => out.push(Arc::new(c)),
            Err(e) => tracing::warn!(consent = %id, version, error = %e, "a stored consent no longer parses"),
        }
    }
    Ok(out)
}

/// The answer for `recipient` (`Practitioner/x` or `RelatedPerson/x`) at `at_ms` for the
/// purpose `purpose`, per data category.
pub async fn permitted(
    state: &AppState,
    ctx: &RequestContext,
    patient: &str,
    recipient: &str,
    at_ms: i64,
    purpose: &str,
) -> Result<Value, ApiError> {
    let Some((rt, rid)) = normalise_reference(recipient) else {
        return Err(ApiError::bad_request("recipient must be Practitioner/<id> or RelatedPerson/<id>."));
    };
    let consents = consents_at(state, ctx, patient, at_ms).await?;
    let (principal, proxies) = match rt.as_str() {
        "Practitioner" => (Principal::Clinician { user: String::new(), practitioner: rid.clone() }, Vec::new()),
        "RelatedPerson" => {
            (Principal::Caregiver { user: String::new(), patients: vec![patient.to_string()] }, vec![rid.clone()])
        }
        _ => return Err(ApiError::bad_request("recipient must be Practitioner/<id> or RelatedPerson/<id>.")),
    };
    let name = consents
        .iter()
        .flat_map(|c| actors(&c.root))
        .find(|a| a.reference == format!("{rt}/{rid}"))
        .and_then(|a| a.display.clone())
        .unwrap_or_else(|| format!("{rt}/{rid}"));
    // A hypothetical request: its own audit scope, which is dropped (nobody accessed anything).
    let mut who = RequestContext::new(principal, format!("{}-permitted", ctx.request_id));
    who.acting_for = Some(patient.to_string());
    who.now_ms = at_ms;
    who.purpose = Some(purpose.to_string());
    who.patient = Some(Arc::new(PatientFacts {
        patient: patient.to_string(),
        birth_date: None,
        consents: consents.clone(),
        care_team: Vec::new(),
        proxies,
    }));
    let rules = state.gate.rules();
    let categories: Vec<Value> = CATEGORY_TYPES
        .iter()
        .map(|(category, rt)| {
            let facts = ResourceFacts {
                resource_type: rt.to_string(),
                id: Some("example".into()),
                version: Some(1),
                compartments: vec![patient.to_string()],
                category: category.to_string(),
                labels: Vec::new(),
                category_codes: Vec::new(),
                date_ms: Some(at_ms - RECORD_AGE_MS),
                author: None,
            };
            let v = evaluate_with(&who, rules, Action::Read, &facts);
            json!({
                "category": category,
                "decision": if v.is_permit() { "permit" } else { "deny" },
                "rule": v.rule,
                "reason": decision(&v, &facts, rules, Audience::Account(&name)),
                "consents": v.consents,
            })
        })
        .collect();
    Ok(json!({
        "patient": patient,
        "recipient": format!("{rt}/{rid}"),
        "at": portico_fhir::datetime::format_instant(at_ms),
        "purpose": purpose,
        "consents": consents.iter().map(|c| json!({
            "id": c.id,
            "version": c.version,
            "status": c.status.as_str(),
        })).collect::<Vec<_>>(),
        "categories": categories,
    }))
}

fn actors(p: &portico_policy::consent::Provision) -> Vec<&portico_policy::consent::ConsentActor> {
    let mut out: Vec<_> = p.actors.iter().collect();
    for c in &p.provisions {
        out.extend(actors(c));
    }
    out
}
