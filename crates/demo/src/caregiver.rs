//! The demo caregiver: parent of the first adolescent patient and adult child (and
//! caregiver) of the first elderly patient. Each relationship is a `RelatedPerson` in that
//! patient's bundle, so proxy access can be grounded in FHIR data.

use serde_json::{Value, json};

use crate::dates;
use crate::fhirjson::{concept, reference, sys};
use crate::names;
use crate::patient::{self, Demographics, demographics};
use crate::rng::{Rng, stream};

/// The caregiver and the patients (by index) they are related to.
#[derive(Debug, Clone)]
pub(crate) struct Caregiver {
    pub(crate) given: &'static str,
    pub(crate) family: &'static str,
    gender: &'static str,
    birth: i64,
    phone: String,
    /// Index of the adolescent patient whose parent this is.
    pub(crate) adolescent: Option<usize>,
    /// Index of the elderly patient whose adult child this is.
    pub(crate) elderly: Option<usize>,
}

/// The id of the `RelatedPerson` linking the caregiver to a patient: `<patient id>-rp-01`.
pub fn related_person_id(patient_id: &str) -> String {
    format!("{patient_id}-rp-01")
}

/// The caregiver. Which patients they relate to depends only on the index (never on how many
/// patients a run generates), so every patient bundle is a function of `(seed, today, index)`;
/// [`crate::demo_users`] leaves out relationships to patients beyond the run's count.
pub(crate) fn caregiver(seed: u64, today: i64) -> Option<Caregiver> {
    let first = |slot: fn(usize) -> bool| (0..10).find(|&i| slot(i));
    let adolescent = first(patient::is_adolescent_slot);
    let elderly = first(patient::is_elderly_slot);
    let anchor = demographics(seed, today, adolescent.or(elderly)?);
    let mut rng = Rng::derive(seed, stream::CAREGIVER, 0);
    let gender = if rng.chance(0.5) { "female" } else { "male" };
    let pool = if gender == "female" { &names::FEMALE } else { &names::MALE };
    let mut given = *rng.pick(pool);
    for _ in 0..8 {
        if given != anchor.given {
            break;
        }
        given = *rng.pick(pool);
    }
    let family = if adolescent.is_some() { anchor.family } else { *rng.pick(&names::FAMILY) };
    // A parent is 26–38 years older than the adolescent; a child 25–35 years younger than
    // the elderly parent.
    let years = if adolescent.is_some() { rng.range(26, 38) } else { -rng.range(25, 35) };
    let birth = dates::years_before(anchor.birth, years) - rng.range(0, 300);
    let phone = format!("(206) 555-{:04}", rng.range(100, 199));
    Some(Caregiver { given, family, gender, birth, phone, adolescent, elderly })
}

impl Caregiver {
    /// The `RelatedPerson` for patient `index`, if the caregiver is related to them.
    pub(crate) fn related_person(&self, index: usize, d: &Demographics, today: i64) -> Option<Value> {
        let (code, display, since, address) = if self.adolescent == Some(index) {
            ("PRN", "parent", d.birth, Some(patient::address(d)))
        } else if self.elderly == Some(index) {
            ("CHILD", "child", today - 2 * 365, None)
        } else {
            return None;
        };
        let mut r = json!({
            "resourceType": "RelatedPerson",
            "id": related_person_id(&d.id),
            "active": true,
            "patient": reference("Patient", &d.id),
            "relationship": [concept(sys::V3_ROLE_CODE, code, display)],
            "name": [{ "use": "official", "family": self.family, "given": [self.given] }],
            "telecom": [
                { "system": "phone", "value": self.phone, "use": "mobile" },
                { "system": "email", "value": format!("{}@example.com", names::handle(self.given, self.family)), "use": "home" },
            ],
            "gender": self.gender,
            "birthDate": dates::date(self.birth),
        });
        if let Some(a) = address {
            r["address"] = json!([a]);
        }
        r["period"] = json!({ "start": dates::date(since) });
        Some(r)
    }
}
