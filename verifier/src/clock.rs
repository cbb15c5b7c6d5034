//! The clock guard: a clock set back behind what this machine has already
//! seen is refused, so that an expired token cannot be revived by turning the
//! clock back.

use crate::error::VerifyError;

/// How far, in seconds, `now` may be behind the high-water mark before it is
/// called a rollback (small corrections by NTP are normal).
pub const DEFAULT_CLOCK_TOLERANCE: u64 = 300;

/// Refuses `now` if it is more than `tolerance` seconds behind `high_water`
/// (the latest of: last run, newest `iat` seen, server time at renewal), and
/// says by how much.
pub fn check_clock(now: u64, high_water: u64, tolerance: u64) -> Result<(), VerifyError> {
    let behind_by = high_water.saturating_sub(now);
    if behind_by > tolerance {
        return Err(VerifyError::ClockRolledBack { behind_by });
    }
    Ok(())
}

/// The high-water mark to store after a run at `now` that saw a token issued
/// at `issued_at`: it never moves backwards.
pub fn next_high_water(high_water: u64, now: u64, issued_at: Option<u64>) -> u64 {
    high_water.max(now).max(issued_at.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_tolerance_is_accepted() {
        assert_eq!(check_clock(1000, 1000, 300), Ok(()));
        assert_eq!(check_clock(700, 1000, 300), Ok(()));
        assert_eq!(check_clock(5000, 1000, 300), Ok(()));
    }

    #[test]
    fn rollback_reports_how_far() {
        assert_eq!(
            check_clock(699, 1000, 300),
            Err(VerifyError::ClockRolledBack { behind_by: 301 })
        );
        assert_eq!(
            check_clock(0, 86_400, DEFAULT_CLOCK_TOLERANCE),
            Err(VerifyError::ClockRolledBack { behind_by: 86_400 })
        );
    }

    #[test]
    fn high_water_never_moves_back() {
        assert_eq!(next_high_water(1000, 900, None), 1000);
        assert_eq!(next_high_water(1000, 1100, Some(1050)), 1100);
        assert_eq!(next_high_water(1000, 1100, Some(1200)), 1200);
    }
}
