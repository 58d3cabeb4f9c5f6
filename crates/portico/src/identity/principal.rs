//! From a grant or session (and its user) to the gate's principal and request context.

use super::PORTAL_CLIENT;
use portico_policy::{Principal, RequestContext, ScopeSet};
use portico_store::identity::{GrantRow, UserRow};
use portico_store::{FactsWanted, Store, StoreError};
use std::sync::Arc;

/// The principal a user is, acting for `acting_for` (a caregiver's chosen patient).
pub fn principal_of_user(user: &UserRow) -> Principal {
    let reference_id = |prefix: &str| {
        user.fhir_user.as_deref().and_then(|r| r.strip_prefix(prefix)).map(str::to_string).unwrap_or_default()
    };
    match user.role.as_str() {
        "patient" => {
            let own = user.links.first().map(|l| l.patient.clone()).unwrap_or_else(|| reference_id("Patient/"));
            Principal::Patient { patient: own }
        }
        "caregiver" => Principal::Caregiver {
            user: user.id.clone(),
            patients: user.links.iter().map(|l| l.patient.clone()).collect(),
        },
        "clinician" => Principal::Clinician { user: user.id.clone(), practitioner: reference_id("Practitioner/") },
        "admin" => Principal::Admin { user: user.id.clone() },
        _ => Principal::Anonymous,
    }
}

/// The principal behind a grant: its user; for an operator-issued patient token
/// (`portico token issue --patient`, the only way a grant gets a patient without a user),
/// that patient; otherwise a backend service (`client_credentials` grants have neither).
pub fn principal_of_grant(grant: &GrantRow, user: Option<&UserRow>) -> Principal {
    match (user, &grant.patient) {
        (Some(u), _) => principal_of_user(u),
        (None, Some(p)) => Principal::Patient { patient: p.clone() },
        (None, None) => Principal::System { client: grant.client_id.clone() },
    }
}

/// Fill a request context from a grant: user, patient acted for, client, scopes, step-up.
pub fn apply_grant(ctx: &mut RequestContext, grant: &GrantRow, user: Option<&UserRow>) {
    ctx.user = user.map(|u| u.id.clone());
    ctx.client = Some(grant.client_id.clone());
    ctx.device = grant.device_id.clone();
    ctx.stepup_at_ms = grant.stepup_ms;
    // A grant's scopes were validated when it was made; one that no longer parses grants
    // nothing rather than everything.
    ctx.scopes = Some(ScopeSet::parse(&grant.scope).unwrap_or_default());
    ctx.acting_for = match &ctx.principal {
        Principal::Patient { patient } => Some(patient.clone()),
        _ => grant.patient.clone(),
    };
    let on_behalf = match &ctx.principal {
        Principal::Caregiver { .. } => ctx.acting_for.clone(),
        _ => None,
    };
    ctx.scope.set_actor(ctx.principal.actor(), on_behalf, ctx.client.clone(), ctx.purpose.clone());
    ctx.scope.set_origin_device(ctx.device.clone());
}

/// Fill a request context from a portal session: the user's full role (no app scopes).
pub fn apply_session(
    ctx: &mut RequestContext,
    user: &UserRow,
    device: &str,
    acting_for: Option<&str>,
    stepup_ms: Option<i64>,
) {
    ctx.user = Some(user.id.clone());
    ctx.client = Some(PORTAL_CLIENT.to_string());
    ctx.device = Some(device.to_string());
    ctx.stepup_at_ms = stepup_ms;
    ctx.scopes = None;
    ctx.acting_for = match &ctx.principal {
        Principal::Patient { patient } => Some(patient.clone()),
        Principal::Caregiver { patients, .. } => {
            acting_for.map(str::to_string).or_else(|| (patients.len() == 1).then(|| patients[0].clone()))
        }
        _ => None,
    };
    let on_behalf = match &ctx.principal {
        Principal::Caregiver { .. } => ctx.acting_for.clone(),
        _ => None,
    };
    ctx.scope.set_actor(ctx.principal.actor(), on_behalf, ctx.client.clone(), ctx.purpose.clone());
    ctx.scope.set_origin_device(ctx.device.clone());
}

/// Load the [`portico_policy::PatientFacts`] of the patient a caregiver or clinician acts for
/// into the context (patients, the operator and services need none). Read fresh for every
/// request — a consent revoked, a CareTeam changed or a RelatedPerson deactivated bites on
/// the very next request in every server process. A caregiver's RelatedPerson links are the
/// user's own (`PatientLink::via`) for that patient, confirmed against the stored
/// RelatedPerson by the store.
pub async fn load_patient_facts(
    store: &dyn Store,
    ctx: &mut RequestContext,
    user: Option<&UserRow>,
) -> Result<(), StoreError> {
    let Some(patient) = ctx.acting_for.clone() else { return Ok(()) };
    let wanted = match &ctx.principal {
        Principal::Caregiver { .. } => FactsWanted {
            care_team: false,
            claimed_proxies: user
                .into_iter()
                .flat_map(|u| &u.links)
                .filter(|l| l.patient == patient)
                .filter_map(|l| l.via.as_deref()?.strip_prefix("RelatedPerson/").map(str::to_string))
                .collect(),
        },
        Principal::Clinician { .. } => FactsWanted { care_team: true, claimed_proxies: Vec::new() },
        _ => return Ok(()),
    };
    ctx.patient = Some(Arc::new(store.patient_facts(&patient, &wanted).await?));
    Ok(())
}
