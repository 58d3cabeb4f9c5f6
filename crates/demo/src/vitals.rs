//! Vital-sign `Observation`s at the three latest visits (15 per patient): blood pressure
//! panel with systolic/diastolic components, heart rate, body weight, body height and BMI.
//! Height follows a simple growth curve for children; BMI is computed from the rounded
//! weight and height, so the three always agree.

use serde_json::{Value, json};

use crate::conditions::{Cond, Planned};
use crate::dates;
use crate::fhirjson::{coding, concept, quantity, reference, rounded, sys};
use crate::patient::Demographics;
use crate::rng::{Rng, stream};
use crate::visits::Visit;

/// Visits (from the latest backwards) that record vital signs.
const VISITS_WITH_VITALS: usize = 3;

/// Height in cm at `years` of age for an average child of this sex.
fn growth_curve(years: f64, adult: f64) -> f64 {
    if years < 1.0 {
        50.0 + 25.0 * years
    } else if years < 12.0 {
        75.0 + 6.0 * (years - 1.0)
    } else if years < 17.0 {
        141.0 + (adult - 141.0) * (years - 12.0) / 5.0
    } else {
        adult
    }
}

fn observation(id: String, d: &Demographics, v: &Visit, loinc: (&str, &str), text: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "category": [concept(sys::OBS_CATEGORY, "vital-signs", "Vital Signs")],
        "code": { "coding": [coding(sys::LOINC, loinc.0, loinc.1)], "text": text },
        "subject": reference("Patient", &d.id),
        "encounter": reference("Encounter", &v.encounter),
        "effectiveDateTime": dates::date_time(v.day, v.minute + 5),
    })
}

/// The patient's vital-sign Observations.
pub(crate) fn resources(
    seed: u64,
    index: usize,
    d: &Demographics,
    visits: &[Visit],
    conditions: &[Planned],
) -> Vec<Value> {
    let mut rng = Rng::derive(seed, stream::VITALS, index as u64);
    let has = |k: Cond| conditions.iter().any(|c| c.def.key == k && c.active());
    let adult_height = if d.is_female() { rng.normal(163.0, 6.5) } else { rng.normal(177.0, 7.0) };
    let height_z = rng.normal(0.0, 1.0);
    let bmi_target = {
        let base = if d.age >= 18 { rng.normal(26.5, 3.5) } else { rng.normal(16.0 + 0.2 * d.age as f64, 1.2) };
        (base + if has(Cond::Diabetes) { 4.0 } else { 0.0 }).clamp(14.0, 42.0)
    };
    let systolic_base = if d.age >= 18 {
        rng.normal(117.0, 7.0) + 0.3 * (d.age - 40).max(0) as f64 + if has(Cond::Hypertension) { 16.0 } else { 0.0 }
    } else {
        rng.normal(98.0 + 0.9 * d.age as f64, 5.0)
    };
    let pulse_base = if d.age >= 12 { rng.normal(74.0, 7.0) } else { rng.normal(112.0 - 3.0 * d.age as f64, 6.0) };

    let mut out = Vec::new();
    let id = |out: &Vec<Value>| format!("{}-vs-{:04}", d.id, out.len() + 1);
    let skip = visits.len().saturating_sub(VISITS_WITH_VITALS);
    for v in visits.iter().skip(skip) {
        let years = (v.day - d.birth) as f64 / 365.25;
        let shrink = if years > 70.0 { 2.0 } else { 0.0 };
        let height = rounded(growth_curve(years, adult_height) * (1.0 + 0.035 * height_z) - shrink, 1);
        let metres = height / 100.0;
        let jitter = if d.age >= 18 { 1.2 } else { 0.3 };
        let weight = rounded((bmi_target * metres * metres + rng.normal(0.0, jitter)).max(3.0), 1);
        let bmi = weight / (metres * metres);
        let systolic = rounded(rng.normal(systolic_base, 5.0), 0);
        let diastolic = rounded(systolic * 0.62 + rng.normal(0.0, 4.0), 0);

        let mut bp = observation(
            id(&out),
            d,
            v,
            ("85354-9", "Blood pressure panel with all children optional"),
            "Blood pressure",
        );
        bp["component"] = json!([
            { "code": { "coding": [coding(sys::LOINC, "8480-6", "Systolic blood pressure")], "text": "Systolic" }, "valueQuantity": quantity(systolic, 0, "mm[Hg]") },
            { "code": { "coding": [coding(sys::LOINC, "8462-4", "Diastolic blood pressure")], "text": "Diastolic" }, "valueQuantity": quantity(diastolic, 0, "mm[Hg]") },
        ]);
        out.push(bp);
        let singles = [
            (("8867-4", "Heart rate"), "Heart rate", rng.normal(pulse_base, 5.0), 0, "/min"),
            (("29463-7", "Body weight"), "Body weight", weight, 1, "kg"),
            (("8302-2", "Body height"), "Body height", height, 1, "cm"),
            (("39156-5", "Body mass index (BMI) [Ratio]"), "BMI", bmi, 1, "kg/m2"),
        ];
        for (loinc, text, value, places, unit) in singles {
            let mut o = observation(id(&out), d, v, loinc, text);
            o["valueQuantity"] = quantity(value, places, unit);
            out.push(o);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_monotonic() {
        let mut last = 0.0;
        for month in 0..(20 * 12) {
            let h = growth_curve(f64::from(month) / 12.0, 170.0);
            assert!(h >= last);
            last = h;
        }
        assert!((growth_curve(30.0, 170.0) - 170.0).abs() < 1e-9);
    }
}
