//! Consent-based access end to end: caregivers and clinicians signed in with real access
//! tokens, their patient's consents, CareTeams and RelatedPersons loaded per request, the
//! consent filter applied in SQL (reads, searches with `_total`, `_include` and paging),
//! and the caregiver redaction obligation in bodies — on every backend.

use crate::common::oauth::{Browser, PASSWORD};
use crate::common::{Resp, TestApp};
use axum::http::{Method, StatusCode};
use portico::identity::CLI_CLIENT;
use portico::identity::users::NewUser;
use portico_store::identity::{PatientLink, UserRow};
use serde_json::{Value, json};

const BASE: &str = "http://localhost";
const CATEGORY: &str = "urn:portico:category";

/// `YYYY-01-01` for someone `age` years old today (every test runs after New Year's Day).
fn born(age: i32) -> String {
    format!("{}-01-01", time::OffsetDateTime::now_utc().year() - age)
}

async fn put(app: &TestApp, body: Value) {
    let rt = body["resourceType"].as_str().unwrap().to_string();
    let id = body["id"].as_str().unwrap().to_string();
    let r = app.put(&format!("/fhir/{rt}/{id}"), body).await;
    assert!(r.status.is_success(), "{:?} put {rt}/{id}: {}", app.backend, r.text);
}

fn lab(id: &str, patient: &str, day: u32, extra: Value) -> Value {
    let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"text": format!("test {id}")}, "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": format!("2024-03-{day:02}")});
    if let (Value::Object(o), Value::Object(extra)) = (&mut o, extra) {
        o.extend(extra);
    }
    o
}

fn role() -> Value {
    json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PRN"}]}])
}

/// A patient-privacy Consent with this root provision.
fn consent(id: &str, patient: &str, status: &str, given: &str, provision: Value) -> Value {
    json!({"resourceType": "Consent", "id": id, "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")}, "dateTime": given, "provision": provision})
}

/// The caregiver's consent: RelatedPerson `rp1` may see labs and medications.
fn caregiver_consent(status: &str, given: &str) -> Value {
    consent(
        "share-rp1",
        "kid",
        status,
        given,
        json!({"type": "permit",
            "actor": [{"role": role()[0], "reference": {"reference": "RelatedPerson/rp1"}}],
            "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}],
            "class": [{"system": CATEGORY, "code": "labs"}, {"system": CATEGORY, "code": "medications"}]}),
    )
}

/// Patient `kid` (15), their mother's RelatedPerson `rp1`, practitioners `d1` (in the
/// CareTeam) and `d2` (not), and a chart: labs (one with a note, one reproductive-health),
/// medications, a condition, a lab report.
async fn chart(app: &TestApp) {
    put(app, json!({"resourceType": "Patient", "id": "kid", "birthDate": born(15)})).await;
    put(app, json!({"resourceType": "RelatedPerson", "id": "rp1", "patient": {"reference": "Patient/kid"}})).await;
    for d in ["d1", "d2"] {
        put(app, json!({"resourceType": "Practitioner", "id": d})).await;
    }
    put(
        app,
        json!({"resourceType": "CareTeam", "id": "team", "status": "active", "subject": {"reference": "Patient/kid"},
            "participant": [{"member": {"reference": "Practitioner/d1"}}]}),
    )
    .await;
    for i in 1..=5 {
        put(app, lab(&format!("lab{i}"), "kid", i, json!({}))).await;
    }
    put(app, lab("noted", "kid", 6, json!({"note": [{"text": "Mum seemed worried"}]}))).await;
    put(
        app,
        lab(
            "pregnancy",
            "kid",
            7,
            json!({"code": {"coding": [{"system": "http://snomed.info/sct", "code": "252160004"}]}}),
        ),
    )
    .await;
    put(
        app,
        json!({"resourceType": "Condition", "id": "cond", "subject": {"reference": "Patient/kid"},
            "code": {"text": "asthma"}}),
    )
    .await;
    put(
        app,
        json!({"resourceType": "Encounter", "id": "visit", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": "Patient/kid"}}),
    )
    .await;
    for (id, visit) in [("med1", true), ("med2", false)] {
        let mut m = json!({"resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": "salbutamol"}, "subject": {"reference": "Patient/kid"}});
        if visit {
            m["encounter"] = json!({"reference": "Encounter/visit"});
        }
        put(app, m).await;
    }
    put(
        app,
        json!({"resourceType": "DiagnosticReport", "id": "report", "status": "final", "code": {"text": "panel"},
            "subject": {"reference": "Patient/kid"}, "effectiveDateTime": "2024-03-08",
            "result": [{"reference": "Observation/noted"}, {"reference": "Observation/lab1"}]}),
    )
    .await;
    // Someone else's lab: never in kid's results.
    put(app, json!({"resourceType": "Patient", "id": "other", "birthDate": born(40)})).await;
    put(app, lab("other-lab", "other", 1, json!({}))).await;
}

async fn user(app: &TestApp, name: &str, role: &str, fhir_user: Option<&str>, links: Vec<PatientLink>) -> UserRow {
    app.state
        .identity
        .create_user(NewUser {
            username: name.into(),
            password: PASSWORD.into(),
            role: role.into(),
            display_name: name.into(),
            fhir_user: fhir_user.map(str::to_string),
            links,
            totp_secret: None,
        })
        .await
        .expect("create user")
}

fn link(patient: &str, via: Option<&str>) -> PatientLink {
    PatientLink { patient: patient.into(), via: via.map(str::to_string), name: None }
}

/// An access token of `u` acting for `patient` (what `portico token issue` makes).
async fn token(app: &TestApp, u: &UserRow, patient: &str) -> String {
    let (resp, _) = app
        .state
        .identity
        .issue_operator_token(Some(u), Some(patient.into()), CLI_CLIENT, "patient/*.rs", &format!("{BASE}/fhir"))
        .await
        .expect("token");
    resp.access_token
}

async fn get_as(app: &TestApp, tok: &str, uri: &str) -> Resp {
    let uri = uri.strip_prefix(BASE).unwrap_or(uri);
    app.raw(Method::GET, uri, &[("authorization", &format!("Bearer {tok}"))], Vec::new()).await
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn included(r: &Resp) -> Vec<String> {
    let mut out: Vec<String> = r.json["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| {
            format!("{}/{}", e["resource"]["resourceType"].as_str().unwrap(), e["resource"]["id"].as_str().unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Every match of a search, following next links; the pages' sizes.
async fn all_pages(app: &TestApp, tok: &str, uri: &str) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut next = Some(uri.to_string());
    while let Some(u) = next {
        let r = get_as(app, tok, &u).await;
        assert_eq!(r.status, StatusCode::OK, "{u}: {}", r.text);
        sizes.push(r.ids().len());
        ids.extend(r.ids());
        next = r.next_link();
    }
    (sorted(ids), sizes)
}

fn redacted(body: &Value) -> bool {
    body["meta"]["security"].as_array().is_some_and(|l| l.iter().any(|c| c["code"] == "REDACTED"))
}

#[tokio::test]
async fn a_caregiver_sees_exactly_the_shared_categories_redacted() {
    for app in TestApp::all().await {
        let b = app.backend;
        chart(&app).await;
        // An adult patient's consent would lapse at majority; kid is 15, given last year.
        put(&app, caregiver_consent("active", "2024-01-01")).await;
        let mum =
            user(&app, "mum", "caregiver", Some("RelatedPerson/rp1"), vec![link("kid", Some("RelatedPerson/rp1"))])
                .await;
        let tok = token(&app, &mum, "kid").await;

        // Reads: labs and medications; not the condition, not the reproductive-health lab
        // (adolescent confidentiality), not another patient's — all 404 like absent records.
        for id in ["Observation/lab1", "Observation/noted", "MedicationRequest/med1", "Patient/kid"] {
            let r = get_as(&app, &tok, &format!("/fhir/{id}")).await;
            assert_eq!(r.status, StatusCode::OK, "{b:?} {id}: {}", r.text);
        }
        let absent = get_as(&app, &tok, "/fhir/Observation/no-such").await;
        for id in ["Condition/cond", "Observation/pregnancy", "Observation/other-lab", "CareTeam/team"] {
            let r = get_as(&app, &tok, &format!("/fhir/{id}")).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{b:?} {id}: {}", r.text);
            if id.starts_with("Observation") {
                assert_eq!(r.json, absent.json, "{b:?} {id}: hidden looks like absent");
            }
        }

        // The redaction obligation: the note is gone and the resource says so, in a read,
        // a vread, a search, an _include of another type and $everything alike.
        let read = get_as(&app, &tok, "/fhir/Observation/noted").await.json;
        assert!(read.get("note").is_none() && redacted(&read), "{b:?}: {read}");
        let vread = get_as(&app, &tok, "/fhir/Observation/noted/_history/1").await.json;
        assert!(vread.get("note").is_none() && redacted(&vread), "{b:?}: {vread}");
        let op = app.get("/fhir/Observation/noted").await.json;
        assert!(op.get("note").is_some() && !redacted(&op), "the operator sees the stored record");
        let lab1 = get_as(&app, &tok, "/fhir/Observation/lab1").await.json;
        assert!(!redacted(&lab1), "nothing to remove, nothing marked");

        // Search: exactly the shared labs, with an accurate total, across pages.
        let labs: Vec<String> =
            ["lab1", "lab2", "lab3", "lab4", "lab5", "noted"].iter().map(|s| s.to_string()).collect();
        let r = get_as(&app, &tok, "/fhir/Observation?_total=accurate&_count=4").await;
        assert_eq!(r.status, StatusCode::OK, "{b:?}: {}", r.text);
        assert_eq!(r.json["total"], 6, "{b:?}: {}", r.text);
        let (ids, sizes) = all_pages(&app, &tok, "/fhir/Observation?_total=accurate&_count=4").await;
        assert_eq!(ids, labs, "{b:?}");
        assert_eq!(sizes, vec![4, 2], "{b:?}: page 2 holds the rest and nothing else");
        for e in r.entries() {
            if e["id"] == "noted" {
                assert!(e.get("note").is_none() && redacted(&e), "{b:?}: {e}");
            }
        }
        let none = get_as(&app, &tok, "/fhir/Condition?_total=accurate").await;
        assert_eq!((none.json["total"].as_i64(), none.ids().len()), (Some(0), 0), "{b:?}: {}", none.text);
        let meds = get_as(&app, &tok, "/fhir/MedicationRequest?_total=accurate").await;
        assert_eq!(sorted(meds.ids()), ["med1", "med2"], "{b:?}");
        assert_eq!(meds.json["total"], 2);

        // _include: a shared lab report pulls in its results (redacted), a medication does not
        // pull in the unshared encounter it names. Through the portal (no app scopes: an app's
        // scopes confine a type search's includes to that type).
        let mut browser = Browser::default();
        let signed_in = app.portal_sign_in(&mut browser, "mum", PASSWORD).await;
        assert_eq!(signed_in.status, StatusCode::OK, "{b:?}: {}", signed_in.text);
        assert!(browser.session().is_some(), "{b:?}: a session cookie");
        let r = browser.get(&app, "/fhir/DiagnosticReport?_include=DiagnosticReport:result").await;
        assert_eq!(r.ids(), ["report"], "{b:?}: {}", r.text);
        assert_eq!(included(&r), ["Observation/lab1", "Observation/noted"], "{b:?}");
        let noted = r.entries().into_iter().find(|e| e["id"] == "noted").unwrap();
        assert!(noted.get("note").is_none() && redacted(&noted), "{b:?}: an included Observation is redacted too");
        let r = browser.get(&app, "/fhir/MedicationRequest?_include=MedicationRequest:encounter").await;
        assert_eq!(sorted(r.ids()), ["med1", "med2"], "{b:?}: {}", r.text);
        assert!(included(&r).is_empty(), "{b:?}: {}", r.text);
        let op = app.get("/fhir/MedicationRequest?_include=MedicationRequest:encounter").await;
        assert_eq!(included(&op), ["Encounter/visit"], "the operator's search does include it");
        let r = browser.get(&app, "/fhir/Patient?_revinclude=Observation:subject&_id=kid").await;
        assert_eq!(r.ids(), ["kid"], "{b:?}: {}", r.text);
        assert_eq!(included(&r).len(), 6, "{b:?}: only the shared labs come back with the patient: {:?}", included(&r));

        // $everything and history: the same confinement, the same redaction.
        let (ids, _) = all_pages(&app, &tok, "/fhir/Patient/kid/$everything?_count=3").await;
        let mut expected = labs.clone();
        expected.extend(["kid", "med1", "med2", "report"].map(String::from));
        assert_eq!(ids, sorted(expected), "{b:?}");
        let h = get_as(&app, &tok, "/fhir/Observation/_history").await;
        assert_eq!(sorted(h.entries().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()), labs, "{b:?}");
        let h = get_as(&app, &tok, "/fhir/Observation/noted/_history").await;
        let e = &h.entries()[0];
        assert!(e.get("note").is_none() && redacted(e), "{b:?}: {}", h.text);
        assert_eq!(get_as(&app, &tok, "/fhir/Condition/cond/_history").await.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn adolescent_confidentiality_and_the_end_of_a_parents_access_at_majority() {
    for app in TestApp::all().await {
        let b = app.backend;
        chart(&app).await;
        // Given when kid was 5.
        put(&app, caregiver_consent("active", &born(10))).await;
        let mum = user(&app, "mum", "caregiver", None, vec![link("kid", Some("RelatedPerson/rp1"))]).await;
        let tok = token(&app, &mum, "kid").await;
        assert_eq!(get_as(&app, &tok, "/fhir/Observation/lab1").await.status, StatusCode::OK, "{b:?}");
        assert_eq!(get_as(&app, &tok, "/fhir/Observation/pregnancy").await.status, StatusCode::NOT_FOUND, "{b:?}");
        let r = get_as(&app, &tok, "/fhir/Observation?code=http://snomed.info/sct|252160004&_total=accurate").await;
        assert_eq!((r.json["total"].as_i64(), r.ids().len()), (Some(0), 0), "{b:?}: {}", r.text);
        assert!(!get_as(&app, &tok, "/fhir/Observation").await.ids().contains(&"pregnancy".to_string()));

        // A linked RelatedPerson the user does not really hold grants nothing: the store
        // checks the stored RelatedPerson names this patient.
        put(&app, json!({"resourceType": "RelatedPerson", "id": "rp-x", "patient": {"reference": "Patient/other"}}))
            .await;
        let liar = user(&app, "liar", "caregiver", None, vec![link("kid", Some("RelatedPerson/rp-x"))]).await;
        let liar_tok = token(&app, &liar, "kid").await;
        assert_eq!(get_as(&app, &liar_tok, "/fhir/Observation/lab1").await.status, StatusCode::NOT_FOUND, "{b:?}");

        // Kid turns 19: the consent given in childhood stops counting, on the next request.
        put(&app, json!({"resourceType": "Patient", "id": "kid", "birthDate": born(19)})).await;
        assert_eq!(get_as(&app, &tok, "/fhir/Observation/lab1").await.status, StatusCode::NOT_FOUND, "{b:?}");
        let r = get_as(&app, &tok, "/fhir/Observation?_total=accurate").await;
        assert_eq!((r.json["total"].as_i64(), r.ids().len()), (Some(0), 0), "{b:?}: {}", r.text);
        assert!(get_as(&app, &tok, "/fhir/MedicationRequest").await.ids().is_empty(), "{b:?}");
    }
}

#[tokio::test]
async fn clinicians_need_a_care_relationship_and_the_patients_denies_bind_them() {
    for app in TestApp::all().await {
        let b = app.backend;
        chart(&app).await;
        let links = vec![link("kid", None), link("ghost", None)];
        let d1 = user(&app, "dr-one", "clinician", Some("Practitioner/d1"), links.clone()).await;
        let d2 = user(&app, "dr-two", "clinician", Some("Practitioner/d2"), links).await;
        let t1 = token(&app, &d1, "kid").await;
        let t2 = token(&app, &d2, "kid").await;
        let t2_ghost = token(&app, &d2, "ghost").await;

        // In the CareTeam: the whole chart (the reproductive-health lab too: adolescent
        // confidentiality concerns parents).
        for id in ["Patient/kid", "Observation/pregnancy", "Condition/cond", "MedicationRequest/med1"] {
            assert_eq!(get_as(&app, &t1, &format!("/fhir/{id}")).await.status, StatusCode::OK, "{b:?} {id}");
        }
        let noted = get_as(&app, &t1, "/fhir/Observation/noted").await.json;
        assert!(noted.get("note").is_some() && !redacted(&noted), "{b:?}: clinicians are not redacted");
        let r = get_as(&app, &t1, "/fhir/Observation?_total=accurate").await;
        assert_eq!(r.json["total"], 7, "{b:?}: {}", r.text);
        assert_eq!(get_as(&app, &t1, "/fhir/Observation/other-lab").await.status, StatusCode::NOT_FOUND);

        // Not in it: nothing, and the same answers as for a patient who does not exist.
        for (uri, ghost_uri) in [
            ("/fhir/Patient/kid", "/fhir/Patient/ghost"),
            ("/fhir/Observation/lab1", "/fhir/Observation/ghost-lab"),
            ("/fhir/Observation", "/fhir/Observation"),
            ("/fhir/Patient/kid/$everything", "/fhir/Patient/ghost/$everything"),
        ] {
            let real = get_as(&app, &t2, uri).await;
            let ghost = get_as(&app, &t2_ghost, ghost_uri).await;
            assert!(real.status.is_client_error(), "{b:?} {uri}: {} {}", real.status, real.text);
            assert_eq!(real.status, ghost.status, "{b:?} {uri}: {} vs {}", real.text, ghost.text);
            assert_eq!(real.json, ghost.json, "{b:?} {uri}");
        }

        // The patient denies d1 their labs: withheld from reads and searches; the rest stays.
        put(
            &app,
            consent(
                "no-labs-d1",
                "kid",
                "active",
                "2024-01-01",
                json!({"type": "deny", "actor": [{"role": role()[0], "reference": {"reference": "Practitioner/d1"}}],
                    "class": [{"system": CATEGORY, "code": "labs"}]}),
            ),
        )
        .await;
        assert_eq!(get_as(&app, &t1, "/fhir/Observation/lab1").await.status, StatusCode::NOT_FOUND, "{b:?}");
        assert_eq!(get_as(&app, &t1, "/fhir/Condition/cond").await.status, StatusCode::OK, "{b:?}");
        let r = get_as(&app, &t1, "/fhir/Observation?_total=accurate").await;
        assert_eq!((r.json["total"].as_i64(), r.ids().len()), (Some(0), 0), "{b:?}: {}", r.text);
        let (ids, _) = all_pages(&app, &t1, "/fhir/Patient/kid/$everything").await;
        assert!(!ids.iter().any(|i| i.starts_with("lab") || i == "report"), "{b:?}: {ids:?}");
        assert!(ids.contains(&"cond".to_string()) && ids.contains(&"med1".to_string()), "{b:?}: {ids:?}");

        // Off the CareTeam (status inactive): no relationship on the next request.
        put(
            &app,
            json!({"resourceType": "CareTeam", "id": "team", "status": "inactive", "subject": {"reference": "Patient/kid"},
                "participant": [{"member": {"reference": "Practitioner/d1"}}]}),
        )
        .await;
        assert_eq!(get_as(&app, &t1, "/fhir/Condition/cond").await.status, StatusCode::NOT_FOUND, "{b:?}");
    }
}

#[tokio::test]
async fn a_consent_made_inactive_between_pages_stops_page_two() {
    for app in TestApp::all().await {
        let b = app.backend;
        chart(&app).await;
        put(&app, caregiver_consent("active", "2024-01-01")).await;
        let mum = user(&app, "mum", "caregiver", None, vec![link("kid", Some("RelatedPerson/rp1"))]).await;
        let tok = token(&app, &mum, "kid").await;
        let first = get_as(&app, &tok, "/fhir/Observation?_count=2").await;
        assert_eq!(first.ids().len(), 2, "{b:?}: {}", first.text);
        let next = first.next_link().expect("a second page");

        put(&app, caregiver_consent("inactive", "2024-01-01")).await;
        let second = get_as(&app, &tok, &next).await;
        assert!(
            second.status.is_client_error() || (second.status == StatusCode::OK && second.ids().is_empty()),
            "{b:?}: page 2 after the consent ended: {} {}",
            second.status,
            second.text
        );
        assert!(!second.text.contains("\"Observation\""), "{b:?}: {}", second.text);
        assert_eq!(get_as(&app, &tok, "/fhir/Observation/lab1").await.status, StatusCode::NOT_FOUND);
        // The patient's own Patient resource stays visible to a linked caregiver.
        assert_eq!(get_as(&app, &tok, "/fhir/Patient/kid").await.status, StatusCode::OK);
    }
}

/// Two server instances on one database (what two processes are: their own pools, caches
/// and appenders): the patient revokes the caregiver's consent through one with `$revoke`,
/// and the caregiver's very next request through the other sees nothing of what it shared.
#[tokio::test]
async fn a_revocation_through_one_instance_bites_on_the_next_request_in_another() {
    for app in TestApp::all().await {
        let b = app.backend;
        let other = app.sharing().await;
        chart(&app).await;
        put(&app, caregiver_consent("active", "2024-01-01")).await;
        let mum = user(&app, "mum", "caregiver", None, vec![link("kid", Some("RelatedPerson/rp1"))]).await;
        let tok = token(&app, &mum, "kid").await;
        assert_eq!(get_as(&other, &tok, "/fhir/Observation/lab1").await.status, StatusCode::OK, "{b:?}");
        let before = get_as(&other, &tok, "/fhir/Observation?_summary=count").await;
        assert!(before.json["total"].as_u64().unwrap_or(0) > 0, "{b:?}: {}", before.text);

        let r = app.post("/fhir/Consent/share-rp1/$revoke", json!({"resourceType": "Parameters"})).await;
        assert!(r.status.is_success(), "{b:?}: {}", r.text);

        assert_eq!(get_as(&other, &tok, "/fhir/Observation/lab1").await.status, StatusCode::NOT_FOUND, "{b:?}");
        let after = get_as(&other, &tok, "/fhir/Observation?_summary=count").await;
        assert_eq!(after.json["total"], 0, "{b:?}: {}", after.text);
    }
}
