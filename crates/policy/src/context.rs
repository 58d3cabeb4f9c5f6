//! Who is asking, for what, about which resource.

use portico_audit::{Actor, Scope};
use serde::Serialize;

/// The authenticated party behind a request. Identity (users, apps) plugs in here; for now
/// the only principal the server can authenticate is the operator, by the admin token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Principal {
    /// The deployment's operator or a system integration holding the admin token.
    Operator,
    /// A patient user acting for themself.
    Patient { patient: String },
    /// Nobody authenticated.
    Anonymous,
}

impl Principal {
    /// The principal as the audit trail names it.
    pub fn actor(&self) -> Actor {
        match self {
            Principal::Operator => Actor::new("operator", "operator"),
            Principal::Patient { patient } => Actor::new("patient", patient),
            Principal::Anonymous => Actor::new("anonymous", ""),
        }
    }
}

/// Everything the gate needs to know about the request, independent of the resource.
#[derive(Debug, Clone, Serialize)]
pub struct RequestContext {
    pub principal: Principal,
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
        RequestContext { principal, purpose: None, request_id: scope.request_id(), scope }
    }
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
        }
    }
}
