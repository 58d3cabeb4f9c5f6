//! Who is asking, for what, about which resource.
//!
//! # What the server fills (per request)
//!
//! * [`RequestContext`]: the principal, `acting_for`, app scopes, purpose and time as
//!   before; plus
//!   - [`RequestContext::patient`]: the [`PatientFacts`] of the patient the request acts
//!     for (`acting_for`), loaded once per request by the server **for caregivers and
//!     clinicians** (patients and the operator do not need them). Without them a caregiver
//!     reaches only the patient's own `Patient` resource and a clinician nothing; facts for
//!     another patient than `acting_for` are ignored.
//!   - [`RequestContext::break_glass_reason`] / [`RequestContext::break_glass_at_ms`]: a
//!     clinician's declared emergency access (purpose `ETREAT`): the stated reason and when
//!     the break-the-glass session began (it lasts `breakGlass.maxMinutes` of the operator
//!     rules).
//! * [`ResourceFacts`]: per stored resource, as before, plus `date_ms` (the clinically
//!   relevant date) and `author`; see the fields. The store keeps both beside the resource
//!   (they are search-filter columns too).

use crate::consent::ConsentRecord;
use crate::scopes::ScopeSet;
use portico_audit::{Actor, Scope};
use serde::Serialize;
use std::sync::Arc;

/// The authenticated party behind a request, as the gateway (`server/auth.rs`) resolved it
/// from the admin token, an OAuth access token or a portal session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Principal {
    /// The deployment's operator or a system integration holding the admin token.
    Operator,
    /// A patient user acting for themself (`patient` is their Patient id).
    Patient { patient: String },
    /// A caregiver user (linked through RelatedPerson to `patients`); acts for one of them at
    /// a time, named by `RequestContext::acting_for`.
    Caregiver { user: String, patients: Vec<String> },
    /// A clinician user, linked to a Practitioner.
    Clinician { user: String, practitioner: String },
    /// A portico administrator user (administration, not clinical access).
    Admin { user: String },
    /// A backend service authenticated by `client_credentials` (SMART Backend Services).
    System { client: String },
    /// Nobody authenticated.
    Anonymous,
}

impl Principal {
    /// The principal as the audit trail names it.
    pub fn actor(&self) -> Actor {
        match self {
            Principal::Operator => Actor::new("operator", "operator"),
            Principal::Patient { patient } => Actor::new("patient", patient),
            Principal::Caregiver { user, .. } => Actor::new("caregiver", user),
            Principal::Clinician { user, .. } => Actor::new("clinician", user),
            Principal::Admin { user } => Actor::new("admin", user),
            Principal::System { client } => Actor::new("system", client),
            Principal::Anonymous => Actor::new("anonymous", ""),
        }
    }
}

/// Everything the gate needs to know about the request, independent of the resource.
#[derive(Debug, Clone, Serialize)]
pub struct RequestContext {
    pub principal: Principal,
    /// The patient the request acts for (the token's or session's patient context): the
    /// patient themself, or the one patient a caregiver chose.
    pub acting_for: Option<String>,
    /// The user behind the request (portico user id), when one signed in.
    pub user: Option<String>,
    /// The OAuth client (app) the request came through, if any.
    pub client: Option<String>,
    /// The device (session or token's device id), if known.
    pub device: Option<String>,
    /// The SMART scopes granted to the app. `None`: no app limits this request (the
    /// operator, or the portal's own pages acting with the user's full role).
    #[serde(skip)]
    pub scopes: Option<ScopeSet>,
    /// When the user last completed step-up verification (Unix ms), if ever in this session
    /// or grant.
    pub stepup_at_ms: Option<i64>,
    /// The request's time (Unix ms), so the pure engine can judge freshness and periods.
    pub now_ms: i64,
    /// HL7 v3 PurposeOfUse code, when the client declared one.
    pub purpose: Option<String>,
    /// Correlates the decision with operational logs and the audit record.
    pub request_id: String,
    /// The request's audit scope: the gate writes every decision into it before the caller
    /// sees the decision (see `portico_audit::scope`).
    #[serde(skip)]
    pub scope: Scope,
    /// Consents and relationships of the patient the request acts for (see [`PatientFacts`]).
    /// `None`: not loaded (then no consent or care relationship can permit anything).
    #[serde(skip)]
    pub patient: Option<Arc<PatientFacts>>,
    /// Break-the-glass: the reason a clinician stated for emergency access (purpose
    /// `ETREAT`). Required, non-blank, for `ETREAT` to permit anything.
    pub break_glass_reason: Option<String>,
    /// When the clinician's break-the-glass session began (Unix ms); emergency access lasts
    /// the operator rules' `breakGlass.maxMinutes` from then.
    pub break_glass_at_ms: Option<i64>,
}

impl RequestContext {
    /// A context with a fresh audit scope.
    pub fn new(principal: Principal, request_id: impl Into<String>) -> Self {
        let request_id = request_id.into();
        let scope = Scope::new(&request_id);
        Self::with_scope(principal, scope)
    }

    /// A context whose decisions go into an existing scope (made by the HTTP layer, which
    /// writes the scope's records before the response leaves).
    pub fn with_scope(principal: Principal, scope: Scope) -> Self {
        scope.set_actor(principal.actor(), None, None, None);
        let acting_for = match &principal {
            Principal::Patient { patient } => Some(patient.clone()),
            _ => None,
        };
        RequestContext {
            principal,
            acting_for,
            user: None,
            client: None,
            device: None,
            scopes: None,
            stepup_at_ms: None,
            now_ms: now_ms(),
            purpose: None,
            request_id: scope.request_id(),
            scope,
            patient: None,
            break_glass_reason: None,
            break_glass_at_ms: None,
        }
    }

    /// The patient facts, if loaded for the patient this request acts for.
    pub fn patient_facts(&self) -> Option<&PatientFacts> {
        let facts = self.patient.as_deref()?;
        (self.acting_for.as_deref() == Some(facts.patient.as_str())).then_some(facts)
    }
}

/// What the engine knows about the patient a request acts for, beyond the resource at hand.
/// Loaded by the server once per request (for caregivers and clinicians) for
/// `RequestContext::acting_for`; shared (`Arc`) so a cache can hand the same facts to many
/// requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatientFacts {
    /// The Patient id (must equal `RequestContext::acting_for`, else the facts are ignored).
    pub patient: String,
    /// `Patient.birthDate` (for the adolescent-confidentiality rule and the end of a parent's
    /// access at majority). `None`: unknown; age-based rules then do not apply.
    pub birth_date: Option<BirthDate>,
    /// Every Consent of this patient (scope `patient-privacy`) as parsed by
    /// [`crate::consent::parse_consent`], the current version of each, **whatever its status
    /// or period**: the engine keeps only those `active` and in effect at `ctx.now_ms`.
    pub consents: Vec<Arc<ConsentRecord>>,
    /// Practitioner ids (no `Practitioner/` prefix) with a care relationship to this patient:
    /// participants of the patient's CareTeams and Encounters, and PractitionerRoles the
    /// patient's records name. A clinician whose `practitioner` is here treats the patient.
    pub care_team: Vec<String>,
    /// RelatedPerson ids (no prefix) **through which the requesting user is linked** to this
    /// patient (the user's `PatientLink::via` for this patient, checked against the stored
    /// RelatedPerson's `patient`). Consent actors `RelatedPerson/<id>` name the caregiver.
    /// Not every RelatedPerson of the patient: only the requester's.
    pub proxies: Vec<String>,
}

/// A FHIR `date` of birth (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BirthDate {
    pub year: i32,
    pub month: Option<u8>,
    pub day: Option<u8>,
}

impl BirthDate {
    /// Parse a FHIR `date` (`2010`, `2010-04`, `2010-04-02`); a dateTime's date part is used.
    pub fn parse(s: &str) -> Option<BirthDate> {
        let date = s.split('T').next()?;
        let mut parts = date.split('-');
        let two = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
        let y = parts.next().filter(|y| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))?;
        let year: i32 = y.parse().ok().filter(|y| *y >= 1)?;
        let month = match parts.next() {
            None => None,
            Some(m) if two(m) => Some(m.parse::<u8>().ok().filter(|m| (1..=12).contains(m))?),
            Some(_) => return None,
        };
        let day = match parts.next() {
            None => None,
            Some(d) if two(d) => {
                let max = crate::calendar::days_in_month(year, month?);
                Some(d.parse::<u8>().ok().filter(|d| (1..=max).contains(d))?)
            }
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(BirthDate { year, month, day })
    }

    fn earliest(&self) -> (i32, u8, u8) {
        (self.year, self.month.unwrap_or(1), self.day.unwrap_or(1))
    }

    fn latest(&self) -> (i32, u8, u8) {
        let m = self.month.unwrap_or(12);
        (self.year, m, self.day.unwrap_or_else(|| crate::calendar::days_in_month(self.year, m)))
    }

    /// The youngest and oldest age (whole years) the patient can be at `now_ms`, given the
    /// date's precision.
    pub fn age_bounds(&self, now_ms: i64) -> (i32, i32) {
        let now = crate::calendar::civil_from_ms(now_ms);
        (crate::calendar::age(self.latest(), now), crate::calendar::age(self.earliest(), now))
    }

    /// The latest moment (Unix ms, UTC) the patient can turn `years` old.
    pub fn latest_birthday_ms(&self, years: i32) -> i64 {
        let (y, m, d) = self.latest();
        crate::calendar::birthday_ms(y + years, m, d)
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The interaction being attempted. Writes are distinct from delete on purpose: a write
/// permission never implies delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Read,
    VRead,
    Search,
    History,
    Create,
    Update,
    Patch,
    Delete,
    Everything,
}

impl Action {
    pub fn is_write(self) -> bool {
        matches!(self, Action::Create | Action::Update | Action::Patch | Action::Delete)
    }
}

/// What the gate may know about a resource without seeing its body: enough to decide, never
/// enough to leak clinical content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceFacts {
    pub resource_type: String,
    pub id: Option<String>,
    /// Version the facts describe (None for a create's post-image or a type-level action).
    pub version: Option<i64>,
    /// Patient ids whose compartment holds the resource.
    pub compartments: Vec<String>,
    pub category: String,
    pub labels: Vec<String>,
    /// The resource's own `category` codings as `system|code` (for SMART scopes narrowed
    /// with `?category=`); empty when it has none.
    pub category_codes: Vec<String>,
    /// The clinically relevant date (Unix ms, UTC: the start of the value's range): the
    /// first present of `effective[x]` (dateTime, instant or Period.start), `issued`,
    /// `recordedDate` / `recorded`, `occurrence[x]`, `performed[x]`, `authoredOn`, `onset[x]`,
    /// `date`, `period.start`, `created` — see [`crate::extract::clinical_date_ms`]. Used for
    /// consent `dataPeriod` and the results hold. `None`: the resource has no such date.
    pub date_ms: Option<i64>,
    /// Who wrote the resource, as a relative reference `Type/id` (see
    /// [`crate::extract::author_reference`]). Used for consent `data` with meaning
    /// `authoredby` and to exempt a patient's own entries from the results hold.
    pub author: Option<String>,
}

impl ResourceFacts {
    /// Facts for a type-level action (search, type history) where no single resource exists.
    pub fn type_level(resource_type: &str) -> Self {
        ResourceFacts {
            resource_type: resource_type.to_string(),
            id: None,
            version: None,
            compartments: Vec::new(),
            category: String::new(),
            labels: Vec::new(),
            category_codes: Vec::new(),
            date_ms: None,
            author: None,
        }
    }

    /// These facts with a clinically relevant date (see [`ResourceFacts::date_ms`]).
    pub fn with_date(mut self, date_ms: Option<i64>) -> Self {
        self.date_ms = date_ms;
        self
    }

    /// These facts with an author reference (see [`ResourceFacts::author`]).
    pub fn with_author(mut self, author: Option<String>) -> Self {
        self.author = author;
        self
    }

    /// The facts' `Type/id`, when they describe one resource.
    pub fn reference(&self) -> Option<String> {
        self.id.as_ref().map(|id| format!("{}/{id}", self.resource_type))
    }
}
