//! Request rate limits (`RATE_LIMIT_*`) and the number of trusted proxies
//! (`TRUST_PROXY`): their types, parsing and loading.

use std::num::NonZeroU32;
use std::time::Duration;

use super::{ConfigError, Env, invalid};

/// A number of requests per period: `5/min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed in one period (also the largest burst).
    pub count: NonZeroU32,
    /// The period.
    pub per: Per,
}

/// The period of a [`Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        })
    }

    fn unit(self) -> &'static str {
        match self {
            Per::Second => "sec",
            Per::Minute => "min",
            Per::Hour => "hour",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Per::Second => "second",
            Per::Minute => "minute",
            Per::Hour => "hour",
        }
    }
}

/// Largest count a rate may have.
const MAX_RATE_COUNT: u32 = 1_000_000;

impl Rate {
    /// Parses `N/sec`, `N/min` or `N/hour` (also `s`, `second`, `m`,
    /// `minute`, `h`; any case, spaces allowed), N from 1 to 1,000,000.
    pub fn parse(text: &str) -> Option<Self> {
        let (count, unit) = text.split_once('/')?;
        let count: u32 = count.trim().parse().ok()?;
        if count > MAX_RATE_COUNT {
            return None;
        }
        let per = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => Per::Second,
            "m" | "min" | "minute" => Per::Minute,
            "h" | "hour" => Per::Hour,
            _ => return None,
        };
        Some(Rate {
            count: NonZeroU32::new(count)?,
            per,
        })
    }

    /// In words, for messages: `5 per minute`.
    pub fn describe(&self) -> String {
        format!("{} per {}", self.count, self.per.word())
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.count, self.per.unit())
    }
}

/// The request rate limits (see `api::rate_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `POST /api/v1/auth/login`, per client IP (`RATE_LIMIT_LOGIN`, 5/min).
    pub login: Rate,
    /// `POST /api/v1/auth/signup`, per client IP (`RATE_LIMIT_SIGNUP`, 3/min).
    pub signup: Rate,
    /// `POST /api/v1/licenses/validate`, per license key
    /// (`RATE_LIMIT_VALIDATE`, 60/min).
    pub validate: Rate,
    /// `POST /api/v1/licenses/activate`, per license key
    /// (`RATE_LIMIT_ACTIVATE`, 10/hour).
    pub activate: Rate,
    /// Every request that carries a license key (validate, activate,
    /// deactivate, features), together, per client IP, so that nobody can
    /// try many keys (`RATE_LIMIT_LICENSE_IP`, 120/min).
    pub license_ip: Rate,
    /// `POST /api/v1/billing/checkout` and `/portal` together (each calls
    /// Stripe), per signed-in user (`RATE_LIMIT_BILLING_USER`, 10/min).
    pub billing_user: Rate,
    /// The same, per organization, over all its users
    /// (`RATE_LIMIT_BILLING_ORG`, 30/min).
    pub billing_org: Rate,
    /// Refused deliveries to `/webhooks/stripe` (no, a wrong or a stale
    /// signature), per client IP; deliveries whose signature checks out are
    /// never counted (`RATE_LIMIT_WEBHOOK_REFUSALS`, 10/min).
    pub webhook_refusal: Rate,
}

const fn rate(count: u32, per: Per) -> Rate {
    match NonZeroU32::new(count) {
        Some(count) => Rate { count, per },
        None => panic!("a rate limit is at least 1"),
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            login: rate(5, Per::Minute),
            signup: rate(3, Per::Minute),
            validate: rate(60, Per::Minute),
            activate: rate(10, Per::Hour),
            license_ip: rate(120, Per::Minute),
            billing_user: rate(10, Per::Minute),
            billing_org: rate(30, Per::Minute),
            webhook_refusal: rate(10, Per::Minute),
        }
    }
}

impl RateLimits {
    pub(super) fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        let defaults = RateLimits::default();
        Ok(RateLimits {
            login: rate_var(env, "RATE_LIMIT_LOGIN", defaults.login)?,
            signup: rate_var(env, "RATE_LIMIT_SIGNUP", defaults.signup)?,
            validate: rate_var(env, "RATE_LIMIT_VALIDATE", defaults.validate)?,
            activate: rate_var(env, "RATE_LIMIT_ACTIVATE", defaults.activate)?,
            license_ip: rate_var(env, "RATE_LIMIT_LICENSE_IP", defaults.license_ip)?,
            billing_user: rate_var(env, "RATE_LIMIT_BILLING_USER", defaults.billing_user)?,
            billing_org: rate_var(env, "RATE_LIMIT_BILLING_ORG", defaults.billing_org)?,
            webhook_refusal: rate_var(
                env,
                "RATE_LIMIT_WEBHOOK_REFUSALS",
                defaults.webhook_refusal,
            )?,
        })
    }
}

/// In production no limit may exceed this many times its default: a limit
/// that high (such as the tests' `1000000/sec`) no longer protects anything.
/// Load tests run in development, where there is no ceiling.
pub const PRODUCTION_CEILING_FACTOR: u64 = 10;

impl RateLimits {
    /// Refuses, naming the variable, a limit above
    /// [`PRODUCTION_CEILING_FACTOR`] times its default.
    pub(super) fn check_production_ceiling(&self) -> Result<(), ConfigError> {
        let d = RateLimits::default();
        let pairs = [
            ("RATE_LIMIT_LOGIN", self.login, d.login),
            ("RATE_LIMIT_SIGNUP", self.signup, d.signup),
            ("RATE_LIMIT_VALIDATE", self.validate, d.validate),
            ("RATE_LIMIT_ACTIVATE", self.activate, d.activate),
            ("RATE_LIMIT_LICENSE_IP", self.license_ip, d.license_ip),
            ("RATE_LIMIT_BILLING_USER", self.billing_user, d.billing_user),
            ("RATE_LIMIT_BILLING_ORG", self.billing_org, d.billing_org),
            (
                "RATE_LIMIT_WEBHOOK_REFUSALS",
                self.webhook_refusal,
                d.webhook_refusal,
            ),
        ];
        for (name, rate, default) in pairs {
            if rate.per_hour() > default.per_hour() * PRODUCTION_CEILING_FACTOR {
                return Err(invalid(
                    name,
                    &format!(
                        "production refuses more than {PRODUCTION_CEILING_FACTOR} times the default ({}): so high a limit disables the protection",
                        default.describe()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Rate {
    /// Requests per hour, to compare rates of different periods.
    fn per_hour(self) -> u64 {
        u64::from(self.count.get()) * 3600 / self.per.duration().as_secs()
    }
}

fn rate_var(env: &dyn Env, name: &'static str, default: Rate) -> Result<Rate, ConfigError> {
    match env.get(name) {
        None => Ok(default),
        Some(text) => Rate::parse(&text).ok_or_else(|| {
            invalid(
                name,
                "must be a number of requests (1 to 1000000) per sec, min or hour, such as 5/min",
            )
        }),
    }
}

/// Largest `TRUST_PROXY`.
const MAX_TRUSTED_PROXIES: usize = 10;

pub(super) fn trust_proxy(env: &dyn Env) -> Result<usize, ConfigError> {
    match env.get("TRUST_PROXY") {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_TRUSTED_PROXIES)
            .ok_or_else(|| {
                invalid(
                    "TRUST_PROXY",
                    "must be the number of proxies in front of the issuer, at most ten (Cloud Run: one)",
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn load(env: &dyn Env) -> Result<Config, ConfigError> {
        Config::load(env, &Overrides::default(), &mut Vec::new())
    }

    #[test]
    fn rates_parse_and_bad_ones_are_refused() {
        let r = |text: &str| Rate::parse(text).map(|r| r.to_string());
        assert_eq!(r("5/min").as_deref(), Some("5/min"));
        assert_eq!(r(" 10 / HOUR ").as_deref(), Some("10/hour"));
        assert_eq!(r("3/s").as_deref(), Some("3/sec"));
        assert_eq!(r("7/second").as_deref(), Some("7/sec"));
        assert_eq!(r("60/m").as_deref(), Some("60/min"));
        assert_eq!(r("2/h").as_deref(), Some("2/hour"));
        assert_eq!(r("1000000/sec").as_deref(), Some("1000000/sec"));
        for bad in [
            "",
            "5",
            "0/min",
            "-1/min",
            "5/day",
            "5/",
            "/min",
            "five/min",
            "5/min/x",
            "1000001/sec",
            "4294967296/min",
        ] {
            assert_eq!(Rate::parse(bad), None, "{bad:?}");
        }
        let rate = Rate::parse("10/hour").unwrap();
        assert_eq!(rate.count.get(), 10);
        assert_eq!(rate.per.duration(), Duration::from_secs(3600));
        assert_eq!(rate.describe(), "10 per hour");
    }

    #[test]
    fn rate_limits_and_trusted_proxies_default_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let cfg = load(&[("CODITECT_DATA_DIR", d)]).unwrap();
        let limits = cfg.rate_limits;
        assert_eq!(limits.login.to_string(), "5/min");
        assert_eq!(limits.signup.to_string(), "3/min");
        assert_eq!(limits.validate.to_string(), "60/min");
        assert_eq!(limits.activate.to_string(), "10/hour");
        assert_eq!(limits.license_ip.to_string(), "120/min");
        assert_eq!(limits.billing_user.to_string(), "10/min");
        assert_eq!(limits.billing_org.to_string(), "30/min");
        assert_eq!(limits.webhook_refusal.to_string(), "10/min");
        assert_eq!(cfg.trust_proxy, 0);
        let cfg = load(&[
            ("CODITECT_DATA_DIR", d),
            ("RATE_LIMIT_LOGIN", "7/sec"),
            ("RATE_LIMIT_SIGNUP", "1/hour"),
            ("RATE_LIMIT_VALIDATE", "100/min"),
            ("RATE_LIMIT_ACTIVATE", "20/min"),
            ("RATE_LIMIT_LICENSE_IP", "300/min"),
            ("RATE_LIMIT_BILLING_USER", "2/hour"),
            ("RATE_LIMIT_BILLING_ORG", "4/hour"),
            ("RATE_LIMIT_WEBHOOK_REFUSALS", "5/sec"),
            ("TRUST_PROXY", "1"),
        ])
        .unwrap();
        let limits = cfg.rate_limits;
        assert_eq!(limits.login.to_string(), "7/sec");
        assert_eq!(limits.signup.to_string(), "1/hour");
        assert_eq!(limits.validate.to_string(), "100/min");
        assert_eq!(limits.activate.to_string(), "20/min");
        assert_eq!(limits.license_ip.to_string(), "300/min");
        assert_eq!(limits.billing_user.to_string(), "2/hour");
        assert_eq!(limits.billing_org.to_string(), "4/hour");
        assert_eq!(limits.webhook_refusal.to_string(), "5/sec");
        assert_eq!(cfg.trust_proxy, 1);
    }

    #[test]
    fn bad_rate_limits_and_trusted_proxies_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        for (var, value) in [
            ("RATE_LIMIT_LOGIN", "lots"),
            ("RATE_LIMIT_SIGNUP", "0/min"),
            ("RATE_LIMIT_VALIDATE", "60/fortnight"),
            ("RATE_LIMIT_ACTIVATE", "10 per hour"),
            ("RATE_LIMIT_LICENSE_IP", "-120/min"),
            ("RATE_LIMIT_BILLING_USER", "0/min"),
            ("RATE_LIMIT_BILLING_ORG", "many"),
            ("RATE_LIMIT_WEBHOOK_REFUSALS", "10/day"),
            ("TRUST_PROXY", "yes"),
            ("TRUST_PROXY", "-1"),
            ("TRUST_PROXY", "99"),
        ] {
            let err = load(&[("CODITECT_DATA_DIR", d), (var, value)]).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { var: v, .. } if v == var),
                "{var}: {err}"
            );
            assert!(err.to_string().starts_with(var), "{var}: {err}");
            assert!(!err.to_string().contains(value), "{err}");
        }
    }

    #[test]
    fn production_refuses_limits_that_disable_the_protection() {
        let mut limits = RateLimits::default();
        limits.check_production_ceiling().unwrap();
        limits.login = Rate::parse("50/min").unwrap();
        limits.license_ip = Rate::parse("20/sec").unwrap();
        limits.check_production_ceiling().unwrap();
        limits.login = Rate::parse("51/min").unwrap();
        let err = limits.check_production_ceiling().unwrap_err();
        assert!(err.to_string().contains("RATE_LIMIT_LOGIN"), "{err}");
        limits = RateLimits::default();
        limits.validate = Rate::parse("1000000/sec").unwrap();
        let err = limits.check_production_ceiling().unwrap_err();
        assert!(err.to_string().contains("RATE_LIMIT_VALIDATE"), "{err}");
    }
}
