//! Several server processes on one database share the export work: each job is claimed by
//! one worker at a time (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: one atomic UPDATE),
//! both processes take jobs, and every job's files hold each resource exactly once.

use crate::common::{Backend, TOKEN, TestApp, temp_dir};
use crate::export::{as_token, observations, path_of, patient};
use axum::http::{Method, StatusCode};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const JOBS: usize = 6;
const OBS: usize = 12;

#[tokio::test]
async fn two_server_processes_share_the_jobs_and_never_run_one_twice() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let dir = temp_dir().join("exports");
        let Some(a) = TestApp::with_config(backend, |c| {
            // One resource per batch: jobs last long enough for both processes to claim.
            c.export.batch = 1;
            c.export.workers = 1;
            c.export.max_jobs_per_client = 0;
            c.export.max_jobs_per_patient = 0;
            // Every process must see the same files (a shared volume, or object storage).
            c.export.dir = dir.display().to_string();
        })
        .await
        else {
            continue;
        };
        let b = a.sharing().await;
        assert_ne!(a.state.export.owner, b.state.export.owner);
        let mut jobs = BTreeMap::new();
        for n in 0..JOBS {
            let id = format!("w{n}");
            patient(&a, &id).await;
            observations(&a, &id, OBS).await;
            let r = as_token(&a, TOKEN, Method::GET, &format!("/fhir/Patient/{id}/$export?_type=Observation")).await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
            jobs.insert(path_of(r.header("content-location").unwrap()), id);
        }
        portico::export::spawn(&a.state);
        portico::export::spawn(&b.state);

        // Watch the leases while the jobs run: who holds which job.
        let mut holders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut manifests = BTreeMap::new();
        for _ in 0..1200 {
            for (url, _) in &jobs {
                let job = url.rsplit('/').next().unwrap();
                if let Some(row) = a.state.export.store.export_get(job).await.unwrap()
                    && let Some(owner) = row.lease_owner
                {
                    holders.entry(job.to_string()).or_default().insert(owner);
                }
            }
            for (url, _) in &jobs {
                if !manifests.contains_key(url) {
                    let r = as_token(&a, TOKEN, Method::GET, url).await;
                    if r.status == StatusCode::OK {
                        manifests.insert(url.clone(), r.json);
                    } else {
                        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
                    }
                }
            }
            if manifests.len() == jobs.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(manifests.len(), JOBS, "{backend:?}: every job completed");
        let owners: BTreeSet<&String> = holders.values().flatten().collect();
        let known = BTreeSet::from([&a.state.export.owner, &b.state.export.owner]);
        assert!(owners.is_subset(&known), "{owners:?}");
        assert_eq!(owners.len(), 2, "{backend:?}: both processes took jobs: {holders:?}");

        // Each job's file: its patient's Observations, each exactly once, whichever
        // process wrote it, downloadable through either process.
        for (i, (url, pid)) in jobs.iter().enumerate() {
            let m = &manifests[url];
            assert_eq!(m["output"].as_array().unwrap().len(), 1, "{m}");
            let via = if i % 2 == 0 { &a } else { &b };
            let r = as_token(via, TOKEN, Method::GET, &path_of(m["output"][0]["url"].as_str().unwrap())).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            let ids: Vec<String> = r
                .text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .inspect(|o| assert_eq!(o["subject"]["reference"], format!("Patient/{pid}")))
                .map(|o| o["id"].as_str().unwrap().to_string())
                .collect();
            let unique: BTreeSet<&String> = ids.iter().collect();
            assert_eq!((ids.len(), unique.len()), (OBS, OBS), "{backend:?}: {pid}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
