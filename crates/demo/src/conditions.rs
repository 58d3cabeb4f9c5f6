//! The condition catalog (SNOMED CT + ICD-10-CM), each patient's problem list, and the
//! `Condition` resources.
//!
//! Sensitive diagnoses are assigned on purpose: behavioral health (F32.9) to every tenth
//! patient from age 12 plus some others, alcohol use disorder (F10.20) to a few adults, and
//! HIV (B20) to one adult in fifty. Their `Condition` resources carry no security label —
//! a classifier must recognise them by code, as with real source data.

use serde_json::{Value, json};

use crate::fhirjson::{Sensitivity, coding, concept, reference, reference_display, status_concept, sys};
use crate::patient::Demographics;
use crate::rng::{Rng, stream};
use crate::shared::{self, ids};

/// Conditions the generator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cond {
    Hypertension,
    Diabetes,
    Hyperlipidemia,
    Hypothyroidism,
    Gerd,
    Osteoarthritis,
    Ckd,
    Afib,
    Asthma,
    Rhinitis,
    Migraine,
    OtitisMedia,
    Bronchitis,
    StrepThroat,
    AtopicDermatitis,
    Depression,
    AlcoholUse,
    Hiv,
}

/// One catalog entry.
pub(crate) struct CondDef {
    pub(crate) key: Cond,
    snomed: (&'static str, &'static str),
    icd10: (&'static str, &'static str),
    pub(crate) text: &'static str,
    min_age: i64,
    max_age: i64,
    /// A short episode that resolves (recorded with an abatement date).
    pub(crate) acute: bool,
    pub(crate) sensitivity: Option<Sensitivity>,
}

const fn def(
    key: Cond,
    snomed: (&'static str, &'static str),
    icd10: (&'static str, &'static str),
    text: &'static str,
    ages: (i64, i64),
    acute: bool,
) -> CondDef {
    CondDef { key, snomed, icd10, text, min_age: ages.0, max_age: ages.1, acute, sensitivity: None }
}

/// Everyday conditions, picked at random among those that fit the patient's age.
#[rustfmt::skip]
const GENERAL: [CondDef; 15] = [
    def(Cond::Hypertension, ("59621000", "Essential hypertension (disorder)"), ("I10", "Essential (primary) hypertension"), "Essential hypertension", (30, 120), false),
    def(Cond::Diabetes, ("44054006", "Diabetes mellitus type 2 (disorder)"), ("E11.9", "Type 2 diabetes mellitus without complications"), "Type 2 diabetes mellitus", (30, 120), false),
    def(Cond::Hyperlipidemia, ("55822004", "Hyperlipidemia (disorder)"), ("E78.5", "Hyperlipidemia, unspecified"), "Hyperlipidemia", (30, 120), false),
    def(Cond::Hypothyroidism, ("40930008", "Hypothyroidism (disorder)"), ("E03.9", "Hypothyroidism, unspecified"), "Hypothyroidism", (18, 120), false),
    def(Cond::Gerd, ("235595009", "Gastroesophageal reflux disease (disorder)"), ("K21.9", "Gastro-esophageal reflux disease without esophagitis"), "Gastroesophageal reflux disease", (18, 120), false),
    def(Cond::Osteoarthritis, ("239873007", "Osteoarthritis of knee (disorder)"), ("M17.9", "Osteoarthritis of knee, unspecified"), "Osteoarthritis of knee", (50, 120), false),
    def(Cond::Ckd, ("433144002", "Chronic kidney disease stage 3 (disorder)"), ("N18.30", "Chronic kidney disease, stage 3 unspecified"), "Chronic kidney disease stage 3", (55, 120), false),
    def(Cond::Afib, ("49436004", "Atrial fibrillation (disorder)"), ("I48.91", "Unspecified atrial fibrillation"), "Atrial fibrillation", (60, 120), false),
    def(Cond::Asthma, ("195967001", "Asthma (disorder)"), ("J45.909", "Unspecified asthma, uncomplicated"), "Asthma", (2, 120), false),
    def(Cond::Rhinitis, ("61582004", "Allergic rhinitis (disorder)"), ("J30.9", "Allergic rhinitis, unspecified"), "Allergic rhinitis", (2, 120), false),
    def(Cond::Migraine, ("37796009", "Migraine (disorder)"), ("G43.909", "Migraine, unspecified, not intractable, without status migrainosus"), "Migraine", (10, 120), false),
    def(Cond::OtitisMedia, ("65363002", "Otitis media (disorder)"), ("H66.90", "Otitis media, unspecified, unspecified ear"), "Otitis media", (0, 12), true),
    def(Cond::Bronchitis, ("10509002", "Acute bronchitis (disorder)"), ("J20.9", "Acute bronchitis, unspecified"), "Acute bronchitis", (0, 120), true),
    def(Cond::StrepThroat, ("43878008", "Streptococcal sore throat (disorder)"), ("J02.0", "Streptococcal pharyngitis"), "Streptococcal sore throat", (3, 40), true),
    def(Cond::AtopicDermatitis, ("24079001", "Atopic dermatitis (disorder)"), ("L20.9", "Atopic dermatitis, unspecified"), "Atopic dermatitis", (0, 30), false),
];

#[rustfmt::skip]
const DEPRESSION: CondDef = CondDef { sensitivity: Some(Sensitivity::Psy), ..def(Cond::Depression, ("370143000", "Major depressive disorder (disorder)"), ("F32.9", "Major depressive disorder, single episode, unspecified"), "Major depressive disorder", (12, 120), false) };
#[rustfmt::skip]
const ALCOHOL: CondDef = CondDef { sensitivity: Some(Sensitivity::Eth), ..def(Cond::AlcoholUse, ("7200002", "Alcoholism (disorder)"), ("F10.20", "Alcohol dependence, uncomplicated"), "Alcohol use disorder", (18, 120), false) };
#[rustfmt::skip]
const HIV: CondDef = CondDef { sensitivity: Some(Sensitivity::Hiv), ..def(Cond::Hiv, ("86406008", "Human immunodeficiency virus infection (disorder)"), ("B20", "Human immunodeficiency virus [HIV] disease"), "HIV infection", (18, 120), false) };

/// A condition on a patient's problem list.
#[derive(Clone)]
pub(crate) struct Planned {
    pub(crate) def: &'static CondDef,
    pub(crate) onset: i64,
    pub(crate) abatement: Option<i64>,
    /// `pt-00001-cond-01`.
    pub(crate) id: String,
}

impl Planned {
    /// Whether the condition is still active today.
    pub(crate) fn active(&self) -> bool {
        self.abatement.is_none()
    }
}

/// The patient's 3–5 conditions, general ones first, then sensitive ones.
pub(crate) fn plan(seed: u64, today: i64, index: usize, d: &Demographics) -> Vec<Planned> {
    let mut rng = Rng::derive(seed, stream::CLINICAL, index as u64);
    let age = d.age;
    let mut sensitive: Vec<&'static CondDef> = Vec::new();
    if age >= 12 && (index.is_multiple_of(10) || rng.chance(0.06)) {
        sensitive.push(&DEPRESSION);
    }
    if age >= 18 && (index % 25 == 4 || rng.chance(0.05)) {
        sensitive.push(&ALCOHOL);
    }
    if age >= 18 && index % 50 == 5 {
        sensitive.push(&HIV);
    }
    let target = rng.range_usize(3, 5).max(sensitive.len() + 1);
    let eligible: Vec<&'static CondDef> = GENERAL.iter().filter(|c| (c.min_age..=c.max_age).contains(&age)).collect();
    let mut chosen: Vec<&'static CondDef> = rng.shuffled(&eligible);
    chosen.truncate(target - sensitive.len());
    chosen.extend(sensitive);

    let age_days = today - d.birth;
    chosen
        .into_iter()
        .enumerate()
        .map(|(n, def)| {
            let id = format!("{}-cond-{:02}", d.id, n + 1);
            if def.acute {
                let back = rng.range(30, (age_days - 40).clamp(31, 1095));
                let onset = today - back;
                Planned { def, onset, abatement: Some(onset + rng.range(7, 21)), id }
            } else {
                let since_min_age = age_days - def.min_age * 365;
                let back = rng.range(60, since_min_age.clamp(61, 15 * 365));
                Planned { def, onset: today - back, abatement: None, id }
            }
        })
        .collect()
}

/// Who records a condition: the specialist for sensitive diagnoses, else the GP.
pub(crate) fn recorder(c: &Planned, d: &Demographics) -> &'static str {
    match c.def.key {
        Cond::Depression => ids::PR_PSYCHIATRY,
        Cond::AlcoholUse => ids::PR_ADDICTION,
        _ => d.gp,
    }
}

/// The `Condition` resource.
pub(crate) fn resource(c: &Planned, d: &Demographics) -> Value {
    let who = shared::clinician(recorder(c, d));
    let clinical = if c.active() { "active" } else { "resolved" };
    let category = if c.def.acute {
        ("encounter-diagnosis", "Encounter Diagnosis")
    } else {
        ("problem-list-item", "Problem List Item")
    };
    let mut r = json!({
        "resourceType": "Condition",
        "id": c.id,
        "clinicalStatus": status_concept("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical),
        "verificationStatus": status_concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"),
        "category": [concept("http://terminology.hl7.org/CodeSystem/condition-category", category.0, category.1)],
        "code": {
            "coding": [
                coding(sys::SNOMED, c.def.snomed.0, c.def.snomed.1),
                coding(sys::ICD10CM, c.def.icd10.0, c.def.icd10.1),
            ],
            "text": c.def.text,
        },
        "subject": reference("Patient", &d.id),
        "onsetDateTime": crate::dates::date(c.onset),
    });
    if let Some(end) = c.abatement {
        r["abatementDateTime"] = json!(crate::dates::date(end));
    }
    r["recordedDate"] = json!(crate::dates::date_time(c.onset + 1, 10 * 60));
    r["recorder"] = reference_display("Practitioner", who.id, &who.display());
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dates;
    use crate::patient::demographics;

    #[test]
    fn plans_fit_age_and_count() {
        let today = dates::today("2026-11-01");
        for i in 0..300 {
            let d = demographics(9, today, i);
            let p = plan(9, today, i, &d);
            assert!((3..=5).contains(&p.len()), "index {i}: {}", p.len());
            for c in &p {
                assert!(c.onset < today && c.onset > d.birth, "{} onset", c.id);
                assert!(c.abatement.is_none_or(|a| a < today && a > c.onset));
                assert!(d.age >= c.def.min_age);
            }
        }
    }
}
