//! Stripe settings (`STRIPE_*`): the keys, the price ids of the plans,
//! the trial, and their loading.

use zeroize::Zeroizing;

use super::{ConfigError, Env, invalid, secret};

/// Stripe settings (`STRIPE_*`).
pub struct StripeConfig {
    /// `STRIPE_SECRET_KEY` (`sk_…` or a restricted `rk_…`).
    pub secret_key: Zeroizing<String>,
    /// `STRIPE_WEBHOOK_SECRET` (`whsec_…`): checks `Stripe-Signature`.
    pub webhook_secret: Option<Zeroizing<String>>,
    /// `STRIPE_API_BASE`: where Stripe's API is (development only; tests
    /// point it at a local fake). `None`: api.stripe.com.
    pub api_base: Option<String>,
    /// Price ids of the two tiers, monthly and annual.
    pub prices: Prices,
    /// `STRIPE_TRIAL_DAYS`: free days before the first charge (none by default).
    pub trial_days: Option<u32>,
}

/// The Stripe price ids of the pilot plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    pub starter_monthly: String,
    pub starter_annual: String,
    pub pro_monthly: String,
    pub pro_annual: String,
}

impl Prices {
    /// The price of a plan billed every `interval` (`month` or `year`).
    pub fn price_for(&self, plan: &str, interval: &str) -> Option<&str> {
        Some(match (plan, interval) {
            ("pilot-starter", "month") => &self.starter_monthly,
            ("pilot-starter", "year") => &self.starter_annual,
            ("pilot-professional", "month") => &self.pro_monthly,
            ("pilot-professional", "year") => &self.pro_annual,
            _ => return None,
        })
    }

    /// The plan id and interval of a price.
    pub fn plan_of(&self, price: &str) -> Option<(&'static str, &'static str)> {
        [
            ("pilot-starter", "month"),
            ("pilot-starter", "year"),
            ("pilot-professional", "month"),
            ("pilot-professional", "year"),
        ]
        .into_iter()
        .find(|(plan, interval)| self.price_for(plan, interval) == Some(price))
    }
}

pub(super) fn stripe(env: &dyn Env, production: bool) -> Result<Option<StripeConfig>, ConfigError> {
    let Some(secret_key) = secret(env, "STRIPE_SECRET_KEY")? else {
        if production {
            return Err(ConfigError::MissingStripe);
        }
        return Ok(None);
    };
    if !(secret_key.starts_with("sk_") || secret_key.starts_with("rk_")) {
        return Err(invalid(
            "STRIPE_SECRET_KEY",
            "must be a Stripe secret key (sk_…) or restricted key (rk_…)",
        ));
    }
    let webhook_secret = secret(env, "STRIPE_WEBHOOK_SECRET")?;
    if production && webhook_secret.is_none() {
        return Err(ConfigError::MissingStripe);
    }
    let api_base = env
        .get("STRIPE_API_BASE")
        .map(|b| b.trim_end_matches('/').to_owned());
    if let Some(base) = &api_base {
        if production {
            return Err(invalid(
                "STRIPE_API_BASE",
                "is for development and tests only; production talks to api.stripe.com",
            ));
        }
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(invalid(
                "STRIPE_API_BASE",
                "must start with http:// or https://",
            ));
        }
    }
    let price = |name: &'static str| {
        env.get(name).ok_or_else(|| {
            invalid(
                name,
                "must be set to a Stripe price id (price_…) when STRIPE_SECRET_KEY is set",
            )
        })
    };
    let prices = Prices {
        starter_monthly: price("STRIPE_PRICE_STARTER_MONTHLY")?,
        starter_annual: price("STRIPE_PRICE_STARTER_ANNUAL")?,
        pro_monthly: price("STRIPE_PRICE_PRO_MONTHLY")?,
        pro_annual: price("STRIPE_PRICE_PRO_ANNUAL")?,
    };
    let trial_days = match env.get("STRIPE_TRIAL_DAYS") {
        None => None,
        Some(v) => match v.trim().parse::<u32>() {
            Ok(0) => None,
            Ok(n) if n <= 730 => Some(n),
            _ => {
                return Err(invalid(
                    "STRIPE_TRIAL_DAYS",
                    "must be a number of days from 0 to 730",
                ));
            }
        },
    };
    Ok(Some(StripeConfig {
        secret_key,
        webhook_secret,
        api_base,
        prices,
        trial_days,
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Config, Overrides};

    fn load(env: &dyn Env) -> Result<Config, ConfigError> {
        Config::load(env, &Overrides::default(), &mut Vec::new())
    }

    #[test]
    fn stripe_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let cfg = load(&[("CODITECT_DATA_DIR", d)]).unwrap();
        assert!(cfg.stripe.is_none(), "no Stripe without a key");
        assert_eq!(cfg.billing_grace, Duration::from_secs(2 * 86400));
        assert_eq!(cfg.past_due_grace, Duration::from_secs(7 * 86400));
        match load(&[("CODITECT_DATA_DIR", d), ("STRIPE_SECRET_KEY", "pk_test_x")]) {
            Err(ConfigError::Invalid { var, .. }) => assert_eq!(var, "STRIPE_SECRET_KEY"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        match load(&[("CODITECT_DATA_DIR", d), ("STRIPE_SECRET_KEY", "sk_test_x")]) {
            Err(ConfigError::Invalid { var, .. }) => {
                assert_eq!(var, "STRIPE_PRICE_STARTER_MONTHLY")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        let env = [
            ("CODITECT_DATA_DIR", d),
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("STRIPE_PRICE_STARTER_MONTHLY", "a"),
            ("STRIPE_PRICE_STARTER_ANNUAL", "b"),
            ("STRIPE_PRICE_PRO_MONTHLY", "c"),
            ("STRIPE_PRICE_PRO_ANNUAL", "d"),
            ("STRIPE_TRIAL_DAYS", "7"),
            ("STRIPE_API_BASE", "http://127.0.0.1:12111/"),
        ];
        let cfg = load(&env).unwrap();
        let stripe = cfg.stripe.unwrap();
        assert_eq!(stripe.trial_days, Some(7));
        assert_eq!(stripe.api_base.as_deref(), Some("http://127.0.0.1:12111"));
        assert!(stripe.webhook_secret.is_none());
        let mut bad = env;
        bad[6] = ("STRIPE_TRIAL_DAYS", "many");
        assert!(load(&bad).is_err());
    }
}
