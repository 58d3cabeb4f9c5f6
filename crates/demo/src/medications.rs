//! `MedicationRequest`s (RxNorm): one per treated condition, topped up with everyday
//! prescriptions to 3–5 per patient. Medications for sensitive conditions (sertraline,
//! naltrexone, antiretrovirals) reveal the diagnosis too, so they point at it through
//! `reasonReference`.

use serde_json::{Value, json};

use crate::conditions::{Cond, Planned, recorder};
use crate::dates;
use crate::fhirjson::{coding, concept, reference, reference_display, sys};
use crate::patient::Demographics;
use crate::rng::{Rng, stream};
use crate::shared;

/// An RxNorm clinical drug with its usual sig.
struct Drug {
    rxnorm: &'static str,
    display: &'static str,
    sig: &'static str,
}

const fn drug(rxnorm: &'static str, display: &'static str, sig: &'static str) -> Drug {
    Drug { rxnorm, display, sig }
}

/// The treatment for a condition, if it has one.
#[rustfmt::skip]
fn treatment(c: Cond) -> Option<Drug> {
    Some(match c {
        Cond::Hypertension => drug("314076", "lisinopril 10 MG Oral Tablet", "Take 1 tablet by mouth once daily."),
        Cond::Diabetes => drug("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", "Take 1 tablet by mouth once daily with the evening meal."),
        Cond::Hyperlipidemia => drug("312961", "simvastatin 20 MG Oral Tablet", "Take 1 tablet by mouth every evening."),
        Cond::Hypothyroidism => drug("966222", "levothyroxine sodium 0.075 MG Oral Tablet", "Take 1 tablet by mouth every morning on an empty stomach."),
        Cond::Gerd => drug("198051", "omeprazole 20 MG Delayed Release Oral Capsule", "Take 1 capsule by mouth daily before breakfast."),
        Cond::Osteoarthritis => drug("313782", "Acetaminophen 325 MG Oral Tablet", "Take 2 tablets by mouth every 6 hours as needed for knee pain. Do not exceed 3 g per day."),
        Cond::Ckd => drug("979485", "losartan potassium 25 MG Oral Tablet", "Take 1 tablet by mouth once daily."),
        Cond::Afib => drug("855332", "Warfarin Sodium 5 MG Oral Tablet", "Take 1 tablet by mouth daily or as directed by the anticoagulation clinic."),
        Cond::Asthma => drug("630208", "albuterol 0.83 MG/ML Inhalation Solution", "Inhale 3 mL by nebulizer every 4 to 6 hours as needed for wheezing."),
        Cond::Rhinitis => drug("665078", "Loratadine 5 MG Chewable Tablet", "Chew 1 tablet once daily during allergy season."),
        Cond::Migraine => drug("313161", "sumatriptan 50 MG Oral Tablet", "Take 1 tablet at onset of migraine; may repeat once after 2 hours."),
        Cond::OtitisMedia => drug("308182", "Amoxicillin 250 MG Oral Capsule", "Take 1 capsule by mouth three times daily for 10 days."),
        Cond::Bronchitis => drug("308460", "Azithromycin 250 MG Oral Tablet", "Take 2 tablets on day 1, then 1 tablet daily on days 2 to 5."),
        Cond::StrepThroat => drug("834061", "Penicillin V Potassium 250 MG Oral Tablet", "Take 1 tablet by mouth twice daily for 10 days."),
        Cond::AtopicDermatitis => drug("861495", "clobetasol propionate 0.5 MG/ML Topical Cream", "Apply a thin layer to affected skin twice daily for up to 2 weeks."),
        Cond::Depression => drug("312938", "Sertraline 100 MG Oral Tablet", "Take 1 tablet by mouth once daily."),
        Cond::AlcoholUse => drug("1483744", "naltrexone hydrochloride 50 MG Oral Tablet", "Take 1 tablet by mouth once daily."),
        Cond::Hiv => drug("1999667", "bictegravir 50 MG / emtricitabine 200 MG / tenofovir alafenamide 25 MG Oral Tablet", "Take 1 tablet by mouth once daily with or without food."),
    })
}

/// Everyday prescriptions used to top the list up; all finished (`stopped`).
#[rustfmt::skip]
const ADULT_EXTRAS: [Drug; 4] = [
    drug("206905", "Ibuprofen 400 MG Oral Tablet [Ibu]", "Take 1 tablet by mouth every 8 hours as needed for pain, with food."),
    drug("308192", "amoxicillin 500 MG Oral Tablet", "Take 1 tablet by mouth three times daily for 7 days."),
    drug("310325", "ferrous sulfate 325 MG Oral Tablet", "Take 1 tablet by mouth daily for 3 months."),
    drug("243670", "aspirin 81 MG Oral Tablet", "Take 1 tablet by mouth once daily."),
];
#[rustfmt::skip]
const CHILD_EXTRAS: [Drug; 3] = [
    drug("313820", "Acetaminophen 160 MG Chewable Tablet", "Chew 1 tablet every 6 hours as needed for fever."),
    drug("198405", "Ibuprofen 100 MG Oral Tablet", "Take 1 tablet by mouth every 8 hours as needed for pain or fever."),
    drug("308182", "Amoxicillin 250 MG Oral Capsule", "Take 1 capsule by mouth three times daily for 10 days."),
];

/// The patient's 3–5 `MedicationRequest`s.
pub(crate) fn resources(seed: u64, today: i64, index: usize, d: &Demographics, conditions: &[Planned]) -> Vec<Value> {
    let mut rng = Rng::derive(seed, stream::CLINICAL, (index as u64) | (1 << 40));
    let target = rng.range_usize(3, 5);
    let mut out = Vec::new();
    for c in conditions {
        let Some(drug) = treatment(c.def.key) else {
            continue;
        };
        let stopped = c.abatement;
        let authored = c.onset + rng.range(0, 14);
        out.push(request(d, out.len(), &drug, authored, stopped, recorder(c, d), Some(&c.id)));
    }
    let extras: &[Drug] = if d.age < 12 { &CHILD_EXTRAS } else { &ADULT_EXTRAS };
    let used: Vec<String> = out
        .iter()
        .filter_map(|m| m["medicationCodeableConcept"]["coding"][0]["code"].as_str())
        .map(str::to_owned)
        .collect();
    let start = rng.below(extras.len() as u64) as usize;
    for k in 0..extras.len() {
        if out.len() >= target {
            break;
        }
        let Some(drug) = extras.get((start + k) % extras.len()) else {
            continue;
        };
        if used.iter().any(|u| *u == drug.rxnorm) {
            continue;
        }
        let back = rng.range(40, (today - d.birth - 30).clamp(41, 1000));
        let authored = today - back;
        out.push(request(d, out.len(), drug, authored, Some(authored + 30), d.gp, None));
    }
    out
}

fn request(
    d: &Demographics,
    n: usize,
    drug: &Drug,
    authored: i64,
    stopped: Option<i64>,
    requester: &str,
    reason: Option<&str>,
) -> Value {
    let who = shared::clinician(requester);
    let mut r = json!({
        "resourceType": "MedicationRequest",
        "id": format!("{}-med-{:02}", d.id, n + 1),
        "status": if stopped.is_some() { "stopped" } else { "active" },
        "intent": "order",
        "category": [concept("http://terminology.hl7.org/CodeSystem/medicationrequest-category", "community", "Community")],
        "medicationCodeableConcept": { "coding": [coding(sys::RXNORM, drug.rxnorm, drug.display)], "text": drug.display },
        "subject": reference("Patient", &d.id),
        "authoredOn": dates::date_time(authored, 11 * 60 + 15),
        "requester": reference_display("Practitioner", who.id, &who.display()),
    });
    if let Some(reason) = reason {
        r["reasonReference"] = json!([reference("Condition", reason)]);
    }
    r["dosageInstruction"] = json!([{ "sequence": 1, "text": drug.sig }]);
    if let Some(end) = stopped {
        r["dispenseRequest"] =
            json!({ "validityPeriod": { "start": dates::date(authored), "end": dates::date(end.max(authored)) } });
    }
    r
}
