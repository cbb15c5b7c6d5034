//! The pilot's figures: how many organizations paid, how many of their
//! licenses were put to use, how many payments went through, the monthly
//! recurring revenue and its change, churn and the machines in use, each
//! measured against the pilot's targets. The store counts ([`PilotFacts`]);
//! the rules here turn the counts into figures ([`pilot_stats`]), with the
//! time and the prices as parameters.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// The pilot's targets for its first phase (four weeks from launch):
/// between 50 and 100 organizations paying, more than 80% of the paid
/// licenses activated on at least one machine, more than 95% of the
/// invoices paid, and $2,000 of monthly recurring revenue by the end of the
/// first month (50 customers at $40 on average).
pub const TARGET_PAID_SIGNUPS: (u32, u32) = (50, 100);
pub const TARGET_ACTIVATION_RATE: f64 = 0.80;
pub const TARGET_PAYMENT_SUCCESS: f64 = 0.95;
pub const TARGET_MRR_MINOR: i64 = 200_000;
/// The currency of the revenue target (and of the pilot's prices).
pub const TARGET_CURRENCY: &str = "usd";

/// A machine is in use when it renewed (or activated) within this many
/// seconds.
pub const ACTIVE_MACHINE_WINDOW: i64 = 7 * 24 * 3600;

/// One state a subscription was in, from the moment `at` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub subscription_id: String,
    pub at: i64,
    pub status: String,
    pub price_id: Option<String>,
    pub quantity: u32,
}

/// What the store counts for the figures of the period from `since` to
/// `now` (both included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PilotFacts {
    /// Organizations whose first completed checkout is in the period, by
    /// the plan of that checkout.
    pub signups_by_plan: BTreeMap<String, u32>,
    /// Licenses paid through Stripe created in the period.
    pub paid_licenses: u32,
    /// Of those, the ones activated on a machine at least once.
    pub activated_licenses: u32,
    /// Invoices whose first payment attempt is in the period.
    pub invoices_attempted: u32,
    /// Of those, the ones paid (also after a failed attempt).
    pub invoices_paid: u32,
    /// Machines holding a seat that renewed within
    /// [`ACTIVE_MACHINE_WINDOW`] before `now`.
    pub active_machines: u32,
    /// Every state of every subscription up to `now`, oldest first.
    pub history: Vec<SubscriptionState>,
}

/// What a Stripe price charges: `minor` units of `currency` every
/// `months` months.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurringPrice {
    pub minor: i64,
    pub currency: String,
    pub months: u32,
}

/// Whether a subscription in this Stripe status counts as recurring
/// revenue: paying, or behind with a payment that Stripe still tries to
/// collect. Trials, unfinished and ended subscriptions do not.
pub fn counts_for_revenue(status: &str) -> bool {
    matches!(status, "active" | "past_due")
}

/// Monthly recurring revenue at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Mrr {
    /// In the target currency's smallest unit; yearly prices count a
    /// twelfth a month.
    pub minor: i64,
    pub currency: String,
    /// Subscriptions counted.
    pub subscriptions: u32,
    /// Subscriptions that count as revenue but whose price is unknown (or
    /// in another currency): not in `minor`.
    pub unpriced: u32,
}

/// One target and whether it is met.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCheck {
    pub metric: &'static str,
    pub target: String,
    pub actual: String,
    pub met: bool,
}

/// The pilot's figures for a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PilotStats {
    /// Start of the period (Unix seconds; 0: since the beginning).
    pub since: i64,
    /// End of the period: when the figures were taken.
    pub until: i64,
    pub paid_signups: u32,
    pub signups_by_plan: BTreeMap<String, u32>,
    pub paid_licenses: u32,
    pub activated_licenses: u32,
    /// activated / paid licenses (none without paid licenses).
    pub activation_rate: Option<f64>,
    pub invoices_attempted: u32,
    pub invoices_paid: u32,
    /// paid / attempted invoices (none without invoices).
    pub payment_success: Option<f64>,
    /// At the end of the period.
    pub mrr: Mrr,
    /// At its start.
    pub mrr_at_since: Mrr,
    /// `mrr` minus `mrr_at_since`.
    pub mrr_change_minor: i64,
    /// Subscriptions counting as revenue at the start of the period or
    /// starting to within it.
    pub churn_base: u32,
    /// Of those, the ones ended (canceled) by its end.
    pub churned: u32,
    /// churned / base (none without a base).
    pub churn_rate: Option<f64>,
    pub active_machines: u32,
    pub targets: Vec<TargetCheck>,
}

/// The latest state of each subscription at `t`.
fn states_at(history: &[SubscriptionState], t: i64) -> BTreeMap<&str, &SubscriptionState> {
    let mut latest = BTreeMap::new();
    for s in history.iter().filter(|s| s.at <= t) {
        latest.insert(s.subscription_id.as_str(), s);
    }
    latest
}

/// The monthly recurring revenue at `t`.
pub fn mrr_at(
    history: &[SubscriptionState],
    t: i64,
    price: &dyn Fn(&str) -> Option<RecurringPrice>,
) -> Mrr {
    // Summed in twelfths of a minor unit, so yearly prices add up exactly.
    let mut twelfths: i64 = 0;
    let mut mrr = Mrr {
        currency: TARGET_CURRENCY.to_owned(),
        ..Mrr::default()
    };
    for s in states_at(history, t).values() {
        if !counts_for_revenue(&s.status) {
            continue;
        }
        match s.price_id.as_deref().and_then(price) {
            Some(p) if p.currency.eq_ignore_ascii_case(TARGET_CURRENCY) && p.months > 0 => {
                let per_month_twelfths = p.minor.saturating_mul(12) / i64::from(p.months);
                twelfths = twelfths
                    .saturating_add(per_month_twelfths.saturating_mul(i64::from(s.quantity)));
                mrr.subscriptions += 1;
            }
            _ => mrr.unpriced += 1,
        }
    }
    // Rounded to the nearest minor unit.
    mrr.minor = (twelfths + 6) / 12;
    mrr
}

fn ratio(part: u32, whole: u32) -> Option<f64> {
    (whole > 0).then(|| f64::from(part) / f64::from(whole))
}

fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "none yet".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// `$2,000.00` for 200000 minor units of USD.
pub fn show_money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let whole = (abs / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if currency.eq_ignore_ascii_case("usd") {
        format!("{sign}${grouped}.{:02}", abs % 100)
    } else {
        format!(
            "{sign}{grouped}.{:02} {}",
            abs % 100,
            currency.to_ascii_uppercase()
        )
    }
}

/// The figures of the period from `since` to `now`, with each price read
/// through `price` (a Stripe price id to what it charges).
pub fn pilot_stats(
    facts: &PilotFacts,
    since: i64,
    now: i64,
    price: &dyn Fn(&str) -> Option<RecurringPrice>,
) -> PilotStats {
    let paid_signups: u32 = facts.signups_by_plan.values().sum();
    let activation_rate = ratio(facts.activated_licenses, facts.paid_licenses);
    let payment_success = ratio(facts.invoices_paid, facts.invoices_attempted);
    let mrr = mrr_at(&facts.history, now, price);
    let mrr_at_since = mrr_at(&facts.history, since.saturating_sub(1), price);

    // Churn: the subscriptions paying at the start or starting to within
    // the period, and which of them have ended by its end.
    let mut base: BTreeSet<&str> = states_at(&facts.history, since.saturating_sub(1))
        .into_iter()
        .filter(|(_, s)| counts_for_revenue(&s.status))
        .map(|(id, _)| id)
        .collect();
    base.extend(
        facts
            .history
            .iter()
            .filter(|s| s.at >= since && s.at <= now && counts_for_revenue(&s.status))
            .map(|s| s.subscription_id.as_str()),
    );
    let end = states_at(&facts.history, now);
    let churned = base
        .iter()
        .filter(|id| {
            end.get(*id)
                .is_some_and(|s| super::billing::is_terminal(&s.status))
        })
        .count();
    let churned = u32::try_from(churned).unwrap_or(u32::MAX);
    let churn_base = u32::try_from(base.len()).unwrap_or(u32::MAX);

    let (low, high) = TARGET_PAID_SIGNUPS;
    let targets = vec![
        TargetCheck {
            metric: "paid_signups",
            target: format!("{low} to {high}"),
            actual: paid_signups.to_string(),
            met: paid_signups >= low,
        },
        TargetCheck {
            metric: "activation_rate",
            target: format!("more than {:.0}%", TARGET_ACTIVATION_RATE * 100.0),
            actual: percent(activation_rate),
            met: activation_rate.is_some_and(|r| r > TARGET_ACTIVATION_RATE),
        },
        TargetCheck {
            metric: "payment_success",
            target: format!("more than {:.0}%", TARGET_PAYMENT_SUCCESS * 100.0),
            actual: percent(payment_success),
            met: payment_success.is_some_and(|r| r > TARGET_PAYMENT_SUCCESS),
        },
        TargetCheck {
            metric: "mrr",
            target: format!("{} a month", show_money(TARGET_MRR_MINOR, TARGET_CURRENCY)),
            actual: show_money(mrr.minor, &mrr.currency),
            met: mrr.minor >= TARGET_MRR_MINOR,
        },
    ];
    PilotStats {
        since,
        until: now,
        paid_signups,
        signups_by_plan: facts.signups_by_plan.clone(),
        paid_licenses: facts.paid_licenses,
        activated_licenses: facts.activated_licenses,
        activation_rate,
        invoices_attempted: facts.invoices_attempted,
        invoices_paid: facts.invoices_paid,
        payment_success,
        mrr_change_minor: mrr.minor - mrr_at_since.minor,
        mrr,
        mrr_at_since,
        churn_base,
        churned,
        churn_rate: ratio(churned, churn_base),
        active_machines: facts.active_machines,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, at: i64, status: &str, price: &str, quantity: u32) -> SubscriptionState {
        SubscriptionState {
            subscription_id: id.into(),
            at,
            status: status.into(),
            price_id: Some(price.into()),
            quantity,
        }
    }

    fn prices(id: &str) -> Option<RecurringPrice> {
        let p = |minor, months| RecurringPrice {
            minor,
            currency: "usd".into(),
            months,
        };
        match id {
            "month19" => Some(p(1_900, 1)),
            "year190" => Some(p(19_000, 12)),
            "eur" => Some(RecurringPrice {
                minor: 100,
                currency: "eur".into(),
                months: 1,
            }),
            _ => None,
        }
    }

    #[test]
    fn revenue_is_monthly_counts_quantity_and_only_paying_states() {
        let history = vec![
            state("a", 10, "active", "month19", 2),
            state("b", 10, "past_due", "year190", 1),
            state("c", 10, "trialing", "month19", 1),
            state("d", 10, "active", "eur", 1),
            state("e", 10, "active", "unknown", 1),
            state("a", 20, "canceled", "month19", 2),
        ];
        let at15 = mrr_at(&history, 15, &prices);
        // 2 × 19.00 + 190.00 / 12 = 38.00 + 15.83
        assert_eq!(at15.minor, 3_800 + 1_583);
        assert_eq!((at15.subscriptions, at15.unpriced), (2, 2));
        assert_eq!(mrr_at(&history, 25, &prices).minor, 1_583);
        assert_eq!(mrr_at(&history, 5, &prices).minor, 0);
    }

    #[test]
    fn figures_and_targets_of_a_period() {
        let facts = PilotFacts {
            signups_by_plan: BTreeMap::from([("pilot-starter".into(), 2), ("pilot-pro".into(), 1)]),
            paid_licenses: 3,
            activated_licenses: 3,
            invoices_attempted: 20,
            invoices_paid: 20,
            active_machines: 4,
            history: vec![
                state("old", 1, "active", "month19", 1),
                state("old", 150, "canceled", "month19", 1),
                state("new", 120, "active", "month19", 100),
                state("gone-before", 1, "active", "month19", 1),
                state("gone-before", 50, "canceled", "month19", 1),
            ],
        };
        let s = pilot_stats(&facts, 100, 200, &prices);
        assert_eq!(s.paid_signups, 3);
        assert_eq!(s.activation_rate, Some(1.0));
        assert_eq!(s.payment_success, Some(1.0));
        assert_eq!(s.mrr_at_since.minor, 1_900);
        assert_eq!(s.mrr.minor, 190_000);
        assert_eq!(s.mrr_change_minor, 188_100);
        assert_eq!((s.churned, s.churn_base), (1, 2));
        assert_eq!(s.churn_rate, Some(0.5));
        let met: Vec<_> = s.targets.iter().map(|t| (t.metric, t.met)).collect();
        assert_eq!(
            met,
            [
                ("paid_signups", false),
                ("activation_rate", true),
                ("payment_success", true),
                ("mrr", false)
            ]
        );
        let empty = pilot_stats(&PilotFacts::default(), 0, 200, &prices);
        assert_eq!((empty.activation_rate, empty.churn_rate), (None, None));
        assert!(empty.targets.iter().all(|t| !t.met));
        assert_eq!(empty.targets[1].actual, "none yet");
    }

    #[test]
    fn money_reads_as_people_write_it() {
        assert_eq!(show_money(200_000, "usd"), "$2,000.00");
        assert_eq!(show_money(1_583, "usd"), "$15.83");
        assert_eq!(show_money(-1_900, "usd"), "-$19.00");
        assert_eq!(show_money(123_456_789, "eur"), "1,234,567.89 EUR");
    }
}
