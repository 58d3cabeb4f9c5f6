//! FHIR R4 Consent (scope `patient-privacy`) as the engine evaluates it.
//!
//! # API for the storage and HTTP layers
//!
//! * [`parse_consent`]`(&serde_json::Value) -> Result<ConsentRecord, ConsentError>`: call it
//!   **when a Consent is written** (create, update, PATCH, `$revoke`), and refuse the write
//!   with the error's plain-language message (a 400/422 OperationOutcome) — a consent the
//!   engine cannot enforce exactly is never stored. Call it again when loading a patient's
//!   consents into [`crate::PatientFacts::consents`] (a stored consent always parses; keep
//!   the parsed `Arc<ConsentRecord>` cached by `(id, version)` if loading is hot).
//! * The engine evaluates only consents whose `status` is `active` and whose period contains
//!   `ctx.now_ms`; load every current version (inactive ones too) and let it filter, so that
//!   an expiry needs no job and a revocation (status `inactive`) bites on the next request.
//! * [`crate::explain::consent`] renders a record as plain-language sentences.
//!
//! # The provision model
//!
//! The root provision is the consent's base rule; its `period` is the consent's period. A
//! root without `type` is a **deny base** (nothing is shared except what nested provisions
//! permit); every nested provision must have a `type`. Nested provisions are exceptions to
//! their parent: for a request and a resource, the *deciding* provisions are the matching
//! provisions none of whose children match; the consent permits when every deciding
//! provision permits, and denies when any denies (deny wins). A root with no criteria
//! (only a period) that decides is a *base* and decides nothing on its own: it neither
//! grants access nor blocks another consent's grant.
//!
//! A provision matches when all its criteria hold (absent criterion = any):
//!
//! | element | request-level (decided per request) |
//! |---|---|
//! | `period` | `ctx.now_ms` lies in it |
//! | `actor` | one actor is the requester: `RelatedPerson/<id>` for a caregiver whose `PatientFacts::proxies` has `id`, `Practitioner/<id>` for that clinician, `Patient/<id>` (never consulted: patients see their own records). `role` is kept for display only |
//! | `action` | reads (read, vread, search, history, `$everything`) match `access`, `use`, `disclose`, `collect`; writes (create, update, patch) match `correct`; delete matches nothing |
//! | `purpose` | the request's purpose of use is listed (`TREAT` also covers `ETREAT`); an undeclared purpose matches deny provisions, never permits |
//!
//! | element | data-level (a [`Match`], also compiled into search SQL) |
//! |---|---|
//! | `class` | resource type (system `http://hl7.org/fhir/resource-types`) or portico category (system [`CATEGORY_SYSTEM`], codes of `classification.json`); alternatives |
//! | `code` | one of the resource's own `category` codings (`system|code`; a code without system matches any system) |
//! | `securityLabel` | one of the resource's labels: sensitivity codes (`PSY`, `ETH`, `SEX`, … exact) or a confidentiality code — a permit for `R` covers `U`..`R`, a deny of `R` covers `R` and `V` |
//! | `dataPeriod` | the resource's `date_ms` lies in it; an undated resource matches deny provisions, never permits |
//! | `data` | `instance`: the resource is the reference; `authoredby`: its author is the reference |
//!
//! Refused (each with a plain-language [`ConsentError`]): not a Consent, no id, unknown
//! status, scope other than `patient-privacy`, no patient, no provision, an unknown provision
//! type or a nested provision without one, an unparseable date or a period that ends before
//! it starts, nesting deeper than [`MAX_DEPTH`], more than [`MAX_PROVISIONS`] provisions or
//! [`MAX_ITEMS`] entries in one list, actors that are not RelatedPerson / Practitioner /
//! Patient or lack a role, unknown action codes, unknown classes or security labels, and
//! `data` meanings `related` / `dependents` (which the facts cannot evaluate: a deny the
//! server could not enforce must not be accepted).

use crate::filter::{ClassSet, DataSet, DateRange, Match};
use portico_fhir::classify::{CATEGORIES, CONFIDENTIALITY, SENSITIVITY_LABELS};
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// `Consent.scope` must carry this system and the code `patient-privacy`.
pub const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
/// Codes of `provision.action`.
pub const ACTION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentaction";
/// HL7 v3 PurposeOfUse codes live in ActReason.
pub const PURPOSE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// `provision.class` naming a resource type.
pub const RESOURCE_TYPE_SYSTEM: &str = "http://hl7.org/fhir/resource-types";
/// `provision.class` naming a portico data category (`labs`, `medications`, …).
pub const CATEGORY_SYSTEM: &str = "urn:portico:category";

const ACT_CODE_SYSTEMS: &[&str] =
    &["http://terminology.hl7.org/CodeSystem/v3-ActCode", "http://hl7.org/fhir/v3/ActCode"];
const CONFIDENTIALITY_SYSTEMS: &[&str] =
    &["http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "http://hl7.org/fhir/v3/Confidentiality"];
const PURPOSE_SYSTEMS: &[&str] = &[PURPOSE_SYSTEM, "http://hl7.org/fhir/v3/ActReason"];

/// Consent actions (`consentaction`).
pub const ACTIONS: &[&str] = &["collect", "access", "use", "disclose", "correct"];
/// Actor types a consent may name (the engine can tell whether a request comes from them).
pub const ACTOR_TYPES: &[&str] = &["RelatedPerson", "Practitioner", "Patient"];

/// Provisions may nest at most this many levels below the root.
pub const MAX_DEPTH: usize = 8;
/// At most this many provisions (the root included) in one consent.
pub const MAX_PROVISIONS: usize = 200;
/// At most this many entries in one list of one provision (actors, classes, codes, …).
pub const MAX_ITEMS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentStatus {
    Draft,
    Proposed,
    Active,
    Rejected,
    Inactive,
    EnteredInError,
}

impl ConsentStatus {
    pub fn parse(s: &str) -> Option<ConsentStatus> {
        Some(match s {
            "draft" => ConsentStatus::Draft,
            "proposed" => ConsentStatus::Proposed,
            "active" => ConsentStatus::Active,
            "rejected" => ConsentStatus::Rejected,
            "inactive" => ConsentStatus::Inactive,
            "entered-in-error" => ConsentStatus::EnteredInError,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Draft => "draft",
            ConsentStatus::Proposed => "proposed",
            ConsentStatus::Active => "active",
            ConsentStatus::Rejected => "rejected",
            ConsentStatus::Inactive => "inactive",
            ConsentStatus::EnteredInError => "entered-in-error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvisionKind {
    Permit,
    Deny,
}

/// One end of a period: the text as written and its instant — for a start the first
/// millisecond the text covers, for an end the first millisecond *after* it (so `2026-12-31`
/// ends at midnight starting 1 January 2027).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bound {
    pub text: String,
    pub ms: i64,
}

/// A FHIR Period, `[start, end)` in Unix ms (UTC; see `portico_fhir::datetime`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Period {
    pub start: Option<Bound>,
    pub end: Option<Bound>,
}

impl Period {
    pub fn contains(&self, t: i64) -> bool {
        self.start.as_ref().is_none_or(|s| t >= s.ms) && self.end.as_ref().is_none_or(|e| t < e.ms)
    }

    /// As a filter range over `date_ms`.
    pub fn range(&self, or_missing: bool) -> DateRange {
        DateRange { from_ms: self.start.as_ref().map(|b| b.ms), to_ms: self.end.as_ref().map(|b| b.ms), or_missing }
    }
}

/// The kinds of actor a consent may name ([`ACTOR_TYPES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActorKind {
    RelatedPerson,
    Practitioner,
    Patient,
}

impl ActorKind {
    pub fn parse(resource_type: &str) -> Option<ActorKind> {
        match resource_type {
            "RelatedPerson" => Some(ActorKind::RelatedPerson),
            "Practitioner" => Some(ActorKind::Practitioner),
            "Patient" => Some(ActorKind::Patient),
            _ => None,
        }
    }
}

/// `provision.actor`: who the provision is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentActor {
    /// `actor.role` as `system|code` (display only).
    pub role: String,
    /// `Type/id`.
    pub reference: String,
    pub kind: ActorKind,
    pub resource_type: String,
    pub id: String,
    /// `actor.reference.display`, for explanations ("Dr. Lee at Riverside Cardiology").
    pub display: Option<String>,
}

impl ConsentActor {
    /// The name explanations use: the display text, else the reference.
    pub fn name(&self) -> &str {
        self.display.as_deref().filter(|d| !d.trim().is_empty()).unwrap_or(&self.reference)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMeaning {
    Instance,
    AuthoredBy,
}

/// `provision.data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataRef {
    pub meaning: DataMeaning,
    /// `Type/id`.
    pub reference: String,
    pub display: Option<String>,
}

/// One provision (rule) of a consent; see the module documentation for the matching rules.
/// Built only by [`parse_consent`] (the data-level criteria are compiled once, into
/// [`Provision::matcher`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provision {
    pub kind: ProvisionKind,
    /// Whether `type` was written (a root without it is a deny base).
    pub explicit_type: bool,
    pub period: Option<Period>,
    pub actors: Vec<ConsentActor>,
    /// `consentaction` codes.
    pub actions: Vec<String>,
    /// HL7 v3 PurposeOfUse codes.
    pub purposes: Vec<String>,
    /// Resource types named by `class`.
    pub classes: Vec<String>,
    /// Portico categories named by `class` (system [`CATEGORY_SYSTEM`]).
    pub categories: Vec<String>,
    /// `code` codings as `system|code` (or `code` without a system).
    pub codes: Vec<String>,
    /// `securityLabel` codes as written.
    pub security_labels: Vec<String>,
    pub data_period: Option<Period>,
    pub data: Vec<DataRef>,
    pub provisions: Vec<Provision>,
    matcher: Arc<Match>,
    /// `actions` as bits of [`ACTIONS`] (matched on every request).
    action_bits: u8,
}

impl Provision {
    /// `actions` as a bit set over [`ACTIONS`] (bit i = `ACTIONS[i]`).
    pub fn action_bits(&self) -> u8 {
        self.action_bits
    }

    /// The data-level criteria as one [`Match`] (what a search filter clause is built of).
    pub fn matcher(&self) -> &Match {
        &self.matcher
    }

    /// The same, shared (search filter clauses hold it without copying).
    pub fn shared_matcher(&self) -> &Arc<Match> {
        &self.matcher
    }

    /// Whether the provision has request-level criteria (period aside).
    pub fn has_request_criteria(&self) -> bool {
        !self.actors.is_empty() || !self.actions.is_empty() || !self.purposes.is_empty()
    }

    /// A root provision with no criteria but a period: the consent's base rule.
    pub fn is_base(&self) -> bool {
        !self.has_request_criteria() && self.matcher.is_empty()
    }

    /// Number of provisions in this subtree (this one included).
    pub fn count(&self) -> usize {
        1 + self.provisions.iter().map(Provision::count).sum::<usize>()
    }
}

/// A parsed Consent of scope `patient-privacy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentRecord {
    pub id: String,
    /// `meta.versionId`, when numeric.
    pub version: Option<i64>,
    pub status: ConsentStatus,
    /// The Patient id (no prefix).
    pub patient: String,
    /// The consent's effective period (the root provision's period).
    pub period: Option<Period>,
    /// `Consent.dateTime`: when it was given.
    pub date: Option<Bound>,
    pub root: Provision,
}

impl ConsentRecord {
    /// Active and in effect at `now_ms`.
    pub fn in_force(&self, now_ms: i64) -> bool {
        self.status == ConsentStatus::Active && self.period.as_ref().is_none_or(|p| p.contains(now_ms))
    }

    /// When the consent was given: `dateTime`, else the start of its period.
    pub fn given_ms(&self) -> Option<i64> {
        self.date.as_ref().map(|d| d.ms).or_else(|| self.period.as_ref()?.start.as_ref().map(|s| s.ms))
    }
}

/// Why a Consent cannot be accepted: where (a FHIRPath-like location) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConsentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

impl std::error::Error for ConsentError {}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, ConsentError> {
    Err(ConsentError { path: path.to_string(), message: message.into() })
}

/// Untrusted text fit for an error message.
fn shown(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_default).collect()
}

/// Parse and validate a Consent; see the module documentation for what is refused.
pub fn parse_consent(v: &Value) -> Result<ConsentRecord, ConsentError> {
    let Some(obj) = v.as_object() else { return err("", "A consent must be a JSON object.") };
    match obj.get("resourceType").and_then(Value::as_str) {
        Some("Consent") => {}
        Some(other) => return err("resourceType", format!("This is a {}, not a Consent.", shown(other))),
        None => return err("resourceType", "This is not a FHIR resource (no resourceType)."),
    }
    let id = match obj.get("id").and_then(Value::as_str) {
        Some(id) if is_id(id) => id.to_string(),
        Some(id) => return err("id", format!("'{}' is not a valid resource id.", shown(id))),
        None => return err("id", "A consent needs an id."),
    };
    let version = obj.get("meta").and_then(|m| m.get("versionId")).and_then(Value::as_str).and_then(|v| v.parse().ok());
    let status = match obj.get("status").and_then(Value::as_str) {
        Some(s) => match ConsentStatus::parse(s) {
            Some(st) => st,
            None => {
                return err(
                    "status",
                    format!(
                        "'{}' is not a consent status; use draft, proposed, active, rejected, inactive or \
                         entered-in-error.",
                        shown(s)
                    ),
                );
            }
        },
        None => return err("status", "A consent needs a status (for example active)."),
    };
    check_scope(obj.get("scope"))?;
    let patient = match obj.get("patient").and_then(|p| p.get("reference")).and_then(Value::as_str) {
        Some(r) => match normalise_reference(r) {
            Some((t, id)) if t == "Patient" => id,
            _ => {
                return err(
                    "patient",
                    format!("The consent must name the patient it belongs to as Patient/…, not '{}'.", shown(r)),
                );
            }
        },
        None => return err("patient", "A consent must say whose records it covers (patient.reference = Patient/…)."),
    };
    let date = match obj.get("dateTime") {
        None => None,
        Some(d) => Some(bound("dateTime", d, false)?),
    };
    let Some(root) = obj.get("provision") else {
        return err(
            "provision",
            "A consent needs a provision: the rules of what is shared with whom. portico cannot enforce a \
             consent that only points to a policy.",
        );
    };
    let mut count = 0;
    let root = provision(root, "provision", 0, &mut count)?;
    Ok(ConsentRecord { id, version, status, patient, period: root.period.clone(), date, root })
}

fn check_scope(scope: Option<&Value>) -> Result<(), ConsentError> {
    let codings = codings_of(scope);
    if codings.iter().any(|(s, c)| *c == "patient-privacy" && s.is_none_or(|s| s == SCOPE_SYSTEM)) {
        return Ok(());
    }
    let found = codings.first().map_or_else(|| "none".to_string(), |(_, c)| format!("'{}'", shown(c)));
    err(
        "scope",
        format!(
            "Only privacy consents (scope patient-privacy) decide who may see records; this consent's scope is \
             {found}."
        ),
    )
}

/// (system, code) of a CodeableConcept or Coding.
fn codings_of(v: Option<&Value>) -> Vec<(Option<&str>, &str)> {
    let Some(v) = v else { return Vec::new() };
    let list: Vec<&Value> = match v.get("coding") {
        Some(Value::Array(items)) => items.iter().collect(),
        _ => vec![v],
    };
    list.into_iter()
        .filter_map(|c| Some((c.get("system").and_then(Value::as_str), c.get("code").and_then(Value::as_str)?)))
        .collect()
}

fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn is_type_name(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty() && b.len() <= 64 && b[0].is_ascii_uppercase() && b.iter().all(u8::is_ascii_alphabetic)
}

/// `Type/id` from a relative or absolute reference (a `_history` suffix is dropped);
/// `None` for contained (`#x`), logical or malformed references.
pub fn normalise_reference(r: &str) -> Option<(String, String)> {
    let base = r.split("/_history/").next().unwrap_or(r);
    let mut parts = base.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    (is_type_name(ty) && is_id(id)).then(|| (ty.to_string(), id.to_string()))
}

fn bound(path: &str, v: &Value, end: bool) -> Result<Bound, ConsentError> {
    let Some(text) = v.as_str() else { return err(path, "A date must be written as text (YYYY-MM-DD…).") };
    match portico_fhir::datetime::parse_range(text) {
        Some((low, high)) => Ok(Bound { text: text.to_string(), ms: if end { high } else { low } }),
        None => err(path, format!("'{}' is not a valid date.", shown(text))),
    }
}

fn period(path: &str, v: Option<&Value>) -> Result<Option<Period>, ConsentError> {
    let Some(v) = v else { return Ok(None) };
    if !v.is_object() {
        return err(path, "A period must be an object with start and/or end.");
    }
    let start = v.get("start").map(|s| bound(&format!("{path}.start"), s, false)).transpose()?;
    let end = v.get("end").map(|e| bound(&format!("{path}.end"), e, true)).transpose()?;
    if let (Some(s), Some(e)) = (&start, &end)
        && e.ms <= s.ms
    {
        return err(path, format!("The period ends ({}) before it starts ({}).", shown(&e.text), shown(&s.text)));
    }
    Ok(Some(Period { start, end }))
}

/// An element that must be a list when present, of at most [`MAX_ITEMS`] entries.
fn list<'v>(obj: &'v serde_json::Map<String, Value>, key: &str, path: &str) -> Result<&'v [Value], ConsentError> {
    match obj.get(key) {
        None => Ok(&[]),
        Some(Value::Array(items)) if items.len() <= MAX_ITEMS => Ok(items),
        Some(Value::Array(items)) => err(
            &format!("{path}.{key}"),
            format!("At most {MAX_ITEMS} entries are allowed here; there are {}.", items.len()),
        ),
        Some(_) => err(&format!("{path}.{key}"), "This must be a list."),
    }
}

fn provision(v: &Value, path: &str, depth: usize, count: &mut usize) -> Result<Provision, ConsentError> {
    *count += 1;
    if *count > MAX_PROVISIONS {
        return err(path, format!("A consent may have at most {MAX_PROVISIONS} provisions."));
    }
    if depth > MAX_DEPTH {
        return err(path, format!("Provisions may be nested at most {MAX_DEPTH} levels deep."));
    }
    let Some(obj) = v.as_object() else { return err(path, "A provision must be an object.") };
    let (kind, explicit_type) = match obj.get("type") {
        Some(Value::String(t)) if t == "permit" => (ProvisionKind::Permit, true),
        Some(Value::String(t)) if t == "deny" => (ProvisionKind::Deny, true),
        Some(Value::String(t)) => {
            return err(
                &format!("{path}.type"),
                format!("Provision type '{}' is not understood; use permit or deny.", shown(t)),
            );
        }
        Some(_) => return err(&format!("{path}.type"), "Provision type must be permit or deny."),
        None if depth == 0 => (ProvisionKind::Deny, false),
        None => {
            return err(
                &format!("{path}.type"),
                "Every nested provision must say whether it permits or denies (type).",
            );
        }
    };
    let period_ = period(&format!("{path}.period"), obj.get("period"))?;

    let mut actors = Vec::new();
    for (i, a) in list(obj, "actor", path)?.iter().enumerate() {
        let at = format!("{path}.actor[{i}]");
        let role = codings_of(a.get("role"));
        let Some((system, code)) = role.first() else {
            return err(&at, "Each actor needs a role (for example IRCP, information recipient).");
        };
        let role = match system {
            Some(s) => format!("{s}|{code}"),
            None => code.to_string(),
        };
        let reference = a.get("reference");
        let Some(text) = reference.and_then(|r| r.get("reference")).and_then(Value::as_str) else {
            return err(&at, "Each actor needs a reference (RelatedPerson/…, Practitioner/… or Patient/…).");
        };
        let Some((resource_type, id)) = normalise_reference(text) else {
            return err(&at, format!("'{}' is not a reference portico can follow (Type/id).", shown(text)));
        };
        let Some(kind) = ActorKind::parse(&resource_type) else {
            return err(
                &at,
                format!(
                    "{resource_type} actors are not supported: portico can enforce consents for related people \
                     (RelatedPerson), clinicians (Practitioner) and patients."
                ),
            );
        };
        let display = reference.and_then(|r| r.get("display")).and_then(Value::as_str).map(str::to_string);
        actors.push(ConsentActor {
            role,
            reference: format!("{resource_type}/{id}"),
            kind,
            resource_type,
            id,
            display,
        });
    }

    let mut actions = Vec::new();
    for (i, a) in list(obj, "action", path)?.iter().enumerate() {
        let codes = codings_of(Some(a));
        if codes.is_empty() {
            return err(
                &format!("{path}.action[{i}]"),
                "An action needs a code (access, collect, use, disclose or correct).",
            );
        }
        for (system, code) in codes {
            if system.is_some_and(|s| s != ACTION_SYSTEM) || !ACTIONS.contains(&code) {
                return err(
                    &format!("{path}.action[{i}]"),
                    format!(
                        "'{}' is not a consent action; use access, collect, use, disclose or correct.",
                        shown(code)
                    ),
                );
            }
            push_unique(&mut actions, code);
        }
    }

    let mut purposes = Vec::new();
    for (i, p) in list(obj, "purpose", path)?.iter().enumerate() {
        let code = p.get("code").and_then(Value::as_str).filter(|c| !c.is_empty() && c.len() <= 64);
        let system = p.get("system").and_then(Value::as_str);
        match code {
            Some(c) if system.is_none_or(|s| PURPOSE_SYSTEMS.contains(&s)) => push_unique(&mut purposes, c),
            Some(c) => {
                return err(
                    &format!("{path}.purpose[{i}]"),
                    format!("Purpose '{}' must be an HL7 v3 PurposeOfUse code (system {PURPOSE_SYSTEM}).", shown(c)),
                );
            }
            None => return err(&format!("{path}.purpose[{i}]"), "A purpose needs a code (for example TREAT)."),
        }
    }

    let (mut classes, mut categories) = (Vec::new(), Vec::new());
    for (i, c) in list(obj, "class", path)?.iter().enumerate() {
        let at = format!("{path}.class[{i}]");
        let code = c.get("code").and_then(Value::as_str).unwrap_or("");
        match c.get("system").and_then(Value::as_str) {
            Some(RESOURCE_TYPE_SYSTEM) if portico_fhir::resource_types::is_resource_type(code) => {
                push_unique(&mut classes, code)
            }
            Some(CATEGORY_SYSTEM) if CATEGORIES.contains(&code) => push_unique(&mut categories, code),
            None if portico_fhir::resource_types::is_resource_type(code) => push_unique(&mut classes, code),
            None if CATEGORIES.contains(&code) => push_unique(&mut categories, code),
            _ => {
                return err(
                    &at,
                    format!(
                        "Class '{}' is not understood: name a resource type (system {RESOURCE_TYPE_SYSTEM}) or a \
                         portico category (system {CATEGORY_SYSTEM}: {}).",
                        shown(code),
                        CATEGORIES.join(", ")
                    ),
                );
            }
        }
    }

    let mut codes = Vec::new();
    for (i, c) in list(obj, "code", path)?.iter().enumerate() {
        let cs = codings_of(Some(c));
        if cs.is_empty() {
            return err(&format!("{path}.code[{i}]"), "A code needs at least one coding with a code.");
        }
        for (system, code) in cs {
            if code.is_empty() {
                return err(&format!("{path}.code[{i}]"), "A coding needs a code.");
            }
            push_unique(
                &mut codes,
                &match system {
                    Some(s) => format!("{s}|{code}"),
                    None => code.to_string(),
                },
            );
        }
    }

    let mut security_labels = Vec::new();
    let mut label_match = Vec::new();
    for (i, l) in list(obj, "securityLabel", path)?.iter().enumerate() {
        let at = format!("{path}.securityLabel[{i}]");
        let code = l.get("code").and_then(Value::as_str).unwrap_or("");
        let system = l.get("system").and_then(Value::as_str);
        if let Some(rank) = CONFIDENTIALITY.iter().position(|c| *c == code)
            && system.is_none_or(|s| CONFIDENTIALITY_SYSTEMS.contains(&s))
        {
            // A permit for R covers everything up to R; a deny of R covers R and above.
            let covered: &[&str] = match kind {
                ProvisionKind::Permit => &CONFIDENTIALITY[..=rank],
                ProvisionKind::Deny => &CONFIDENTIALITY[rank..],
            };
            covered.iter().for_each(|c| push_unique(&mut label_match, c));
        } else if SENSITIVITY_LABELS.contains(&code) && system.is_none_or(|s| ACT_CODE_SYSTEMS.contains(&s)) {
            push_unique(&mut label_match, code);
        } else {
            return err(
                &at,
                format!(
                    "Security label '{}' is not one portico assigns; use a sensitivity code ({}) or a \
                     confidentiality code ({}).",
                    shown(code),
                    SENSITIVITY_LABELS.join(", "),
                    CONFIDENTIALITY.join(", ")
                ),
            );
        }
        push_unique(&mut security_labels, code);
    }

    let data_period = period(&format!("{path}.dataPeriod"), obj.get("dataPeriod"))?;

    let mut data = Vec::new();
    for (i, d) in list(obj, "data", path)?.iter().enumerate() {
        let at = format!("{path}.data[{i}]");
        let meaning = match d.get("meaning").and_then(Value::as_str) {
            Some("instance") => DataMeaning::Instance,
            Some("authoredby") => DataMeaning::AuthoredBy,
            Some(m @ ("related" | "dependents")) => {
                return err(
                    &at,
                    format!(
                        "Data meaning '{m}' is not supported: name the records themselves (instance) or who wrote \
                         them (authoredby)."
                    ),
                );
            }
            Some(m) => return err(&at, format!("'{}' is not a data meaning; use instance or authoredby.", shown(m))),
            None => return err(&at, "Data needs a meaning (instance or authoredby)."),
        };
        let reference = d.get("reference");
        let Some(text) = reference.and_then(|r| r.get("reference")).and_then(Value::as_str) else {
            return err(&at, "Data needs a reference (Type/id).");
        };
        let Some((t, id)) = normalise_reference(text) else {
            return err(&at, format!("'{}' is not a reference portico can follow (Type/id).", shown(text)));
        };
        let display = reference.and_then(|r| r.get("display")).and_then(Value::as_str).map(str::to_string);
        data.push(DataRef { meaning, reference: format!("{t}/{id}"), display });
    }

    let mut provisions = Vec::new();
    for (i, p) in list(obj, "provision", path)?.iter().enumerate() {
        provisions.push(provision(p, &format!("{path}.provision[{i}]"), depth + 1, count)?);
    }

    let matcher = Arc::new(Match {
        class: (!classes.is_empty() || !categories.is_empty())
            .then(|| ClassSet { resource_types: classes.clone(), categories: categories.clone() }),
        category_codes: (!codes.is_empty()).then(|| codes.clone()),
        labels: (!label_match.is_empty()).then_some(label_match),
        date: data_period.as_ref().map(|p| p.range(kind == ProvisionKind::Deny)),
        data: (!data.is_empty()).then(|| DataSet {
            references: data
                .iter()
                .filter(|d| d.meaning == DataMeaning::Instance)
                .map(|d| d.reference.clone())
                .collect(),
            authors: data
                .iter()
                .filter(|d| d.meaning == DataMeaning::AuthoredBy)
                .map(|d| d.reference.clone())
                .collect(),
        }),
        ..Match::default()
    });

    let action_bits =
        actions.iter().filter_map(|a| ACTIONS.iter().position(|x| x == a)).fold(0u8, |bits, i| bits | (1 << i));
    Ok(Provision {
        action_bits,
        kind,
        explicit_type,
        period: period_,
        actors,
        actions,
        purposes,
        classes,
        categories,
        codes,
        security_labels,
        data_period,
        data,
        provisions,
        matcher,
    })
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "resourceType": "Consent",
            "id": "c1",
            "meta": {"versionId": "3"},
            "status": "active",
            "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/p1"},
            "dateTime": "2026-01-10",
            "provision": {
                "period": {"start": "2026-01-10", "end": "2026-12-31"},
                "provision": [{
                    "type": "permit",
                    "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                               "reference": {"reference": "Practitioner/lee", "display": "Dr. Lee at Riverside Cardiology"}}],
                    "action": [{"coding": [{"system": ACTION_SYSTEM, "code": "access"}]}],
                    "purpose": [{"system": PURPOSE_SYSTEM, "code": "TREAT"}],
                    "class": [{"system": CATEGORY_SYSTEM, "code": "labs"}, {"system": CATEGORY_SYSTEM, "code": "medications"}],
                    "provision": [{"type": "deny", "securityLabel": [{"system": ACT_CODE_SYSTEMS[0], "code": "PSY"}]}]
                }]
            }
        })
    }

    fn refused(mut v: Value, edit: impl FnOnce(&mut Value)) -> ConsentError {
        edit(&mut v);
        parse_consent(&v).expect_err("must be refused")
    }

    #[test]
    fn parses_the_provision_model() {
        let c = parse_consent(&base()).unwrap();
        assert_eq!(
            (c.id.as_str(), c.version, c.status, c.patient.as_str()),
            ("c1", Some(3), ConsentStatus::Active, "p1")
        );
        assert_eq!(c.root.kind, ProvisionKind::Deny);
        assert!(!c.root.explicit_type && c.root.is_base());
        let period = c.period.as_ref().unwrap();
        assert_eq!(period.end.as_ref().unwrap().text, "2026-12-31");
        let p = &c.root.provisions[0];
        assert_eq!(p.kind, ProvisionKind::Permit);
        assert_eq!(p.actors[0].reference, "Practitioner/lee");
        assert_eq!(p.actors[0].name(), "Dr. Lee at Riverside Cardiology");
        assert_eq!(p.actions, vec!["access"]);
        assert_eq!(p.purposes, vec!["TREAT"]);
        assert_eq!(p.categories, vec!["labs", "medications"]);
        assert!(p.classes.is_empty());
        let deny = &p.provisions[0];
        assert_eq!(deny.matcher().labels, Some(vec!["PSY".to_string()]));
        assert!(c.in_force(period.start.as_ref().unwrap().ms));
        assert!(!c.in_force(period.end.as_ref().unwrap().ms));
        assert_eq!(c.root.count(), 3);
    }

    #[test]
    fn confidentiality_labels_cover_by_kind() {
        let c = parse_consent(&{
            let mut v = base();
            v["provision"]["provision"][0]["securityLabel"] = json!([{"code": "R"}]);
            v["provision"]["provision"][0]["provision"][0]["securityLabel"] = json!([{"code": "R"}]);
            v
        })
        .unwrap();
        let permit = &c.root.provisions[0];
        assert_eq!(permit.matcher().labels.as_deref().unwrap(), ["U", "L", "M", "N", "R"]);
        assert_eq!(permit.provisions[0].matcher().labels.as_deref().unwrap(), ["R", "V"]);
    }

    #[test]
    fn refuses_what_cannot_be_enforced() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(Edit, &str, &str)> = vec![
            (Box::new(|v| v["resourceType"] = json!("Patient")), "resourceType", "not a Consent"),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("id");
                }),
                "id",
                "needs an id",
            ),
            (Box::new(|v| v["status"] = json!("on")), "status", "not a consent status"),
            (
                Box::new(|v| v["scope"] = json!({"coding": [{"system": SCOPE_SYSTEM, "code": "research"}]})),
                "scope",
                "'research'",
            ),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("patient");
                }),
                "patient",
                "whose records",
            ),
            (Box::new(|v| v["patient"] = json!({"reference": "Group/g"})), "patient", "Patient/"),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("provision");
                }),
                "provision",
                "needs a provision",
            ),
            (
                Box::new(|v| v["provision"]["provision"][0]["type"] = json!("allow")),
                "provision.provision[0].type",
                "'allow' is not understood",
            ),
            (
                Box::new(|v| {
                    v["provision"]["provision"][0]["provision"][0].as_object_mut().unwrap().remove("type");
                }),
                "provision.provision[0].provision[0].type",
                "permits or denies",
            ),
            (
                Box::new(|v| v["provision"]["period"] = json!({"start": "2026-02-01", "end": "2026-01-31"})),
                "provision.period",
                "ends (2026-01-31) before it starts",
            ),
            (
                Box::new(|v| v["provision"]["period"] = json!({"start": "2026-13-01"})),
                "provision.period.start",
                "not a valid date",
            ),
            (
                Box::new(|v| v["provision"]["provision"][0]["dataPeriod"] = json!({"start": "2020", "end": "2019"})),
                "provision.provision[0].dataPeriod",
                "before it starts",
            ),
            (
                Box::new(|v| {
                    v["provision"]["provision"][0]["actor"][0]["reference"]["reference"] = json!("Organization/o")
                }),
                "provision.provision[0].actor[0]",
                "Organization actors are not supported",
            ),
            (
                Box::new(|v| {
                    v["provision"]["provision"][0]["actor"][0].as_object_mut().unwrap().remove("role");
                }),
                "provision.provision[0].actor[0]",
                "needs a role",
            ),
            (
                Box::new(|v| {
                    v["provision"]["provision"][0]["action"] =
                        json!([{"coding": [{"system": ACTION_SYSTEM, "code": "sell"}]}])
                }),
                "provision.provision[0].action[0]",
                "'sell' is not a consent action",
            ),
            (
                Box::new(|v| v["provision"]["provision"][0]["class"] = json!([{"system": "http://x", "code": "labs"}])),
                "provision.provision[0].class[0]",
                "not understood",
            ),
            (
                Box::new(|v| {
                    v["provision"]["provision"][0]["class"] = json!([{"system": CATEGORY_SYSTEM, "code": "gossip"}])
                }),
                "provision.provision[0].class[0]",
                "'gossip'",
            ),
            (
                Box::new(|v| v["provision"]["provision"][0]["securityLabel"] = json!([{"code": "SECRET"}])),
                "provision.provision[0].securityLabel[0]",
                "'SECRET'",
            ),
            (
                Box::new(|v| {
                    v["provision"]["provision"][0]["data"] =
                        json!([{"meaning": "related", "reference": {"reference": "Encounter/e"}}])
                }),
                "provision.provision[0].data[0]",
                "'related' is not supported",
            ),
            (
                Box::new(|v| {
                    v["provision"]["provision"][0]["purpose"] = json!([{"system": "http://x", "code": "TREAT"}])
                }),
                "provision.provision[0].purpose[0]",
                "PurposeOfUse",
            ),
            (
                Box::new(|v| v["provision"]["provision"][0]["actor"] = json!("x")),
                "provision.provision[0].actor",
                "must be a list",
            ),
        ];
        for (edit, path, words) in cases {
            let e = refused(base(), edit);
            assert_eq!(e.path, path, "{e}");
            assert!(e.message.contains(words), "{e} lacks {words:?}");
        }
    }

    #[test]
    fn depth_and_size_limits() {
        let mut deep = json!({"type": "deny"});
        for _ in 0..MAX_DEPTH {
            deep = json!({"type": "permit", "provision": [deep]});
        }
        let mut v = base();
        v["provision"] = json!({"provision": [deep]});
        let e = parse_consent(&v).unwrap_err();
        assert!(e.message.contains("nested at most 8"), "{e}");
        let mut ok = json!({"type": "deny"});
        for _ in 0..MAX_DEPTH - 1 {
            ok = json!({"type": "permit", "provision": [ok]});
        }
        v["provision"] = json!({"provision": [ok]});
        assert!(parse_consent(&v).is_ok());

        let leaves = |n: usize| -> Vec<Value> { (0..n).map(|_| json!({"type": "permit"})).collect() };
        // 1 root + 2 branches + 99 + 98 leaves = 200.
        v["provision"] = json!({"provision": [
            {"type": "deny", "provision": leaves(99)}, {"type": "deny", "provision": leaves(98)}]});
        assert!(parse_consent(&v).is_ok(), "200 with the root");
        v["provision"] = json!({"provision": [
            {"type": "deny", "provision": leaves(99)}, {"type": "deny", "provision": leaves(99)}]});
        let e = parse_consent(&v).unwrap_err();
        assert!(e.message.contains("at most 200 provisions"), "{e}");
        let actors: Vec<Value> = (0..=MAX_ITEMS)
            .map(|i| json!({"role": {"coding": [{"code": "IRCP"}]}, "reference": {"reference": format!("RelatedPerson/r{i}")}}))
            .collect();
        v["provision"] = json!({"type": "permit", "actor": actors});
        assert!(parse_consent(&v).unwrap_err().message.contains("At most 100"));
    }

    #[test]
    fn references_are_normalised() {
        assert_eq!(normalise_reference("Patient/p1"), Some(("Patient".into(), "p1".into())));
        assert_eq!(
            normalise_reference("https://x.org/fhir/Patient/p1/_history/2"),
            Some(("Patient".into(), "p1".into()))
        );
        assert_eq!(normalise_reference("#contained"), None);
        assert_eq!(normalise_reference("p1"), None);
        assert_eq!(normalise_reference("patient/p1"), None);
    }

    #[test]
    fn a_root_with_criteria_is_not_a_base() {
        let mut v = base();
        v["provision"] = json!({"type": "permit", "actor": [{"role": {"coding": [{"code": "IRCP"}]}, "reference": {"reference": "RelatedPerson/mom"}}]});
        let c = parse_consent(&v).unwrap();
        assert!(c.root.explicit_type && !c.root.is_base() && c.period.is_none());
        v["provision"] = json!({"type": "permit"});
        assert!(parse_consent(&v).unwrap().root.is_base());
    }
}
