//! The pure decision function. Deny by default: a request is permitted only when a rule
//! below names why.

use crate::context::{Action, Principal, RequestContext, ResourceFacts};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Permit,
    Deny,
}

/// The engine's answer, with the rule that decided and a sentence a patient can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub effect: Effect,
    /// Stable identifier of the rule that decided (for audit and explanation).
    pub rule: &'static str,
    pub reason: String,
    /// For a permitted search: the patient compartments the results are confined to
    /// (`None` = not confined, e.g. the operator).
    pub compartments: Option<Vec<String>>,
    /// For a permitted search under app scopes: the types and categories results must
    /// have (`None` = no app scopes apply).
    pub limits: Option<Vec<crate::scopes::TypeLimit>>,
}

impl Verdict {
    fn permit(rule: &'static str, reason: impl Into<String>, compartments: Option<Vec<String>>) -> Self {
        Verdict { effect: Effect::Permit, rule, reason: reason.into(), compartments, limits: None }
    }
    fn deny(rule: &'static str, reason: impl Into<String>) -> Self {
        Verdict { effect: Effect::Deny, rule, reason: reason.into(), compartments: None, limits: None }
    }
    pub fn is_permit(&self) -> bool {
        self.effect == Effect::Permit
    }
}

/// Decide one action on one resource (or a type, for searches).
pub fn evaluate(ctx: &RequestContext, action: Action, facts: &ResourceFacts) -> Verdict {
    // The audit trail is written by the server only, never through the API — not even by
    // the operator.
    if action.is_write() && facts.resource_type == "AuditEvent" {
        return Verdict::deny("audit-append-only", "The audit trail cannot be changed through the API.");
    }
    match &ctx.principal {
        Principal::Anonymous => Verdict::deny("no-principal", "Nobody is signed in, so nothing can be shown."),
        Principal::Operator => {
            Verdict::permit("operator", "The server operator holds administrative access to all records.", None)
        }
        Principal::Patient { patient } => evaluate_patient(patient, action, facts),
        // TODO(policy helper): caregivers, clinicians, admins and backend services.
        _ => Verdict::deny("not-yet-supported", "This kind of account cannot see clinical records yet."),
    }
}

/// A patient sees and changes nothing outside their own compartment; they never delete.
fn evaluate_patient(patient: &str, action: Action, facts: &ResourceFacts) -> Verdict {
    if action == Action::Delete {
        return Verdict::deny("patient-no-delete", "Patients cannot delete records.");
    }
    let own = vec![patient.to_string()];
    match action {
        Action::Search | Action::History if facts.id.is_none() => {
            Verdict::permit("patient-own-compartment", "You can search your own records.", Some(own))
        }
        _ if facts.compartments.iter().any(|c| c == patient) => {
            Verdict::permit("patient-own-compartment", "This record is part of your own chart.", Some(own))
        }
        _ => Verdict::deny("outside-compartment", "This record is not part of your chart."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn facts(comp: &[&str]) -> ResourceFacts {
        ResourceFacts {
            resource_type: "Observation".into(),
            id: Some("o1".into()),
            version: Some(1),
            compartments: comp.iter().map(|s| s.to_string()).collect(),
            category: "labs".into(),
            labels: vec![],
            category_codes: vec![],
        }
    }

    #[test]
    fn anonymous_is_denied() {
        let ctx = RequestContext::new(Principal::Anonymous, "r");
        assert_eq!(evaluate(&ctx, Action::Read, &facts(&["p1"])).effect, Effect::Deny);
    }

    #[test]
    fn operator_is_permitted_unconfined() {
        let ctx = RequestContext::new(Principal::Operator, "r");
        let v = evaluate(&ctx, Action::Delete, &facts(&["p1"]));
        assert!(v.is_permit());
        assert_eq!(v.compartments, None);
    }

    #[test]
    fn nobody_writes_audit_events() {
        let mut f = facts(&["p1"]);
        f.resource_type = "AuditEvent".into();
        for p in [Principal::Operator, Principal::Patient { patient: "p1".into() }] {
            let ctx = RequestContext::new(p, "r");
            for a in [Action::Create, Action::Update, Action::Patch, Action::Delete] {
                assert_eq!(evaluate(&ctx, a, &f).rule, "audit-append-only");
            }
            assert!(evaluate(&ctx, Action::Read, &f).is_permit());
        }
    }

    #[test]
    fn patient_reads_own_not_others_and_never_deletes() {
        let ctx = RequestContext::new(Principal::Patient { patient: "p1".into() }, "r");
        assert!(evaluate(&ctx, Action::Read, &facts(&["p1"])).is_permit());
        assert!(!evaluate(&ctx, Action::Read, &facts(&["p2"])).is_permit());
        assert!(!evaluate(&ctx, Action::Read, &facts(&[])).is_permit());
        assert!(!evaluate(&ctx, Action::Delete, &facts(&["p1"])).is_permit());
        let s = evaluate(&ctx, Action::Search, &ResourceFacts::type_level("Observation"));
        assert_eq!(s.compartments, Some(vec!["p1".to_string()]));
    }

    proptest! {
        /// Nothing outside the acted-for patient's compartment is ever permitted to a patient.
        #[test]
        fn patient_never_reaches_other_compartments(
            me in "[a-z]{1,4}", others in proptest::collection::vec("[a-z]{1,4}", 0..4),
            act in 0usize..9,
        ) {
            let actions = [Action::Read, Action::VRead, Action::Search, Action::History, Action::Create,
                Action::Update, Action::Patch, Action::Delete, Action::Everything];
            let ctx = RequestContext::new(Principal::Patient { patient: me.clone() }, "r");
            let f = ResourceFacts { resource_type: "Observation".into(), id: Some("x".into()), version: None,
                compartments: others.clone(), category: "labs".into(), labels: vec![], category_codes: vec![] };
            let v = evaluate(&ctx, actions[act], &f);
            if v.is_permit() {
                prop_assert!(others.contains(&me));
            }
        }
    }
}
