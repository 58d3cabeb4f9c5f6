//! The gate's input about one patient ([`PatientFacts`]): birth date, consents, care
//! relationships and the requester's RelatedPerson links.
//!
//! **Not a clinical read through the gate, on purpose.** These rows are what the gate
//! decides *with*: they cannot be read through the gate, which needs them first. Nothing read
//! here reaches a caller — the facts go into the `RequestContext` only, and every resource
//! the request returns is still decided on and confined by the gate. Keep it that way: do
//! not hand these bodies to a handler.
//!
//! Read fresh on every request (no cross-request cache), so a consent revoked or a
//! CareTeam changed bites on the very next request in every server process. Cost: two short
//! queries (the Patient by primary key with the patient's Consents through their
//! compartment list; then the caregiver's RelatedPerson links, or the clinician's care
//! relationships from the compartment list) — measured with `examples/facts_bench.rs`.
//!
//! **Care relationships** (chosen because they are cheap — one index lookup — and current):
//! the `Practitioner` members of the patient's CareTeams whose status is not `inactive` or
//! `entered-in-error`, and the `Practitioner` participants of the patient's Encounters that
//! are under way (`planned`, `arrived`, `triaged`, `in-progress`, `onleave`). A finished
//! Encounter does not make a lasting care relationship; a PractitionerRole member
//! (`CareTeam.participant.member` = `PractitionerRole/…`) is not resolved to its
//! practitioner (not built).

use crate::backend::{SqlStore, with_pool};
use crate::error::StoreError;
use portico_policy::{BirthDate, PatientFacts, parse_consent};
use serde_json::Value;
use sqlx::Row;
use std::sync::Arc;

/// Which facts beyond the birth date and consents a request needs.
#[derive(Debug, Clone, Default)]
pub struct FactsWanted {
    /// Load `care_team` (clinicians).
    pub care_team: bool,
    /// RelatedPerson ids (no prefix) through which the requesting user says they are linked to
    /// the patient (caregivers: their `PatientLink::via`); only those whose stored
    /// RelatedPerson names this patient and is not `active = false` become `proxies`.
    pub claimed_proxies: Vec<String>,
}

/// Encounter states that make a current care relationship.
const ENCOUNTER_UNDER_WAY: &str = "'planned', 'arrived', 'triaged', 'in-progress', 'onleave'";

impl SqlStore {
    pub(crate) async fn load_patient_facts(
        &self,
        patient: &str,
        wanted: &FactsWanted,
    ) -> Result<PatientFacts, StoreError> {
        let mut facts = PatientFacts { patient: patient.to_string(), ..PatientFacts::default() };
        with_pool!(&self.db, pool => {
            // The Patient and its Consents in one round trip.
            let rows = sqlx::query(
                "SELECT r.res_type, r.id, r.body FROM resources r WHERE r.res_type = 'Patient' AND r.id = $1 AND r.deleted = 0 \
                 UNION ALL SELECT r.res_type, r.id, r.body FROM resources r WHERE r.res_type = 'Consent' AND r.deleted = 0 \
                 AND r.id IN (SELECT c.id FROM idx_compartment c WHERE c.patient = $1 AND c.res_type = 'Consent')",
            )
            .bind(patient.to_string())
            .fetch_all(pool)
            .await?;
            for row in rows {
                let body: String = row.try_get("body")?;
                let Ok(v) = serde_json::from_str::<Value>(&body) else { continue };
                if row.try_get::<String, _>("res_type")? == "Patient" {
                    facts.birth_date = v.get("birthDate").and_then(Value::as_str).and_then(BirthDate::parse);
                    continue;
                }
                match parse_consent(&v) {
                    Ok(c) => facts.consents.push(Arc::new(c)),
                    // Stored but not enforceable (the consent API refuses these on write):
                    // it permits nothing. Logged without PHI.
                    Err(e) => {
                        let id: String = row.try_get("id")?;
                        tracing::warn!(consent = %id, path = %e.path, "stored Consent ignored: not enforceable");
                    }
                }
            }
            facts.consents.sort_by(|a, b| a.id.cmp(&b.id));
            if wanted.care_team {
                // Driven from the patient's compartment list; `(x.ref_type || '')` keeps the
                // planner off the index of every reference to any Practitioner.
                let sql = format!(
                    "SELECT DISTINCT x.ref_id FROM idx_compartment c JOIN idx_reference x ON x.res_type = c.res_type \
                     AND x.id = c.id WHERE c.patient = $1 AND c.res_type IN ('CareTeam', 'Encounter') \
                     AND x.param = 'participant' AND (x.ref_type || '') = 'Practitioner' AND x.ref_id IS NOT NULL \
                     AND ((c.res_type = 'CareTeam' AND NOT EXISTS (SELECT 1 FROM idx_token t WHERE t.res_type = c.res_type \
                       AND t.id = c.id AND t.param = 'status' AND t.code IN ('inactive', 'entered-in-error'))) \
                     OR (c.res_type = 'Encounter' AND EXISTS (SELECT 1 FROM idx_token t WHERE t.res_type = c.res_type \
                       AND t.id = c.id AND t.param = 'status' AND t.code IN ({ENCOUNTER_UNDER_WAY})))) ORDER BY x.ref_id"
                );
                facts.care_team = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(patient.to_string())
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| r.try_get::<String, _>("ref_id"))
                    .collect::<Result<_, _>>()?;
            }
            for rp in &wanted.claimed_proxies {
                let linked = sqlx::query(
                    "SELECT 1 AS one FROM idx_reference x WHERE x.res_type = 'RelatedPerson' AND x.id = $1 \
                     AND x.param = 'patient' AND x.ref_type = 'Patient' AND x.ref_id = $2 \
                     AND NOT EXISTS (SELECT 1 FROM idx_token t WHERE t.res_type = 'RelatedPerson' AND t.id = x.id \
                     AND t.param = 'active' AND t.code = 'false')",
                )
                .bind(rp.clone())
                .bind(patient.to_string())
                .fetch_optional(pool)
                .await?
                .is_some();
                if linked && !facts.proxies.contains(rp) {
                    facts.proxies.push(rp.clone());
                }
            }
        });
        Ok(facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::search::testdb::{self, put};
    use serde_json::json;

    #[tokio::test]
    async fn facts_of_one_patient_only() {
        for store in testdb::stores().await {
            put(&store, json!({"resourceType": "Patient", "id": "p1", "birthDate": "2011-04-02"})).await;
            put(&store, json!({"resourceType": "Patient", "id": "p2"})).await;
            put(&store, json!({"resourceType": "RelatedPerson", "id": "rp1", "patient": {"reference": "Patient/p1"}}))
                .await;
            put(&store, json!({"resourceType": "RelatedPerson", "id": "rp2", "patient": {"reference": "Patient/p2"}}))
                .await;
            put(
                &store,
                json!({"resourceType": "RelatedPerson", "id": "rp3", "active": false, "patient": {"reference": "Patient/p1"}}),
            )
            .await;
            let team = |id: &str, patient: &str, status: &str, member: &str| {
                json!({"resourceType": "CareTeam", "id": id, "status": status, "subject": {"reference": format!("Patient/{patient}")},
                    "participant": [{"member": {"reference": member}}]})
            };
            put(&store, team("t1", "p1", "active", "Practitioner/d1")).await;
            put(&store, team("t2", "p1", "inactive", "Practitioner/d2")).await;
            put(&store, team("t3", "p2", "active", "Practitioner/d3")).await;
            put(&store, team("t4", "p1", "active", "RelatedPerson/rp1")).await;
            let enc = |id: &str, status: &str, who: &str| {
                json!({"resourceType": "Encounter", "id": id, "status": status, "class": {"code": "AMB"},
                    "subject": {"reference": "Patient/p1"}, "participant": [{"individual": {"reference": who}}]})
            };
            put(&store, enc("e1", "in-progress", "Practitioner/d4")).await;
            put(&store, enc("e2", "finished", "Practitioner/d5")).await;
            let consent = |id: &str, patient: &str, status: &str| {
                json!({"resourceType": "Consent", "id": id, "status": status,
                    "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                    "patient": {"reference": format!("Patient/{patient}")},
                    "provision": {"type": "permit", "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PRN"}]},
                        "reference": {"reference": "RelatedPerson/rp1"}}]}})
            };
            put(&store, consent("c1", "p1", "active")).await;
            put(&store, consent("c2", "p1", "inactive")).await;
            put(&store, consent("c3", "p2", "active")).await;

            let wanted = FactsWanted {
                care_team: true,
                claimed_proxies: vec!["rp1".into(), "rp2".into(), "rp3".into(), "nobody".into()],
            };
            let f = store.load_patient_facts("p1", &wanted).await.unwrap();
            assert_eq!(f.patient, "p1");
            assert_eq!(f.birth_date, BirthDate::parse("2011-04-02"));
            let ids: Vec<&str> = f.consents.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids, ["c1", "c2"], "every consent of the patient, any status; {}", store.backend_name());
            assert_eq!(f.care_team, ["d1", "d4"]);
            assert_eq!(f.proxies, ["rp1"], "only the claimed RelatedPerson that names this patient and is active");

            let none = store.load_patient_facts("p9", &FactsWanted::default()).await.unwrap();
            assert_eq!(none, PatientFacts { patient: "p9".into(), ..PatientFacts::default() });
            let plain = store.load_patient_facts("p1", &FactsWanted::default()).await.unwrap();
            assert!(plain.care_team.is_empty() && plain.proxies.is_empty());
        }
    }
}
