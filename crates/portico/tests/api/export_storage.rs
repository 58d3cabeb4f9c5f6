//! Bulk export with S3-compatible object storage, against a real S3 server that verifies
//! SigV4 signatures: `s3s-fs` (crates.io; `.ci/run` installs it with `cargo install`). Each
//! test starts its own server on a random port over a fresh directory (one folder per
//! bucket). The binary is found through `PORTICO_TEST_S3S_FS` or `PATH`; a missing binary
//! is a failure unless `PORTICO_TEST_S3_OPTIONAL=1` (never under `CI=true`).
//!
//! What is checked: the full cycle on both backends (manifest hashes match the downloaded
//! bytes, the objects are in the bucket under the job's folder, no local copies remain, the
//! PDF summary comes from the bucket), cancel, revocation and expiry removing the objects,
//! multipart uploads, a store that is down at finish time, and bad settings stopping
//! start-up.

use crate::common::oauth::Browser;
use crate::common::{Backend, TestApp};
use crate::export::{ASYNC, expire_now, observations, path_of, patient, poll, sha256_hex, stepped_up_token};
use crate::oauth::{LAUNCH_SCOPES, access, alice_and_diary, refresh_of};
use axum::http::{Method, StatusCode};
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use portico::config::Config;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

const BUCKET: &str = "portico-exports";
const PREFIX: &str = "test/exports";
/// The only key pair the server accepts.
const KEY_ID: &str = "portico-test";
const SECRET: &str = "portico-test-secret-key";

/// A running s3s-fs with one bucket; stopped and its data removed on drop.
pub struct S3Server {
    child: tokio::process::Child,
    pub endpoint: String,
    port: u16,
    data: PathBuf,
}

fn server_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PORTICO_TEST_S3S_FS")
        && !p.is_empty()
    {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join("s3s-fs")).find(|p| p.exists())
}

impl S3Server {
    /// Start a server (None: none installed and the tests were declared optional).
    pub async fn start() -> Option<S3Server> {
        let Some(bin) = server_binary() else {
            let optional = std::env::var("PORTICO_TEST_S3_OPTIONAL").is_ok_and(|v| v == "1")
                && !std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                optional,
                "no s3s-fs for the object storage tests: `cargo install s3s-fs@0.14.1 --features binary \
                 --locked` (or set PORTICO_TEST_S3S_FS), or PORTICO_TEST_S3_OPTIONAL=1 to skip them outside CI"
            );
            eprintln!("notice: s3s-fs not installed and PORTICO_TEST_S3_OPTIONAL=1: skipping");
            return None;
        };
        let data = crate::common::temp_dir();
        std::fs::create_dir_all(data.join(BUCKET)).unwrap();
        let (child, addr) = launch(&bin, &data, 0).await;
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Some(S3Server { child, endpoint: format!("http://{addr}"), port, data })
    }

    /// Stop the server, keeping its data.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Start it again on the same port over the same data.
    pub async fn restart(&mut self) {
        let (child, _) = launch(&server_binary().unwrap(), &self.data, self.port).await;
        self.child = child;
    }

    /// Point an app's export configuration at this server.
    pub fn configure(&self, c: &mut Config) {
        c.export.store = format!("s3://{BUCKET}/{PREFIX}");
        c.export.s3_endpoint = self.endpoint.clone();
        c.export.s3_region = "us-east-1".into();
        c.export.s3_access_key_id = KEY_ID.into();
        c.export.s3_secret_access_key = SECRET.into();
        c.export.s3_allow_http = true;
    }

    /// An independent client of the bucket (not portico's), to look at what is stored.
    pub fn client(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_bucket_name(BUCKET)
                .with_endpoint(&self.endpoint)
                .with_region("us-east-1")
                .with_access_key_id(KEY_ID)
                .with_secret_access_key(SECRET)
                .with_allow_http(true)
                .build()
                .unwrap(),
        )
    }

    /// The object names under a job's folder.
    pub async fn job_objects(&self, job: &str) -> Vec<String> {
        let prefix = Key::from(format!("{PREFIX}/{job}"));
        let metas: Vec<object_store::ObjectMeta> = self.client().list(Some(&prefix)).try_collect().await.unwrap();
        let mut names: Vec<String> = metas.into_iter().map(|m| m.location.filename().unwrap().to_string()).collect();
        names.sort();
        names
    }
}

/// Run the server on `port` (0: any) over `data`; the child and its address.
async fn launch(bin: &std::path::Path, data: &std::path::Path, port: u16) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", KEY_ID, "--secret-key", SECRET])
        .arg(data)
        // It announces its address at info level (on stdout).
        .env("RUST_LOG", "s3s_fs=info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start s3s-fs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.expect("s3s-fs output") {
            if let Some((_, a)) = l.split_once("server is running at http://") {
                return a.trim().to_string();
            }
        }
        panic!("s3s-fs exited before listening");
    })
    .await
    .expect("s3s-fs listening within 30 s");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// An app whose exports go to `s3`.
async fn app_on(backend: Backend, s3: &S3Server, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
    TestApp::with_config(backend, |c| {
        s3.configure(c);
        tweak(c);
    })
    .await
}

/// GET with a bearer token; status, content type and the raw bytes.
async fn fetch(app: &TestApp, token: &str, uri: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .uri(uri)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, ct, axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec())
}

async fn kick(app: &TestApp, token: &str, uri: &str) -> String {
    let r = app.raw(Method::GET, uri, &[("authorization", &format!("Bearer {token}")), ASYNC], vec![]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{uri}: {}", r.text);
    path_of(r.header("content-location").unwrap())
}

fn job_of(status_url: &str) -> String {
    status_url.rsplit('/').next().unwrap().to_string()
}

fn file_names(manifest: &Value) -> Vec<String> {
    let mut names: Vec<String> = manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Wait until a job's folder in the bucket is empty (a withdrawal runs right after the state
/// moves).
async fn wait_gone(s3: &S3Server, job: &str) -> Vec<String> {
    let mut left = Vec::new();
    for _ in 0..200 {
        left = s3.job_objects(job).await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    left
}

#[tokio::test]
async fn the_full_export_cycle_keeps_its_files_in_the_bucket() {
    let Some(s3) = S3Server::start().await else { return };
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = app_on(backend, &s3, |c| c.export.batch = 5).await else { continue };
        patient(&app, "po").await;
        observations(&app, "po", 23).await;
        portico::export::spawn(&app.state);
        let token = crate::common::TOKEN;
        let status_url = kick(&app, token, "/fhir/Patient/po/$export?_outputFormat=application/pdf").await;
        let job = job_of(&status_url);
        let done = poll(&app, token, &status_url).await;
        assert_eq!(done.status, StatusCode::OK, "{backend:?}: {}", done.text);
        let m = &done.json;

        // Every listed file is in the bucket under the job's folder, and nothing else is.
        let names = file_names(m);
        assert_eq!(names, ["Observation.ndjson", "Patient.ndjson", "summary.pdf"], "{m}");
        assert_eq!(s3.job_objects(&job).await, names, "{backend:?}");
        // The local staging copies are gone once the bucket holds the files.
        assert!(!app.state.export.job_dir(&job).exists(), "{backend:?}: staging removed");

        // Downloads stream from the bucket through portico; the bytes match the manifest
        // and what the bucket holds.
        let client = s3.client();
        for o in m["output"].as_array().unwrap() {
            let url = path_of(o["url"].as_str().unwrap());
            let (status, ct, bytes) = fetch(&app, token, &url).await;
            assert_eq!(status, StatusCode::OK, "{url}");
            let ext = &o["extension"];
            assert_eq!(sha256_hex(&bytes), ext["https://portico.invalid/fhir/bulk/sha256"], "{o}");
            assert_eq!(bytes.len() as u64, ext["https://portico.invalid/fhir/bulk/bytes"].as_u64().unwrap());
            let name = url.rsplit('/').next().unwrap();
            let key = Key::from(format!("{PREFIX}/{job}/{name}"));
            let stored = client.get(&key).await.unwrap().bytes().await.unwrap();
            assert_eq!(stored.as_ref(), bytes.as_slice(), "{name}: served bytes are the stored object");
            if name == "summary.pdf" {
                assert_eq!(ct.as_deref(), Some("application/pdf"));
                assert!(bytes.starts_with(b"%PDF-"), "the PDF summary comes from the bucket");
            } else {
                let lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
                assert_eq!(lines as u64, o["count"].as_u64().unwrap());
            }
        }
        let obs = m["output"].as_array().unwrap().iter().find(|o| o["type"] == "Observation").unwrap();
        assert_eq!(obs["count"], 23);

        // The access re-check stays in front of the bucket: no token, no bytes.
        let url = path_of(m["output"][0]["url"].as_str().unwrap());
        assert_eq!(app.raw(Method::GET, &url, &[], vec![]).await.status, StatusCode::UNAUTHORIZED);

        // Cancelling the completed export deletes its objects and rows.
        assert_eq!(app.delete(&status_url).await.status, StatusCode::ACCEPTED);
        assert!(s3.job_objects(&job).await.is_empty(), "{backend:?}: objects removed on cancel");
        assert!(app.state.export.store.export_files(&job).await.unwrap().is_empty());
        assert_eq!(fetch(&app, token, &url).await.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn revocation_and_expiry_remove_the_objects() {
    let Some(s3) = S3Server::start().await else { return };
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = app_on(backend, &s3, |_| {}).await else { continue };
        alice_and_diary(&app).await;
        observations(&app, "pa", 4).await;
        portico::export::spawn(&app.state);

        // Revocation after completion: the next download is refused and the objects go.
        let mut b = Browser::default();
        let t = stepped_up_token(&app, &mut b, "diary").await;
        let status_url = kick(&app, &access(&t), "/fhir/Patient/pa/$export?_type=Observation").await;
        let job = job_of(&status_url);
        let done = poll(&app, &access(&t), &status_url).await;
        assert_eq!(done.status, StatusCode::OK, "{backend:?}: {}", done.text);
        assert_eq!(s3.job_objects(&job).await, ["Observation.ndjson"]);
        let url = path_of(done.json["output"][0]["url"].as_str().unwrap());
        assert_eq!(fetch(&app, &access(&t), &url).await.0, StatusCode::OK);
        assert_eq!(app.revoke("diary", &refresh_of(&t)).await.status, StatusCode::OK);
        let again = app.launch_in(&mut b, "diary", LAUNCH_SCOPES, "alice").await;
        assert_eq!(fetch(&app, &access(&again), &url).await.0, StatusCode::FORBIDDEN, "{backend:?}");
        assert!(wait_gone(&s3, &job).await.is_empty(), "{backend:?}: objects removed on revocation");
        assert!(app.state.export.store.export_files(&job).await.unwrap().is_empty());

        // Expiry: the sweeper deletes the objects.
        let status_url = kick(&app, crate::common::TOKEN, "/fhir/Patient/pa/$export").await;
        let job = job_of(&status_url);
        assert_eq!(poll(&app, crate::common::TOKEN, &status_url).await.status, StatusCode::OK);
        assert!(!s3.job_objects(&job).await.is_empty());
        expire_now(&app, &job).await;
        portico::export::worker::sweep_once(&app.state.export, &app.state).await;
        assert!(s3.job_objects(&job).await.is_empty(), "{backend:?}: objects removed on expiry");
        assert_eq!(app.get(&status_url).await.status, StatusCode::NOT_FOUND);
    }
}

/// A store that is down when the job finishes: the job stays unfinished (no manifest lists a
/// file the bucket does not hold) and is finished on a later claim once the store is back.
#[tokio::test]
async fn a_store_outage_at_finish_is_retried_on_the_next_claim() {
    let Some(mut s3) = S3Server::start().await else { return };
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = app_on(backend, &s3, |c| c.export.lease_secs = 1).await else { continue };
        patient(&app, "pr").await;
        observations(&app, "pr", 6).await;
        s3.stop().await;
        let token = crate::common::TOKEN;
        let status_url = kick(&app, token, "/fhir/Patient/pr/$export").await;
        let job = job_of(&status_url);
        portico::export::spawn(&app.state);
        // The batches are written; publishing fails while the store is down.
        let mut seen_done = false;
        for _ in 0..400 {
            let j = app.state.export.store.export_get(&job).await.unwrap().unwrap();
            let p: Value = serde_json::from_str(&j.progress).unwrap_or_default();
            if p["unit"].as_u64().is_some() && p["unit"] == p["units"] {
                seen_done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(seen_done, "{backend:?}: every batch written");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = app.raw(Method::GET, &status_url, &[("authorization", &format!("Bearer {token}"))], vec![]).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{backend:?}: not completed while the store is down: {}", r.text);
        assert!(app.state.export.store.export_files(&job).await.unwrap().is_empty(), "no file recorded");
        assert!(app.state.export.job_dir(&job).join("Observation.ndjson").exists(), "staging kept");

        s3.restart().await;
        let done = poll(&app, token, &status_url).await;
        assert_eq!(done.status, StatusCode::OK, "{backend:?}: {}", done.text);
        assert_eq!(s3.job_objects(&job).await, file_names(&done.json));
        for o in done.json["output"].as_array().unwrap() {
            let (status, _, bytes) = fetch(&app, token, &path_of(o["url"].as_str().unwrap())).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(sha256_hex(&bytes), o["extension"]["https://portico.invalid/fhir/bulk/sha256"]);
        }
        assert!(!app.state.export.job_dir(&job).exists());
    }
}

/// Files past one part go up as a multipart upload; publishing again (a repeated finish)
/// gives the same object; removal clears the job's folder.
#[tokio::test]
async fn large_files_go_up_in_parts_and_publishing_is_idempotent() {
    let Some(s3) = S3Server::start().await else { return };
    let dir = crate::common::temp_dir();
    let mut cfg = Config::default();
    s3.configure(&mut cfg);
    let settings = cfg.export.s3_settings().unwrap().unwrap();
    let storage = portico::export::storage::Storage::bucket(dir.clone(), &settings).await.unwrap();
    let job = uuid::Uuid::new_v4().to_string();
    std::fs::create_dir_all(storage.job_dir(&job)).unwrap();
    // 2.5 parts of distinct lines, so a misplaced part would change the hash.
    let line_len = 100;
    let lines = (portico::export::storage::PART_BYTES * 5 / 2) / line_len;
    let mut content = Vec::with_capacity(lines * line_len);
    for i in 0..lines {
        content.extend_from_slice(format!("{{\"n\":{i:0>width$}}}\n", width = line_len - 8).as_bytes());
    }
    std::fs::write(storage.job_dir(&job).join("Observation.ndjson"), &content).unwrap();
    let (sha, len) = storage.publish(&job, "Observation.ndjson", None).await.unwrap();
    assert_eq!(len, content.len() as u64);
    assert_eq!(sha, sha256_hex(&content));
    // Again (a resumed finish), now with the digest taken while writing: the upload's own
    // hash must agree with it.
    let again = storage.publish(&job, "Observation.ndjson", Some((sha.clone(), len))).await.unwrap();
    assert_eq!(again, (sha.clone(), len));
    let wrong = storage.publish(&job, "Observation.ndjson", Some((sha256_hex(b"other"), len))).await;
    assert!(matches!(wrong, Err(portico::export::storage::StorageError::Changed { .. })), "{wrong:?}");
    assert_eq!(s3.job_objects(&job).await, ["Observation.ndjson"]);
    let read: Vec<bytes::Bytes> = storage.read(&job, "Observation.ndjson").await.unwrap().try_collect().await.unwrap();
    assert_eq!(sha256_hex(&read.concat()), sha);
    storage.release_staging(&job).await;
    assert!(!storage.job_dir(&job).exists());
    storage.remove(&job).await.unwrap();
    assert!(s3.job_objects(&job).await.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A wrong secret (the server checks SigV4 signatures), a missing bucket or an unreachable
/// endpoint stop start-up with the reason.
#[tokio::test]
async fn bad_store_settings_stop_start_up() {
    let Some(s3) = S3Server::start().await else { return };
    let open = |tweak: Box<dyn FnOnce(&mut Config)>| {
        let data_dir = crate::common::temp_dir();
        let mut config = Config {
            data_dir: data_dir.clone(),
            database_url: format!("sqlite://{}", data_dir.join("portico.db").display()),
            ..Config::default()
        };
        config.auth.signing_key_file =
            std::env::temp_dir().join("portico-test-oauth-signing-key.pem").display().to_string();
        s3.configure(&mut config);
        tweak(&mut config);
        async move {
            let r = portico::cli::open(&config).await.map(|_| ()).map_err(|e| format!("{e:#}"));
            let _ = std::fs::remove_dir_all(&data_dir);
            r
        }
    };
    assert!(open(Box::new(|_| {})).await.is_ok(), "the right settings start");
    let e = open(Box::new(|c| c.export.s3_secret_access_key = "wrong".into())).await.unwrap_err();
    assert!(e.contains("export store s3://") && e.contains("cannot be listed"), "{e}");
    assert!(e.contains("SignatureDoesNotMatch"), "the signature is checked: {e}");
    let e = open(Box::new(|c| c.export.store = "s3://no-such-bucket/x".into())).await.unwrap_err();
    assert!(e.contains("s3://no-such-bucket/x"), "{e}");
    let e = open(Box::new(|c| c.export.s3_endpoint = "http://127.0.0.1:9".into())).await.unwrap_err();
    assert!(e.contains("cannot be listed"), "{e}");
}
