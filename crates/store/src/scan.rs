//! The bulk-export scan: one type (optionally one patient's compartment) in id order, a
//! keyset page at a time, each row's id, stored body and labels handed to a callback as it
//! arrives — no second query for labels, no page of `StoredVersion`s held in memory.
//!
//! It admits exactly what `Store::search` admits for the same permit: the permit's
//! compartments, SMART scope limits (`search/limits.rs`) and consent filter
//! (`search/consent.rs`) are the same conditions on the same row `r`. What differs is the
//! shape of the statement: the search pages by (sort keys, seq) over an inner select that
//! computes every key of the patient's whole compartment for each page; this walks an index
//! in id order from the last id written, so a page costs its own rows only.
//!
//! On a file-backed SQLite database the statement runs on a direct read-only connection
//! (`direct.rs`) on a blocking thread, and the rows reach the callback in chunks; PostgreSQL
//! and in-memory SQLite stream through the pool. Both run the same SQL.

use crate::backend::SqlStore;
use crate::direct::{self, DirectSqlite, direct_error};
use crate::error::StoreError;
use crate::search::consent::consent_filter;
use crate::search::exec::query_of;
use crate::search::limits::limits_filter;
use crate::search::sql::Sql;
use futures_util::TryStreamExt;
use portico_policy::SearchPermit;
use sqlx::Row;

/// One page of an export unit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExportScan {
    pub res_type: String,
    /// Only resources in this patient's compartment.
    pub patient: Option<String>,
    /// Only resources changed at or after this instant (epoch ms, `_since`).
    pub since_ms: Option<i64>,
    /// Keyset: only ids after this one (binary order on both engines).
    pub after: Option<String>,
    /// Rows in the page.
    pub limit: usize,
}

/// One live resource of the page.
#[derive(Debug, Clone, Copy)]
pub struct ExportRow<'a> {
    pub id: &'a str,
    /// The stored JSON, as a read returns it.
    pub body: &'a str,
    /// Sensitivity labels, space-separated (read with the body, so they describe it).
    pub labels: &'a str,
}

/// The page's SQL: `limit + 1` rows, the extra one only telling that more follow.
pub(crate) fn scan_sql(permit: &SearchPermit, s: &ExportScan) -> Sql {
    let mut sql = Sql::default();
    match &s.patient {
        // The membership index (patient, res_type, id) yields the patient's rows of the
        // type already in id order; each is joined to its current row by primary key.
        Some(p) => {
            sql.push(
                "SELECT r.id, r.body, r.labels FROM idx_compartment c \
                 JOIN resources r ON r.res_type = c.res_type AND r.id = c.id WHERE c.patient = ",
            )
            .text(p)
            .push(" AND c.res_type = ")
            .text(&s.res_type);
            if let Some(a) = &s.after {
                sql.push(" AND c.id > ").text(a);
            }
        }
        // The primary key (res_type, id) is the order.
        None => {
            sql.push("SELECT r.id, r.body, r.labels FROM resources r WHERE r.res_type = ").text(&s.res_type);
            if let Some(a) = &s.after {
                sql.push(" AND r.id > ").text(a);
            }
        }
    }
    sql.push(" AND r.deleted = 0");
    permit_compartments(&mut sql, permit.compartments());
    limits_filter(&mut sql, permit.limits(), &[s.res_type.as_str()]);
    consent_filter(&mut sql, permit.filter());
    if let Some(since) = s.since_ms {
        sql.push(" AND r.lu_ms >= ").int(since);
    }
    sql.push(if s.patient.is_some() { " ORDER BY c.id LIMIT " } else { " ORDER BY r.id LIMIT " });
    sql.int(s.limit as i64 + 1);
    sql
}

/// The gate's confinement to the permitted patients' compartments — the predicate of
/// `search::sql::compartment_filter`, written as a probe of the row's own memberships
/// (`idx_compartment_res`) so it costs one index lookup per row instead of materialising
/// every permitted patient's memberships for each page.
fn permit_compartments(sql: &mut Sql, allowed: Option<&[String]>) {
    let Some(allowed) = allowed else { return };
    if allowed.is_empty() {
        sql.push(" AND 1 = 0");
        return;
    }
    sql.push(
        " AND EXISTS (SELECT 1 FROM idx_compartment m WHERE m.res_type = r.res_type AND m.id = r.id AND m.patient IN (",
    );
    for (i, p) in allowed.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.text(p);
    }
    sql.push("))");
}

impl SqlStore {
    pub(crate) async fn run_export_scan(
        &self,
        permit: &SearchPermit,
        s: &ExportScan,
        on: &mut (dyn for<'r> FnMut(ExportRow<'r>) -> bool + Send),
    ) -> Result<bool, StoreError> {
        let sql = scan_sql(permit, s);
        // A file-backed SQLite database is read on a blocking connection of its own: sqlx
        // would hand every row over its worker thread's channel.
        if let Some(direct) = self.direct_sqlite() {
            return direct_scan(direct, sql, s.limit, on).await;
        }
        self.pool_scan(sql, s.limit, on).await
    }

    /// The scan through the pool (PostgreSQL, in-memory SQLite).
    async fn pool_scan(
        &self,
        sql: Sql,
        limit: usize,
        on: &mut (dyn for<'r> FnMut(ExportRow<'r>) -> bool + Send),
    ) -> Result<bool, StoreError> {
        let anonymous = self.is_sqlite();
        let mut n = 0usize;
        crate::backend::with_pool!(&self.db, pool => {
            let mut rows = query_of!(sql, anonymous).fetch(pool);
            while let Some(r) = rows.try_next().await? {
                n += 1;
                if n > limit {
                    return Ok(true);
                }
                let row = ExportRow { id: r.try_get("id")?, body: r.try_get("body")?, labels: r.try_get("labels")? };
                if !on(row) {
                    return Ok(false);
                }
            }
        });
        Ok(false)
    }
}

/// Rows travel from the reading thread to the caller in chunks of about this many bytes:
/// one channel hand-over per few hundred rows, and the caller writes one chunk while the
/// next is read (two cores busy), with memory bounded by the chunks in flight.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks read ahead of the caller.
const CHUNKS_AHEAD: usize = 2;

/// Consecutive rows packed into one string: each row's id, body and labels end at the
/// recorded offsets.
#[derive(Default)]
struct Chunk {
    text: String,
    ends: Vec<[usize; 3]>,
}

impl Chunk {
    fn rows(&self) -> impl Iterator<Item = ExportRow<'_>> {
        let mut at = 0;
        self.ends.iter().map(move |&[i, b, l]| {
            let row = ExportRow { id: &self.text[at..i], body: &self.text[i..b], labels: &self.text[b..l] };
            at = l;
            row
        })
    }
}

/// The scan on a direct read-only connection (`direct.rs`) on a blocking thread, its rows
/// sent over in chunks. The caller's callback stays on the async side (it need not be
/// `'static`); when it stops, dropping the receiver ends the reading thread at its next
/// chunk. Same statement, same rows, same `limit + 1` answer as the pool's path.
async fn direct_scan(
    direct: DirectSqlite,
    sql: Sql,
    limit: usize,
    on: &mut (dyn for<'r> FnMut(ExportRow<'r>) -> bool + Send),
) -> Result<bool, StoreError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(CHUNKS_AHEAD);
    let reader = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
        let conn = idle::take(&direct)?;
        let out = read_rows(&conn, &sql, limit, &tx);
        // After an error the connection is dropped, not kept for the next scan.
        if out.is_ok() {
            idle::give_back(&direct, conn);
        }
        out
    });
    let mut stopped = false;
    'chunks: while let Some(chunk) = rx.recv().await {
        for row in chunk.rows() {
            if !on(row) {
                stopped = true;
                break 'chunks;
            }
        }
    }
    drop(rx);
    let more = reader.await.map_err(|e| StoreError::Database(sqlx::Error::AnyDriverError(Box::new(e))))??;
    Ok(more && !stopped)
}

/// Read up to `limit` rows into chunks for `tx`; whether a further row exists. Stops early
/// (answering false) when the receiver is gone.
fn read_rows(
    conn: &rusqlite::Connection,
    sql: &Sql,
    limit: usize,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
) -> Result<bool, StoreError> {
    let mut stmt = direct::prepare(conn, sql)?;
    let mut rows = stmt.raw_query();
    let mut chunk = Chunk::default();
    let mut n = 0usize;
    let mut more = false;
    while let Some(r) = rows.next().map_err(direct_error)? {
        n += 1;
        if n > limit {
            more = true;
            break;
        }
        let mut end = [0usize; 3];
        for (col, e) in end.iter_mut().enumerate() {
            let text = r.get_ref(col).map_err(direct_error)?.as_str().map_err(|e| direct_error(e.into()))?;
            chunk.text.push_str(text);
            *e = chunk.text.len();
        }
        chunk.ends.push(end);
        if chunk.text.len() >= CHUNK_BYTES && tx.blocking_send(std::mem::take(&mut chunk)).is_err() {
            return Ok(false);
        }
    }
    if !chunk.ends.is_empty() && tx.blocking_send(chunk).is_err() {
        return Ok(false);
    }
    Ok(more)
}

/// A few idle direct connections, kept between scans: a system or group export runs one
/// scan per unit (type × patient, most of them empty), and opening a connection (file
/// open, then the schema parsed on the first statement) would cost more than such a scan.
/// Keyed by database file; a connection whose database changed (a migration) notices by
/// itself, as SQLite checks the schema cookie on every statement.
mod idle {
    use super::*;
    use std::sync::Mutex;

    const KEEP: usize = 4;
    static IDLE: Mutex<Vec<(DirectSqlite, rusqlite::Connection)>> = Mutex::new(Vec::new());

    pub(super) fn take(direct: &DirectSqlite) -> Result<rusqlite::Connection, StoreError> {
        let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
        match idle.iter().position(|(d, _)| d == direct) {
            Some(i) => Ok(idle.swap_remove(i).1),
            None => {
                drop(idle);
                direct.open()
            }
        }
    }

    pub(super) fn give_back(direct: &DirectSqlite, conn: rusqlite::Connection) {
        let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= KEEP {
            idle.remove(0);
        }
        idle.push((direct.clone(), conn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::testdb;
    use crate::search::{SortKey, Target};
    use crate::{FactsWanted, SearchQuery, Store};
    use portico_policy::{Action, Gate, Principal, RequestContext, TracingSink};
    use serde_json::{Value, json};
    use std::sync::Arc;

    const OBS_CAT: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

    fn obs(id: &str, patient: &str, code: &str, extra: Value) -> Value {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
            "category": [{"coding": [{"system": OBS_CAT, "code": code}]}],
            "code": {"text": format!("test {id}")}, "subject": {"reference": format!("Patient/{patient}")},
            "effectiveDateTime": "2024-03-01"});
        if let (Value::Object(o), Value::Object(extra)) = (&mut o, extra) {
            o.extend(extra);
        }
        o
    }

    /// Patient `pat` with labs (one reproductive-health, one HIV), vital signs, medications
    /// and a condition; patient `other` with labs; RelatedPerson `rp1` whose consent shares
    /// labs and medications but withholds the lab `deny-me`.
    async fn chart(s: &SqlStore) {
        let put = |b: Value| async move { testdb::put(s, b).await };
        put(json!({"resourceType": "Patient", "id": "pat"})).await;
        put(json!({"resourceType": "Patient", "id": "other"})).await;
        put(json!({"resourceType": "RelatedPerson", "id": "rp1", "patient": {"reference": "Patient/pat"}})).await;
        for i in 0..23 {
            put(obs(&format!("lab-{i:02}"), "pat", "laboratory", json!({}))).await;
            put(obs(&format!("lab-{i:02}x"), "other", "laboratory", json!({}))).await;
        }
        for i in 0..4 {
            put(obs(&format!("vit-{i}"), "pat", "vital-signs", json!({}))).await;
        }
        put(obs("deny-me", "pat", "laboratory", json!({}))).await;
        put(obs(
            "preg",
            "pat",
            "laboratory",
            json!({"code": {"coding": [{"system": "http://snomed.info/sct", "code": "252160004"}]}}),
        ))
        .await;
        put(obs(
            "hiv",
            "pat",
            "laboratory",
            json!({"code": {"coding": [{"system": "http://loinc.org", "code": "75622-1"}]}}),
        ))
        .await;
        for i in 0..3 {
            put(json!({"resourceType": "MedicationRequest", "id": format!("med-{i}"), "status": "active",
                "intent": "order", "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/pat"}}))
            .await;
        }
        put(json!({"resourceType": "Condition", "id": "cond", "subject": {"reference": "Patient/pat"},
            "code": {"text": "asthma"}}))
        .await;
        let category = portico_policy::consent::CATEGORY_SYSTEM;
        put(json!({"resourceType": "Consent", "id": "share", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/pat"}, "dateTime": "2024-01-01",
            "provision": {"type": "permit",
                "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PRN"}]},
                    "reference": {"reference": "RelatedPerson/rp1"}}],
                "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}],
                "class": [{"system": category, "code": "labs"}, {"system": category, "code": "medications"}],
                "provision": [{"type": "deny", "data": [{"meaning": "instance", "reference": {"reference": "Observation/deny-me"}}]}]}}))
        .await;
    }

    async fn caregiver(s: &SqlStore) -> RequestContext {
        let mut ctx =
            RequestContext::new(Principal::Caregiver { user: "u1".into(), patients: vec!["pat".into()] }, "t");
        ctx.acting_for = Some("pat".into());
        let wanted = FactsWanted { care_team: false, claimed_proxies: vec!["rp1".into()] };
        ctx.patient = Some(Arc::new(s.patient_facts("pat", &wanted).await.expect("facts")));
        ctx
    }

    /// Every id the scan yields for a unit, `limit` rows per page, resuming from the last id.
    async fn scan_all(
        s: &SqlStore,
        permit: &SearchPermit,
        rt: &str,
        patient: Option<&str>,
        limit: usize,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut after = None;
        loop {
            let scan = ExportScan {
                res_type: rt.into(),
                patient: patient.map(str::to_string),
                since_ms: None,
                after: after.clone(),
                limit,
            };
            let mut page = Vec::new();
            let more = s
                .export_scan(permit, &scan, &mut |r| {
                    page.push(r.id.to_string());
                    true
                })
                .await
                .expect("scan");
            assert!(page.len() <= limit);
            assert!(!more || page.len() == limit, "more rows only after a full page");
            after = page.last().cloned().or(after);
            out.extend(page);
            if !more {
                return out;
            }
        }
    }

    async fn search_all(s: &SqlStore, permit: &SearchPermit, rt: &str, patient: Option<&str>) -> Vec<String> {
        let q = SearchQuery {
            resource_types: vec![rt.into()],
            in_compartment: patient.map(str::to_string),
            sort: vec![SortKey { target: Target::Id, descending: false }],
            count: 1000,
            ..SearchQuery::default()
        };
        let page = s.search(permit, &q).await.expect("search");
        assert!(page.next.is_none());
        page.entries.into_iter().map(|v| v.id).collect()
    }

    /// For a caregiver whose permit is limited by consent (and the operator rules), every
    /// page size and unit shape yields exactly the search's ids, in order, each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_scan_admits_exactly_what_the_search_admits_and_pages_without_gaps_or_repeats() {
        for s in testdb::stores().await {
            let name = s.backend_name();
            chart(&s).await;
            let gate = Gate::new(Arc::new(TracingSink));
            let ctx = caregiver(&s).await;
            let operator = RequestContext::new(Principal::Operator, "t");
            for rt in ["Observation", "MedicationRequest", "Condition", "Patient"] {
                let Ok(permit) = gate.permit_search(&ctx, Action::Search, Some(rt)) else { continue };
                let everything = gate.permit_search(&operator, Action::Search, Some(rt)).unwrap();
                for patient in [Some("pat"), None] {
                    let expected = search_all(&s, &permit, rt, patient).await;
                    for limit in [1, 2, 7, 1000] {
                        let got = scan_all(&s, &permit, rt, patient, limit).await;
                        assert_eq!(got, expected, "{name} {rt} {patient:?} limit {limit}");
                    }
                    let all = scan_all(&s, &everything, rt, patient, 5).await;
                    assert_eq!(all, search_all(&s, &everything, rt, patient).await, "{name} {rt} operator");
                    let mut sorted = all.clone();
                    sorted.sort();
                    sorted.dedup();
                    assert_eq!(sorted, all, "{name}: ascending, no repeats");
                }
            }
            // The consent bites: labs and medications, not vital signs, not the withheld lab,
            // not the other patient's.
            let permit = gate.permit_search(&ctx, Action::Search, Some("Observation")).unwrap();
            let got = scan_all(&s, &permit, "Observation", Some("pat"), 4).await;
            assert!(got.contains(&"lab-00".to_string()) && got.len() >= 23, "{name}: {got:?}");
            assert!(
                !got.iter().any(|i| i.starts_with("vit-") || i.ends_with('x') || i == "deny-me"),
                "{name}: {got:?}"
            );
            let meds = gate.permit_search(&ctx, Action::Search, Some("MedicationRequest")).unwrap();
            assert_eq!(scan_all(&s, &meds, "MedicationRequest", Some("pat"), 2).await, ["med-0", "med-1", "med-2"]);
            let none = gate.permit_search(&ctx, Action::Search, Some("Condition"));
            assert!(none.is_err() || scan_all(&s, &none.unwrap(), "Condition", Some("pat"), 2).await.is_empty());
        }
    }

    /// `_since`: only rows changed at or after the instant.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_scan_honours_since() {
        for s in testdb::stores().await {
            let gate = Gate::new(Arc::new(TracingSink));
            let ctx = RequestContext::new(Principal::Operator, "t");
            let permit = gate.permit_search(&ctx, Action::Search, Some("Observation")).unwrap();
            testdb::put(&s, obs("old", "p1", "laboratory", json!({}))).await;
            // A later millisecond for the next write.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let cut = testdb::put(&s, obs("new", "p1", "laboratory", json!({}))).await.stored;
            let cut_ms = time::OffsetDateTime::parse(&cut.last_updated, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .unwrap();
            let scan = |since_ms| ExportScan {
                res_type: "Observation".into(),
                patient: Some("p1".into()),
                since_ms,
                after: None,
                limit: 10,
            };
            let mut ids = Vec::new();
            s.export_scan(&permit, &scan(Some(cut_ms)), &mut |r| {
                ids.push(r.id.to_string());
                true
            })
            .await
            .unwrap();
            assert_eq!(ids, ["new"], "{}", s.backend_name());
            ids.clear();
            s.export_scan(&permit, &scan(None), &mut |r| {
                ids.push(r.id.to_string());
                true
            })
            .await
            .unwrap();
            assert_eq!(ids, ["new", "old"], "{}", s.backend_name());
        }
    }

    /// A file-backed SQLite store scans on its direct connection, in several chunks: the
    /// same rows (id, body, labels) as the pool's path, the same "more" answer, and a
    /// callback that stops part-way stops the reading thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_direct_scan_yields_what_the_pool_yields_across_chunks_and_stops_when_asked() {
        let stores = testdb::stores().await;
        let s = stores.first();
        let direct = s.direct_sqlite().expect("the SQLite test store is a file, so the direct path is the one tested");
        let gate = Gate::new(Arc::new(TracingSink));
        let ctx = RequestContext::new(Principal::Operator, "t");
        let permit = gate.permit_search(&ctx, Action::Search, Some("Observation")).unwrap();
        // 500 rows of ~2.5 KB: five chunks.
        let pad = "x".repeat(2000);
        let bundle: Vec<Value> =
            (0..500).map(|i| obs(&format!("o{i:05}"), "p1", "laboratory", json!({"note": [{"text": pad}]}))).collect();
        for b in bundle {
            testdb::put(&s, b).await;
        }
        let scan = |limit| ExportScan {
            res_type: "Observation".into(),
            patient: Some("p1".into()),
            since_ms: None,
            after: Some("o00010".into()),
            limit,
        };
        type Rows = Vec<(String, String, String)>;
        for limit in [400, 489, 5000] {
            let (mut a, mut b): (Rows, Rows) = (Vec::new(), Vec::new());
            let more_direct = direct_scan(direct.clone(), scan_sql(&permit, &scan(limit)), limit, &mut |r| {
                a.push((r.id.into(), r.body.into(), r.labels.into()));
                true
            })
            .await
            .unwrap();
            let more_pool = s
                .pool_scan(scan_sql(&permit, &scan(limit)), limit, &mut |r| {
                    b.push((r.id.into(), r.body.into(), r.labels.into()));
                    true
                })
                .await
                .unwrap();
            assert_eq!((more_direct, a.len()), (more_pool, b.len()), "limit {limit}");
            assert!(a == b, "limit {limit}: the same rows");
            assert_eq!(more_direct, limit < 489, "limit {limit}");
        }
        let mut n = 0;
        let more = direct_scan(direct.clone(), scan_sql(&permit, &scan(5000)), 5000, &mut |_| {
            n += 1;
            n < 300
        })
        .await
        .unwrap();
        assert_eq!((n, more), (300, false), "stopped at the 300th row, past the first chunks");
    }
}
