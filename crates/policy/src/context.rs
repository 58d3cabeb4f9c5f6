//! Who is asking, for what, about which resource.

use crate::scopes::ScopeSet;
use portico_audit::{Actor, Scope};
use serde::Serialize;

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
        }
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
        }
    }
}
