//! `portico import`: NDJSON (one resource per line), single resources, Bundles, and
//! directories of them, loaded through the same gate and transaction path as the REST API.
//! Resources with ids are written with PUT, so importing the same files again changes
//! nothing (an update with identical content is a no-op).

use crate::server::AppState;
use crate::server::error::ApiError;
use crate::server::fhir::transaction::apply_bundle;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use portico_policy::{Principal, RequestContext};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Resources per transaction when importing NDJSON.
const BATCH: usize = 250;

/// What an import did.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImportStats {
    pub files: usize,
    pub resources: usize,
    pub seconds: f64,
}

impl ImportStats {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 { self.resources as f64 / self.seconds } else { 0.0 }
    }
}

/// Every importable file under the given paths, in a stable order.
fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            children.sort();
            out.extend(collect_files(&children)?);
        } else if p.is_file() {
            if matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "ndjson")) {
                out.push(p.clone());
            }
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    Ok(out)
}

/// Import files, showing a progress bar when `progress` is set.
pub async fn import_paths(state: &AppState, paths: &[PathBuf], progress: bool) -> anyhow::Result<ImportStats> {
    let files = collect_files(paths)?;
    let bar = if progress { ProgressBar::new(files.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} files, {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut stats = ImportStats::default();
    for f in &files {
        let n = import_file(state, f).await.with_context(|| format!("importing {}", f.display()))?;
        stats.files += 1;
        stats.resources += n;
        bar.inc(1);
        bar.set_message(format!("{} resources", stats.resources));
    }
    bar.finish_and_clear();
    stats.seconds = start.elapsed().as_secs_f64();
    Ok(stats)
}

async fn import_file(state: &AppState, path: &Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path)?;
    if path.extension().and_then(|e| e.to_str()) == Some("ndjson") {
        let mut count = 0;
        let mut batch = Vec::with_capacity(BATCH);
        // The line number of each resource in the batch, to name it in errors.
        let mut lines = Vec::with_capacity(BATCH);
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line).with_context(|| format!("line {} is not JSON", i + 1))?;
            if v.get("resourceType").and_then(Value::as_str).is_none() {
                bail!("line {} is not a FHIR resource (no resourceType)", i + 1);
            }
            batch.push(v);
            lines.push(i + 1);
            if batch.len() == BATCH {
                count += write_resources(state, std::mem::take(&mut batch)).await.map_err(|e| describe(e, &lines))?;
                lines.clear();
            }
        }
        count += write_resources(state, batch).await.map_err(|e| describe(e, &lines))?;
        return Ok(count);
    }
    let v: Value = serde_json::from_str(&text)?;
    import_value(state, v).await
}

/// Import a parsed document: a transaction/batch Bundle as is, any other Bundle's entries, or
/// one resource.
pub async fn import_value(state: &AppState, v: Value) -> anyhow::Result<usize> {
    if v.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        match v.get("type").and_then(Value::as_str) {
            Some("transaction") | Some("batch") => {
                let n = v.get("entry").and_then(Value::as_array).map_or(0, Vec::len);
                apply_bundle(state, &operator(), &v).await.map_err(|e| describe(e, &[]))?;
                return Ok(n);
            }
            _ => {
                let resources: Vec<Value> = v
                    .get("entry")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|e| e.get("resource").cloned()).collect())
                    .unwrap_or_default();
                return import_resources(state, resources).await;
            }
        }
    }
    import_resources(state, vec![v]).await
}

/// Write resources in one transaction: PUT when they carry an id, POST otherwise.
async fn import_resources(state: &AppState, resources: Vec<Value>) -> anyhow::Result<usize> {
    write_resources(state, resources).await.map_err(|e| describe(e, &[]))
}

async fn write_resources(state: &AppState, resources: Vec<Value>) -> Result<usize, ApiError> {
    if resources.is_empty() {
        return Ok(0);
    }
    let n = resources.len();
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let rt = r.get("resourceType").and_then(Value::as_str).unwrap_or("").to_string();
            match r.get("id").and_then(Value::as_str).map(str::to_string) {
                Some(id) => json!({"resource": r, "request": {"method": "PUT", "url": format!("{rt}/{id}")}}),
                None => json!({"resource": r, "request": {"method": "POST", "url": rt}}),
            }
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    apply_bundle(state, &operator(), &bundle).await?;
    Ok(n)
}

/// An import failure as one message: the entry is named by its NDJSON line when `lines`
/// knows it (`lines[k]` is the line of `Bundle.entry[k]`), and the validator's findings
/// are listed under it.
fn describe(e: ApiError, lines: &[usize]) -> anyhow::Error {
    let mut msg = e.diagnostics.clone();
    let entry_line = msg
        .strip_prefix("Bundle.entry[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(k, tail)| Some((*lines.get(k.parse::<usize>().ok()?)?, tail.to_string())));
    if let Some((line, tail)) = entry_line {
        msg = format!("line {line}{tail}");
    }
    for issue in &e.issues {
        let text = issue.get("diagnostics").and_then(Value::as_str).unwrap_or("");
        match issue.pointer("/expression/0").and_then(Value::as_str) {
            Some(at) => msg.push_str(&format!("\n  {at}: {text}")),
            None => msg.push_str(&format!("\n  {text}")),
        }
    }
    anyhow::anyhow!(msg)
}

/// Imports run as the operator, through the gate like every other write.
fn operator() -> RequestContext {
    RequestContext::new(Principal::Operator, format!("import-{}", uuid::Uuid::new_v4()))
}
