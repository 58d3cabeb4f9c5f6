//! Who a job works for: the request context rebuilt from the job's grant, exactly as the
//! gateway (`server/auth.rs`) builds it for a request with that grant's token — so the gate
//! decides a batch the way it would decide the requester's own search at that moment.

use crate::identity::principal::{apply_grant, principal_of_grant};
use crate::server::AppState;
use portico_policy::{Principal, RequestContext, SearchPermit};
use portico_store::export::ExportJobRow;
use sha2::{Digest, Sha256};

/// Why the requester's access is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// The grant was revoked, its user or device disabled, or its client removed.
    GrantRevoked,
    /// The gate no longer permits what the job was started under.
    PermitChanged(String),
}

impl Gone {
    pub fn reason(&self) -> String {
        match self {
            Gone::GrantRevoked => "The access the export was requested with has been revoked.".into(),
            Gone::PermitChanged(why) => format!("The permission the export was started under has changed: {why}"),
        }
    }
}

/// Principal kind names stored on the job.
pub fn principal_kind(p: &Principal) -> &'static str {
    match p {
        Principal::Patient { .. } => "patient",
        Principal::Caregiver { .. } => "caregiver",
        Principal::Clinician { .. } => "clinician",
        Principal::Admin { .. } => "admin",
        Principal::System { .. } => "system",
        Principal::Operator => "operator",
        Principal::Anonymous => "anonymous",
    }
}

/// The requester's context now, with a fresh audit scope; `Err` when the grant is gone.
/// Like the gateway it loads the acted-for patient's facts (consents, care relationships,
/// proxies) afresh, so a consent revoked since the last batch bites on the next one.
pub async fn context(
    state: &AppState,
    job: &ExportJobRow,
    scope: portico_audit::Scope,
) -> Result<RequestContext, Gone> {
    match job.requester_kind.as_str() {
        "operator" => {
            if state.config.admin_token.is_empty() {
                return Err(Gone::GrantRevoked);
            }
            Ok(RequestContext::with_scope(Principal::Operator, scope))
        }
        "grant" => {
            let grant_id = job.grant_id.as_deref().ok_or(Gone::GrantRevoked)?;
            let live = state.export.store.export_grant_live(grant_id).await.map_err(|_| Gone::GrantRevoked)?;
            if !live {
                return Err(Gone::GrantRevoked);
            }
            let grant = state.identity.store.grant_get(grant_id).await.ok().flatten().ok_or(Gone::GrantRevoked)?;
            let user = match &grant.user_id {
                Some(u) => Some(state.identity.store.user_by_id(u).await.ok().flatten().ok_or(Gone::GrantRevoked)?),
                None => None,
            };
            let principal = principal_of_grant(&grant, user.as_ref());
            let mut ctx = RequestContext::with_scope(principal, scope);
            apply_grant(&mut ctx, &grant, user.as_ref());
            crate::identity::principal::load_patient_facts(state.store.as_ref(), &mut ctx, user.as_ref())
                .await
                .map_err(|_| Gone::PermitChanged("the patient's consents could not be read".into()))?;
            Ok(ctx)
        }
        _ => Err(Gone::GrantRevoked),
    }
}

/// A fingerprint of what a permit lets through (compartments, scope limits, consent
/// filter, obligations): equal prints, equal access. Instants in the filter (a results
/// hold is "newer than now − N days") are taken relative to `now_ms`, so the same rule
/// decided a minute later prints the same.
pub fn permit_print(permits: &[SearchPermit], now_ms: i64) -> String {
    let mut h = Sha256::new();
    for p in permits {
        let text = format!("{:?}|{:?}|{:?}|{:?}", p.compartments(), p.limits(), p.filter(), p.obligations());
        h.update(relative_instants(&text, now_ms).as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Replace every run of 12 or more digits (an epoch-ms instant) by its offset from `now_ms`.
fn relative_instants(text: &str, now_ms: i64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= 12
            && let Ok(v) = digits.parse::<i64>()
        {
            out.push_str(&format!("now{:+}", v - now_ms));
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn instants_print_relative_to_now() {
        let a = super::relative_instants("DateRange { from_ms: Some(1795639663470) }, 42", 1795639663000);
        let b = super::relative_instants("DateRange { from_ms: Some(1795639664470) }, 42", 1795639664000);
        assert_eq!(a, b);
        assert!(a.contains("now+470") && a.ends_with("42"));
    }
}
