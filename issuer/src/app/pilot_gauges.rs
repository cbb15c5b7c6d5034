//! The pilot's figures (`app::stats`, the same numbers as
//! `coditect-issuer stats`, counted from the beginning) as gauges on
//! `/metrics`, so a dashboard or an alert can follow them. They are read
//! from the database at a scrape, at most once a minute per process: the
//! figures move with purchases and payments, not by the second.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::domain::stats::{PilotStats, TARGET_CURRENCY};

use super::AppState;

/// How often the figures are read again, seconds.
const REFRESH_EVERY: i64 = 60;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanLabels {
    plan: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: &'static str,
}

/// The gauges, registered once in the server's registry.
pub struct PilotGauges {
    signups: Family<PlanLabels, Gauge>,
    paid_licenses: Gauge,
    activated_licenses: Gauge,
    invoices_attempted: Gauge,
    invoices_paid: Gauge,
    mrr_minor: Gauge,
    mrr_unpriced: Gauge,
    churn_base: Gauge,
    churned: Gauge,
    active_machines: Gauge,
    target_met: Family<TargetLabels, Gauge>,
    /// When the figures were last read (Unix seconds; 0: never).
    read_at: AtomicI64,
}

impl PilotGauges {
    /// Registers every gauge under `coditect_pilot_…`.
    pub fn register(registry: &mut Registry) -> Self {
        fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        }
        let signups = Family::<PlanLabels, Gauge>::default();
        registry.register(
            "pilot_paid_signups",
            "Organizations that completed a checkout, by the plan they bought",
            signups.clone(),
        );
        let target_met = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "pilot_target_met",
            "1 when the pilot's target is met (paid_signups, activation_rate, payment_success, mrr), else 0",
            target_met.clone(),
        );
        let mrr_help = format!(
            "Monthly recurring revenue in the smallest unit of {} (cents), yearly prices counted a twelfth a month",
            TARGET_CURRENCY.to_uppercase()
        );
        PilotGauges {
            signups,
            paid_licenses: gauge(
                registry,
                "pilot_paid_licenses",
                "Licenses paid through Stripe",
            ),
            activated_licenses: gauge(
                registry,
                "pilot_activated_licenses",
                "Paid licenses activated on at least one machine",
            ),
            invoices_attempted: gauge(
                registry,
                "pilot_invoices_attempted",
                "Invoices Stripe tried to collect",
            ),
            invoices_paid: gauge(
                registry,
                "pilot_invoices_paid",
                "Invoices paid (also after a failed attempt)",
            ),
            mrr_minor: gauge(registry, "pilot_mrr_minor_units", &mrr_help),
            mrr_unpriced: gauge(
                registry,
                "pilot_mrr_unpriced_subscriptions",
                "Paying subscriptions whose price is unknown or in another currency (not in the MRR)",
            ),
            churn_base: gauge(
                registry,
                "pilot_churn_base_subscriptions",
                "Subscriptions that paid at some point",
            ),
            churned: gauge(
                registry,
                "pilot_churned_subscriptions",
                "Of those, the ones canceled",
            ),
            active_machines: gauge(
                registry,
                "pilot_active_machines",
                "Machines holding a seat that renewed in the last 7 days",
            ),
            target_met,
            read_at: AtomicI64::new(0),
        }
    }

    /// Sets every gauge from `stats`.
    pub fn set(&self, stats: &PilotStats) {
        self.signups.clear();
        for (plan, n) in &stats.signups_by_plan {
            self.signups
                .get_or_create(&PlanLabels { plan: plan.clone() })
                .set(i64::from(*n));
        }
        self.paid_licenses.set(i64::from(stats.paid_licenses));
        self.activated_licenses
            .set(i64::from(stats.activated_licenses));
        self.invoices_attempted
            .set(i64::from(stats.invoices_attempted));
        self.invoices_paid.set(i64::from(stats.invoices_paid));
        self.mrr_minor.set(stats.mrr.minor);
        self.mrr_unpriced.set(i64::from(stats.mrr.unpriced));
        self.churn_base.set(i64::from(stats.churn_base));
        self.churned.set(i64::from(stats.churned));
        self.active_machines.set(i64::from(stats.active_machines));
        for check in &stats.targets {
            self.target_met
                .get_or_create(&TargetLabels {
                    target: check.metric,
                })
                .set(i64::from(check.met));
        }
    }
}

/// Reads the figures into the gauges unless that was done less than a
/// minute ago. A database failure leaves the last values (the outbox
/// gauges' refresh logs and counts such failures).
pub async fn refresh(state: &AppState, now: i64) {
    let gauges = state.metrics.pilot();
    let last = gauges.read_at.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < REFRESH_EVERY {
        return;
    }
    gauges.read_at.store(now, Ordering::Relaxed);
    match super::stats::pilot_stats(&state.store, &state.config, state.prices.as_deref(), 0, now)
        .await
    {
        Ok(stats) => gauges.set(&stats),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the pilot's figures"),
    }
}
