//! How the FHIR service describes its interactions to the request's audit scope. The gate
//! already put every decision there; this adds what only the service knows: the kind of
//! interaction, what was asked for, the query, and what was returned or written.

use portico_audit::{AuditRecord, Entity, EntityRole, Interaction, PendingRecord};
use portico_policy::RequestContext;
use portico_store::{HistoryQuery, SearchPage, StoredVersion, WriteKind, WriteResult};

/// The interaction a write is.
pub fn write_interaction(kind: &WriteKind) -> Interaction {
    match kind {
        WriteKind::Create => Interaction::Create,
        WriteKind::Update => Interaction::Update,
        WriteKind::Delete => Interaction::Delete,
    }
}

/// Describe the current interaction (beginning one of this kind if none is open) and what
/// the client asked for.
pub fn begin(ctx: &RequestContext, interaction: Interaction, rt: &str, requested: String) {
    ctx.scope.ensure(interaction, Some(rt));
    ctx.scope.requested(requested);
}

/// A search: its type and query.
pub fn search(ctx: &RequestContext, interaction: Interaction, rt: Option<&str>, params: &[(String, String)]) {
    ctx.scope.ensure(interaction, rt);
    let query = params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    ctx.scope.edit(|r| {
        if r.query.is_none() {
            r.query = Some(query);
        }
        if r.resource_type.is_none() {
            r.resource_type = rt.map(str::to_string);
        }
    });
}

/// A history request.
pub fn history(ctx: &RequestContext, q: &HistoryQuery) {
    let interaction = match (&q.resource_type, &q.id) {
        (Some(_), Some(_)) => Interaction::HistoryInstance,
        (Some(_), None) => Interaction::HistoryType,
        _ => Interaction::HistorySystem,
    };
    ctx.scope.ensure(interaction, q.resource_type.as_deref());
    if let (Some(rt), Some(id)) = (&q.resource_type, &q.id) {
        ctx.scope.requested(format!("{rt}/{id}"));
    }
}

/// An entity for a stored version.
pub fn entity(v: &StoredVersion, role: EntityRole) -> Entity {
    let reference = if v.version > 0 {
        format!("{}/{}/_history/{}", v.resource_type, v.id, v.version)
    } else {
        format!("{}/{}", v.resource_type, v.id)
    };
    Entity { reference, role, category: v.category.clone(), patients: v.compartments.clone() }
}

/// What a search, history or `$everything` page disclosed.
pub fn returned(ctx: &RequestContext, page: &SearchPage) {
    ctx.scope.edit(|r| {
        r.entities.extend(page.entries.iter().map(|v| entity(v, EntityRole::Match)));
        r.entities.extend(page.included.iter().map(|v| entity(v, EntityRole::Include)));
    });
}

/// The HTTP status a write result is answered with.
pub fn write_status(r: &WriteResult) -> u16 {
    if r.stored.deleted {
        204
    } else if r.created {
        201
    } else {
        200
    }
}

/// Build the records of a write from its results (called inside the write's transaction).
pub fn write_records(pending: Vec<PendingRecord>) -> impl Fn(&[WriteResult]) -> Vec<AuditRecord> + Sync {
    let now = crate::audit::now_ms();
    move |results: &[WriteResult]| {
        pending
            .iter()
            .zip(results)
            .map(|(p, r)| p.complete(write_status(r), Some(entity(&r.stored, EntityRole::Target)), now))
            .collect()
    }
}
