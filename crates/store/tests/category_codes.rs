//! A resource's own category codings travel with every stored version (facts of reads,
//! vreads and tombstones), and the searches and histories of an app limited by SMART
//! scopes see only what the limits admit — on every backend.

mod common;

use portico_policy::{Action, Gate, Principal, RequestContext, ScopeSet, TracingSink};
use portico_store::{HistoryQuery, SearchQuery, Store};
use serde_json::{Value, json};
use std::sync::Arc;

const OBS: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

fn observation(id: &str, patient: &str, codes: &[(Option<&str>, &str)]) -> Value {
    let coding: Vec<Value> = codes
        .iter()
        .map(|(system, code)| match system {
            Some(s) => json!({"system": s, "code": code}),
            None => json!({"code": code}),
        })
        .collect();
    json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"text": "test"},
        "subject": {"reference": format!("Patient/{patient}")},
        "category": [{"coding": coding}],
    })
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn category_codes_round_trip_through_write_read_vread_and_delete() {
    for s in common::stores().await {
        let v1 = observation("o1", "p1", &[(Some(OBS), "laboratory"), (None, "local"), (Some(OBS), "laboratory")]);
        let written = common::put(&s, v1).await;
        assert_eq!(written.stored.version, 1);
        let expected_v1 = strings(&[&format!("{OBS}|laboratory"), "|local"]);
        let read = s.read("Observation", "o1").await.unwrap().unwrap();
        assert_eq!(read.facts().category_codes, expected_v1);

        let v2 = observation("o1", "p1", &[(Some(OBS), "vital-signs"), (Some("urn:x"), "a code with spaces")]);
        common::put(&s, v2).await;
        let expected_v2 = strings(&[&format!("{OBS}|vital-signs"), "urn:x|a code with spaces"]);
        assert_eq!(s.read("Observation", "o1").await.unwrap().unwrap().facts().category_codes, expected_v2);
        assert_eq!(s.vread("Observation", "o1", 1).await.unwrap().unwrap().facts().category_codes, expected_v1);
        assert_eq!(s.vread("Observation", "o1", 2).await.unwrap().unwrap().facts().category_codes, expected_v2);

        // A tombstone keeps the facts of what it deletes.
        common::delete(&s, "Observation", "o1").await;
        let tomb = s.read("Observation", "o1").await.unwrap().unwrap();
        assert_eq!(tomb.facts().version, Some(3));
        assert_eq!(tomb.facts().category_codes, expected_v2);
        assert_eq!(s.vread("Observation", "o1", 3).await.unwrap().unwrap().facts().category_codes, expected_v2);

        // No category: no codes (and not-a-CodeableConcept categories have none either).
        common::put(&s, json!({"resourceType": "Patient", "id": "p1"})).await;
        assert!(s.read("Patient", "p1").await.unwrap().unwrap().facts().category_codes.is_empty());
        common::put(
            &s,
            json!({"resourceType": "AllergyIntolerance", "id": "a1", "category": ["food"],
            "patient": {"reference": "Patient/p1"}}),
        )
        .await;
        assert!(s.read("AllergyIntolerance", "a1").await.unwrap().unwrap().facts().category_codes.is_empty());
    }
}

#[tokio::test]
async fn history_confinement_is_case_sensitive() {
    for s in common::stores().await {
        common::put(&s, observation("mine", "abc", &[])).await;
        common::put(&s, observation("theirs", "ABC", &[])).await;
        common::put(&s, observation("other", "xabcx", &[])).await;
        let gate = Gate::new(Arc::new(TracingSink));
        let ctx = RequestContext::new(Principal::Patient { patient: "abc".into() }, "t");
        let permit = gate.permit_search(&ctx, Action::History, Some("Observation")).unwrap();
        let q = HistoryQuery { resource_type: Some("Observation".into()), count: 50, ..HistoryQuery::default() };
        let page = s.history(&permit, &q).await.unwrap();
        let ids: Vec<&str> = page.entries.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["mine"], "{}", s.backend_name());
    }
}

fn ids(v: &[portico_store::StoredVersion]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(|v| format!("{}/{}", v.resource_type, v.id)).collect();
    out.sort();
    out
}

/// SMART scope limits end to end, through the gate: the page, the total, `_include`,
/// `_revinclude`, `$everything` and every level of history see only what the scopes admit.
#[tokio::test]
async fn scope_limits_confine_search_total_includes_everything_and_history() {
    let gate = Gate::new(Arc::new(TracingSink));
    let ctx_with = |scopes: &str| {
        let mut ctx = RequestContext::new(Principal::Patient { patient: "p1".into() }, "t");
        ctx.scopes = Some(ScopeSet::parse(scopes).expect("scopes"));
        ctx
    };
    let ctx = ctx_with("patient/Observation.rs?category=laboratory patient/Patient.rs");
    let obs_only = ctx_with("patient/Observation.rs?category=laboratory");
    let permit = |ctx: &RequestContext, action: Action, rt: Option<&str>| {
        let p = gate.permit_search(ctx, action, rt).ok();
        assert!(p.as_ref().is_none_or(|p| p.limits().is_some()), "an app's permit carries its limits");
        p
    };
    let search = permit(&ctx, Action::Search, Some("Observation")).expect("search permit");
    for s in common::stores().await {
        let name = s.backend_name();
        common::put(&s, json!({"resourceType": "Patient", "id": "p1"})).await;
        common::put(&s, json!({"resourceType": "Patient", "id": "p2"})).await;
        common::put(&s, observation("lab", "p1", &[(Some(OBS), "laboratory")])).await;
        common::put(&s, observation("vitals", "p1", &[(Some(OBS), "vital-signs")])).await;
        common::put(&s, observation("changed", "p1", &[(Some(OBS), "laboratory")])).await;
        common::put(&s, observation("changed", "p1", &[(Some(OBS), "vital-signs")])).await;
        common::put(&s, observation("theirs", "p2", &[(Some(OBS), "laboratory")])).await;
        common::put(&s, json!({"resourceType": "Condition", "id": "cond", "subject": {"reference": "Patient/p1"}}))
            .await;

        // The page and the total.
        let q = SearchQuery {
            resource_types: vec!["Observation".into()],
            count: 50,
            total: true,
            ..SearchQuery::default()
        };
        let page = s.search(&search, &q).await.unwrap();
        assert_eq!(ids(&page.entries), ["Observation/lab"], "{name}");
        assert_eq!(page.total, Some(1), "{name}");

        // _include and _revinclude, under a system-level search permit (whose limits name
        // every granted type; a type-level permit's limits name only its own type, so rows
        // of other types are never included under it).
        let (Some(system), Some(narrow)) =
            (permit(&ctx, Action::Search, None), permit(&obs_only, Action::Search, None))
        else {
            panic!("system-level search permits")
        };
        let subject = portico_store::search::Include {
            source_type: "Observation".into(),
            param: "subject".into(),
            target_type: None,
        };
        let inc = SearchQuery { includes: vec![subject.clone()], total: false, ..q.clone() };
        let page = s.search(&system, &inc).await.unwrap();
        assert_eq!(
            (ids(&page.entries), ids(&page.included)),
            (strings(&["Observation/lab"]), strings(&["Patient/p1"])),
            "{name}"
        );
        // The Patient is out of scope for an app granted laboratory results alone.
        let page = s.search(&narrow, &inc).await.unwrap();
        assert_eq!((ids(&page.entries), ids(&page.included)), (strings(&["Observation/lab"]), vec![]), "{name}");
        let rev = SearchQuery {
            resource_types: vec!["Patient".into()],
            count: 50,
            revincludes: vec![subject],
            ..SearchQuery::default()
        };
        let page = s.search(&system, &rev).await.unwrap();
        assert_eq!(
            (ids(&page.entries), ids(&page.included)),
            (strings(&["Patient/p1"]), strings(&["Observation/lab"])),
            "{name}"
        );
        assert!(s.search(&narrow, &rev).await.unwrap().entries.is_empty(), "{name}");

        // $everything: the patient and the laboratory result; no Condition, no vital signs.
        let everything = permit(&ctx, Action::Everything, None).unwrap();
        let q = SearchQuery { in_compartment: Some("p1".into()), count: 50, total: true, ..SearchQuery::default() };
        let page = s.search(&everything, &q).await.unwrap();
        assert_eq!(ids(&page.entries), ["Observation/lab", "Patient/p1"], "{name}");
        assert_eq!(page.total, Some(2), "{name}");

        // History, judged per version: `changed` was a laboratory result in version 1 only.
        let versions = |page: portico_store::SearchPage| {
            let mut v: Vec<String> =
                page.entries.into_iter().map(|v| format!("{}/{}/{}", v.resource_type, v.id, v.version)).collect();
            v.sort();
            v
        };
        let hist = permit(&ctx, Action::History, Some("Observation")).unwrap();
        let q = HistoryQuery { resource_type: Some("Observation".into()), count: 50, ..HistoryQuery::default() };
        assert_eq!(
            versions(s.history(&hist, &q).await.unwrap()),
            ["Observation/changed/1", "Observation/lab/1"],
            "{name}"
        );
        let q = HistoryQuery {
            resource_type: Some("Observation".into()),
            id: Some("changed".into()),
            count: 50,
            ..HistoryQuery::default()
        };
        assert_eq!(versions(s.history(&hist, &q).await.unwrap()), ["Observation/changed/1"], "{name}");
        let system = permit(&ctx, Action::History, None).expect("system history permit");
        let q = HistoryQuery { count: 50, ..HistoryQuery::default() };
        assert_eq!(
            versions(s.history(&system, &q).await.unwrap()),
            ["Observation/changed/1", "Observation/lab/1", "Patient/p1/1"],
            "{name}"
        );
    }
}
