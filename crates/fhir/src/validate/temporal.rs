//! Calendar-aware checks for FHIR `date`, `dateTime`, `instant` and `time` strings.
//!
//! The R4 schema regexes accept `2019-02-29` and `1970-02-31`; FHIR says "dates SHALL be
//! valid dates", so the day is checked against the month and leap years here.

fn digits<const N: usize>(s: &str) -> Option<(u32, &str)> {
    let head = s.get(..N)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, &s[N..]))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        2 => 28,
        _ => 31,
    }
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, a real calendar date (year 0001–9999). Returns the
/// unparsed rest and whether the day was present.
fn parse_date_parts(s: &str) -> Option<(&str, bool)> {
    let (year, rest) = digits::<4>(s)?;
    if year == 0 {
        return None;
    }
    let Some(rest) = rest.strip_prefix('-') else {
        return Some((rest, false));
    };
    let (month, rest) = digits::<2>(rest)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    let Some(rest) = rest.strip_prefix('-') else {
        return Some((rest, false));
    };
    let (day, rest) = digits::<2>(rest)?;
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some((rest, true))
}

pub(crate) fn parse_date(s: &str) -> Option<&str> {
    parse_date_parts(s).map(|(rest, _)| rest)
}

/// `HH:MM:SS(.f+)?`; seconds may be 60 (leap second), as in the R4 regex.
pub(crate) fn parse_time(s: &str) -> Option<&str> {
    let (h, rest) = digits::<2>(s)?;
    let (m, rest) = digits::<2>(rest.strip_prefix(':')?)?;
    let (sec, rest) = digits::<2>(rest.strip_prefix(':')?)?;
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    match rest.strip_prefix('.') {
        Some(frac) => {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 { None } else { Some(&frac[n..]) }
        }
        None => Some(rest),
    }
}

/// `Z` or `(+|-)hh:mm` with hh 00–13 (any minutes) or exactly 14:00.
fn is_zone(s: &str) -> bool {
    if s == "Z" {
        return true;
    }
    let Some(rest) = s.strip_prefix(['+', '-']) else {
        return false;
    };
    let Some((h, rest)) = digits::<2>(rest) else {
        return false;
    };
    let Some((m, rest)) = rest.strip_prefix(':').and_then(digits::<2>) else {
        return false;
    };
    rest.is_empty() && m <= 59 && (h <= 13 || (h == 14 && m == 0))
}

/// A date, or a full date + `T` + time + zone (hours and minutes need seconds and a zone).
pub(crate) fn is_date_time(s: &str) -> bool {
    let Some((rest, full_date)) = parse_date_parts(s) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    full_date && rest.strip_prefix('T').and_then(parse_time).is_some_and(is_zone)
}

/// Full date, time and zone: "known at least to the second".
pub(crate) fn is_instant(s: &str) -> bool {
    matches!(parse_date_parts(s), Some((rest, true)) if rest.strip_prefix('T').and_then(parse_time).is_some_and(is_zone))
}

#[cfg(test)]
mod tests {
    use super::super::primitives::check;
    use super::super::schema::Prim;
    use serde_json::{Value, json};

    fn ok(p: Prim, v: Value) -> bool {
        check(p, &v).is_none()
    }

    #[test]
    fn dates() {
        for good in ["2019", "2019-02", "2019-02-28", "2020-02-29", "2000-02-29", "0001-01-01"] {
            assert!(ok(Prim::Date, json!(good)), "{good}");
        }
        for bad in [
            "1970-13-45",
            "2019-02-29",
            "1900-02-29",
            "2019-04-31",
            "0000",
            "19",
            "2019-1",
            "2019-01-01T00:00:00Z",
            "2019-00",
            "2019-01-00",
            "２０１９",
        ] {
            assert!(!ok(Prim::Date, json!(bad)), "{bad}");
        }
    }

    #[test]
    fn date_times_and_instants() {
        for good in [
            "2019",
            "2019-02",
            "2019-02-28",
            "2020-09-28T10:27:35.793527+00:00",
            "2015-02-07T13:28:17.239+02:00",
            "2015-02-07T13:28:17Z",
            "2015-02-07T23:59:60-14:00",
        ] {
            assert!(ok(Prim::DateTime, json!(good)), "{good}");
        }
        for bad in [
            "2015-02-07T13:28Z",
            "2015-02-07T13:28:17",
            "2015-02-07T24:00:00Z",
            "2015-02-07T13:28:17.Z",
            "2015-02-07T13:28:17+14:30",
            "2015-02T13:28:17Z",
            "2015-02-30T13:28:17Z",
            "2015-02-07 13:28:17Z",
            "2015-02-07T13:28:17+0100",
        ] {
            assert!(!ok(Prim::DateTime, json!(bad)), "{bad}");
        }
        assert!(ok(Prim::Instant, json!("2015-02-07T13:28:17.239+02:00")));
        for bad in ["2015-02-07", "2015", "2015-02-07T13:28:17"] {
            assert!(!ok(Prim::Instant, json!(bad)), "{bad}");
        }
        assert!(ok(Prim::Time, json!("13:28:17.5")));
        for bad in ["13:28", "25:00:00", "13:28:17Z", "13:28:17."] {
            assert!(!ok(Prim::Time, json!(bad)), "{bad}");
        }
    }
}
