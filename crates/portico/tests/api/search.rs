//! Search: every parameter type and prefix, modifiers, paging and its stability, sorting
//! (identical on both backends), includes, result shaping, lenient/strict handling, the
//! `_count` cap, hostile values, and `Patient/$everything`.

use super::common::*;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const BASE: &str = "http://localhost/fhir";

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

async fn send(app: &TestApp, method: Method, uri: &str, extra: &[(&str, &str)], body: &[u8]) -> Resp {
    let auth = bearer();
    let mut h: Vec<(&str, &str)> = vec![("authorization", auth.as_str())];
    h.extend_from_slice(extra);
    app.raw(method, uri, &h, body.to_vec()).await
}

/// PUT a resource under a chosen id (so both backends hold the same ids).
async fn put_as(app: &TestApp, id: &str, mut body: Value) {
    let rt = body["resourceType"].as_str().expect("resourceType").to_string();
    body["id"] = json!(id);
    let r = app.put(&format!("/fhir/{rt}/{id}"), body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?} put {rt}/{id}: {}", app.backend, r.text);
}

/// Create many resources in one transaction; their ids in order.
async fn bulk(app: &TestApp, resources: Vec<Value>) -> Vec<String> {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let rt = r["resourceType"].as_str().unwrap().to_string();
            json!({"resource": r, "request": {"method": "POST", "url": rt}})
        })
        .collect();
    let r = app.post("/fhir", json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?} transaction: {}", app.backend, r.text);
    r.json["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["response"]["location"].as_str().expect("location").split('/').nth(1).unwrap().to_string())
        .collect()
}

/// GET a search and return the match ids (asserting 200).
async fn ids(app: &TestApp, uri: &str) -> Vec<String> {
    let r = app.get(uri).await;
    assert_eq!(r.status, StatusCode::OK, "{:?} {uri}: {}", app.backend, r.text);
    assert_eq!(r.json["type"], "searchset", "{:?}", app.backend);
    r.ids()
}

/// Match ids as a set (for searches without a defined order).
async fn id_set(app: &TestApp, uri: &str) -> BTreeSet<String> {
    ids(app, uri).await.into_iter().collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Follow `next` links from `first`, checking each is absolute under the base; every page's
/// match ids, in order.
async fn all_pages(app: &TestApp, first: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = first.to_string();
    for _ in 0..200 {
        let r = app.get(&url).await;
        assert_eq!(r.status, StatusCode::OK, "{:?} {url}: {}", app.backend, r.text);
        pages.push(r.ids());
        match r.next_link() {
            Some(n) => {
                assert!(
                    n.starts_with(&format!("{BASE}/")),
                    "{:?}: next link not absolute under the base: {n}",
                    app.backend
                );
                url = n[BASE.len() - "/fhir".len()..].to_string();
            }
            None => return pages,
        }
    }
    panic!("{:?}: paging did not end", app.backend);
}

async fn count(app: &TestApp, query: &str) -> i64 {
    let sep = if query.contains('?') { '&' } else { '?' };
    let r = app.get(&format!("{query}{sep}_summary=count")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}: {}", app.backend, r.text);
    r.json["total"].as_i64().expect("total")
}

fn assert_outcome(r: &Resp, status: StatusCode, backend: Backend) {
    assert_eq!(r.status, status, "{backend:?}: {}", r.text);
    assert_eq!(r.json["resourceType"], "OperationOutcome", "{backend:?}: {}", r.text);
}

fn obs(code: Value) -> Value {
    json!({"resourceType": "Observation", "status": "final", "code": code})
}

fn obs_on(date: &str) -> Value {
    let mut o = obs(json!({"text": "x"}));
    o["effectiveDateTime"] = json!(date);
    o
}

fn obs_qty(value: f64, system: &str, code: &str) -> Value {
    let mut o = obs(json!({"text": "x"}));
    o["valueQuantity"] = json!({"value": value, "system": system, "code": code});
    o
}

fn obs_for(patient: &str) -> Value {
    let mut o = obs(json!({"text": "x"}));
    o["subject"] = json!({"reference": format!("Patient/{patient}")});
    o
}

fn named(family: &str, given: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family, "given": [given]}]})
}

#[tokio::test]
async fn token_search() {
    for app in TestApp::all().await {
        let b = app.backend;
        put_as(&app, "loinc", obs(json!({"coding": [{"system": "http://loinc.org", "code": "1234-5", "display": "Glucose"}], "text": "Blood glucose"}))).await;
        put_as(&app, "snomed", obs(json!({"coding": [{"system": "http://snomed.info/sct", "code": "1234-5"}]}))).await;
        put_as(&app, "nosys", obs(json!({"coding": [{"code": "1234-5"}]}))).await;
        put_as(
            &app,
            "hb",
            obs(json!({"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}]})),
        )
        .await;

        assert_eq!(id_set(&app, "/fhir/Observation?code=1234-5").await, set(&["loinc", "snomed", "nosys"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?code=http://loinc.org|1234-5").await, set(&["loinc"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?code=%7C1234-5").await, set(&["nosys"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?code=http://loinc.org|").await, set(&["loinc", "hb"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?code:not=1234-5").await, set(&["hb"]), "{b:?}");
        assert_eq!(
            id_set(&app, "/fhir/Observation?code:not=http://loinc.org|1234-5").await,
            set(&["snomed", "nosys", "hb"]),
            "{b:?}"
        );
        assert_eq!(id_set(&app, "/fhir/Observation?code:text=glucose").await, set(&["loinc"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?code:text=HEMO").await, set(&["hb"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?code=1234").await, set(&[]), "{b:?}: tokens match exactly");
        assert_eq!(
            id_set(&app, "/fhir/Observation?code=718-7,http://snomed.info/sct|1234-5").await,
            set(&["hb", "snomed"]),
            "{b:?}"
        );
    }
}

#[tokio::test]
async fn string_search() {
    for app in TestApp::all().await {
        let b = app.backend;
        put_as(&app, "mueller", named("Müller", "Jürgen")).await;
        put_as(&app, "muller", named("MULLER", "Hans")).await;
        put_as(&app, "mullins", named("Mullins", "Kate")).await;
        put_as(&app, "smith", named("Smith", "Anna Marie")).await;

        assert_eq!(id_set(&app, "/fhir/Patient?name=mul").await, set(&["mueller", "muller", "mullins"]), "{b:?}");
        assert_eq!(
            id_set(&app, "/fhir/Patient?family=M%C3%9CLLER").await,
            set(&["mueller", "muller"]),
            "{b:?}: accents and case"
        );
        assert_eq!(id_set(&app, "/fhir/Patient?family=muller").await, set(&["mueller", "muller"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Patient?family:exact=M%C3%BCller").await, set(&["mueller"]), "{b:?}");
        assert_eq!(
            id_set(&app, "/fhir/Patient?family:exact=m%C3%BCller").await,
            set(&[]),
            "{b:?}: :exact is case-sensitive"
        );
        assert_eq!(id_set(&app, "/fhir/Patient?family:exact=Mul").await, set(&[]), "{b:?}: :exact is not a prefix");
        assert_eq!(id_set(&app, "/fhir/Patient?name:contains=LLIN").await, set(&["mullins"]), "{b:?}");
        assert_eq!(
            id_set(&app, "/fhir/Patient?family=ller").await,
            set(&[]),
            "{b:?}: plain string search is a prefix search"
        );
        assert_eq!(id_set(&app, "/fhir/Patient?given=jur").await, set(&["mueller"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Patient?given=anna%20ma").await, set(&["smith"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Patient?name=smith,mullins").await, set(&["smith", "mullins"]), "{b:?}");
    }
}

#[tokio::test]
async fn date_prefixes() {
    for app in TestApp::all().await {
        let b = app.backend;
        put_as(&app, "dec31", obs_on("2019-12-31")).await;
        put_as(&app, "jan15", obs_on("2020-01-15")).await;
        put_as(&app, "feb01", obs_on("2020-02-01T10:00:00Z")).await;
        put_as(&app, "jan", obs_on("2020-01")).await;

        let cases: &[(&str, &[&str])] = &[
            ("2020-01", &["jan15", "jan"]),
            ("eq2020-01", &["jan15", "jan"]),
            ("2020-01-15", &["jan15"]),
            ("gt2020-01-15", &["feb01", "jan"]),
            ("lt2020-01-15", &["dec31", "jan"]),
            ("ge2020-01-15", &["jan15", "feb01", "jan"]),
            ("le2020-01-15", &["dec31", "jan15", "jan"]),
            ("ne2020-01", &["dec31", "feb01"]),
            ("gt2020-02-01T10:00:00Z", &[]),
            ("ge2020-02-01T10:00:00Z", &["feb01"]),
            ("2020", &["jan15", "feb01", "jan"]),
            ("lt2019", &[]),
        ];
        for (v, want) in cases {
            let got = id_set(&app, &format!("/fhir/Observation?date={}", v.replace(':', "%3A"))).await;
            assert_eq!(got, set(want), "{b:?}: date={v}");
        }
        // Two occurrences are ANDed: a range.
        assert_eq!(
            id_set(&app, "/fhir/Observation?date=ge2020-01&date=lt2020-02").await,
            set(&["jan15", "jan"]),
            "{b:?}"
        );
    }
}

#[tokio::test]
async fn quantity_search() {
    for app in TestApp::all().await {
        let b = app.backend;
        const UCUM: &str = "http://unitsofmeasure.org";
        put_as(&app, "q54", obs_qty(5.4, UCUM, "mg")).await;
        put_as(&app, "q55", obs_qty(5.5, UCUM, "mg")).await;
        put_as(&app, "q10g", obs_qty(10.0, UCUM, "g")).await;
        put_as(&app, "q54x", obs_qty(5.4, "http://other.org", "mg")).await;

        let cases: &[(&str, &[&str])] = &[
            ("5.4", &["q54", "q54x"]),
            ("gt5.4", &["q55", "q10g"]),
            ("ge5.4", &["q54", "q55", "q10g", "q54x"]),
            ("lt5.5", &["q54", "q54x"]),
            ("le5.4", &["q54", "q54x"]),
            ("ne5.4", &["q55", "q10g"]),
            ("gt5.4|http://unitsofmeasure.org|mg", &["q55"]),
            ("5.4|http://unitsofmeasure.org|mg", &["q54"]),
            ("5.4||mg", &["q54", "q54x"]),
            ("ge1||g", &["q10g"]),
            ("5", &["q54", "q54x"]),
            ("10", &["q10g"]),
            ("1.0e1", &["q10g"]),
            ("1e1", &["q54", "q55", "q10g", "q54x"]),
        ];
        for (v, want) in cases {
            let got = id_set(&app, &format!("/fhir/Observation?value-quantity={v}")).await;
            assert_eq!(got, set(want), "{b:?}: value-quantity={v}");
        }
        let r = app.get("/fhir/Observation?value-quantity=gtfive").await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
    }
}

#[tokio::test]
async fn reference_search() {
    for app in TestApp::all().await {
        let b = app.backend;
        put_as(&app, "pa", named("A", "a")).await;
        put_as(&app, "pb", named("B", "b")).await;
        put_as(&app, "oa", obs_for("pa")).await;
        put_as(&app, "ob", obs_for("pb")).await;
        let mut og = obs(json!({"text": "group"}));
        og["subject"] = json!({"reference": "Group/pa"});
        put_as(&app, "og", og).await;

        assert_eq!(id_set(&app, "/fhir/Observation?patient=pa").await, set(&["oa"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?patient=Patient/pb").await, set(&["ob"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?subject=Patient/pa").await, set(&["oa"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?subject:Patient=pa").await, set(&["oa"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?subject:Group=pa").await, set(&["og"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?subject=pa").await, set(&["oa", "og"]), "{b:?}");
        assert_eq!(
            id_set(&app, "/fhir/Observation?subject=http://localhost/fhir/Patient/pa").await,
            set(&["oa"]),
            "{b:?}"
        );
        assert_eq!(id_set(&app, "/fhir/Observation?patient=pa,pb").await, set(&["oa", "ob"]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Observation?patient=nobody").await, set(&[]), "{b:?}");
    }
}

#[tokio::test]
async fn uri_id_tag_profile_missing_and_combinations() {
    for app in TestApp::all().await {
        let b = app.backend;
        let mut p1 = named("One", "x");
        p1["meta"] = json!({"tag": [{"system": "http://example.org/tags", "code": "vip"}], "profile": ["http://example.org/StructureDefinition/a"]});
        p1["gender"] = json!("female");
        p1["birthDate"] = json!("1980-05-01");
        put_as(&app, "p1", p1).await;
        let mut p2 = named("Two", "y");
        p2["meta"] = json!({"tag": [{"system": "http://example.org/other", "code": "vip"}], "profile": ["http://example.org/StructureDefinition/b"]});
        p2["gender"] = json!("male");
        put_as(&app, "p2", p2).await;
        let mut p3 = named("Three", "z");
        p3["gender"] = json!("female");
        put_as(&app, "p3", p3).await;
        put_as(
            &app,
            "vs",
            json!({"resourceType": "ValueSet", "status": "active", "url": "http://example.org/ValueSet/colours"}),
        )
        .await;

        let cases: &[(&str, &[&str])] = &[
            ("_id=p1", &["p1"]),
            ("_id=p1,p3", &["p1", "p3"]),
            ("_id=nope", &[]),
            ("_tag=vip", &["p1", "p2"]),
            ("_tag=http://example.org/tags|vip", &["p1"]),
            ("_profile=http://example.org/StructureDefinition/a", &["p1"]),
            ("_profile=http://example.org/StructureDefinition", &[]),
            ("_profile:below=http://example.org/StructureDefinition/", &["p1", "p2"]),
            ("birthdate:missing=true", &["p2", "p3"]),
            ("birthdate:missing=false", &["p1"]),
            ("gender=male,female", &["p1", "p2", "p3"]),
            ("gender=female&name=three", &["p3"]),
            ("gender=female&_tag=vip", &["p1"]),
            ("gender=female&gender=male", &[]),
            ("birthdate=1980", &["p1"]),
        ];
        for (q, want) in cases {
            assert_eq!(id_set(&app, &format!("/fhir/Patient?{q}")).await, set(want), "{b:?}: {q}");
        }
        assert_eq!(id_set(&app, "/fhir/ValueSet?url=http://example.org/ValueSet/colours").await, set(&["vs"]), "{b:?}");
        assert_eq!(
            id_set(&app, "/fhir/ValueSet?url=http://example.org/ValueSet/colour").await,
            set(&[]),
            "{b:?}: uri is exact"
        );
    }
}

#[tokio::test]
async fn last_updated() {
    for app in TestApp::all().await {
        let b = app.backend;
        let first = app.post("/fhir/Patient", named("Early", "e")).await;
        let first_id = first.json["id"].as_str().unwrap().to_string();
        let lu = first.json["meta"]["lastUpdated"].as_str().unwrap().to_string();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let second = app.create(named("Late", "l")).await;

        assert_eq!(id_set(&app, &format!("/fhir/Patient?_lastUpdated=gt{lu}")).await, set(&[&second]), "{b:?}");
        assert_eq!(id_set(&app, &format!("/fhir/Patient?_lastUpdated=le{lu}")).await, set(&[&first_id]), "{b:?}");
        assert_eq!(id_set(&app, &format!("/fhir/Patient?_lastUpdated={lu}")).await, set(&[&first_id]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Patient?_lastUpdated=ge2000-01-01").await, set(&[&first_id, &second]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Patient?_lastUpdated=lt2000-01-01").await, set(&[]), "{b:?}");
        // Sorting by it, newest first.
        assert_eq!(
            ids(&app, "/fhir/Patient?_sort=-_lastUpdated").await,
            vec![second.clone(), first_id.clone()],
            "{b:?}"
        );
    }
}

#[tokio::test]
async fn paging_visits_every_resource_once() {
    for app in TestApp::all().await {
        let b = app.backend;
        let created = bulk(&app, (0..25).map(|i| named(&format!("Page{i:02}"), "p")).collect()).await;
        let pages = all_pages(&app, "/fhir/Patient?_count=10").await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5], "{b:?}");
        let seen: Vec<String> = pages.concat();
        assert_eq!(seen, created, "{b:?}: every id once, in insertion order");

        // The first page's links: self and next, absolute, keeping the parameters.
        let r = app.get("/fhir/Patient?_count=10&name=page").await;
        let links = r.json["link"].as_array().expect("links");
        assert_eq!(links[0]["relation"], "self", "{b:?}");
        assert_eq!(links[0]["url"], format!("{BASE}/Patient?_count=10&name=page"), "{b:?}");
        let next = r.next_link().expect("next");
        assert!(next.starts_with(&format!("{BASE}/Patient?_count=10&name=page&_cursor=")), "{b:?}: {next}");
        // With paging and no _total, the total is not claimed.
        assert!(r.json.get("total").is_none(), "{b:?}: {}", r.json["total"]);
        // _total=accurate gives it on every page.
        let r = app.get("/fhir/Patient?_count=10&_total=accurate").await;
        assert_eq!(r.json["total"], 25, "{b:?}");
        assert_eq!(r.ids().len(), 10, "{b:?}");
        let n = r.next_link().unwrap();
        let r2 = app.get(&n[BASE.len() - 5..]).await;
        assert_eq!(r2.json["total"], 25, "{b:?}");
    }
}

#[tokio::test]
async fn paging_is_stable_under_inserts() {
    for app in TestApp::all().await {
        let b = app.backend;
        let old = bulk(&app, (0..15).map(|i| named(&format!("Old{i:02}"), "o")).collect()).await;
        let first = app.get("/fhir/Patient?_count=10").await;
        let mut seen = first.ids();
        assert_eq!(seen, old[..10].to_vec(), "{b:?}");
        let new = bulk(&app, (0..5).map(|i| named(&format!("New{i:02}"), "n")).collect()).await;
        let next = first.next_link().expect("next");
        let rest = all_pages(&app, &next[BASE.len() - 5..]).await;
        seen.extend(rest.concat());
        let mut want = old.clone();
        want.extend(new);
        assert_eq!(seen, want, "{b:?}: paging after inserts: nothing repeated or missing, new ones last");

        // Sorted paging: inserting rows that sort before the cursor does not shift later pages.
        let first = app.get("/fhir/Patient?_sort=family&_count=7").await;
        let mut sorted_seen = first.ids();
        app.create(named("Aaaa", "early")).await;
        let rest = all_pages(&app, &first.next_link().expect("next")[BASE.len() - 5..]).await;
        sorted_seen.extend(rest.concat());
        let unique: BTreeSet<_> = sorted_seen.iter().cloned().collect();
        assert_eq!(unique.len(), sorted_seen.len(), "{b:?}: repeated ids");
        assert_eq!(sorted_seen.len(), 20, "{b:?}: every pre-existing resource once");
    }
}

#[tokio::test]
async fn paging_with_identical_sort_values() {
    for app in TestApp::all().await {
        let b = app.backend;
        // One transaction: the versions share (or nearly share) lastUpdated; all share a family.
        let created = bulk(&app, (0..12).map(|_| named("Same", "s")).collect()).await;
        for q in ["_sort=_lastUpdated", "_sort=-_lastUpdated", "_sort=family", "_sort=-family", "_sort=family,given"] {
            let pages = all_pages(&app, &format!("/fhir/Patient?{q}&_count=5")).await;
            assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![5, 5, 2], "{b:?}: {q}");
            let seen = pages.concat();
            let unique: BTreeSet<_> = seen.iter().cloned().collect();
            assert_eq!(unique, created.iter().cloned().collect::<BTreeSet<_>>(), "{b:?}: {q}");
            assert_eq!(seen.len(), 12, "{b:?}: {q}: repeats");
        }
    }
}

#[tokio::test]
async fn sorting_is_identical_on_every_backend() {
    let mut orders: Vec<(Backend, Vec<Vec<String>>)> = Vec::new();
    for app in TestApp::all().await {
        let b = app.backend;
        let people = [
            ("s1", "baker", "1990-01-01"),
            ("s2", "Adams", "1985-06-01"),
            ("s3", "Émile", "1970-03-03"),
            ("s4", "adams", "1999-12-31"),
            ("s5", "Zed", ""),
            ("s6", "Baker", "1990-01-01"),
            ("s7", "", "2001-01-01"),
        ];
        for (id, family, birth) in people {
            let mut p = json!({"resourceType": "Patient"});
            if !family.is_empty() {
                p["name"] = json!([{"family": family}]);
            }
            if !birth.is_empty() {
                p["birthDate"] = json!(birth);
            }
            put_as(&app, id, p).await;
        }
        for (id, date) in
            [("d1", "2021-03-01"), ("d2", "2020-01-01T12:00:00Z"), ("d3", "2022"), ("d4", "2020-01-01T08:00:00Z")]
        {
            put_as(&app, id, obs_on(date)).await;
        }
        put_as(&app, "d5", obs(json!({"text": "undated"}))).await;

        let mut got = Vec::new();
        for q in [
            "/fhir/Patient?_sort=family",
            "/fhir/Patient?_sort=-family",
            "/fhir/Patient?_sort=family,-birthdate",
            "/fhir/Patient?_sort=-birthdate,family",
            "/fhir/Observation?_sort=-date",
            "/fhir/Observation?_sort=date",
        ] {
            let all = all_pages(&app, &format!("{q}&_count=3")).await.concat();
            assert_eq!(all, ids(&app, q).await, "{b:?}: {q}: paged order differs from one-page order");
            got.push(all);
        }
        let want: Vec<Vec<&str>> = vec![
            vec!["s2", "s4", "s1", "s6", "s3", "s5", "s7"],
            vec!["s5", "s3", "s1", "s6", "s2", "s4", "s7"],
            vec!["s4", "s2", "s1", "s6", "s3", "s5", "s7"],
            vec!["s7", "s4", "s1", "s6", "s2", "s3", "s5"],
            vec!["d3", "d1", "d2", "d4", "d5"],
            vec!["d4", "d2", "d1", "d3", "d5"],
        ];
        assert_eq!(got, want, "{b:?}");
        orders.push((b, got));
    }
    for w in orders.windows(2) {
        assert_eq!(w[0].1, w[1].1, "{:?} and {:?} sort differently", w[0].0, w[1].0);
    }
}

#[tokio::test]
async fn include_and_revinclude() {
    for app in TestApp::all().await {
        let b = app.backend;
        put_as(&app, "pa", named("Included", "i")).await;
        put_as(&app, "pb", named("Other", "o")).await;
        put_as(&app, "lonely", named("Lonely", "l")).await;
        put_as(&app, "o1", obs_for("pa")).await;
        put_as(&app, "o2", obs_for("pa")).await;
        put_as(&app, "o3", obs_for("pb")).await;

        let r = app.get("/fhir/Observation?patient=pa&_include=Observation:subject").await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.ids().into_iter().collect::<BTreeSet<_>>(), set(&["o1", "o2"]), "{b:?}");
        let included: Vec<(String, String)> = r.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .map(|e| {
                (
                    e["resource"]["resourceType"].as_str().unwrap().to_string(),
                    e["resource"]["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(included, vec![("Patient".to_string(), "pa".to_string())], "{b:?}: included once");
        assert_eq!(r.json["total"], 2, "{b:?}: includes are not counted");
        let full_urls: Vec<&str> =
            r.json["entry"].as_array().unwrap().iter().filter_map(|e| e["fullUrl"].as_str()).collect();
        assert!(full_urls.contains(&"http://localhost/fhir/Patient/pa"), "{b:?}: {full_urls:?}");

        let r = app.get("/fhir/Patient?_id=pa,lonely&_revinclude=Observation:subject").await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.ids().into_iter().collect::<BTreeSet<_>>(), set(&["pa", "lonely"]), "{b:?}");
        let included: BTreeSet<String> = r.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .map(|e| {
                format!("{}/{}", e["resource"]["resourceType"].as_str().unwrap(), e["resource"]["id"].as_str().unwrap())
            })
            .collect();
        assert_eq!(included, set(&["Observation/o1", "Observation/o2"]), "{b:?}");

        // _include with a target type that does not match includes nothing.
        let r = app.get("/fhir/Observation?patient=pa&_include=Observation:subject:Group").await;
        assert_eq!(
            r.json["entry"].as_array().unwrap().iter().filter(|e| e["search"]["mode"] == "include").count(),
            0,
            "{b:?}"
        );
        // A malformed include is a 400.
        assert_outcome(&app.get("/fhir/Observation?_include=Observation:status").await, StatusCode::BAD_REQUEST, b);
    }
}

#[tokio::test]
async fn summary_total_and_elements() {
    for app in TestApp::all().await {
        let b = app.backend;
        for i in 0..3 {
            let mut p = named(&format!("Sum{i}"), "s");
            p["gender"] = json!("other");
            p["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Sum</div>"});
            app.create(p).await;
        }
        let r = app.get("/fhir/Patient?_summary=count").await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.json["total"], 3, "{b:?}");
        assert!(r.json.get("entry").is_none(), "{b:?}: _summary=count has no entries: {}", r.text);

        let r = app.get("/fhir/Patient?_total=accurate&_count=1").await;
        assert_eq!(r.json["total"], 3, "{b:?}");
        assert_eq!(r.ids().len(), 1, "{b:?}");

        let r = app.get("/fhir/Patient?_elements=gender").await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        let entries = r.entries();
        assert_eq!(entries.len(), 3, "{b:?}");
        for e in &entries {
            let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, ["gender", "id", "meta", "resourceType"].into_iter().collect(), "{b:?}: {e}");
            let tags = e["meta"]["tag"].as_array().expect("tags");
            assert!(tags.iter().any(|t| t["code"] == "SUBSETTED"), "{b:?}: {e}");
        }

        let r = app.get("/fhir/Patient?_summary=true").await;
        for e in r.entries() {
            assert!(e.get("text").is_none(), "{b:?}: {e}");
            assert_eq!(e["gender"], "other", "{b:?}");
            assert!(e["meta"]["tag"].as_array().unwrap().iter().any(|t| t["code"] == "SUBSETTED"), "{b:?}");
        }
        // The stored resource is untouched by the shaping.
        let id = &r.entries()[0]["id"];
        let full = app.get(&format!("/fhir/Patient/{}", id.as_str().unwrap())).await;
        assert!(full.json.get("text").is_some(), "{b:?}");
        assert!(full.json["meta"].get("tag").is_none(), "{b:?}: {}", full.text);
    }
}

#[tokio::test]
async fn post_search_equals_get() {
    for app in TestApp::all().await {
        let b = app.backend;
        for (f, g) in [("Post", "female"), ("Postman", "male"), ("Other", "female")] {
            let mut p = named(f, "x");
            p["gender"] = json!(g);
            app.create(p).await;
        }
        let get = app.get("/fhir/Patient?name=post&gender=female,male&_total=accurate").await;
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let post =
            send(&app, Method::POST, "/fhir/Patient/_search", &form, b"name=post&gender=female%2Cmale&_total=accurate")
                .await;
        assert_eq!(post.status, StatusCode::OK, "{b:?}: {}", post.text);
        assert_eq!(post.ids(), get.ids(), "{b:?}");
        assert_eq!(post.ids().len(), 2, "{b:?}");
        assert_eq!(post.json["total"], get.json["total"], "{b:?}");
        // Parameters in the URL and the body combine.
        let post = send(&app, Method::POST, "/fhir/Patient/_search?gender=male", &form, b"name=post").await;
        assert_eq!(post.ids().len(), 1, "{b:?}: {}", post.text);
        // A body that is not a form is refused.
        let r = send(&app, Method::POST, "/fhir/Patient/_search", &[("content-type", "application/fhir+json")], b"{}")
            .await;
        assert_outcome(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, b);
    }
}

#[tokio::test]
async fn unknown_parameters_lenient_and_strict() {
    for app in TestApp::all().await {
        let b = app.backend;
        let id = app.create(named("Known", "k")).await;
        app.create(named("Else", "e")).await;

        let r = app.get("/fhir/Patient?name=known&favourite-colour=blue").await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.ids(), vec![id.clone()], "{b:?}");
        let outcome: Vec<&Value> =
            r.json["entry"].as_array().unwrap().iter().filter(|e| e["search"]["mode"] == "outcome").collect();
        assert_eq!(outcome.len(), 1, "{b:?}: {}", r.text);
        let o = &outcome[0]["resource"];
        assert_eq!(o["resourceType"], "OperationOutcome", "{b:?}");
        assert_eq!(o["issue"][0]["severity"], "warning", "{b:?}");
        assert!(o["issue"][0]["diagnostics"].as_str().unwrap().contains("favourite-colour"), "{b:?}: {o}");
        // The self link does not pretend the parameter was used? It echoes the request.
        let lenient = send(
            &app,
            Method::GET,
            "/fhir/Patient?name=known&favourite-colour=blue",
            &[("prefer", "handling=lenient")],
            b"",
        )
        .await;
        assert_eq!(lenient.ids(), vec![id.clone()], "{b:?}");

        let r = send(
            &app,
            Method::GET,
            "/fhir/Patient?name=known&favourite-colour=blue",
            &[("prefer", "handling=strict")],
            b"",
        )
        .await;
        assert_outcome(&r, StatusCode::BAD_REQUEST, b);
        assert!(r.text.contains("favourite-colour"), "{b:?}: {}", r.text);
        // Strict with only known parameters is fine.
        let r = send(&app, Method::GET, "/fhir/Patient?name=known", &[("prefer", "handling=strict")], b"").await;
        assert_eq!(r.ids(), vec![id], "{b:?}");
        // An unsupported modifier on a known parameter is an error either way.
        assert_outcome(&app.get("/fhir/Patient?name:fuzzy=known").await, StatusCode::BAD_REQUEST, b);
    }
}

#[tokio::test]
async fn huge_count_is_capped() {
    for app in TestApp::all().await {
        let b = app.backend;
        bulk(&app, (0..1005).map(|i| json!({"resourceType": "Basic", "code": {"text": format!("b{i}")}})).collect())
            .await;
        let r = app.get("/fhir/Basic?_count=100000").await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", &r.text[..r.text.len().min(500)]);
        assert_eq!(r.ids().len(), 1000, "{b:?}");
        assert!(r.next_link().is_some(), "{b:?}: more remain");
        let outcome = r.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["search"]["mode"] == "outcome")
            .expect("outcome entry");
        let issue = &outcome["resource"]["issue"][0];
        assert_eq!(issue["severity"], "information", "{b:?}");
        assert!(issue["diagnostics"].as_str().unwrap().contains("1000"), "{b:?}: {issue}");
        let rest = all_pages(&app, &r.next_link().unwrap()[BASE.len() - 5..]).await.concat();
        assert_eq!(rest.len(), 5, "{b:?}");
        // A negative or non-numeric count is a 400.
        assert_outcome(&app.get("/fhir/Basic?_count=-1").await, StatusCode::BAD_REQUEST, b);
        assert_outcome(&app.get("/fhir/Basic?_count=ten").await, StatusCode::BAD_REQUEST, b);
    }
}

#[tokio::test]
async fn sql_metacharacters_are_data() {
    for app in TestApp::all().await {
        let b = app.backend;
        let pct = app.create(named("100%", "pct")).await;
        let under = app.create(named("a_b", "under")).await;
        app.create(named("aXb", "x")).await;
        app.create(named("O'Brien", "q")).await;

        let hostile = [
            "name=%27%3B%20DROP%20TABLE%20resources%3B--",
            "family:exact=%27%20OR%20%271%27%3D%271",
            "_id=%27%20OR%201%3D1--",
            "identifier=%27%3B%20DELETE%20FROM%20resources%3B--%7Cx",
            "name:contains=%5C",
            "_tag=%25",
            "name=%25",
            "name=%5F",
        ];
        for q in hostile {
            let r = app.get(&format!("/fhir/Patient?{q}")).await;
            assert_eq!(r.status, StatusCode::OK, "{b:?}: {q}: {}", r.text);
            assert!(r.ids().is_empty(), "{b:?}: {q} matched {:?}", r.ids());
        }
        assert_eq!(id_set(&app, "/fhir/Patient?name=100%25").await, set(&[&pct]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Patient?name:contains=0%25").await, set(&[&pct]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Patient?name:contains=%25").await, set(&[&pct]), "{b:?}: % is not a wildcard");
        assert_eq!(id_set(&app, "/fhir/Patient?name:contains=_").await, set(&[&under]), "{b:?}: _ is not a wildcard");
        assert_eq!(id_set(&app, "/fhir/Patient?name:contains=a_b").await, set(&[&under]), "{b:?}: _ is not a wildcard");
        assert_eq!(id_set(&app, "/fhir/Patient?name=a_").await, set(&[&under]), "{b:?}");
        assert_eq!(id_set(&app, "/fhir/Patient?family=o%27b").await.len(), 1, "{b:?}");
        // The table is still there and whole.
        assert_eq!(count(&app, "/fhir/Patient").await, 4, "{b:?}");
    }
}

#[tokio::test]
async fn patient_everything() {
    for app in TestApp::all().await {
        let b = app.backend;
        put_as(&app, "pa", named("Every", "thing")).await;
        put_as(&app, "pb", named("Some", "one")).await;
        put_as(&app, "oa1", obs_for("pa")).await;
        put_as(&app, "oa2", obs_for("pa")).await;
        put_as(&app, "ob1", obs_for("pb")).await;
        put_as(
            &app,
            "ca",
            json!({"resourceType": "Condition", "subject": {"reference": "Patient/pa"}, "code": {"text": "c"}}),
        )
        .await;

        let r = app.get("/fhir/Patient/pa/$everything").await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        let got: BTreeSet<String> = r
            .entries()
            .iter()
            .map(|e| format!("{}/{}", e["resourceType"].as_str().unwrap(), e["id"].as_str().unwrap()))
            .collect();
        assert_eq!(got, set(&["Patient/pa", "Observation/oa1", "Observation/oa2", "Condition/ca"]), "{b:?}");

        let r = app.get("/fhir/Patient/pa/$everything?_type=Observation").await;
        let got: BTreeSet<String> = r.entries().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
        assert_eq!(got, set(&["oa1", "oa2"]), "{b:?}");
        assert!(r.entries().iter().all(|e| e["resourceType"] == "Observation"), "{b:?}");

        let pages = all_pages(&app, "/fhir/Patient/pa/$everything?_count=1").await;
        assert_eq!(pages.len(), 4, "{b:?}: {pages:?}");
        let flat: BTreeSet<String> = pages.concat().into_iter().collect();
        assert_eq!(flat, set(&["pa", "oa1", "oa2", "ca"]), "{b:?}");

        assert_outcome(&app.get("/fhir/Patient/nobody/$everything").await, StatusCode::NOT_FOUND, b);
        assert_outcome(&app.get("/fhir/Patient/pa/$everything?name=x").await, StatusCode::BAD_REQUEST, b);
        assert_outcome(&app.get("/fhir/Observation/oa1/$everything").await, StatusCode::NOT_FOUND, b);
    }
}

#[tokio::test]
async fn sorting_by_quantity_token_and_id_pages_identically() {
    let mut orders: Vec<(Backend, Vec<Vec<String>>)> = Vec::new();
    for app in TestApp::all().await {
        let b = app.backend;
        for (id, code, qty) in [
            ("v1", "b", Some(2.5)),
            ("v2", "a", Some(10.0)),
            ("v3", "c", Some(7.25)),
            ("v4", "a", Some(10.0)),
            ("v5", "a", None),
        ] {
            let mut o = obs(json!({"coding": [{"system": "http://example.org/codes", "code": code}]}));
            if let Some(q) = qty {
                o["valueQuantity"] = json!({"value": q, "system": "http://unitsofmeasure.org", "code": "mg"});
            }
            put_as(&app, id, o).await;
        }
        let cases: &[(&str, &[&str])] = &[
            ("_sort=value-quantity", &["v1", "v3", "v2", "v4", "v5"]),
            ("_sort=-value-quantity", &["v2", "v4", "v3", "v1", "v5"]),
            ("_sort=code,-value-quantity", &["v2", "v4", "v5", "v1", "v3"]),
            ("_sort=-code,value-quantity", &["v3", "v1", "v2", "v4", "v5"]),
            ("_sort=-_id", &["v5", "v4", "v3", "v2", "v1"]),
            ("_sort=_id", &["v1", "v2", "v3", "v4", "v5"]),
        ];
        let mut got = Vec::new();
        for (q, want) in cases {
            let unpaged = ids(&app, &format!("/fhir/Observation?{q}")).await;
            assert_eq!(unpaged, want.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{b:?}: {q}");
            for n in [1, 2] {
                let paged = all_pages(&app, &format!("/fhir/Observation?{q}&_count={n}")).await.concat();
                assert_eq!(paged, unpaged, "{b:?}: {q} with _count={n}");
            }
            got.push(unpaged);
        }
        orders.push((b, got));
    }
    for w in orders.windows(2) {
        assert_eq!(w[0].1, w[1].1, "{:?} and {:?} sort differently", w[0].0, w[1].0);
    }
}
