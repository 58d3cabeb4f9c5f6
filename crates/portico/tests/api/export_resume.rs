//! `kill -9` of the real `portico` binary in the middle of an export: after a restart on
//! the same database the job resumes from its checkpoint, and the files hold every
//! resource exactly once, with the hashes and counts the manifest states.

use crate::common::{TOKEN, fresh_pg_schema, postgres_url};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(data_dir: &Path, database_url: Option<&str>) -> Server {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("server.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portico"));
        for (k, _) in std::env::vars() {
            if k.starts_with("PORTICO_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("serve")
            .env("PORTICO_LISTEN", "127.0.0.1:0")
            .env("PORTICO_DATA_DIR", data_dir)
            .env("PORTICO_ADMIN_TOKEN", TOKEN)
            // Small batches (many checkpoints) and a short lease (quick takeover).
            .env("PORTICO_EXPORT_BATCH", "20")
            .env("PORTICO_EXPORT_LEASE_SECS", "1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if let Some(url) = database_url {
            cmd.env("PORTICO_DATABASE_URL", url);
        }
        let mut child = cmd.spawn().expect("spawn portico");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(a) = line.strip_prefix("portico listening on http://") {
                    return a.trim().to_string();
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("the server did not start within 60 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { child, base: format!("http://{addr}") }
    }
}

async fn get(c: &reqwest::Client, url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = c.get(url).bearer_auth(TOKEN).send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

async fn resume_after_kill(database_url: Option<String>) {
    let label = if database_url.is_some() { "postgres" } else { "sqlite" };
    let dir: PathBuf = std::env::temp_dir().join(format!("portico-export-kill-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = reqwest::Client::new();
    let server = Server::start(&dir, database_url.as_deref()).await;
    let fhir = format!("{}/fhir", server.base);
    let r = c
        .put(format!("{fhir}/Patient/pk"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "id": "pk"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    const N: usize = 3000;
    let mut created = BTreeSet::new();
    for chunk in 0..(N / 500) {
        let entries: Vec<Value> = (0..500)
            .map(|i| {
                json!({"resource": {"resourceType": "Observation", "status": "final",
                    "code": {"text": format!("obs {}", chunk * 500 + i)},
                    "subject": {"reference": "Patient/pk"}}, "request": {"method": "POST", "url": "Observation"}})
            })
            .collect();
        let r = c
            .post(&fhir)
            .bearer_auth(TOKEN)
            .header("content-type", "application/fhir+json")
            .body(json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let b: Value = r.json().await.unwrap();
        for e in b["entry"].as_array().unwrap() {
            let loc = e["response"]["location"].as_str().unwrap();
            created.insert(loc.split('/').nth(1).unwrap().to_string());
        }
    }
    assert_eq!(created.len(), N);

    let r = c
        .get(format!("{fhir}/Patient/pk/$export?_type=Observation"))
        .bearer_auth(TOKEN)
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let status_url = r.headers()["content-location"].to_str().unwrap().to_string();
    let status_path = status_url.split_once("/fhir").unwrap().1.to_string();

    // Kill it once some batches, but not all, are written.
    let mut written = 0usize;
    for _ in 0..3000 {
        let (st, h, _) = get(&c, &status_url).await;
        assert_eq!(st, 202, "{label}: finished before it could be killed");
        let p = h.get("x-progress").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        written = p.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        if written >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!((200..N).contains(&written), "{label}: caught mid-export at {written}");
    let mut child = server.child;
    child.kill().await.expect("kill -9");

    // Restart on the same database: the lease lapses, the job resumes from its checkpoint.
    let server = Server::start(&dir, database_url.as_deref()).await;
    let status_url = format!("{}/fhir{status_path}", server.base);
    let mut manifest = Value::Null;
    for _ in 0..1200 {
        let (st, _, body) = get(&c, &status_url).await;
        if st == 200 {
            manifest = serde_json::from_str(&body).unwrap();
            break;
        }
        assert_eq!(st, 202, "{label}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = manifest["output"].as_array().expect("completed after the restart");
    assert_eq!(out.len(), 1, "{manifest}");
    let url = out[0]["url"].as_str().unwrap().replace(status_url.split("/fhir").next().unwrap(), &server.base);
    let (st, _, body) = get(&c, &url).await;
    assert_eq!(st, 200);
    let ext = &out[0]["extension"];
    assert_eq!(hex::encode(Sha256::digest(body.as_bytes())), ext["https://portico.invalid/fhir/bulk/sha256"]);
    assert_eq!(body.len() as u64, ext["https://portico.invalid/fhir/bulk/bytes"].as_u64().unwrap());
    let mut seen = BTreeSet::new();
    for line in body.lines() {
        let v: Value = serde_json::from_str(line).expect("each line whole JSON: no torn line after the kill");
        assert!(seen.insert(v["id"].as_str().unwrap().to_string()), "{label}: a line written twice");
    }
    assert_eq!(body.lines().count(), N, "{label}: every line exactly once");
    assert_eq!(out[0]["count"].as_u64().unwrap() as usize, N);
    assert_eq!(seen, created, "{label}: exactly the patient's Observations");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn kill_9_mid_export_resumes_with_every_line_exactly_once_sqlite() {
    resume_after_kill(None).await;
}

#[tokio::test]
async fn kill_9_mid_export_resumes_with_every_line_exactly_once_postgres() {
    let Some(admin) = postgres_url() else { return };
    resume_after_kill(Some(fresh_pg_schema(&admin).await)).await;
}
