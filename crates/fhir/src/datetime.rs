//! FHIR `date` / `dateTime` / `instant` values as ranges of epoch milliseconds.
//!
//! FHIR search compares *ranges*, not points: `2020-01` means the whole of January, and a
//! search `date=2020-01-05` matches any value whose range overlaps that day. So every value
//! is turned into `[low, high)` at the precision it was written with.
//!
//! Times without a timezone (allowed by FHIR only for partial dates, but clients send them)
//! are read as **UTC**, so the same text always gives the same range whatever the server's
//! locale. A `:60` leap second is read as `:59`. Years are 0001–9999, as in FHIR.
//! The `time` crate validates the calendar (no 2019-02-29, no 2020-13-01); the arithmetic is
//! plain integer maths so that the top of year 9999 still has an exclusive upper bound.

use time::{Date, Month, OffsetDateTime};

const MS_PER_DAY: i64 = 86_400_000;
/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;
/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: what `format_instant` can print.
const MIN_MS: i64 = -62_135_596_800_000;
const MAX_MS: i64 = 253_402_300_799_999;

/// Turn a FHIR date, dateTime or instant into `[low, high)` epoch milliseconds (UTC).
///
/// `2020` covers the year, `2020-01` the month, `2020-01-05` the day, `…T10:27` the
/// minute, `…T10:27:35` the second, and `…T10:27:35.5` / `.793527` the tenth / the
/// millisecond. Returns `None` for anything that is not a valid FHIR date-time.
pub fn parse_range(s: &str) -> Option<(i64, i64)> {
    parse(s).map(|p| (p.low, p.high))
}

/// Parse a FHIR `instant` (full date-time with seconds and a timezone) into epoch ms,
/// truncated to the millisecond. Partial values are refused: an instant is a point.
pub fn parse_instant(s: &str) -> Option<i64> {
    parse(s).filter(|p| p.full_instant).map(|p| p.low)
}

/// Format epoch ms as RFC 3339 UTC with milliseconds: `2026-11-28T13:48:43.123Z`.
/// Values beyond years 0001–9999 (such as the `i64::MAX` of an open period) are clamped.
pub fn format_instant(ms: i64) -> String {
    let ms = ms.clamp(MIN_MS, MAX_MS);
    match OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        // Unreachable after the clamp; keep a valid instant rather than panic.
        Err(_) => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

struct Parsed {
    low: i64,
    high: i64,
    /// Seconds and an explicit timezone were present.
    full_instant: bool,
}

/// A cursor over ASCII bytes; every reader returns `None` past the end or on a mismatch.
struct Cur<'s> {
    b: &'s [u8],
    i: usize,
}

impl Cur<'_> {
    fn done(&self) -> bool {
        self.i >= self.b.len()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn digits(&mut self, n: usize) -> Option<i64> {
        let end = self.i.checked_add(n)?;
        let part = self.b.get(self.i..end)?;
        let mut v = 0i64;
        for &d in part {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(d - b'0');
        }
        self.i = end;
        Some(v)
    }
}

fn unix_day(year: i32, month: u8, day: u8) -> Option<i64> {
    let date = Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()?;
    Some(i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY)
}

fn parse(s: &str) -> Option<Parsed> {
    let mut c = Cur { b: s.as_bytes(), i: 0 };
    let year = i32::try_from(c.digits(4)?).ok()?;
    if year < 1 {
        return None;
    }
    if c.done() {
        let low = unix_day(year, 1, 1)? * MS_PER_DAY;
        let high = (unix_day(year, 12, 31)? + 1) * MS_PER_DAY;
        return Some(Parsed { low, high, full_instant: false });
    }
    if !c.eat(b'-') {
        return None;
    }
    let month = u8::try_from(c.digits(2)?).ok()?;
    if c.done() {
        let m = Month::try_from(month).ok()?;
        let last = time::util::days_in_month(m, year);
        let low = unix_day(year, month, 1)? * MS_PER_DAY;
        let high = (unix_day(year, month, last)? + 1) * MS_PER_DAY;
        return Some(Parsed { low, high, full_instant: false });
    }
    if !c.eat(b'-') {
        return None;
    }
    let day = u8::try_from(c.digits(2)?).ok()?;
    let day_ms = unix_day(year, month, day)? * MS_PER_DAY;
    if c.done() {
        return Some(Parsed { low: day_ms, high: day_ms + MS_PER_DAY, full_instant: false });
    }
    if !c.eat(b'T') {
        return None;
    }
    let hour = c.digits(2)?;
    if !c.eat(b':') {
        return None;
    }
    let minute = c.digits(2)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut width = 60_000;
    let mut second = 0;
    let mut frac_ms = 0;
    let mut has_seconds = false;
    if c.eat(b':') {
        let s = c.digits(2)?;
        if s > 60 {
            return None;
        }
        second = s.min(59);
        has_seconds = true;
        width = 1_000;
        if c.eat(b'.') {
            let start = c.i;
            while c.b.get(c.i).is_some_and(u8::is_ascii_digit) {
                c.i += 1;
            }
            let frac = c.b.get(start..c.i)?;
            if frac.is_empty() {
                return None;
            }
            // Keep millisecond resolution; finer digits still narrow the range to 1 ms.
            for k in 0..3 {
                let d = frac.get(k).map_or(0, |d| i64::from(d - b'0'));
                frac_ms = frac_ms * 10 + d;
            }
            width = match frac.len() {
                1 => 100,
                2 => 10,
                _ => 1,
            };
        }
    }
    let (offset_ms, has_tz) = if c.eat(b'Z') {
        (0, true)
    } else if c.done() {
        (0, false)
    } else {
        let sign = if c.eat(b'+') {
            1
        } else if c.eat(b'-') {
            -1
        } else {
            return None;
        };
        let oh = c.digits(2)?;
        if !c.eat(b':') {
            return None;
        }
        let om = c.digits(2)?;
        if oh > 14 || om > 59 || (oh == 14 && om > 0) {
            return None;
        }
        (sign * (oh * 3_600_000 + om * 60_000), true)
    };
    if !c.done() {
        return None;
    }
    let low = day_ms + hour * 3_600_000 + minute * 60_000 + second * 1_000 + frac_ms - offset_ms;
    Some(Parsed { low, high: low + width, full_instant: has_seconds && has_tz })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(s: &str) -> i64 {
        parse_instant(s).unwrap_or_else(|| panic!("instant {s}"))
    }

    #[test]
    fn partial_dates_cover_their_period() {
        assert_eq!(parse_range("2020"), Some((ms("2020-01-01T00:00:00Z"), ms("2021-01-01T00:00:00Z"))));
        assert_eq!(parse_range("2020-02"), Some((ms("2020-02-01T00:00:00Z"), ms("2020-03-01T00:00:00Z"))));
        assert_eq!(parse_range("2020-12"), Some((ms("2020-12-01T00:00:00Z"), ms("2021-01-01T00:00:00Z"))));
        assert_eq!(parse_range("2020-01-05"), Some((ms("2020-01-05T00:00:00Z"), ms("2020-01-06T00:00:00Z"))));
        assert_eq!(parse_range("2020-02-29").map(|(l, h)| h - l), Some(MS_PER_DAY));
        assert_eq!(parse_range("1970"), Some((0, 365 * MS_PER_DAY)));
        let (_, high) = parse_range("9999").unwrap_or_default();
        assert_eq!(high, MAX_MS + 1);
    }

    #[test]
    fn times_and_offsets() {
        let base = ms("2020-01-05T10:27:35Z");
        assert_eq!(parse_range("2020-01-05T10:27:35Z"), Some((base, base + 1000)));
        assert_eq!(parse_range("2020-01-05T10:27:35"), Some((base, base + 1000)), "no tz = UTC");
        assert_eq!(parse_range("2020-01-05T12:27:35+02:00"), Some((base, base + 1000)));
        assert_eq!(parse_range("2020-01-05T05:27:35-05:00"), Some((base, base + 1000)));
        assert_eq!(parse_range("2020-01-05T10:27:35.793527+00:00"), Some((base + 793, base + 794)));
        assert_eq!(parse_range("2020-01-05T10:27:35.5Z"), Some((base + 500, base + 600)));
        assert_eq!(parse_range("2020-01-05T10:27Z"), Some((base - 35_000, base + 25_000)));
        assert_eq!(parse_instant("2020-01-05T10:27:35.793527+00:00"), Some(base + 793));
        assert_eq!(parse_instant("2020-01-05"), None, "an instant needs a time");
        assert_eq!(parse_instant("2020-01-05T10:27:35"), None, "an instant needs a timezone");
    }

    #[test]
    fn rejects_invalid() {
        for s in [
            "",
            "20",
            "2020-13-01",
            "2019-02-29",
            "2020-00",
            "2020-1-05",
            "0000",
            "2020-01-32",
            "2020-01-05T24:00:00Z",
            "2020-01-05T10:60:00Z",
            "2020-01-05T10:27:35.Z",
            "2020-01-05T10:27:35+15:00",
            "2020-01-05T10:27:35+0100",
            "2020-01-05 10:27:35Z",
            "2020-01-05T10:27:35Zx",
            "２０２０",
            "-2020",
            "+2020-01-01",
        ] {
            assert_eq!(parse_range(s), None, "{s:?}");
        }
    }

    #[test]
    fn formats_utc_millis() {
        assert_eq!(format_instant(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_instant(ms("2026-11-28T13:48:43.123Z")), "2026-11-28T13:48:43.123Z");
        assert_eq!(format_instant(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_instant(i64::MIN), "0001-01-01T00:00:00.000Z");
    }

    proptest! {
        #[test]
        fn parse_range_never_panics(s in "\\PC{0,40}") {
            if let Some((low, high)) = parse_range(&s) {
                prop_assert!(low < high);
            }
        }

        #[test]
        fn parse_range_shaped_inputs(s in "[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?") {
            if let Some((low, high)) = parse_range(&s) {
                prop_assert!(low < high);
            }
        }

        #[test]
        fn format_parse_round_trip(ms in MIN_MS..=MAX_MS) {
            prop_assert_eq!(parse_instant(&format_instant(ms)), Some(ms));
        }
    }
}
