//! What a Consent write's signed event costs: sequential writes through the whole router
//! (in process, admin token), Consent creates and `$revoke`s against creates of an
//! Observation of about the same size, then `consent verify` over the log.
//!
//! ```sh
//! cargo run --release -p portico --example consent_events_bench -- sqlite 500
//! cargo run --release -p portico --example consent_events_bench -- postgres://user:pass@host/db 500
//! ```
//!
//! `SQLITE_SYNCHRONOUS=normal` runs SQLite without an fsync per commit (the CPU cost shows).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use portico::config::Config;
use serde_json::{Value, json};
use std::time::Instant;
use tower::ServiceExt;

const TOKEN: &str = "bench-admin-token-0123456789";

async fn send(router: &axum::Router, method: &str, uri: &str, body: Option<&Value>) -> (StatusCode, Value) {
    let mut b = Request::builder().method(method).uri(uri).header("host", "localhost");
    b = b.header("authorization", format!("Bearer {TOKEN}"));
    if body.is_some() {
        b = b.header("content-type", "application/fhir+json");
    }
    let body = body.map(|v| v.to_string()).unwrap_or_default();
    let resp = router.clone().oneshot(b.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn consent(i: usize) -> Value {
    let share = portico::consent::shares::Share {
        recipient: portico::consent::shares::Recipient {
            kind: portico::consent::shares::RecipientKind::Practitioner,
            id: format!("pr-{i}"),
            display: Some("Dr. Lee at Riverside Cardiology".into()),
        },
        categories: vec!["labs".into(), "medications".into()],
        purpose: "TREAT".into(),
        start: None,
        end: Some("2099-12-31".into()),
    };
    let mut c = portico::consent::shares::to_consent(&share, "x", &format!("p{}", i % 50), "2026-01-05T00:00:00Z");
    c.as_object_mut().unwrap().remove("id");
    c
}

fn observation(i: usize) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"}]},
        "subject": {"reference": format!("Patient/p{}", i % 50)}, "effectiveDateTime": "2026-01-05T10:00:00Z",
        "valueQuantity": {"value": 95, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
        "performer": [{"reference": format!("Practitioner/pr-{i}"), "display": "Dr. Lee at Riverside Cardiology"}],
        "note": [{"text": "fasting sample, drawn in the morning clinic"}]})
}

fn report(what: &str, n: usize, start: Instant) {
    let s = start.elapsed().as_secs_f64();
    println!("{what:<28} {n:>6} in {s:>7.2} s  {:>8.0}/s  {:>7.2} ms each", n as f64 / s, s * 1000.0 / n as f64);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let target = args.get(1).map(String::as_str).unwrap_or("sqlite");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(300);
    let dir = std::env::temp_dir().join(format!("portico-consent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let database_url =
        if target == "sqlite" { format!("sqlite://{}", dir.join("portico.db").display()) } else { target.to_string() };
    let mut config =
        Config { data_dir: dir.clone(), database_url, admin_token: TOKEN.to_string(), ..Config::default() };
    config.sqlite_synchronous = std::env::var("SQLITE_SYNCHRONOUS").unwrap_or_else(|_| "full".into());
    config.audit.append = "batched".into();
    let state = portico::cli::open(&config).await?;
    let router = portico::server::router(state.clone());

    let t = Instant::now();
    for i in 0..n {
        let (s, _) = send(&router, "POST", "/fhir/Observation", Some(&observation(i))).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    report("create Observation", n, t);

    let t = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (s, v) = send(&router, "POST", "/fhir/Consent", Some(&consent(i))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    report("create Consent (+ event)", n, t);

    let t = Instant::now();
    for id in &ids {
        let (s, v) = send(&router, "POST", &format!("/fhir/Consent/{id}/$revoke"), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    report("$revoke Consent (+ event)", n, t);

    let t = Instant::now();
    let (events, findings) =
        portico::cli::consent::verify(state.consents.as_ref(), &[state.audit.key().public()]).await?;
    assert!(findings.is_empty(), "{findings:?}");
    report("consent verify (events)", events, t);
    state.audit.flush().await.ok();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
