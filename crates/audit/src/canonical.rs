//! The canonical encoding of a record: the exact bytes the chain hashes.
//!
//! A JSON object written by hand, never by a map or a serializer whose output could change
//! between versions: keys in one fixed order, absent and empty fields left out, integers in
//! decimal, strings with `"` and `\` escaped and every control character (U+0000–U+001F,
//! U+007F–U+009F, U+2028, U+2029) written as `\uXXXX` — so a record holds no raw CR or LF, and one
//! record has exactly one encoding. [`decode`] accepts only that encoding: a text that does
//! not re-encode to itself is refused, so nothing can hide in formatting.

use crate::record::{Actor, AuditRecord, Entity, EntityRole, Interaction, Outcome};
use serde::Deserialize;
use std::borrow::Cow;

/// Version of the encoding, written first in every record.
pub const VERSION: i64 = 1;

/// The text is not a canonical record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a canonical audit record: {0}")]
pub struct DecodeError(pub String);

/// Encode record number `seq`.
pub fn encode(seq: i64, r: &AuditRecord) -> String {
    let mut w = Writer(String::with_capacity(256 + 64 * r.entities.len()));
    w.head(seq);
    w.body(r);
    w.0
}

/// The encoding of `r` after its record number, made before the number is known (outside
/// the chain's head lock); [`join`] completes it.
pub fn encode_tail(r: &AuditRecord) -> String {
    let mut w = Writer(String::with_capacity(224 + 64 * r.entities.len()));
    w.body(r);
    w.0
}

/// Record number `seq`'s encoding from its [`encode_tail`]: `join(seq, &encode_tail(r))` is
/// `encode(seq, r)`.
pub fn join(seq: i64, tail: &str) -> String {
    let mut w = Writer(String::with_capacity(32 + tail.len()));
    w.head(seq);
    w.raw(tail);
    w.0
}

impl Writer {
    /// Everything before the record's fields: the version and the record number.
    fn head(&mut self, seq: i64) {
        self.raw("{\"v\":");
        self.int(VERSION);
        self.raw(",\"seq\":");
        self.int(seq);
    }

    /// The record's fields after its number, and the closing brace.
    fn body(&mut self, r: &AuditRecord) {
        let w = self;
        w.raw(",\"t\":");
        w.int(r.time_ms);
        w.key_str("rid", &r.request_id);
        w.key_str("i", r.interaction.code());
        w.key_str("o", r.outcome.code());
        w.raw(",\"st\":");
        w.int(i64::from(r.status));
        w.raw(",\"actor\":{\"kind\":");
        w.str(&r.actor.kind);
        w.raw(",\"id\":");
        w.str(&r.actor.id);
        if let Some(role) = &r.actor.role {
            w.key_str("role", role);
        }
        w.raw("}");
        w.opt("obo", &r.on_behalf_of);
        w.opt("client", &r.client);
        w.opt("device", &r.device);
        w.opt("src", &r.source);
        w.opt("pou", &r.purpose);
        w.opt("type", &r.resource_type);
        w.opt("q", &r.query);
        if !r.entities.is_empty() {
            w.raw(",\"ent\":[");
            for (i, e) in r.entities.iter().enumerate() {
                if i > 0 {
                    w.raw(",");
                }
                w.raw("{\"ref\":");
                w.str(&e.reference);
                w.key_str("role", e.role.code());
                if !e.category.is_empty() {
                    w.key_str("cat", &e.category);
                }
                w.list("pat", &e.patients);
                w.raw("}");
            }
            w.raw("]");
        }
        w.list("pat", &r.patients);
        w.list("rules", &r.rules);
        w.list("consents", &r.consents);
        w.opt("reason", &r.reason);
        w.raw("}");
    }
}

/// Decode a canonical record, returning its number. Refuses any text that is not exactly
/// what [`encode`] writes for the decoded record.
pub fn decode(text: &str) -> Result<(i64, AuditRecord), DecodeError> {
    let (seq, record) = decode_lenient(text)?;
    if encode(seq, &record) != text {
        return Err(DecodeError("the text is not in canonical form".into()));
    }
    Ok((seq, record))
}

/// Decode without the canonical-form check (for rendering stored records).
pub fn decode_lenient(text: &str) -> Result<(i64, AuditRecord), DecodeError> {
    let w: Wire = serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))?;
    if w.v != VERSION {
        return Err(DecodeError(format!("unknown encoding version {}", w.v)));
    }
    let interaction =
        Interaction::from_code(&w.i).ok_or_else(|| DecodeError(format!("unknown interaction {:?}", w.i)))?;
    let outcome = Outcome::from_code(&w.o).ok_or_else(|| DecodeError(format!("unknown outcome {:?}", w.o)))?;
    let entities = w
        .ent
        .into_iter()
        .map(|e| {
            Ok(Entity {
                reference: e.r#ref,
                role: EntityRole::from_code(&e.role)
                    .ok_or_else(|| DecodeError(format!("unknown role {:?}", e.role)))?,
                category: e.cat,
                patients: e.pat,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let record = AuditRecord {
        time_ms: w.t,
        request_id: w.rid,
        interaction,
        outcome,
        status: w.st,
        actor: Actor { kind: w.actor.kind, id: w.actor.id, role: w.actor.role },
        on_behalf_of: w.obo,
        client: w.client,
        device: w.device,
        source: w.src,
        purpose: w.pou,
        resource_type: w.r#type,
        query: w.q,
        entities,
        patients: w.pat,
        rules: w.rules,
        consents: w.consents,
        reason: w.reason,
    };
    Ok((w.seq, record))
}

/// The parts of a stored record its index entries repeat, read without copying (for
/// `verify`, which checks millions of them).
#[derive(Deserialize)]
pub struct IndexView<'a> {
    pub v: i64,
    pub seq: i64,
    pub t: i64,
    #[serde(borrow)]
    pub i: Cow<'a, str>,
    #[serde(borrow)]
    pub o: Cow<'a, str>,
    #[serde(borrow)]
    pub actor: ActorView<'a>,
    #[serde(borrow, default)]
    pub client: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub ent: Vec<EntityView<'a>>,
    #[serde(borrow, default)]
    pub pat: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub struct ActorView<'a> {
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
}

#[derive(Deserialize)]
pub struct EntityView<'a> {
    #[serde(borrow, default)]
    pub cat: Cow<'a, str>,
    #[serde(borrow, default)]
    pub pat: Vec<Cow<'a, str>>,
}

impl<'a> IndexView<'a> {
    pub fn parse(text: &'a str) -> Result<IndexView<'a>, DecodeError> {
        let v: IndexView<'a> = serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))?;
        if v.v != VERSION {
            return Err(DecodeError(format!("unknown encoding version {}", v.v)));
        }
        Ok(v)
    }

    /// [`AuditRecord::subjects`] of the record, borrowed.
    pub fn subjects(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for e in &self.ent {
            for p in &e.pat {
                out.push((p, &e.cat));
            }
        }
        for p in &self.pat {
            if !out.iter().any(|(q, _)| q == p) {
                out.push((p, ""));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The parts of a stored record its index entries repeat, parsed strictly in the one
/// canonical shape [`encode`] writes — keys in their fixed order, no whitespace, integers
/// without leading zeros, strings escaped exactly as [`encode`] escapes them — without
/// copying (strings are borrowed unless they hold an escape). This is what `verify` reads
/// for each of millions of records: a text that is not in canonical form is refused, so a
/// record cannot say one thing to the index check and another to a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed<'a> {
    pub seq: i64,
    pub t: i64,
    pub interaction: Interaction,
    pub outcome: Outcome,
    pub actor_kind: Cow<'a, str>,
    pub actor_id: Cow<'a, str>,
    pub client: Option<Cow<'a, str>>,
    /// Entities' `(patient, category)` pairs, then the record's patients with `""`, as
    /// written (see [`Indexed::subjects_match`]).
    pairs: Pairs<'a>,
    /// Where the record's own patient list starts in `pairs`.
    top: usize,
}

type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// A list of pairs that holds the first two without allocating (most records name one
/// patient once in an entity and once as the record's patient).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Pairs<'a> {
    inline: [Pair<'a>; 2],
    more: Vec<Pair<'a>>,
    len: usize,
}

impl<'a> Pairs<'a> {
    fn push(&mut self, p: Pair<'a>) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = p,
            None => self.more.push(p),
        }
        self.len += 1;
    }

    fn get(&self, i: usize) -> &Pair<'a> {
        if i < 2 { &self.inline[i] } else { &self.more[i - 2] }
    }

    fn range(&self, r: std::ops::Range<usize>) -> impl Iterator<Item = &Pair<'a>> {
        r.map(|i| self.get(i))
    }
}

impl<'a> Indexed<'a> {
    /// Parse a canonical record (strictly: see the type's documentation).
    pub fn parse(text: &'a str) -> Result<Indexed<'a>, DecodeError> {
        Strict { s: text, b: text.as_bytes(), i: 0 }.record()
    }

    /// Whether `stored` — patient index rows sorted by (patient, category), without
    /// duplicates — is exactly [`AuditRecord::subjects`] of this record.
    pub fn subjects_match<'s>(&self, stored: impl ExactSizeIterator<Item = (&'s str, &'s str)>) -> bool {
        let (n, top) = (self.pairs.len, self.top);
        // The common shape (one entity with one patient, who is the record's only patient)
        // needs no sorting.
        if top == 1 && n == 2 && self.pairs.get(0).0 == self.pairs.get(1).0 {
            let (p, c) = self.pairs.get(0);
            let mut stored = stored;
            return stored.len() == 1 && stored.next() == Some((p.as_ref(), c.as_ref()));
        }
        let ent = || self.pairs.range(0..top);
        let mut want: Vec<(&str, &str)> = ent().map(|(p, c)| (p.as_ref(), c.as_ref())).collect();
        for (p, _) in self.pairs.range(top..n) {
            if !ent().any(|(q, _)| q == p) {
                want.push((p.as_ref(), ""));
            }
        }
        want.sort_unstable();
        want.dedup();
        stored.len() == want.len() && stored.zip(want).all(|(a, b)| a == b)
    }
}

/// The strict parser behind [`Indexed::parse`].
struct Strict<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

fn not_canonical(what: &str) -> DecodeError {
    DecodeError(format!("not in canonical form ({what})"))
}

/// Bytes that end the fast path of a string: `"`, `\\`, C0 controls and DEL, and the lead
/// bytes of U+0080–U+009F (0xC2) and of U+2028/U+2029 (0xE2).
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t[0xc2] = true;
    t[0xe2] = true;
    t
};

/// Characters [`encode`] writes as `\uXXXX`.
fn escaped_as_u(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}')
}

impl<'a> Strict<'a> {
    // `lit`/`opt_lit` are inlined so that each literal's length is a constant and the
    // comparison a few loads, not a call to `memcmp`.
    #[inline(always)]
    fn lit(&mut self, l: &str) -> Result<(), DecodeError> {
        if self.opt_lit(l) { Ok(()) } else { Err(self.expected(l)) }
    }

    #[cold]
    fn expected(&self, l: &str) -> DecodeError {
        not_canonical(&format!("expected {l} at byte {}", self.i))
    }

    #[inline(always)]
    fn opt_lit(&mut self, l: &str) -> bool {
        let l = l.as_bytes();
        match self.b.get(self.i..self.i + l.len()) {
            Some(here) if here == l => {
                self.i += l.len();
                true
            }
            _ => false,
        }
    }

    /// A decimal integer as `{i}` formats it.
    fn int(&mut self) -> Result<i64, DecodeError> {
        let negative = self.b.get(self.i) == Some(&b'-');
        let digits = self.i + usize::from(negative);
        let mut end = digits;
        // Accumulate negatively: i64::MIN has no positive counterpart.
        let mut v: i64 = 0;
        while let Some(d) = self.b.get(end).filter(|c| c.is_ascii_digit()) {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_sub(i64::from(d - b'0')))
                .ok_or_else(|| not_canonical("integer"))?;
            end += 1;
        }
        let n = end - digits;
        if n == 0 || (self.b[digits] == b'0' && (n > 1 || negative)) {
            return Err(not_canonical("integer"));
        }
        self.i = end;
        if negative { Ok(v) } else { v.checked_neg().ok_or_else(|| not_canonical("integer")) }
    }

    /// A string as [`encode`] escapes it.
    fn str(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        self.lit("\"")?;
        let start = self.i;
        // Fast path: up to the closing quote when nothing before it needs unescaping.
        let mut end = start;
        while let Some(&c) = self.b.get(end) {
            if SPECIAL[usize::from(c)] {
                break;
            }
            end += 1;
        }
        if self.b.get(end) == Some(&b'"') {
            self.i = end + 1;
            return Ok(Cow::Borrowed(&self.s[start..end]));
        }
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            let Some(&c) = self.b.get(self.i) else { return Err(not_canonical("unterminated string")) };
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => match self.b.get(self.i + 1) {
                    Some(b'"') => {
                        out.push('"');
                        self.i += 2;
                    }
                    Some(b'\\') => {
                        out.push('\\');
                        self.i += 2;
                    }
                    Some(b'u') => {
                        let hex = self.b.get(self.i + 2..self.i + 6).ok_or_else(|| not_canonical("escape"))?;
                        if !hex.iter().all(|h| h.is_ascii_digit() || (b'a'..=b'f').contains(h)) {
                            return Err(not_canonical("escape"));
                        }
                        let code = u32::from_str_radix(&self.s[self.i + 2..self.i + 6], 16)
                            .map_err(|_| not_canonical("escape"))?;
                        match char::from_u32(code) {
                            Some(ch) if escaped_as_u(ch) => out.push(ch),
                            _ => return Err(not_canonical("escape")),
                        }
                        self.i += 6;
                    }
                    _ => return Err(not_canonical("escape")),
                },
                _ => {
                    let ch = self.s[self.i..].chars().next().ok_or_else(|| not_canonical("string"))?;
                    if escaped_as_u(ch) {
                        return Err(not_canonical("raw control character"));
                    }
                    out.push(ch);
                    self.i += ch.len_utf8();
                }
            }
        }
    }

    /// `,"key":"…"` when present.
    #[inline(always)]
    fn opt_str(&mut self, key: &str) -> Result<Option<Cow<'a, str>>, DecodeError> {
        if self.opt_lit(key) { self.str().map(Some) } else { Ok(None) }
    }

    /// `["…","…"]`, non-empty (an empty list is left out).
    fn list(&mut self, mut each: impl FnMut(Cow<'a, str>)) -> Result<(), DecodeError> {
        self.lit("[")?;
        loop {
            each(self.str()?);
            if self.opt_lit("]") {
                return Ok(());
            }
            self.lit(",")?;
        }
    }

    fn record(mut self) -> Result<Indexed<'a>, DecodeError> {
        self.lit("{\"v\":")?;
        if self.int()? != VERSION {
            return Err(DecodeError("unknown encoding version".into()));
        }
        self.lit(",\"seq\":")?;
        let seq = self.int()?;
        self.lit(",\"t\":")?;
        let t = self.int()?;
        self.lit(",\"rid\":")?;
        self.str()?;
        self.lit(",\"i\":")?;
        let i = self.str()?;
        let interaction =
            Interaction::from_code(&i).ok_or_else(|| DecodeError(format!("unknown interaction {i:?}")))?;
        self.lit(",\"o\":")?;
        let o = self.str()?;
        let outcome = Outcome::from_code(&o).ok_or_else(|| DecodeError(format!("unknown outcome {o:?}")))?;
        self.lit(",\"st\":")?;
        if !(0..=i64::from(u16::MAX)).contains(&self.int()?) {
            return Err(not_canonical("status"));
        }
        self.lit(",\"actor\":{\"kind\":")?;
        let actor_kind = self.str()?;
        self.lit(",\"id\":")?;
        let actor_id = self.str()?;
        self.opt_str(",\"role\":")?;
        self.lit("}")?;
        self.opt_str(",\"obo\":")?;
        let client = self.opt_str(",\"client\":")?;
        for key in [",\"device\":", ",\"src\":", ",\"pou\":", ",\"type\":", ",\"q\":"] {
            self.opt_str(key)?;
        }
        let mut pairs = Pairs::default();
        if self.opt_lit(",\"ent\":[") {
            loop {
                self.lit("{\"ref\":")?;
                self.str()?;
                self.lit(",\"role\":")?;
                let role = self.str()?;
                if EntityRole::from_code(&role).is_none() {
                    return Err(DecodeError(format!("unknown role {role:?}")));
                }
                let cat = match self.opt_str(",\"cat\":")? {
                    Some(c) if c.is_empty() => return Err(not_canonical("empty category")),
                    Some(c) => c,
                    None => Cow::Borrowed(""),
                };
                if self.opt_lit(",\"pat\":") {
                    self.list(|p| pairs.push((p, cat.clone())))?;
                }
                self.lit("}")?;
                if self.opt_lit("]") {
                    break;
                }
                self.lit(",")?;
            }
        }
        let top = pairs.len;
        if self.opt_lit(",\"pat\":") {
            self.list(|p| pairs.push((p, Cow::Borrowed(""))))?;
        }
        for key in [",\"rules\":", ",\"consents\":"] {
            if self.opt_lit(key) {
                self.list(|_| {})?;
            }
        }
        self.opt_str(",\"reason\":")?;
        self.lit("}")?;
        if self.i != self.b.len() {
            return Err(not_canonical("text after the record"));
        }
        Ok(Indexed { seq, t, interaction, outcome, actor_kind, actor_id, client, pairs, top })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: i64,
    seq: i64,
    t: i64,
    rid: String,
    i: String,
    o: String,
    st: u16,
    actor: WireActor,
    obo: Option<String>,
    client: Option<String>,
    device: Option<String>,
    src: Option<String>,
    pou: Option<String>,
    r#type: Option<String>,
    q: Option<String>,
    #[serde(default)]
    ent: Vec<WireEntity>,
    #[serde(default)]
    pat: Vec<String>,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    consents: Vec<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireActor {
    kind: String,
    id: String,
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntity {
    r#ref: String,
    role: String,
    #[serde(default)]
    cat: String,
    #[serde(default)]
    pat: Vec<String>,
}

struct Writer(String);

impl Writer {
    fn raw(&mut self, s: &str) {
        self.0.push_str(s);
    }

    fn int(&mut self, i: i64) {
        use std::fmt::Write;
        let _ = write!(self.0, "{i}");
    }

    fn str(&mut self, s: &str) {
        self.0.push('"');
        // Fast path: most strings (ids, codes) need no escape at all. A byte that may start
        // something to escape: `"`, `\`, a C0 control or DEL, and the lead bytes of U+0080–
        // U+009F (0xC2) and U+2028/U+2029 (0xE2).
        let b = s.as_bytes();
        if !b.iter().any(|&x| x < 0x20 || x == b'"' || x == b'\\' || x == 0x7f || x == 0xc2 || x == 0xe2) {
            self.0.push_str(s);
            self.0.push('"');
            return;
        }
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let esc: Option<&str> = match c {
                '"' => Some("\\\""),
                '\\' => Some("\\\\"),
                _ => None,
            };
            let needs_u = matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}');
            if esc.is_none() && !needs_u {
                continue;
            }
            self.0.push_str(&s[start..i]);
            match esc {
                Some(e) => self.0.push_str(e),
                None => {
                    use std::fmt::Write;
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
            }
            start = i + c.len_utf8();
        }
        self.0.push_str(&s[start..]);
        self.0.push('"');
    }

    fn key_str(&mut self, key: &str, v: &str) {
        self.0.push_str(",\"");
        self.0.push_str(key);
        self.0.push_str("\":");
        self.str(v);
    }

    fn opt(&mut self, key: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.key_str(key, v);
        }
    }

    fn list(&mut self, key: &str, items: &[String]) {
        if items.is_empty() {
            return;
        }
        self.0.push_str(",\"");
        self.0.push_str(key);
        self.0.push_str("\":[");
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.str(s);
        }
        self.0.push(']');
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> AuditRecord {
        let mut r = AuditRecord::new(
            1_714_740_000_123,
            "req-1",
            Interaction::SearchType,
            Actor { kind: "operator".into(), id: "operator".into(), role: Some("admin".into()) },
        );
        r.source = Some("127.0.0.1".into());
        r.resource_type = Some("Observation".into());
        r.query = Some("patient=p1&code=x\r\ny".into());
        r.entities = vec![Entity {
            reference: "Observation/o1/_history/2".into(),
            role: EntityRole::Match,
            category: "labs".into(),
            patients: vec!["p1".into()],
        }];
        r.rules = vec!["operator".into()];
        r.reason = Some("The \"operator\" holds \\ access.".into());
        r.normalise();
        r
    }

    #[test]
    fn encodes_in_fixed_order_and_round_trips() {
        let r = sample();
        let text = encode(7, &r);
        assert!(text.starts_with("{\"v\":1,\"seq\":7,\"t\":1714740000123,\"rid\":\"req-1\",\"i\":\"search-type\""));
        assert!(!text.contains('\n') && !text.contains('\r'));
        assert!(text.contains("x\\u000d\\u000ay"));
        assert_eq!(decode(&text), Ok((7, r)));
    }

    #[test]
    fn the_index_view_agrees_with_the_record() {
        let r = sample();
        let text = encode(3, &r);
        let v = IndexView::parse(&text).unwrap();
        assert_eq!((v.seq, v.t, v.i.as_ref(), v.o.as_ref()), (3, r.time_ms, "search-type", "success"));
        let owned: Vec<(String, String)> =
            v.subjects().into_iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(owned, r.subjects());
    }

    #[test]
    fn refuses_non_canonical_text() {
        let text = encode(1, &sample());
        let spaced = text.replacen(",", ", ", 1);
        assert!(decode(&spaced).is_err());
        let reordered = text.replacen("{\"v\":1,\"seq\":1", "{\"seq\":1,\"v\":1", 1);
        assert!(decode(&reordered).is_err());
        let short_escape = text.replace("\\u000a", "\\n");
        assert!(decode(&short_escape).is_err());
        assert!(decode(&text.replace("\"v\":1", "\"v\":2")).is_err());
        assert!(decode("{}").is_err());
    }

    /// What `verify` reads of a record must be what a reader decodes from it.
    fn agrees(text: &str) -> Result<(), String> {
        let (seq, r) = decode(text).map_err(|e| format!("decode: {e}"))?;
        let v = Indexed::parse(text).map_err(|e| format!("indexed: {e}"))?;
        let same = v.seq == seq
            && v.t == r.time_ms
            && v.interaction == r.interaction
            && v.outcome == r.outcome
            && v.actor_kind == r.actor.kind
            && v.actor_id == r.actor.id
            && v.client.as_deref() == r.client.as_deref()
            && v.subjects_match(r.subjects().iter().map(|(p, c)| (p.as_str(), c.as_str())));
        if same { Ok(()) } else { Err(format!("{v:?} disagrees with {r:?}")) }
    }

    #[test]
    fn the_strict_index_parser_reads_what_decode_reads() {
        let mut r = sample();
        agrees(&encode(7, &r)).unwrap();
        // Escapes, several entities, patients without an entity, a client, negative time.
        r.time_ms = -5;
        r.client = Some("app \"x\"\u{1}".into());
        r.actor.id = "a\\b\u{2028}c\u{85}".into();
        r.entities.push(Entity {
            reference: "Condition/c".into(),
            role: EntityRole::Include,
            category: String::new(),
            patients: vec!["p2".into(), "p1".into()],
        });
        r.patients = vec!["p3".into(), "p1".into()];
        r.on_behalf_of = Some("p1".into());
        r.consents = vec!["Consent/1".into()];
        agrees(&encode(i64::MAX, &r)).unwrap();
        let text = encode(1, &r);
        let v = Indexed::parse(&text).unwrap();
        assert_eq!(v.client.as_deref(), Some("app \"x\"\u{1}"));
        assert_eq!(v.actor_id, "a\\b\u{2028}c\u{85}");
        // A record with no entity and no patient.
        let bare = AuditRecord::new(0, "r", Interaction::Login, Actor::new("user", "u1"));
        agrees(&encode(0, &bare)).unwrap();
    }

    #[test]
    fn the_strict_index_parser_refuses_what_encode_never_writes() {
        let text = encode(12, &sample());
        let refuse = |t: String| assert!(Indexed::parse(&t).is_err(), "accepted {t}");
        refuse(text.replacen(",", ", ", 1));
        refuse(text.replacen("\"seq\":12", "\"seq\":012", 1));
        refuse(text.replacen("\"seq\":12", "\"seq\":+12", 1));
        refuse(text.replacen("\"seq\":12", "\"seq\":-0", 1));
        refuse(text.replacen("{\"v\":1,\"seq\":12", "{\"seq\":12,\"v\":1", 1));
        refuse(text.replace("\\u000a", "\\n"));
        refuse(text.replace("\\u000a", "\\u000A"));
        refuse(text.replace("\\u000a", "\n"));
        refuse(text.replacen("p1", "p\\u00411", 1));
        refuse(text.replace("\"v\":1", "\"v\":2"));
        refuse(format!("{text} "));
        refuse(text.replacen("}", ",\"x\":1}", 1));
        refuse(text.replacen("\"st\":200", "\"st\":70000", 1));
        refuse(text.replacen("\"i\":\"search-type\"", "\"i\":\"peek\"", 1));
        refuse(text.replacen("\"cat\":\"labs\"", "\"cat\":\"\"", 1));
        refuse(text.replacen("\"pat\":[\"p1\"]", "\"pat\":[]", 1));
        refuse(text[..text.len() - 1].to_string());
        refuse(String::new());
    }

    fn arb_text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-zA-Z0-9 \"\\\\\u{0}-\u{1f}\u{7f}-\u{9f}\u{e9}\u{2028}\u{1f600}/|=&-]{0,12}")
            .unwrap()
    }

    proptest! {
        /// Whatever the strings hold, the encoding decodes to the same record and carries no raw
        /// control character.
        #[test]
        fn any_record_round_trips(
            a in arb_text(), b in arb_text(), c in arb_text(), pats in proptest::collection::vec(arb_text(), 0..3),
            seq in 0i64..i64::MAX, t in any::<i64>(), st in any::<u16>(),
        ) {
            let mut r = AuditRecord::new(t, &a, Interaction::Read, Actor::new(&b, &c));
            r.status = st;
            r.query = Some(c.clone());
            r.entities.push(Entity { reference: a.clone(), role: EntityRole::Target, category: b.clone(), patients: pats.clone() });
            r.patients = pats;
            let text = encode(seq, &r);
            let raw_control = text.chars().any(|ch| ch.is_control() || ch == '\u{2028}' || ch == '\u{2029}');
            prop_assert!(!raw_control);
            prop_assert_eq!(agrees(&text), Ok(()));
            prop_assert_eq!(join(seq, &encode_tail(&r)), text.clone());
            prop_assert_eq!(decode(&text), Ok((seq, r)));
        }

        /// Whatever one edit does to a record's text, the strict parser accepts it only if
        /// it is still canonical, and then reads exactly what `decode` reads.
        #[test]
        fn an_edited_text_is_read_alike_or_refused(
            a in arb_text(), pats in proptest::collection::vec(arb_text(), 0..3),
            pos in any::<usize>(), len in 0usize..4, insert in arb_text(),
        ) {
            let mut r = AuditRecord::new(1, &a, Interaction::Read, Actor::new("user", &a));
            r.entities.push(Entity { reference: a.clone(), role: EntityRole::Target, category: "labs".into(), patients: pats.clone() });
            r.patients = pats;
            let text = encode(3, &r);
            let mut at = pos % (text.len() + 1);
            while !text.is_char_boundary(at) { at -= 1; }
            let mut to = (at + len).min(text.len());
            while !text.is_char_boundary(to) { to += 1; }
            let edited = format!("{}{}{}", &text[..at], insert, &text[to..]);
            if Indexed::parse(&edited).is_ok() {
                prop_assert_eq!(agrees(&edited), Ok(()));
            }
        }
    }
}
