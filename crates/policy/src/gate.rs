//! The gate: the engine's verdicts, recorded, turned into proofs the store accepts.
//!
//! # What the store must apply
//!
//! A [`SearchPermit`] (search, history, `$everything`, instance history) carries three
//! conditions, all applied **in SQL** to the page, the `total`, `_include`/`_revinclude` and
//! paging alike, and all checked by [`SearchPermit::admits`] for rows already in hand:
//! [`SearchPermit::compartments`], [`SearchPermit::limits`] (SMART scopes) and
//! [`SearchPermit::filter`] (consents and operator rules; the clause language is documented
//! in [`crate::filter`] — it needs the `date_ms` and `author` columns beside `category`,
//! `labels` and `category_codes`). [`SearchPermit::obligations`] are what the server must
//! do to each returned body ([`crate::obligation::apply`]).
//!
//! The gate decides under its [`OperatorRules`] ([`Gate::with_rules`]; [`Gate::new`]: the
//! builtin rules). The consents a decision rested on are added to the request's current
//! audit interaction (`AuditRecord::consents`).

use crate::context::{Action, RequestContext, ResourceFacts};
use crate::engine::{self, Verdict};
use crate::filter::SearchFilter;
use crate::obligation::Obligation;
use crate::rules::OperatorRules;
use crate::scopes::TypeLimit;
use crate::stepup::{self, Sensitive};
use crate::{Principal, engine::Effect};
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

    /// Record a step-up decision (see [`Gate::require_step_up`]). The default records
    /// nothing beyond the request's audit scope.
    fn record_step_up(&self, _ctx: &RequestContext, _what: Sensitive, _verdict: &Verdict) -> Result<(), AuditFailure> {
        Ok(())
    }
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

    fn record_step_up(&self, ctx: &RequestContext, what: Sensitive, verdict: &Verdict) -> Result<(), AuditFailure> {
        tracing::debug!(
            target: "portico::gate",
            request_id = %ctx.request_id,
            step_up = what.code(),
            rule = verdict.rule,
            effect = ?verdict.effect,
            "step-up decision"
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
    /// Consents and operator rules. `None`: nothing beyond compartments and limits.
    filter: Option<SearchFilter>,
    obligations: Vec<Obligation>,
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
    /// The consent and operator-rule filter results must meet (`None`: none), applied in
    /// SQL like the compartments and limits; see [`crate::filter`] for its semantics.
    pub fn filter(&self) -> Option<&SearchFilter> {
        self.filter.as_ref()
    }
    /// What the server must do to every body returned under this permit (e.g. redactions
    /// for caregivers); see [`crate::obligation::apply`].
    pub fn obligations(&self) -> &[Obligation] {
        &self.obligations
    }
    /// Whether a resource with these facts may appear under this permit; the store applies
    /// the same condition in SQL and uses this for rows it already holds (e.g. includes).
    pub fn admits(&self, facts: &ResourceFacts) -> bool {
        let type_ok = self.resource_type.as_deref().is_none_or(|t| t == facts.resource_type);
        let comp_ok = match &self.compartments {
            None => true,
            Some(allowed) => facts.compartments.iter().any(|c| allowed.contains(c)),
        };
        // The limits are alternatives: one must admit the resource's type and category.
        let limits_ok = self
            .limits
            .as_ref()
            .is_none_or(|limits| limits.iter().any(|l| l.admits(&facts.resource_type, &facts.category_codes)));
        let filter_ok = self.filter.as_ref().is_none_or(|f| f.admits(facts));
        type_ok && comp_ok && limits_ok && filter_ok
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
    rules: Arc<OperatorRules>,
}

/// The gate refused, or could not record its decision (then `verdict` is None).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Boxed: a verdict with its filter is large, and refusals travel in `Result`s.
    pub verdict: Option<Box<Verdict>>,
    pub audit_failure: Option<String>,
}

impl Gate {
    /// A gate deciding under the builtin operator rules.
    pub fn new(sink: Arc<dyn AuditSink>) -> Self {
        Gate::with_rules(sink, Arc::new(OperatorRules::builtin().clone()))
    }

    /// A gate deciding under an operator's rules (loaded and validated at start-up with
    /// [`OperatorRules::from_json`]).
    pub fn with_rules(sink: Arc<dyn AuditSink>, rules: Arc<OperatorRules>) -> Self {
        Gate { sink, rules }
    }

    /// The operator rules this gate decides under (for explanations).
    pub fn rules(&self) -> &OperatorRules {
        &self.rules
    }

    fn judge(&self, ctx: &RequestContext, action: Action, facts: &ResourceFacts) -> Result<Verdict, Refusal> {
        let verdict = engine::evaluate_with(ctx, &self.rules, action, facts);
        // Into the request's audit scope first: no decision reaches the caller unrecorded.
        set_actor(ctx);
        if !verdict.consents.is_empty() {
            // The consents go on the interaction the decision belongs to (when one is open).
            ctx.scope.edit(|r| {
                for c in &verdict.consents {
                    if !r.consents.contains(c) {
                        r.consents.push(c.clone());
                    }
                }
            });
        }
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
            return Err(Refusal { verdict: Some(Box::new(verdict)), audit_failure: None });
        }
        Ok(SearchPermit {
            resource_type: resource_type.map(str::to_string),
            compartments: verdict.compartments,
            limits: verdict.limits,
            filter: verdict.filter,
            obligations: verdict.obligations,
        })
    }

    /// Permit listing the versions of one resource (instance history): decided on the
    /// resource's current facts like a read (SMART: instance history needs `r`), and
    /// confined like a search — to the compartments of that decision, under app scopes to
    /// the categories the `r` scopes allow, and to the consent and operator-rule filter a
    /// history of the type would have — so an old version of another category or label
    /// stays hidden.
    pub fn permit_instance_history(
        &self,
        ctx: &RequestContext,
        facts: &ResourceFacts,
    ) -> Result<SearchPermit, Refusal> {
        let verdict = self.judge(ctx, Action::History, facts)?;
        if !verdict.is_permit() {
            return Err(Refusal { verdict: Some(Box::new(verdict)), audit_failure: None });
        }
        let limits = ctx.scopes.as_ref().map(|s| {
            s.search_limits(&crate::scopes::ScopeContext::ALL, Action::Read, Some(&facts.resource_type))
                .unwrap_or_default()
        });
        // The filter a type-level history would carry (principal's rule only: the scopes
        // are applied through `limits` above). Fails closed: no filter, no versions.
        let of_type = engine::principal_verdict(
            ctx,
            &self.rules,
            Action::History,
            &ResourceFacts::type_level(&facts.resource_type),
        );
        let filter = if of_type.is_permit() {
            of_type.filter
        } else {
            Some(SearchFilter { include: Some(Vec::new()), exclude: Vec::new() })
        };
        Ok(SearchPermit {
            resource_type: Some(facts.resource_type.clone()),
            compartments: verdict.compartments,
            limits,
            filter,
            obligations: verdict.obligations,
        })
    }

    /// Require a fresh step-up verification for a sensitive action: fresh when the request's
    /// step-up time (`ctx.stepup_at_ms`) lies at most `fresh_ms` before `ctx.now_ms` (see
    /// [`stepup::is_fresh`]). The decision is recorded in the request's audit scope (a
    /// type-level note of interaction `StepUp`, rule `step-up-fresh` or `step-up-required`)
    /// and handed to the sink before the caller sees it; a refusal carries the
    /// [`stepup::STEP_UP_REQUIRED`] sentence for `what` as its reason.
    pub fn require_step_up(&self, ctx: &RequestContext, what: Sensitive, fresh_ms: i64) -> Result<(), Refusal> {
        let verdict = if stepup::is_fresh(ctx.stepup_at_ms, ctx.now_ms, fresh_ms) {
            Verdict::permit("step-up-fresh", "A verification code was entered recently enough for this.", None)
        } else {
            Verdict::deny("step-up-required", what.required_reason())
        };
        set_actor(ctx);
        ctx.scope.note(DecisionNote {
            interaction: Interaction::StepUp,
            resource_type: "*".to_string(),
            reference: None,
            patients: match &ctx.acting_for {
                Some(p) if what.concerns_patient() => vec![p.clone()],
                _ => Vec::new(),
            },
            category: String::new(),
            rule: verdict.rule.to_string(),
            permit: verdict.is_permit(),
            reason: verdict.reason.clone(),
            confined_to: Vec::new(),
        });
        self.sink
            .record_step_up(ctx, what, &verdict)
            .map_err(|f| Refusal { verdict: None, audit_failure: Some(f.0) })?;
        match verdict.effect {
            Effect::Permit => Ok(()),
            Effect::Deny => Err(Refusal { verdict: Some(Box::new(verdict)), audit_failure: None }),
        }
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
                return Err(Refusal { verdict: Some(Box::new(v)), audit_failure: None });
            }
        }
        let v = self.judge(ctx, action, post)?;
        if !v.is_permit() {
            return Err(Refusal { verdict: Some(Box::new(v)), audit_failure: None });
        }
        Ok(WritePermit {
            action,
            resource_type: post.resource_type.clone(),
            id: post.id.clone(),
            pre_version: pre.and_then(|p| p.version),
        })
    }
}

/// Who acts, for whom (a caregiver's patient; a patient acting for themself is not "on
/// behalf of" anyone), through which app, for what purpose.
fn set_actor(ctx: &RequestContext) {
    let on_behalf_of = match &ctx.principal {
        Principal::Patient { patient } if ctx.acting_for.as_deref() == Some(patient) => None,
        _ => ctx.acting_for.clone(),
    };
    ctx.scope.set_actor(ctx.principal.actor(), on_behalf_of, ctx.client.clone(), ctx.purpose.clone());
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
            date_ms: None,
            author: None,
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

    fn obs(id: &str, patient: &str, codes: &[&str]) -> ResourceFacts {
        ResourceFacts {
            resource_type: "Observation".into(),
            id: Some(id.into()),
            version: Some(1),
            compartments: vec![patient.into()],
            category: "labs".into(),
            labels: vec![],
            category_codes: codes.iter().map(|s| s.to_string()).collect(),
            date_ms: None,
            author: None,
        }
    }

    #[test]
    fn search_permits_admit_only_what_the_scopes_allow() {
        let gate = Gate::new(Arc::new(TracingSink));
        let mut ctx = RequestContext::new(Principal::Patient { patient: "p1".into() }, "r");
        ctx.scopes =
            Some(crate::ScopeSet::parse("patient/Observation.rs?category=laboratory patient/Condition.rs").unwrap());
        let lab = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
        let vitals = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs";
        let p = gate.permit_search(&ctx, Action::Search, Some("Observation")).unwrap();
        assert_eq!(p.limits().map(<[_]>::len), Some(1));
        assert!(p.admits(&obs("a", "p1", &[lab])));
        assert!(!p.admits(&obs("b", "p1", &[vitals])), "category outside the scope");
        assert!(!p.admits(&obs("c", "p1", &[])), "no category at all");
        assert!(!p.admits(&obs("d", "p2", &[lab])), "other compartment");
        let all = gate.permit_search(&ctx, Action::Everything, None).unwrap();
        let mut cond = obs("e", "p1", &[]);
        cond.resource_type = "Condition".into();
        assert!(all.admits(&cond));
        assert!(all.admits(&obs("a", "p1", &[lab])));
        assert!(!all.admits(&obs("b", "p1", &[vitals])));
        let mut imm = cond.clone();
        imm.resource_type = "Immunization".into();
        assert!(!all.admits(&imm), "type outside the scopes");
        let refused = gate.permit_search(&ctx, Action::Search, Some("Immunization")).unwrap_err();
        assert_eq!(refused.verdict.unwrap().rule, "outside-scopes");
    }

    #[test]
    fn step_up_is_judged_by_freshness_and_recorded() {
        let gate = Gate::new(Arc::new(TracingSink));
        let mut ctx =
            RequestContext::new(Principal::Caregiver { user: "u1".into(), patients: vec!["c1".into()] }, "req-5");
        ctx.acting_for = Some("c1".into());
        ctx.client = Some("diary-app".into());
        ctx.now_ms = 10_000_000;
        ctx.stepup_at_ms = Some(ctx.now_ms - 60_000);
        gate.require_step_up(&ctx, Sensitive::BulkExport, crate::stepup::DEFAULT_FRESH_MS).unwrap();
        let r = &ctx.scope.finish(200, 1)[0];
        assert_eq!(r.interaction, Interaction::StepUp);
        assert_eq!(r.outcome, Outcome::Success);
        assert_eq!(r.rules, vec!["step-up-fresh"]);
        assert_eq!(r.patients, vec!["c1"]);
        assert_eq!(r.on_behalf_of.as_deref(), Some("c1"));
        assert_eq!(r.client.as_deref(), Some("diary-app"));

        let refused = gate.require_step_up(&ctx, Sensitive::AddCaregiver, 59_999).unwrap_err();
        let v = refused.verdict.unwrap();
        assert_eq!(v.rule, "step-up-required");
        assert_eq!(v.reason, "Adding a caregiver needs a fresh verification code.");
        let r = &ctx.scope.finish(403, 2)[0];
        assert_eq!((r.outcome, r.reason.as_deref()), (Outcome::Denied, Some(v.reason.as_str())));

        ctx.stepup_at_ms = None;
        assert!(gate.require_step_up(&ctx, Sensitive::SecuritySettings, i64::MAX).is_err());
        let r = &ctx.scope.finish(403, 3)[0];
        assert!(r.patients.is_empty(), "security settings concern the user, not a patient's data");
        assert_eq!(r.reason.as_deref(), Some(Sensitive::SecuritySettings.required_reason()));
    }

    #[test]
    fn a_step_up_joins_the_open_interaction() {
        let gate = Gate::new(Arc::new(TracingSink));
        let mut ctx = RequestContext::new(Principal::Patient { patient: "p1".into() }, "r");
        ctx.now_ms = 1_000;
        ctx.stepup_at_ms = Some(900);
        ctx.scope.begin(Interaction::Everything, Some("Patient"));
        gate.require_step_up(&ctx, Sensitive::BulkExport, 1_000).unwrap();
        gate.permit_search(&ctx, Action::Everything, None).unwrap();
        let recs = ctx.scope.finish(200, 1);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].rules, vec!["step-up-fresh", "patient-own-compartment"]);
        assert_eq!(recs[0].on_behalf_of, None, "a patient acting for themself is not on anyone's behalf");
    }

    struct Broken;
    impl AuditSink for Broken {
        fn record(&self, _: &RequestContext, _: Action, _: &ResourceFacts, _: &Verdict) -> Result<(), AuditFailure> {
            Err(AuditFailure("disk full".into()))
        }
        fn record_step_up(&self, _: &RequestContext, _: Sensitive, _: &Verdict) -> Result<(), AuditFailure> {
            Err(AuditFailure("disk full".into()))
        }
    }

    #[test]
    fn a_sink_that_cannot_record_fails_closed() {
        let gate = Gate::new(Arc::new(Broken));
        let mut ctx = RequestContext::new(Principal::Patient { patient: "p1".into() }, "r");
        ctx.stepup_at_ms = Some(ctx.now_ms);
        let r = gate.require_step_up(&ctx, Sensitive::CreateShare, 1_000).unwrap_err();
        assert_eq!((r.verdict.is_none(), r.audit_failure.as_deref()), (true, Some("disk full")));
        assert!(gate.permit_search(&ctx, Action::Search, Some("Observation")).is_err());
    }
}
