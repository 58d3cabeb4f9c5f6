//! Laboratory `Observation`s: a fixed panel of 13 LOINC tests drawn at every visit (~50 per
//! patient), with UCUM quantities, reference ranges and H/L/N interpretation computed from the
//! range. Each patient has a personal baseline per test, shifted by their conditions
//! (diabetes raises glucose and HbA1c, …), so trends look plausible.

use serde_json::{Value, json};

use crate::conditions::{Cond, Planned};
use crate::dates;
use crate::fhirjson::{coding, concept, decimal, quantity, reference, reference_display, rounded, sys};
use crate::patient::Demographics;
use crate::rng::{Rng, stream};
use crate::shared::{self, ids};
use crate::visits::Visit;

/// One test of the panel.
struct Lab {
    loinc: &'static str,
    display: &'static str,
    text: &'static str,
    unit: &'static str,
    places: usize,
    low: Option<f64>,
    high: Option<f64>,
    mean: f64,
    sd: f64,
    /// Ordered at every visit, or only at some.
    always: bool,
}

#[allow(clippy::too_many_arguments)]
const fn lab(
    loinc: &'static str,
    display: &'static str,
    text: &'static str,
    unit: &'static str,
    places: usize,
    range: (Option<f64>, Option<f64>),
    mean: f64,
    sd: f64,
    always: bool,
) -> Lab {
    Lab { loinc, display, text, unit, places, low: range.0, high: range.1, mean, sd, always }
}

#[rustfmt::skip]
const PANEL: [Lab; 13] = [
    lab("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "Glucose", "mg/dL", 0, (Some(70.0), Some(99.0)), 88.0, 7.0, true),
    lab("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "Hemoglobin A1c", "%", 1, (Some(4.0), Some(5.6)), 5.2, 0.3, true),
    lab("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "Creatinine", "mg/dL", 2, (Some(0.60), Some(1.20)), 0.90, 0.14, true),
    lab("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "Potassium", "mmol/L", 1, (Some(3.5), Some(5.1)), 4.2, 0.35, true),
    lab("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "Sodium", "mmol/L", 0, (Some(136.0), Some(145.0)), 140.0, 2.3, true),
    lab("718-7", "Hemoglobin [Mass/volume] in Blood", "Hemoglobin", "g/dL", 1, (Some(13.5), Some(17.5)), 15.2, 1.0, true),
    lab("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "White blood cell count", "10*3/uL", 1, (Some(4.5), Some(11.0)), 7.0, 1.5, true),
    lab("777-3", "Platelets [#/volume] in Blood by Automated count", "Platelet count", "10*3/uL", 0, (Some(150.0), Some(400.0)), 260.0, 50.0, true),
    lab("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "LDL cholesterol", "mg/dL", 0, (None, Some(99.0)), 90.0, 20.0, true),
    lab("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "HDL cholesterol", "mg/dL", 0, (Some(40.0), None), 52.0, 10.0, true),
    lab("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "Total cholesterol", "mg/dL", 0, (None, Some(199.0)), 180.0, 25.0, true),
    lab("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "TSH", "m[IU]/L", 2, (Some(0.40), Some(4.50)), 1.90, 0.70, false),
    lab("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "ALT", "U/L", 0, (Some(7.0), Some(56.0)), 24.0, 8.0, false),
];

/// Mean and reference range adjusted for the patient's sex and conditions.
fn personalise(lab: &Lab, d: &Demographics, has: &dyn Fn(Cond) -> bool) -> (f64, f64, Option<f64>, Option<f64>) {
    let (mut mean, mut sd, mut low, mut high) = (lab.mean, lab.sd, lab.low, lab.high);
    match lab.loinc {
        "718-7" if d.is_female() => (mean, low, high) = (13.4, Some(12.0), Some(15.5)),
        "2345-7" if has(Cond::Diabetes) => (mean, sd) = (148.0, 22.0),
        "4548-4" if has(Cond::Diabetes) => (mean, sd) = (7.6, 0.6),
        "2160-0" if has(Cond::Ckd) => (mean, sd) = (1.75, 0.2),
        "2160-0" if d.is_female() => (mean, low, high) = (0.78, Some(0.50), Some(1.10)),
        "18262-6" if has(Cond::Hyperlipidemia) => (mean, sd) = (158.0, 20.0),
        "2093-3" if has(Cond::Hyperlipidemia) => (mean, sd) = (238.0, 22.0),
        "3016-3" if has(Cond::Hypothyroidism) => (mean, sd) = (5.8, 1.4),
        "1742-6" if has(Cond::AlcoholUse) => (mean, sd) = (68.0, 15.0),
        _ => {}
    }
    (mean, sd, low, high)
}

/// v3 ObservationInterpretation for a value against a range.
fn interpretation(value: f64, low: Option<f64>, high: Option<f64>) -> (&'static str, &'static str) {
    match (low, high) {
        (Some(l), _) if value < l => ("L", "Low"),
        (_, Some(h)) if value > h => ("H", "High"),
        _ => ("N", "Normal"),
    }
}

/// The patient's laboratory Observations across all visits.
pub(crate) fn resources(
    seed: u64,
    index: usize,
    d: &Demographics,
    visits: &[Visit],
    conditions: &[Planned],
) -> Vec<Value> {
    let mut rng = Rng::derive(seed, stream::LABS, index as u64);
    let has = |k: Cond| conditions.iter().any(|c| c.def.key == k && c.active());
    let profiles: Vec<_> = PANEL
        .iter()
        .map(|lab| {
            let (mean, sd, low, high) = personalise(lab, d, &has);
            (lab, rng.normal(mean, sd * 0.8), sd, low, high)
        })
        .collect();
    let lab_org = shared::org(ids::ORG_LAB);
    let mut out = Vec::new();
    for v in visits {
        for (lab, baseline, sd, low, high) in &profiles {
            if !lab.always && !rng.chance(0.7) {
                continue;
            }
            let raw = rng.normal(*baseline, sd * 0.4).max(lab.mean * 0.2);
            let value = rounded(raw, lab.places);
            let (code, display) = interpretation(value, *low, *high);
            let mut range = serde_json::Map::new();
            if let Some(l) = low {
                range.insert("low".into(), quantity(*l, lab.places, lab.unit));
            }
            if let Some(h) = high {
                range.insert("high".into(), quantity(*h, lab.places, lab.unit));
            }
            out.push(json!({
                "resourceType": "Observation",
                "id": format!("{}-lab-{:04}", d.id, out.len() + 1),
                "status": "final",
                "category": [concept(sys::OBS_CATEGORY, "laboratory", "Laboratory")],
                "code": { "coding": [coding(sys::LOINC, lab.loinc, lab.display)], "text": lab.text },
                "subject": reference("Patient", &d.id),
                "encounter": reference("Encounter", &v.encounter),
                "effectiveDateTime": dates::date_time(v.day, v.minute + 10),
                "issued": dates::date_time(v.day, v.minute + 250),
                "performer": [reference_display("Organization", lab_org.id, lab_org.name)],
                "valueQuantity": { "value": decimal(value, lab.places), "unit": lab.unit, "system": sys::UCUM, "code": lab.unit },
                "interpretation": [concept(sys::V3_INTERPRETATION, code, display)],
                "referenceRange": [range],
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpretation_follows_range() {
        assert_eq!(interpretation(5.0, Some(4.0), Some(5.6)).0, "N");
        assert_eq!(interpretation(5.7, Some(4.0), Some(5.6)).0, "H");
        assert_eq!(interpretation(3.9, Some(4.0), Some(5.6)).0, "L");
        assert_eq!(interpretation(300.0, None, Some(199.0)).0, "H");
        assert_eq!(interpretation(30.0, Some(40.0), None).0, "L");
        assert_eq!(interpretation(5.6, Some(4.0), Some(5.6)).0, "N");
    }
}
