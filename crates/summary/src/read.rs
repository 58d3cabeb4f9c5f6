//! Reading FHIR values into plain words. Every accessor tolerates absent, mistyped or odd
//! fields: FHIR allows most elements to be missing, and the summary shows what it can.

use portico_fhir::datetime;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime};

/// A string field, trimmed; `None` when absent, not a string or blank.
pub fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// The elements of an array field (none when absent or not an array).
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A JSON number as written (serde_json keeps the text with `arbitrary_precision`), tidied:
/// at most four decimals, so a simulator's `8.904975684183583` reads `8.905`.
pub fn number(v: &Value) -> Option<String> {
    let n = v.as_number()?;
    let text = n.to_string();
    if let Some((int, frac)) = text.split_once('.')
        && frac.len() > 4
        && !frac.contains(['e', 'E'])
    {
        if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
            let s = format!("{f:.3}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            return Some(s.to_owned());
        }
        return Some(format!("{int}.{}", frac.get(..4).unwrap_or(frac)));
    }
    Some(text)
}

/// Human text of a CodeableConcept: `text`, else the first coding's `display`, else its code.
pub fn concept(v: &Value) -> Option<String> {
    if let Some(t) = str_at(v, "text") {
        return Some(t.to_owned());
    }
    let codings = arr(v, "coding");
    codings
        .iter()
        .find_map(|c| str_at(c, "display"))
        .or_else(|| codings.iter().find_map(|c| str_at(c, "code")))
        .map(str::to_owned)
}

/// First code of a CodeableConcept (any system), lower-cased.
pub fn concept_code(v: &Value) -> Option<String> {
    arr(v, "coding").iter().find_map(|c| str_at(c, "code")).map(str::to_ascii_lowercase)
}

/// Every code of a CodeableConcept.
pub fn concept_codes(v: &Value) -> impl Iterator<Item = &str> {
    arr(v, "coding").iter().filter_map(|c| str_at(c, "code"))
}

/// A Reference's `display`.
pub fn reference_display(v: &Value) -> Option<String> {
    str_at(v, "display").map(str::to_owned)
}

/// A Quantity as `value unit` (with its comparator, e.g. `< 5 mg/dL`).
pub fn quantity(v: &Value) -> Option<String> {
    let value = v.get("value").and_then(number)?;
    let mut out = String::new();
    if let Some(cmp) = str_at(v, "comparator") {
        out.push_str(cmp);
        out.push(' ');
    }
    out.push_str(&value);
    if let Some(unit) = str_at(v, "unit").or_else(|| str_at(v, "code")) {
        out.push(' ');
        out.push_str(unit);
    }
    Some(out)
}

/// Unit of a Quantity, for comparing a value with its range.
pub fn quantity_unit(v: &Value) -> Option<&str> {
    str_at(v, "code").or_else(|| str_at(v, "unit"))
}

/// Sort key of a FHIR date/dateTime/instant: the start of its range in epoch ms.
pub fn sort_key(s: &str) -> Option<i64> {
    datetime::parse_range(s).map(|(low, _)| low)
}

/// A FHIR date or dateTime as words: `21 July 1997`, `July 1997`, `1997`, or with a time
/// `23 January 2026, 14:45 (UTC)`, shown in the offset it was written with (the patient's
/// clinic knows its own time zone better than we do). Unparseable values are shown as
/// written, cut short: wrong data is still data the patient may need to question.
pub fn date_words(s: &str, with_time: bool) -> String {
    let s = s.trim();
    if datetime::parse_range(s).is_none() {
        return s.chars().take(40).collect();
    }
    let mut parts = s.splitn(3, '-');
    let year = parts.next().unwrap_or_default();
    let month = parts.next().and_then(|m| m.parse::<u8>().ok()).and_then(|m| Month::try_from(m).ok());
    let rest = parts.next().unwrap_or_default();
    let Some(month) = month else { return year.to_owned() };
    let month = short_month(month);
    if rest.is_empty() {
        return format!("{month} {year}");
    }
    let day = rest.get(..2).and_then(|d| d.parse::<u8>().ok()).unwrap_or(1);
    let date = format!("{day} {month} {year}");
    if !with_time || rest.len() <= 2 {
        return date;
    }
    match parse_datetime(s) {
        Some(t) => format!("{date}, {:02}:{:02} ({})", t.hour(), t.minute(), offset_words(t)),
        None => date,
    }
}

/// "Sep" rather than "September": dates sit in narrow table columns.
fn short_month(m: Month) -> &'static str {
    match m {
        Month::January => "Jan",
        Month::February => "Feb",
        Month::March => "Mar",
        Month::April => "Apr",
        Month::May => "May",
        Month::June => "Jun",
        Month::July => "Jul",
        Month::August => "Aug",
        Month::September => "Sep",
        Month::October => "Oct",
        Month::November => "Nov",
        Month::December => "Dec",
    }
}

fn offset_words(t: OffsetDateTime) -> String {
    let (h, m, _) = t.offset().as_hms();
    if h == 0 && m == 0 {
        "UTC".to_owned()
    } else {
        format!("UTC{}{:02}:{:02}", if h < 0 || m < 0 { '-' } else { '+' }, h.abs(), m.abs())
    }
}

/// A full dateTime with offset.
fn parse_datetime(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// The generation time as words, always UTC.
pub fn instant_words(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{} {} {}, {:02}:{:02} UTC", t.day(), short_month(t.month()), t.year(), t.hour(), t.minute())
}

/// Age in whole years on `today`, for a full birth date.
pub fn age_on(birth: &str, today: Date) -> Option<i32> {
    let mut parts = birth.trim().splitn(3, '-');
    let y: i32 = parts.next()?.parse().ok()?;
    let m: u8 = parts.next()?.parse().ok()?;
    let d: u8 = parts.next()?.parse().ok()?;
    let born = Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()?;
    if born > today {
        return None;
    }
    let mut age = today.year() - born.year();
    if (u8::from(today.month()), today.day()) < (m, d) {
        age -= 1;
    }
    Some(age)
}

/// The first present `<prefix>DateTime` / `<prefix>Period.start` / `<prefix>String`-like
/// value of a choice element (`onset`, `effective`, `occurrence`, …): `(raw text, key)`.
pub fn choice_date<'a>(v: &'a Value, prefix: &str) -> Option<&'a str> {
    str_at(v, &format!("{prefix}DateTime"))
        .or_else(|| str_at(v, &format!("{prefix}Instant")))
        .or_else(|| v.get(format!("{prefix}Period")).and_then(|p| str_at(p, "start")))
        .filter(|s| datetime::parse_range(s).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_in_words() {
        assert_eq!(date_words("1997-07-21", false), "21 Jul 1997");
        assert_eq!(date_words("1997-07", false), "Jul 1997");
        assert_eq!(date_words("1997", false), "1997");
        assert_eq!(date_words("2026-01-23T14:45:00Z", true), "23 Jan 2026, 14:45 (UTC)");
        assert_eq!(date_words("2026-01-23T14:45:00+02:00", true), "23 Jan 2026, 14:45 (UTC+02:00)");
        assert_eq!(date_words("2020-09-28T10:27:35.793527+00:00", false), "28 Sep 2020");
        assert_eq!(date_words("not a date", false), "not a date");
    }

    #[test]
    fn numbers_keep_their_text_but_not_simulator_noise() {
        assert_eq!(number(&json!(4.29)).as_deref(), Some("4.29"));
        assert_eq!(number(&json!(8.904975684183583)).as_deref(), Some("8.905"));
        assert_eq!(number(&json!(120)).as_deref(), Some("120"));
        assert_eq!(number(&json!("7")), None);
    }

    #[test]
    fn concepts_and_quantities() {
        assert_eq!(concept(&json!({"coding": [{"code": "x"}, {"display": "Y"}]})).as_deref(), Some("Y"));
        assert_eq!(concept(&json!({"text": " T ", "coding": [{"display": "Y"}]})).as_deref(), Some("T"));
        assert_eq!(concept(&json!({"coding": "nope"})), None);
        assert_eq!(quantity(&json!({"value": 5, "unit": "mg", "comparator": "<"})).as_deref(), Some("< 5 mg"));
        assert_eq!(quantity(&json!({"unit": "mg"})), None);
    }

    #[test]
    fn ages() {
        let today = Date::from_calendar_date(2026, Month::January, 1).unwrap_or(Date::MIN);
        assert_eq!(age_on("1997-07-21", today), Some(28));
        assert_eq!(age_on("1997-01-01", today), Some(29));
        assert_eq!(age_on("1997", today), None);
        assert_eq!(age_on("2030-01-01", today), None);
    }
}
