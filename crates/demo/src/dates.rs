//! Civil-calendar arithmetic on plain day numbers (days since 1970-01-01, proleptic
//! Gregorian), and FHIR `date` / `dateTime` / `instant` formatting.
//!
//! Self-contained (Howard Hinnant's `days_from_civil` / `civil_from_days`) so the generator
//! needs no date crate and cannot fail on any input.

/// The reference date used when [`crate::DemoConfig::today`] does not parse.
pub(crate) const FALLBACK_TODAY: &str = "2026-11-01";

/// Days since 1970-01-01 for a civil date. Out-of-range days roll over (Feb 30 → Mar 2).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day number.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Parses `YYYY-MM-DD` strictly; `None` for anything else.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let y: i64 = s.get(0..4)?.parse().ok()?;
    let m: u32 = s.get(5..7)?.parse().ok()?;
    let d: u32 = s.get(8..10)?.parse().ok()?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The reference date of a configuration as a day number.
pub(crate) fn today(cfg_today: &str) -> i64 {
    parse_date(cfg_today).or_else(|| parse_date(FALLBACK_TODAY)).unwrap_or(20_758)
}

/// Day of week, `0` = Monday … `6` = Sunday.
pub(crate) fn weekday(days: i64) -> i64 {
    // 1970-01-01 was a Thursday (3).
    (days + 3).rem_euclid(7)
}

/// Moves a weekend day to the nearest weekday (Saturday → Friday, Sunday → Monday).
pub(crate) fn to_weekday(days: i64) -> i64 {
    match weekday(days) {
        5 => days - 1,
        6 => days + 1,
        _ => days,
    }
}

/// FHIR `date`: `2025-03-04`.
pub(crate) fn date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// FHIR `dateTime` / `instant` in UTC: `2025-03-04T09:30:00Z`.
pub(crate) fn date_time(days: i64, minute_of_day: i64) -> String {
    let days = days + minute_of_day.div_euclid(1440);
    let minute = minute_of_day.rem_euclid(1440);
    format!("{}T{:02}:{:02}:00Z", date(days), minute / 60, minute % 60)
}

/// Whole years from `birth` to `on` (both day numbers).
pub(crate) fn age_on(birth: i64, on: i64) -> i64 {
    let (by, bm, bd) = civil_from_days(birth);
    let (y, m, d) = civil_from_days(on);
    let years = y - by;
    if (m, d) < (bm, bd) { years - 1 } else { years }
}

/// The same calendar day `years` earlier (Feb 29 rolls to Mar 1 in common years).
pub(crate) fn years_before(days: i64, years: i64) -> i64 {
    let (y, m, d) = civil_from_days(days);
    days_from_civil(y - years, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for z in [-800_000, -1, 0, 1, 19_000, 20_758, 60_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(parse_date("2026-11-01").map(date).as_deref(), Some("2026-11-01"));
        assert_eq!(today("2026-11-01"), 20_758);
        assert_eq!(today("garbage"), 20_758);
    }

    #[test]
    fn rejects_bad_dates() {
        for s in ["2026-02-30", "2026-13-01", "2026-1-01", "20261101", "", "2026-11-0x"] {
            assert!(parse_date(s).is_none(), "{s}");
        }
        assert!(parse_date("2024-02-29").is_some());
    }

    #[test]
    fn weekdays_and_ages() {
        assert_eq!(weekday(today("2026-11-01")), 6); // a Sunday
        assert_eq!(date(to_weekday(today("2026-11-01"))), "2026-11-02");
        let birth = parse_date("2010-11-02").unwrap_or_default();
        assert_eq!(age_on(birth, today("2026-11-01")), 15);
        assert_eq!(age_on(birth, today("2026-11-02")), 16);
        assert_eq!(date_time(0, 9 * 60 + 30), "1970-01-01T09:30:00Z");
    }
}
