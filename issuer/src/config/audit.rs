//! How long the audit log is kept (`AUDIT_RETENTION_DAYS`).

use super::{ConfigError, Env, invalid};

/// `AUDIT_RETENTION_DAYS`' default: a year and a bit, so that last year's
/// events can be compared with this year's.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 400;
/// Longest retention accepted (a hundred years: keep everything).
const MAX_AUDIT_RETENTION_DAYS: u32 = 36_500;
/// Shortest retention production accepts: an audit log that forgets within
/// weeks cannot answer what an incident review asks, so a smaller value is
/// taken for a mistake.
pub const MIN_PRODUCTION_AUDIT_RETENTION_DAYS: u32 = 30;

/// `AUDIT_RETENTION_DAYS`: whole days, 1 to 36,500 (at least 30 in
/// production). 0 is refused: it would empty the audit log.
pub(super) fn audit_retention_days(env: &dyn Env, production: bool) -> Result<u32, ConfigError> {
    let Some(text) = env.get("AUDIT_RETENTION_DAYS") else {
        return Ok(DEFAULT_AUDIT_RETENTION_DAYS);
    };
    let days = text
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|d| (1..=MAX_AUDIT_RETENTION_DAYS).contains(d))
        .ok_or_else(|| {
            invalid(
                "AUDIT_RETENTION_DAYS",
                "must be a whole number of days from 1 to 36500 (default 400)",
            )
        })?;
    if production && days < MIN_PRODUCTION_AUDIT_RETENTION_DAYS {
        return Err(invalid(
            "AUDIT_RETENTION_DAYS",
            "must be at least 30 days in production",
        ));
    }
    Ok(days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn load(env: &dyn Env) -> Result<Config, ConfigError> {
        Config::load(env, &Overrides::default(), &mut Vec::new())
    }

    #[test]
    fn audit_retention_defaults_to_400_days_and_absurd_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(
            load(&[("CODITECT_DATA_DIR", d)])
                .unwrap()
                .audit_retention_days,
            400
        );
        let days = |v: &str| load(&[("CODITECT_DATA_DIR", d), ("AUDIT_RETENTION_DAYS", v)]);
        assert_eq!(days(" 90 ").unwrap().audit_retention_days, 90);
        assert_eq!(days("1").unwrap().audit_retention_days, 1);
        assert_eq!(days("36500").unwrap().audit_retention_days, 36_500);
        for bad in ["0", "-5", "36501", "1.5", "forever"] {
            let err = days(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        var: "AUDIT_RETENTION_DAYS",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
        // Production takes less than 30 days for a mistake.
        assert!(matches!(
            audit_retention_days(&[("AUDIT_RETENTION_DAYS", "29")], true).unwrap_err(),
            ConfigError::Invalid {
                var: "AUDIT_RETENTION_DAYS",
                ..
            }
        ));
        assert_eq!(
            audit_retention_days(&[("AUDIT_RETENTION_DAYS", "30")], true).unwrap(),
            30
        );
        assert_eq!(
            audit_retention_days(&[("UNRELATED", "x")], true).unwrap(),
            400
        );
    }
}
