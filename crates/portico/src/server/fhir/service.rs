//! The FHIR service: every interaction asks the gate, then the store. Handlers, transaction
//! bundles and the importer all come through here, so there is one path to clinical data.

use super::{obligations, trail};
use crate::server::AppState;
use crate::server::error::ApiError;
use axum::http::StatusCode;
use portico_audit::{Interaction, Slot};
use portico_fhir::validate::{self, Severity};
use portico_policy::{Action, Refusal, RequestContext, ResourceFacts, SearchPermit, WritePermit};
use portico_store::search::{self, Parsed};
use portico_store::{
    Condition, ConsentEvents, HistoryQuery, SearchPage, SearchQuery, StoreError, StoredVersion, WriteAudit, WriteKind,
    WriteOp, WriteResult, prepare,
};
use serde_json::Value;

/// How strictly to treat unknown content (`Prefer: handling=`). Without a preference, a
/// resource body is validated strictly (an unknown element is a 400) while a search is
/// lenient (an unknown parameter is ignored with a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handling {
    #[default]
    Unspecified,
    Lenient,
    Strict,
}

/// The service bound to one server's state.
pub struct Fhir<'a> {
    pub state: &'a AppState,
}

/// Map a gate refusal: an audit failure fails closed (503); a deny on something the
/// caller may not know exists is a 404 so existence does not leak; others 403.
pub fn refusal(r: Refusal, hide_existence: bool) -> ApiError {
    if let Some(f) = r.audit_failure {
        tracing::error!(error = %f, "audit sink failed; request refused");
        return ApiError::unavailable();
    }
    let reason = r.verdict.map(|v| v.reason).unwrap_or_default();
    if hide_existence { ApiError::not_found("Resource not found.") } else { ApiError::forbidden(reason) }
}

/// How often a write is decided again when the store finds its permit stale.
pub const WRITE_ATTEMPTS: usize = 32;

/// Whether a failed write should be decided again and retried: the resource changed between
/// the gate's decision and the store, or a conditional create's criteria now match.
pub fn must_replan(e: &StoreError) -> bool {
    matches!(e, StoreError::StalePermit | StoreError::ConditionMatched)
}

/// A short, jittered pause before deciding a contended write again.
pub async fn replan_backoff(attempt: usize) {
    let spread = 2 * attempt.min(10) as u128 + 1;
    let ms = 1 + (uuid::Uuid::new_v4().as_u128() % spread) as u64;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// A new server-assigned logical id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl<'a> Fhir<'a> {
    pub fn new(state: &'a AppState) -> Self {
        Fhir { state }
    }

    /// The current version, if the caller may see it. Hidden and absent look the same (404);
    /// a visible tombstone is 410.
    pub async fn read(&self, ctx: &RequestContext, rt: &str, id: &str) -> Result<StoredVersion, ApiError> {
        Ok(self.read_redacted(ctx, rt, id).await?.0)
    }

    /// [`Fhir::read`], and whether the obligations removed anything from the body.
    async fn read_redacted(&self, ctx: &RequestContext, rt: &str, id: &str) -> Result<(StoredVersion, bool), ApiError> {
        trail::begin(ctx, Interaction::Read, rt, format!("{rt}/{id}"));
        check_type(rt)?;
        check_id_exists(rt, id)?;
        let sealed = self.state.store.read(rt, id).await?.ok_or_else(|| not_found(rt, id))?;
        let decision = self.state.gate.decide(ctx, Action::Read, sealed.facts()).map_err(|r| refusal(r, true))?;
        let mut v = sealed.open(&decision).map_err(|_| not_found(rt, id))?;
        if v.deleted {
            return Err(ApiError::new(StatusCode::GONE, "deleted", format!("{rt}/{id} has been deleted.")));
        }
        let redacted = obligations::apply(&decision.verdict().obligations, &mut v);
        Ok((v, redacted))
    }

    /// The current version for a PATCH to apply to: like [`Fhir::read`], but refused (403)
    /// when the caller sees it redacted — a patch of the redacted body would silently drop
    /// the hidden elements.
    pub async fn read_for_patch(&self, ctx: &RequestContext, rt: &str, id: &str) -> Result<StoredVersion, ApiError> {
        let (v, redacted) = self.read_redacted(ctx, rt, id).await?;
        if redacted {
            return Err(ApiError::forbidden("Parts of this record are hidden from you, so it cannot be patched."));
        }
        Ok(v)
    }

    /// Whether the caller may learn that this resource (live or deleted) exists: 404 when it
    /// is absent or the gate refuses `action` on its current version.
    pub async fn ensure_visible(
        &self,
        ctx: &RequestContext,
        action: Action,
        rt: &str,
        id: &str,
    ) -> Result<(), ApiError> {
        let sealed = self.state.store.read(rt, id).await?.ok_or_else(|| not_found(rt, id))?;
        let decision = self.state.gate.decide(ctx, action, sealed.facts()).map_err(|r| refusal(r, true))?;
        if decision.is_permit() { Ok(()) } else { Err(not_found(rt, id)) }
    }

    /// One version, if the caller may see it.
    pub async fn vread(&self, ctx: &RequestContext, rt: &str, id: &str, vid: i64) -> Result<StoredVersion, ApiError> {
        trail::begin(ctx, Interaction::VRead, rt, format!("{rt}/{id}/_history/{vid}"));
        check_type(rt)?;
        check_id_exists(rt, id)?;
        let sealed = self.state.store.vread(rt, id, vid).await?.ok_or_else(|| not_found(rt, id))?;
        let decision = self.state.gate.decide(ctx, Action::VRead, sealed.facts()).map_err(|r| refusal(r, true))?;
        let mut v = sealed.open(&decision).map_err(|_| not_found(rt, id))?;
        if v.deleted {
            return Err(ApiError::new(StatusCode::GONE, "deleted", format!("{rt}/{id} version {vid} is a deletion.")));
        }
        obligations::apply(&decision.verdict().obligations, &mut v);
        Ok(v)
    }

    /// Facts of the live version stored now, for a write's pre-image decision (None when
    /// absent or deleted: a tombstone has nothing left to protect).
    async fn pre_image(&self, rt: &str, id: &str) -> Result<Option<ResourceFacts>, ApiError> {
        // The bookkeeping row first: a create-by-PUT (every import) needs no second query.
        if !self.state.store.head(rt, id).await?.is_some_and(|h| !h.deleted) {
            return Ok(None);
        }
        Ok(self.state.store.read(rt, id).await?.map(|sealed| sealed.facts().clone()))
    }

    /// Validate a body for `rt` and return it ready to prepare; `id` is set on it.
    pub fn validated_body(&self, rt: &str, id: &str, mut body: Value, handling: Handling) -> Result<Value, ApiError> {
        check_type(rt)?;
        match body.get("resourceType").and_then(Value::as_str) {
            Some(t) if t == rt => {}
            Some(t) => {
                return Err(ApiError::bad_request(format!(
                    "resourceType '{}' does not match the URL's type '{rt}'",
                    t.chars().take(64).collect::<String>()
                )));
            }
            None => return Err(ApiError::bad_request("resourceType is missing")),
        }
        if let Value::Object(o) = &mut body {
            o.insert("id".into(), Value::from(id));
        }
        if contains_nul(&body) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "value",
                "Strings may not contain the character U+0000.",
            ));
        }
        let issues = validate::validate_resource(&body);
        let errors: Vec<_> = issues
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .filter(|i| handling != Handling::Lenient || !validate::is_unknown_element(i))
            .collect();
        if !errors.is_empty() {
            let list = errors
                .iter()
                .take(50)
                .map(|i| {
                    let mut v = serde_json::json!({"severity": "error", "code": i.code, "diagnostics": i.diagnostics});
                    if let Some(e) = &i.expression {
                        v["expression"] = serde_json::json!([e]);
                    }
                    v
                })
                .collect();
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "structure",
                format!("The {rt} is not valid FHIR R4 ({} problem(s)).", errors.len()),
            )
            .with_issues(list));
        }
        Ok(body)
    }

    /// Decide and describe one write; the caller stores it (alone or in a transaction).
    pub async fn plan_write(
        &self,
        ctx: &RequestContext,
        kind: WriteKind,
        rt: &str,
        id: &str,
        body: Option<Value>,
        if_match: Option<i64>,
    ) -> Result<(WritePermit, WriteOp), ApiError> {
        let action = match kind {
            WriteKind::Create => Action::Create,
            WriteKind::Update => Action::Update,
            WriteKind::Delete => Action::Delete,
        };
        trail::begin(ctx, trail::write_interaction(&kind), rt, format!("{rt}/{id}"));
        if !portico_fhir::extract::is_fhir_id(id) {
            return Err(ApiError::bad_request("The id is not a valid FHIR id."));
        }
        if rt == "Consent"
            && let Some(b) = &body
        {
            crate::consent::validate::check_write(ctx, b)?;
        }
        let pre = match kind {
            WriteKind::Create => None,
            _ => self.pre_image(rt, id).await?,
        };
        let prepared = body.map(|b| prepare(rt, id, b, &self.state.classifier));
        let post = match &prepared {
            Some(p) => p.facts.clone(),
            None => pre.clone().unwrap_or_else(|| ResourceFacts::type_level(rt)),
        };
        let permit =
            self.state.gate.permit_write(ctx, action, pre.as_ref(), &post).map_err(|r| refusal(r, pre.is_some()))?;
        Ok((
            permit,
            WriteOp { kind, resource_type: rt.to_string(), id: id.to_string(), if_match, prepared, condition: None },
        ))
    }

    /// Store writes atomically, each op described by the current audit interaction.
    pub async fn commit(
        &self,
        ctx: &RequestContext,
        ops: Vec<(WritePermit, WriteOp)>,
    ) -> Result<Vec<WriteResult>, ApiError> {
        let slot = ctx.scope.ensure(Interaction::Update, None);
        let slots = vec![slot; ops.len()];
        Ok(self.store_writes(ctx, ops, &slots).await?)
    }

    /// The one way writes reach the store: with the audit records of their interactions
    /// (`slots`, one per op), appended in the same database transaction.
    pub async fn store_writes(
        &self,
        ctx: &RequestContext,
        ops: Vec<(WritePermit, WriteOp)>,
        slots: &[Slot],
    ) -> Result<Vec<WriteResult>, StoreError> {
        let build = trail::write_records(ctx.scope.pending(slots));
        let audit = WriteAudit { chainer: self.state.audit.chainer(), records: &build };
        // A Consent change is stored with its signed event, in the same transaction.
        let results = if ops.iter().any(|(_, op)| op.resource_type == "Consent") {
            let events =
                ConsentEvents { key: self.state.audit.key(), context: crate::consent::events::event_context(ctx) };
            self.state.consents.write_with_events(ops, &audit, &events).await?
        } else {
            self.state.store.write(ops, &audit).await?
        };
        ctx.scope.mark_written(slots);
        Ok(results)
    }

    /// Decide and store one write. When a concurrent write changed the resource between the
    /// gate's decision and the store (a stale permit), decide again on the new pre-image and
    /// retry: a blind update under contention succeeds instead of answering 409.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_one(
        &self,
        ctx: &RequestContext,
        kind: WriteKind,
        rt: &str,
        id: &str,
        body: Option<Value>,
        if_match: Option<i64>,
        condition: Option<Condition>,
    ) -> Result<WriteResult, ApiError> {
        self.try_write_one(ctx, kind, rt, id, body, if_match, condition)
            .await?
            .ok_or_else(|| StoreError::ConditionMatched.into())
    }

    /// [`Fhir::write_one`], except that a condition with `abort_on_match` that matches by the
    /// time of writing answers `None` (nothing was written) for the caller to look again.
    #[allow(clippy::too_many_arguments)]
    pub async fn try_write_one(
        &self,
        ctx: &RequestContext,
        kind: WriteKind,
        rt: &str,
        id: &str,
        body: Option<Value>,
        if_match: Option<i64>,
        condition: Option<Condition>,
    ) -> Result<Option<WriteResult>, ApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (permit, mut op) = self.plan_write(ctx, kind.clone(), rt, id, body.clone(), if_match).await?;
            op.condition = condition.clone();
            let slot = ctx.scope.ensure(trail::write_interaction(&kind), Some(rt));
            match self.store_writes(ctx, vec![(permit, op)], &[slot]).await {
                Ok(mut results) => return results.pop().map(Some).ok_or_else(ApiError::internal),
                Err(StoreError::ConditionMatched) => return Ok(None),
                Err(StoreError::StalePermit) if attempt < WRITE_ATTEMPTS => replan_backoff(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Parse and run a search.
    pub async fn search(
        &self,
        ctx: &RequestContext,
        rt: Option<&str>,
        params: &[(String, String)],
        handling: Handling,
    ) -> Result<(Parsed, SearchPage), ApiError> {
        let interaction = if rt.is_some() { Interaction::SearchType } else { Interaction::SearchSystem };
        trail::search(ctx, interaction, rt, params);
        if let Some(rt) = rt {
            check_type(rt)?;
        }
        let parsed = search::parse_search(rt, params).map_err(|e| ApiError::bad_request(e.0))?;
        if handling == Handling::Strict && !parsed.unknown.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Unknown or unsupported search parameter(s): {}",
                parsed.unknown.iter().map(|s| s.chars().take(64).collect::<String>()).collect::<Vec<_>>().join(", ")
            )));
        }
        let permit = self.search_permit(ctx, Action::Search, rt)?;
        let mut page = self.state.store.search(&permit, &parsed.query).await?;
        trail::returned(ctx, &page);
        obligations::apply_page(&self.state.gate, ctx, rt, permit.obligations(), &mut page);
        Ok((parsed, page))
    }

    /// Run an already-parsed query (used by `$everything`).
    pub async fn search_query(
        &self,
        ctx: &RequestContext,
        action: Action,
        query: &SearchQuery,
    ) -> Result<SearchPage, ApiError> {
        let permit = self.search_permit(ctx, action, None)?;
        let mut page = self.state.store.search(&permit, query).await?;
        trail::returned(ctx, &page);
        obligations::apply_page(&self.state.gate, ctx, None, permit.obligations(), &mut page);
        Ok(page)
    }

    pub fn search_permit(
        &self,
        ctx: &RequestContext,
        action: Action,
        rt: Option<&str>,
    ) -> Result<SearchPermit, ApiError> {
        self.state.gate.permit_search(ctx, action, rt).map_err(|r| refusal(r, false))
    }

    /// History at instance, type or system level.
    pub async fn history(&self, ctx: &RequestContext, q: &HistoryQuery) -> Result<SearchPage, ApiError> {
        trail::history(ctx, q);
        if let Some(rt) = &q.resource_type {
            check_type(rt)?;
        }
        let permit = match (&q.resource_type, &q.id) {
            // One resource: decided on its current version like a read; absent and
            // not-visible answer alike (404), so history never reveals another patient's
            // resource exists.
            (Some(rt), Some(id)) => {
                let sealed = self.state.store.read(rt, id).await?.ok_or_else(|| not_found(rt, id))?;
                self.state.gate.permit_instance_history(ctx, sealed.facts()).map_err(|r| refusal(r, true))?
            }
            _ => self.search_permit(ctx, Action::History, q.resource_type.as_deref())?,
        };
        let mut page = self.state.store.history(&permit, q).await?;
        trail::returned(ctx, &page);
        obligations::apply_page(&self.state.gate, ctx, permit.resource_type(), permit.obligations(), &mut page);
        Ok(page)
    }

    /// Build the condition of a conditional create (`If-None-Exist`).
    pub fn condition(&self, ctx: &RequestContext, rt: &str, criteria: &str) -> Result<Condition, ApiError> {
        let params = parse_query_string(criteria);
        if params.is_empty() {
            return Err(ApiError::bad_request("If-None-Exist needs search criteria"));
        }
        let parsed = search::parse_search(Some(rt), &params).map_err(|e| ApiError::bad_request(e.0))?;
        if !parsed.unknown.is_empty() {
            return Err(ApiError::bad_request("If-None-Exist uses unknown search parameters"));
        }
        let permit = self.search_permit(ctx, Action::Search, Some(rt))?;
        let mut sorted = params.clone();
        sorted.sort();
        let key = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        Ok(Condition { permit, query: parsed.query, key, abort_on_match: false })
    }

    /// Resolve conditional criteria to the matching resources' ids (for conditional update,
    /// delete and references). At most `limit + 1` ids are returned.
    pub async fn matching_ids(
        &self,
        ctx: &RequestContext,
        rt: &str,
        criteria: &[(String, String)],
        limit: usize,
    ) -> Result<Vec<String>, ApiError> {
        let parsed = search::parse_search(Some(rt), criteria).map_err(|e| ApiError::bad_request(e.0))?;
        if !parsed.unknown.is_empty() {
            return Err(ApiError::bad_request("conditional criteria use unknown search parameters"));
        }
        let mut q = parsed.query;
        q.count = limit + 1;
        q.includes.clear();
        q.revincludes.clear();
        let permit = self.search_permit(ctx, Action::Search, Some(rt))?;
        let page = self.state.store.search(&permit, &q).await?;
        Ok(page.entries.into_iter().map(|e| e.id).collect())
    }
}

/// `404` for an absent resource — word for word what a refused one answers
/// ([`refusal`]), so a hidden record cannot be told from a missing one.
pub fn not_found(rt: &str, id: &str) -> ApiError {
    let _ = (rt, id);
    ApiError::not_found("Resource not found.")
}

/// A malformed id names nothing: 404 before the store is asked (PostgreSQL cannot even
/// compare text holding U+0000).
pub fn check_id_exists(rt: &str, id: &str) -> Result<(), ApiError> {
    if portico_fhir::extract::is_fhir_id(id) { Ok(()) } else { Err(not_found(rt, id)) }
}

/// Whether any string or key in `v` holds U+0000 (FHIR strings should hold no control
/// characters but whitespace; PostgreSQL cannot store NUL in text, so it is refused).
fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Refuse unknown resource types with 404 (FHIR: the type is not supported here).
pub fn check_type(rt: &str) -> Result<(), ApiError> {
    if portico_fhir::resource_types::is_resource_type(rt) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("Unknown resource type '{}'.", rt.chars().take(64).collect::<String>())))
    }
}

/// Parse `a=1&b=2` (percent-decoded, `+` as space).
pub fn parse_query_string(s: &str) -> Vec<(String, String)> {
    let s = s.split_once('?').map(|(_, q)| q).unwrap_or(s);
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
}
