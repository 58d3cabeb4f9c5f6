//! One audit record: who did what to which data, when, from where, why, and how it ended.

/// The interaction a record describes (FHIR `restful-interaction` codes where one exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interaction {
    Read,
    VRead,
    /// Search of one type (`GET /fhir/Observation?…`).
    SearchType,
    /// Search across types.
    SearchSystem,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    /// `Patient/{id}/$everything`.
    Everything,
    Create,
    Update,
    Patch,
    Delete,
    /// The patient's plain-language access log was read.
    AccessLog,
    /// A user signed in (or failed to).
    Login,
    /// A user signed out.
    Logout,
    /// A step-up verification (TOTP) was attempted.
    StepUp,
    /// A user approved or denied an app's authorization request.
    Authorize,
    /// Tokens were issued (authorization code, client credentials, operator CLI).
    TokenIssue,
    /// A refresh token was exchanged.
    TokenRefresh,
    /// A token, grant (connected app) or device was revoked.
    Revoke,
    /// Security settings changed: password, TOTP enrolment.
    SecuritySettings,
    /// A request was refused before any decision because it carried no valid credential
    /// (401: no token, an unknown, expired or revoked token, no session).
    Authenticate,
    /// A clinician started emergency access (break-the-glass) to a patient's record.
    BreakGlass,
    /// A bulk `$export` step: kick-off, status poll, download, cancel, expiry or a stop for
    /// revocation (which one: the record's query, `op=…`).
    BulkExport,
}

impl Interaction {
    /// Every interaction, in code order.
    pub const ALL: [Interaction; 24] = [
        Interaction::Read,
        Interaction::VRead,
        Interaction::SearchType,
        Interaction::SearchSystem,
        Interaction::HistoryInstance,
        Interaction::HistoryType,
        Interaction::HistorySystem,
        Interaction::Everything,
        Interaction::Create,
        Interaction::Update,
        Interaction::Patch,
        Interaction::Delete,
        Interaction::AccessLog,
        Interaction::Login,
        Interaction::Logout,
        Interaction::StepUp,
        Interaction::Authorize,
        Interaction::TokenIssue,
        Interaction::TokenRefresh,
        Interaction::Revoke,
        Interaction::SecuritySettings,
        Interaction::Authenticate,
        Interaction::BreakGlass,
        Interaction::BulkExport,
    ];

    /// The stable code stored in records and index columns.
    pub fn code(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::VRead => "vread",
            Interaction::SearchType => "search-type",
            Interaction::SearchSystem => "search-system",
            Interaction::HistoryInstance => "history-instance",
            Interaction::HistoryType => "history-type",
            Interaction::HistorySystem => "history-system",
            Interaction::Everything => "everything",
            Interaction::Create => "create",
            Interaction::Update => "update",
            Interaction::Patch => "patch",
            Interaction::Delete => "delete",
            Interaction::AccessLog => "access-log",
            Interaction::Login => "login",
            Interaction::Logout => "logout",
            Interaction::StepUp => "step-up",
            Interaction::Authorize => "authorize",
            Interaction::TokenIssue => "token-issue",
            Interaction::TokenRefresh => "token-refresh",
            Interaction::Revoke => "revoke",
            Interaction::SecuritySettings => "security-settings",
            Interaction::Authenticate => "authenticate",
            Interaction::BreakGlass => "break-glass",
            Interaction::BulkExport => "bulk-export",
        }
    }

    pub fn from_code(code: &str) -> Option<Interaction> {
        // A match, not a search of `ALL`: `verify` looks up one per record.
        Some(match code {
            "read" => Interaction::Read,
            "vread" => Interaction::VRead,
            "search-type" => Interaction::SearchType,
            "search-system" => Interaction::SearchSystem,
            "history-instance" => Interaction::HistoryInstance,
            "history-type" => Interaction::HistoryType,
            "history-system" => Interaction::HistorySystem,
            "everything" => Interaction::Everything,
            "create" => Interaction::Create,
            "update" => Interaction::Update,
            "patch" => Interaction::Patch,
            "delete" => Interaction::Delete,
            "access-log" => Interaction::AccessLog,
            "login" => Interaction::Login,
            "logout" => Interaction::Logout,
            "step-up" => Interaction::StepUp,
            "authorize" => Interaction::Authorize,
            "token-issue" => Interaction::TokenIssue,
            "token-refresh" => Interaction::TokenRefresh,
            "revoke" => Interaction::Revoke,
            "security-settings" => Interaction::SecuritySettings,
            "authenticate" => Interaction::Authenticate,
            "break-glass" => Interaction::BreakGlass,
            "bulk-export" => Interaction::BulkExport,
            _ => return None,
        })
    }

    /// AuditEvent.action: C(reate), R(ead), U(pdate), D(elete), E(xecute).
    pub fn action(self) -> &'static str {
        match self {
            Interaction::Read
            | Interaction::VRead
            | Interaction::HistoryInstance
            | Interaction::HistoryType
            | Interaction::HistorySystem => "R",
            Interaction::SearchType
            | Interaction::SearchSystem
            | Interaction::Everything
            | Interaction::AccessLog
            | Interaction::BulkExport => "E",
            Interaction::Login
            | Interaction::Logout
            | Interaction::StepUp
            | Interaction::Authorize
            | Interaction::TokenIssue
            | Interaction::TokenRefresh
            | Interaction::Revoke
            | Interaction::SecuritySettings
            | Interaction::Authenticate
            | Interaction::BreakGlass => "E",
            Interaction::Create => "C",
            Interaction::Update | Interaction::Patch => "U",
            Interaction::Delete => "D",
        }
    }

    /// Whether the interaction changes data.
    pub fn is_write(self) -> bool {
        matches!(self, Interaction::Create | Interaction::Update | Interaction::Patch | Interaction::Delete)
    }

    /// Whether the interaction returns a list (query-shaped: BALP Query).
    pub fn is_query(self) -> bool {
        (self.action() == "E" && !self.is_security())
            || matches!(self, Interaction::HistoryType | Interaction::HistorySystem)
    }

    /// Whether the interaction is about identity and access (sign-in, tokens, settings)
    /// rather than about clinical data.
    pub fn is_security(self) -> bool {
        matches!(
            self,
            Interaction::Login
                | Interaction::Logout
                | Interaction::StepUp
                | Interaction::Authorize
                | Interaction::TokenIssue
                | Interaction::TokenRefresh
                | Interaction::Revoke
                | Interaction::SecuritySettings
                | Interaction::Authenticate
                | Interaction::BreakGlass
        )
    }
}

/// How the interaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done as asked.
    Success,
    /// The gate refused.
    Denied,
    /// Permitted but not done (a client error such as a version conflict, or a server error).
    Failed,
}

impl Outcome {
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }

    pub fn from_code(code: &str) -> Option<Outcome> {
        [Outcome::Success, Outcome::Denied, Outcome::Failed].into_iter().find(|o| o.code() == code)
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Actor {
    /// `operator`, `patient`, `anonymous` (identity adds `practitioner`, `related-person`, …).
    pub kind: String,
    /// The actor's id within its kind (`operator`, a patient id, a user id).
    pub id: String,
    /// Role the actor acted in, when it has several.
    pub role: Option<String>,
}

impl Actor {
    pub fn new(kind: &str, id: &str) -> Actor {
        Actor { kind: kind.to_string(), id: id.to_string(), role: None }
    }

    /// The value of the `actor` index column: `kind/id`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.id)
    }
}

/// What part a data item played.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityRole {
    /// The resource the interaction was about (read, written, deleted, denied).
    Target,
    /// Returned as a search or history match.
    Match,
    /// Returned by `_include` / `_revinclude`.
    Include,
}

impl EntityRole {
    pub fn code(self) -> &'static str {
        match self {
            EntityRole::Target => "target",
            EntityRole::Match => "match",
            EntityRole::Include => "include",
        }
    }

    pub fn from_code(code: &str) -> Option<EntityRole> {
        [EntityRole::Target, EntityRole::Match, EntityRole::Include].into_iter().find(|r| r.code() == code)
    }
}

/// One data item the interaction touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// `Type/id/_history/version`, or `Type/id` when no version applies.
    pub reference: String,
    pub role: EntityRole,
    /// Data category (`labs`, `vitals`, …; empty when unknown).
    pub category: String,
    /// Patients whose compartment holds the item.
    pub patients: Vec<String>,
}

impl Entity {
    /// The resource type of the reference.
    pub fn resource_type(&self) -> &str {
        self.reference.split('/').next().unwrap_or_default()
    }
}

/// One audit record. Its canonical encoding ([`crate::canonical`]) is what the chain hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When it happened, epoch milliseconds.
    pub time_ms: i64,
    /// The request's id (also sent to the client as `X-Request-Id`).
    pub request_id: String,
    pub interaction: Interaction,
    pub outcome: Outcome,
    /// HTTP status answered (for a transaction entry: the entry's status).
    pub status: u16,
    pub actor: Actor,
    /// The patient the actor acted for (a caregiver for a child), if any.
    pub on_behalf_of: Option<String>,
    /// The client application (SMART client id).
    pub client: Option<String>,
    /// The device or session the request came from.
    pub device: Option<String>,
    /// Network address of the peer.
    pub source: Option<String>,
    /// Purpose of use (HL7 v3 PurposeOfUse code).
    pub purpose: Option<String>,
    /// The resource type the interaction addressed.
    pub resource_type: Option<String>,
    /// The search query as received, for searches.
    pub query: Option<String>,
    pub entities: Vec<Entity>,
    /// Every patient whose data the interaction concerned, sorted, without duplicates.
    pub patients: Vec<String>,
    /// The rules that decided, in decision order, without duplicates.
    pub rules: Vec<String>,
    /// Consents the decisions rested on.
    pub consents: Vec<String>,
    /// The deciding reason in plain language (a deny's reason, else the permit's).
    pub reason: Option<String>,
}

impl AuditRecord {
    /// A record with the required parts; everything else empty.
    pub fn new(time_ms: i64, request_id: &str, interaction: Interaction, actor: Actor) -> AuditRecord {
        AuditRecord {
            time_ms,
            request_id: request_id.to_string(),
            interaction,
            outcome: Outcome::Success,
            status: 200,
            actor,
            on_behalf_of: None,
            client: None,
            device: None,
            source: None,
            purpose: None,
            resource_type: None,
            query: None,
            entities: Vec::new(),
            patients: Vec::new(),
            rules: Vec::new(),
            consents: Vec::new(),
            reason: None,
        }
    }

    /// `(patient, category)` pairs the record concerns, sorted and distinct: one per patient
    /// of each entity (with the entity's category), and `(patient, "")` for a patient no
    /// entity names. These are the rows of the patient index.
    pub fn subjects(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for e in &self.entities {
            for p in &e.patients {
                out.push((p.clone(), e.category.clone()));
            }
        }
        for p in &self.patients {
            if !out.iter().any(|(q, _)| q == p) {
                out.push((p.clone(), String::new()));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Sort and de-duplicate the patient list, adding every entity's patients; drop repeated
    /// rules.
    pub fn normalise(&mut self) {
        for e in &self.entities {
            self.patients.extend(e.patients.iter().cloned());
        }
        self.patients.sort();
        self.patients.dedup();
        // In first-seen order. A record's distinct rules are few (one per decision, mostly
        // repeats), so scanning the ones kept costs less than hashing a copy of each.
        let mut kept = 0;
        for i in 0..self.rules.len() {
            if !self.rules[..kept].contains(&self.rules[i]) {
                self.rules.swap(kept, i);
                kept += 1;
            }
        }
        self.rules.truncate(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_keeps_each_rule_once_in_first_seen_order() {
        let mut r = AuditRecord::new(0, "r", Interaction::Read, Actor::new("operator", "operator"));
        r.rules = ["b", "a", "b", "c", "a", "c", "d"].map(String::from).to_vec();
        r.normalise();
        assert_eq!(r.rules, ["b", "a", "c", "d"]);
        r.normalise();
        assert_eq!(r.rules, ["b", "a", "c", "d"]);
    }

    #[test]
    fn codes_round_trip() {
        for i in Interaction::ALL {
            assert_eq!(Interaction::from_code(i.code()), Some(i));
        }
        assert_eq!(Interaction::from_code("nope"), None);
        for o in [Outcome::Success, Outcome::Denied, Outcome::Failed] {
            assert_eq!(Outcome::from_code(o.code()), Some(o));
        }
    }

    #[test]
    fn subjects_cover_entities_and_bare_patients() {
        let mut r = AuditRecord::new(0, "r", Interaction::SearchType, Actor::new("operator", "operator"));
        r.entities.push(Entity {
            reference: "Observation/1/_history/1".into(),
            role: EntityRole::Match,
            category: "labs".into(),
            patients: vec!["b".into(), "a".into()],
        });
        r.patients = vec!["c".into()];
        r.normalise();
        assert_eq!(r.patients, vec!["a", "b", "c"]);
        assert_eq!(
            r.subjects(),
            vec![
                ("a".to_string(), "labs".to_string()),
                ("b".to_string(), "labs".to_string()),
                ("c".to_string(), String::new())
            ]
        );
    }
}
