//! Audit records for identity events (sign-in, approvals, tokens, revocations, settings):
//! one per event, in the request's audit scope like every gate decision.

use portico_audit::{Actor, DecisionNote, Interaction, Scope};
use portico_store::identity::UserRow;

/// The audit actor for a user.
pub fn user_actor(user: &UserRow) -> Actor {
    let mut a = Actor::new("user", &user.id);
    a.role = Some(user.role.clone());
    a
}

/// Record one identity event. `denied` carries the rule id and the plain-language reason
/// when the event was refused; `patients` are those whose records the event concerns.
pub fn record(
    scope: &Scope,
    interaction: Interaction,
    actor: Option<Actor>,
    client: Option<&str>,
    patients: &[String],
    denied: Option<(&str, &str)>,
) {
    if let Some(a) = actor {
        scope.set_actor(a, None, client.map(str::to_string), None);
    }
    scope.begin(interaction, None);
    let (rule, permit, reason) = match denied {
        Some((rule, reason)) => (rule.to_string(), false, reason.to_string()),
        None => (interaction.code().to_string(), true, String::new()),
    };
    scope.note(DecisionNote {
        interaction,
        resource_type: "*".into(),
        reference: None,
        patients: patients.to_vec(),
        category: String::new(),
        rule,
        permit,
        reason,
        confined_to: Vec::new(),
    });
}
