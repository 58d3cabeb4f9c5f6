//! The search filter: one request's permissions compiled into a condition on a resource's
//! stored facts, which the store applies **in SQL** (so hidden resources never appear in a
//! page, a `total`, an `_include` or a paging link) and [`crate::SearchPermit::admits`]
//! checks for rows the store already holds.
//!
//! The same [`Match`] values decide single resources: a consent provision's data criteria
//! are parsed once into a `Match` ([`crate::consent::Provision::matcher`]), and the engine
//! tests them per resource or hands them to the store for a search. That is what makes a
//! search admit exactly what per-resource reads permit.
//!
//! # Semantics (what the store must implement)
//!
//! A resource is admitted by a [`SearchFilter`] when
//! `(include is None OR some include clause admits it) AND no exclude clause admits it`.
//! `include: Some(vec![])` admits nothing.
//!
//! A [`Clause`] admits a resource when **every** `when` match admits it and **no** `unless`
//! match admits it: `m1 AND m2 AND NOT u1 AND NOT u2`.
//!
//! A [`Match`] is a conjunction of the criteria that are set (`None` = no criterion):
//!
//! | field | the resource must … | columns |
//! |---|---|---|
//! | `resource_types` | be of one of these types | `res_type` |
//! | `categories` | be in one of these categories | `category` |
//! | `class` | be of one of its types **or** in one of its categories | `res_type`, `category` |
//! | `category_codes` | carry one of these category codings ([`crate::scopes::category_matches`]: `system|code` exact, bare `code` any system) | `category_codes` |
//! | `labels` | carry one of these labels (sensitivity or confidentiality code, exact) | `labels` |
//! | `date` | have `date_ms` in `[from_ms, to_ms)` (open ends when `None`); a resource without a date is admitted only if `or_missing` | `date_ms` |
//! | `data` | be one of `references` (`Type/id`) **or** have its `author` in `authors` | `res_type`, `id`, `author` |
//!
//! An empty `Match` (every field `None`) admits everything; a list criterion with an empty
//! list admits nothing.

use crate::context::ResourceFacts;
use crate::scopes::category_matches;
use serde::Serialize;
use std::sync::Arc;

/// Resources of some types or in some categories (FHIR `Consent.provision.class`: a list of
/// alternatives, some naming resource types, some portico categories).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ClassSet {
    pub resource_types: Vec<String>,
    pub categories: Vec<String>,
}

impl ClassSet {
    pub fn admits(&self, facts: &ResourceFacts) -> bool {
        self.resource_types.contains(&facts.resource_type) || self.categories.contains(&facts.category)
    }
    pub fn is_empty(&self) -> bool {
        self.resource_types.is_empty() && self.categories.is_empty()
    }
}

/// A range of `ResourceFacts::date_ms`: `[from_ms, to_ms)`, open where `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DateRange {
    pub from_ms: Option<i64>,
    /// Exclusive.
    pub to_ms: Option<i64>,
    /// Whether a resource without a date is admitted. Deny provisions and exclusions set
    /// this (an undated resource might lie in the period, so it is withheld); permits do not
    /// (an undated resource cannot be shown to lie in it).
    pub or_missing: bool,
}

impl DateRange {
    pub fn admits(&self, date_ms: Option<i64>) -> bool {
        match date_ms {
            None => self.or_missing,
            Some(d) => self.from_ms.is_none_or(|f| d >= f) && self.to_ms.is_none_or(|t| d < t),
        }
    }
}

/// Specific resources (`Type/id`) or resources written by someone (`Type/id` of the author).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct DataSet {
    pub references: Vec<String>,
    pub authors: Vec<String>,
}

impl DataSet {
    pub fn admits(&self, facts: &ResourceFacts) -> bool {
        let is_ref = |r: &String| match &facts.id {
            Some(id) => is_reference_to(r, &facts.resource_type, id),
            None => false,
        };
        self.references.iter().any(is_ref)
            || facts.author.as_deref().is_some_and(|a| self.authors.iter().any(|x| x == a))
    }
}

/// Whether `reference` is exactly `{resource_type}/{id}` (no allocation).
pub(crate) fn is_reference_to(reference: &str, resource_type: &str, id: &str) -> bool {
    reference.len() == resource_type.len() + 1 + id.len()
        && reference.starts_with(resource_type)
        && reference.as_bytes()[resource_type.len()] == b'/'
        && reference.ends_with(id)
}

/// A conjunction of criteria on a resource's facts; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Match {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<ClassSet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category_codes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<DateRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSet>,
}

impl Match {
    /// Whether no criterion is set (the match admits every resource).
    pub fn is_empty(&self) -> bool {
        self.resource_types.is_none()
            && self.categories.is_none()
            && self.class.is_none()
            && self.category_codes.is_none()
            && self.labels.is_none()
            && self.date.is_none()
            && self.data.is_none()
    }

    /// Resources carrying any of `labels`.
    pub fn labels(labels: Vec<String>) -> Match {
        Match { labels: Some(labels), ..Match::default() }
    }

    pub fn admits(&self, f: &ResourceFacts) -> bool {
        self.resource_types.as_ref().is_none_or(|ts| ts.contains(&f.resource_type))
            && self.categories.as_ref().is_none_or(|cs| cs.contains(&f.category))
            && self.class.as_ref().is_none_or(|c| c.admits(f))
            && self.category_codes.as_ref().is_none_or(|cs| cs.iter().any(|c| category_matches(c, &f.category_codes)))
            && self.labels.as_ref().is_none_or(|ls| ls.iter().any(|l| f.labels.contains(l)))
            && self.date.as_ref().is_none_or(|d| d.admits(f.date_ms))
            && self.data.as_ref().is_none_or(|d| d.admits(f))
    }
}

/// `when` all admit and no `unless` admits. The matches are shared (`Arc`) with the
/// consents and rules they come from, so compiling a filter copies no criteria.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Clause {
    pub when: Vec<Arc<Match>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unless: Vec<Arc<Match>>,
}

impl Clause {
    pub fn admits(&self, f: &ResourceFacts) -> bool {
        clause_admits(self.when.iter().map(|m| &**m), self.unless.iter().map(|m| &**m), f)
    }
}

/// The clause test over borrowed matches (the engine's per-resource path uses this without
/// building a [`Clause`]).
pub(crate) fn clause_admits<'m>(
    mut when: impl Iterator<Item = &'m Match>,
    mut unless: impl Iterator<Item = &'m Match>,
    f: &ResourceFacts,
) -> bool {
    when.all(|m| m.admits(f)) && !unless.any(|m| m.admits(f))
}

/// What a search may return, beyond its compartments and SMART limits; see the module
/// documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SearchFilter {
    /// `None`: every resource (that no exclusion removes). `Some(clauses)`: only resources
    /// some clause admits.
    pub include: Option<Vec<Clause>>,
    /// Resources any of these admit are removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Clause>,
}

impl SearchFilter {
    /// Whether the filter restricts nothing.
    pub fn is_unrestricted(&self) -> bool {
        self.include.is_none() && self.exclude.is_empty()
    }

    pub fn admits(&self, f: &ResourceFacts) -> bool {
        self.include.as_ref().is_none_or(|cs| cs.iter().any(|c| c.admits(f)))
            && !self.exclude.iter().any(|c| c.admits(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(t: &str, cat: &str, labels: &[&str], date: Option<i64>, author: Option<&str>) -> ResourceFacts {
        let mut r = ResourceFacts::type_level(t);
        r.id = Some("x1".into());
        r.category = cat.into();
        r.labels = labels.iter().map(|s| s.to_string()).collect();
        r.date_ms = date;
        r.author = author.map(str::to_string);
        r
    }

    #[test]
    fn matches_are_conjunctions_and_lists_alternatives() {
        let m = Match {
            class: Some(ClassSet { resource_types: vec!["Condition".into()], categories: vec!["labs".into()] }),
            labels: Some(vec!["PSY".into(), "BH".into()]),
            ..Match::default()
        };
        assert!(m.admits(&f("Observation", "labs", &["BH", "R"], None, None)));
        assert!(m.admits(&f("Condition", "conditions", &["PSY", "R"], None, None)));
        assert!(!m.admits(&f("Condition", "conditions", &["N"], None, None)), "label missing");
        assert!(!m.admits(&f("Procedure", "procedures", &["PSY"], None, None)), "class missing");
        assert!(Match::default().admits(&f("Procedure", "procedures", &[], None, None)));
        assert!(!Match::labels(vec![]).admits(&f("Procedure", "procedures", &["PSY"], None, None)));
    }

    #[test]
    fn dates_and_missing_dates() {
        let permit = DateRange { from_ms: Some(10), to_ms: Some(20), or_missing: false };
        assert!(permit.admits(Some(10)) && permit.admits(Some(19)));
        assert!(!permit.admits(Some(20)) && !permit.admits(Some(9)) && !permit.admits(None));
        let deny = DateRange { or_missing: true, ..permit };
        assert!(deny.admits(None));
        let open = DateRange { from_ms: None, to_ms: None, or_missing: false };
        assert!(open.admits(Some(i64::MIN)) && !open.admits(None));
    }

    #[test]
    fn data_references_and_authors() {
        let d = DataSet { references: vec!["Observation/x1".into()], authors: vec!["Practitioner/p".into()] };
        assert!(d.admits(&f("Observation", "labs", &[], None, None)));
        assert!(!d.admits(&f("Condition", "labs", &[], None, None)));
        assert!(d.admits(&f("Condition", "labs", &[], None, Some("Practitioner/p"))));
        assert!(!d.admits(&f("Condition", "labs", &[], None, Some("Practitioner/q"))));
        assert!(is_reference_to("A/b", "A", "b"));
        assert!(
            !is_reference_to("A/bb", "A", "b")
                && !is_reference_to("AA/b", "A", "b")
                && !is_reference_to("Ab", "A", "b")
        );
        assert!(!is_reference_to("A.b", "A", "b"));
    }

    #[test]
    fn filters_include_then_exclude() {
        let labs = Match { categories: Some(vec!["labs".into()]), ..Match::default() };
        let psy = Match::labels(vec!["PSY".into()]);
        let filter = SearchFilter {
            include: Some(vec![Clause { when: vec![Arc::new(labs)], unless: vec![Arc::new(psy)] }]),
            exclude: vec![Clause { when: vec![Arc::new(Match::labels(vec!["ETH".into()]))], unless: vec![] }],
        };
        assert!(filter.admits(&f("Observation", "labs", &["N"], None, None)));
        assert!(!filter.admits(&f("Observation", "labs", &["PSY", "R"], None, None)));
        assert!(!filter.admits(&f("Observation", "labs", &["ETH", "R"], None, None)));
        assert!(!filter.admits(&f("Condition", "conditions", &[], None, None)));
        assert!(SearchFilter::default().is_unrestricted());
        let nothing = SearchFilter { include: Some(vec![]), exclude: vec![] };
        assert!(!nothing.admits(&f("Observation", "labs", &[], None, None)));
    }
}
