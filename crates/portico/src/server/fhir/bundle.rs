//! Bundles the server builds: searchset and history. Stored bodies are already JSON text,
//! so entries embed them as raw values instead of parsing and re-serialising them.

use portico_store::StoredVersion;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// An entry's role in a search result.
#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Match,
    Include,
    Outcome,
}

/// A resource inside an entry: stored text as-is, or a value the server reshaped.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Body<'a> {
    Raw(&'a RawValue),
    Value(Value),
}

impl<'a> Body<'a> {
    /// Stored JSON text, embedded without building a tree.
    pub fn stored(body: &'a str) -> Body<'a> {
        match serde_json::from_str::<&RawValue>(body) {
            Ok(r) => Body::Raw(r),
            Err(_) => Body::Value(Value::Null),
        }
    }
}

#[derive(Serialize)]
struct Link<'a> {
    relation: &'a str,
    url: &'a str,
}

#[derive(Serialize)]
struct Search {
    mode: Mode,
}

#[derive(Serialize)]
struct Request {
    method: &'static str,
    url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    status: &'static str,
    etag: String,
    last_modified: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    full_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<Body<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    search: Option<Search>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<Request>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<Response>,
}

#[derive(Serialize)]
struct Meta {
    #[serde(rename = "lastUpdated")]
    last_updated: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bundle<'a> {
    resource_type: &'static str,
    id: String,
    meta: Meta,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<i64>,
    link: Vec<Link<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entry: Vec<Entry<'a>>,
}

fn bundle<'a>(kind: &'static str, total: Option<i64>, link: Vec<Link<'a>>, entry: Vec<Entry<'a>>) -> String {
    let b = Bundle {
        resource_type: "Bundle",
        id: uuid::Uuid::new_v4().to_string(),
        meta: Meta { last_updated: now() },
        kind,
        total,
        link,
        entry,
    };
    serde_json::to_string(&b).unwrap_or_default()
}

/// A searchset Bundle.
pub struct SearchSet<'a> {
    pub base: &'a str,
    pub self_url: String,
    pub next_url: Option<String>,
    pub total: Option<i64>,
    pub entries: Vec<(Mode, &'a StoredVersion, Body<'a>)>,
    pub outcome: Option<Value>,
}

impl SearchSet<'_> {
    pub fn render(self) -> String {
        let mut links = vec![Link { relation: "self", url: &self.self_url }];
        if let Some(n) = &self.next_url {
            links.push(Link { relation: "next", url: n });
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(self.entries.len() + 1);
        for (mode, v, body) in self.entries {
            entries.push(Entry {
                full_url: Some(format!("{}/{}/{}", self.base, v.resource_type, v.id)),
                resource: Some(body),
                search: Some(Search { mode }),
                request: None,
                response: None,
            });
        }
        if let Some(o) = self.outcome {
            entries.push(Entry {
                full_url: None,
                resource: Some(Body::Value(o)),
                search: Some(Search { mode: Mode::Outcome }),
                request: None,
                response: None,
            });
        }
        bundle("searchset", self.total, links, entries)
    }
}

/// A history Bundle, newest first.
pub fn history(base: &str, self_url: &str, next_url: Option<&str>, versions: &[StoredVersion]) -> String {
    let mut links = vec![Link { relation: "self", url: self_url }];
    if let Some(n) = next_url {
        links.push(Link { relation: "next", url: n });
    }
    let entries = versions
        .iter()
        .map(|v| {
            let etag = format!("W/\"{}\"", v.version);
            let (request, status, resource) = if v.deleted {
                (Request { method: "DELETE", url: format!("{}/{}", v.resource_type, v.id) }, "204", None)
            } else if v.version == 1 {
                (Request { method: "POST", url: v.resource_type.clone() }, "201", Some(Body::stored(&v.body)))
            } else {
                (
                    Request { method: "PUT", url: format!("{}/{}", v.resource_type, v.id) },
                    "200",
                    Some(Body::stored(&v.body)),
                )
            };
            Entry {
                full_url: Some(format!("{base}/{}/{}", v.resource_type, v.id)),
                resource,
                search: None,
                request: Some(request),
                response: Some(Response { status, etag, last_modified: v.last_updated.clone() }),
            }
        })
        .collect();
    bundle("history", None, links, entries)
}

/// Now, as `meta.lastUpdated` text.
pub fn now() -> String {
    let ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    portico_fhir::datetime::format_instant(ms)
}
