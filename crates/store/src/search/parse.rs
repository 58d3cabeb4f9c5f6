//! From URL query parameters to a [`SearchQuery`]. Values are data, never SQL: everything
//! parsed here ends up in bind parameters.

use super::{Cond, Cursor, DEFAULT_COUNT, Filter, Include, MAX_COUNT, Prefix, SearchQuery, SortKey, StrMode, Target};
use portico_fhir::datetime;
use portico_fhir::search_params::{self, ParamType};

/// The search plus the result-shaping parameters the HTTP layer applies.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub query: SearchQuery,
    /// Parameters this server does not know or support (strict handling answers 400).
    pub unknown: Vec<String>,
    /// `_elements`, if given.
    pub elements: Option<Vec<String>>,
    /// `_summary=true`.
    pub summary: bool,
    /// `_count` was capped to [`MAX_COUNT`].
    pub count_capped: bool,
}

/// A malformed search: answered 400 with this message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// Most parameters, and values per parameter, accepted in one search (fan-out limit).
const MAX_PARAMS: usize = 64;
const MAX_ALTERNATIVES: usize = 100;

/// Parse the query parameters of a search on `resource_type` (None: system-level search).
pub fn parse_search(resource_type: Option<&str>, params: &[(String, String)]) -> Result<Parsed, ParseError> {
    if params.len() > MAX_PARAMS {
        return err(format!("too many search parameters (at most {MAX_PARAMS})"));
    }
    let mut out = Parsed::default();
    out.query.count = DEFAULT_COUNT;
    if let Some(rt) = resource_type {
        out.query.resource_types.push(rt.to_string());
    }
    let type_for_params = resource_type.unwrap_or("Resource");
    for (raw_name, value) in params {
        // No stored text holds U+0000 (PostgreSQL cannot even compare with it).
        if raw_name.contains('\0') || value.contains('\0') {
            return err("search parameters may not contain the character U+0000");
        }
        let (name, modifier) = match raw_name.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (raw_name.as_str(), None),
        };
        match name {
            "_count" => {
                let n: usize =
                    value.parse().map_err(|_| ParseError(format!("_count must be a number, got '{}'", clip(value))))?;
                out.count_capped = n > MAX_COUNT;
                out.query.count = n.min(MAX_COUNT);
                if n == 0 {
                    out.query.count_only = true;
                    out.query.total = true;
                }
            }
            "_cursor" => {
                out.query.cursor =
                    Some(Cursor::decode(value).ok_or_else(|| ParseError("invalid paging cursor".into()))?);
            }
            "_sort" => {
                for key in value.split(',').filter(|k| !k.is_empty()) {
                    let (descending, code) = match key.strip_prefix('-') {
                        Some(c) => (true, c),
                        None => (false, key),
                    };
                    let target = target_for(type_for_params, code)
                        .ok_or_else(|| ParseError(format!("cannot sort by unknown parameter '{}'", clip(code))))?;
                    out.query.sort.push(SortKey { target, descending });
                }
            }
            "_include" | "_revinclude" => {
                if modifier == Some("iterate") || modifier == Some("recurse") {
                    out.unknown.push(raw_name.clone());
                    continue;
                }
                let inc = parse_include(value)?;
                if name == "_include" {
                    out.query.includes.push(inc);
                } else {
                    out.query.revincludes.push(inc);
                }
            }
            "_total" => match value.as_str() {
                "accurate" | "estimate" => out.query.total = true,
                "none" => out.query.total = false,
                _ => return err("_total must be none, estimate or accurate"),
            },
            "_summary" => match value.as_str() {
                "count" => {
                    out.query.count_only = true;
                    out.query.total = true;
                }
                "true" => out.summary = true,
                "false" => {}
                _ => out.unknown.push(format!("_summary={}", clip(value))),
            },
            "_elements" => {
                out.elements = Some(value.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
            }
            "_format" | "_pretty" => {}
            "_since" if resource_type.is_none() || out.query.in_compartment.is_some() => {
                let (lo, _) =
                    datetime::parse_range(value).ok_or_else(|| ParseError("_since must be an instant".into()))?;
                out.query.since_ms = Some(lo);
            }
            "_type" if resource_type.is_none() => {
                for t in value.split(',') {
                    if !portico_fhir::resource_types::is_resource_type(t) {
                        return err(format!("unknown resource type '{}' in _type", clip(t)));
                    }
                    out.query.resource_types.push(t.to_string());
                }
            }
            _ => match parse_filter(type_for_params, name, modifier, value)? {
                Some(f) => out.query.filters.push(f),
                None => out.unknown.push(raw_name.clone()),
            },
        }
    }
    Ok(out)
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn target_for(resource_type: &str, code: &str) -> Option<Target> {
    match code {
        "_id" => Some(Target::Id),
        "_lastUpdated" => Some(Target::LastUpdated),
        _ => {
            let p = search_params::lookup(resource_type, code)?;
            match p.kind {
                ParamType::Composite | ParamType::Special => None,
                kind => Some(Target::Index { param: p.code.clone(), kind }),
            }
        }
    }
}

fn parse_include(value: &str) -> Result<Include, ParseError> {
    let mut parts = value.split(':');
    let (Some(source), Some(param)) = (parts.next(), parts.next()) else {
        return err("_include/_revinclude must be Type:param[:TargetType]");
    };
    if !portico_fhir::resource_types::is_resource_type(source) {
        return err(format!("unknown resource type '{}' in include", clip(source)));
    }
    let known = search_params::lookup(source, param).is_some_and(|p| p.kind == ParamType::Reference);
    if !known {
        return err(format!("'{}:{}' is not a reference search parameter", clip(source), clip(param)));
    }
    Ok(Include {
        source_type: source.to_string(),
        param: param.to_string(),
        target_type: parts.next().map(str::to_string),
    })
}

/// Parse one `name[:modifier]=value` into a filter; `Ok(None)` for unknown parameters.
fn parse_filter(
    resource_type: &str,
    name: &str,
    modifier: Option<&str>,
    value: &str,
) -> Result<Option<Filter>, ParseError> {
    let Some(target) = target_for(resource_type, name) else { return Ok(None) };
    let kind = match &target {
        Target::Id => ParamType::Token,
        Target::LastUpdated => ParamType::Date,
        Target::Index { kind, .. } => *kind,
    };
    let mut filter = Filter { target, negate: false, missing: None, alternatives: Vec::new() };
    if modifier == Some("missing") {
        filter.missing = Some(match value {
            "true" => true,
            "false" => false,
            _ => return err(":missing takes true or false"),
        });
        return Ok(Some(filter));
    }
    let values = split_unescaped(value, ',');
    if values.len() > MAX_ALTERNATIVES {
        return err(format!("too many values for '{}'", clip(name)));
    }
    for v in values {
        let cond = match (kind, modifier) {
            (ParamType::Token, None | Some("not")) => {
                filter.negate = modifier == Some("not");
                parse_token(&v)
            }
            (ParamType::Token, Some("text")) => Cond::TokenText(v.to_lowercase()),
            (ParamType::String, None) => {
                Cond::Str { value: portico_fhir::extract::normalize(&v), mode: StrMode::Prefix }
            }
            (ParamType::String, Some("exact")) => Cond::Str { value: v, mode: StrMode::Exact },
            (ParamType::String, Some("contains")) => {
                Cond::Str { value: portico_fhir::extract::normalize(&v), mode: StrMode::Contains }
            }
            (ParamType::Date, None) => parse_date(&v)?,
            (ParamType::Number, None) => {
                let (prefix, rest) = split_prefix(&v);
                let (value, lo, hi) = parse_number(rest)?;
                Cond::Number { prefix, value, lo, hi }
            }
            (ParamType::Quantity, None) => parse_quantity(&v)?,
            (ParamType::Reference, m) => parse_reference(&v, m)?,
            (ParamType::Uri, None) => Cond::Uri { value: v, below: false },
            (ParamType::Uri, Some("below")) => Cond::Uri { value: v, below: true },
            (_, Some(m)) => return err(format!("modifier ':{}' is not supported on '{}'", clip(m), clip(name))),
            _ => return Ok(None),
        };
        filter.alternatives.push(cond);
    }
    if matches!(filter.target, Target::Id) {
        // `_id` compares the id column; express each alternative as a plain code.
        for c in &filter.alternatives {
            if !matches!(c, Cond::Token { system: None, code: Some(_) }) {
                return err("_id takes plain ids");
            }
        }
    }
    Ok(Some(filter))
}

/// Split on `sep` unless escaped with a backslash, unescaping `\,` `\|` `\$` `\\`.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ (',' | '|' | '$' | '\\')) if n != sep => {
                    cur.push('\\');
                    cur.push(n);
                }
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_token(v: &str) -> Cond {
    let parts = split_unescaped(v, '|');
    if parts.len() >= 2 {
        let system = unescape(&parts[0]);
        let code = unescape(&parts[1..].join("|"));
        Cond::Token {
            system: Some(if system.is_empty() { None } else { Some(system) }),
            code: if code.is_empty() { None } else { Some(code) },
        }
    } else {
        Cond::Token { system: None, code: Some(unescape(v)) }
    }
}

fn split_prefix(v: &str) -> (Prefix, &str) {
    let p = match v.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("gt") => Prefix::Gt,
        Some("lt") => Prefix::Lt,
        Some("ge") => Prefix::Ge,
        Some("le") => Prefix::Le,
        Some("sa") => Prefix::Sa,
        Some("eb") => Prefix::Eb,
        Some("ap") => Prefix::Ap,
        _ => return (Prefix::Eq, v),
    };
    (p, &v[2..])
}

fn parse_date(v: &str) -> Result<Cond, ParseError> {
    let (prefix, rest) = split_prefix(v);
    let (lo, hi) =
        datetime::parse_range(rest).ok_or_else(|| ParseError(format!("'{}' is not a valid date", clip(rest))))?;
    Ok(Cond::Date { prefix, lo, hi })
}

/// A number and the range its written precision implies (`5.4` → [5.35, 5.45)).
fn parse_number(s: &str) -> Result<(f64, f64, f64), ParseError> {
    let valid = !s.is_empty()
        && s.len() <= 40
        && s.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    let value: f64 = if valid { s.parse().ok() } else { None }
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| ParseError(format!("'{}' is not a number", clip(s))))?;
    let mantissa = s.split(['e', 'E']).next().unwrap_or(s);
    let decimals = mantissa.split_once('.').map(|(_, f)| f.len()).unwrap_or(0) as i32;
    let exp: i32 = s.split_once(['e', 'E']).and_then(|(_, e)| e.parse().ok()).unwrap_or(0);
    let half = 0.5 * 10f64.powi(exp - decimals);
    Ok((value, value - half, value + half))
}

fn parse_quantity(v: &str) -> Result<Cond, ParseError> {
    let (prefix, rest) = split_prefix(v);
    let parts = split_unescaped(rest, '|');
    let (value, lo, hi) = parse_number(&parts[0])?;
    let system = parts.get(1).map(|s| unescape(s)).filter(|s| !s.is_empty());
    let code = parts.get(2).map(|s| unescape(s)).filter(|s| !s.is_empty());
    Ok(Cond::Quantity { prefix, value, lo, hi, system, code })
}

fn parse_reference(v: &str, modifier: Option<&str>) -> Result<Cond, ParseError> {
    let type_modifier = match modifier {
        None => None,
        Some(m) if portico_fhir::resource_types::is_resource_type(m) => Some(m.to_string()),
        Some(m) => return err(format!("modifier ':{}' is not supported on references", clip(m))),
    };
    let v = unescape(v);
    let without_history = match v.find("/_history/") {
        Some(i) => &v[..i],
        None => v.as_str(),
    };
    let segments: Vec<&str> = without_history.rsplitn(3, '/').collect();
    let absolute = v.contains("://");
    match segments.as_slice() {
        [id] => Ok(Cond::Reference { target_type: type_modifier, id: Some(id.to_string()), url: None }),
        [id, ty, ..] if portico_fhir::resource_types::is_resource_type(ty) => {
            Ok(Cond::Reference { target_type: Some(ty.to_string()), id: Some(id.to_string()), url: None })
        }
        _ if absolute || v.starts_with("urn:") => Ok(Cond::Reference { target_type: None, id: None, url: Some(v) }),
        _ => err(format!("'{}' is not a valid reference", clip(&v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn parses_the_portal_hot_path() {
        let parsed =
            parse_search(Some("Observation"), &p(&[("patient", "pt-1"), ("category", "laboratory"), ("_count", "50")]))
                .unwrap();
        assert_eq!(parsed.query.count, 50);
        assert_eq!(parsed.query.filters.len(), 2);
        assert!(parsed.unknown.is_empty());
    }

    #[test]
    fn token_forms() {
        assert_eq!(
            parse_token("http://loinc.org|1234-5"),
            Cond::Token { system: Some(Some("http://loinc.org".into())), code: Some("1234-5".into()) }
        );
        assert_eq!(parse_token("|x"), Cond::Token { system: Some(None), code: Some("x".into()) });
        assert_eq!(parse_token("sys|"), Cond::Token { system: Some(Some("sys".into())), code: None });
        assert_eq!(parse_token("a\\|b"), Cond::Token { system: None, code: Some("a|b".into()) });
    }

    #[test]
    fn number_precision() {
        let (v, lo, hi) = parse_number("5.4").unwrap();
        assert_eq!(v, 5.4);
        assert!((lo - 5.35).abs() < 1e-9 && (hi - 5.45).abs() < 1e-9);
        assert!(parse_number("1;DROP TABLE").is_err());
        assert!(parse_number("NaN").is_err());
    }

    #[test]
    fn unknown_params_are_reported_and_count_is_capped() {
        let parsed = parse_search(Some("Patient"), &p(&[("nonsense", "1"), ("_count", "100000")])).unwrap();
        assert_eq!(parsed.unknown, vec!["nonsense".to_string()]);
        assert_eq!(parsed.query.count, MAX_COUNT);
        assert!(parsed.count_capped);
    }

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("Patient/1", None).unwrap(),
            Cond::Reference { target_type: Some("Patient".into()), id: Some("1".into()), url: None }
        );
        assert_eq!(
            parse_reference("http://x/fhir/Patient/1/_history/2", None).unwrap(),
            Cond::Reference { target_type: Some("Patient".into()), id: Some("1".into()), url: None }
        );
        assert_eq!(
            parse_reference("1", Some("Patient")).unwrap(),
            Cond::Reference { target_type: Some("Patient".into()), id: Some("1".into()), url: None }
        );
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(parse_search(Some("Observation"), &p(&[("date", "2020-13-01")])).is_err());
        assert!(parse_search(Some("Observation"), &p(&[("_count", "x")])).is_err());
        assert!(parse_search(Some("Observation"), &p(&[("_cursor", "zzz")])).is_err());
        assert!(parse_search(Some("Observation"), &p(&[("_sort", "nonsense")])).is_err());
    }
}
