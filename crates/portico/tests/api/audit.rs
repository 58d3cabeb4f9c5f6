//! The audit trail on both backends: exactly one record per interaction (denials and
//! failures included), the read-only AuditEvent view, the patient's access log, failing
//! closed, tampering named by `verify`, signed heads and the witness, pruning, and one
//! unforked chain under concurrent appends from two stores on one database.

use super::common::*;
use axum::http::{Method, StatusCode};
use portico::audit::{VerifyError, verify_store};
use portico_audit::{AuditRecord, Interaction, Outcome, Problem, Trust, canonical};
use portico_policy::{Principal, RequestContext};
use portico_store::{ScanItem, SqlStore, Store, StoreConfig, WriteAudit};
use serde_json::{Value, json};
use std::sync::Arc;

/// Every record in the log, in order (what is committed: see [`flushed`]).
async fn records(store: &dyn Store) -> Vec<(i64, AuditRecord)> {
    let mut out = Vec::new();
    let mut on = |item: ScanItem| {
        if let ScanItem::Rows(rows) = item {
            for r in rows {
                out.push(canonical::decode(&r.record).expect("canonical record"));
            }
        }
        true
    };
    store.audit_scan(500, &mut on).await.expect("scan");
    out
}

/// The stored rows, as `verify` reads them.
async fn raw_rows(store: &dyn Store) -> Vec<portico_audit::StoredRow> {
    let mut out = Vec::new();
    let mut on = |item: ScanItem| {
        if let ScanItem::Rows(rows) = item {
            out.extend(rows);
        }
        true
    };
    store.audit_scan(500, &mut on).await.expect("scan");
    out
}

/// Every record of the app's log once the records queued so far (deferred mode) are
/// committed.
async fn flushed(app: &TestApp) -> Vec<(i64, AuditRecord)> {
    app.state.audit.flush().await.expect("flush the audit queue");
    records(app.state.store.as_ref()).await
}

/// The records one request left, by its `X-Request-Id`.
async fn records_of(app: &TestApp, r: &Resp) -> Vec<AuditRecord> {
    let rid = r.header("x-request-id").expect("x-request-id").to_string();
    flushed(app).await.into_iter().map(|(_, r)| r).filter(|r| r.request_id == rid).collect()
}

fn trust(app: &TestApp) -> Trust {
    let key = app.state.audit.key();
    Trust { keys: vec![key.public()], mac: Some(key.mac_key()) }
}

async fn verify(
    app: &TestApp,
    witness: Option<portico_audit::SignedHead>,
) -> Result<portico_audit::Report, VerifyError> {
    verify_store(app.state.store.as_ref(), trust(app), witness, &mut |_, _| {}).await
}

/// A connection to the SQLite file store, with its audit file attached as the server has it.
async fn sqlite(app: &TestApp) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&app.database_url).await.expect("connect");
    let audit = portico_store::sqlite_audit_path(&app.database_url).expect("a SQLite file store");
    sqlx::query("ATTACH DATABASE $1 AS audit")
        .bind(audit.to_string_lossy().into_owned())
        .execute(&mut c)
        .await
        .expect("attach the audit file");
    c
}

/// Run SQL on the test database directly (tampering).
async fn exec(app: &TestApp, sql: &str) {
    use sqlx::Connection;
    match app.backend {
        Backend::Sqlite => {
            let mut c = sqlite(app).await;
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut c).await.expect("tamper");
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&app.database_url).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut c).await.expect("tamper");
        }
    }
}

/// One number from the test database (`SELECT count(*) …`).
async fn scalar(app: &TestApp, sql: &str) -> i64 {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match app.backend {
        Backend::Sqlite => {
            let mut c = sqlite(app).await;
            sqlx::query_scalar(sql).fetch_one(&mut c).await.expect("query")
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&app.database_url).await.expect("connect");
            sqlx::query_scalar(sql).fetch_one(&mut c).await.expect("query")
        }
    }
}

async fn patch(app: &TestApp, uri: &str, ops: Value) -> Resp {
    let auth = format!("Bearer {TOKEN}");
    let h = [("authorization", auth.as_str()), ("content-type", "application/json-patch+json")];
    app.raw(Method::PATCH, uri, &h, ops.to_string().into_bytes()).await
}

fn one(recs: &[AuditRecord], what: &str) -> AuditRecord {
    assert_eq!(recs.len(), 1, "{what}: expected exactly one record, got {recs:#?}");
    recs[0].clone()
}

fn observation(patient: &str) -> Value {
    json!({
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": 5.4, "unit": "mmol/L"}
    })
}

/// The app of every backend in one append mode.
async fn apps_in_mode(mode: &'static str) -> Vec<TestApp> {
    let mut v = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if let Some(app) = TestApp::with_config(backend, |c| c.audit.append = mode.into()).await {
            assert_eq!(app.state.audit.mode().name(), mode);
            v.push(app);
        }
    }
    v
}

#[tokio::test]
async fn every_interaction_leaves_exactly_one_record() {
    for app in TestApp::all().await {
        completeness(app).await;
    }
}

/// Completeness holds when reads' records are committed after their response.
#[tokio::test]
async fn every_interaction_leaves_exactly_one_record_in_deferred_mode() {
    for app in apps_in_mode("deferred").await {
        completeness(app).await;
    }
}

#[tokio::test]
async fn every_interaction_leaves_exactly_one_record_in_direct_mode() {
    for app in apps_in_mode("direct").await {
        completeness(app).await;
    }
}

async fn completeness(app: TestApp) {
    {
        let b = app.backend;
        // Create, read, vread, update, patch.
        let r = app.post("/fhir/Patient", json!({"resourceType": "Patient", "name": [{"family": "Audit"}]})).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let pid = r.json["id"].as_str().unwrap().to_string();
        let c = one(&records_of(&app, &r).await, "create");
        assert_eq!((c.interaction, c.outcome, c.status), (Interaction::Create, Outcome::Success, 201), "{b:?}");
        assert_eq!(c.entities[0].reference, format!("Patient/{pid}/_history/1"));
        assert_eq!(c.patients, vec![pid.clone()]);
        assert_eq!(c.rules, vec!["operator"]);
        let obs = app.post("/fhir/Observation", observation(&pid)).await;
        let oid = obs.json["id"].as_str().unwrap().to_string();
        let o = one(&records_of(&app, &obs).await, "create observation");
        assert_eq!(o.entities[0].category, "labs");
        assert_eq!(o.patients, vec![pid.clone()]);

        let cases: Vec<(Resp, Interaction, Outcome, u16)> = vec![
            (app.get(&format!("/fhir/Patient/{pid}")).await, Interaction::Read, Outcome::Success, 200),
            (app.get(&format!("/fhir/Patient/{pid}/_history/1")).await, Interaction::VRead, Outcome::Success, 200),
            (
                app.put(
                    &format!("/fhir/Patient/{pid}"),
                    json!({"resourceType": "Patient", "id": pid, "name": [{"family": "Audited"}]}),
                )
                .await,
                Interaction::Update,
                Outcome::Success,
                200,
            ),
            (
                patch(
                    &app,
                    &format!("/fhir/Patient/{pid}"),
                    json!([{"op": "add", "path": "/gender", "value": "female"}]),
                )
                .await,
                Interaction::Patch,
                Outcome::Success,
                200,
            ),
            (
                app.get(&format!("/fhir/Observation?subject=Patient/{pid}")).await,
                Interaction::SearchType,
                Outcome::Success,
                200,
            ),
            (
                app.get(&format!("/fhir/Patient/{pid}/_history")).await,
                Interaction::HistoryInstance,
                Outcome::Success,
                200,
            ),
            (app.get("/fhir/Observation/_history").await, Interaction::HistoryType, Outcome::Success, 200),
            (app.get("/fhir/_history?_count=3").await, Interaction::HistorySystem, Outcome::Success, 200),
            (
                app.get(&format!("/fhir/Patient/{pid}/$everything")).await,
                Interaction::Everything,
                Outcome::Success,
                200,
            ),
            (app.get("/fhir/Patient/does-not-exist").await, Interaction::Read, Outcome::Failed, 404),
            (
                app.get(&format!("/fhir/Observation?subject=Patient/{pid}&bogus:modifier=1")).await,
                Interaction::SearchType,
                Outcome::Success,
                200,
            ),
        ];
        for (resp, interaction, outcome, status) in cases {
            assert_eq!(resp.status.as_u16(), status, "{b:?} {interaction:?}: {}", resp.text);
            let rec = one(&records_of(&app, &resp).await, &format!("{b:?} {interaction:?}"));
            assert_eq!((rec.interaction, rec.outcome, rec.status), (interaction, outcome, status), "{b:?}");
            assert_eq!(rec.actor.key(), "operator/operator");
        }
        // A search names its query and every returned item, with their patients.
        let s = app.get(&format!("/fhir/Observation?subject=Patient/{pid}")).await;
        let rec = one(&records_of(&app, &s).await, "search");
        assert_eq!(rec.query.as_deref(), Some(format!("subject=Patient/{pid}").as_str()));
        assert_eq!(
            rec.entities.iter().map(|e| e.reference.clone()).collect::<Vec<_>>(),
            vec![format!("Observation/{oid}/_history/1")]
        );
        assert_eq!(rec.patients, vec![pid.clone()]);
        let ev = app.get(&format!("/fhir/Patient/{pid}/$everything")).await;
        assert_eq!(one(&records_of(&app, &ev).await, "everything").entities.len(), 2);

        // Conditional create (new, then existing), conditional update and delete.
        let auth = format!("Bearer {TOKEN}");
        let h = [
            ("authorization", auth.as_str()),
            ("content-type", "application/fhir+json"),
            ("if-none-exist", "identifier=urn:x|cond-1"),
        ];
        let body = json!({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "cond-1"}]});
        let first = app.raw(Method::POST, "/fhir/Patient", &h, body.to_string().into_bytes()).await;
        assert_eq!(first.status, StatusCode::CREATED);
        assert_eq!(one(&records_of(&app, &first).await, "conditional create").status, 201);
        let again = app.raw(Method::POST, "/fhir/Patient", &h, body.to_string().into_bytes()).await;
        assert_eq!(again.status, StatusCode::OK);
        let rec = one(&records_of(&app, &again).await, "conditional create, existing");
        assert_eq!((rec.interaction, rec.status), (Interaction::Create, 200));
        let cu = app.put("/fhir/Patient?identifier=urn:x|cond-1", json!({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "cond-1"}], "gender": "male"})).await;
        assert_eq!(cu.status, StatusCode::OK, "{}", cu.text);
        assert_eq!(one(&records_of(&app, &cu).await, "conditional update").interaction, Interaction::Update);
        let cd = app.delete("/fhir/Patient?identifier=urn:x|cond-1").await;
        assert_eq!(cd.status, StatusCode::NO_CONTENT);
        let rec = one(&records_of(&app, &cd).await, "conditional delete");
        assert_eq!((rec.interaction, rec.status), (Interaction::Delete, 204));

        // Delete, then a read of the deleted resource.
        let d = app.delete(&format!("/fhir/Observation/{oid}")).await;
        assert_eq!(d.status, StatusCode::NO_CONTENT);
        let rec = one(&records_of(&app, &d).await, "delete");
        assert_eq!(rec.entities[0].reference, format!("Observation/{oid}/_history/2"));
        assert_eq!(rec.patients, vec![pid.clone()], "a deletion keeps the patient it concerned");
        let gone = app.get(&format!("/fhir/Observation/{oid}")).await;
        assert_eq!(gone.status, StatusCode::GONE);
        assert_eq!(one(&records_of(&app, &gone).await, "read deleted").outcome, Outcome::Failed);

        // A transaction: one record per entry, all in the write's own transaction.
        let tx = app
            .post("/fhir", json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "name": [{"family": "Tx"}]}, "request": {"method": "POST", "url": "Patient"}},
                {"resource": observation("tx-pt"), "request": {"method": "PUT", "url": "Observation/tx-obs"}},
                {"request": {"method": "GET", "url": format!("Patient/{pid}")}},
                {"request": {"method": "DELETE", "url": "Observation/nothing-here"}}
            ]}))
            .await;
        assert_eq!(tx.status, StatusCode::OK, "{}", tx.text);
        let recs = records_of(&app, &tx).await;
        let kinds: Vec<_> = recs.iter().map(|r| (r.interaction, r.status)).collect();
        assert_eq!(
            kinds,
            vec![
                (Interaction::Create, 201),
                (Interaction::Update, 201),
                (Interaction::Delete, 204),
                (Interaction::Read, 200)
            ],
            "{b:?}"
        );
        // A batch: a failing entry has its own status and outcome.
        let batch = app
            .post("/fhir", json!({"resourceType": "Bundle", "type": "batch", "entry": [
                {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
                {"resource": {"resourceType": "Patient", "birthDate": "not a date"}, "request": {"method": "POST", "url": "Patient"}}
            ]}))
            .await;
        assert_eq!(batch.status, StatusCode::OK);
        let recs = records_of(&app, &batch).await;
        assert_eq!(
            recs.iter().map(|r| (r.status, r.outcome)).collect::<Vec<_>>(),
            vec![(201, Outcome::Success), (400, Outcome::Failed)]
        );

        // A denial: nobody writes the audit trail, not even in a transaction.
        let deny = app
            .post("/fhir", json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
                  "agent": [{"requestor": true}], "source": {"observer": {"display": "x"}}},
                 "request": {"method": "POST", "url": "AuditEvent"}}
            ]}))
            .await;
        assert_eq!(deny.status, StatusCode::FORBIDDEN, "{}", deny.text);
        let rec = one(&records_of(&app, &deny).await, "denied write");
        assert_eq!((rec.outcome, rec.rules.clone()), (Outcome::Denied, vec!["audit-append-only".to_string()]));
        assert!(rec.reason.is_some());

        // Requests that never reach the data leave nothing; the whole log verifies.
        let meta = app.get("/fhir/metadata").await;
        assert!(records_of(&app, &meta).await.is_empty());
        let report = verify(&app, None).await.expect("the log verifies");
        assert_eq!(report.records as usize, flushed(&app).await.len());
        assert_eq!(app.state.audit.uncommitted(), 0);
    }
}

#[tokio::test]
async fn a_patients_denied_read_is_recorded_with_the_patient_it_concerned() {
    for app in TestApp::all().await {
        let pid = app.create(json!({"resourceType": "Patient"})).await;
        let oid = app.create(observation(&pid)).await;
        // Identity is not wired to HTTP yet: drive the service as a patient principal.
        let ctx = RequestContext::new(Principal::Patient { patient: "someone-else".into() }, "req-patient");
        let fhir = portico::server::fhir::service::Fhir::new(&app.state);
        let err = fhir.read(&ctx, "Observation", &oid).await.expect_err("not theirs");
        assert_eq!(err.status, StatusCode::NOT_FOUND, "hidden looks absent");
        app.state.audit.finish(&ctx.scope, err.status.as_u16()).await.expect("recorded");
        let recs: Vec<_> = records(app.state.store.as_ref())
            .await
            .into_iter()
            .filter(|(_, r)| r.request_id == "req-patient")
            .collect();
        let (_, rec) = &recs[0];
        assert_eq!(recs.len(), 1);
        assert_eq!((rec.outcome, rec.status), (Outcome::Denied, 404));
        assert_eq!(rec.actor.key(), "patient/someone-else");
        assert_eq!(rec.rules, vec!["outside-compartment"]);
        assert_eq!(rec.patients, vec![pid.clone()]);
        // The owner's access log tells them, without naming the other patient.
        let log = app.get(&format!("/api/portal/access-log?patient={pid}")).await;
        let texts: Vec<String> =
            log.json["entries"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap().to_string()).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("Another patient tried to look at your lab result but was not allowed.")),
            "{texts:?}"
        );
        assert!(!log.text.contains("someone-else"));
    }
}

#[tokio::test]
async fn audit_events_are_searchable_and_read_only() {
    for app in TestApp::all().await {
        let b = app.backend;
        let pid = app.create(json!({"resourceType": "Patient"})).await;
        let other = app.create(json!({"resourceType": "Patient"})).await;
        let oid = app.create(observation(&pid)).await;
        for _ in 0..3 {
            app.get(&format!("/fhir/Observation/{oid}")).await;
        }
        app.get(&format!("/fhir/Patient/{other}")).await;

        let s = app.get(&format!("/fhir/AuditEvent?patient=Patient/{pid}&_count=2")).await;
        assert_eq!(s.status, StatusCode::OK, "{b:?}: {}", s.text);
        assert_eq!(s.json["entry"].as_array().unwrap().len(), 2);
        for e in s.json["entry"].as_array().unwrap() {
            let ev = &e["resource"];
            assert_eq!(ev["resourceType"], "AuditEvent");
            assert!(ev.to_string().contains(&format!("Patient/{pid}")));
            assert!(!ev.to_string().contains(&format!("Patient/{other}")));
            let errors: Vec<_> = portico_fhir::validate::validate_resource(ev)
                .into_iter()
                .filter(|i| i.severity == portico_fhir::validate::Severity::Error)
                .collect();
            assert!(errors.is_empty(), "{errors:?}");
        }
        // Newest first, paged.
        let ids: Vec<i64> = s.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ids[0] > ids[1]);
        let next = s.next_link().expect("next page");
        let path = next.split("/fhir").nth(1).unwrap();
        let p2 = app.get(&format!("/fhir{path}")).await;
        let ids2: Vec<i64> = p2.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ids2.iter().all(|i| *i < ids[1]));
        // All of the patient's records: create of the patient, of the observation, 3 reads,
        // and the two AuditEvent searches above (they disclosed records about the patient).
        let all = app.get(&format!("/fhir/AuditEvent?patient={pid}&_total=accurate&_count=100")).await;
        assert_eq!(all.json["total"], 7, "{b:?}: {}", all.text);
        let reads =
            app.get(&format!("/fhir/AuditEvent?patient={pid}&subtype=read&action=R&outcome=0&agent=operator")).await;
        assert_eq!(reads.json["entry"].as_array().unwrap().len(), 3);
        let none = app.get(&format!("/fhir/AuditEvent?patient={pid}&date=lt2000-01-01")).await;
        assert!(none.json["entry"].as_array().unwrap().is_empty());

        // Read and vread one; the read itself is audited with the patients it disclosed.
        let id = ids[0];
        let one_ev = app.get(&format!("/fhir/AuditEvent/{id}")).await;
        assert_eq!(one_ev.status, StatusCode::OK);
        assert_eq!(one_ev.json["id"], id.to_string());
        let rec = one(&records_of(&app, &one_ev).await, "AuditEvent read");
        assert_eq!(rec.resource_type.as_deref(), Some("AuditEvent"));
        assert_eq!(rec.patients, vec![pid.clone()]);
        assert_eq!(app.get(&format!("/fhir/AuditEvent/{id}/_history/1")).await.status, StatusCode::OK);
        assert_eq!(app.get(&format!("/fhir/AuditEvent/{id}/_history/2")).await.status, StatusCode::NOT_FOUND);
        assert_eq!(app.get("/fhir/AuditEvent/999999").await.status, StatusCode::NOT_FOUND);

        // Nobody writes it.
        let ev = one_ev.json.clone();
        assert_eq!(app.post("/fhir/AuditEvent", ev.clone()).await.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(app.put(&format!("/fhir/AuditEvent/{id}"), ev.clone()).await.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(app.put("/fhir/AuditEvent?patient=x", ev.clone()).await.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(app.delete(&format!("/fhir/AuditEvent/{id}")).await.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(app.delete("/fhir/AuditEvent?patient=x").await.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            patch(&app, &format!("/fhir/AuditEvent/{id}"), json!([])).await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(app.get("/fhir/AuditEvent/_history").await.status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(verify(&app, None).await.is_ok());
    }
}

#[tokio::test]
async fn the_access_log_speaks_plainly_filters_and_is_itself_audited() {
    for app in TestApp::all().await {
        let pid = app.create(json!({"resourceType": "Patient"})).await;
        let oid = app.create(observation(&pid)).await;
        app.get(&format!("/fhir/Observation/{oid}")).await;
        app.get(&format!("/fhir/Observation?subject=Patient/{pid}")).await;

        let log = app.get(&format!("/api/portal/access-log?patient={pid}")).await;
        assert_eq!(log.status, StatusCode::OK, "{}", log.text);
        assert_eq!(log.header("content-type"), Some("application/json; charset=utf-8"));
        let texts: Vec<String> =
            log.json["entries"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap().to_string()).collect();
        assert_eq!(
            texts,
            vec![
                "The server operator searched your records and saw 1 lab result.",
                "The server operator looked at your lab result.",
                "The server operator added a lab result to your record.",
                "The server operator added a personal details record to your record.",
            ],
            "{:?}",
            app.backend
        );
        // Reading the log was itself recorded, and shows up next time.
        let rec = one(&records_of(&app, &log).await, "access log");
        assert_eq!((rec.interaction, rec.patients.clone()), (Interaction::AccessLog, vec![pid.clone()]));
        let again = app.get(&format!("/api/portal/access-log?patient={pid}&count=1")).await;
        assert_eq!(again.json["entries"][0]["text"], "The server operator viewed your access log.");
        assert!(again.json["next"].as_str().unwrap().contains("cursor="));
        // Filters: category, person, date.
        let labs = app.get(&format!("/api/portal/access-log?patient={pid}&category=labs")).await;
        assert_eq!(labs.json["entries"].as_array().unwrap().len(), 3);
        assert!(labs.json["entries"].as_array().unwrap().iter().all(|e| e["categories"] == json!(["labs"])));
        let mine = app.get(&format!("/api/portal/access-log?patient={pid}&who=Patient/{pid}")).await;
        assert!(mine.json["entries"].as_array().unwrap().is_empty());
        let old = app.get(&format!("/api/portal/access-log?patient={pid}&to=2000-01-01")).await;
        assert!(old.json["entries"].as_array().unwrap().is_empty());
        // The operator must say whose log; unknown filters are refused.
        assert_eq!(app.get("/api/portal/access-log").await.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            app.get(&format!("/api/portal/access-log?patient={pid}&category=nope")).await.status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            app.get(&format!("/api/portal/access-log?patient={pid}&bogus=1")).await.status,
            StatusCode::BAD_REQUEST
        );
    }
}

#[tokio::test]
async fn a_failing_audit_append_fails_the_request_closed_and_recovers() {
    for app in TestApp::all().await {
        let b = app.backend;
        let pid = app.create(json!({"resourceType": "Patient"})).await;
        exec(&app, "UPDATE audit_head SET hash = 'broken' WHERE id = 1").await;
        let read = app.get(&format!("/fhir/Patient/{pid}")).await;
        assert_eq!(
            read.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{b:?}: a read that cannot be recorded is not answered"
        );
        assert!(!read.text.contains(&pid));
        assert_eq!(read.header("retry-after"), Some("1"));
        let write =
            app.post("/fhir/Patient", json!({"resourceType": "Patient", "name": [{"family": "Unrecorded"}]})).await;
        assert_eq!(write.status, StatusCode::SERVICE_UNAVAILABLE, "{b:?}: {}", write.text);
        exec(&app, "UPDATE audit_head SET hash = (SELECT hash FROM audit_log WHERE seq = audit_head.seq) WHERE id = 1")
            .await;
        let s = app.get("/fhir/Patient?family=Unrecorded").await;
        assert_eq!(s.status, StatusCode::OK);
        assert!(s.ids().is_empty(), "{b:?}: the unrecorded write was rolled back with its record");
        assert_eq!(app.get(&format!("/fhir/Patient/{pid}")).await.status, StatusCode::OK);
        assert!(verify(&app, None).await.is_ok());
    }
}

/// On a SQLite file store a write's records wait in the outbox only until the write is
/// answered; records a crash left there fail `verify` once they are older than the bound.
#[tokio::test]
async fn records_left_in_the_outbox_fail_verify_once_stale() {
    let app = TestApp::new(Backend::Sqlite).await.expect("sqlite");
    app.create(json!({"resourceType": "Patient"})).await;
    let waiting = "SELECT count(*) FROM audit_outbox WHERE id > (SELECT outbox_done FROM audit_head WHERE id = 1)";
    assert_eq!(scalar(&app, waiting).await, 0, "chained before the write was answered");
    let now = portico::audit::now_ms();
    exec(&app, &format!("INSERT INTO audit_outbox (ts, record) VALUES ({now}, 'left by a crash')")).await;
    let report = verify(&app, None).await.expect("a record that has just arrived is not a failure");
    assert_eq!(report.outbox_waiting, 1);
    let stale = now - portico::audit::OUTBOX_STALE.as_millis() as i64 - 1;
    exec(&app, &format!("UPDATE audit_outbox SET ts = {stale}")).await;
    match verify(&app, None).await {
        Err(VerifyError::Unchained { waiting: 1, oldest_ms }) => assert_eq!(oldest_ms, stale),
        other => panic!("expected the stale outbox row to fail verify, got {other:?}"),
    }
}

/// Make `n` records by reading.
async fn fill(app: &TestApp, n: usize) -> String {
    let pid = app.create(json!({"resourceType": "Patient"})).await;
    for _ in 1..n {
        app.get(&format!("/fhir/Patient/{pid}")).await;
    }
    pid
}

fn tampered(r: Result<portico_audit::Report, VerifyError>) -> portico_audit::Finding {
    match r {
        Err(VerifyError::Tampered(f)) => f,
        other => panic!("expected a finding, got {other:?}"),
    }
}

#[tokio::test]
async fn verify_names_the_first_bad_record_of_a_tampered_log() {
    let cases: &[(&str, &[&str], i64, Problem)] = &[
        (
            "edited",
            &["UPDATE audit_log SET record = REPLACE(record, '\"st\":200', '\"st\":201') WHERE seq = 7"],
            7,
            Problem::Edited,
        ),
        (
            "deleted",
            &[
                "DELETE FROM audit_subjects WHERE seq = 5",
                "DELETE FROM audit_subjects_recent WHERE seq = 5",
                "DELETE FROM audit_log WHERE seq = 5",
            ],
            5,
            Problem::Missing,
        ),
        (
            "swapped",
            &[
                "UPDATE audit_log SET seq = -1 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = 4",
                "UPDATE audit_log SET seq = 4 WHERE seq = -1",
            ],
            3,
            Problem::Moved,
        ),
        (
            "hidden from the patient",
            &["DELETE FROM audit_subjects WHERE seq = 6", "DELETE FROM audit_subjects_recent WHERE seq = 6"],
            6,
            Problem::IndexMismatch,
        ),
        (
            "hash altered",
            &["UPDATE audit_log SET hash = REPLACE(hash, SUBSTR(hash, 1, 1), 'x') WHERE seq = 9"],
            9,
            Problem::Edited,
        ),
        (
            "truncated",
            &[
                "DELETE FROM audit_subjects WHERE seq > 10",
                "DELETE FROM audit_subjects_recent WHERE seq > 10",
                "DELETE FROM audit_log WHERE seq > 10",
            ],
            11,
            Problem::Truncated { expected_last: 12 },
        ),
    ];
    for (name, sqls, seq, problem) in cases {
        for app in TestApp::all().await {
            fill(&app, 12).await;
            assert!(verify(&app, None).await.is_ok());
            for sql in *sqls {
                exec(&app, sql).await;
            }
            let f = tampered(verify(&app, None).await);
            assert_eq!((f.seq, f.problem), (*seq, *problem), "{:?} {name}: {f}", app.backend);
        }
    }
}

#[tokio::test]
async fn a_rewritten_and_rehashed_record_is_named_by_its_mac() {
    for app in TestApp::all().await {
        fill(&app, 10).await;
        // Rewrite record 4 and recompute every hash after it, as someone without the key would.
        let rows = records(app.state.store.as_ref()).await;
        let mut rec = rows[3].1.clone();
        rec.status = 204;
        let mut prev = portico_audit::chain::from_hex(&raw_rows(app.state.store.as_ref()).await[2].hash).unwrap();
        for (seq, r) in rows.iter().skip(3) {
            let r = if *seq == 4 { &rec } else { r };
            let text = canonical::encode(*seq, r);
            let h = portico_audit::chain::link_hash(&prev, text.as_bytes());
            let hx = portico_audit::chain::to_hex(&h);
            exec(
                &app,
                &format!(
                    "UPDATE audit_log SET record = '{}', hash = '{hx}' WHERE seq = {seq}",
                    text.replace('\'', "''")
                ),
            )
            .await;
            prev = h;
        }
        exec(&app, &format!("UPDATE audit_head SET hash = '{}' WHERE id = 1", portico_audit::chain::to_hex(&prev)))
            .await;
        let f = tampered(verify(&app, None).await);
        assert_eq!((f.seq, f.problem), (4, Problem::Forged), "{:?}: {f}", app.backend);
        // With the public key only (no MACs), the signed head catches it — if one was signed.
        let public = Trust { keys: vec![app.state.audit.public_key()], mac: None };
        assert!(
            verify_store(app.state.store.as_ref(), public, None, &mut |_, _| {}).await.is_ok(),
            "no head was signed yet"
        );
    }
}

#[tokio::test]
async fn signed_heads_and_the_witness_catch_truncation_and_rollback() {
    for app in TestApp::all().await {
        let b = app.backend;
        fill(&app, 8).await;
        let head = app.state.audit.sign_head().await.unwrap().expect("a head");
        assert_eq!(head.seq, 8);
        fill(&app, 4).await;
        let witness = app.state.audit.sign_head().await.unwrap().expect("a head");
        assert_eq!(witness.seq, 12);
        let ok = verify(&app, Some(witness.clone())).await.unwrap();
        assert_eq!((ok.heads_checked, ok.witness_seq), (2, Some(12)));
        // Cut the last four records and make the head row agree: the database head at #12
        // still says more existed.
        exec(&app, "DELETE FROM audit_subjects WHERE seq > 8").await;
        exec(&app, "DELETE FROM audit_subjects_recent WHERE seq > 8").await;
        exec(&app, "DELETE FROM audit_log WHERE seq > 8").await;
        exec(&app, "UPDATE audit_head SET seq = 8, hash = (SELECT hash FROM audit_log WHERE seq = 8) WHERE id = 1")
            .await;
        let f = tampered(verify(&app, None).await);
        assert_eq!((f.seq, f.problem), (9, Problem::Truncated { expected_last: 12 }), "{b:?}: {f}");
        // Remove the database's later heads too — as restoring an old backup does: only the
        // witness outside the data directory remembers.
        exec(&app, "DELETE FROM audit_heads WHERE seq > 8").await;
        assert!(verify(&app, None).await.is_ok(), "without a witness a consistent old copy looks fine");
        let f = tampered(verify(&app, Some(witness.clone())).await);
        assert_eq!((f.seq, f.problem), (9, Problem::RolledBack { witness_seq: 12 }), "{b:?}: {f}");
        // The restored copy was written to again: it forked from what the witness saw.
        fill(&app, 5).await;
        let f = tampered(verify(&app, Some(witness)).await);
        assert_eq!((f.seq, f.problem), (9, Problem::Diverged { head_seq: 12 }), "{b:?}: {f}");
    }
}

#[tokio::test]
async fn pruning_leaves_a_signed_checkpoint_the_chain_continues_from() {
    for app in TestApp::all().await {
        let pid = fill(&app, 10).await;
        let (n, cp) = app.state.audit.prune_before(portico::audit::now_ms() + 1).await.unwrap();
        let cp = cp.expect("a checkpoint");
        assert_eq!((n, cp.seq), (10, 10));
        app.get(&format!("/fhir/Patient/{pid}")).await;
        let report = verify(&app, None).await.unwrap();
        assert_eq!((report.checkpoint_seq, report.first_seq, report.records), (Some(10), 11, 1));
        // The access log starts after the checkpoint.
        let log = app.get(&format!("/api/portal/access-log?patient={pid}")).await;
        assert_eq!(log.json["entries"].as_array().unwrap().len(), 1);
        // Deleting the checkpoint leaves a log that starts in the middle: named.
        exec(&app, "DELETE FROM audit_heads WHERE kind = 'checkpoint'").await;
        let f = tampered(verify(&app, None).await);
        assert_eq!((f.seq, f.problem), (1, Problem::Missing));
    }
}

/// `n` operator reads numbered by their time, each about patient `p{i % 7}`.
fn bulk_reads(n: i64) -> Vec<AuditRecord> {
    (0..n)
        .map(|i| {
            let mut r = AuditRecord::new(
                i,
                &format!("bulk-{i}"),
                Interaction::Read,
                portico_audit::Actor::new("operator", "operator"),
            );
            r.patients = vec![format!("p{}", i % 7)];
            r
        })
        .collect()
}

/// The patient index in two parts (migration 0007): appends add rows to the recent part,
/// the append crossing a multiple of `AUDIT_INDEX_MERGE` records moves the rows up to it
/// into the patient index. Searches, `verify` and pruning read both parts.
#[tokio::test]
async fn the_patient_index_merges_its_recent_rows_and_readers_see_both_parts() {
    use portico_store::AUDIT_INDEX_MERGE as MERGE;
    for app in TestApp::all().await {
        let b = app.backend;
        let chainer = app.state.audit.chainer().clone();
        let n = MERGE + 808;
        let recs = bulk_reads(n);
        let p3_before = scalar(&app, "SELECT count(*) FROM audit_subject_rows WHERE patient = 'p3'").await;
        let mut head = 0;
        for part in recs.chunks(3_000) {
            head = app.state.store.audit_append(&chainer, part).await.expect("append");
        }
        assert!(head > MERGE && head - n < MERGE, "{b:?}: one merge crossed");
        let upto = head - head % MERGE;
        for (sql, want_rows) in [
            (format!("SELECT count(*) FROM audit_subjects_recent WHERE seq <= {upto}"), false),
            (format!("SELECT count(*) FROM audit_subjects WHERE seq > {upto}"), false),
            (format!("SELECT count(*) FROM audit_subjects_recent WHERE seq > {upto}"), true),
            (format!("SELECT count(*) FROM audit_subjects WHERE seq <= {upto} AND seq > {}", head - n), true),
        ] {
            assert_eq!(scalar(&app, &sql).await > 0, want_rows, "{b:?}: {sql}");
        }
        // The search finds the records of both parts.
        let found = app.get("/fhir/AuditEvent?patient=p3&_total=accurate&_count=200").await;
        assert_eq!(found.status, StatusCode::OK, "{b:?}");
        assert_eq!(found.json["total"], json!(p3_before + 1_286), "{b:?}");
        let report = verify(&app, None).await.expect("an intact log verifies");
        assert!(report.last_seq >= head, "{b:?}");
        // A merged row hidden from the patient is named, as a recent one is.
        let hidden = head - n + 101;
        let edit = |to: &str| format!("UPDATE audit_subjects SET patient = {to} WHERE seq = {hidden}");
        exec(&app, &edit("patient || 'x'")).await;
        let f = tampered(verify(&app, None).await);
        assert_eq!((f.seq, f.problem), (hidden, Problem::IndexMismatch), "{b:?}: {f}");
        exec(&app, &edit("substr(patient, 1, length(patient) - 1)")).await;
        verify(&app, None).await.expect("restored");
        // A merged row copied back into the recent part is one row too many.
        exec(&app, &format!("INSERT INTO audit_subjects_recent SELECT * FROM audit_subjects WHERE seq = {hidden}"))
            .await;
        let f = tampered(verify(&app, None).await);
        assert_eq!((f.seq, f.problem), (hidden, Problem::IndexMismatch), "{b:?}: {f}");
        exec(&app, &format!("DELETE FROM audit_subjects_recent WHERE seq = {hidden}")).await;
        // Pruning everything empties both parts.
        app.state.audit.prune_before(portico::audit::now_ms() + 1).await.unwrap();
        assert_eq!(scalar(&app, "SELECT count(*) FROM audit_subject_rows").await, 0, "{b:?}");
    }
}

/// Two stores (as two server processes would have) appending to one database at once:
/// plain appends and appends inside clinical writes. The chain must come out whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_database_append_one_unforked_chain() {
    for app in TestApp::all().await {
        let b = app.backend;
        let chainer = app.state.audit.chainer().clone();
        let mut tasks = Vec::new();
        for s in 0..2 {
            let mut cfg = StoreConfig::new(app.database_url.clone());
            cfg.max_connections = 4;
            cfg.migrate = false;
            let store = Arc::new(SqlStore::open(&cfg).await.expect("second store"));
            for t in 0..4 {
                let store = store.clone();
                let chainer = chainer.clone();
                let classifier = app.state.classifier.clone();
                let gate = app.state.gate.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..25 {
                        let rec = AuditRecord::new(
                            i,
                            &format!("s{s}-t{t}-{i}"),
                            Interaction::Read,
                            portico_audit::Actor::new("operator", "operator"),
                        );
                        if i % 5 == 0 {
                            // A clinical write carrying its record.
                            let ctx = RequestContext::new(Principal::Operator, format!("w{s}-{t}-{i}"));
                            let id = format!("p{s}-{t}-{i}");
                            let body = json!({"resourceType": "Patient", "id": id});
                            let prepared = portico_store::prepare("Patient", &id, body, &classifier);
                            let permit =
                                gate.permit_write(&ctx, portico_policy::Action::Create, None, &prepared.facts).unwrap();
                            let op = portico_store::WriteOp {
                                kind: portico_store::WriteKind::Create,
                                resource_type: "Patient".into(),
                                id: id.clone(),
                                if_match: None,
                                prepared: Some(prepared),
                                condition: None,
                            };
                            let build = |_: &[portico_store::WriteResult]| vec![rec.clone(), rec.clone()];
                            store
                                .write(vec![(permit, op)], &WriteAudit { chainer: &chainer, records: &build })
                                .await
                                .expect("write");
                        } else {
                            store.audit_append(&chainer, &[rec]).await.expect("append");
                        }
                    }
                }));
            }
        }
        for t in tasks {
            t.await.expect("task");
        }
        let all = records(app.state.store.as_ref()).await;
        let seqs: Vec<i64> = all.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=all.len() as i64).collect::<Vec<_>>(), "{b:?}: contiguous, no gaps or duplicates");
        assert_eq!(all.len(), 2 * 4 * (20 + 5 * 2), "{b:?}: every append landed once");
        let report = verify(&app, None).await.expect("one unforked chain");
        assert_eq!(report.records as usize, all.len());
    }
}

#[tokio::test]
async fn the_verify_command_names_the_first_bad_record() {
    let app = TestApp::new(Backend::Sqlite).await.expect("sqlite");
    fill(&app, 6).await;
    let witness_dir = std::env::temp_dir().join(format!("portico-witness-{}", uuid::Uuid::new_v4().simple()));
    let witness = witness_dir.join("head.json");
    portico::audit::witness::write(&witness, &app.state.audit.sign_head().await.unwrap().unwrap()).unwrap();
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portico"));
        for (k, _) in std::env::vars() {
            if k.starts_with("PORTICO_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["audit", "verify", "--quiet"])
            .args(extra)
            .env("PORTICO_DATA_DIR", &app.data_dir)
            .env("RUST_LOG", "error");
        cmd.arg("--witness").arg(&witness);
        cmd.output().expect("run portico audit verify")
    };
    let ok = run(&[]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}{}", String::from_utf8_lossy(&ok.stderr));
    assert!(out.contains("audit log verified: 6 records") && out.contains("witness: #6"), "{out}");
    // Public key only.
    let pubkey = witness_dir.join("audit.pub");
    std::fs::write(&pubkey, app.state.audit.public_key().to_pem()).unwrap();
    let p = run(&["--public-key", pubkey.to_str().unwrap()]);
    assert!(p.status.success());
    assert!(String::from_utf8_lossy(&p.stdout).contains("not checked (public key only)"));
    exec(&app, "UPDATE audit_log SET record = REPLACE(record, '\"st\":200', '\"st\":500') WHERE seq = 3").await;
    let bad = run(&[]);
    let out = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1));
    assert!(out.contains("first bad record: #3"), "{out}");
    std::fs::remove_dir_all(&witness_dir).ok();
}

/// The deferred mode: the response does not wait for its record, which is committed within
/// the flush interval.
#[tokio::test]
async fn deferred_records_are_durable_after_the_flush_interval() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::with_config(backend, |c| {
            c.audit.append = "deferred".into();
            c.audit.flush_ms = 400;
        })
        .await
        else {
            continue;
        };
        let pid = app.create(json!({"resourceType": "Patient"})).await;
        let before = records(app.state.store.as_ref()).await.len();
        assert_eq!(before, 1, "{backend:?}: the create's record committed with the write");
        let started = std::time::Instant::now();
        let read = app.get(&format!("/fhir/Patient/{pid}")).await;
        assert_eq!(read.status, StatusCode::OK);
        let rid = read.header("x-request-id").unwrap().to_string();
        // Answered before its record is committed (the interval has not passed).
        if started.elapsed() < std::time::Duration::from_millis(300) {
            assert_eq!(app.state.audit.uncommitted(), 1, "{backend:?}");
            assert_eq!(records(app.state.store.as_ref()).await.len(), before, "{backend:?}: not committed yet");
        }
        // … and committed once the interval has passed, without anyone flushing.
        let deadline = started + std::time::Duration::from_secs(10);
        loop {
            let recs = records(app.state.store.as_ref()).await;
            if recs.iter().any(|(_, r)| r.request_id == rid) {
                assert!(
                    started.elapsed() >= std::time::Duration::from_millis(400),
                    "{backend:?}: not before the interval"
                );
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{backend:?}: the deferred record was never committed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(app.state.audit.uncommitted(), 0);
        assert_eq!(verify(&app, None).await.expect("verifies").records, 2);
    }
}

/// At most `queue_records` answered records wait uncommitted: beyond that a response waits
/// for the commit (of everything queued before it, too).
#[tokio::test]
async fn the_deferred_queue_is_bounded() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::with_config(backend, |c| {
            c.audit.append = "deferred".into();
            c.audit.flush_ms = 10_000;
            c.audit.queue_records = 3;
        })
        .await
        else {
            continue;
        };
        let pid = app.create(json!({"resourceType": "Patient"})).await;
        for i in 1..=3 {
            assert_eq!(app.get(&format!("/fhir/Patient/{pid}")).await.status, StatusCode::OK);
            assert_eq!(app.state.audit.uncommitted(), i, "{backend:?}");
        }
        assert_eq!(records(app.state.store.as_ref()).await.len(), 1, "{backend:?}: three reads queued");
        // The fourth would exceed the bound: it waits, and its commit carries the queue.
        assert_eq!(app.get(&format!("/fhir/Patient/{pid}")).await.status, StatusCode::OK);
        assert_eq!(app.state.audit.uncommitted(), 0, "{backend:?}");
        let recs = records(app.state.store.as_ref()).await;
        assert_eq!(recs.len(), 5, "{backend:?}");
        assert!(recs[1..].iter().all(|(_, r)| r.interaction == Interaction::Read));
        assert!(verify(&app, None).await.is_ok());
    }
}

/// When commits fail, the deferred mode stops deferring: requests wait and fail closed.
/// Records already answered are kept and committed once the store recovers.
#[tokio::test]
async fn a_failing_appender_makes_deferred_requests_fail_closed() {
    for app in apps_in_mode("deferred").await {
        let b = app.backend;
        let pid = app.create(json!({"resourceType": "Patient"})).await;
        exec(&app, "UPDATE audit_head SET hash = 'broken' WHERE id = 1").await;
        // Queued within the bound while the appender has not failed yet …
        let answered = app.get(&format!("/fhir/Patient/{pid}")).await;
        assert_eq!(answered.status, StatusCode::OK, "{b:?}");
        let answered_id = answered.header("x-request-id").unwrap().to_string();
        // … its commit fails (flush waits for it) …
        assert!(app.state.audit.flush().await.is_err(), "{b:?}: the commit must fail");
        assert_eq!(app.state.audit.uncommitted(), 1, "{b:?}: the answered record is kept");
        // … and from then on nothing is disclosed that cannot be recorded.
        for _ in 0..3 {
            let read = app.get(&format!("/fhir/Patient/{pid}")).await;
            assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE, "{b:?}: {}", read.text);
            assert!(!read.text.contains(&pid));
            assert_eq!(read.header("retry-after"), Some("1"));
        }
        let search = app.get("/fhir/Patient").await;
        assert_eq!(search.status, StatusCode::SERVICE_UNAVAILABLE, "{b:?}");
        let write = app.post("/fhir/Patient", json!({"resourceType": "Patient"})).await;
        assert_eq!(write.status, StatusCode::SERVICE_UNAVAILABLE, "{b:?}");
        // Recovery: the kept record is committed, requests are answered (and deferred) again.
        exec(&app, "UPDATE audit_head SET hash = (SELECT hash FROM audit_log WHERE seq = audit_head.seq) WHERE id = 1")
            .await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while app.state.audit.flush().await.is_err() || app.state.audit.uncommitted() > 0 {
            assert!(std::time::Instant::now() < deadline, "{b:?}: the kept record was never committed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let recs = flushed(&app).await;
        assert_eq!(
            recs.iter().filter(|(_, r)| r.request_id == answered_id).count(),
            1,
            "{b:?}: the answered read's record survived the failed commits"
        );
        assert_eq!(app.get(&format!("/fhir/Patient/{pid}")).await.status, StatusCode::OK);
        let all = flushed(&app).await.len();
        let report = verify(&app, None).await.expect("verifies");
        assert_eq!(report.records as usize, all);
        // Refused requests left no record: the create, the kept read, the last read.
        assert_eq!(report.records, 3, "{b:?}");
    }
}

/// `portico serve` in deferred mode, stopped with SIGTERM, commits its queue before the
/// final signed head: `portico audit verify` counts every answered request's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_flushes_the_deferred_queue() {
    shutdown_round(None).await;
    if let Some(url) = postgres_url() {
        shutdown_round(Some(fresh_pg_schema(&url).await)).await;
    }
}

/// `portico audit verify` over a data dir (and database): the records it verified, and the
/// signed heads it matched.
fn verify_command(data_dir: &std::path::Path, database_url: Option<&str>) -> (u64, u64) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portico"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTICO_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["audit", "verify", "--quiet"]).env("PORTICO_DATA_DIR", data_dir).env("RUST_LOG", "error");
    if let Some(url) = database_url {
        cmd.env("PORTICO_DATABASE_URL", url);
    }
    let out = cmd.output().expect("run portico audit verify");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "audit verify failed:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    let number_after = |prefix: &str| -> u64 {
        let rest = &text[text.find(prefix).unwrap_or_else(|| panic!("no '{prefix}' in {text}")) + prefix.len()..];
        rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().expect("a number")
    };
    let records = if text.contains("audit log verified: 0 records") { 0 } else { number_after("audit log verified: ") };
    (records, number_after("signed heads matched: "))
}

async fn shutdown_round(database_url: Option<String>) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = std::env::temp_dir().join(format!("portico-audit-shutdown-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_portico"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTICO_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("serve")
        .env("PORTICO_LISTEN", "127.0.0.1:0")
        .env("PORTICO_DATA_DIR", &dir)
        .env("PORTICO_ADMIN_TOKEN", TOKEN)
        .env("PORTICO_AUDIT_APPEND", "deferred")
        // Nothing is committed by time or count while the test runs: only the shutdown can.
        .env("PORTICO_AUDIT_FLUSH_MS", "10000")
        .env("PORTICO_AUDIT_HEAD_INTERVAL_SECS", "0")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(url) = &database_url {
        cmd.env("PORTICO_DATABASE_URL", url);
    }
    let mut child = cmd.spawn().expect("spawn portico");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(a) = line.strip_prefix("portico listening on http://") {
                return a.trim().to_string();
            }
        }
        panic!("the server exited before listening")
    })
    .await
    .expect("the server did not start within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let http = reqwest::Client::new();
    let base = format!("http://{addr}/fhir");
    let created = http
        .post(format!("{base}/Patient"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let pid = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    const READS: u64 = 25;
    for _ in 0..READS {
        let r = http.get(format!("{base}/Patient/{pid}")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let label = if database_url.is_some() { "postgres" } else { "sqlite" };
    // The reads were answered; their records wait in the server's queue.
    assert_eq!(verify_command(&dir, database_url.as_deref()).0, 1, "{label}: only the create is committed yet");
    let pid_num = child.id().expect("pid");
    let st = std::process::Command::new("kill").args(["-TERM", &pid_num.to_string()]).status().unwrap();
    assert!(st.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("the server did not stop within 30 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "{label}: exit after SIGTERM: {exit:?}");
    let (records, heads) = verify_command(&dir, database_url.as_deref());
    assert_eq!(records, 1 + READS, "{label}: every answered read's record was committed at shutdown");
    assert!(heads >= 1, "{label}: the final head was signed after the flush");
    std::fs::remove_dir_all(&dir).ok();
}

/// `verify` reads the log in windows of record numbers, on two connections: a gap wider
/// than a window (deleted records) and a row numbered far beyond the others are named
/// exactly as in a small log, and an intact large log verifies.
#[tokio::test]
async fn verify_names_gaps_wider_than_a_scan_window_and_stray_rows() {
    for app in TestApp::all().await {
        let b = app.backend;
        let chainer = app.state.audit.chainer().clone();
        let recs = bulk_reads(5_000);
        app.state.store.audit_append(&chainer, &recs).await.expect("append");
        let report = verify(&app, None).await.expect("an intact log verifies");
        assert_eq!((report.records, report.last_seq), (5_000, 5_000), "{b:?}");
        // A stray row far beyond the head: one more window, not millions.
        exec(&app, "INSERT INTO audit_log SELECT 900000000000, ts, interaction, action, outcome, actor, client, record, hash, mac FROM audit_log WHERE seq = 10").await;
        let started = std::time::Instant::now();
        let f = tampered(verify(&app, None).await);
        assert_eq!((f.seq, f.problem), (5_001, Problem::Missing), "{b:?}: {f}");
        assert!(f.detail.contains("#899999999999"), "{b:?}: {f}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{b:?}: the gap was read window by window");
        exec(&app, "DELETE FROM audit_log WHERE seq = 900000000000").await;
        // Records #20 to #4,500 deleted: more than two windows of nothing.
        exec(&app, "DELETE FROM audit_subjects WHERE seq >= 20 AND seq <= 4500").await;
        exec(&app, "DELETE FROM audit_subjects_recent WHERE seq >= 20 AND seq <= 4500").await;
        exec(&app, "DELETE FROM audit_log WHERE seq >= 20 AND seq <= 4500").await;
        let f = tampered(verify(&app, None).await);
        assert_eq!((f.seq, f.problem), (20, Problem::Missing), "{b:?}: {f}");
        assert!(f.detail.contains("#20 to #4500"), "{b:?}: {f}");
    }
}

/// `verify` while records are being appended: its two connections see one log, so an intact
/// log never looks tampered with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_is_consistent_while_records_are_appended() {
    for app in TestApp::all().await {
        let b = app.backend;
        fill(&app, 3).await;
        let store = app.state.store.clone();
        let chainer = app.state.audit.chainer().clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut r = AuditRecord::new(
                        i,
                        &format!("live-{i}"),
                        Interaction::Read,
                        portico_audit::Actor::new("operator", "operator"),
                    );
                    r.patients = vec![format!("p{}", i % 3)];
                    store.audit_append(&chainer, &[r.clone(), r]).await.expect("append");
                    i += 1;
                }
                i
            })
        };
        for _ in 0..10 {
            let report = verify(&app, None).await.expect("a consistent snapshot verifies");
            assert!(report.records >= 3, "{b:?}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(writer.await.unwrap() > 0, "{b:?}: the writer appended while verify ran");
        assert!(verify(&app, None).await.is_ok());
    }
}

/// A second process over the same database with another audit key would leave records and
/// heads `audit verify` rejects: it is refused at start-up, unless the key is rotated on
/// purpose.
#[tokio::test]
async fn a_process_with_another_audit_key_is_refused_at_start() {
    for app in TestApp::all().await {
        assert_eq!(app.get("/fhir/Patient?_count=1").await.status, StatusCode::OK);
        app.state.audit.sign_head().await.expect("sign").expect("a head");
        // The same key (what `sharing` does) starts.
        let _same = app.sharing().await;
        let mut config = app.state.config.as_ref().clone();
        config.data_dir = temp_dir();
        config.audit.key_file = String::new(); // a fresh key in the new data dir
        let err = portico::cli::open(&config).await.err().expect("another key is refused");
        let msg = format!("{err:#}");
        assert!(msg.contains("same audit key file") && msg.contains("PORTICO_AUDIT_ROTATE_KEY"), "{msg}");
        config.audit.rotate_key = true;
        assert!(portico::cli::open(&config).await.is_ok(), "a deliberate rotation starts");
    }
}
