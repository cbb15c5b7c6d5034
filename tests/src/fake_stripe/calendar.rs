//! Calendar months in UTC for billing periods (Howard Hinnant's civil-date algorithms).

/// `ts` plus `months` calendar months (UTC), the day clamped to the target
/// month's length.
pub(super) fn add_months(ts: i64, months: i64) -> i64 {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + i64::from(m) - 1 + months;
    let year = total.div_euclid(12);
    let month = u32::try_from(total.rem_euclid(12)).expect("0..12") + 1;
    let day = d.min(days_in_month(year, month));
    days_from_civil(year, month, day) * 86_400 + secs
}

pub(super) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

// Howard Hinnant's civil-date algorithms.
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).expect("1..=31");
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).expect("1..=12");
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months() {
        // 2026-01-31T12:00:00Z + 1 month = 2026-02-28T12:00:00Z.
        let jan31 = days_from_civil(2026, 1, 31) * 86_400 + 12 * 3600;
        assert_eq!(
            civil_from_days(add_months(jan31, 1).div_euclid(86_400)),
            (2026, 2, 28)
        );
        assert_eq!(
            civil_from_days(add_months(jan31, 12).div_euclid(86_400)),
            (2027, 1, 31)
        );
        assert_eq!(add_months(jan31, 1).rem_euclid(86_400), 12 * 3600);
        let leap = days_from_civil(2028, 2, 29) * 86_400;
        assert_eq!(
            civil_from_days(add_months(leap, 12).div_euclid(86_400)),
            (2029, 2, 28)
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }
}
