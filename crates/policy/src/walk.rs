//! Walking a consent's provision tree for one requester (crate-internal).
//!
//! The request-level criteria (period, actor, action, purpose) are decided here, once per
//! request; what remains per provision is its data-level [`Match`]. For every provision that
//! can *decide* (see `consent.rs`: it matches and no child overrides it), [`walk`] hands the
//! caller the path of matches from the root and the node, whose applicable children are
//! the clause's `unless` ([`unless`]). The engine either tests the clause against one
//! resource or collects it into a search filter — the same clauses either way.

use crate::consent::{ACTIONS, ActorKind, ConsentRecord, Provision, ProvisionKind};
use crate::context::Action;
use crate::filter::Match;
use crate::rules::Part2;
use std::sync::Arc;

/// What kind of consent action a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// read, vread, search, history, `$everything`: `access`, `use`, `disclose`, `collect`.
    Read,
    /// create, update, patch: `correct`.
    Write,
    /// delete: no consent action covers it.
    Delete,
}

impl Access {
    pub(crate) fn of(action: Action) -> Access {
        match action {
            Action::Delete => Access::Delete,
            a if a.is_write() => Access::Write,
            _ => Access::Read,
        }
    }

    /// The consent actions (as bits over [`ACTIONS`]) that cover this access: reads are
    /// `access`, `use`, `disclose`, `collect`; writes `correct`; delete none.
    fn bits(self) -> u8 {
        let bit = |code: &str| ACTIONS.iter().position(|a| *a == code).map_or(0, |i| 1u8 << i);
        match self {
            Access::Read => bit("access") | bit("use") | bit("disclose") | bit("collect"),
            Access::Write => bit("correct"),
            Access::Delete => 0,
        }
    }
}

/// The requester's ids of one actor type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ids<'a> {
    One(&'a str),
    Many(&'a [String]),
}

impl Ids<'_> {
    fn contains(&self, id: &str) -> bool {
        match self {
            Ids::One(x) => *x == id,
            Ids::Many(xs) => xs.iter().any(|x| x == id),
        }
    }
}

/// Who asks, for what, when — the request-level side of provision matching.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asker<'a> {
    /// `RelatedPerson` or `Practitioner`.
    pub actor_type: ActorKind,
    pub ids: Ids<'a>,
    /// The request's purpose of use (`None`: not declared).
    pub purpose: Option<&'a str>,
    pub access: Access,
    pub now: i64,
}

/// What the path from the root to a deciding provision says.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PathInfo {
    /// Some provision on the path names the requester as an actor.
    pub named: bool,
    /// Some provision on the path lists the action `correct`.
    pub correct: bool,
    /// Some provision on the path names Part 2 records (see [`Part2::named_by`]).
    pub names_part2: bool,
}

/// Whether a provision's request-level criteria hold for this request.
pub(crate) fn request_ok(p: &Provision, a: &Asker) -> bool {
    (p.actors.is_empty() || p.actors.iter().any(|x| x.kind == a.actor_type && a.ids.contains(&x.id)))
        && p.period.as_ref().is_none_or(|per| per.contains(a.now))
        && (p.action_bits() == 0 || p.action_bits() & a.access.bits() != 0)
        && (p.purposes.is_empty()
            || match a.purpose {
                // An undeclared purpose might be any: deny provisions apply, permits do not.
                None => p.kind == ProvisionKind::Deny,
                Some(purpose) => p.purposes.iter().any(|x| x == purpose || (x == "TREAT" && purpose == "ETREAT")),
            })
}

/// The `unless` of a deciding node's clause: its children that apply to this request.
pub(crate) fn unless<'c>(node: &'c Provision, a: &Asker<'_>) -> impl Iterator<Item = &'c Arc<Match>> + Clone {
    let a = *a;
    node.provisions.iter().filter(move |c| request_ok(c, &a)).map(Provision::shared_matcher)
}

/// Visit every provision of `consent` that can decide for this request (the caller checks
/// the consent is in force), with the path of data matches from the root to it.
pub(crate) fn walk<'c, F>(
    consent: &'c ConsentRecord,
    a: &Asker<'_>,
    part2: Option<&Part2>,
    path: &mut Vec<&'c Arc<Match>>,
    emit: &mut F,
) where
    F: FnMut(ProvisionKind, &[&'c Arc<Match>], &'c Provision, PathInfo),
{
    path.clear();
    visit(&consent.root, true, a, part2, path, PathInfo::default(), emit);
}

fn visit<'c, F>(
    node: &'c Provision,
    is_root: bool,
    a: &Asker<'_>,
    part2: Option<&Part2>,
    path: &mut Vec<&'c Arc<Match>>,
    info: PathInfo,
    emit: &mut F,
) where
    F: FnMut(ProvisionKind, &[&'c Arc<Match>], &'c Provision, PathInfo),
{
    if !request_ok(node, a) {
        return;
    }
    path.push(node.shared_matcher());
    let info = PathInfo {
        named: info.named || !node.actors.is_empty(),
        correct: info.correct || node.action_bits() & Access::Write.bits() != 0,
        names_part2: info.names_part2 || part2.is_some_and(|p| p.named_by(node)),
    };
    // A child that applies to every resource always overrides this node.
    let overridden = node.provisions.iter().any(|c| request_ok(c, a) && c.matcher().is_empty());
    let base = is_root && node.is_base();
    if !overridden && !base {
        emit(node.kind, path, node, info);
    }
    for child in &node.provisions {
        visit(child, false, a, part2, path, info, emit);
    }
    path.pop();
}
