//! Operator rules: jurisdiction and organisation policy that applies on top of consents,
//! as data (a JSON policy file), validated at start-up.
//!
//! # API
//!
//! * [`OperatorRules::builtin`]: the shipped defaults (`data/operator-rules.json`, embedded).
//! * [`OperatorRules::from_json`]: an operator's file, validated as a whole; an error names
//!   the problem and the server refuses to start with it.
//! * `Gate::with_rules(sink, Arc<OperatorRules>)` makes the gate decide under them;
//!   `Gate::new` uses the builtin rules. `engine::evaluate_with(ctx, rules, action, facts)`
//!   is the pure function.
//!
//! # File format
//!
//! ```json
//! {"version": 1,
//!  "adolescentConfidentiality": {"enabled": true, "fromAge": 12, "toAge": 17,
//!      "labels": ["SEX", "STD", "BH", "PSY", "MH"], "categories": []},
//!  "proxyAccessEndsAtAge": {"enabled": true, "age": 18},
//!  "part2": {"enabled": true, "labels": ["ETH", "SUD"], "namedBy": ["securityLabel", "data"]},
//!  "resultsHold": {"enabled": true, "days": 3, "resourceTypes": ["Observation", "DiagnosticReport"],
//!      "categories": ["labs", "imaging"]},
//!  "proxyRedactions": {"enabled": true, "redact": [{"resourceType": "Observation", "elements": ["note"]}]},
//!  "breakGlass": {"enabled": true, "maxMinutes": 60}}
//! ```
//!
//! Every section is optional (absent = disabled) and may carry a free-text `note`; unknown
//! keys are errors. Labels must be sensitivity codes `classification.json` assigns, categories
//! its categories, resource types R4 type names.
//!
//! | rule id | section | effect |
//! |---|---|---|
//! | `adolescent-confidentiality` | `adolescentConfidentiality` | records with one of `labels` (or in one of `categories`) of a patient who may be `fromAge`–`toAge` years old (by `PatientFacts::birth_date`; unknown birth date: not applied) are hidden from caregivers |
//! | `proxy-minor-access-ended` | `proxyAccessEndsAtAge` | once the patient is `age`, consents given (`dateTime`, else period start) before that birthday no longer count for caregivers |
//! | `part2-consent-required` | `part2` | records with one of `labels` reach caregivers and clinicians (not break-the-glass) only through a permit whose provision path names them: by `securityLabel` (one of `labels`), `data`, `class` or `code`, as `namedBy` lists |
//! | `results-hold` | `resultsHold` | resources of `resourceTypes` in `categories` whose `date_ms` is less than `days` days old (or in the future) are hidden from the patient and caregivers, except what the patient or that caregiver authored; creating one is not held |
//! | — (obligation) | `proxyRedactions` | resources of `resourceType` shown to a caregiver carry a `Redact` obligation for `elements` |
//! | `break-the-glass` | `breakGlass` | a clinician's `ETREAT` access with a stated reason, for `maxMinutes` from `break_glass_at_ms` |

use crate::filter::{ClassSet, DateRange, Match};
use portico_fhir::classify::{CATEGORIES, SENSITIVITY_LABELS};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};

const BUILTIN: &str = include_str!("../data/operator-rules.json");

/// The adolescent-confidentiality rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adolescent {
    pub from_age: i32,
    pub to_age: i32,
    pub labels: Vec<String>,
    pub categories: Vec<String>,
    /// One match per kind of criterion (labels; categories): alternatives.
    pub(crate) hidden: Vec<Arc<Match>>,
}

/// 42 CFR Part 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part2 {
    pub labels: Vec<String>,
    pub named_by_security_label: bool,
    pub named_by_data: bool,
    pub named_by_class: bool,
    pub named_by_code: bool,
    pub(crate) matcher: Arc<Match>,
}

impl Part2 {
    /// Whether the resource is a Part 2 record.
    pub fn covers(&self, f: &crate::ResourceFacts) -> bool {
        self.matcher.admits(f)
    }

    /// Whether a provision names Part 2 records (see the table in the module docs).
    pub fn named_by(&self, p: &crate::consent::Provision) -> bool {
        (self.named_by_security_label && p.security_labels.iter().any(|l| self.labels.contains(l)))
            || (self.named_by_data && !p.data.is_empty())
            || (self.named_by_class && (!p.classes.is_empty() || !p.categories.is_empty()))
            || (self.named_by_code && !p.codes.is_empty())
    }
}

/// Results held for clinician review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsHold {
    pub days: i64,
    pub resource_types: Vec<String>,
    pub categories: Vec<String>,
    pub(crate) scope: Arc<Match>,
}

impl ResultsHold {
    /// Results dated at or after this instant are held at `now_ms`.
    pub fn held_since(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.days.saturating_mul(crate::calendar::MS_PER_DAY))
    }

    /// The date part of the hold as a filter range.
    pub(crate) fn range(&self, now_ms: i64) -> DateRange {
        DateRange { from_ms: Some(self.held_since(now_ms)), to_ms: None, or_missing: false }
    }
}

/// Elements removed from resources of one type shown to caregivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    pub resource_type: String,
    pub elements: Vec<String>,
}

/// The operator rules in force; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperatorRules {
    pub adolescent: Option<Adolescent>,
    /// Caregivers' consents given before this age stop counting once the patient reaches it.
    pub proxy_end_age: Option<i32>,
    pub part2: Option<Part2>,
    pub results_hold: Option<ResultsHold>,
    pub proxy_redactions: Vec<Redaction>,
    /// Break-the-glass window in minutes (`None`: break-the-glass is switched off).
    pub break_glass_minutes: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    #[serde(rename = "_about")]
    _about: Option<String>,
    version: u32,
    adolescent_confidentiality: Option<AdolescentFile>,
    proxy_access_ends_at_age: Option<EndsFile>,
    part2: Option<Part2File>,
    results_hold: Option<HoldFile>,
    proxy_redactions: Option<RedactionsFile>,
    break_glass: Option<BreakGlassFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AdolescentFile {
    enabled: bool,
    #[serde(rename = "note")]
    _note: Option<String>,
    from_age: i32,
    to_age: i32,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    categories: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EndsFile {
    enabled: bool,
    #[serde(rename = "note")]
    _note: Option<String>,
    age: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Part2File {
    enabled: bool,
    #[serde(rename = "note")]
    _note: Option<String>,
    labels: Vec<String>,
    named_by: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HoldFile {
    enabled: bool,
    #[serde(rename = "note")]
    _note: Option<String>,
    days: i64,
    resource_types: Vec<String>,
    categories: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RedactionsFile {
    enabled: bool,
    #[serde(rename = "note")]
    _note: Option<String>,
    redact: Vec<RedactFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RedactFile {
    resource_type: String,
    elements: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BreakGlassFile {
    enabled: bool,
    #[serde(rename = "note")]
    _note: Option<String>,
    max_minutes: i64,
}

fn check_labels(section: &str, labels: &[String]) -> Result<(), String> {
    match labels.iter().find(|l| !SENSITIVITY_LABELS.contains(&l.as_str())) {
        Some(bad) => Err(format!(
            "{section}: '{bad}' is not a sensitivity label classification.json assigns ({})",
            SENSITIVITY_LABELS.join(", ")
        )),
        None => Ok(()),
    }
}

fn check_categories(section: &str, categories: &[String]) -> Result<(), String> {
    match categories.iter().find(|c| !CATEGORIES.contains(&c.as_str())) {
        Some(bad) => Err(format!("{section}: '{bad}' is not a category ({})", CATEGORIES.join(", "))),
        None => Ok(()),
    }
}

fn check_types(section: &str, types: &[String]) -> Result<(), String> {
    match types.iter().find(|t| !portico_fhir::resource_types::is_resource_type(t)) {
        Some(bad) => Err(format!("{section}: '{bad}' is not an R4 resource type")),
        None => Ok(()),
    }
}

impl OperatorRules {
    /// Every rule switched off.
    pub fn none() -> OperatorRules {
        OperatorRules::default()
    }

    /// The shipped defaults (`data/operator-rules.json`).
    pub fn builtin() -> &'static OperatorRules {
        static RULES: OnceLock<OperatorRules> = OnceLock::new();
        RULES.get_or_init(|| match OperatorRules::from_json(BUILTIN) {
            Ok(r) => r,
            // Embedded data: a broken file is a build defect, caught by `builtin_rules_load`.
            Err(e) => panic!("embedded data/operator-rules.json is invalid: {e}"),
        })
    }

    /// Parse and validate a policy file; the error names the section and the problem.
    pub fn from_json(text: &str) -> Result<OperatorRules, String> {
        let file: File = serde_json::from_str(text).map_err(|e| format!("operator rules: {e}"))?;
        if file.version != 1 {
            return Err(format!("operator rules: version {} is not supported (expected 1)", file.version));
        }
        let mut rules = OperatorRules::default();

        if let Some(a) = file.adolescent_confidentiality.filter(|a| a.enabled) {
            let s = "adolescentConfidentiality";
            if !(0..=150).contains(&a.from_age) || !(a.from_age..=150).contains(&a.to_age) {
                return Err(format!("{s}: fromAge and toAge must be ages with fromAge <= toAge"));
            }
            if a.labels.is_empty() && a.categories.is_empty() {
                return Err(format!("{s}: name at least one label or category to hide"));
            }
            check_labels(s, &a.labels)?;
            check_categories(s, &a.categories)?;
            let mut hidden = Vec::new();
            if !a.labels.is_empty() {
                hidden.push(Arc::new(Match::labels(a.labels.clone())));
            }
            if !a.categories.is_empty() {
                hidden.push(Arc::new(Match {
                    class: Some(ClassSet { resource_types: vec![], categories: a.categories.clone() }),
                    ..Match::default()
                }));
            }
            rules.adolescent = Some(Adolescent {
                from_age: a.from_age,
                to_age: a.to_age,
                labels: a.labels,
                categories: a.categories,
                hidden,
            });
        }

        if let Some(e) = file.proxy_access_ends_at_age.filter(|e| e.enabled) {
            if !(1..=150).contains(&e.age) {
                return Err("proxyAccessEndsAtAge: age must be between 1 and 150".into());
            }
            rules.proxy_end_age = Some(e.age);
        }

        if let Some(p) = file.part2.filter(|p| p.enabled) {
            if p.labels.is_empty() {
                return Err("part2: name at least one label".into());
            }
            check_labels("part2", &p.labels)?;
            let mut named = [false; 4];
            for n in &p.named_by {
                match n.as_str() {
                    "securityLabel" => named[0] = true,
                    "data" => named[1] = true,
                    "class" => named[2] = true,
                    "code" => named[3] = true,
                    other => {
                        return Err(format!(
                            "part2: namedBy '{other}' is not understood; use securityLabel, data, class or code"
                        ));
                    }
                }
            }
            if !named.iter().any(|n| *n) {
                return Err("part2: namedBy must list at least one way a consent names the records".into());
            }
            rules.part2 = Some(Part2 {
                matcher: Arc::new(Match::labels(p.labels.clone())),
                labels: p.labels,
                named_by_security_label: named[0],
                named_by_data: named[1],
                named_by_class: named[2],
                named_by_code: named[3],
            });
        }

        if let Some(h) = file.results_hold.filter(|h| h.enabled) {
            if !(0..=365).contains(&h.days) {
                return Err("resultsHold: days must be between 0 and 365".into());
            }
            if h.resource_types.is_empty() || h.categories.is_empty() {
                return Err("resultsHold: name the resource types and categories of results".into());
            }
            check_types("resultsHold", &h.resource_types)?;
            check_categories("resultsHold", &h.categories)?;
            rules.results_hold = Some(ResultsHold {
                days: h.days,
                scope: Arc::new(Match {
                    resource_types: Some(h.resource_types.clone()),
                    categories: Some(h.categories.clone()),
                    ..Match::default()
                }),
                resource_types: h.resource_types,
                categories: h.categories,
            });
        }

        if let Some(r) = file.proxy_redactions.filter(|r| r.enabled) {
            for item in r.redact {
                check_types("proxyRedactions", std::slice::from_ref(&item.resource_type))?;
                if item.elements.is_empty() {
                    return Err(format!("proxyRedactions: list the elements to remove from {}", item.resource_type));
                }
                if let Some(bad) = item.elements.iter().find(|e| !is_element_name(e)) {
                    return Err(format!(
                        "proxyRedactions: '{bad}' is not a top-level element name (resourceType, id and meta cannot be removed)"
                    ));
                }
                rules.proxy_redactions.push(Redaction { resource_type: item.resource_type, elements: item.elements });
            }
        }

        if let Some(b) = file.break_glass.filter(|b| b.enabled) {
            if !(1..=24 * 60).contains(&b.max_minutes) {
                return Err("breakGlass: maxMinutes must be between 1 and 1440".into());
            }
            rules.break_glass_minutes = Some(b.max_minutes);
        }
        Ok(rules)
    }

    /// The redactions for resources of `resource_type` (`*`: every type) shown to caregivers.
    pub fn redactions_for<'a>(&'a self, resource_type: &'a str) -> impl Iterator<Item = &'a Redaction> + 'a {
        self.proxy_redactions.iter().filter(move |r| resource_type == "*" || r.resource_type == resource_type)
    }
}

fn is_element_name(e: &str) -> bool {
    let b = e.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(u8::is_ascii_alphanumeric)
        && !matches!(e, "id" | "meta" | "resourceType")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_load() {
        let r = OperatorRules::builtin();
        let a = r.adolescent.as_ref().unwrap();
        assert_eq!((a.from_age, a.to_age), (12, 17));
        assert_eq!(a.labels, ["SEX", "STD", "BH", "PSY", "MH"]);
        assert_eq!(r.proxy_end_age, Some(18));
        assert_eq!(r.part2.as_ref().unwrap().labels, ["ETH", "SUD"]);
        assert_eq!(r.results_hold.as_ref().unwrap().days, 3);
        assert_eq!(
            r.proxy_redactions,
            vec![Redaction { resource_type: "Observation".into(), elements: vec!["note".into()] }]
        );
        assert_eq!(r.break_glass_minutes, Some(60));
    }

    #[test]
    fn sections_switch_off() {
        let r = OperatorRules::from_json(r#"{"version": 1, "part2": {"enabled": false, "labels": [], "namedBy": []}}"#)
            .unwrap();
        assert_eq!(r, OperatorRules::none());
    }

    #[test]
    fn invalid_files_are_refused_with_a_reason() {
        for (text, words) in [
            (r#"{"version": 2}"#, "version 2"),
            (r#"{"version": 1, "frobnicate": {}}"#, "frobnicate"),
            (
                r#"{"version": 1, "part2": {"enabled": true, "labels": ["ETH"], "namedBy": ["securityLabel"], "extra": 1}}"#,
                "extra",
            ),
            (
                r#"{"version": 1, "part2": {"enabled": true, "labels": ["DRUGS"], "namedBy": ["securityLabel"]}}"#,
                "'DRUGS'",
            ),
            (r#"{"version": 1, "part2": {"enabled": true, "labels": ["ETH"], "namedBy": ["mood"]}}"#, "'mood'"),
            (
                r#"{"version": 1, "adolescentConfidentiality": {"enabled": true, "fromAge": 17, "toAge": 12, "labels": ["SEX"]}}"#,
                "fromAge",
            ),
            (
                r#"{"version": 1, "adolescentConfidentiality": {"enabled": true, "fromAge": 12, "toAge": 17, "categories": ["gossip"]}}"#,
                "'gossip'",
            ),
            (
                r#"{"version": 1, "resultsHold": {"enabled": true, "days": 400, "resourceTypes": ["Observation"], "categories": ["labs"]}}"#,
                "days",
            ),
            (
                r#"{"version": 1, "resultsHold": {"enabled": true, "days": 3, "resourceTypes": ["Obs"], "categories": ["labs"]}}"#,
                "'Obs'",
            ),
            (
                r#"{"version": 1, "proxyRedactions": {"enabled": true, "redact": [{"resourceType": "Observation", "elements": ["meta"]}]}}"#,
                "'meta'",
            ),
            (r#"{"version": 1, "breakGlass": {"enabled": true, "maxMinutes": 0}}"#, "maxMinutes"),
            ("not json", "operator rules"),
        ] {
            let e = OperatorRules::from_json(text).unwrap_err();
            assert!(e.contains(words), "{e} lacks {words}");
        }
    }
}
