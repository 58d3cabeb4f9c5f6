//! Deterministic synthetic FHIR R4 patients for demos, tests and benchmarks.
//!
//! [`shared_resources`] is the directory every patient refers to (organizations,
//! practitioners, roles, locations); [`patient_bundle`] is one `transaction` Bundle of
//! roughly 90 resources per patient; [`demo_users`] are the logins that go with them. Every
//! entry is `PUT Type/id` with a stable id derived from the patient index, so importing twice
//! changes nothing, and the same `(seed, index, today)` always yields byte-identical JSON.
//!
//! ```
//! let cfg = portico_demo::DemoConfig { patients: 2, ..Default::default() };
//! let bundles: Vec<_> = portico_demo::all_bundles(&cfg).collect();
//! assert_eq!(bundles.len(), 3);
//! assert_eq!(bundles[1]["entry"][0]["request"]["url"], "Patient/pt-00001");
//! ```

#![forbid(unsafe_code)]

mod allergies;
mod caregiver;
mod conditions;
mod dates;
mod documents;
mod fhirjson;
mod immunizations;
mod labs;
mod medications;
mod names;
mod patient;
mod rng;
mod shared;
mod users;
mod visits;
mod vitals;

use serde_json::Value;

pub use caregiver::related_person_id;
pub use patient::patient_id;
pub use users::{DemoUser, demo_users};

/// The reference date of the default configuration.
pub const DEFAULT_TODAY: &str = "2026-11-01";

/// The seed of the default configuration.
pub const DEFAULT_SEED: u64 = 20_261_101;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoConfig {
    /// Number of patients (`pt-00001` … ).
    pub patients: usize,
    /// Seed of every random choice; same seed, same data.
    pub seed: u64,
    /// The reference date (`YYYY-MM-DD`) that "the last three years" and "upcoming
    /// appointments" are relative to. Fixed rather than the clock, for determinism; an
    /// unparsable value falls back to [`DEFAULT_TODAY`].
    pub today: &'static str,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { patients: 50, seed: DEFAULT_SEED, today: DEFAULT_TODAY }
    }
}

/// One `transaction` Bundle with the shared directory: 5 Organizations, 5 Locations,
/// 10 Practitioners (with NPIs) and their 10 PractitionerRoles. Independent of the seed.
pub fn shared_resources(_cfg: &DemoConfig) -> Value {
    shared::bundle()
}

/// One `transaction` Bundle with everything about patient `index` (0-based; id
/// [`patient_id`]`(index)`). References point only into this bundle or the shared one.
/// Depends only on `seed`, `today` and `index` — not on `patients`.
pub fn patient_bundle(cfg: &DemoConfig, index: usize) -> Value {
    let (seed, today) = (cfg.seed, dates::today(cfg.today));
    let d = patient::demographics(seed, today, index);
    let conditions = conditions::plan(seed, today, index, &d);
    let visits = visits::plan(seed, today, index, &d);

    let mut out = vec![patient::resource(&d)];
    let carer = caregiver::caregiver(seed, today);
    out.extend(carer.and_then(|c| c.related_person(index, &d, today)));
    out.extend(visits::appointments(seed, today, index, &d, &visits, &conditions));
    out.extend(visits.iter().map(|v| visits::encounter(v, &d)));
    out.extend(conditions.iter().map(|c| conditions::resource(c, &d)));
    out.extend(labs::resources(seed, index, &d, &visits, &conditions));
    out.extend(vitals::resources(seed, index, &d, &visits, &conditions));
    out.extend(medications::resources(seed, today, index, &d, &conditions));
    out.extend(allergies::resources(seed, today, index, &d));
    out.extend(immunizations::resources(seed, today, index, &d));
    out.extend(documents::resources(seed, today, index, &d, &visits, &conditions));
    fhirjson::transaction(out)
}

/// The shared bundle first, then one bundle per patient, generated lazily.
pub fn all_bundles(cfg: &DemoConfig) -> impl Iterator<Item = Value> + use<> {
    let cfg = *cfg;
    std::iter::once(shared_resources(&cfg)).chain((0..cfg.patients).map(move |i| patient_bundle(&cfg, i)))
}
