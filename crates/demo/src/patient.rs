//! Demographics of one synthetic patient and the `Patient` resource.
//!
//! Ages are spread deliberately by index (`index % 10` picks an age band), so every run with
//! two or more patients has an adolescent (12–17) at index 1 and an elderly patient at index 2
//! — the caregiver demo relies on both.

use serde_json::{Value, json};

use crate::dates;
use crate::fhirjson::{coding, reference_display, sys};
use crate::names;
use crate::rng::{Rng, stream};
use crate::shared;

/// Age bands, chosen by `index % 10`.
const AGE_BANDS: [(i64, i64); 10] =
    [(18, 44), (12, 17), (75, 95), (1, 11), (45, 64), (18, 44), (65, 79), (30, 64), (12, 17), (1, 95)];

/// Whether `index` falls in the adolescent band (12–17 years).
pub(crate) fn is_adolescent_slot(index: usize) -> bool {
    AGE_BANDS.get(index % 10) == Some(&(12, 17))
}

/// Whether `index` falls in the elderly band (75–95 years).
pub(crate) fn is_elderly_slot(index: usize) -> bool {
    AGE_BANDS.get(index % 10) == Some(&(75, 95))
}

/// The stable Patient id for an index: `pt-00001` for index 0.
pub fn patient_id(index: usize) -> String {
    format!("pt-{:05}", index.saturating_add(1))
}

/// Everything the other generators need to know about the patient.
#[derive(Debug, Clone)]
pub(crate) struct Demographics {
    pub(crate) id: String,
    pub(crate) given: &'static str,
    pub(crate) middle: Option<&'static str>,
    pub(crate) family: &'static str,
    /// `female` or `male`.
    pub(crate) gender: &'static str,
    pub(crate) birth: i64,
    pub(crate) age: i64,
    pub(crate) street: String,
    pub(crate) city: &'static str,
    pub(crate) postal: String,
    pub(crate) phone: String,
    pub(crate) mrn: String,
    /// The primary care practitioner's id.
    pub(crate) gp: &'static str,
}

impl Demographics {
    /// "Zoë Müller".
    pub(crate) fn full_name(&self) -> String {
        format!("{} {}", self.given, self.family)
    }

    /// Whether the patient is female.
    pub(crate) fn is_female(&self) -> bool {
        self.gender == "female"
    }
}

/// The demographics of patient `index` under `seed`, relative to `today` (a day number).
pub(crate) fn demographics(seed: u64, today: i64, index: usize) -> Demographics {
    let mut rng = Rng::derive(seed, stream::DEMOGRAPHICS, index as u64);
    let (lo, hi) = AGE_BANDS.get(index % 10).copied().unwrap_or((18, 64));
    let age = rng.range(lo, hi);
    // Born `age` years before today, minus 1..=364 days: the age today is exactly `age`.
    let birth = dates::years_before(today, age) - rng.range(1, 364);
    let gender = if rng.chance(0.5) { "female" } else { "male" };
    let given = if gender == "female" { *rng.pick(&names::FEMALE) } else { *rng.pick(&names::MALE) };
    let middle = rng.chance(0.4).then(|| *rng.pick(&names::MIDDLE));
    let family = *rng.pick(&names::FAMILY);
    let (city, zip) = *rng.pick(&names::CITIES);
    let street = format!("{} {}", rng.range(10, 4999), rng.pick(&names::STREETS));
    let gp = if age < 18 { shared::ids::PR_PEDIATRICS } else { *rng.pick(&shared::ids::PR_FAMILY) };
    Demographics {
        id: patient_id(index),
        given,
        middle,
        family,
        gender,
        birth,
        age: dates::age_on(birth, today),
        street,
        city,
        postal: format!("{zip}{}", rng.range(0, 9)),
        phone: format!("(206) 555-{:04}", rng.range(100, 199)),
        mrn: format!("{:08}", 10_000_000u64.saturating_add(index as u64 * 7 + rng.below(7))),
        gp,
    }
}

/// The home address as a FHIR Address.
pub(crate) fn address(d: &Demographics) -> Value {
    json!({
        "use": "home",
        "line": [d.street],
        "city": d.city,
        "state": names::STATE,
        "postalCode": d.postal,
        "country": "US",
    })
}

/// The `Patient` resource.
pub(crate) fn resource(d: &Demographics) -> Value {
    let mut given = vec![d.given];
    given.extend(d.middle);
    let email = format!("{}@example.com", names::handle(d.given, d.family));
    let gp = shared::clinician(d.gp);
    let family_practice = shared::org(shared::ids::ORG_FAMILY);
    json!({
        "resourceType": "Patient",
        "id": d.id,
        "identifier": [{
            "use": "usual",
            "type": { "coding": [coding(sys::V2_0203, "MR", "Medical record number")], "text": "MRN" },
            "system": sys::MRN,
            "value": d.mrn,
        }],
        "active": true,
        "name": [{ "use": "official", "family": d.family, "given": given }],
        "telecom": [
            { "system": "phone", "value": d.phone, "use": if d.age < 18 { "home" } else { "mobile" } },
            { "system": "email", "value": email, "use": "home" },
        ],
        "gender": d.gender,
        "birthDate": dates::date(d.birth),
        "address": [address(d)],
        "communication": [{
            "language": { "coding": [coding("urn:ietf:bcp:47", "en-US", "English (United States)")], "text": "English" },
            "preferred": true,
        }],
        "generalPractitioner": [reference_display("Practitioner", gp.id, &gp.display())],
        "managingOrganization": reference_display("Organization", family_practice.id, family_practice.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_follow_bands() {
        let today = dates::today("2026-11-01");
        for i in 0..200 {
            let d = demographics(1, today, i);
            let (lo, hi) = AGE_BANDS[i % 10];
            assert!((lo..=hi).contains(&d.age), "index {i} age {}", d.age);
            assert!(d.birth < today);
        }
        assert!(is_adolescent_slot(1) && is_elderly_slot(2));
        assert_eq!(patient_id(0), "pt-00001");
    }
}
