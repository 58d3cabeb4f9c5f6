//! Properties of the consent engine over generated consents (random provision trees: permit
//! and deny, actors, categories, classes, labels, purposes, actions, periods, data periods,
//! data references, nesting), principals, patient facts, operator rules and resources.

mod common;

use common::*;
use portico_policy::consent::ProvisionKind;
use portico_policy::engine::evaluate_with;
use portico_policy::{
    Action, BirthDate, ConsentRecord, Gate, OperatorRules, PatientFacts, Principal, RequestContext, ResourceFacts,
    TracingSink, Verdict, parse_consent,
};
use proptest::prelude::*;
use proptest::sample::subsequence;
use serde_json::Value;
use std::sync::{Arc, OnceLock};

// ---- generators ------------------------------------------------------------------------------

fn arb_period() -> impl Strategy<Value = (Option<&'static str>, Option<&'static str>)> {
    prop_oneof![
        Just((Some("2026-01-01"), Some("2026-12-31"))),
        Just((None, Some("2026-06-14"))),
        Just((Some("2026-06-16"), None)),
        Just((Some("2025-01-01"), None)),
    ]
}

fn arb_data_period() -> impl Strategy<Value = (Option<&'static str>, Option<&'static str>)> {
    prop_oneof![
        Just((Some("2026-01-01"), None)),
        Just((None, Some("2025-12-31"))),
        Just((Some("2026-06-01"), Some("2026-06-30")))
    ]
}

/// One provision of the given kind (`None`: untyped root) with random criteria.
fn arb_node(kind: Option<bool>) -> impl Strategy<Value = P> {
    (
        subsequence(
            vec!["RelatedPerson/rp-mom", "RelatedPerson/rp-dad", "Practitioner/dr-lee", "Practitioner/dr-kim"],
            0..=2,
        ),
        subsequence(vec!["labs", "medications", "conditions", "demographics"], 0..=2),
        subsequence(vec!["Observation", "Condition", "Patient"], 0..=1),
        subsequence(vec!["PSY", "ETH", "SEX", "R"], 0..=2),
        subsequence(vec!["TREAT", "HPAYMT", "FAMRQT"], 0..=1),
        subsequence(vec!["access", "correct"], 0..=1),
        proptest::option::weighted(0.2, arb_data_period()),
        proptest::option::weighted(
            0.15,
            prop_oneof![
                Just(("instance", "Observation/o1")),
                Just(("authoredby", "Practitioner/dr-lee")),
                Just(("authoredby", "RelatedPerson/rp-mom")),
            ],
        ),
        proptest::option::weighted(0.15, arb_period()),
        any::<bool>(),
    )
        .prop_map(move |(actors, cats, classes, labels, purposes, actions, dp, data, period, coin)| {
            let mut p = match kind.unwrap_or(coin) {
                _ if kind.is_none() => P::base(),
                true => P::permit(),
                false => P::deny(),
            };
            for a in actors {
                p = p.actor(a);
            }
            for c in cats {
                p = p.category(c);
            }
            for t in classes {
                p = p.class(t);
            }
            for l in labels {
                p = p.label(l);
            }
            for x in purposes {
                p = p.purpose(x);
            }
            for a in actions {
                p = p.action(a);
            }
            if let Some((s, e)) = dp {
                p = p.data_period(s, e);
            }
            if let Some((m, r)) = data {
                p = p.data(m, r);
            }
            if let Some((s, e)) = period {
                p = p.period(s, e);
            }
            p
        })
}

fn arb_typed() -> impl Strategy<Value = P> {
    prop_oneof![arb_node(Some(true)), arb_node(Some(false))]
}

fn arb_tree() -> BoxedStrategy<P> {
    arb_typed()
        .prop_recursive(3, 12, 3, |inner| {
            (arb_typed(), proptest::collection::vec(inner, 1..3))
                .prop_map(|(p, kids)| kids.into_iter().fold(p, P::child))
        })
        .boxed()
}

/// A deny provision, possibly with nested deny provisions (no permit exceptions: those would
/// add grants).
fn arb_deny_tree() -> BoxedStrategy<P> {
    arb_node(Some(false))
        .prop_recursive(2, 6, 2, |inner| {
            (arb_node(Some(false)), proptest::collection::vec(inner, 1..3))
                .prop_map(|(p, kids)| kids.into_iter().fold(p, P::child))
        })
        .boxed()
}

fn arb_root() -> impl Strategy<Value = P> {
    prop_oneof![
        2 => proptest::collection::vec(arb_tree(), 1..4).prop_map(|kids| kids.into_iter().fold(P::base(), P::child)),
        1 => arb_tree(),
    ]
}

/// (status, consent JSON without id).
fn arb_consent() -> impl Strategy<Value = Value> {
    (
        prop_oneof![6 => Just("active"), 1 => Just("inactive"), 1 => Just("draft")],
        proptest::option::weighted(0.3, arb_period()),
        arb_root(),
        prop_oneof![Just("2026-01-10"), Just("2020-01-10")],
    )
        .prop_map(|(status, period, root, date)| {
            let root = match period {
                Some((s, e)) => root.period(s, e),
                None => root,
            };
            let mut v = consent_json("x", status, root);
            v["dateTime"] = serde_json::json!(date);
            v
        })
}

fn arb_consents() -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(arb_consent(), 0..4)
}

fn parse_all(jsons: &[Value]) -> Vec<Arc<ConsentRecord>> {
    jsons
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut v = v.clone();
            v["id"] = serde_json::json!(format!("c{i}"));
            Arc::new(parse_consent(&v).unwrap_or_else(|e| panic!("generated consent refused: {e}\n{v}")))
        })
        .collect()
}

fn arb_facts() -> impl Strategy<Value = ResourceFacts> {
    (
        prop_oneof![
            Just("Observation"),
            Just("Condition"),
            Just("MedicationRequest"),
            Just("Patient"),
            Just("DocumentReference")
        ],
        prop_oneof![Just("o1"), Just("o2"), Just("p1")],
        prop_oneof![4 => Just(vec!["p1"]), 1 => Just(vec!["p2"]), 1 => Just(vec!["p1", "p2"]), 1 => Just(vec![])],
        prop_oneof![
            Just("labs"),
            Just("medications"),
            Just("conditions"),
            Just("demographics"),
            Just("imaging"),
            Just("notes")
        ],
        subsequence(vec!["BH", "ETH", "PSY", "SEX"], 0..=2),
        prop_oneof![Just("N"), Just("R"), Just("V")],
        prop_oneof![
            Just(None),
            Just(Some(NOW - 400 * DAY)),
            Just(Some(NOW - 30 * DAY)),
            Just(Some(NOW - DAY)),
            Just(Some(NOW + DAY)),
        ],
        prop_oneof![
            3 => Just(None),
            1 => Just(Some("Practitioner/dr-lee")),
            1 => Just(Some("Patient/p1")),
            1 => Just(Some("RelatedPerson/rp-mom")),
        ],
    )
        .prop_map(|(t, id, comps, cat, labels, conf, date, author)| {
            let mut f = ResourceFacts::type_level(t);
            f.id = Some(id.to_string());
            f.version = Some(1);
            f.compartments = comps.into_iter().map(str::to_string).collect();
            f.category = cat.to_string();
            f.labels = labels.into_iter().map(str::to_string).chain([conf.to_string()]).collect();
            f.date_ms = date;
            f.author = author.map(str::to_string);
            f
        })
}

/// Who asks: (principal, purpose, birth date of p1).
#[derive(Debug, Clone, Copy)]
struct Who {
    principal: usize,
    purpose: usize,
    birth: usize,
}

fn arb_who() -> impl Strategy<Value = Who> {
    arb_who_from(0)
}

/// Principals from `first` on (1: everyone but the patient).
fn arb_who_from(first: usize) -> impl Strategy<Value = Who> {
    (first..7, 0usize..5, 0usize..4).prop_map(|(principal, purpose, birth)| Who { principal, purpose, birth })
}

const PRINCIPALS: [&str; 7] = ["patient", "mum", "dad", "stranger", "kim", "lee", "bob"];

fn build(who: Who, consents: Vec<Arc<ConsentRecord>>) -> RequestContext {
    let birth = ["1980-05-05", "2011-02-01", "2008-03-01", ""][who.birth];
    let facts = PatientFacts { birth_date: BirthDate::parse(birth), ..patient_facts(consents) };
    let mut ctx = match PRINCIPALS[who.principal] {
        "patient" => patient_ctx(),
        "mum" => mum(facts),
        "dad" => {
            let mut c = mum(PatientFacts { proxies: vec!["rp-dad".into()], ..facts });
            c.principal = Principal::Caregiver { user: "u-dad".into(), patients: vec!["p1".into()] };
            c
        }
        "stranger" => stranger(),
        "kim" => clinician("dr-kim", facts),
        "lee" => clinician("dr-lee", facts),
        _ => clinician("dr-bob", facts),
    };
    match who.purpose {
        0 => {}
        1 => ctx.purpose = Some("TREAT".into()),
        2 => ctx.purpose = Some("HPAYMT".into()),
        3 => ctx.purpose = Some("FAMRQT".into()),
        _ => {
            ctx.purpose = Some("ETREAT".into());
            ctx.break_glass_reason = Some("emergency".into());
            ctx.break_glass_at_ms = Some(NOW - 60_000);
        }
    }
    ctx
}

fn rule_sets() -> &'static [Arc<OperatorRules>] {
    static SETS: OnceLock<Vec<Arc<OperatorRules>>> = OnceLock::new();
    SETS.get_or_init(|| {
        let builtin = OperatorRules::builtin().clone();
        let by_class = OperatorRules::from_json(
            r#"{"version": 1, "part2": {"enabled": true, "labels": ["ETH"], "namedBy": ["class", "code"]},
                "adolescentConfidentiality": {"enabled": true, "fromAge": 12, "toAge": 17, "categories": ["conditions"]},
                "resultsHold": {"enabled": true, "days": 7, "resourceTypes": ["Observation"], "categories": ["labs", "imaging"]}}"#,
        )
        .unwrap();
        vec![Arc::new(builtin), Arc::new(OperatorRules::none()), Arc::new(by_class)]
    })
}

fn read(ctx: &RequestContext, rules: &OperatorRules, f: &ResourceFacts) -> Verdict {
    evaluate_with(ctx, rules, Action::Read, f)
}

/// What a search of the resource's type would admit of it.
fn admits(ctx: &RequestContext, rules: &Arc<OperatorRules>, f: &ResourceFacts, action: Action) -> bool {
    let gate = Gate::with_rules(Arc::new(TracingSink), rules.clone());
    let ty = (action != Action::Everything).then_some(f.resource_type.as_str());
    gate.permit_search(ctx, action, ty).map(|p| p.admits(f)).unwrap_or(false)
}

/// Append `child` to the `target`-th provision (depth-first order) of a consent's tree.
fn insert_child(node: &mut Value, target: &mut usize, child: &Value) -> bool {
    if *target == 0 {
        match node.get_mut("provision") {
            Some(Value::Array(list)) => list.push(child.clone()),
            _ => node["provision"] = serde_json::json!([child]),
        }
        return true;
    }
    *target -= 1;
    if let Some(Value::Array(kids)) = node.get_mut("provision") {
        for k in kids {
            if insert_child(k, target, child) {
                return true;
            }
        }
    }
    false
}

fn has_deny(p: &portico_policy::consent::Provision) -> bool {
    (p.kind == ProvisionKind::Deny && p.explicit_type) || p.provisions.iter().any(has_deny)
}

// ---- properties ------------------------------------------------------------------------------

/// Cases per property: 1024, or `PORTICO_PROPTEST_CASES` for a longer soak.
fn cases() -> u32 {
    std::env::var("PORTICO_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1024)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Adding a deny provision (as a new consent, or nested anywhere in an existing one)
    /// never turns a deny into a permit: not for a read, not for what a search admits.
    #[test]
    fn adding_a_deny_never_permits_more(
        jsons in arb_consents(), new in arb_deny_tree(),
        place in 0usize..12, as_new in any::<bool>(), who in arb_who(), f in arb_facts(), r in 0usize..3,
    ) {
        let rules = &rule_sets()[r];
        let mut after_json = jsons.clone();
        if as_new || jsons.is_empty() {
            after_json.push(consent_json("x", "active", P::base().child(new)));
        } else {
            let i = place % jsons.len();
            let mut target = place;
            let root = &mut after_json[i]["provision"];
            if !insert_child(root, &mut target, &new.0) {
                let mut zero = 0;
                insert_child(root, &mut zero, &new.0);
            }
        }
        let before = build(who, parse_all(&jsons));
        let after = build(who, parse_all(&after_json));
        for action in [Action::Read, Action::Update] {
            let (b, a) = (evaluate_with(&before, rules, action, &f), evaluate_with(&after, rules, action, &f));
            prop_assert!(b.is_permit() || !a.is_permit(), "{action:?}: {} became {}", b.rule, a.rule);
        }
        for action in [Action::Search, Action::Everything] {
            prop_assert!(admits(&before, rules, &f, action) || !admits(&after, rules, &f, action));
        }
    }

    /// Revoking a consent (status inactive) never widens access beyond lifting that consent's
    /// own deny provisions: a consent without denies widens nothing when revoked, and any
    /// resource a revocation newly permits was withheld by that very consent alone.
    #[test]
    fn revoking_never_widens(
        jsons in proptest::collection::vec(arb_consent(), 1..4), pick in 0usize..4, who in arb_who(), f in arb_facts(),
        r in 0usize..3,
    ) {
        let rules = &rule_sets()[r];
        let i = pick % jsons.len();
        let mut revoked = jsons.clone();
        revoked[i]["status"] = serde_json::json!("inactive");
        let before_consents = parse_all(&jsons);
        let pure_grant = !has_deny(&before_consents[i].root);
        let before = build(who, before_consents);
        let after = build(who, parse_all(&revoked));
        let id = format!("c{i}");
        for action in [Action::Read, Action::Update] {
            let (b, a) = (evaluate_with(&before, rules, action, &f), evaluate_with(&after, rules, action, &f));
            if a.is_permit() && !b.is_permit() {
                prop_assert!(!pure_grant, "revoking a pure grant widened {action:?}: {} -> {}", b.rule, a.rule);
                prop_assert_eq!(b.rule, "consent-deny");
                prop_assert_eq!(&b.consents, &vec![id.clone()]);
            }
        }
        for action in [Action::Search, Action::Everything] {
            if pure_grant {
                prop_assert!(admits(&before, rules, &f, action) || !admits(&after, rules, &f, action));
            }
        }
    }

    /// A patient can always read their own records, whatever consents say, unless the
    /// results hold applies (recomputed here from the rules).
    #[test]
    fn patients_read_their_own_records_unless_held(
        jsons in arb_consents(), f in arb_facts(), also in proptest::option::of(Just("p2")), r in 0usize..3,
    ) {
        let rules = &rule_sets()[r];
        let mut f = f;
        f.compartments = std::iter::once("p1").chain(also).map(str::to_string).collect();
        let mut ctx = patient_ctx();
        ctx.patient = Some(Arc::new(patient_facts(parse_all(&jsons))));
        let v = read(&ctx, rules, &f);
        let held = rules.results_hold.as_ref().is_some_and(|h| {
            h.resource_types.contains(&f.resource_type)
                && h.categories.contains(&f.category)
                && f.date_ms.is_some_and(|d| d >= NOW - h.days * DAY)
                && f.author.as_deref() != Some("Patient/p1")
        });
        prop_assert_eq!(v.is_permit(), !held, "{}", v.rule);
        if held {
            prop_assert_eq!(v.rule, "results-hold");
        }
    }

    /// Nothing outside the acted-for patient's compartment is ever permitted to a caregiver
    /// or clinician, and inside it only what a consent, a care relationship (for treatment),
    /// break-the-glass or the caregiver's link to the Patient resource itself names.
    #[test]
    fn permits_need_the_compartment_and_a_named_basis(
        jsons in arb_consents(), who in arb_who_from(1), f in arb_facts(), r in 0usize..3, act in 0usize..9,
    ) {
        let rules = &rule_sets()[r];
        let ctx = build(who, parse_all(&jsons));
        let action = ALL_ACTIONS[act];
        let v = evaluate_with(&ctx, rules, action, &f);
        if !v.is_permit() {
            return Ok(());
        }
        let type_level = matches!(action, Action::Search | Action::History | Action::Everything) && f.id.is_none();
        prop_assert_eq!(v.compartments.clone(), Some(vec!["p1".to_string()]));
        prop_assert!(type_level || f.compartments.iter().any(|c| c == "p1"));
        let basis = match v.rule {
            "break-the-glass" => ctx.purpose.as_deref() == Some("ETREAT"),
            "care-relationship" => {
                PRINCIPALS[who.principal] == "kim" && ctx.purpose.as_deref().is_none_or(|p| p == "TREAT")
            }
            "proxy-linked-patient" => f.resource_type == "Patient" && f.id.as_deref() == Some("p1"),
            "proxy-consent" | "clinician-consent" => !v.consents.is_empty(),
            _ => false,
        };
        prop_assert!(basis, "permitted by {} without a basis", v.rule);
    }

    /// A search admits exactly the resources a read of each permits (compartments, consent
    /// filter and operator rules, compiled for SQL), for every principal.
    #[test]
    fn search_filters_admit_exactly_what_reads_permit(
        jsons in arb_consents(), who in arb_who(), f in arb_facts(), r in 0usize..3,
    ) {
        let rules = &rule_sets()[r];
        let ctx = build(who, parse_all(&jsons));
        let v = read(&ctx, rules, &f);
        for action in [Action::Search, Action::History, Action::Everything] {
            prop_assert_eq!(admits(&ctx, rules, &f, action), v.is_permit(), "{:?}: read said {} ({})", action, v.rule, v.reason);
        }
    }
}
