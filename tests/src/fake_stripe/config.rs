//! How a fake is set up: the prices it knows and where its events go.

use std::collections::BTreeMap;

use super::calendar::add_months;
use super::{
    API_VERSION, DEFAULT_API_KEY, DEFAULT_WEBHOOK_SECRET, PRICE_PROFESSIONAL_ANNUAL,
    PRICE_PROFESSIONAL_MONTHLY, PRICE_STARTER_ANNUAL, PRICE_STARTER_MONTHLY,
};

/// A recurring price's billing interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// `day`
    Day,
    /// `week`
    Week,
    /// `month` (calendar months, the day clamped to the month's length)
    Month,
    /// `year`
    Year,
}

impl Interval {
    /// Stripe's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    /// `from` plus `count` intervals.
    pub fn add_to(self, from: i64, count: u32) -> i64 {
        let count = i64::from(count);
        match self {
            Interval::Day => from + count * 86_400,
            Interval::Week => from + count * 7 * 86_400,
            Interval::Month => add_months(from, count),
            Interval::Year => add_months(from, 12 * count),
        }
    }
}

/// A recurring price the fake knows (Stripe prices are made in the
/// dashboard; the issuer only names them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// `price_…`
    pub id: String,
    /// `prod_…`
    pub product: String,
    /// The product's name, shown on the checkout page and in line items.
    pub product_name: String,
    /// `nickname`
    pub nickname: Option<String>,
    /// `lookup_key`
    pub lookup_key: Option<String>,
    /// In the smallest currency unit (cents).
    pub unit_amount: i64,
    /// Three-letter ISO code, lower case.
    pub currency: String,
    /// `recurring.interval`
    pub interval: Interval,
    /// `recurring.interval_count`
    pub interval_count: u32,
    /// `metadata`
    pub metadata: BTreeMap<String, String>,
}

impl Price {
    /// A licensed, per-unit USD price billed every `interval`.
    pub fn recurring(
        id: &str,
        product: &str,
        product_name: &str,
        unit_amount: i64,
        interval: Interval,
    ) -> Price {
        Price {
            id: id.to_owned(),
            product: product.to_owned(),
            product_name: product_name.to_owned(),
            nickname: None,
            lookup_key: None,
            unit_amount,
            currency: "usd".to_owned(),
            interval,
            interval_count: 1,
            metadata: BTreeMap::new(),
        }
    }
}

/// The four pilot prices: Starter $19/month and $190/year, Professional
/// $49/month and $490/year, with `metadata.plan` naming the issuer's plan.
pub fn pilot_prices() -> Vec<Price> {
    let price = |id: &str, plan: &str, name: &str, amount: i64, interval: Interval| {
        let mut p = Price::recurring(
            id,
            &format!("prod_{}", plan.replace('-', "_")),
            name,
            amount,
            interval,
        );
        let period = if interval == Interval::Year {
            "annual"
        } else {
            "monthly"
        };
        p.nickname = Some(format!("{name} ({period})"));
        p.lookup_key = Some(format!("{plan}-{}", interval.as_str()));
        p.metadata.insert("plan".to_owned(), plan.to_owned());
        p
    };
    vec![
        price(
            PRICE_STARTER_MONTHLY,
            "pilot-starter",
            "Pilot Starter",
            1_900,
            Interval::Month,
        ),
        price(
            PRICE_STARTER_ANNUAL,
            "pilot-starter",
            "Pilot Starter",
            19_000,
            Interval::Year,
        ),
        price(
            PRICE_PROFESSIONAL_MONTHLY,
            "pilot-professional",
            "Pilot Professional",
            4_900,
            Interval::Month,
        ),
        price(
            PRICE_PROFESSIONAL_ANNUAL,
            "pilot-professional",
            "Pilot Professional",
            49_000,
            Interval::Year,
        ),
    ]
}

/// How a [`FakeStripe`](super::FakeStripe) is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The secret key requests must carry (`Authorization: Bearer …`).
    pub api_key: String,
    /// Where events are POSTed; `None` stores events without sending them.
    pub webhook_url: Option<String>,
    /// The endpoint's signing secret (`whsec_…`).
    pub webhook_secret: String,
    /// Further secrets that also sign every delivery (one more `v1=` each),
    /// as Stripe does while a rolled secret is still valid.
    pub extra_webhook_secrets: Vec<String>,
    /// Whether the current secret's `v1=` comes first (before the extra
    /// secrets' ones) or last (the default). Stripe promises no order.
    pub current_signature_first: bool,
    /// Whether deliveries also carry a `v0=` signature, as Stripe's
    /// test-mode events do (on by default).
    pub test_mode_v0: bool,
    /// The prices Checkout and subscription updates may name.
    pub prices: Vec<Price>,
    /// `api_version` of events, and `Stripe-Version` of answers to requests
    /// that send none.
    pub api_version: String,
    /// The merchant name on the hosted pages and invoices.
    pub account_name: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_key: DEFAULT_API_KEY.to_owned(),
            webhook_url: None,
            webhook_secret: DEFAULT_WEBHOOK_SECRET.to_owned(),
            extra_webhook_secrets: Vec::new(),
            current_signature_first: false,
            test_mode_v0: true,
            prices: pilot_prices(),
            api_version: API_VERSION.to_owned(),
            account_name: "CODITECT".to_owned(),
        }
    }
}

impl Config {
    /// The default configuration, delivering events to `url`.
    pub fn with_webhook(url: &str) -> Config {
        Config {
            webhook_url: Some(url.to_owned()),
            ..Config::default()
        }
    }
}
