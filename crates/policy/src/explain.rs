//! Plain-language explanations, from the same data the engine evaluated.
//!
//! # API
//!
//! * [`consent`]`(&ConsentRecord, now_ms) -> Vec<String>`: what a consent lets whom see, for
//!   the patient's "sharing" pages ("Dr. Lee at Riverside Cardiology can see your lab
//!   results and medications for your treatment until 31 December 2026. You can stop this
//!   at any time."). Names come from each actor's `reference.display`, else the reference.
//! * [`decision`]`(&Verdict, &ResourceFacts, &OperatorRules, Audience) -> String`: why a
//!   request was decided as it was, for the requester (`Audience::Requester`: "You cannot
//!   see …") or for someone else reading about it, e.g. the patient's access log
//!   (`Audience::Account("Your daughter")`: "Your daughter's account cannot see
//!   reproductive-health records because of adolescent confidentiality rules."). For the
//!   requester it is the verdict's own `reason`.

use crate::calendar::{plain_date, plain_date_ms};
use crate::consent::{ConsentRecord, ConsentStatus, DataMeaning, Period, Provision, ProvisionKind};
use crate::context::ResourceFacts;
use crate::engine::Verdict;
use crate::rules::OperatorRules;
use crate::scopes::{join_words, type_noun};

/// Whom a decision is explained to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// The person who made the request: "You cannot see …".
    Requester,
    /// Someone else, about the account that made the request, named as the server chooses
    /// ("Your daughter", "Sam Jones"): "Your daughter's account cannot see …".
    Account(&'a str),
}

impl Audience<'_> {
    fn subject(&self) -> String {
        match self {
            Audience::Requester => "You".to_string(),
            Audience::Account(name) => format!("{name}'s account"),
        }
    }
}

/// Plain names of portico's data categories (`classification.json`).
const CATEGORY_NAMES: &[(&str, &str)] = &[
    ("labs", "lab results"),
    ("vitals", "vital signs"),
    ("imaging", "imaging results"),
    ("notes", "clinical notes"),
    ("medications", "medications"),
    ("conditions", "conditions"),
    ("allergies", "allergies"),
    ("immunizations", "immunizations"),
    ("procedures", "procedures"),
    ("encounters", "visits and appointments"),
    ("insurance", "insurance and billing records"),
    ("documents", "documents"),
    ("demographics", "personal details"),
    ("care-plans", "care plans"),
    ("administrative", "administrative records"),
    ("other", "other records"),
];

/// Plain names of sensitivity and confidentiality labels (several codes share a name).
const LABEL_NAMES: &[(&str, &str)] = &[
    ("SEX", "reproductive-health"),
    ("STD", "sexual-health"),
    ("BH", "behavioral-health"),
    ("PSY", "behavioral-health"),
    ("MH", "behavioral-health"),
    ("ETH", "substance-use"),
    ("SUD", "substance-use"),
    ("HIV", "HIV"),
    ("SDV", "abuse-related"),
    ("GDIS", "genetic"),
    ("SCA", "sickle-cell"),
    ("TBOO", "sensitive"),
    ("U", "unrestricted"),
    ("L", "low-sensitivity"),
    ("M", "moderately sensitive"),
    ("N", "normal"),
    ("R", "restricted"),
    ("V", "very restricted"),
];

/// Plain phrases for HL7 v3 PurposeOfUse codes.
const PURPOSES: &[(&str, &str)] = &[
    ("TREAT", "for your treatment"),
    ("ETREAT", "in an emergency"),
    ("HPAYMT", "for payment"),
    ("HOPERAT", "for healthcare operations"),
    ("CAREMGT", "to manage your care"),
    ("PATRQT", "at your request"),
    ("FAMRQT", "when your family asks"),
    ("PWATRNY", "under a power of attorney"),
    ("SUPNWK", "for your support network"),
    ("PUBHLTH", "for public health"),
    ("HRESCH", "for research"),
    ("CLINTRCH", "for clinical trial research"),
    ("COC", "to coordinate your care"),
];

pub(crate) fn category_name(category: &str) -> String {
    CATEGORY_NAMES
        .iter()
        .find(|(c, _)| *c == category)
        .map_or_else(|| format!("{category} records"), |(_, n)| n.to_string())
}

fn label_name(label: &str) -> &str {
    LABEL_NAMES.iter().find(|(c, _)| *c == label).map_or(label, |(_, n)| n)
}

/// Distinct plain names of labels, in order.
fn label_names<'a>(labels: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for l in labels {
        let n = label_name(l);
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// "these lab results", "these records".
fn these(facts: &ResourceFacts) -> String {
    if facts.category.is_empty() || facts.id.is_none() {
        "these records".to_string()
    } else {
        format!("these {}", category_name(&facts.category))
    }
}

/// The sentence for a deny rule decided on `facts` under `rules`.
pub(crate) fn denial(rule: &str, facts: &ResourceFacts, rules: &OperatorRules, audience: Audience) -> String {
    let subject = audience.subject();
    match rule {
        "adolescent-confidentiality" => {
            let mut what = match &rules.adolescent {
                Some(a) => {
                    label_names(facts.labels.iter().map(String::as_str).filter(|l| a.labels.iter().any(|x| x == l)))
                }
                None => Vec::new(),
            };
            let cat;
            if what.is_empty() {
                cat = category_name(&facts.category);
                what.push(&cat);
                format!("{subject} cannot see {} because of adolescent confidentiality rules.", join_words(&what))
            } else {
                format!(
                    "{subject} cannot see {} records because of adolescent confidentiality rules.",
                    join_words(&what)
                )
            }
        }
        "part2-consent-required" => format!(
            "{subject} cannot see substance-use records: federal law (42 CFR Part 2) allows sharing them only with a \
             consent that names them."
        ),
        "results-hold" => {
            let days = rules.results_hold.as_ref().map_or(0, |h| h.days);
            format!(
                "{subject} cannot see this result yet: new lab and imaging results wait {days} day{} so that a \
                 clinician can review them first.",
                if days == 1 { "" } else { "s" }
            )
        }
        "consent-deny" => match audience {
            Audience::Requester => {
                format!("You cannot see {}: the patient's sharing choices withhold them from you.", these(facts))
            }
            Audience::Account(_) => {
                format!("{subject} cannot see {}: your sharing choices withhold them from it.", these(facts))
            }
        },
        "proxy-no-consent" => match audience {
            Audience::Requester => {
                format!("You cannot see {}: the person you care for has not shared them with you.", these(facts))
            }
            Audience::Account(_) => format!("{subject} cannot see {}: you have not shared them with it.", these(facts)),
        },
        "proxy-read-only" => match audience {
            Audience::Requester => {
                "You can look at, but not change or delete, the records of the person you care for.".to_string()
            }
            Audience::Account(_) => format!("{subject} can look at, but not change or delete, your records."),
        },
        "proxy-minor-access-ended" => {
            let age = rules.proxy_end_age.unwrap_or(18);
            format!(
                "{subject} can no longer see these records: sharing set up before the patient turned {age} ended \
                 when they turned {age}. They can share again from their own account."
            )
        }
        "care-relationship-required" => format!(
            "{subject} can see a patient's records only when treating them or when the patient has shared them; \
             neither is recorded."
        ),
        "purpose-not-permitted" => format!(
            "{subject} can see this patient's records for their treatment; the purpose given is not treatment and \
             the patient has not shared them for it."
        ),
        _ => format!("{subject} cannot see {}.", these(facts)),
    }
}

/// Why `verdict` was decided, for `audience`. For the requester this is the verdict's own
/// reason; for someone else, the same decision told about the requesting account.
pub fn decision(verdict: &Verdict, facts: &ResourceFacts, rules: &OperatorRules, audience: Audience) -> String {
    match audience {
        Audience::Requester => verdict.reason.clone(),
        Audience::Account(name) if !verdict.is_permit() => match verdict.rule {
            "adolescent-confidentiality"
            | "part2-consent-required"
            | "results-hold"
            | "consent-deny"
            | "proxy-no-consent"
            | "proxy-read-only"
            | "proxy-minor-access-ended"
            | "care-relationship-required"
            | "purpose-not-permitted" => denial(verdict.rule, facts, rules, audience),
            _ => format!("{name}'s account was refused: {}", lower_first(&verdict.reason)),
        },
        Audience::Account(name) => {
            let what = these(facts);
            match verdict.rule {
                "proxy-consent" | "clinician-consent" => {
                    format!("{name}'s account could see {what} because you shared them.")
                }
                "care-relationship" => format!("{name}'s account could see {what} because they are treating you."),
                "break-the-glass" => format!("{name}'s account used emergency access to see {what}."),
                "proxy-linked-patient" => {
                    format!("{name}'s account could see your personal details as your caregiver.")
                }
                _ => format!("{name}'s account was allowed: {}", lower_first(&verdict.reason)),
            }
        }
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if !s.starts_with("I ") => f.to_lowercase().collect::<String>() + c.as_str(),
        _ => s.to_string(),
    }
}

// ---- consents --------------------------------------------------------------------------------

/// Plain-language sentences for a consent at `now_ms`; see the module documentation.
pub fn consent(c: &ConsentRecord, now_ms: i64) -> Vec<String> {
    match c.status {
        ConsentStatus::Inactive => {
            return vec!["This sharing was stopped; it no longer lets anyone see your records.".into()];
        }
        ConsentStatus::Rejected | ConsentStatus::EnteredInError => {
            return vec!["This sharing choice is not in effect.".into()];
        }
        _ => {}
    }
    if let Some(end) = c.period.as_ref().and_then(|p| p.end.as_ref())
        && now_ms >= end.ms
    {
        return vec![format!("This sharing ended on {}; it no longer lets anyone see your records.", ended_on(end))];
    }
    let mut out = Vec::new();
    if matches!(c.status, ConsentStatus::Draft | ConsentStatus::Proposed) {
        out.push("This sharing is not in effect yet.".to_string());
    }
    describe(&c.root, true, &Frame::default(), &mut out);
    if out.iter().all(|s| s.starts_with("This sharing")) {
        out.push("This sharing choice does not let anyone see anything on its own.".into());
    }
    if c.status == ConsentStatus::Active {
        if let Some(start) = c.period.as_ref().and_then(|p| p.start.as_ref())
            && now_ms < start.ms
        {
            out.push(format!("It starts on {}.", plain_date(&start.text)));
        }
        out.push("You can stop this at any time.".into());
    }
    out
}

/// The date an exclusive end bound stands for ("2026-12-31" ends at the start of 2027-01-01).
fn ended_on(end: &crate::consent::Bound) -> String {
    if end.text.contains('T') { plain_date(&end.text) } else { plain_date_ms(end.ms - 1) }
}

/// What the provisions above a node said (nested provisions inherit and narrow it).
#[derive(Default, Clone)]
struct Frame<'c> {
    actors: Option<&'c Provision>,
    what: Option<&'c Provision>,
    purposes: Option<&'c Provision>,
    period: Option<&'c Period>,
    data_period: Option<&'c Period>,
    correct: bool,
}

fn describe<'c>(p: &'c Provision, is_root: bool, outer: &Frame<'c>, out: &mut Vec<String>) {
    let mut f = outer.clone();
    if !p.actors.is_empty() {
        f.actors = Some(p);
    }
    if p.matcher().class.is_some() || p.matcher().labels.is_some() || !p.codes.is_empty() || !p.data.is_empty() {
        f.what = Some(p);
    }
    if !p.purposes.is_empty() {
        f.purposes = Some(p);
    }
    if let Some(per) = &p.period {
        f.period = Some(per);
    }
    if let Some(dp) = &p.data_period {
        f.data_period = Some(dp);
    }
    f.correct |= p.actions.iter().any(|a| a == "correct");
    let base = is_root && p.is_base();
    if !base {
        match p.kind {
            ProvisionKind::Permit => {
                let mut s = format!(
                    "{} can {} {}{}{}{}.",
                    who(&f),
                    if f.correct { "see and correct" } else { "see" },
                    what(f.what),
                    purpose(&f),
                    data_period(&f),
                    until(&f)
                );
                let excepted: Vec<String> =
                    p.provisions.iter().filter(|c| c.kind == ProvisionKind::Deny).map(|c| what(Some(c))).collect();
                if !excepted.is_empty() {
                    s.push_str(&format!(
                        " This does not include {}.",
                        join_words(&excepted.iter().map(String::as_str).collect::<Vec<_>>())
                    ));
                }
                out.push(capitalise(&s));
            }
            // Denies nested directly in a permit were told as its exception.
            ProvisionKind::Deny => {
                let s = match f.actors {
                    Some(_) => format!("{} cannot see {}{}{}.", who(&f), what(f.what), purpose(&f), data_period(&f)),
                    None => {
                        format!("{} {} not shared with anyone{}{}.", what(f.what), "are", purpose(&f), data_period(&f))
                    }
                };
                out.push(capitalise(&s));
            }
        }
    }
    for c in &p.provisions {
        if p.kind == ProvisionKind::Permit && !base && c.kind == ProvisionKind::Deny && c.provisions.is_empty() {
            continue;
        }
        describe(c, false, &f, out);
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn who(f: &Frame) -> String {
    match f.actors {
        Some(p) => {
            let names: Vec<&str> = p.actors.iter().map(|a| a.name()).collect();
            join_words_or(&names)
        }
        None => "Clinicians who treat you".to_string(),
    }
}

fn join_words_or(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// "your lab results and medications", "your behavioral-health records", "all your records".
fn what(p: Option<&Provision>) -> String {
    let Some(p) = p else { return "all your records".to_string() };
    let mut kinds: Vec<String> = p.categories.iter().map(|c| category_name(c)).collect();
    kinds.extend(p.classes.iter().map(|t| type_noun(t)));
    let labels = label_names(p.security_labels.iter().map(String::as_str));
    let mut s = match (labels.is_empty(), kinds.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!("your {}", join_words(&kinds.iter().map(String::as_str).collect::<Vec<_>>())),
        (false, true) => format!("your {} records", join_words(&labels)),
        (false, false) => format!(
            "your {} {}",
            join_words(&labels),
            join_words(&kinds.iter().map(String::as_str).collect::<Vec<_>>())
        ),
    };
    if !p.codes.is_empty() {
        let codes: Vec<&str> = p.codes.iter().map(|c| c.rsplit('|').next().unwrap_or(c)).collect();
        s = if s.is_empty() {
            format!("your records coded {}", join_words_or(&codes))
        } else {
            format!("{s} coded {}", join_words_or(&codes))
        };
    }
    let named = |m: DataMeaning| -> Vec<&str> {
        p.data.iter().filter(|d| d.meaning == m).map(|d| d.display.as_deref().unwrap_or(&d.reference)).collect()
    };
    let (records, authors) = (named(DataMeaning::Instance), named(DataMeaning::AuthoredBy));
    if !records.is_empty() {
        let r = format!("the records {}", join_words(&records));
        s = if s.is_empty() { r } else { format!("{s} among {r}") };
    }
    if !authors.is_empty() {
        let a = format!("written by {}", join_words_or(&authors));
        s = if s.is_empty() { format!("your records {a}") } else { format!("{s} {a}") };
    }
    if s.is_empty() { "all your records".to_string() } else { s }
}

fn purpose(f: &Frame) -> String {
    let Some(p) = f.purposes else { return String::new() };
    let phrases: Vec<String> = p
        .purposes
        .iter()
        .map(|c| {
            PURPOSES.iter().find(|(k, _)| k == c).map_or_else(|| format!("for purpose {c}"), |(_, v)| v.to_string())
        })
        .collect();
    format!(" {}", join_words_or(&phrases.iter().map(String::as_str).collect::<Vec<_>>()))
}

fn data_period(f: &Frame) -> String {
    let Some(p) = f.data_period else { return String::new() };
    match (&p.start, &p.end) {
        (Some(s), Some(e)) => format!(", from records dated {} to {}", plain_date(&s.text), plain_date(&e.text)),
        (Some(s), None) => format!(", from records dated {} on", plain_date(&s.text)),
        (None, Some(e)) => format!(", from records dated up to {}", plain_date(&e.text)),
        (None, None) => String::new(),
    }
}

fn until(f: &Frame) -> String {
    match f.period.and_then(|p| p.end.as_ref()) {
        Some(e) => format!(" until {}", plain_date(&e.text)),
        None => String::new(),
    }
}
