//! Clinical notes as `DocumentReference`s with a base64 `text/plain` attachment: a history
//! and physical and/or a progress note from the visits, plus sensitive notes where they
//! apply — a behavioral-health consult (PSY), a substance-use counseling note (ETH), a
//! reproductive-health note for some female patients (SEX). Sensitive notes carry the label
//! in `meta.security` and `securityLabel` (free text cannot be classified by code) and are
//! authored at Lakeside Behavioral Health or Harbor Women's Health. General notes never
//! mention sensitive diagnoses.

use serde_json::{Value, json};

use crate::conditions::{Cond, Planned};
use crate::dates;
use crate::fhirjson::{Sensitivity, base64, coding, concept, reference, reference_display, sys};
use crate::patient::Demographics;
use crate::rng::{Rng, stream};
use crate::shared::{self, ids};
use crate::visits::Visit;

/// What kind of note, and everything that differs between kinds.
struct Note {
    loinc: (&'static str, &'static str),
    title: &'static str,
    author: &'static str,
    day: i64,
    minute: i64,
    encounter: Option<String>,
    label: Option<Sensitivity>,
    setting: (&'static str, &'static str),
    body: String,
}

const HP: (&str, &str) = ("34117-2", "History and physical note");
const PROGRESS: (&str, &str) = ("11506-3", "Progress note");
const CONSULT: (&str, &str) = ("11488-4", "Consult note");
const GENERAL_PRACTICE: (&str, &str) = ("394802001", "General medicine");

fn header(title: &str, d: &Demographics, day: i64, author: &str) -> String {
    let who = shared::clinician(author);
    format!(
        "{title}\nDate: {}\nPatient: {} (MRN {}), {}-year-old {}\nAuthor: {}\n\n",
        dates::date(day),
        d.full_name(),
        d.mrn,
        dates::age_on(d.birth, day),
        d.gender,
        who.display()
    )
}

fn problem_list(conditions: &[Planned]) -> String {
    let general: Vec<&str> =
        conditions.iter().filter(|c| c.def.sensitivity.is_none() && c.active()).map(|c| c.def.text).collect();
    if general.is_empty() { "No chronic problems.".into() } else { general.join("; ") }
}

fn general_note(
    loinc: (&'static str, &'static str),
    title: &'static str,
    v: &Visit,
    d: &Demographics,
    conditions: &[Planned],
) -> Note {
    let body = format!(
        "{}Subjective: Seen for a scheduled visit. No new complaints today.\nProblems: {}\nObjective: Well appearing, in no distress. Vital signs reviewed.\nAssessment and plan: Stable. Laboratory panel ordered. Continue current medications and return for routine follow-up.\n",
        header(title, d, v.day, d.gp),
        problem_list(conditions)
    );
    Note {
        loinc,
        title,
        author: d.gp,
        day: v.day,
        minute: v.minute + 40,
        encounter: Some(v.encounter.clone()),
        label: None,
        setting: GENERAL_PRACTICE,
        body,
    }
}

fn sensitive_notes(rng: &mut Rng, today: i64, d: &Demographics, conditions: &[Planned]) -> Vec<Note> {
    let has = |k: Cond| conditions.iter().any(|c| c.def.key == k);
    let mut notes = Vec::new();
    if has(Cond::Depression) {
        let day = dates::to_weekday(today - rng.range(20, 300));
        let body = format!(
            "{}Reason for consultation: low mood, poor sleep and loss of interest for several months.\nAssessment: Major depressive disorder, single episode (F32.9). PHQ-9 score {}. No suicidal ideation; safety plan reviewed.\nPlan: sertraline 100 mg daily, weekly psychotherapy, follow-up in 6 weeks.\n",
            header("Psychiatric consultation", d, day, ids::PR_PSYCHIATRY),
            rng.range(10, 19)
        );
        notes.push(Note {
            loinc: CONSULT,
            title: "Psychiatric consultation",
            author: ids::PR_PSYCHIATRY,
            day,
            minute: 14 * 60,
            encounter: None,
            label: Some(Sensitivity::Psy),
            setting: ("394587001", "Psychiatry"),
            body,
        });
    }
    if has(Cond::AlcoholUse) {
        let day = dates::to_weekday(today - rng.range(15, 200));
        let body = format!(
            "{}Session: individual counseling for alcohol use disorder (F10.20). AUDIT-C score {}.\nProgress: {} days since last drink; attending peer support meetings.\nPlan: continue naltrexone, weekly counseling, relapse-prevention plan updated.\n",
            header("Substance use counseling note", d, day, ids::PR_ADDICTION),
            rng.range(4, 9),
            rng.range(10, 120)
        );
        notes.push(Note {
            loinc: PROGRESS,
            title: "Substance use counseling note",
            author: ids::PR_ADDICTION,
            day,
            minute: 15 * 60 + 30,
            encounter: None,
            label: Some(Sensitivity::Eth),
            setting: ("394587001", "Psychiatry"),
            body,
        });
    }
    if d.is_female() && (15..=50).contains(&d.age) && rng.chance(0.45) {
        let day = dates::to_weekday(today - rng.range(20, 500));
        let topic = *rng.pick(&[
            "Contraception counseling; options reviewed and an oral contraceptive started.",
            "Annual gynecologic examination; sexually transmitted infection screening offered and accepted.",
            "Pregnancy test negative; preconception counseling and folic acid advised.",
        ]);
        let body = format!(
            "{}Visit: {topic}\nThe patient asked that this visit be kept confidential.\nPlan: follow-up in 12 months or sooner as needed.\n",
            header("Reproductive health visit", d, day, ids::PR_OBGYN)
        );
        notes.push(Note {
            loinc: PROGRESS,
            title: "Reproductive health visit",
            author: ids::PR_OBGYN,
            day,
            minute: 10 * 60 + 30,
            encounter: None,
            label: Some(Sensitivity::Sex),
            setting: ("394585009", "Obstetrics and gynecology"),
            body,
        });
    }
    notes
}

/// The patient's 2–4 DocumentReferences, oldest first.
pub(crate) fn resources(
    seed: u64,
    today: i64,
    index: usize,
    d: &Demographics,
    visits: &[Visit],
    conditions: &[Planned],
) -> Vec<Value> {
    let mut rng = Rng::derive(seed, stream::DOCUMENTS, index as u64);
    let sensitive = sensitive_notes(&mut rng, today, d, conditions);
    let mut notes = Vec::new();
    if let Some(first) = visits.first().filter(|_| sensitive.len() < 2) {
        notes.push(general_note(HP, "History and physical", first, d, conditions));
    }
    if let Some(last) = visits.last() {
        notes.push(general_note(PROGRESS, "Progress note", last, d, conditions));
    }
    notes.extend(sensitive);
    notes.sort_by_key(|n| (n.day, n.minute));
    notes.iter().enumerate().map(|(n, note)| document(format!("{}-doc-{:02}", d.id, n + 1), note, d)).collect()
}

fn document(id: String, note: &Note, d: &Demographics) -> Value {
    let who = shared::clinician(note.author);
    let custodian = shared::org(who.org);
    let when = dates::date_time(note.day, note.minute);
    let mut r = json!({ "resourceType": "DocumentReference", "id": id });
    if let Some(label) = note.label {
        r["meta"] = json!({ "security": label.security() });
    }
    r["status"] = json!("current");
    r["docStatus"] = json!("final");
    r["type"] = json!({ "coding": [coding(sys::LOINC, note.loinc.0, note.loinc.1)], "text": note.title });
    r["category"] = json!([concept(
        "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
        "clinical-note",
        "Clinical Note"
    )]);
    r["subject"] = reference("Patient", &d.id);
    r["date"] = json!(when);
    r["author"] = json!([reference_display("Practitioner", who.id, &who.display())]);
    r["custodian"] = reference_display("Organization", custodian.id, custodian.name);
    r["description"] = json!(note.title);
    if let Some(label) = note.label {
        r["securityLabel"] = json!([label.label_concept()]);
    }
    r["content"] = json!([{
        "attachment": {
            "contentType": "text/plain; charset=utf-8",
            "language": "en-US",
            "data": base64(note.body.as_bytes()),
            "size": note.body.len(),
            "title": note.title,
            "creation": when,
        },
    }]);
    let mut context = json!({ "period": { "start": when } });
    if let Some(enc) = &note.encounter {
        context["encounter"] = json!([reference("Encounter", enc)]);
    }
    context["practiceSetting"] = concept(sys::SNOMED, note.setting.0, note.setting.1);
    r["context"] = context;
    r
}
