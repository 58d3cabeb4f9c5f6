//! SMART App Launch scopes (v2 `patient|user|system/<Type|*>.<cruds>[?param=value]`, and the
//! v1 `.read`/`.write`/`.*` forms), parsed once when a grant is made and consulted by the
//! engine on every access.
//!
//! INTERFACE (implementation pending): the types and signatures below are what the server
//! and the store rely on.

use crate::context::Action;
use serde::Serialize;

/// Whose data a resource scope speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeContext {
    /// The patient in context (the token's `patient`).
    Patient,
    /// Whatever the signed-in user may see.
    User,
    /// A backend service, no user.
    System,
}

/// The `cruds` letters of a v2 scope (v1 `.read` = `rs`, `.write` = `cud`, `.*` = `cruds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Perms {
    pub create: bool,
    pub read: bool,
    pub update: bool,
    pub delete: bool,
    pub search: bool,
}

/// One resource scope, e.g. `patient/Observation.rs?category=laboratory`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ResourceScope {
    pub context: ScopeContext,
    /// `None` for `*`.
    pub resource_type: Option<String>,
    pub perms: Perms,
    /// Narrowing: only `category` is supported (US Core); value `system|code` or `code`.
    pub category: Option<String>,
}

/// One scope token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Scope {
    Resource(ResourceScope),
    /// `launch` (EHR launch)
    Launch,
    /// `launch/patient` (standalone launch: the user picks a patient)
    LaunchPatient,
    OpenId,
    FhirUser,
    OfflineAccess,
    OnlineAccess,
    /// A well-formed token portico does not interpret (kept so it can be echoed or dropped).
    Other(String),
}

/// A malformed scope string, or a narrowing portico does not support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeError(pub String);

/// For a search over one type (or `*`) under app scopes: which types and which categories
/// the results may have. The store applies this in SQL; see `SearchPermit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeLimit {
    /// A resource type, or `*` for every type.
    pub resource_type: String,
    /// `None`: any category. `Some(codes)`: the resource must carry one of these `category`
    /// codings (`system|code`, or `code` alone to match any system).
    pub categories: Option<Vec<String>>,
}

/// The scopes of one grant.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ScopeSet {
    pub scopes: Vec<Scope>,
}

impl ScopeSet {
    /// Parse a space-separated scope string.
    pub fn parse(_s: &str) -> Result<ScopeSet, ScopeError> {
        todo!("scopes::parse")
    }

    /// The canonical space-separated form (what goes into tokens and `scope` responses).
    pub fn to_scope_string(&self) -> String {
        todo!()
    }

    /// Whether every scope here is granted by `other` (a refresh or a client's registration
    /// may narrow but never widen).
    pub fn is_subset_of(&self, _other: &ScopeSet) -> bool {
        todo!()
    }

    /// The requested scopes that `allowed` covers (scopes a client is not registered for
    /// are dropped).
    pub fn restrict_to(&self, _allowed: &ScopeSet) -> ScopeSet {
        todo!()
    }

    pub fn has(&self, _scope: &Scope) -> bool {
        todo!()
    }

    /// Whether the scopes permit `action` on one resource of `resource_type` whose own
    /// category codings are `category_codes`, in the given context kind(s).
    pub fn permits(
        &self,
        _contexts: &[ScopeContext],
        _action: Action,
        _resource_type: &str,
        _category_codes: &[String],
    ) -> bool {
        todo!()
    }

    /// For a search/history/`$everything` over `resource_type` (`None` = every type): the
    /// limits the results must meet, or `None` when no scope permits it at all.
    pub fn search_limits(
        &self,
        _contexts: &[ScopeContext],
        _action: Action,
        _resource_type: Option<&str>,
    ) -> Option<Vec<TypeLimit>> {
        todo!()
    }

    /// Plain-language lines for the authorization screen, one per scope.
    pub fn describe(&self) -> Vec<(String, String)> {
        todo!()
    }
}
