//! SMART App Launch scopes (v2 `patient|user|system/<Type|*>.<cruds>[?param=value]`, and the
//! v1 `.read`/`.write`/`.*` forms), parsed once when a grant is made and consulted by the
//! engine on every access.
//!
//! * Grammar (SMART App Launch 2.x, "Scopes for requesting FHIR resources"):
//!   `( patient | user | system ) "/" ( Type | "*" ) "." ( cruds | read | write | "*" )
//!   [ "?category=" value ]`. The v2 letters must appear in the order `c r u d s`, each at most
//!   once, at least one. v1 `.read` is `rs`, `.write` is `cud`, `.*` is `cruds`; v1 forms take
//!   no narrowing. The resource type must look like a FHIR type name (`[A-Z][A-Za-z]{0,63}`).
//! * Narrowing: only `?category=<value>` is supported (US Core granular scopes). The value is
//!   percent-decoded and is either `system|code` (matched exactly against the resource's
//!   `category` codings) or a bare `code` (matched against the code of any system). Any other
//!   parameter, or several `&`-joined ones, is a [`ScopeError`] naming the problem.
//! * Identity and context scopes (`openid`, `fhirUser`, `launch`, `launch/patient`,
//!   `offline_access`, `online_access`) are recognised; any other well-formed token (printable
//!   ASCII without space, `"` or `\`, at most [`MAX_SCOPE_LEN`] characters) is kept as
//!   [`Scope::Other`] so it can be echoed or dropped. A token that starts with `patient/`,
//!   `user/` or `system/` must be a valid resource scope.
//! * Which letter an action needs (SMART 2.x's table): `r` for read, vread and *instance*
//!   history; `s` for type/system search, type/system history and `$everything`; `c` create;
//!   `u` update and patch; `d` delete. A permitted search returns the matching resources
//!   without a further `r` check: the search permit (with its [`TypeLimit`]s applied in SQL)
//!   is what admits them, exactly as SMART assigns type-level search to `s` alone.
//! * A resource scope keeps the token text the app sent, so a grant that keeps it unchanged
//!   echoes it back as given (a v1 app reads its own `patient/Observation.read`); scopes
//!   built in code print in the canonical v2 form. Equality ignores that text:
//!   `patient/Observation.read` and `patient/Observation.rs` are the same scope.

use crate::context::Action;
use serde::Serialize;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};

/// The longest scope token accepted.
pub const MAX_SCOPE_LEN: usize = 200;

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

impl ScopeContext {
    /// Every context.
    pub const ALL: [ScopeContext; 3] = [ScopeContext::Patient, ScopeContext::User, ScopeContext::System];

    /// The scope prefix (`patient`, `user`, `system`).
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        }
    }

    fn from_prefix(s: &str) -> Option<ScopeContext> {
        match s {
            "patient" => Some(ScopeContext::Patient),
            "user" => Some(ScopeContext::User),
            "system" => Some(ScopeContext::System),
            _ => None,
        }
    }
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

impl Perms {
    /// Every permission (`cruds`, v1 `*`).
    pub const ALL: Perms = Perms { create: true, read: true, update: true, delete: true, search: true };
    /// v1 `read`: read and search.
    pub const READ: Perms = Perms { create: false, read: true, update: false, delete: false, search: true };
    /// v1 `write`: create, update, delete.
    pub const WRITE: Perms = Perms { create: true, read: false, update: true, delete: true, search: false };

    /// Parse v2 letters: a non-empty subsequence of `cruds`, in that order, each at most once.
    pub fn from_letters(s: &str) -> Option<Perms> {
        let mut p = Perms::default();
        let mut next = 0; // index into "cruds" of the first letter still allowed
        for ch in s.chars() {
            let i = "cruds".find(ch)?;
            if i < next {
                return None; // out of order or repeated
            }
            next = i + 1;
            p.set(ch);
        }
        (!p.is_empty()).then_some(p)
    }

    /// The v2 letters, in `cruds` order.
    pub fn letters(&self) -> String {
        "cruds".chars().filter(|c| self.allows(*c)).collect()
    }

    pub fn is_empty(&self) -> bool {
        *self == Perms::default()
    }

    /// Whether every permission of `other` is also here.
    pub fn contains(&self, other: &Perms) -> bool {
        "cruds".chars().all(|c| !other.allows(c) || self.allows(c))
    }

    /// Whether the letter (`c`, `r`, `u`, `d` or `s`) is granted.
    pub fn allows(&self, letter: char) -> bool {
        match letter {
            'c' => self.create,
            'r' => self.read,
            'u' => self.update,
            'd' => self.delete,
            's' => self.search,
            _ => false,
        }
    }

    fn set(&mut self, letter: char) {
        match letter {
            'c' => self.create = true,
            'r' => self.read = true,
            'u' => self.update = true,
            'd' => self.delete = true,
            's' => self.search = true,
            _ => {}
        }
    }
}

/// The permission letter `action` needs. `on_instance`: the action addresses one resource
/// (instance history is `r` in SMART's table; type and system history are `s`).
pub fn letter_for(action: Action, on_instance: bool) -> char {
    match action {
        Action::Read | Action::VRead => 'r',
        Action::History if on_instance => 'r',
        Action::History | Action::Search | Action::Everything => 's',
        Action::Create => 'c',
        Action::Update | Action::Patch => 'u',
        Action::Delete => 'd',
    }
}

/// One resource scope, e.g. `patient/Observation.rs?category=laboratory`.
///
/// Equality and hashing ignore the token text the scope was parsed from (see the module
/// documentation); build one in code with [`ResourceScope::new`].
#[derive(Debug, Clone, Serialize)]
pub struct ResourceScope {
    pub context: ScopeContext,
    /// `None` for `*`.
    pub resource_type: Option<String>,
    pub perms: Perms,
    /// Narrowing: only `category` is supported (US Core); value `system|code` or `code`.
    pub category: Option<String>,
    /// The token as the app sent it, when parsed (echoed back when granted unchanged).
    #[serde(skip)]
    original: Option<String>,
}

impl PartialEq for ResourceScope {
    fn eq(&self, other: &Self) -> bool {
        self.context == other.context
            && self.resource_type == other.resource_type
            && self.perms == other.perms
            && self.category == other.category
    }
}

impl Eq for ResourceScope {}

impl Hash for ResourceScope {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.context.hash(state);
        self.resource_type.hash(state);
        self.perms.hash(state);
        self.category.hash(state);
    }
}

impl ResourceScope {
    /// A scope built in code (printed in the canonical v2 form). The type must be a FHIR type
    /// name (`None` = `*`), at least one permission must be granted, and a category must be a
    /// non-empty `code` or `system|code`.
    pub fn new(
        context: ScopeContext,
        resource_type: Option<String>,
        perms: Perms,
        category: Option<String>,
    ) -> Result<ResourceScope, ScopeError> {
        if let Some(t) = &resource_type
            && !is_type_name(t)
        {
            return Err(ScopeError(format!("'{}' is not a FHIR resource type name", shown(t))));
        }
        if perms.is_empty() {
            return Err(ScopeError("a resource scope must grant at least one of c, r, u, d, s".into()));
        }
        if let Some(c) = &category {
            check_category(c)?;
        }
        Ok(ResourceScope { context, resource_type, perms, category, original: None })
    }

    /// The token text this scope was parsed from (`None` when built in code).
    pub fn original(&self) -> Option<&str> {
        self.original.as_deref()
    }

    /// The canonical v2 form, e.g. `patient/Observation.rs?category=laboratory`.
    pub fn canonical(&self) -> String {
        let mut s = format!(
            "{}/{}.{}",
            self.context.as_str(),
            self.resource_type.as_deref().unwrap_or("*"),
            self.perms.letters()
        );
        if let Some(c) = &self.category {
            s.push_str("?category=");
            s.push_str(&percent_encode(c));
        }
        s
    }

    /// Whether this scope grants everything `other` grants: same context, this type is `*`
    /// or the same, its permissions include `other`'s, and it is not narrowed or narrowed to
    /// a category that includes `other`'s.
    pub fn covers(&self, other: &ResourceScope) -> bool {
        self.context == other.context
            && (self.resource_type.is_none() || self.resource_type == other.resource_type)
            && self.perms.contains(&other.perms)
            && match (&self.category, &other.category) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(mine), Some(theirs)) => category_covers(mine, theirs),
            }
    }

    /// Whether the scope speaks of `resource_type` in one of `contexts`.
    fn applies(&self, contexts: &[ScopeContext], resource_type: &str) -> bool {
        contexts.contains(&self.context) && self.resource_type.as_deref().is_none_or(|t| t == resource_type)
    }

    fn parse(token: &str, context: ScopeContext, rest: &str) -> Result<ResourceScope, ScopeError> {
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        let Some((ty, letters)) = main.split_once('.') else {
            return Err(ScopeError(format!("scope '{}' lacks the '.' before its permissions", shown(token))));
        };
        let resource_type = match ty {
            "*" => None,
            t if is_type_name(t) => Some(t.to_string()),
            t => {
                return Err(ScopeError(format!(
                    "'{}' in scope '{}' is not a FHIR resource type",
                    shown(t),
                    shown(token)
                )));
            }
        };
        let (perms, v1) = match letters {
            "read" => (Perms::READ, true),
            "write" => (Perms::WRITE, true),
            "*" => (Perms::ALL, true),
            l => match Perms::from_letters(l) {
                Some(p) => (p, false),
                None => {
                    return Err(ScopeError(format!(
                        "'{}' in scope '{}' is not a permission: use the letters c, r, u, d, s in that order \
                         (each at most once), or read, write or *",
                        shown(l),
                        shown(token)
                    )));
                }
            },
        };
        let category = match query {
            None => None,
            Some(_) if v1 => {
                return Err(ScopeError(format!(
                    "scope '{}' narrows a v1 scope; narrowing needs the v2 form (e.g. .rs?category=…)",
                    shown(token)
                )));
            }
            Some(q) => Some(parse_narrowing(token, q)?),
        };
        Ok(ResourceScope { context, resource_type, perms, category, original: Some(token.to_string()) })
    }
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

impl Scope {
    /// Parse one token (no spaces).
    pub fn parse(token: &str) -> Result<Scope, ScopeError> {
        if token.is_empty() {
            return Err(ScopeError("empty scope".into()));
        }
        if let Some(bad) = token.chars().find(|c| !is_scope_char(*c)) {
            let at = token.find(bad).unwrap_or(0);
            return Err(ScopeError(format!(
                "scope '{}' contains a character not allowed in a scope ({:?})",
                shown(&token[..at]),
                bad
            )));
        }
        if token.len() > MAX_SCOPE_LEN {
            return Err(ScopeError(format!(
                "scope '{}…' is longer than {MAX_SCOPE_LEN} characters",
                shown(&token[..MAX_SCOPE_LEN.min(40)])
            )));
        }
        Ok(match token {
            "launch" => Scope::Launch,
            "launch/patient" => Scope::LaunchPatient,
            "openid" => Scope::OpenId,
            "fhirUser" => Scope::FhirUser,
            "offline_access" => Scope::OfflineAccess,
            "online_access" => Scope::OnlineAccess,
            _ => match token.split_once('/').and_then(|(p, rest)| Some((ScopeContext::from_prefix(p)?, rest))) {
                Some((context, rest)) => Scope::Resource(ResourceScope::parse(token, context, rest)?),
                None => Scope::Other(token.to_string()),
            },
        })
    }

    /// Whether this scope grants everything `other` grants (resource scopes: see
    /// [`ResourceScope::covers`]; any other token only covers itself).
    pub fn covers(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Resource(a), Scope::Resource(b)) => a.covers(b),
            (a, b) => a == b,
        }
    }

    fn as_resource(&self) -> Option<&ResourceScope> {
        match self {
            Scope::Resource(r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    /// The token: a parsed resource scope as the app sent it, otherwise the canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Resource(r) => match &r.original {
                Some(o) => f.write_str(o),
                None => f.write_str(&r.canonical()),
            },
            Scope::Launch => f.write_str("launch"),
            Scope::LaunchPatient => f.write_str("launch/patient"),
            Scope::OpenId => f.write_str("openid"),
            Scope::FhirUser => f.write_str("fhirUser"),
            Scope::OfflineAccess => f.write_str("offline_access"),
            Scope::OnlineAccess => f.write_str("online_access"),
            Scope::Other(t) => f.write_str(t),
        }
    }
}

/// A malformed scope string, or a narrowing portico does not support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeError(pub String);

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScopeError {}

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

impl TypeLimit {
    /// Whether a resource of `resource_type` with these `category` codings (`system|code`,
    /// as in `ResourceFacts::category_codes`) meets this limit. A search's limits are
    /// alternatives: a resource is admitted when any one of them admits it.
    pub fn admits(&self, resource_type: &str, category_codes: &[String]) -> bool {
        (self.resource_type == "*" || self.resource_type == resource_type)
            && self.categories.as_ref().is_none_or(|cs| cs.iter().any(|c| category_matches(c, category_codes)))
    }
}

/// Whether a scope's category value matches one of a resource's codings (`system|code`, or
/// `|code` for a coding without a system): `system|code` must equal one exactly, a bare
/// `code` matches that code in any system. The store's SQL applies the same predicate.
pub fn category_matches(wanted: &str, codes: &[String]) -> bool {
    if wanted.contains('|') { codes.iter().any(|c| c == wanted) } else { codes.iter().any(|c| code_part(c) == wanted) }
}

/// The scopes of one grant.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ScopeSet {
    pub scopes: Vec<Scope>,
}

impl ScopeSet {
    /// Parse a space-separated scope string. Empty tokens (repeated spaces) are skipped,
    /// duplicates removed (first occurrence kept, order kept); one malformed token fails the
    /// whole string.
    pub fn parse(s: &str) -> Result<ScopeSet, ScopeError> {
        let mut seen = HashSet::new();
        let mut scopes = Vec::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            let scope = Scope::parse(token)?;
            if seen.insert(scope.clone()) {
                scopes.push(scope);
            }
        }
        Ok(ScopeSet { scopes })
    }

    /// The canonical space-separated form (what goes into tokens and `scope` responses):
    /// each parsed scope as the app sent it, scopes built in code in the v2 form.
    pub fn to_scope_string(&self) -> String {
        self.scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
    }

    /// Whether some scope here grants everything `scope` grants.
    pub fn covers(&self, scope: &Scope) -> bool {
        self.scopes.iter().any(|s| s.covers(scope))
    }

    /// Whether every scope here is granted by `other` (a refresh or a client's registration
    /// may narrow but never widen).
    pub fn is_subset_of(&self, other: &ScopeSet) -> bool {
        self.scopes.iter().all(|s| other.covers(s))
    }

    /// The requested scopes that `allowed` covers (scopes a client is not registered for
    /// are dropped). A requested scope is kept whole or dropped whole, never cut down.
    pub fn restrict_to(&self, allowed: &ScopeSet) -> ScopeSet {
        ScopeSet { scopes: self.scopes.iter().filter(|s| allowed.covers(s)).cloned().collect() }
    }

    pub fn has(&self, scope: &Scope) -> bool {
        self.scopes.contains(scope)
    }

    fn resource_scopes(&self) -> impl Iterator<Item = &ResourceScope> {
        self.scopes.iter().filter_map(Scope::as_resource)
    }

    /// Whether the scopes permit `action` on one resource of `resource_type` whose own
    /// category codings are `category_codes`, in the given context kind(s).
    pub fn permits(
        &self,
        contexts: &[ScopeContext],
        action: Action,
        resource_type: &str,
        category_codes: &[String],
    ) -> bool {
        let letter = letter_for(action, true);
        self.resource_scopes().any(|r| {
            r.applies(contexts, resource_type)
                && r.perms.allows(letter)
                && r.category.as_deref().is_none_or(|c| category_matches(c, category_codes))
        })
    }

    /// Whether some scope grants `action` on one resource of `resource_type`, whatever its
    /// category (used to explain a deny caused by category narrowing).
    pub(crate) fn grants_type(&self, contexts: &[ScopeContext], action: Action, resource_type: &str) -> bool {
        let letter = letter_for(action, true);
        self.resource_scopes().any(|r| r.applies(contexts, resource_type) && r.perms.allows(letter))
    }

    /// For a search/history/`$everything` over `resource_type` (`None` = every type): the
    /// limits the results must meet, or `None` when no scope permits it at all.
    ///
    /// For one type: a single limit for that type, with the union of the covering scopes'
    /// categories (no category limit if any covering scope is unnarrowed). For every type:
    /// one limit per type named by a covering scope (`*` for wildcard scopes), merged the same
    /// way; an unnarrowed `*` scope makes it the single limit `* / any category`.
    pub fn search_limits(
        &self,
        contexts: &[ScopeContext],
        action: Action,
        resource_type: Option<&str>,
    ) -> Option<Vec<TypeLimit>> {
        let letter = letter_for(action, false);
        let resource_type = resource_type.filter(|t| *t != "*");
        let mut limits: Vec<TypeLimit> = Vec::new();
        for r in self.resource_scopes().filter(|r| contexts.contains(&r.context) && r.perms.allows(letter)) {
            let ty = match (resource_type, &r.resource_type) {
                (Some(wanted), Some(t)) if t != wanted => continue,
                (Some(wanted), _) => wanted,
                (None, t) => t.as_deref().unwrap_or("*"),
            };
            match limits.iter_mut().find(|l| l.resource_type == ty) {
                None => limits.push(TypeLimit {
                    resource_type: ty.to_string(),
                    categories: r.category.as_ref().map(|c| vec![c.clone()]),
                }),
                Some(l) => match (&mut l.categories, &r.category) {
                    (None, _) => {}
                    (cats @ Some(_), None) => *cats = None,
                    (Some(cats), Some(c)) => {
                        if !cats.contains(c) {
                            cats.push(c.clone());
                        }
                    }
                },
            }
        }
        if limits.is_empty() {
            return None;
        }
        if limits.iter().any(|l| l.resource_type == "*" && l.categories.is_none()) {
            return Some(vec![TypeLimit { resource_type: "*".into(), categories: None }]);
        }
        Some(limits)
    }

    /// Plain-language lines for the authorization screen: (scope token, sentence), one per
    /// scope in order, except that `openid` and `fhirUser` share one line ("Know who you
    /// are") whose token part names both.
    pub fn describe(&self) -> Vec<(String, String)> {
        let identity: Vec<&Scope> =
            self.scopes.iter().filter(|s| matches!(s, Scope::OpenId | Scope::FhirUser)).collect();
        let mut out = Vec::new();
        let mut identity_done = false;
        for scope in &self.scopes {
            let token = scope.to_string();
            let sentence = match scope {
                Scope::OpenId | Scope::FhirUser => {
                    if identity_done {
                        continue;
                    }
                    identity_done = true;
                    let tokens: Vec<String> = identity.iter().map(|s| s.to_string()).collect();
                    out.push((tokens.join(" "), format!("Know who you are ({})", tokens.join(", "))));
                    continue;
                }
                Scope::Resource(r) => describe_resource(r),
                Scope::Launch => "Open from within portico with the record you are looking at (launch)".to_string(),
                Scope::LaunchPatient => "Know whose records you chose to share (launch/patient)".to_string(),
                Scope::OfflineAccess => {
                    "Stay signed in and refresh access while you are away (offline_access)".to_string()
                }
                Scope::OnlineAccess => "Refresh access while you are using the app (online_access)".to_string(),
                Scope::Other(t) => format!("Ask for a permission portico does not use; it gives no access ({t})"),
            };
            out.push((token, sentence));
        }
        out
    }
}

// ---- parsing helpers -------------------------------------------------------------------------

/// Printable ASCII except space, `"` and `\` (RFC 6749 `NQCHAR`).
fn is_scope_char(c: char) -> bool {
    matches!(c, '\x21'..='\x7e') && c != '"' && c != '\\'
}

/// `[A-Z][A-Za-z]{0,63}`.
fn is_type_name(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty() && b.len() <= 64 && b[0].is_ascii_uppercase() && b.iter().all(u8::is_ascii_alphabetic)
}

/// Part of untrusted input fit for an error message: at most 64 characters, control
/// characters escaped.
fn shown(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_default).collect()
}

/// `category=<value>`, the one narrowing supported.
fn parse_narrowing(token: &str, query: &str) -> Result<String, ScopeError> {
    if query.contains('&') {
        return Err(ScopeError(format!(
            "scope '{}' narrows by more than one parameter; only a single 'category' is supported",
            shown(token)
        )));
    }
    let (name, value) = query.split_once('=').unwrap_or((query, ""));
    if name != "category" {
        return Err(ScopeError(format!(
            "narrowing by '{}' (in scope '{}') is not supported; only 'category' is",
            shown(name),
            shown(token)
        )));
    }
    let value = percent_decode(value).ok_or_else(|| {
        ScopeError(format!("the category in scope '{}' is not validly percent-encoded", shown(token)))
    })?;
    check_category(&value).map_err(|e| ScopeError(format!("{} (in scope '{}')", e.0, shown(token))))?;
    Ok(value)
}

/// A category value: non-empty, no control characters, and with a code after any `|`.
fn check_category(c: &str) -> Result<(), ScopeError> {
    if c.is_empty() {
        return Err(ScopeError("the category value is empty".into()));
    }
    if c.chars().any(char::is_control) {
        return Err(ScopeError("the category value contains a control character".into()));
    }
    if code_part(c).is_empty() {
        return Err(ScopeError(format!("the category '{}' has no code after '|'", shown(c))));
    }
    Ok(())
}

/// The code of a `system|code` coding (the whole string when there is no `|`).
fn code_part(coding: &str) -> &str {
    coding.split_once('|').map_or(coding, |(_, code)| code)
}

/// Whether narrowing to category `mine` includes everything narrowed to `theirs`.
fn category_covers(mine: &str, theirs: &str) -> bool {
    mine == theirs || (!mine.contains('|') && code_part(theirs) == mine)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encode what a scope token or a query value cannot carry literally.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        let literal = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':' | b'/' | b'|' | b'@' | b'!' | b'$' | b'\'' | b'(')
            || matches!(byte, b')' | b'*' | b',' | b';');
        if literal {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---- plain language --------------------------------------------------------------------------

/// Friendly plural names of common resource types.
const FRIENDLY_TYPES: &[(&str, &str)] = &[
    ("Observation", "observations"),
    ("Condition", "conditions"),
    ("MedicationRequest", "medications"),
    ("MedicationStatement", "medication lists"),
    ("Medication", "medication details"),
    ("AllergyIntolerance", "allergies"),
    ("Immunization", "immunizations"),
    ("Patient", "demographics"),
    ("DocumentReference", "documents"),
    ("DiagnosticReport", "test reports"),
    ("Encounter", "visits"),
    ("Procedure", "procedures"),
    ("CarePlan", "care plans"),
    ("CareTeam", "care teams"),
    ("Goal", "goals"),
    ("ServiceRequest", "orders and referrals"),
    ("FamilyMemberHistory", "family history"),
    ("QuestionnaireResponse", "questionnaire answers"),
    ("Coverage", "insurance coverage"),
    ("Device", "devices"),
    ("Provenance", "record sources"),
    ("Practitioner", "clinician details"),
    ("PractitionerRole", "clinician roles"),
    ("Organization", "organizations"),
    ("Location", "locations"),
    ("RelatedPerson", "related people"),
    ("Consent", "sharing choices"),
    ("AuditEvent", "access log entries"),
];

/// Friendly names of common category codes (matched on the code, any system).
const FRIENDLY_CATEGORIES: &[(&str, &str)] = &[
    ("laboratory", "lab results"),
    ("vital-signs", "vital signs"),
    ("social-history", "social history"),
    ("imaging", "imaging results"),
    ("survey", "survey answers"),
    ("exam", "exam findings"),
    ("procedure", "procedure results"),
    ("activity", "activity data"),
    ("sdoh", "social needs information"),
    ("problem-list-item", "problem list"),
    ("encounter-diagnosis", "visit diagnoses"),
    ("health-concern", "health concerns"),
    ("clinical-note", "clinical notes"),
    ("LAB", "lab reports"),
];

/// The friendly plural name of a resource type (`None` for a type without one).
pub(crate) fn friendly_type(resource_type: &str) -> Option<&'static str> {
    FRIENDLY_TYPES.iter().find(|(t, _)| *t == resource_type).map(|(_, n)| *n)
}

/// "observations", or "DiagnosticFoo records" for a type without a friendly name.
pub(crate) fn type_noun(resource_type: &str) -> String {
    match resource_type {
        "*" => "records".to_string(),
        t => friendly_type(t).map_or_else(|| format!("{t} records"), str::to_string),
    }
}

fn describe_resource(r: &ResourceScope) -> String {
    let ty = r.resource_type.as_deref().unwrap_or("*");
    let verbs: Vec<&str> = [('c', "add"), ('r', "read"), ('u', "update"), ('d', "delete"), ('s', "search")]
        .iter()
        .filter(|(l, _)| r.perms.allows(*l))
        .map(|(_, v)| *v)
        .collect();
    let mut verbs = join_words(&verbs);
    if let Some(first) = verbs.get(..1) {
        verbs = first.to_uppercase() + &verbs[1..];
    }
    let category_code = r.category.as_deref().map(code_part);
    let base = match (category_code, ty) {
        (Some(code), _) => match FRIENDLY_CATEGORIES.iter().find(|(c, _)| *c == code) {
            Some((_, name)) => name.to_string(),
            None => format!("{} in category {code}", type_noun(ty)),
        },
        (None, "*") => "records".to_string(),
        (None, t) => type_noun(t),
    };
    let all = ty == "*" && category_code.is_none();
    let noun = match (r.context, all) {
        (ScopeContext::Patient, true) => "all your records".to_string(),
        (ScopeContext::Patient, false) => format!("your {base}"),
        (ScopeContext::User, true) => "all records you can see".to_string(),
        (ScopeContext::User, false) => format!("{base} you can see"),
        (ScopeContext::System, true) => "all records on this server".to_string(),
        (ScopeContext::System, false) => format!("all {base} on this server"),
    };
    let detail = match category_code {
        Some(code) => format!("{}, category {code}", if ty == "*" { "all types" } else { ty }),
        None => (if ty == "*" { "all types" } else { ty }).to_string(),
    };
    format!("{verbs} {noun} ({detail})")
}

/// "a", "a and b", "a, b and c".
pub(crate) fn join_words(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
    const VITALS: &str = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs";

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap_or_else(|e| panic!("{s}: {}", e.0))
    }

    fn one(s: &str) -> ResourceScope {
        match Scope::parse(s).unwrap() {
            Scope::Resource(r) => r,
            other => panic!("{s} parsed as {other:?}"),
        }
    }

    fn err(s: &str) -> String {
        ScopeSet::parse(s).expect_err(s).0
    }

    fn codes(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    const PU: &[ScopeContext] = &[ScopeContext::Patient, ScopeContext::User];

    #[test]
    fn v2_resource_scopes() {
        let r = one("patient/Observation.rs");
        assert_eq!(r.context, ScopeContext::Patient);
        assert_eq!(r.resource_type.as_deref(), Some("Observation"));
        assert_eq!(r.perms, Perms::READ);
        assert_eq!(r.category, None);
        assert_eq!(one("user/*.cruds").perms, Perms::ALL);
        assert_eq!(one("user/*.cruds").resource_type, None);
        assert_eq!(one("system/Patient.c").perms, Perms { create: true, ..Perms::default() });
        assert_eq!(one("patient/Condition.rd").perms.letters(), "rd");
        assert_eq!(one("system/Encounter.us").perms.letters(), "us");
    }

    #[test]
    fn v1_forms_mean_their_v2_letters() {
        assert_eq!(one("patient/Observation.read"), one("patient/Observation.rs"));
        assert_eq!(one("patient/Observation.write"), one("patient/Observation.cud"));
        assert_eq!(one("patient/*.*"), one("patient/*.cruds"));
        assert_eq!(one("user/Observation.*").perms, Perms::ALL);
    }

    #[test]
    fn bad_permission_letters_are_rejected() {
        for bad in [
            "patient/Observation.sr",
            "patient/Observation.rr",
            "patient/Observation.x",
            "patient/Observation.",
            "patient/Observation.R",
            "patient/Observation.Read",
            "patient/Observation.rsx",
            "patient/Observation.dc",
            "patient/Observation",
        ] {
            assert!(ScopeSet::parse(bad).is_err(), "{bad}");
        }
        assert!(err("patient/Observation.sr").contains("c, r, u, d, s"));
    }

    #[test]
    fn resource_type_must_look_like_a_fhir_type() {
        for bad in [
            "patient/observation.rs",
            "patient/Obs-ervation.rs",
            "patient/Obs1.rs",
            "patient/.rs",
            "patient/**.rs",
            "patient/Observation/x.rs",
        ] {
            assert!(ScopeSet::parse(bad).is_err(), "{bad}");
        }
        let long = format!("patient/A{}.rs", "a".repeat(63));
        assert!(ScopeSet::parse(&long).is_ok());
        let too_long = format!("patient/A{}.rs", "a".repeat(64));
        assert!(ScopeSet::parse(&too_long).is_err());
    }

    #[test]
    fn category_narrowing() {
        let r = one("patient/Observation.rs?category=laboratory");
        assert_eq!(r.category.as_deref(), Some("laboratory"));
        let r = one(&format!("patient/Observation.rs?category={LAB}"));
        assert_eq!(r.category.as_deref(), Some(LAB));
        let r = one(
            "patient/Observation.rs?category=http%3A%2F%2Fterminology.hl7.org%2FCodeSystem%2Fobservation-category%7Claboratory",
        );
        assert_eq!(r.category.as_deref(), Some(LAB));
        assert_eq!(one("patient/Observation.rs?category=%7Clocal").category.as_deref(), Some("|local"));
    }

    #[test]
    fn unsupported_narrowings_are_named() {
        assert!(err("patient/Observation.rs?code=1234-5").contains("'code'"));
        assert!(err("patient/Observation.rs?category=laboratory&code=x").contains("more than one"));
        assert!(err("patient/Observation.rs?category=").contains("empty"));
        assert!(err("patient/Observation.rs?category").contains("empty"));
        assert!(err("patient/Observation.rs?category=x%ZZ").contains("percent"));
        assert!(err("patient/Observation.rs?category=x%E2").contains("percent"));
        assert!(err("patient/Observation.rs?category=a%0Ab").contains("control"));
        assert!(err("patient/Observation.rs?category=http://x|").contains("no code"));
        assert!(err("patient/Observation.read?category=laboratory").contains("v1"));
    }

    #[test]
    fn context_and_identity_scopes() {
        let s = set("launch launch/patient openid fhirUser offline_access online_access");
        assert_eq!(
            s.scopes,
            vec![
                Scope::Launch,
                Scope::LaunchPatient,
                Scope::OpenId,
                Scope::FhirUser,
                Scope::OfflineAccess,
                Scope::OnlineAccess
            ]
        );
    }

    #[test]
    fn other_tokens_are_kept_when_well_formed() {
        let s = set("profile launch/encounter smart/orchestrate_launch Patient/Observation.rs");
        assert_eq!(s.scopes[0], Scope::Other("profile".into()));
        assert_eq!(s.scopes[1], Scope::Other("launch/encounter".into()));
        assert_eq!(s.scopes.len(), 4);
        assert!(ScopeSet::parse("a\"b").is_err());
        assert!(ScopeSet::parse("a\\b").is_err());
        assert!(ScopeSet::parse("a\tb").is_err());
        assert!(ScopeSet::parse("caf\u{e9}").is_err());
        assert!(ScopeSet::parse(&"x".repeat(MAX_SCOPE_LEN)).is_ok());
        assert!(err(&"x".repeat(MAX_SCOPE_LEN + 1)).contains("longer"));
        assert!(ScopeSet::parse(&format!("patient/Observation.rs?category={}", "a".repeat(200))).is_err());
    }

    #[test]
    fn duplicates_are_dropped_and_order_kept_and_spaces_tolerated() {
        let s = set("  openid patient/Observation.rs  openid patient/Observation.read launch ");
        assert_eq!(s.to_scope_string(), "openid patient/Observation.rs launch");
        assert_eq!(set("").scopes, vec![]);
    }

    #[test]
    fn round_trip_echoes_what_the_app_sent() {
        for text in [
            "patient/Observation.read patient/*.write user/Condition.* openid fhirUser",
            "launch/patient patient/Observation.rs?category=http%3A%2F%2Fx.org%7Claboratory offline_access zz",
            "system/*.rs",
        ] {
            let s = set(text);
            assert_eq!(s.to_scope_string(), text);
            assert_eq!(set(&s.to_scope_string()), s);
        }
    }

    #[test]
    fn scopes_built_in_code_print_canonically_and_parse_back() {
        let r = ResourceScope::new(
            ScopeContext::Patient,
            Some("Observation".into()),
            Perms::READ,
            Some("http://x.org/cs|lab & more".into()),
        )
        .unwrap();
        assert_eq!(r.canonical(), "patient/Observation.rs?category=http://x.org/cs|lab%20%26%20more");
        let s = ScopeSet {
            scopes: vec![
                Scope::Resource(r),
                Scope::Resource(ResourceScope::new(ScopeContext::User, None, Perms::WRITE, None).unwrap()),
                Scope::OpenId,
            ],
        };
        assert_eq!(
            s.to_scope_string(),
            "patient/Observation.rs?category=http://x.org/cs|lab%20%26%20more user/*.cud openid"
        );
        assert_eq!(set(&s.to_scope_string()), s);
        assert!(ResourceScope::new(ScopeContext::User, Some("bad".into()), Perms::READ, None).is_err());
        assert!(ResourceScope::new(ScopeContext::User, None, Perms::default(), None).is_err());
        assert!(ResourceScope::new(ScopeContext::User, None, Perms::READ, Some(String::new())).is_err());
    }

    #[test]
    fn subset_and_restrict() {
        let granted = set("patient/*.rs patient/Condition.cruds openid");
        assert!(set("patient/Observation.r").is_subset_of(&granted));
        assert!(set("patient/Observation.rs?category=laboratory openid").is_subset_of(&granted));
        assert!(set("patient/Condition.cud").is_subset_of(&granted));
        assert!(!set("patient/Observation.rus").is_subset_of(&granted));
        assert!(!set("user/Observation.r").is_subset_of(&granted), "context must match");
        assert!(!set("fhirUser").is_subset_of(&granted));
        assert!(set("").is_subset_of(&granted));

        let narrowed = set("patient/Observation.rs?category=laboratory");
        assert!(set(&format!("patient/Observation.r?category={LAB}")).is_subset_of(&narrowed));
        assert!(!set("patient/Observation.r").is_subset_of(&narrowed));
        assert!(!set(&format!("patient/Observation.r?category={VITALS}")).is_subset_of(&narrowed));
        let with_system = set(&format!("patient/Observation.rs?category={LAB}"));
        assert!(!set("patient/Observation.r?category=laboratory").is_subset_of(&with_system));

        let requested = set("openid fhirUser patient/Observation.rs patient/*.cruds launch/patient other");
        let allowed = set("openid patient/*.rs launch/patient");
        let r = requested.restrict_to(&allowed);
        assert_eq!(r.to_scope_string(), "openid patient/Observation.rs launch/patient");
        assert!(r.is_subset_of(&allowed) && r.is_subset_of(&requested));
    }

    #[test]
    fn permits_by_letter_type_context_and_category() {
        let s =
            set(&format!("patient/Observation.rs?category={LAB} patient/Condition.r user/Patient.rs system/*.cruds"));
        let lab = codes(&[LAB]);
        assert!(s.permits(PU, Action::Read, "Observation", &lab));
        assert!(s.permits(PU, Action::Search, "Observation", &lab));
        assert!(!s.permits(PU, Action::Read, "Observation", &codes(&[VITALS])));
        assert!(!s.permits(PU, Action::Read, "Observation", &[]));
        assert!(!s.permits(PU, Action::Update, "Observation", &lab));
        assert!(s.permits(PU, Action::Read, "Condition", &[]));
        assert!(s.permits(PU, Action::History, "Condition", &[]), "instance history is r");
        assert!(!s.permits(PU, Action::Search, "Condition", &[]));
        assert!(s.permits(PU, Action::VRead, "Patient", &[]));
        assert!(!s.permits(&[ScopeContext::Patient], Action::Read, "Patient", &[]));
        assert!(!s.permits(PU, Action::Create, "Encounter", &[]));
        assert!(s.permits(&[ScopeContext::System], Action::Delete, "Encounter", &[]));
        assert!(!ScopeSet::default().permits(PU, Action::Read, "Observation", &[]));
    }

    #[test]
    fn bare_category_codes_match_any_system() {
        let s = set("patient/Observation.rs?category=laboratory");
        assert!(s.permits(PU, Action::Read, "Observation", &codes(&[VITALS, LAB])));
        assert!(s.permits(PU, Action::Read, "Observation", &codes(&["|laboratory"])));
        assert!(s.permits(PU, Action::Read, "Observation", &codes(&["http://other|laboratory"])));
        assert!(!s.permits(PU, Action::Read, "Observation", &codes(&["http://other|laboratory-x"])));
        let exact = set("patient/Observation.rs?category=|laboratory");
        assert!(exact.permits(PU, Action::Read, "Observation", &codes(&["|laboratory"])));
        assert!(!exact.permits(PU, Action::Read, "Observation", &codes(&[LAB])));
    }

    #[test]
    fn search_limits_per_type() {
        let s = set(&format!(
            "patient/Observation.rs?category={LAB} patient/Observation.rs?category=vital-signs patient/Condition.r \
             patient/Encounter.s patient/Observation.s?category={LAB}"
        ));
        assert_eq!(
            s.search_limits(PU, Action::Search, Some("Observation")),
            Some(vec![TypeLimit {
                resource_type: "Observation".into(),
                categories: Some(vec![LAB.to_string(), "vital-signs".to_string()])
            }])
        );
        assert_eq!(s.search_limits(PU, Action::Search, Some("Condition")), None, "r alone does not search");
        assert_eq!(
            s.search_limits(PU, Action::History, Some("Encounter")),
            Some(vec![TypeLimit { resource_type: "Encounter".into(), categories: None }])
        );
        assert_eq!(s.search_limits(&[ScopeContext::System], Action::Search, Some("Encounter")), None);
        assert_eq!(s.search_limits(PU, Action::Search, Some("Patient")), None);

        let plus = set(&format!("patient/Observation.rs?category={LAB} patient/Observation.s"));
        assert_eq!(
            plus.search_limits(PU, Action::Search, Some("Observation")),
            Some(vec![TypeLimit { resource_type: "Observation".into(), categories: None }]),
            "an unnarrowed scope lifts the category limit"
        );

        let wildcard = set("patient/*.s?category=laboratory patient/Observation.rs");
        assert_eq!(
            wildcard.search_limits(PU, Action::Search, Some("Condition")),
            Some(vec![TypeLimit { resource_type: "Condition".into(), categories: Some(vec!["laboratory".into()]) }])
        );
        assert_eq!(
            wildcard.search_limits(PU, Action::Search, Some("Observation")),
            Some(vec![TypeLimit { resource_type: "Observation".into(), categories: None }])
        );
    }

    #[test]
    fn search_limits_across_types() {
        let s = set(
            "patient/Observation.rs?category=laboratory patient/Condition.rs patient/Observation.s?category=exam patient/Patient.r",
        );
        assert_eq!(
            s.search_limits(PU, Action::Everything, None),
            Some(vec![
                TypeLimit {
                    resource_type: "Observation".into(),
                    categories: Some(vec!["laboratory".into(), "exam".into()])
                },
                TypeLimit { resource_type: "Condition".into(), categories: None },
            ])
        );
        assert_eq!(s.search_limits(PU, Action::Search, Some("*")), s.search_limits(PU, Action::Search, None));
        let all = set("patient/Observation.rs patient/*.rs");
        assert_eq!(
            all.search_limits(PU, Action::Search, None),
            Some(vec![TypeLimit { resource_type: "*".into(), categories: None }])
        );
        assert_eq!(set("openid patient/Patient.r").search_limits(PU, Action::Search, None), None);
    }

    #[test]
    fn type_limits_admit_like_permits() {
        let l = TypeLimit {
            resource_type: "Observation".into(),
            categories: Some(vec!["laboratory".into(), VITALS.into()]),
        };
        assert!(l.admits("Observation", &codes(&[LAB])));
        assert!(l.admits("Observation", &codes(&[VITALS])));
        assert!(!l.admits("Observation", &codes(&["http://x|vital-signs"])));
        assert!(!l.admits("Condition", &codes(&[LAB])));
        let any = TypeLimit { resource_type: "*".into(), categories: None };
        assert!(any.admits("Condition", &[]));
    }

    #[test]
    fn describe_in_plain_language() {
        let s = set(&format!(
            "openid fhirUser patient/Observation.rs?category={LAB} offline_access patient/*.rs patient/Patient.r \
             user/Condition.cruds patient/MedicationRequest.read system/Basic.s launch/patient frob"
        ));
        let d = s.describe();
        let lines: Vec<&str> = d.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(d[0].0, "openid fhirUser");
        assert_eq!(
            lines,
            vec![
                "Know who you are (openid, fhirUser)",
                "Read and search your lab results (Observation, category laboratory)",
                "Stay signed in and refresh access while you are away (offline_access)",
                "Read and search all your records (all types)",
                "Read your demographics (Patient)",
                "Add, read, update, delete and search conditions you can see (Condition)",
                "Read and search your medications (MedicationRequest)",
                "Search all Basic records on this server (Basic)",
                "Know whose records you chose to share (launch/patient)",
                "Ask for a permission portico does not use; it gives no access (frob)",
            ]
        );
        assert_eq!(d[4].0, "patient/Patient.r");
        assert_eq!(d[6].0, "patient/MedicationRequest.read");
        assert_eq!(set("fhirUser").describe(), vec![("fhirUser".into(), "Know who you are (fhirUser)".into())]);
        assert_eq!(
            set("patient/Observation.r?category=x-y").describe()[0].1,
            "Read your observations in category x-y (Observation, category x-y)"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_token() -> impl Strategy<Value = String> {
            let ctx = prop_oneof![Just("patient"), Just("user"), Just("system")];
            let ty = prop_oneof![Just("*".to_string()), "[A-Z][A-Za-z]{0,10}"];
            let perms = prop_oneof![
                (1u8..32).prop_map(|bits| "cruds"
                    .chars()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, c)| c)
                    .collect::<String>()),
                Just("read".to_string()),
                Just("write".to_string()),
                Just("*".to_string()),
            ];
            let cat = proptest::option::of("[ -~]{1,20}");
            let resource = (ctx, ty, perms, cat).prop_map(|(c, t, p, q)| {
                let v1 = matches!(p.as_str(), "read" | "write" | "*");
                match q.filter(|q| !v1 && !q.ends_with('|')) {
                    Some(q) => format!("{c}/{t}.{p}?category={}", percent_encode(&q)),
                    None => format!("{c}/{t}.{p}"),
                }
            });
            prop_oneof![3 => resource, 1 => "[!#-\\[\\]-~]{1,30}".prop_filter("not a resource scope", |t| {
                !t.starts_with("patient/") && !t.starts_with("user/") && !t.starts_with("system/")
            })]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Parsing arbitrary input never panics, and whatever parses prints back as given
            /// (modulo spacing and duplicates) and parses again to the same set.
            #[test]
            fn parse_is_total_and_round_trips(text in "\\PC{0,120}") {
                if let Ok(set) = ScopeSet::parse(&text) {
                    let printed = set.to_scope_string();
                    prop_assert_eq!(ScopeSet::parse(&printed), Ok(set));
                }
            }

            /// Generated well-formed scopes parse; their canonical form parses to the same scope.
            #[test]
            fn well_formed_scopes_parse_and_canonicalise(tokens in proptest::collection::vec(arb_token(), 0..8)) {
                let text = tokens.join(" ");
                let set = ScopeSet::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {}", e.0)))?;
                prop_assert_eq!(ScopeSet::parse(&set.to_scope_string()), Ok(set.clone()));
                for scope in &set.scopes {
                    if let Scope::Resource(r) = scope {
                        let canonical = r.canonical();
                        prop_assert_eq!(Scope::parse(&canonical), Ok(scope.clone()));
                        prop_assert!(set.covers(scope));
                    }
                }
                prop_assert!(set.is_subset_of(&set));
                prop_assert_eq!(set.restrict_to(&set), set.clone());
            }
        }
    }
}
