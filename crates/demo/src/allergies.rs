//! `AllergyIntolerance`s: 0–3 per patient from a small catalog of drug, food and
//! environmental allergies (RxNorm ingredient or SNOMED CT substance codes).

use serde_json::{Value, json};

use crate::dates;
use crate::fhirjson::{coding, concept, reference, reference_display, status_concept, sys};
use crate::patient::Demographics;
use crate::rng::{Rng, stream};
use crate::shared;

/// One catalog entry: substance, category, criticality, typical reaction.
struct Allergen {
    system: &'static str,
    code: &'static str,
    display: &'static str,
    category: &'static str,
    criticality: &'static str,
    reaction: (&'static str, &'static str),
    severity: &'static str,
}

const fn allergen(
    system: &'static str,
    code: &'static str,
    display: &'static str,
    category: &'static str,
    criticality: &'static str,
    reaction: (&'static str, &'static str),
    severity: &'static str,
) -> Allergen {
    Allergen { system, code, display, category, criticality, reaction, severity }
}

const RASH: (&str, &str) = ("271807003", "Eruption of skin (disorder)");
const ANAPHYLAXIS: (&str, &str) = ("39579001", "Anaphylaxis (disorder)");
const SNEEZING: (&str, &str) = ("76067001", "Sneezing (finding)");

#[rustfmt::skip]
const CATALOG: [Allergen; 10] = [
    allergen(sys::RXNORM, "7984", "Penicillin V", "medication", "high", RASH, "moderate"),
    allergen(sys::RXNORM, "10831", "Sulfamethoxazole / Trimethoprim", "medication", "low", RASH, "mild"),
    allergen(sys::RXNORM, "1191", "Aspirin", "medication", "low", RASH, "mild"),
    allergen(sys::SNOMED, "762952008", "Peanut (substance)", "food", "high", ANAPHYLAXIS, "severe"),
    allergen(sys::SNOMED, "102263004", "Eggs (edible) (substance)", "food", "low", RASH, "mild"),
    allergen(sys::SNOMED, "735029006", "Shellfish (substance)", "food", "high", ANAPHYLAXIS, "severe"),
    allergen(sys::SNOMED, "111088007", "Latex (substance)", "environment", "low", RASH, "moderate"),
    allergen(sys::SNOMED, "256277009", "Grass pollen (substance)", "environment", "low", SNEEZING, "mild"),
    allergen(sys::SNOMED, "264287008", "Animal dander (substance)", "environment", "low", SNEEZING, "mild"),
    allergen(sys::SNOMED, "260147004", "House dust mite (organism)", "environment", "low", SNEEZING, "mild"),
];

/// The patient's allergies (0–3; about a third of patients have none).
pub(crate) fn resources(seed: u64, today: i64, index: usize, d: &Demographics) -> Vec<Value> {
    let mut rng = Rng::derive(seed, stream::CLINICAL, (index as u64) | (2 << 40));
    let roll = rng.unit();
    let count = if roll < 0.35 {
        0
    } else if roll < 0.70 {
        1
    } else if roll < 0.90 {
        2
    } else {
        3
    };
    let gp = shared::clinician(d.gp);
    let picked = rng.shuffled(&(0..CATALOG.len()).collect::<Vec<_>>());
    picked
        .iter()
        .take(count)
        .filter_map(|&i| CATALOG.get(i))
        .enumerate()
        .map(|(n, a)| {
            let recorded = today - rng.range(30, (today - d.birth - 10).clamp(31, 3000));
            json!({
                "resourceType": "AllergyIntolerance",
                "id": format!("{}-alg-{:02}", d.id, n + 1),
                "clinicalStatus": status_concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"),
                "verificationStatus": status_concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed"),
                "type": "allergy",
                "category": [a.category],
                "criticality": a.criticality,
                "code": { "coding": [coding(a.system, a.code, a.display)], "text": a.display },
                "patient": reference("Patient", &d.id),
                "recordedDate": dates::date_time(recorded, 10 * 60 + 45),
                "recorder": reference_display("Practitioner", gp.id, &gp.display()),
                "reaction": [{
                    "manifestation": [concept(sys::SNOMED, a.reaction.0, a.reaction.1)],
                    "severity": a.severity,
                }],
            })
        })
        .collect()
}
