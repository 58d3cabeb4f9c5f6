//! Crash safety of the real binary: concurrent clients write (creates, updates, deletes,
//! transactions) while the server is killed with SIGKILL; after a restart on the same data
//! every acknowledged write must be there, and nothing half-written may be: histories are
//! contiguous, reads return the newest version, index rows match the stored versions and
//! every transaction is all or nothing. A clean SIGTERM must shut down and restart too.

use super::common::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Identifier system and Observation code system of everything this test writes.
const SYS: &str = "urn:portico:durability";
/// Concurrent client tasks.
const WRITERS: usize = 6;

/// A temp data dir removed at the end (also on panic).
struct TempDir(PathBuf);
impl TempDir {
    fn new() -> TempDir {
        let d = std::env::temp_dir().join(format!("portico-durability-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `portico serve` child process.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    async fn start(data_dir: &Path, database_url: Option<&str>) -> Server {
        let log = data_dir.join("server.log");
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
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
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        if let Some(url) = database_url {
            cmd.env("PORTICO_DATABASE_URL", url);
        }
        let mut child = cmd.spawn().expect("spawn portico");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(a) = line.strip_prefix("portico listening on http://") {
                    return Some(a.trim().to_string());
                }
            }
            None
        })
        .await
        .expect("the server did not start within 60 s");
        let Some(addr) = addr else {
            let status = child.wait().await;
            panic!(
                "the server exited before listening ({status:?}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { child, base: format!("http://{addr}/fhir"), log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reap.
    async fn kill9(mut self) {
        self.child.kill().await.expect("kill -9");
    }

    /// SIGTERM, then wait for a clean exit.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("pid");
        let st = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill -TERM");
        assert!(st.success(), "kill -TERM failed");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server did not stop within 30 s of SIGTERM")
            .expect("wait")
    }
}

/// A FHIR client of one server.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

struct Answer {
    status: u16,
    etag: Option<String>,
    json: Value,
    text: String,
}

impl Client {
    fn new(base: &str) -> Client {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Client { http, base: base.to_string() }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<i64>,
    ) -> Result<Answer, reqwest::Error> {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) };
        let mut rb = self.http.request(method, url).bearer_auth(TOKEN);
        if let Some(b) = body {
            rb = rb.header("content-type", "application/fhir+json").body(b.to_string());
        }
        if let Some(v) = if_match {
            rb = rb.header("if-match", format!("W/\"{v}\""));
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, etag, json, text })
    }

    async fn get(&self, path: &str) -> Answer {
        let a = self.send(Method::GET, path, None, None).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(a.status == 200 || a.status == 404 || a.status == 410, "GET {path}: {} {}", a.status, a.text);
        a
    }

    /// Ids of every match of a search, following `next` links.
    async fn search_ids(&self, path: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut url = path.to_string();
        loop {
            let a = self.get(&url).await;
            assert_eq!(a.status, 200, "{url}: {}", a.text);
            for e in a.json["entry"].as_array().into_iter().flatten() {
                if e["search"]["mode"] == "match" {
                    out.insert(e["resource"]["id"].as_str().expect("id").to_string());
                }
            }
            match a.json["link"].as_array().and_then(|l| l.iter().find(|l| l["relation"] == "next")) {
                Some(next) => url = next["url"].as_str().expect("next url").to_string(),
                None => return out,
            }
        }
    }
}

fn etag_version(etag: Option<&str>) -> Option<i64> {
    etag?.trim_start_matches("W/").trim_matches('"').parse().ok()
}

fn version_of_location(loc: &str) -> Option<(String, String, i64)> {
    let parts: Vec<&str> = loc.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [.., rt, id, "_history", v] => Some((rt.to_string(), id.to_string(), v.parse().ok()?)),
        _ => None,
    }
}

/// What an acknowledged version held.
#[derive(Debug, Clone, PartialEq)]
enum Acked {
    /// A Patient with this family name.
    Family(String),
    /// An Observation about this patient.
    ObsOf(String),
    Deleted,
}

/// Every acknowledged write, and anything unexpected the server answered.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<(String, String), BTreeMap<i64, Acked>>,
    /// Patients created by a transaction (each must have exactly two Observations).
    tx_patients: BTreeSet<String>,
    /// Resources some request touched in the current cycle (acknowledged or not).
    touched: BTreeSet<(String, String)>,
    unexpected: Vec<String>,
}

/// A tiny deterministic PRNG (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The state of one patient as the server holds it now (from the last verification).
#[derive(Clone, Debug)]
struct Live {
    id: String,
    version: i64,
}

/// One client task: writes until the server goes away.
async fn writer(client: Client, ledger: Arc<Mutex<Ledger>>, w: usize, cycle: usize, mut mine: Vec<Live>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((cycle as u64) << 32) ^ (w as u64 + 1));
    let mut n = 0;
    loop {
        n += 1;
        let family = format!("C{cycle}W{w}N{n}");
        let pick = rng.next() % 10;
        let target = (!mine.is_empty()).then(|| (rng.next() as usize) % mine.len());
        let result = match (pick, target) {
            (4..=6, Some(t)) => {
                let Live { id, version } = mine[t].clone();
                ledger.lock().unwrap().touched.insert(("Patient".into(), id.clone()));
                let body = json!({"resourceType": "Patient", "id": id, "identifier": [{"system": SYS, "value": format!("key-{id}")}], "name": [{"family": family}]});
                let r = client.send(Method::PUT, &format!("/Patient/{id}"), Some(&body), Some(version)).await;
                r.inspect(|a| {
                    if a.status == 200 {
                        let v = etag_version(a.etag.as_deref()).expect("etag");
                        ledger
                            .lock()
                            .unwrap()
                            .acked
                            .entry(("Patient".into(), id.clone()))
                            .or_default()
                            .insert(v, Acked::Family(family.clone()));
                        mine[t].version = v;
                    }
                })
            }
            (9, Some(t)) => {
                let Live { id, version } = mine.remove(t);
                ledger.lock().unwrap().touched.insert(("Patient".into(), id.clone()));
                let r = client.send(Method::DELETE, &format!("/Patient/{id}"), None, Some(version)).await;
                r.inspect(|a| {
                    if a.status == 204 {
                        let v = etag_version(a.etag.as_deref()).expect("etag of a delete");
                        ledger
                            .lock()
                            .unwrap()
                            .acked
                            .entry(("Patient".into(), id.clone()))
                            .or_default()
                            .insert(v, Acked::Deleted);
                    }
                })
            }
            (7..=8, _) => {
                let pu = format!("urn:uuid:{}", uuid::Uuid::new_v4());
                let obs = |k: usize| {
                    json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": SYS, "code": "obs"}]},
                        "valueString": format!("{family}-{k}"), "subject": {"reference": pu}}, "request": {"method": "POST", "url": "Observation"}})
                };
                let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                    {"fullUrl": pu, "resource": {"resourceType": "Patient", "identifier": [{"system": SYS, "value": format!("tx-{family}")}], "name": [{"family": family}]}, "request": {"method": "POST", "url": "Patient"}},
                    obs(1), obs(2)
                ]});
                let r = client.send(Method::POST, "", Some(&bundle), None).await;
                r.inspect(|a| {
                    if a.status == 200 {
                        let mut l = ledger.lock().unwrap();
                        let mut patient = None;
                        for e in a.json["entry"].as_array().expect("entries") {
                            let (rt, id, v) =
                                version_of_location(e["response"]["location"].as_str().expect("location"))
                                    .expect("location");
                            let what = if rt == "Patient" {
                                patient = Some(id.clone());
                                Acked::Family(family.clone())
                            } else {
                                Acked::ObsOf(patient.clone().expect("patient first"))
                            };
                            l.acked.entry((rt, id)).or_default().insert(v, what);
                        }
                        let p = patient.expect("patient");
                        l.tx_patients.insert(p.clone());
                        l.touched.insert(("Patient".into(), p.clone()));
                        mine.push(Live { id: p, version: 1 });
                    }
                })
            }
            _ => {
                // A plain create; its identifier is fixed at creation (`key-<id>` is set by
                // the first update, so a search by the system finds creates and updates).
                let body = json!({"resourceType": "Patient", "identifier": [{"system": SYS, "value": format!("new-{family}")}], "name": [{"family": family}]});
                let r = client.send(Method::POST, "/Patient", Some(&body), None).await;
                r.inspect(|a| {
                    if a.status == 201 {
                        let id = a.json["id"].as_str().expect("id").to_string();
                        let mut l = ledger.lock().unwrap();
                        l.acked
                            .entry(("Patient".into(), id.clone()))
                            .or_default()
                            .insert(1, Acked::Family(family.clone()));
                        l.touched.insert(("Patient".into(), id.clone()));
                        mine.push(Live { id, version: 1 });
                    }
                })
            }
        };
        match result {
            Ok(a) if (200..300).contains(&a.status) => {}
            Ok(a) => ledger.lock().unwrap().unexpected.push(format!(
                "writer {w}: {} {}",
                a.status,
                a.text.chars().take(300).collect::<String>()
            )),
            // The server is gone (killed): stop.
            Err(_) => return,
        }
    }
}

/// Check the whole store against the ledger; return each writer's live patients.
async fn verify(client: &Client, ledger: &Mutex<Ledger>, label: &str) -> Vec<Live> {
    let (acked, tx_patients, touched) = {
        let l = ledger.lock().unwrap();
        assert!(l.unexpected.is_empty(), "{label}: unexpected answers while writing: {:#?}", l.unexpected);
        (l.acked.clone(), l.tx_patients.clone(), l.touched.clone())
    };
    // Index rows match the stored versions: the live set by type (resources table) equals
    // the set found through the token index.
    let patients = client.search_ids("/Patient?_count=1000").await;
    let by_identifier = client.search_ids(&format!("/Patient?identifier={SYS}|&_count=1000")).await;
    assert_eq!(patients, by_identifier, "{label}: Patient search by index differs from the live set");
    let observations = client.search_ids("/Observation?_count=1000").await;
    let by_code = client.search_ids(&format!("/Observation?code={SYS}|obs&_count=1000")).await;
    assert_eq!(observations, by_code, "{label}: Observation search by index differs from the live set");

    // Every acknowledged write is there, with at least its version.
    for ((rt, id), versions) in &acked {
        let (&top, what) = versions.iter().next_back().expect("a version");
        let r = client.get(&format!("/{rt}/{id}")).await;
        match what {
            Acked::Deleted => {
                assert_eq!(r.status, 410, "{label}: acknowledged delete of {rt}/{id} v{top} lost: {}", r.text)
            }
            _ => {
                // A later, unacknowledged write may have landed; then it may also be a delete.
                assert!(
                    r.status == 200 || r.status == 410,
                    "{label}: acknowledged {rt}/{id} v{top} missing: {} {}",
                    r.status,
                    r.text
                );
                if r.status == 200 {
                    let v = etag_version(r.etag.as_deref()).expect("etag");
                    assert!(v >= top, "{label}: {rt}/{id} is at v{v}, but v{top} was acknowledged");
                }
            }
        }
        for (v, what) in versions {
            let r = client.get(&format!("/{rt}/{id}/_history/{v}")).await;
            match what {
                Acked::Deleted => assert_eq!(r.status, 410, "{label}: {rt}/{id} v{v}"),
                Acked::Family(f) => {
                    assert_eq!(r.status, 200, "{label}: acknowledged {rt}/{id} v{v} missing: {}", r.text);
                    assert_eq!(
                        r.json["name"][0]["family"].as_str(),
                        Some(f.as_str()),
                        "{label}: {rt}/{id} v{v} content"
                    );
                }
                Acked::ObsOf(p) => {
                    assert_eq!(r.status, 200, "{label}: acknowledged {rt}/{id} v{v} missing: {}", r.text);
                    assert_eq!(
                        r.json["subject"]["reference"].as_str(),
                        Some(format!("Patient/{p}").as_str()),
                        "{label}: {rt}/{id}"
                    );
                }
            }
        }
    }

    // Everything touched in this cycle, and everything new (acknowledged or not): contiguous
    // history ending at the version a read returns, current index rows only.
    let known: BTreeSet<(String, String)> = acked.keys().cloned().collect();
    let unacknowledged = patients.iter().filter(|id| !known.contains(&("Patient".to_string(), id.to_string()))).count();
    eprintln!(
        "{label}: {} live patients, {} observations, {unacknowledged} patients from writes cut off by the kill",
        patients.len(),
        observations.len()
    );
    let mut deep: BTreeSet<(String, String)> = touched;
    deep.extend(patients.iter().map(|id| ("Patient".to_string(), id.clone())).filter(|k| !known.contains(k)));
    if label.ends_with("final") {
        deep.extend(acked.keys().filter(|(rt, _)| rt == "Patient").cloned());
    }
    for (rt, id) in &deep {
        let h = client.get(&format!("/{rt}/{id}/_history?_count=1000")).await;
        if h.status == 404 {
            assert!(!acked.contains_key(&(rt.clone(), id.clone())), "{label}: {rt}/{id} has no history");
            continue;
        }
        let versions: Vec<i64> = h.json["entry"]
            .as_array()
            .expect("history entries")
            .iter()
            .map(|e| etag_version(e["response"]["etag"].as_str()).expect("etag"))
            .collect();
        let n = versions.len() as i64;
        assert_eq!(versions, (1..=n).rev().collect::<Vec<_>>(), "{label}: history of {rt}/{id} is not contiguous");
        let newest = &h.json["entry"][0];
        let r = client.get(&format!("/{rt}/{id}")).await;
        if newest["request"]["method"] == "DELETE" {
            assert_eq!(r.status, 410, "{label}: {rt}/{id} was deleted at v{n}");
            assert!(!patients.contains(id), "{label}: the deleted {rt}/{id} is still found by search");
            continue;
        }
        assert_eq!(r.status, 200, "{label}: {rt}/{id}");
        assert_eq!(etag_version(r.etag.as_deref()), Some(n), "{label}: read of {rt}/{id} is not the newest version");
        assert_eq!(r.json, newest["resource"], "{label}: read and history of {rt}/{id} differ");
        assert!(patients.contains(id), "{label}: the live {rt}/{id} is not found by type search");
        let family = r.json["name"][0]["family"].as_str().expect("family").to_string();
        let found = client.search_ids(&format!("/Patient?family:exact={family}")).await;
        assert_eq!(found, BTreeSet::from([id.clone()]), "{label}: search by the current family of {rt}/{id}");
        if n > 1 {
            let old = client.get(&format!("/{rt}/{id}/_history/{}", n - 1)).await;
            if let Some(old_family) = old.json["name"][0]["family"].as_str().filter(|f| *f != family) {
                let found = client.search_ids(&format!("/Patient?family:exact={old_family}")).await;
                assert!(!found.contains(id), "{label}: a stale index row finds {rt}/{id} by its old family");
            }
        }
    }

    // Transactions are all or nothing: every transaction patient that exists (acknowledged
    // or not) has exactly its two Observations.
    let mut obs_by_patient: HashMap<String, usize> = HashMap::new();
    for id in &observations {
        let r = client.get(&format!("/Observation/{id}")).await;
        let p = r.json["subject"]["reference"].as_str().expect("subject").trim_start_matches("Patient/").to_string();
        *obs_by_patient.entry(p).or_default() += 1;
    }
    for (p, count) in &obs_by_patient {
        assert_eq!(*count, 2, "{label}: transaction of Patient/{p} is partly stored");
        let h = client.get(&format!("/Patient/{p}/_history/1")).await;
        assert_eq!(h.status, 200, "{label}: Observations of a transaction whose Patient/{p} is missing");
        assert!(
            h.json["identifier"][0]["value"].as_str().is_some_and(|v| v.starts_with("tx-")),
            "{label}: Patient/{p}"
        );
    }
    for p in &tx_patients {
        assert_eq!(
            obs_by_patient.get(p),
            Some(&2),
            "{label}: acknowledged transaction of Patient/{p} lost Observations"
        );
    }
    for id in &patients {
        let r = client.get(&format!("/Patient/{id}/_history/1")).await;
        if r.json["identifier"][0]["value"].as_str().is_some_and(|v| v.starts_with("tx-")) {
            assert_eq!(obs_by_patient.get(id), Some(&2), "{label}: transaction Patient/{id} without its Observations");
        }
    }
    let subjects = client.search_ids(&format!("/Observation?code={SYS}|obs&subject:missing=false&_count=1000")).await;
    assert_eq!(subjects, observations, "{label}: reference index of Observations");

    // Hand each writer its live patients at their current versions.
    let mut live = Vec::new();
    for id in &patients {
        let r = client.get(&format!("/Patient/{id}")).await;
        live.push(Live { id: id.clone(), version: etag_version(r.etag.as_deref()).expect("etag") });
    }
    live
}

/// Wait until the writers have had `n` versions acknowledged in all (at most 30 s).
async fn wait_for_acks(ledger: &Mutex<Ledger>, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if ledger.lock().unwrap().acked.values().map(BTreeMap::len).sum::<usize>() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Queries that must each count 0 rows on a consistent store: current rows agree with the
/// newest stored version, histories are contiguous from 1, no version without a current
/// row, change sequence numbers are unique, and no index row belongs to a resource that is
/// absent or deleted.
fn consistency_queries() -> Vec<(String, String)> {
    let mut q: Vec<(String, String)> = vec![
        (
            "current row is not the newest version".into(),
            "SELECT COUNT(*) FROM resources r WHERE r.version_id <> (SELECT MAX(v.version_id) FROM resource_versions v WHERE v.res_type = r.res_type AND v.id = r.id) \
             OR r.version_id <> (SELECT COUNT(*) FROM resource_versions v WHERE v.res_type = r.res_type AND v.id = r.id) \
             OR 1 <> (SELECT MIN(v.version_id) FROM resource_versions v WHERE v.res_type = r.res_type AND v.id = r.id)"
                .into(),
        ),
        (
            "current row differs from its version row".into(),
            "SELECT COUNT(*) FROM resources r JOIN resource_versions v ON v.res_type = r.res_type AND v.id = r.id AND v.version_id = r.version_id \
             WHERE v.body <> r.body OR v.deleted <> r.deleted OR v.seq <> r.seq"
                .into(),
        ),
        (
            "version without a current row".into(),
            "SELECT COUNT(*) FROM resource_versions v WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.res_type = v.res_type AND r.id = v.id)".into(),
        ),
        ("duplicate change sequence numbers".into(), "SELECT COUNT(*) - COUNT(DISTINCT seq) FROM resource_versions".into()),
    ];
    for t in [
        "idx_token",
        "idx_string",
        "idx_date",
        "idx_reference",
        "idx_number",
        "idx_quantity",
        "idx_uri",
        "idx_compartment",
    ] {
        q.push((
            format!("{t} row of an absent or deleted resource"),
            format!("SELECT COUNT(*) FROM {t} x WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.res_type = x.res_type AND r.id = x.id AND r.deleted = 0)"),
        ));
    }
    q
}

/// After a kill -9 the audit chain still verifies end to end (`portico audit verify`, run
/// beside the restarted server, which reads one consistent snapshot).
fn verify_audit_chain(database_url: Option<&str>, data_dir: &Path, label: &str) {
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
    assert!(
        out.status.success(),
        "{label}: the audit chain does not verify:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Check the database directly (beside the running server).
async fn check_database(database_url: Option<&str>, data_dir: &Path, label: &str) {
    use sqlx::{Connection, Row};
    let mut problems = Vec::new();
    match database_url {
        None => {
            let url = format!("sqlite://{}", data_dir.join("portico.db").display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.expect("open the SQLite file");
            let ok: String =
                sqlx::query("PRAGMA integrity_check").fetch_one(&mut c).await.expect("integrity_check").get(0);
            if ok != "ok" {
                problems.push(format!("integrity_check: {ok}"));
            }
            for (what, sql) in consistency_queries() {
                let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&mut c).await.expect("query").get(0);
                if n != 0 {
                    problems.push(format!("{what}: {n}"));
                }
            }
            c.close().await.ok();
        }
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
            for (what, sql) in consistency_queries() {
                let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&mut c).await.expect("query").get(0);
                if n != 0 {
                    problems.push(format!("{what}: {n}"));
                }
            }
            c.close().await.ok();
        }
    }
    assert!(problems.is_empty(), "{label}: the database is inconsistent: {problems:#?}");
}

async fn kill_cycles(database_url: Option<String>, cycles: usize) {
    let dir = TempDir::new();
    let label_backend = if database_url.is_some() { "postgres" } else { "sqlite" };
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut server = Server::start(&dir.0, database_url.as_deref()).await;
    let mut live: Vec<Live> = Vec::new();
    let mut total_acked = 0;
    for cycle in 0..cycles {
        let client = Client::new(&server.base);
        ledger.lock().unwrap().touched.clear();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let mine: Vec<Live> = live.iter().skip(w).step_by(WRITERS).cloned().collect();
            tasks.push(tokio::spawn(writer(client.clone(), ledger.clone(), w, cycle, mine)));
        }
        // Let the writes run a while (however slow the machine is), then pull the plug
        // mid-flight.
        tokio::time::sleep(Duration::from_millis(150 + 100 * (cycle as u64 % 4))).await;
        wait_for_acks(&ledger, total_acked + 30).await;
        let log = server.log_text();
        server.kill9().await;
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(40), t).await.expect("writer stops").expect("writer task");
        }
        let acked_now = ledger.lock().unwrap().acked.values().map(BTreeMap::len).sum::<usize>();
        assert!(acked_now > total_acked, "{label_backend} cycle {cycle}: no write was acknowledged; log:\n{log}");
        total_acked = acked_now;
        server = Server::start(&dir.0, database_url.as_deref()).await;
        let client = Client::new(&server.base);
        let label = format!("{label_backend} cycle {cycle}{}", if cycle + 1 == cycles { " final" } else { "" });
        live = verify(&client, &ledger, &label).await;
        check_database(database_url.as_deref(), &dir.0, &label).await;
        verify_audit_chain(database_url.as_deref(), &dir.0, &label);
    }
    eprintln!("{label_backend}: {cycles} kill -9 cycles, {total_acked} acknowledged versions verified");
    let st = server.terminate().await;
    assert!(st.success(), "{label_backend}: exit after SIGTERM: {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_writes_loses_no_acknowledged_write_sqlite() {
    kill_cycles(None, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_writes_loses_no_acknowledged_write_postgres() {
    let Some(url) = postgres_url() else { return };
    let url = fresh_pg_schema(&url).await;
    kill_cycles(Some(url), 5).await;
}

/// SIGTERM while clients write: in-flight requests finish, the process exits 0, and a
/// restart on the same data has every acknowledged write.
async fn sigterm_round(database_url: Option<String>) {
    let dir = TempDir::new();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let server = Server::start(&dir.0, database_url.as_deref()).await;
    let client = Client::new(&server.base);
    let mut tasks = Vec::new();
    for w in 0..3 {
        tasks.push(tokio::spawn(writer(client.clone(), ledger.clone(), w, 0, Vec::new())));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    wait_for_acks(&ledger, 20).await;
    let log = server.log.clone();
    let st = server.terminate().await;
    assert!(st.success(), "exit after SIGTERM: {st:?}; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(40), t).await.expect("writer stops").expect("writer task");
    }
    assert!(!ledger.lock().unwrap().acked.is_empty(), "no write was acknowledged before SIGTERM");
    let server = Server::start(&dir.0, database_url.as_deref()).await;
    let client = Client::new(&server.base);
    verify(&client, &ledger, "after SIGTERM final").await;
    check_database(database_url.as_deref(), &dir.0, "after SIGTERM").await;
    let st = server.terminate().await;
    assert!(st.success(), "second exit after SIGTERM: {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_shuts_down_cleanly_and_restarts() {
    sigterm_round(None).await;
    if let Some(url) = postgres_url() {
        sigterm_round(Some(fresh_pg_schema(&url).await)).await;
    }
}
