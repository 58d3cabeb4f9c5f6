//! Obligations applied to bodies: the one place a permitted resource is changed before it
//! leaves (`portico_policy::obligation`). `Fhir::read`, `vread`, `search`, `search_query`
//! (`$everything`) and `history` call it on everything they return, includes too, so every
//! path that hands out bodies — the REST handlers and a batch's GET entries alike — is
//! covered.

use portico_policy::obligation::{self, Obligation};
use portico_policy::{Action, Gate, RequestContext, ResourceFacts, engine};
use portico_store::{SearchPage, StoredVersion};
use serde_json::Value;

/// Apply `obligations` to one version's body; whether anything was removed. Bodies are
/// parsed only when a redaction concerns their type.
pub fn apply(obligations: &[Obligation], v: &mut StoredVersion) -> bool {
    let concerns = obligations
        .iter()
        .any(|o| matches!(o, Obligation::Redact { resource_type, .. } if *resource_type == v.resource_type));
    if !concerns || v.deleted || v.body.is_empty() {
        return false;
    }
    let Ok(mut body) = serde_json::from_str::<Value>(&v.body) else {
        // A stored body always parses; if one did not, it must not leave unredacted.
        v.body = serde_json::json!({"resourceType": v.resource_type, "id": v.id, "meta": {"security": [
            {"system": obligation::REDACTED_SYSTEM, "code": "REDACTED"}]}})
        .to_string();
        return true;
    };
    let removed = obligation::apply(obligations, &mut body);
    if removed {
        v.body = body.to_string();
    }
    removed
}

/// Apply a search permit's obligations to a page. Included resources of another type than
/// the search's carry the obligations a search of their own type would: the permit's are
/// made for the searched type (the engine's decision for that type, evaluated without
/// effect on access — what a page may contain was settled by the permit, in SQL).
pub fn apply_page(
    gate: &Gate,
    ctx: &RequestContext,
    searched: Option<&str>,
    obligations: &[Obligation],
    page: &mut SearchPage,
) {
    for v in &mut page.entries {
        apply(obligations, v);
    }
    let mut of_type: Vec<(String, Vec<Obligation>)> = Vec::new();
    for v in &mut page.included {
        if searched.is_none_or(|t| t == v.resource_type) {
            apply(obligations, v);
            continue;
        }
        let i = match of_type.iter().position(|(t, _)| *t == v.resource_type) {
            Some(i) => i,
            None => {
                let verdict = engine::evaluate_with(
                    ctx,
                    gate.rules(),
                    Action::Search,
                    &ResourceFacts::type_level(&v.resource_type),
                );
                let mut all = obligations.to_vec();
                all.extend(verdict.obligations);
                of_type.push((v.resource_type.clone(), all));
                of_type.len() - 1
            }
        };
        apply(&of_type[i].1, v);
    }
}
