//! The PDF health summary output (`_outputFormat=application/pdf`): rendered by
//! `portico_summary` from the job's own committed, non-sensitive NDJSON files — exactly what
//! the gate let this export hold, re-checked batch by batch — so it needs no read of the
//! store and cannot show anything the requester may not see. Sensitive files stay out even
//! when the patient opted them into the export: a summary is made to be handed on.
//!
//! It is rendered from the local staging files before the job finishes, whatever the
//! export storage; `finish` then publishes it like the NDJSON files (into the bucket, when
//! one is configured), and downloads read it through the same storage.

use super::worker::{Checkpoint, Mark};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

/// The summary's file name in the job directory and in the manifest.
pub const FILE: &str = "summary.pdf";

/// Observations kept for the summary: the most recent by their clinical date (the summary
/// itself shows fewer). Bounds memory whatever the size of the record.
const MAX_OBSERVATIONS: usize = 2_000;

/// Render the summary of `patient` from the job's files, write it durably into `dir` and
/// add it to the checkpoint's files (the caller hashes and lists it like the others).
pub fn write(dir: &Path, cp: &mut Checkpoint, patient: &str, server_name: &str, now_ms: i64) -> Result<(), String> {
    let (patient_resource, resources) = collect(dir, cp, patient)?;
    let input = portico_summary::SummaryInput {
        patient: patient_resource,
        resources,
        generated_at: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        server_name: server_name.to_string(),
    };
    let pdf = portico_summary::render(&input).map_err(|e| format!("summary: {e}"))?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| format!("summary: {e}"))?;
        f.write_all(&pdf).and_then(|_| f.sync_all()).map_err(|e| format!("summary: {e}"))?;
    }
    std::fs::rename(&tmp, dir.join(FILE)).map_err(|e| format!("summary: {e}"))?;
    cp.files.insert(
        FILE.to_string(),
        Mark { res_type: "Binary".into(), sensitive: false, bytes: pdf.len() as u64, lines: 1 },
    );
    Ok(())
}

/// The Patient and the other resources the summary shows, from the committed bytes of the
/// non-sensitive files.
fn collect(dir: &Path, cp: &Checkpoint, patient: &str) -> Result<(Value, Vec<Value>), String> {
    let mut found_patient = None;
    let mut resources = Vec::new();
    let mut observations: Vec<(String, Value)> = Vec::new();
    for (name, m) in &cp.files {
        let shown = m.res_type == "Patient" || portico_summary::SHOWN_TYPES.contains(&m.res_type.as_str());
        if m.sensitive || !shown || name == FILE {
            continue;
        }
        let f = std::fs::File::open(dir.join(name)).map_err(|e| format!("summary: {name}: {e}"))?;
        for line in BufReader::new(f.take(m.bytes)).lines() {
            let line = line.map_err(|e| format!("summary: {name}: {e}"))?;
            let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
            match m.res_type.as_str() {
                "Patient" if v["id"] == patient => found_patient = Some(v),
                "Patient" => {}
                "Observation" => {
                    observations.push((clinical_date(&v), v));
                    if observations.len() >= 2 * MAX_OBSERVATIONS {
                        keep_recent(&mut observations);
                    }
                }
                _ => resources.push(v),
            }
        }
    }
    keep_recent(&mut observations);
    resources.extend(observations.into_iter().map(|(_, v)| v));
    // Without the Patient resource (left out by `_type`), a stub with the id only.
    let patient = found_patient.unwrap_or_else(|| serde_json::json!({"resourceType": "Patient", "id": patient}));
    Ok((patient, resources))
}

/// The Observation's date as written (FHIR dateTimes of one record sort as text well
/// enough to pick the recent ones).
fn clinical_date(v: &Value) -> String {
    ["effectiveDateTime", "issued"]
        .iter()
        .find_map(|k| v[*k].as_str())
        .or_else(|| v.pointer("/effectivePeriod/start").and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
}

fn keep_recent(obs: &mut Vec<(String, Value)>) {
    obs.sort_by(|a, b| b.0.cmp(&a.0));
    obs.truncate(MAX_OBSERVATIONS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn only_committed_non_sensitive_lines_of_shown_types_reach_the_summary() {
        let dir = std::env::temp_dir().join(format!("portico-export-summary-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        let committed = "{\"resourceType\":\"Condition\",\"id\":\"c1\"}\n";
        write(
            "Condition.ndjson",
            &format!("{committed}{{\"resourceType\":\"Condition\",\"id\":\"past-checkpoint\"}}\n"),
        );
        write("Condition.sensitive.ndjson", "{\"resourceType\":\"Condition\",\"id\":\"secret\"}\n");
        write("Encounter.ndjson", "{\"resourceType\":\"Encounter\",\"id\":\"e1\"}\n");
        write("Patient.ndjson", "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n");
        let mark = |t: &str, sensitive: bool, bytes: usize| Mark {
            res_type: t.into(),
            sensitive,
            bytes: bytes as u64,
            lines: 1,
        };
        let mut cp = Checkpoint {
            files: BTreeMap::from([
                ("Condition.ndjson".to_string(), mark("Condition", false, committed.len())),
                ("Condition.sensitive.ndjson".to_string(), mark("Condition", true, 46)),
                ("Encounter.ndjson".to_string(), mark("Encounter", false, 40)),
                ("Patient.ndjson".to_string(), mark("Patient", false, 37)),
            ]),
            ..Checkpoint::default()
        };
        let (patient, resources) = collect(&dir, &cp, "p1").unwrap();
        assert_eq!(patient["id"], "p1");
        let ids: Vec<&str> = resources.iter().filter_map(|r| r["id"].as_str()).collect();
        assert_eq!(ids, vec!["c1"], "past the checkpoint, sensitive and unshown types stay out");
        super::write(&dir, &mut cp, "p1", "portico", 0).unwrap();
        assert!(std::fs::read(dir.join(FILE)).unwrap().starts_with(b"%PDF-"));
        assert_eq!(cp.files[FILE].res_type, "Binary");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn observations_are_bounded_to_the_most_recent() {
        let mut obs: Vec<(String, Value)> =
            (0..5000).map(|i| (format!("2020-01-01T00:00:{:05}", i), Value::Null)).collect();
        keep_recent(&mut obs);
        assert_eq!(obs.len(), MAX_OBSERVATIONS);
        assert_eq!(obs[0].0, "2020-01-01T00:00:04999");
    }
}
