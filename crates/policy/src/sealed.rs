//! Resources as the store hands them out: facts visible, body sealed until a decision opens it.

use crate::context::ResourceFacts;
use crate::gate::Decision;

/// A stored resource whose payload can only be taken with a permitting [`Decision`] made
/// for exactly its facts.
#[derive(Debug)]
pub struct Sealed<T> {
    facts: ResourceFacts,
    payload: T,
}

/// The decision did not permit this resource, or was made for another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied;

impl<T> Sealed<T> {
    /// Only the store builds these; sealing hides nothing from it.
    pub fn new(facts: ResourceFacts, payload: T) -> Self {
        Sealed { facts, payload }
    }
    pub fn facts(&self) -> &ResourceFacts {
        &self.facts
    }
    /// Take the payload if `decision` permits this very resource version.
    pub fn open(self, decision: &Decision) -> Result<T, Denied> {
        if decision.is_permit() && decision.covers(&self.facts) { Ok(self.payload) } else { Err(Denied) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Gate, Principal, RequestContext, TracingSink};
    use std::sync::Arc;

    fn facts(id: &str, patient: &str) -> ResourceFacts {
        ResourceFacts {
            resource_type: "Observation".into(),
            id: Some(id.into()),
            version: Some(1),
            compartments: vec![patient.into()],
            category: "labs".into(),
            labels: vec![],
            category_codes: vec![],
            date_ms: None,
            author: None,
        }
    }

    #[test]
    fn a_decision_opens_only_its_own_resource() {
        let gate = Gate::new(Arc::new(TracingSink));
        let ctx = RequestContext::new(Principal::Patient { patient: "p1".into() }, "r");
        let mine = facts("a", "p1");
        let theirs = Sealed::new(facts("b", "p2"), "secret");
        let d = gate.decide(&ctx, Action::Read, &mine).unwrap();
        assert!(d.is_permit());
        assert_eq!(theirs.open(&d), Err(Denied));
        let own = Sealed::new(mine.clone(), "mine");
        assert_eq!(own.open(&d), Ok("mine"));
    }

    #[test]
    fn a_deny_opens_nothing() {
        let gate = Gate::new(Arc::new(TracingSink));
        let ctx = RequestContext::new(Principal::Anonymous, "r");
        let f = facts("a", "p1");
        let d = gate.decide(&ctx, Action::Read, &f).unwrap();
        assert_eq!(Sealed::new(f, 1).open(&d), Err(Denied));
    }
}
