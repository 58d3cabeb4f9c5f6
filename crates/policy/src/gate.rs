//! The gate: the engine's verdicts, recorded, turned into proofs the store accepts.

use crate::context::{Action, RequestContext, ResourceFacts};
use crate::engine::{self, Verdict};
use crate::scopes::TypeLimit;
use portico_audit::{DecisionNote, Interaction};
use std::sync::Arc;

/// Where every decision goes before the caller sees it. A sink that cannot record must say
/// so: the gate then fails the request closed.
pub trait AuditSink: Send + Sync {
    fn record(
        &self,
        ctx: &RequestContext,
        action: Action,
        facts: &ResourceFacts,
        verdict: &Verdict,
    ) -> Result<(), AuditFailure>;
}

/// The audit sink could not record a decision.
#[derive(Debug, Clone)]
pub struct AuditFailure(pub String);

/// Logs each decision to the operational log, without PHI: type, action, rule, effect and
/// request id only (no ids, no compartments, no bodies).
pub struct TracingSink;

impl AuditSink for TracingSink {
    fn record(
        &self,
        ctx: &RequestContext,
        action: Action,
        facts: &ResourceFacts,
        verdict: &Verdict,
    ) -> Result<(), AuditFailure> {
        tracing::debug!(
            target: "portico::gate",
            request_id = %ctx.request_id,
            resource_type = %facts.resource_type,
            action = ?action,
            rule = verdict.rule,
            effect = ?verdict.effect,
            "decision"
        );
        Ok(())
    }
}

/// The audit trail's view of one decision.
fn note(action: Action, facts: &ResourceFacts, verdict: &Verdict) -> DecisionNote {
    let interaction = match action {
        Action::Read => Interaction::Read,
        Action::VRead => Interaction::VRead,
        Action::Search if facts.resource_type == "*" => Interaction::SearchSystem,
        Action::Search => Interaction::SearchType,
        Action::History if facts.id.is_some() => Interaction::HistoryInstance,
        Action::History if facts.resource_type == "*" => Interaction::HistorySystem,
        Action::History => Interaction::HistoryType,
        Action::Everything => Interaction::Everything,
        Action::Create => Interaction::Create,
        Action::Update => Interaction::Update,
        Action::Patch => Interaction::Patch,
        Action::Delete => Interaction::Delete,
    };
    let reference = facts.id.as_ref().map(|id| match facts.version {
        Some(v) => format!("{}/{id}/_history/{v}", facts.resource_type),
        None => format!("{}/{id}", facts.resource_type),
    });
    DecisionNote {
        interaction,
        resource_type: facts.resource_type.clone(),
        reference,
        patients: facts.compartments.clone(),
        category: facts.category.clone(),
        rule: verdict.rule.to_string(),
        permit: verdict.is_permit(),
        reason: verdict.reason.clone(),
        confined_to: if verdict.is_permit() { verdict.compartments.clone().unwrap_or_default() } else { Vec::new() },
    }
}

/// A recorded decision about one resource version. Only [`Gate`] makes these.
#[derive(Debug, Clone)]
pub struct Decision {
    verdict: Verdict,
    action: Action,
    facts: ResourceFacts,
}

impl Decision {
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }
    pub fn is_permit(&self) -> bool {
        self.verdict.is_permit()
    }
    pub fn action(&self) -> Action {
        self.action
    }
    /// Whether this decision was made for exactly these facts.
    pub(crate) fn covers(&self, facts: &ResourceFacts) -> bool {
        &self.facts == facts
    }
}

/// Proof that a search (or history, or `$everything`) of one resource type was permitted,
/// with the filter the store must apply in SQL.
#[derive(Debug, Clone)]
pub struct SearchPermit {
    resource_type: Option<String>,
    compartments: Option<Vec<String>>,
    /// App scopes: the types (and categories) results may have. `None`: not limited.
    limits: Option<Vec<TypeLimit>>,
}

impl SearchPermit {
    /// The resource type the permit covers (`None`: system-level, every type).
    pub fn resource_type(&self) -> Option<&str> {
        self.resource_type.as_deref()
    }
    /// Patient compartments the results must lie in (`None`: not confined).
    pub fn compartments(&self) -> Option<&[String]> {
        self.compartments.as_deref()
    }
    /// The SMART scope limits (types, categories) the results must meet, applied in SQL to
    /// the page, the total, includes and paging alike (`None`: no app scopes apply).
    pub fn limits(&self) -> Option<&[TypeLimit]> {
        self.limits.as_deref()
    }
    /// Whether a resource with these facts may appear under this permit; the store applies
    /// the same condition in SQL and uses this for rows it already holds (e.g. includes).
    pub fn admits(&self, facts: &ResourceFacts) -> bool {
        let type_ok = self.resource_type.as_deref().is_none_or(|t| t == facts.resource_type);
        let comp_ok = match &self.compartments {
            None => true,
            Some(allowed) => facts.compartments.iter().any(|c| allowed.contains(c)),
        };
        type_ok && comp_ok
    }
}

/// Proof that a write of one resource was permitted on its pre-image (if any) and post-image.
#[derive(Debug, Clone)]
pub struct WritePermit {
    action: Action,
    resource_type: String,
    id: Option<String>,
    pre_version: Option<i64>,
}

impl WritePermit {
    pub fn action(&self) -> Action {
        self.action
    }
    /// Whether the permit covers writing this resource; `current_version` is the version the
    /// store holds at write time, which must be the one the pre-image decision saw.
    pub fn covers(&self, resource_type: &str, id: &str, current_version: Option<i64>) -> bool {
        self.resource_type == resource_type
            && self.id.as_deref().is_none_or(|i| i == id)
            && self.pre_version == current_version
    }
}

/// Decides through the engine and records every verdict.
#[derive(Clone)]
pub struct Gate {
    sink: Arc<dyn AuditSink>,
}

/// The gate refused, or could not record its decision (then `verdict` is None).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub verdict: Option<Verdict>,
    pub audit_failure: Option<String>,
}

impl Gate {
    pub fn new(sink: Arc<dyn AuditSink>) -> Self {
        Gate { sink }
    }

    fn judge(&self, ctx: &RequestContext, action: Action, facts: &ResourceFacts) -> Result<Verdict, Refusal> {
        let verdict = engine::evaluate(ctx, action, facts);
        // Into the request's audit scope first: no decision reaches the caller unrecorded.
        ctx.scope.set_actor(ctx.principal.actor(), None, None, ctx.purpose.clone());
        ctx.scope.note(note(action, facts, &verdict));
        self.sink
            .record(ctx, action, facts, &verdict)
            .map_err(|f| Refusal { verdict: None, audit_failure: Some(f.0) })?;
        Ok(verdict)
    }

    /// Decide on one stored resource version; open its [`crate::Sealed`] with the result.
    pub fn decide(&self, ctx: &RequestContext, action: Action, facts: &ResourceFacts) -> Result<Decision, Refusal> {
        let verdict = self.judge(ctx, action, facts)?;
        Ok(Decision { verdict, action, facts: facts.clone() })
    }

    /// Permit a search, history or `$everything` over `resource_type` (None = all types).
    pub fn permit_search(
        &self,
        ctx: &RequestContext,
        action: Action,
        resource_type: Option<&str>,
    ) -> Result<SearchPermit, Refusal> {
        let facts = ResourceFacts::type_level(resource_type.unwrap_or("*"));
        let verdict = self.judge(ctx, action, &facts)?;
        if !verdict.is_permit() {
            return Err(Refusal { verdict: Some(verdict), audit_failure: None });
        }
        Ok(SearchPermit {
            resource_type: resource_type.map(str::to_string),
            compartments: verdict.compartments,
            limits: verdict.limits,
        })
    }

    /// Permit a write: the pre-image (what is stored now, if anything) and the post-image
    /// (what will be stored) must both be permitted.
    pub fn permit_write(
        &self,
        ctx: &RequestContext,
        action: Action,
        pre: Option<&ResourceFacts>,
        post: &ResourceFacts,
    ) -> Result<WritePermit, Refusal> {
        if let Some(pre) = pre {
            let v = self.judge(ctx, action, pre)?;
            if !v.is_permit() {
                return Err(Refusal { verdict: Some(v), audit_failure: None });
            }
        }
        let v = self.judge(ctx, action, post)?;
        if !v.is_permit() {
            return Err(Refusal { verdict: Some(v), audit_failure: None });
        }
        Ok(WritePermit {
            action,
            resource_type: post.resource_type.clone(),
            id: post.id.clone(),
            pre_version: pre.and_then(|p| p.version),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Principal, TracingSink};
    use portico_audit::Outcome;

    #[test]
    fn every_decision_lands_in_the_request_scope() {
        let gate = Gate::new(Arc::new(TracingSink));
        let ctx = RequestContext::new(Principal::Patient { patient: "p1".into() }, "req-9");
        let facts = ResourceFacts {
            resource_type: "Observation".into(),
            id: Some("o1".into()),
            version: Some(3),
            compartments: vec!["p2".into()],
            category: "labs".into(),
            labels: vec![],
            category_codes: vec![],
        };
        let d = gate.decide(&ctx, Action::Read, &facts).unwrap();
        assert!(!d.is_permit());
        let recs = ctx.scope.finish(404, 1);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.request_id, "req-9");
        assert_eq!(r.actor.key(), "patient/p1");
        assert_eq!(r.outcome, Outcome::Denied);
        assert_eq!(r.rules, vec!["outside-compartment"]);
        assert_eq!(r.entities[0].reference, "Observation/o1/_history/3");
        assert_eq!(r.patients, vec!["p2"]);
        gate.permit_search(&ctx, Action::Search, Some("Observation")).unwrap();
        let s = &ctx.scope.finish(200, 2)[0];
        assert_eq!(s.interaction, Interaction::SearchType);
        assert_eq!(s.patients, vec!["p1"], "a confined search concerns the patient it is confined to");
    }
}
