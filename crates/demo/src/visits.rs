//! Office visits over the last three years (`Encounter`s, which labs, vitals and notes point
//! at) and `Appointment`s: the latest visits as `fulfilled`, plus one or two `booked` ones
//! after the reference date.

use serde_json::{Value, json};

use crate::conditions::{Cond, Planned};
use crate::dates;
use crate::fhirjson::{Sensitivity, coding, concept, reference, reference_display, sys};
use crate::patient::Demographics;
use crate::rng::{Rng, stream};
use crate::shared::{self, ids};

/// Number of office visits per patient (each has labs; the latest three have vitals).
pub(crate) const VISITS: usize = 4;

/// One past office visit with the patient's primary care practitioner.
#[derive(Debug, Clone)]
pub(crate) struct Visit {
    /// `pt-00001-enc-01`.
    pub(crate) encounter: String,
    pub(crate) day: i64,
    /// Minutes after midnight UTC.
    pub(crate) minute: i64,
    /// The appointment this visit fulfilled, if it was booked ahead.
    pub(crate) appointment: Option<String>,
}

impl Visit {
    /// The visit's start as a FHIR dateTime.
    pub(crate) fn start(&self) -> String {
        dates::date_time(self.day, self.minute)
    }
}

/// The patient's visits, oldest first, spread over the last three years (or since birth).
pub(crate) fn plan(seed: u64, today: i64, index: usize, d: &Demographics) -> Vec<Visit> {
    let mut rng = Rng::derive(seed, stream::VISITS, index as u64);
    let window = (today - d.birth - 30).clamp(120, 3 * 365);
    let slot = window / VISITS as i64;
    let fulfilled = rng.range_usize(1, 2);
    (0..VISITS)
        .map(|k| {
            // Slot 0 is the oldest quarter of the window; slots keep two days apart so that
            // moving a weekend day to a weekday never reorders visits.
            let back_hi = window - slot * k as i64;
            let back_lo = (back_hi - slot + 3).max(7);
            let day = dates::to_weekday(today - rng.range(back_lo, back_hi));
            let minute = 8 * 60 + 15 * rng.range(0, 33);
            let appointment =
                (k >= VISITS - fulfilled).then(|| format!("{}-appt-{:02}", d.id, k + fulfilled + 1 - VISITS));
            Visit { encounter: format!("{}-enc-{:02}", d.id, k + 1), day, minute, appointment }
        })
        .collect()
}

/// The `Encounter` for a visit.
pub(crate) fn encounter(v: &Visit, d: &Demographics) -> Value {
    let gp = shared::clinician(d.gp);
    let practice = shared::org(gp.org);
    let mut r = json!({
        "resourceType": "Encounter",
        "id": v.encounter,
        "status": "finished",
        "class": coding(sys::V3_ACT_CODE, "AMB", "ambulatory"),
        "type": [concept(sys::SNOMED, "185349003", "Encounter for check up (procedure)")],
        "subject": reference("Patient", &d.id),
        "participant": [{
            "type": [concept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PPRF", "primary performer")],
            "individual": reference_display("Practitioner", gp.id, &gp.display()),
        }],
    });
    if let Some(appt) = &v.appointment {
        r["appointment"] = json!([reference("Appointment", appt)]);
    }
    r["period"] = json!({ "start": v.start(), "end": dates::date_time(v.day, v.minute + 30) });
    r["location"] = json!([{ "location": reference_display("Location", gp.location, practice.site) }]);
    r["serviceProvider"] = reference_display("Organization", practice.id, practice.name);
    r
}

/// A future booking: who, where, why.
struct Booking {
    practitioner: &'static str,
    description: String,
    kind: (&'static str, &'static str),
    label: Option<Sensitivity>,
}

/// Appointments: the fulfilled ones behind the latest visits, then 1–2 booked ones.
pub(crate) fn appointments(
    seed: u64,
    today: i64,
    index: usize,
    d: &Demographics,
    visits: &[Visit],
    conditions: &[Planned],
) -> Vec<Value> {
    let mut rng = Rng::derive(seed, stream::APPOINTMENTS, index as u64);
    let mut out: Vec<Value> = visits
        .iter()
        .filter_map(|v| {
            let id = v.appointment.as_deref()?;
            let booking = Booking {
                practitioner: d.gp,
                description: "Routine follow-up visit".into(),
                kind: ("FOLLOWUP", "A follow up visit from a previous appointment"),
                label: None,
            };
            Some(appointment(id, d, &booking, "fulfilled", v.day, v.minute, v.day - rng.range(7, 40)))
        })
        .collect();
    let has = |k: Cond| conditions.iter().any(|c| c.def.key == k && c.active());
    let mut bookings = vec![Booking {
        practitioner: d.gp,
        description: "Annual wellness visit".into(),
        kind: ("CHECKUP", "A routine check-up, such as an annual physical"),
        label: None,
    }];
    if has(Cond::Depression) {
        bookings.push(Booking {
            practitioner: ids::PR_PSYCHIATRY,
            description: "Medication management follow-up".into(),
            kind: ("FOLLOWUP", "A follow up visit from a previous appointment"),
            label: Some(Sensitivity::Psy),
        });
    } else if has(Cond::Hypertension) || has(Cond::Afib) {
        let cardiologist = *rng.pick(&ids::PR_CARDIOLOGISTS);
        bookings.push(Booking {
            practitioner: cardiologist,
            description: "Cardiology consultation".into(),
            kind: ("ROUTINE", "Routine appointment - default if not valued"),
            label: None,
        });
    } else if rng.chance(0.3) {
        bookings.push(Booking {
            practitioner: d.gp,
            description: "Follow-up of recent laboratory results".into(),
            kind: ("FOLLOWUP", "A follow up visit from a previous appointment"),
            label: None,
        });
    }
    let first = out.len();
    for (k, b) in bookings.iter().enumerate() {
        let day = dates::to_weekday(today + rng.range(3, 75));
        let minute = 8 * 60 + 15 * rng.range(0, 33);
        let id = format!("{}-appt-{:02}", d.id, first + k + 1);
        out.push(appointment(&id, d, b, "booked", day, minute, today - rng.range(1, 30)));
    }
    out
}

fn appointment(id: &str, d: &Demographics, b: &Booking, status: &str, day: i64, minute: i64, created: i64) -> Value {
    let who = shared::clinician(b.practitioner);
    let site = shared::org(who.org);
    let participant = |actor: Value| json!({ "actor": actor, "required": "required", "status": "accepted" });
    let mut r = json!({ "resourceType": "Appointment", "id": id });
    if let Some(label) = b.label {
        r["meta"] = json!({ "security": label.security() });
    }
    r["status"] = json!(status);
    r["appointmentType"] = json!({ "coding": [coding(sys::V2_0276, b.kind.0, b.kind.1)] });
    r["description"] = json!(format!("{} with {}", b.description, who.display()));
    r["start"] = json!(dates::date_time(day, minute));
    r["end"] = json!(dates::date_time(day, minute + 30));
    r["minutesDuration"] = json!(30);
    r["created"] = json!(dates::date_time(created.min(day), 9 * 60));
    r["participant"] = json!([
        participant(reference_display("Patient", &d.id, &d.full_name())),
        participant(reference_display("Practitioner", who.id, &who.display())),
        participant(reference_display("Location", who.location, site.site)),
    ]);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patient::demographics;

    #[test]
    fn visits_are_past_ordered_and_after_birth() {
        let today = dates::today("2026-11-01");
        for i in 0..200 {
            let d = demographics(3, today, i);
            let v = plan(3, today, i, &d);
            assert_eq!(v.len(), VISITS);
            assert!(v.windows(2).all(|w| w[0].day < w[1].day), "index {i}");
            assert!(v.iter().all(|x| x.day < today && x.day > d.birth && dates::weekday(x.day) < 5));
            assert!((1..=2).contains(&v.iter().filter(|x| x.appointment.is_some()).count()));
        }
    }
}
