//! Records in plain language, told to one patient: who looked at or changed which kinds of
//! their data, when, with which app, and whether it was allowed. Only what concerns that
//! patient is told; other patients are never named.

use crate::record::{AuditRecord, EntityRole, Interaction, Outcome};
use std::collections::BTreeMap;

/// RFC 3339 instant with milliseconds (UTC) of an epoch-ms time.
pub fn instant(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&f).unwrap_or_default()
}

/// "3 May 2026, 14:02 UTC".
pub fn human_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[day padding:none] [month repr:long] [year], [hour]:[minute] UTC");
    t.format(&f).unwrap_or_default()
}

/// Singular and plural names of a data category.
pub fn category_names(category: &str) -> (&'static str, &'static str) {
    match category {
        "labs" => ("lab result", "lab results"),
        "vitals" => ("vital sign reading", "vital sign readings"),
        "imaging" => ("imaging report", "imaging reports"),
        "notes" => ("clinical note", "clinical notes"),
        "medications" => ("medication record", "medication records"),
        "conditions" => ("condition", "conditions"),
        "allergies" => ("allergy record", "allergy records"),
        "immunizations" => ("immunization record", "immunization records"),
        "procedures" => ("procedure record", "procedure records"),
        "encounters" => ("visit or appointment", "visits and appointments"),
        "insurance" => ("insurance record", "insurance records"),
        "documents" => ("document", "documents"),
        "demographics" => ("personal details record", "personal details records"),
        "care-plans" => ("care plan", "care plans"),
        "administrative" => ("administrative record", "administrative records"),
        _ => ("record", "records"),
    }
}

/// One line of a patient's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    /// RFC 3339 time.
    pub when: String,
    /// Who acted, as the patient should read it ("The server operator", "You").
    pub who: String,
    /// The app used, if known.
    pub app: Option<String>,
    /// The whole sentence.
    pub text: String,
    /// Categories of this patient's data involved, sorted.
    pub categories: Vec<String>,
    /// `allowed`, `refused` or `not completed`.
    pub outcome: &'static str,
}

fn who(r: &AuditRecord, patient: &str) -> String {
    match r.actor.kind.as_str() {
        "operator" => "The server operator".to_string(),
        "patient" if r.actor.id == patient => "You".to_string(),
        "patient" => "Another patient".to_string(),
        "anonymous" => "Someone who was not signed in".to_string(),
        "practitioner" => "A clinician".to_string(),
        "related-person" => "A caregiver".to_string(),
        other => format!("A user ({other})"),
    }
}

/// "3 lab results and 1 condition".
fn counted(by_category: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = by_category
        .iter()
        .map(|(c, n)| {
            let (one, many) = category_names(c);
            if *n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
        })
        .collect();
    match parts.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Tell record `r` to `patient`.
pub fn describe(r: &AuditRecord, patient: &str) -> AccessEntry {
    let mine: Vec<_> = r.entities.iter().filter(|e| e.patients.iter().any(|p| p == patient)).collect();
    let mut by_category: BTreeMap<String, usize> = BTreeMap::new();
    for e in &mine {
        *by_category.entry(e.category.clone()).or_default() += 1;
    }
    let categories: Vec<String> = by_category.keys().filter(|c| !c.is_empty()).cloned().collect();
    let target = mine.iter().find(|e| e.role == EntityRole::Target).copied();
    let thing = |with_article: bool| {
        let c = target.map(|e| e.category.as_str()).or_else(|| categories.first().map(String::as_str)).unwrap_or("");
        let one = category_names(c).0;
        if with_article {
            let article = if one.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
            format!("{article} {one}")
        } else {
            one.to_string()
        }
    };
    let returned = mine.iter().filter(|e| e.role != EntityRole::Target).count();
    let (did, tried) = match r.interaction {
        Interaction::Read | Interaction::VRead => {
            (format!("looked at your {}", thing(false)), format!("look at your {}", thing(false)))
        }
        Interaction::HistoryInstance => (
            format!("looked at the change history of your {}", thing(false)),
            format!("look at the history of your {}", thing(false)),
        ),
        Interaction::SearchType | Interaction::SearchSystem | Interaction::HistoryType | Interaction::HistorySystem => {
            let seen = if returned == 0 {
                "; nothing of yours was shown".to_string()
            } else {
                format!(" and saw {}", counted(&by_category))
            };
            (format!("searched your records{seen}"), "search your records".to_string())
        }
        Interaction::Everything => {
            let seen = if returned == 0 { String::new() } else { format!(" ({})", counted(&by_category)) };
            (format!("downloaded your whole record{seen}"), "download your whole record".to_string())
        }
        Interaction::Create => {
            (format!("added {} to your record", thing(true)), format!("add {} to your record", thing(true)))
        }
        Interaction::Update | Interaction::Patch => {
            (format!("changed your {}", thing(false)), format!("change your {}", thing(false)))
        }
        Interaction::Delete => (format!("deleted your {}", thing(false)), format!("delete your {}", thing(false))),
        Interaction::AccessLog => ("viewed your access log".to_string(), "view your access log".to_string()),
        Interaction::Login => ("signed in".to_string(), "sign in".to_string()),
        Interaction::Logout => ("signed out".to_string(), "sign out".to_string()),
        Interaction::StepUp => ("confirmed a verification code".to_string(), "confirm a verification code".to_string()),
        Interaction::Authorize => ("connected an app to your record".to_string(), "connect an app".to_string()),
        Interaction::TokenIssue => {
            ("received access to your record".to_string(), "get access to your record".to_string())
        }
        Interaction::TokenRefresh => ("renewed its access to your record".to_string(), "renew access".to_string()),
        Interaction::Revoke => ("ended an app's or device's access".to_string(), "end access".to_string()),
        Interaction::SecuritySettings => {
            ("changed security settings".to_string(), "change security settings".to_string())
        }
        Interaction::Authenticate => {
            ("was refused: no valid sign-in".to_string(), "reach your records without signing in".to_string())
        }
        Interaction::BreakGlass => {
            ("started emergency access to your record".to_string(), "start emergency access".to_string())
        }
        Interaction::BulkExport => {
            let seen = if returned == 0 { String::new() } else { format!(" ({})", counted(&by_category)) };
            (format!("worked on an export of your record{seen}"), "export your record".to_string())
        }
    };
    let who = who(r, patient);
    let app = r.client.clone();
    let via = app.as_ref().map(|a| format!(" using the app \u{201c}{a}\u{201d}")).unwrap_or_default();
    let (text, outcome) = match r.outcome {
        Outcome::Success => (format!("{who}{via} {did}."), "allowed"),
        Outcome::Denied => {
            let why = r.reason.as_ref().map(|x| format!(" {x}")).unwrap_or_default();
            (format!("{who}{via} tried to {tried} but was not allowed.{why}"), "refused")
        }
        Outcome::Failed => (format!("{who}{via} tried to {tried}, but it did not go through."), "not completed"),
    };
    AccessEntry { when: instant(r.time_ms), who, app, text, categories, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Actor, Entity};

    fn entity(reference: &str, role: EntityRole, cat: &str, p: &str) -> Entity {
        Entity { reference: reference.into(), role, category: cat.into(), patients: vec![p.into()] }
    }

    #[test]
    fn tells_a_search_in_counts_and_hides_other_patients() {
        let mut r =
            AuditRecord::new(1_777_777_777_000, "r", Interaction::SearchType, Actor::new("operator", "operator"));
        r.entities = vec![
            entity("Observation/1", EntityRole::Match, "labs", "me"),
            entity("Observation/2", EntityRole::Match, "labs", "me"),
            entity("Condition/3", EntityRole::Match, "conditions", "me"),
            entity("Observation/4", EntityRole::Match, "labs", "someone-else"),
        ];
        r.normalise();
        let e = describe(&r, "me");
        assert_eq!(e.text, "The server operator searched your records and saw 1 condition and 2 lab results.");
        assert_eq!(e.categories, vec!["conditions", "labs"]);
        assert!(!e.text.contains("someone-else"));
        assert_eq!(e.when, "2026-05-03T03:09:37.000Z");
    }

    #[test]
    fn tells_reads_writes_denials_and_apps() {
        let mut r = AuditRecord::new(0, "r", Interaction::Read, Actor::new("patient", "me"));
        r.entities = vec![entity("Observation/1/_history/1", EntityRole::Target, "labs", "me")];
        assert_eq!(describe(&r, "me").text, "You looked at your lab result.");
        r.client = Some("Health Diary".into());
        r.actor = Actor::new("patient", "other");
        r.outcome = Outcome::Denied;
        r.reason = Some("This record is not part of your chart.".into());
        let e = describe(&r, "me");
        assert_eq!(
            e.text,
            "Another patient using the app \u{201c}Health Diary\u{201d} tried to look at your lab result but was not allowed. This record is not part of your chart."
        );
        assert_eq!(e.outcome, "refused");
        let mut w = AuditRecord::new(0, "r", Interaction::Create, Actor::new("operator", "operator"));
        w.entities = vec![entity("Immunization/1/_history/1", EntityRole::Target, "immunizations", "me")];
        assert_eq!(describe(&w, "me").text, "The server operator added an immunization record to your record.");
        w.outcome = Outcome::Failed;
        assert_eq!(
            describe(&w, "me").text,
            "The server operator tried to add an immunization record to your record, but it did not go through."
        );
        assert_eq!(human_time(0), "1 January 1970, 00:00 UTC");
    }
}
