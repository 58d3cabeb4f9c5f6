//! The completion manifest (Bulk Data 2.0), with portico's per-file and per-job extensions.

use super::files;
use portico_store::export::{ExportFileRow, ExportJobRow};
use serde_json::{Value, json};

/// Extension keys (absolute URLs, as the Bulk Data spec asks of extension names).
pub const EXT_SHA256: &str = "https://portico.invalid/fhir/bulk/sha256";
pub const EXT_BYTES: &str = "https://portico.invalid/fhir/bulk/bytes";
pub const EXT_SENSITIVE: &str = "https://portico.invalid/fhir/bulk/sensitive";
pub const EXT_EXPIRES: &str = "https://portico.invalid/fhir/bulk/expires";

/// RFC 3339 instant of epoch milliseconds.
pub fn instant(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The manifest of a completed job: only complete files are listed. `sign` gives a file's
/// signed-link query (`None`: downloads need the access token).
pub fn manifest(
    base: &str,
    job: &ExportJobRow,
    files: &[ExportFileRow],
    sign: Option<&dyn Fn(&str) -> String>,
) -> Value {
    let entry = |f: &ExportFileRow| {
        let url = format!("{base}/_export/{}/{}", job.id, f.name);
        json!({
            "type": f.res_type,
            "url": match sign {
                Some(sign) => format!("{url}?{}", sign(&f.name)),
                None => url,
            },
            "count": f.line_count,
            "extension": {
                EXT_SHA256: f.sha256,
                EXT_BYTES: f.bytes,
                EXT_SENSITIVE: f.sensitive,
            }
        })
    };
    let complete = || files.iter().filter(|f| f.complete && files::valid_name(&f.name));
    let output: Vec<Value> = complete().filter(|f| f.name != "deleted.ndjson").map(entry).collect();
    let deleted: Vec<Value> = complete().filter(|f| f.name == "deleted.ndjson").map(entry).collect();
    json!({
        "transactionTime": instant(job.transaction_ms),
        "request": job.request_url,
        "requiresAccessToken": sign.is_none(),
        "output": output,
        "deleted": deleted,
        "error": [],
        "extension": { EXT_EXPIRES: instant(job.expires_ms) }
    })
}
