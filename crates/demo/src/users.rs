//! Demo login accounts: one per first five patients, the caregiver, a clinician linked to a
//! Practitioner, and an administrator. Passwords are deterministic and meant to be printed
//! by `portico demo` — they protect nothing but synthetic data.

use std::fmt;

use crate::caregiver::caregiver;
use crate::names;
use crate::patient::{demographics, patient_id};
use crate::rng::{Rng, stream};
use crate::shared;
use crate::{DemoConfig, dates};

/// How many patients get their own login.
const PATIENT_USERS: usize = 5;

const WORDS: [&str; 16] = [
    "maple", "harbor", "river", "cedar", "meadow", "lantern", "orchard", "summit", "willow", "beacon", "juniper",
    "prairie", "aspen", "falcon", "coral", "thistle",
];

/// A demo account. `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DemoUser {
    /// Login name, lowercase ASCII (`alice.nguyen`).
    pub username: String,
    /// `patient`, `caregiver`, `clinician` or `admin`.
    pub role: &'static str,
    /// Deterministic demo password (`demo-<word>-<n>`).
    pub password: String,
    /// The Patient id this user *is* (patients only).
    pub patient: Option<String>,
    /// The Practitioner id this user *is* (clinicians only).
    pub practitioner: Option<String>,
    /// Patient ids this user may act for (caregivers only); each relationship has a
    /// `RelatedPerson` with id [`crate::related_person_id`] in that patient's bundle.
    pub related_to: Vec<String>,
}

impl fmt::Debug for DemoUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoUser")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("password", &"<redacted>")
            .field("patient", &self.patient)
            .field("practitioner", &self.practitioner)
            .field("related_to", &self.related_to)
            .finish()
    }
}

fn password(seed: u64, ordinal: usize) -> String {
    let mut rng = Rng::derive(seed, stream::USERS, ordinal as u64);
    format!("demo-{}-{}", rng.pick(&WORDS), rng.range(10, 99))
}

/// Appends `2`, `3`, … until `name` is not taken.
fn unique(name: String, taken: &[DemoUser]) -> String {
    let free = |n: &str| !taken.iter().any(|u| u.username == n);
    if free(&name) {
        return name;
    }
    (2..).map(|k| format!("{name}{k}")).find(|n| free(n)).unwrap_or(name)
}

/// The demo accounts for a configuration, in a stable order: patients, caregiver (when a
/// patient qualifies), clinician, admin.
pub fn demo_users(cfg: &DemoConfig) -> Vec<DemoUser> {
    let today = dates::today(cfg.today);
    let mut users: Vec<DemoUser> = Vec::new();
    let push = |users: &mut Vec<DemoUser>, handle: String, role, patient, practitioner, related_to| {
        let username = unique(handle, users);
        let password = password(cfg.seed, users.len());
        users.push(DemoUser { username, role, password, patient, practitioner, related_to });
    };
    for index in 0..cfg.patients.min(PATIENT_USERS) {
        let d = demographics(cfg.seed, today, index);
        push(&mut users, names::handle(d.given, d.family), "patient", Some(d.id), None, Vec::new());
    }
    if let Some(cg) = caregiver(cfg.seed, today) {
        let related: Vec<String> =
            cg.adolescent.into_iter().chain(cg.elderly).filter(|&i| i < cfg.patients).map(patient_id).collect();
        if !related.is_empty() {
            push(&mut users, names::handle(cg.given, cg.family), "caregiver", None, None, related);
        }
    }
    let gp = if cfg.patients > 0 { demographics(cfg.seed, today, 0).gp } else { shared::ids::PR_FAMILY[0] };
    let clinician = shared::clinician(gp);
    let first = clinician.given.first().copied().unwrap_or("clinician");
    push(
        &mut users,
        names::handle(first, clinician.family),
        "clinician",
        None,
        Some(clinician.id.to_owned()),
        Vec::new(),
    );
    push(&mut users, "admin".to_owned(), "admin", None, None, Vec::new());
    users
}
