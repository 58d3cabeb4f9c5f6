//! What the summary says, before any layout: the patient's facts and one table per
//! section, already chosen (active, upcoming, recent), sorted, de-duplicated and capped.

use portico_fhir::classify::Classifier;
use serde_json::Value;
use time::OffsetDateTime;

use crate::read::{
    age_on, arr, choice_date, concept, concept_code, concept_codes, date_words, number, quantity, quantity_unit,
    reference_display, sort_key, str_at,
};

/// Rows shown per section at most; the rest are counted ("and N more").
pub const MAX_PROBLEMS: usize = 80;
pub const MAX_MEDICATIONS: usize = 80;
pub const MAX_ALLERGIES: usize = 60;
pub const MAX_IMMUNIZATIONS: usize = 25;
pub const MAX_LABS: usize = 150;
pub const MAX_APPOINTMENTS: usize = 30;
const MAX_IDENTIFIERS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Normal,
    /// Needs the reader's attention: abnormal lab flags, high-risk allergies.
    Alert,
    Muted,
}

#[derive(Debug, Clone)]
pub struct Cell {
    pub text: String,
    pub style: Style,
}

impl Cell {
    fn new(text: impl Into<String>) -> Self {
        Cell { text: text.into(), style: Style::Normal }
    }
    fn styled(text: impl Into<String>, style: Style) -> Self {
        Cell { text: text.into(), style }
    }
}

#[derive(Debug)]
pub struct Section {
    pub title: &'static str,
    pub intro: Option<&'static str>,
    /// Column heading and share of the table width.
    pub columns: &'static [(&'static str, f32)],
    pub rows: Vec<Vec<Cell>>,
    /// Shown instead of a table when there are no rows.
    pub empty: &'static str,
    /// Rows left out by the cap, and what they are called.
    pub omitted: usize,
    pub omitted_what: &'static str,
}

#[derive(Debug)]
pub struct Summary {
    pub name: String,
    /// Label and value lines under the name (birth date, sex, identifiers, …).
    pub facts: Vec<(String, String)>,
    pub sections: Vec<Section>,
    /// How many of the given resources each section was drawn from, and how many were of
    /// kinds this summary does not show.
    pub used: usize,
    pub not_shown: usize,
}

/// A candidate row with what it is sorted and de-duplicated by.
struct Item {
    sort: i64,
    dedupe: Option<String>,
    cells: Vec<Cell>,
}

pub fn build(patient: &Value, resources: &[Value], now: OffsetDateTime) -> Summary {
    let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let (mut problems, mut meds, mut allergies, mut immunizations, mut labs, mut appointments) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut used = 0;
    let mut not_shown = 0;
    for r in resources {
        let item = match str_at(r, "resourceType").unwrap_or_default() {
            "Condition" => problem(r).map(|i| problems.push(i)),
            "MedicationRequest" | "MedicationStatement" => medication(r).map(|i| meds.push(i)),
            "AllergyIntolerance" => allergy(r).map(|i| allergies.push(i)),
            "Immunization" => immunization(r).map(|i| immunizations.push(i)),
            "Observation" => lab(r).map(|i| labs.push(i)),
            "Appointment" => appointment(r, now_ms).map(|i| appointments.push(i)),
            _ => None,
        };
        if item.is_some() {
            used += 1;
        } else {
            not_shown += 1;
        }
    }

    // Problems oldest first ("since"), everything else newest first, appointments soonest.
    let sections = vec![
        section(
            Section {
                title: "Health problems",
                intro: Some("Conditions recorded as current."),
                columns: &[("Problem", 0.62), ("Since", 0.2), ("Status", 0.18)],
                rows: Vec::new(),
                empty: "No current health problems are included in this summary.",
                omitted: 0,
                omitted_what: "more problems",
            },
            problems,
            Order::Ascending,
            MAX_PROBLEMS,
        ),
        section(
            Section {
                title: "Medicines",
                intro: Some("Medicines recorded as currently taken or prescribed."),
                columns: &[("Medicine", 0.44), ("How to take it", 0.36), ("Since", 0.2)],
                rows: Vec::new(),
                empty: "No current medicines are included in this summary.",
                omitted: 0,
                omitted_what: "more medicines",
            },
            meds,
            Order::Descending,
            MAX_MEDICATIONS,
        ),
        section(
            Section {
                title: "Allergies and intolerances",
                intro: None,
                columns: &[("Substance", 0.36), ("Reaction", 0.4), ("Risk", 0.24)],
                rows: Vec::new(),
                empty: "No allergies are included in this summary. That does not mean there are none.",
                omitted: 0,
                omitted_what: "more allergies",
            },
            allergies,
            Order::Descending,
            MAX_ALLERGIES,
        ),
        section(
            Section {
                title: "Immunizations",
                intro: Some("Newest first."),
                columns: &[("Vaccine", 0.6), ("Date", 0.22), ("Note", 0.18)],
                rows: Vec::new(),
                empty: "No immunizations are included in this summary.",
                omitted: 0,
                omitted_what: "older immunizations",
            },
            immunizations,
            Order::Descending,
            MAX_IMMUNIZATIONS,
        ),
        section(
            Section {
                title: "Recent lab results",
                intro: Some(
                    "Newest first. Results outside the normal range are marked in the last column (HIGH, LOW, ABNORMAL). Ask your care team what a result means for you.",
                ),
                columns: &[("Date", 0.15), ("Test", 0.3), ("Result", 0.22), ("Normal range", 0.16), ("Flag", 0.17)],
                rows: Vec::new(),
                empty: "No lab results are included in this summary.",
                omitted: 0,
                omitted_what: "older lab results",
            },
            labs,
            Order::Descending,
            MAX_LABS,
        ),
        section(
            Section {
                title: "Upcoming appointments",
                intro: None,
                columns: &[("When", 0.32), ("What", 0.46), ("Status", 0.22)],
                rows: Vec::new(),
                empty: "No upcoming appointments are included in this summary.",
                omitted: 0,
                omitted_what: "later appointments",
            },
            appointments,
            Order::Ascending,
            MAX_APPOINTMENTS,
        ),
    ];

    Summary { name: patient_name(patient), facts: patient_facts(patient, now), sections, used, not_shown }
}

enum Order {
    Ascending,
    Descending,
}

fn section(mut s: Section, mut items: Vec<Item>, order: Order, cap: usize) -> Section {
    match order {
        // Undated items last either way.
        Order::Ascending => items.sort_by_key(|i| i.sort),
        Order::Descending => items.sort_by_key(|i| std::cmp::Reverse(i.sort)),
    }
    let mut seen = std::collections::HashSet::new();
    items.retain(|i| i.dedupe.as_ref().is_none_or(|k| seen.insert(k.clone())));
    s.omitted = items.len().saturating_sub(cap);
    s.rows = items.into_iter().take(cap).map(|i| i.cells).collect();
    s
}

/// Undated items sort as the oldest: last when newest come first.
const UNDATED: i64 = i64::MIN;

fn key_or_undated(s: Option<&str>) -> i64 {
    s.and_then(sort_key).unwrap_or(UNDATED)
}

fn status_code(r: &Value, key: &str) -> Option<String> {
    r.get(key).and_then(concept_code)
}

fn problem(r: &Value) -> Option<Item> {
    let clinical = status_code(r, "clinicalStatus");
    let verification = status_code(r, "verificationStatus");
    let current = match clinical.as_deref() {
        Some("active" | "recurrence" | "relapse") => true,
        Some(_) => false,
        None => !r.as_object().is_some_and(|o| o.keys().any(|k| k.starts_with("abatement"))),
    };
    if !current || matches!(verification.as_deref(), Some("refuted" | "entered-in-error")) {
        return None;
    }
    let name = r.get("code").and_then(concept).unwrap_or_else(|| "Problem (name not recorded)".to_owned());
    let since = choice_date(r, "onset").or_else(|| str_at(r, "recordedDate"));
    let status = match (clinical.as_deref(), verification.as_deref()) {
        (_, Some("provisional" | "differential" | "unconfirmed")) => Cell::styled("suspected", Style::Muted),
        (Some("recurrence" | "relapse"), _) => Cell::new("came back"),
        _ => Cell::new("current"),
    };
    Some(Item {
        // Earliest onset first; de-duplicating keeps that earliest one.
        sort: since.and_then(sort_key).unwrap_or(i64::MAX),
        dedupe: Some(name.to_lowercase()),
        cells: vec![Cell::new(name), Cell::new(since.map(|s| date_words(s, false)).unwrap_or_default()), status],
    })
}

fn medication(r: &Value) -> Option<Item> {
    let status = str_at(r, "status");
    let on_hold = status == Some("on-hold");
    if !(status == Some("active") || on_hold) {
        return None;
    }
    let name = r
        .get("medicationCodeableConcept")
        .and_then(concept)
        .or_else(|| {
            r.get("medicationReference").and_then(|m| reference_display(m).or_else(|| contained_medication(r, m)))
        })
        .unwrap_or_else(|| "Medicine (name not recorded)".to_owned());
    let dosage = arr(r, "dosageInstruction").first().or_else(|| arr(r, "dosage").first());
    let mut how = dosage.map(dosage_words).unwrap_or_default();
    if on_hold {
        how = if how.is_empty() { "Paused for now.".to_owned() } else { format!("Paused for now. {how}") };
    }
    if let Some(by) = r.get("requester").or_else(|| r.get("informationSource")).and_then(reference_display) {
        how = if how.is_empty() {
            format!("Prescribed by {by}.")
        } else {
            let stop = if how.ends_with(['.', '!', '?']) { "" } else { "." };
            format!("{how}{stop} Prescribed by {by}.")
        };
    }
    let since = str_at(r, "authoredOn").or_else(|| choice_date(r, "effective")).or_else(|| str_at(r, "dateAsserted"));
    Some(Item {
        sort: key_or_undated(since),
        dedupe: Some(name.to_lowercase()),
        cells: vec![
            Cell::new(name),
            Cell::new(how),
            Cell::new(since.map(|s| date_words(s, false)).unwrap_or_default()),
        ],
    })
}

/// The name of a Medication contained in the resource (`"reference": "#med1"`), the
/// usual shape when a prescription names a compounded or unlisted product.
fn contained_medication(r: &Value, reference: &Value) -> Option<String> {
    let id = str_at(reference, "reference")?.strip_prefix('#')?;
    arr(r, "contained")
        .iter()
        .find(|c| str_at(c, "resourceType") == Some("Medication") && str_at(c, "id") == Some(id))
        .and_then(|m| m.get("code"))
        .and_then(concept)
}

fn dosage_words(d: &Value) -> String {
    if let Some(text) = str_at(d, "text").or_else(|| str_at(d, "patientInstruction")) {
        return text.to_owned();
    }
    let mut parts = Vec::new();
    if let Some(dose) = arr(d, "doseAndRate").iter().find_map(|dr| dr.get("doseQuantity").and_then(quantity)) {
        parts.push(dose);
    }
    if let Some(rep) = d.get("timing").and_then(|t| t.get("repeat")) {
        let freq = rep.get("frequency").and_then(number);
        let period = rep.get("period").and_then(number);
        let unit = match str_at(rep, "periodUnit") {
            Some("s") => "second",
            Some("min") => "minute",
            Some("h") => "hour",
            Some("d") => "day",
            Some("wk") => "week",
            Some("mo") => "month",
            Some("a") => "year",
            _ => "",
        };
        if let (Some(f), false) = (freq, unit.is_empty()) {
            let per = match period.as_deref() {
                None | Some("1") => format!("a {unit}"),
                Some(p) => format!("every {p} {unit}s"),
            };
            let times = if f == "1" { "once".to_owned() } else { format!("{f} times") };
            parts.push(format!("{times} {per}"));
        }
    }
    if d.get("asNeededBoolean").and_then(Value::as_bool) == Some(true) || d.get("asNeededCodeableConcept").is_some() {
        parts.push("when needed".to_owned());
    }
    parts.join(", ")
}

fn allergy(r: &Value) -> Option<Item> {
    let clinical = status_code(r, "clinicalStatus");
    let verification = status_code(r, "verificationStatus");
    if matches!(clinical.as_deref(), Some("inactive" | "resolved"))
        || matches!(verification.as_deref(), Some("refuted" | "entered-in-error"))
    {
        return None;
    }
    let mut substance = r.get("code").and_then(concept).unwrap_or_else(|| "Substance not recorded".to_owned());
    let kind = str_at(r, "type").map(|t| if t == "intolerance" { "intolerance" } else { "allergy" });
    let category = arr(r, "category").iter().filter_map(Value::as_str).next();
    match (category, kind) {
        (Some(c), Some(k)) => substance.push_str(&format!(" ({c} {k})")),
        (Some(c), None) => substance.push_str(&format!(" ({c})")),
        (None, Some(k)) => substance.push_str(&format!(" ({k})")),
        (None, None) => {}
    }
    if matches!(verification.as_deref(), Some("unconfirmed")) {
        substance.push_str(", not confirmed");
    }
    let reactions: Vec<String> = arr(r, "reaction")
        .iter()
        .take(6)
        .filter_map(|re| {
            let what: Vec<String> = arr(re, "manifestation").iter().take(6).filter_map(concept).collect();
            if what.is_empty() {
                return None;
            }
            let mut s = what.join(", ");
            if let Some(sev) = str_at(re, "severity") {
                s.push_str(&format!(" ({sev})"));
            }
            Some(s)
        })
        .collect();
    let risk = match str_at(r, "criticality") {
        Some("high") => Cell::styled("HIGH RISK", Style::Alert),
        Some("low") => Cell::new("low risk"),
        Some("unable-to-assess") => Cell::styled("risk not assessed", Style::Muted),
        _ => Cell::new(""),
    };
    let when = str_at(r, "recordedDate").or_else(|| choice_date(r, "onset"));
    Some(Item {
        sort: key_or_undated(when),
        dedupe: None,
        cells: vec![Cell::new(substance), Cell::new(reactions.join("; ")), risk],
    })
}

fn immunization(r: &Value) -> Option<Item> {
    let status = str_at(r, "status");
    if status == Some("entered-in-error") {
        return None;
    }
    let vaccine = r.get("vaccineCode").and_then(concept).unwrap_or_else(|| "Vaccine not recorded".to_owned());
    let date = choice_date(r, "occurrence");
    let shown_date = date.map(|d| date_words(d, false)).or_else(|| str_at(r, "occurrenceString").map(str::to_owned));
    let note = if status == Some("not-done") { Cell::styled("not given", Style::Muted) } else { Cell::new("") };
    Some(Item {
        sort: key_or_undated(date),
        dedupe: None,
        cells: vec![Cell::new(vaccine), Cell::new(shown_date.unwrap_or_default()), note],
    })
}

fn is_lab(r: &Value) -> bool {
    Classifier::builtin().classify("Observation", r).category == "labs"
}

fn lab(r: &Value) -> Option<Item> {
    if !is_lab(r) || matches!(str_at(r, "status"), Some("entered-in-error" | "cancelled")) {
        return None;
    }
    let test = r.get("code").and_then(concept).unwrap_or_else(|| "Test name not recorded".to_owned());
    let when = choice_date(r, "effective").or_else(|| str_at(r, "issued"));
    let mut result = value_words(r).unwrap_or_default();
    if result.is_empty() {
        let parts: Vec<String> = arr(r, "component")
            .iter()
            .take(8)
            .filter_map(|c| {
                let v = value_words(c)?;
                Some(match c.get("code").and_then(concept) {
                    Some(name) => format!("{name}: {v}"),
                    None => v,
                })
            })
            .collect();
        result = parts.join("; ");
    }
    if result.is_empty() {
        result = match r.get("dataAbsentReason").and_then(concept) {
            Some(why) => format!("no result ({why})"),
            None => "no result".to_owned(),
        };
    }
    if str_at(r, "status") == Some("preliminary") {
        result.push_str(" (preliminary)");
    }
    let range = arr(r, "referenceRange").first();
    Some(Item {
        sort: key_or_undated(when),
        dedupe: None,
        cells: vec![
            Cell::new(when.map(|w| date_words(w, false)).unwrap_or_default()),
            Cell::new(test),
            Cell::new(result),
            Cell::new(range.and_then(range_words).unwrap_or_default()),
            flag(r, range),
        ],
    })
}

fn value_words(v: &Value) -> Option<String> {
    if let Some(q) = v.get("valueQuantity").and_then(quantity) {
        return Some(q);
    }
    if let Some(c) = v.get("valueCodeableConcept").and_then(concept) {
        return Some(c);
    }
    if let Some(s) = str_at(v, "valueString") {
        return Some(s.to_owned());
    }
    if let Some(b) = v.get("valueBoolean").and_then(Value::as_bool) {
        return Some(if b { "yes" } else { "no" }.to_owned());
    }
    if let Some(n) = v.get("valueInteger").and_then(number) {
        return Some(n);
    }
    if let Some(range) = v.get("valueRange") {
        let low = range.get("low").and_then(quantity);
        let high = range.get("high").and_then(quantity);
        if low.is_some() || high.is_some() {
            return Some(format!("{} to {}", low.unwrap_or_default(), high.unwrap_or_default()));
        }
    }
    if let Some(ratio) = v.get("valueRatio")
        && let (Some(n), Some(d)) =
            (ratio.get("numerator").and_then(quantity), ratio.get("denominator").and_then(quantity))
    {
        return Some(format!("{n} / {d}"));
    }
    for key in ["valueDateTime", "valueTime"] {
        if let Some(s) = str_at(v, key) {
            return Some(date_words(s, true));
        }
    }
    None
}

fn range_words(range: &Value) -> Option<String> {
    if let Some(text) = str_at(range, "text") {
        return Some(text.to_owned());
    }
    let low = range.get("low").and_then(quantity);
    let high = range.get("high").and_then(quantity);
    match (low, high) {
        (Some(l), Some(h)) => {
            // "4.1 10*6/uL to 5.1 10*6/uL" reads better with the unit once.
            let unit = range.get("high").and_then(|q| str_at(q, "unit"));
            let l_bare = range.get("low").and_then(|q| q.get("value")).and_then(number);
            match (unit, l_bare) {
                (Some(u), Some(lb)) if range.get("low").and_then(|q| str_at(q, "unit")) == Some(u) => {
                    Some(format!("{lb} to {h}"))
                }
                _ => Some(format!("{l} to {h}")),
            }
        }
        (Some(l), None) => Some(format!("at least {l}")),
        (None, Some(h)) => Some(format!("up to {h}")),
        (None, None) => None,
    }
}

/// The laboratory's own interpretation when there is one; otherwise a comparison of the
/// value with the reference range when both are numbers in the same unit.
fn flag(r: &Value, range: Option<&Value>) -> Cell {
    let codes: Vec<&str> = arr(r, "interpretation").iter().flat_map(concept_codes).collect();
    for code in &codes {
        let word = match *code {
            "H" | "h" => "HIGH",
            "HH" => "CRITICALLY HIGH",
            "HU" => "VERY HIGH",
            "L" | "l" => "LOW",
            "LL" => "CRITICALLY LOW",
            "LU" => "VERY LOW",
            "A" | "a" => "ABNORMAL",
            "AA" => "CRITICALLY ABNORMAL",
            "POS" => "POSITIVE",
            "DET" => "DETECTED",
            "R" => "RESISTANT",
            ">" => "ABOVE MEASURABLE RANGE",
            "<" => "BELOW MEASURABLE RANGE",
            "W" => "WORSE",
            _ => continue,
        };
        return Cell::styled(word, Style::Alert);
    }
    if codes.iter().any(|c| matches!(*c, "N" | "NEG" | "ND" | "S" | "I" | "B" | "U")) {
        let word = match codes.first().copied() {
            Some("NEG") => "negative",
            Some("ND") => "not detected",
            Some("S") => "susceptible",
            Some("I") => "intermediate",
            Some("B") => "better",
            Some("U") => "significant change up",
            _ => "normal",
        };
        return Cell::styled(word, Style::Muted);
    }
    if let Some(other) = arr(r, "interpretation").first().and_then(concept) {
        return Cell::new(other);
    }
    compare_with_range(r, range).unwrap_or_else(|| Cell::new(""))
}

fn compare_with_range(r: &Value, range: Option<&Value>) -> Option<Cell> {
    let q = r.get("valueQuantity")?;
    if q.get("comparator").is_some() {
        return None;
    }
    let value = q.get("value")?.as_f64()?;
    let range = range?;
    let same_unit = |bound: &Value| quantity_unit(bound).is_none_or(|u| Some(u) == quantity_unit(q));
    if let Some(high) = range.get("high").filter(|b| same_unit(b)).and_then(|b| b.get("value")?.as_f64())
        && value > high
    {
        return Some(Cell::styled("ABOVE RANGE", Style::Alert));
    }
    if let Some(low) = range.get("low").filter(|b| same_unit(b)).and_then(|b| b.get("value")?.as_f64())
        && value < low
    {
        return Some(Cell::styled("BELOW RANGE", Style::Alert));
    }
    None
}

fn appointment(r: &Value, now_ms: i64) -> Option<Item> {
    let status = str_at(r, "status");
    if !matches!(status, Some("booked" | "pending" | "proposed" | "arrived" | "checked-in" | "waitlist") | None) {
        return None;
    }
    let start = str_at(r, "start");
    let requested = arr(r, "requestedPeriod").iter().find_map(|p| str_at(p, "start"));
    let when_raw = start.or(requested)?;
    let when_ms = sort_key(when_raw)?;
    if when_ms <= now_ms {
        return None;
    }
    let mut when = date_words(when_raw, true);
    if start.is_none() {
        when = format!("Requested from {when}");
    }
    let what = str_at(r, "description")
        .map(str::to_owned)
        .or_else(|| arr(r, "serviceType").iter().find_map(concept))
        .or_else(|| r.get("appointmentType").and_then(concept))
        .unwrap_or_else(|| "Appointment".to_owned());
    let with: Vec<String> =
        arr(r, "participant").iter().take(6).filter_map(|p| p.get("actor").and_then(reference_display)).collect();
    let what = if with.is_empty() { what } else { format!("{what}, with {}", with.join(", ")) };
    let status = match status {
        Some("proposed" | "pending") => Cell::styled("not yet confirmed", Style::Muted),
        Some("waitlist") => Cell::styled("on the waiting list", Style::Muted),
        _ => Cell::new("booked"),
    };
    Some(Item { sort: when_ms, dedupe: None, cells: vec![Cell::new(when), Cell::new(what), status] })
}

fn patient_name(p: &Value) -> String {
    let names = arr(p, "name");
    let pick = names
        .iter()
        .find(|n| str_at(n, "use") == Some("official"))
        .or_else(|| names.iter().find(|n| str_at(n, "use") == Some("usual")))
        .or_else(|| names.iter().find(|n| !matches!(str_at(n, "use"), Some("old" | "maiden"))))
        .or_else(|| names.first());
    let Some(n) = pick else { return "Name not recorded".to_owned() };
    if let Some(text) = str_at(n, "text") {
        return text.to_owned();
    }
    let mut parts: Vec<&str> = Vec::new();
    parts.extend(arr(n, "prefix").iter().filter_map(Value::as_str).take(3));
    parts.extend(arr(n, "given").iter().filter_map(Value::as_str).take(5));
    if let Some(f) = str_at(n, "family") {
        parts.push(f);
    }
    parts.extend(arr(n, "suffix").iter().filter_map(Value::as_str).take(3));
    let joined = parts.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    if joined.is_empty() { "Name not recorded".to_owned() } else { joined }
}

fn patient_facts(p: &Value, now: OffsetDateTime) -> Vec<(String, String)> {
    let mut facts = Vec::new();
    let deceased = str_at(p, "deceasedDateTime")
        .map(|d| date_words(d, false))
        .or_else(|| (p.get("deceasedBoolean").and_then(Value::as_bool) == Some(true)).then(|| "yes".to_owned()));
    if let Some(birth) = str_at(p, "birthDate") {
        let mut b = date_words(birth, false);
        if deceased.is_none()
            && let Some(age) = age_on(birth, now.date())
        {
            b.push_str(&format!(" (age {age})"));
        }
        facts.push(("Date of birth".to_owned(), b));
    } else {
        facts.push(("Date of birth".to_owned(), "not recorded".to_owned()));
    }
    let sex = match str_at(p, "gender") {
        Some("male") => "Male".to_owned(),
        Some("female") => "Female".to_owned(),
        Some("other") => "Other".to_owned(),
        Some("unknown") | None => "Not recorded".to_owned(),
        Some(other) => other.to_owned(),
    };
    facts.push(("Sex".to_owned(), sex));
    if let Some(d) = deceased {
        facts.push(("Deceased".to_owned(), d));
    }
    for id in arr(p, "identifier").iter().take(MAX_IDENTIFIERS) {
        if let Some(fact) = identifier(id) {
            facts.push(fact);
        }
    }
    facts
}

fn identifier(id: &Value) -> Option<(String, String)> {
    let value = str_at(id, "value")?;
    let ty = id.get("type");
    let code = ty.and_then(concept_code).map(|c| c.to_ascii_uppercase());
    // The common v2-0203 identifier types in plain words; others by their own text.
    let label = match code.as_deref() {
        Some("MR") => "Medical record number".to_owned(),
        Some("SS") => "Social Security Number".to_owned(),
        Some("DL") => "Driver's license".to_owned(),
        Some("PPN") => "Passport number".to_owned(),
        Some("MC") => "Medicare number".to_owned(),
        Some("MA") => "Medicaid number".to_owned(),
        _ => ty.and_then(concept).unwrap_or_else(|| "Identifier".to_owned()),
    };
    let system = str_at(id, "system");
    // A summary handed to a new clinic should not carry a full national ID number.
    let is_ssn = code.as_deref() == Some("SS") || system.is_some_and(|s| s.ends_with("us-ssn"));
    let shown = if is_ssn { mask(value) } else { value.to_owned() };
    let shown = match (code.is_none(), system) {
        (true, Some(s)) => format!(
            "{shown} ({})",
            s.trim_start_matches("https://").trim_start_matches("http://").trim_start_matches("urn:")
        ),
        _ => shown,
    };
    Some((label, shown))
}

fn mask(value: &str) -> String {
    let keep: String =
        value.chars().rev().filter(char::is_ascii_alphanumeric).take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("ending in {keep}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-01-01 09:00 UTC);

    fn summary(resources: Vec<Value>) -> Summary {
        build(&json!({"resourceType": "Patient"}), &resources, NOW)
    }

    fn section<'s>(s: &'s Summary, title: &str) -> &'s Section {
        s.sections.iter().find(|x| x.title == title).unwrap_or_else(|| panic!("section {title}"))
    }

    fn texts(row: &[Cell]) -> Vec<&str> {
        row.iter().map(|c| c.text.as_str()).collect()
    }

    fn lab(extra: Value) -> Value {
        let mut r = json!({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"text": "Potassium"}, "effectiveDateTime": "2025-06-01",
            "valueQuantity": {"value": 6.1, "unit": "mmol/L", "code": "mmol/L"},
            "referenceRange": [{"low": {"value": 3.5, "unit": "mmol/L", "code": "mmol/L"}, "high": {"value": 5.1, "unit": "mmol/L", "code": "mmol/L"}}]
        });
        if let (Some(m), Some(e)) = (r.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        r
    }

    #[test]
    fn lab_flags_come_from_the_lab_or_from_the_range() {
        let flag = |extra: Value| {
            let s = summary(vec![lab(extra)]);
            let row = &section(&s, "Recent lab results").rows[0];
            (row[4].text.clone(), row[4].style)
        };
        let interp = |code: &str| json!({"interpretation": [{"coding": [{"code": code}]}]});
        assert_eq!(flag(interp("H")), ("HIGH".to_owned(), Style::Alert));
        assert_eq!(flag(interp("LL")), ("CRITICALLY LOW".to_owned(), Style::Alert));
        assert_eq!(flag(interp("A")), ("ABNORMAL".to_owned(), Style::Alert));
        assert_eq!(flag(interp("N")), ("normal".to_owned(), Style::Muted), "the lab's word wins over the range");
        assert_eq!(flag(json!({})), ("ABOVE RANGE".to_owned(), Style::Alert), "6.1 > 5.1, no interpretation");
        let other_unit = json!({"valueQuantity": {"value": 6100, "unit": "umol/L", "code": "umol/L"}});
        assert_eq!(flag(other_unit).0, "", "no comparison across units");
        let censored = json!({"valueQuantity": {"value": 6.1, "comparator": ">", "unit": "mmol/L", "code": "mmol/L"}});
        assert_eq!(flag(censored).0, "");
        let s = summary(vec![lab(json!({}))]);
        assert_eq!(
            texts(&section(&s, "Recent lab results").rows[0])[..4],
            ["1 Jun 2025", "Potassium", "6.1 mmol/L", "3.5 to 5.1 mmol/L"]
        );
    }

    #[test]
    fn vital_signs_and_cancelled_labs_are_not_lab_results() {
        let vital = json!({"resourceType": "Observation", "status": "final", "code": {"text": "Heart rate"},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}]});
        let s = summary(vec![vital, lab(json!({"status": "cancelled"})), lab(json!({"status": "entered-in-error"}))]);
        assert!(section(&s, "Recent lab results").rows.is_empty());
        assert_eq!((s.used, s.not_shown), (0, 3));
    }

    #[test]
    fn only_current_problems_each_once_since_the_earliest() {
        let cond = |name: &str, status: Option<&str>, onset: &str, extra: Value| {
            let mut c = json!({"resourceType": "Condition", "code": {"text": name}, "onsetDateTime": onset});
            if let Some(st) = status {
                c["clinicalStatus"] = json!({"coding": [{"code": st}]});
            }
            if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            c
        };
        let s = summary(vec![
            cond("Asthma", Some("active"), "2020-05-01", json!({})),
            cond("asthma", Some("active"), "2010-05-01", json!({})),
            cond("Flu", Some("resolved"), "2021-01-01", json!({})),
            cond("Gout", Some("active"), "2019", json!({"verificationStatus": {"coding": [{"code": "refuted"}]}})),
            cond("Sprain", None, "2018", json!({"abatementDateTime": "2018-02"})),
            cond("Migraine", None, "2015-03", json!({})),
            cond(
                "Anaemia",
                Some("active"),
                "2016",
                json!({"verificationStatus": {"coding": [{"code": "provisional"}]}}),
            ),
        ]);
        let rows: Vec<Vec<&str>> = section(&s, "Health problems").rows.iter().map(|r| texts(r)).collect();
        assert_eq!(
            rows,
            [
                vec!["asthma", "1 May 2010", "current"],
                vec!["Migraine", "Mar 2015", "current"],
                vec!["Anaemia", "2016", "suspected"]
            ]
        );
    }

    #[test]
    fn medicines_active_or_paused_with_plain_instructions() {
        let s = summary(vec![
            json!({"resourceType": "MedicationRequest", "status": "stopped", "medicationCodeableConcept": {"text": "Old pill"}}),
            json!({"resourceType": "MedicationRequest", "status": "active", "authoredOn": "2024-02-03",
                   "contained": [{"resourceType": "Medication", "id": "m1", "code": {"text": "Compounded cream"}}],
                   "medicationReference": {"reference": "#m1"},
                   "requester": {"display": "Dr. Who"},
                   "dosageInstruction": [{"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                                          "asNeededBoolean": true,
                                          "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "application"}}]}]}),
            json!({"resourceType": "MedicationStatement", "status": "on-hold", "medicationCodeableConcept": {"text": "Aspirin"},
                   "dosage": [{"text": "75 mg daily"}]}),
        ]);
        let rows: Vec<Vec<&str>> = section(&s, "Medicines").rows.iter().map(|r| texts(r)).collect();
        assert_eq!(
            rows,
            [
                vec![
                    "Compounded cream",
                    "1 application, 2 times a day, when needed. Prescribed by Dr. Who.",
                    "3 Feb 2024"
                ],
                vec!["Aspirin", "Paused for now. 75 mg daily", ""],
            ]
        );
    }

    #[test]
    fn upcoming_appointments_only_soonest_first() {
        let appt = |status: &str, start: Option<&str>, requested: Option<&str>| {
            let mut a =
                json!({"resourceType": "Appointment", "status": status, "description": format!("{status} visit")});
            if let Some(s) = start {
                a["start"] = json!(s);
            }
            if let Some(r) = requested {
                a["requestedPeriod"] = json!([{"start": r}]);
            }
            a
        };
        let s = summary(vec![
            appt("booked", Some("2026-03-01T10:00:00Z"), None),
            appt("booked", Some("2025-12-01T10:00:00Z"), None),
            appt("cancelled", Some("2026-02-01T10:00:00Z"), None),
            appt("fulfilled", Some("2026-02-02T10:00:00Z"), None),
            appt("proposed", None, Some("2026-02-10T08:00:00-05:00")),
            appt("booked", None, None),
        ]);
        let rows: Vec<Vec<&str>> = section(&s, "Upcoming appointments").rows.iter().map(|r| texts(r)).collect();
        assert_eq!(
            rows,
            [
                vec!["Requested from 10 Feb 2026, 08:00 (UTC-05:00)", "proposed visit", "not yet confirmed"],
                vec!["1 Mar 2026, 10:00 (UTC)", "booked visit", "booked"],
            ]
        );
    }

    #[test]
    fn long_lists_are_capped_and_counted() {
        let shots: Vec<Value> = (0..100)
            .map(|i| json!({"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": format!("Shot {i}")},
                            "occurrenceDateTime": format!("{}-01-01", 1950 + i)}))
            .collect();
        let s = summary(shots);
        let imm = section(&s, "Immunizations");
        assert_eq!((imm.rows.len(), imm.omitted), (MAX_IMMUNIZATIONS, 100 - MAX_IMMUNIZATIONS));
        assert_eq!(imm.rows[0][0].text, "Shot 99", "newest first");
    }

    #[test]
    fn patient_facts_mask_national_ids() {
        let p = json!({"resourceType": "Patient", "name": [{"use": "old", "family": "Old"}, {"use": "official", "given": ["Ana", "María"], "family": "Ruiz"}],
                       "birthDate": "1980-06-15", "gender": "female",
                       "identifier": [{"type": {"coding": [{"code": "SS"}]}, "value": "999-12-3456"},
                                      {"type": {"coding": [{"code": "MR"}]}, "value": "A-77"}]});
        let s = build(&p, &[], NOW);
        assert_eq!(s.name, "Ana María Ruiz");
        let facts: Vec<(&str, &str)> = s.facts.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            facts,
            [
                ("Date of birth", "15 Jun 1980 (age 45)"),
                ("Sex", "Female"),
                ("Social Security Number", "ending in 3456"),
                ("Medical record number", "A-77"),
            ]
        );
    }
}
