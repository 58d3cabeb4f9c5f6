//! `Immunization`s (CVX): recent seasonal influenza and COVID-19 doses given at the family
//! practice, plus age-appropriate earlier vaccines (childhood series, Td/Tdap, zoster,
//! pneumococcal) recorded from written records; 5–10 per patient.

use serde_json::{Value, json};

use crate::dates;
use crate::fhirjson::{coding, concept, reference, reference_display, sys};
use crate::patient::Demographics;
use crate::rng::{Rng, stream};
use crate::shared::{self, ids};

const FLU: (&str, &str) = ("140", "Influenza, seasonal, injectable, preservative free");
const COVID: (&str, &str) =
    ("208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose");

/// Routine schedule by age in months.
const CHILDHOOD: [(i64, &str, &str); 14] = [
    (0, "08", "Hep B, adolescent or pediatric"),
    (2, "20", "DTaP"),
    (2, "10", "IPV"),
    (2, "49", "Hib (PRP-OMP)"),
    (2, "133", "Pneumococcal conjugate PCV 13"),
    (4, "20", "DTaP"),
    (12, "03", "MMR"),
    (12, "21", "varicella"),
    (12, "83", "Hep A, ped/adol, 2 dose"),
    (48, "03", "MMR"),
    (48, "21", "varicella"),
    (132, "115", "Tdap"),
    (132, "62", "HPV, quadrivalent"),
    (132, "114", "meningococcal MCV4P"),
];

/// A dose: day, CVX code, display, and whether it was given here recently.
type Dose = (i64, &'static str, &'static str, bool);

/// Candidate doses: `(recent, earlier, spare)`. Recent doses are always kept; earlier ones
/// (most recent first) fill up to the target; spare older flu seasons top up when too few.
fn candidates(rng: &mut Rng, today: i64, d: &Demographics) -> (Vec<Dose>, Vec<Dose>, Vec<Dose>) {
    let (year, _, _) = dates::civil_from_days(today);
    let (mut recent, mut spare) = (Vec::new(), Vec::new());
    for season in 0..5 {
        let day = dates::to_weekday(dates::days_from_civil(year - season, 10, 1) + rng.range(0, 40));
        if day >= today - 1 || day <= d.birth + 180 {
            continue;
        }
        let dose = (day, FLU.0, FLU.1, true);
        if recent.is_empty() || (season < 3 && rng.chance(0.8)) {
            recent.push(dose);
        } else {
            spare.push(dose);
        }
    }
    if d.age >= 12 && rng.chance(0.6) {
        recent.push((dates::to_weekday(today - rng.range(60, 900)), COVID.0, COVID.1, true));
    }
    // Childhood series only for patients young enough to have had today's schedule.
    let schedule_since = today - 25 * 365;
    let mut earlier: Vec<Dose> = CHILDHOOD
        .iter()
        .map(|&(months, code, display)| (d.birth + months * 30 + rng.range(0, 20), code, display, false))
        .filter(|dose| dose.0 > schedule_since)
        .collect();
    let at_age = |years: i64, spread: i64, rng: &mut Rng| dates::years_before(d.birth, -years) + rng.range(0, spread);
    if d.age >= 19 {
        earlier.push((
            today - rng.range(200, 3000),
            "113",
            "Td (adult), 5 Lf tetanus toxoid, preservative free, adsorbed",
            false,
        ));
        earlier.push((at_age(25, 3000, rng).min(today - 90), "43", "Hep B, adult", false));
    }
    if d.age >= 61 {
        earlier.push((at_age(60, 300, rng), "121", "zoster vaccine, live", false));
    }
    if d.age >= 66 {
        earlier.push((at_age(65, 200, rng), "133", "Pneumococcal conjugate PCV 13", false));
        earlier.push((at_age(65, 200, rng) + 365, "33", "pneumococcal polysaccharide vaccine, 23 valent", false));
    }
    earlier.retain(|dose| dose.0 < today - 30 && dose.0 > d.birth);
    earlier.sort_by_key(|dose| -dose.0); // most recent first
    (recent, earlier, spare)
}

/// The patient's Immunizations, oldest first.
pub(crate) fn resources(seed: u64, today: i64, index: usize, d: &Demographics) -> Vec<Value> {
    let mut rng = Rng::derive(seed, stream::CLINICAL, (index as u64) | (3 << 40));
    let target = rng.range_usize(5, 10);
    let (mut doses, earlier, spare) = candidates(&mut rng, today, d);
    doses.truncate(target);
    for dose in earlier.into_iter().chain(spare) {
        if doses.len() >= target {
            break;
        }
        doses.push(dose);
    }
    doses.sort_by_key(|dose| dose.0);

    let giver = shared::clinician(d.gp);
    let site = shared::org(ids::ORG_FAMILY);
    doses
        .into_iter()
        .enumerate()
        .map(|(n, (day, code, display, here))| {
            let mut r = json!({
                "resourceType": "Immunization",
                "id": format!("{}-imm-{:02}", d.id, n + 1),
                "status": "completed",
                "vaccineCode": { "coding": [coding(sys::CVX, code, display)], "text": display },
                "patient": reference("Patient", &d.id),
                "occurrenceDateTime": if here { dates::date_time(day, 9 * 60 + 15 * rng.range(0, 28)) } else { dates::date(day) },
                "primarySource": here,
            });
            if here {
                r["location"] = reference_display("Location", site.location, site.site);
                r["lotNumber"] = json!(format!("{}{:05}", ["EL", "FK", "GT", "HW"].get(rng.below(4) as usize).copied().unwrap_or("EL"), rng.range(1000, 99_999)));
                r["performer"] = json!([{
                    "function": concept("http://terminology.hl7.org/CodeSystem/v2-0443", "AP", "Administering Provider"),
                    "actor": reference_display("Practitioner", giver.id, &giver.display()),
                }]);
            } else {
                r["reportOrigin"] = concept("http://terminology.hl7.org/CodeSystem/immunization-origin", "record", "Written Record");
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patient::demographics;

    #[test]
    fn five_to_ten_doses_after_birth_before_today() {
        let today = dates::today("2026-11-01");
        for i in 0..300 {
            let d = demographics(5, today, i);
            let v = resources(5, today, i, &d);
            assert!((5..=10).contains(&v.len()), "index {i} age {}: {}", d.age, v.len());
            for imm in &v {
                let when = imm["occurrenceDateTime"].as_str().unwrap_or_default();
                let day = dates::parse_date(when.get(0..10).unwrap_or_default()).unwrap_or(i64::MAX);
                assert!(day > d.birth && day < today, "{when}");
            }
        }
    }
}
