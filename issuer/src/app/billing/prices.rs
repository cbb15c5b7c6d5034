//! What the plans cost, as Stripe charges it: the amounts of the configured
//! price objects, read from Stripe when the server starts (again every six
//! hours, and until the first read succeeds, every minute), so that the
//! pages show what checkout will charge. Until then, and when a price
//! cannot be read, the pages show no amount rather than a guessed one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::stripe_api::StripeApi;
use crate::config::Prices;

/// An amount in the currency's smallest unit (cents), and the currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    pub minor: i64,
    pub currency: String,
}

impl Amount {
    /// `$19`, `$19.50`; other currencies as `19.50 EUR`.
    pub fn show(&self) -> String {
        let whole = self.minor / 100;
        let cents = self.minor % 100;
        let number = if cents == 0 {
            whole.to_string()
        } else {
            format!("{whole}.{cents:02}")
        };
        if self.currency.eq_ignore_ascii_case("usd") {
            format!("${number}")
        } else {
            format!("{number} {}", self.currency.to_ascii_uppercase())
        }
    }
}

/// The amounts of the plans' prices by (plan, interval), as last read.
#[derive(Debug, Default)]
pub struct PriceBook {
    amounts: RwLock<HashMap<(String, String), Amount>>,
}

impl PriceBook {
    /// The amount of `plan` billed every `interval`, once read from Stripe.
    pub fn amount(&self, plan: &str, interval: &str) -> Option<Amount> {
        self.amounts
            .read()
            .ok()?
            .get(&(plan.to_owned(), interval.to_owned()))
            .cloned()
    }

    fn set(&self, plan: &str, interval: &str, amount: Amount) {
        if let Ok(mut amounts) = self.amounts.write() {
            amounts.insert((plan.to_owned(), interval.to_owned()), amount);
        }
    }

    /// Reads every configured price; returns whether all were read.
    pub async fn load(&self, api: &StripeApi, prices: &Prices) -> bool {
        let mut all = true;
        for (plan, interval) in PLAN_INTERVALS {
            let Some(price_id) = prices.price_for(plan, interval) else {
                continue;
            };
            match api.price_amount(price_id).await {
                Ok((minor, currency)) => self.set(plan, interval, Amount { minor, currency }),
                Err(e) => {
                    all = false;
                    tracing::warn!(price = price_id, error = %e, "cannot read a plan's price from Stripe");
                }
            }
        }
        all
    }

    /// Reads the prices now and keeps them current in the background.
    pub fn start(api: Arc<StripeApi>, prices: Prices) -> Arc<PriceBook> {
        let book = Arc::new(PriceBook::default());
        let keep = Arc::clone(&book);
        tokio::spawn(async move {
            loop {
                let complete = keep.load(&api, &prices).await;
                let wait = if complete { 6 * 3600 } else { 60 };
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
        });
        book
    }
}

/// The plans on sale and their billing intervals.
pub const PLAN_INTERVALS: [(&str, &str); 4] = [
    ("pilot-starter", "month"),
    ("pilot-starter", "year"),
    ("pilot-professional", "month"),
    ("pilot-professional", "year"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_people_write_them() {
        let usd = |minor| Amount {
            minor,
            currency: "usd".into(),
        };
        assert_eq!(usd(1900).show(), "$19");
        assert_eq!(usd(1950).show(), "$19.50");
        assert_eq!(usd(5).show(), "$0.05");
        let eur = Amount {
            minor: 4900,
            currency: "eur".into(),
        };
        assert_eq!(eur.show(), "49 EUR");
    }
}
