//! The context of a consent event: who changed the consent and through which channel.

use crate::identity::PORTAL_CLIENT;
use portico_policy::{Principal, RequestContext};
use portico_store::ConsentEventContext;

/// Channels a consent change can come through.
pub fn channel(ctx: &RequestContext) -> &'static str {
    match &ctx.principal {
        Principal::Operator | Principal::Admin { .. } => "operator",
        Principal::Clinician { .. } => "clinician",
        _ if ctx.client.as_deref() == Some(PORTAL_CLIENT) => "portal",
        _ => "app",
    }
}

pub fn event_context(ctx: &RequestContext) -> ConsentEventContext {
    let on_behalf_of = match &ctx.principal {
        Principal::Caregiver { .. } => ctx.acting_for.clone().unwrap_or_default(),
        _ => String::new(),
    };
    ConsentEventContext { actor: ctx.principal.actor().key(), on_behalf_of, channel: channel(ctx).to_string() }
}
