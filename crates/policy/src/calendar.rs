//! Civil-calendar arithmetic (proleptic Gregorian, UTC) for ages and plain-language dates.
//! Plain integer maths, no time zone database: the engine stays a pure function.

pub(crate) const MS_PER_DAY: i64 = 86_400_000;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

pub(crate) fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub(crate) fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a Unix-ms instant, UTC.
pub(crate) fn civil_from_ms(ms: i64) -> (i32, u8, u8) {
    let z = ms.div_euclid(MS_PER_DAY) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// Whole years from a birth date to `now` (both civil dates).
pub(crate) fn age(birth: (i32, u8, u8), now: (i32, u8, u8)) -> i32 {
    let (by, bm, bd) = birth;
    let (ny, nm, nd) = now;
    ny - by - i32::from((nm, nd) < (bm, bd))
}

/// Midnight UTC of the anniversary of (month, day) in year `y`; 29 February falls on
/// 1 March in a common year.
pub(crate) fn birthday_ms(y: i32, m: u8, d: u8) -> i64 {
    let days = if m == 2 && d == 29 && !is_leap(y) { days_from_civil(y, 3, 1) } else { days_from_civil(y, m, d) };
    days * MS_PER_DAY
}

/// "31 December 2026" from a FHIR date/dateTime text (`2026-12-31`, `2026-12-31T10:00:00Z`);
/// "December 2026" and "2026" for partial dates. Anything else is returned as given.
pub(crate) fn plain_date(text: &str) -> String {
    let date = text.split('T').next().unwrap_or(text);
    let parts: Vec<&str> = date.split('-').collect();
    let month = |m: &str| m.parse::<usize>().ok().filter(|m| (1..=12).contains(m)).map(|m| MONTHS[m - 1]);
    match parts.as_slice() {
        [y] => y.to_string(),
        [y, m] => match month(m) {
            Some(name) => format!("{name} {y}"),
            None => text.to_string(),
        },
        [y, m, d] => match (month(m), d.parse::<u8>()) {
            (Some(name), Ok(day)) => format!("{day} {name} {y}"),
            _ => text.to_string(),
        },
        _ => text.to_string(),
    }
}

/// "31 December 2026" for a Unix-ms instant (UTC).
pub(crate) fn plain_date_ms(ms: i64) -> String {
    let (y, m, d) = civil_from_ms(ms);
    format!("{d} {} {y}", MONTHS[usize::from(m) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-800_000i64, -1, 0, 1, 59, 60, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_ms(days * MS_PER_DAY + 5);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_ms(-1), (1969, 12, 31));
    }

    #[test]
    fn ages() {
        assert_eq!(age((2010, 4, 2), (2026, 4, 1)), 15);
        assert_eq!(age((2010, 4, 2), (2026, 4, 2)), 16);
        assert_eq!(birthday_ms(2027, 2, 29), days_from_civil(2027, 3, 1) * MS_PER_DAY);
        assert_eq!(birthday_ms(2028, 2, 29), days_from_civil(2028, 2, 29) * MS_PER_DAY);
    }

    #[test]
    fn plain_dates() {
        assert_eq!(plain_date("2026-12-31"), "31 December 2026");
        assert_eq!(plain_date("2026-01-05T10:00:00Z"), "5 January 2026");
        assert_eq!(plain_date("2026-02"), "February 2026");
        assert_eq!(plain_date("2026"), "2026");
        assert_eq!(plain_date_ms(days_from_civil(2026, 12, 31) * MS_PER_DAY), "31 December 2026");
    }
}
