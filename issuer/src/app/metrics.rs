//! The process's metrics, for Prometheus (`/metrics`, served by
//! `http::middleware::metrics`): one [`Metrics`] per server, in
//! [`AppState`](super::AppState), updated where things happen (the request
//! pipeline, the license and webhook use cases, the rate limits, token
//! signing) and, for what the database knows (the mail outbox, the pool),
//! read at each scrape ([`Metrics::refresh`]).
//!
//! **Labels are bounded.** No label ever carries a license key, an email,
//! an IP address, a raw path or any other value a client chooses: routes
//! are the router's templates (`unmatched` for anything else), methods the
//! standard ones (`other` for the rest), refusal codes and outcomes the
//! issuer's own fixed lists.
//!
//! **Adding a metric from another module** is one call on the state's
//! `metrics`, at start-up: [`Metrics::gauge`] (or [`Metrics::float_gauge`],
//! [`Metrics::register`] for any other `prometheus_client` metric) returns
//! a handle to keep and set; the name gets the `coditect_` prefix.
//!
//! ```ignore
//! # let metrics = coditect_issuer::app::metrics::Metrics::new();
//! let open = metrics.gauge("open_checkouts", "Checkout sessions not completed yet");
//! open.set(42);
//! assert!(metrics.encode().contains("coditect_open_checkouts 42"));
//! ```

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

use crate::store::SharedStore;

/// The content type of [`Metrics::encode`]'s text (OpenMetrics 1.0, which
/// Prometheus asks for and reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets, seconds: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Token signing buckets, seconds: 10 µs to 100 ms (an Ed25519 signature
/// takes tens of microseconds).
const SIGNING_BUCKETS: [f64; 9] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.01, 0.1,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    operation: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A gauge of seconds or timestamps.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// The metrics of one server (see the module documentation). Help texts
/// are written without their final full stop, which the library adds.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<RouteLabels>,
    grants: Family<OperationLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    webhook_events: Family<OutcomeLabels, Counter>,
    webhook_refusals: Family<CodeLabels, Counter>,
    invoices: Family<ResultLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    signing_seconds: Histogram,
    outbox_unsent: Family<StatusLabels, Gauge>,
    outbox_oldest_age: FloatGauge,
    pool_connections: Family<StateLabels, Gauge>,
    pool_max: Gauge,
    pool_waiting: Gauge,
    query_errors: Family<KindLabels, Counter>,
    signing_key_rotate_by: FloatGauge,
    pilot: super::pilot_gauges::PilotGauges,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A registry with every metric of the issuer and `coditect_build_info`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("coditect");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status class",
            requests.clone(),
        );
        let request_seconds: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            request_seconds.clone(),
        );
        let grants = Family::<OperationLabels, Counter>::default();
        registry.register(
            "license_grants",
            "Machines activated (operation=activate) and tokens renewed (operation=validate)",
            grants.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "license_refusals",
            "Activations and renewals refused, by refusal code",
            refusals.clone(),
        );
        let webhook_events = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_events",
            "Stripe webhook deliveries: applied, duplicate, stale, ignored or refused",
            webhook_events.clone(),
        );
        let webhook_refusals = Family::<CodeLabels, Counter>::default();
        registry.register(
            "webhook_refusals",
            "Stripe webhook deliveries refused, by code (bad_signature after a secret rotation)",
            webhook_refusals.clone(),
        );
        let invoices = Family::<ResultLabels, Counter>::default();
        registry.register(
            "stripe_invoices",
            "Subscription invoices Stripe reported, applied: result=paid or failed",
            invoices.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limit_refusals",
            "Requests refused by a rate limit, by limit",
            rate_limited.clone(),
        );
        let signing_seconds = Histogram::new(SIGNING_BUCKETS);
        registry.register(
            "token_signing_duration_seconds",
            "Time to sign a license token",
            signing_seconds.clone(),
        );
        let outbox_unsent = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "mail_outbox_unsent",
            "Mails not sent yet: status=waiting (to be tried) or given_up (an operator decides)",
            outbox_unsent.clone(),
        );
        let outbox_oldest_age = FloatGauge::default();
        registry.register(
            "mail_outbox_oldest_unsent_age_seconds",
            "Age of the oldest mail not sent yet (0 when none waits)",
            outbox_oldest_age.clone(),
        );
        let pool_connections = Family::<StateLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database connections of this process: state=in_use or idle",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_max_connections",
            "Most database connections this process opens",
            pool_max.clone(),
        );
        let pool_waiting = Gauge::default();
        registry.register(
            "db_pool_waiting",
            "Requests waiting for a database connection (PostgreSQL)",
            pool_waiting.clone(),
        );
        let query_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "db_query_errors",
            "Database errors: kind=unavailable (outage, busy, lost connection) or failed",
            query_errors.clone(),
        );
        let signing_key_rotate_by = FloatGauge::default();
        registry.register(
            "build",
            "The issuer's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let pilot = super::pilot_gauges::PilotGauges::register(&mut registry);
        Metrics {
            registry: Mutex::new(registry),
            requests,
            request_seconds,
            grants,
            refusals,
            webhook_events,
            webhook_refusals,
            invoices,
            rate_limited,
            signing_seconds,
            outbox_unsent,
            outbox_oldest_age,
            pool_connections,
            pool_max,
            pool_waiting,
            query_errors,
            signing_key_rotate_by,
            pilot,
        }
    }

    /// The pilot's figures as gauges (`app::pilot_gauges`).
    pub fn pilot(&self) -> &super::pilot_gauges::PilotGauges {
        &self.pilot
    }

    /// Registers any `prometheus_client` metric under `coditect_NAME`.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The library ends every help text with a full stop.
        registry.register(name, help.trim_end_matches('.'), metric);
    }

    /// A new integer gauge `coditect_NAME`, registered; keep it and set it.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let gauge = Gauge::default();
        self.register(name, help, gauge.clone());
        gauge
    }

    /// A new floating-point gauge `coditect_NAME`, registered.
    pub fn float_gauge(&self, name: &str, help: &str) -> FloatGauge {
        let gauge = FloatGauge::default();
        self.register(name, help, gauge.clone());
        gauge
    }

    /// `SIGNING_KEY_ROTATE_BY`, when configured: published as
    /// `coditect_signing_key_rotate_by_timestamp_seconds`.
    pub fn set_signing_key_rotate_by(&self, at: i64) {
        #[allow(clippy::cast_precision_loss)]
        self.signing_key_rotate_by.set(at as f64);
        self.register(
            "signing_key_rotate_by_timestamp_seconds",
            "When the signing key is due to be replaced (SIGNING_KEY_ROTATE_BY), Unix time.",
            self.signing_key_rotate_by.clone(),
        );
    }

    /// An answered HTTP request: `route` is a template (or `unmatched`).
    pub fn observe_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let method = known_method(method);
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method,
                status: status_class(status),
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                method,
            })
            .observe(took.as_secs_f64());
    }

    /// A machine activated (`activate`) or a token renewed (`validate`).
    pub fn license_granted(&self, operation: &'static str) {
        self.grants
            .get_or_create(&OperationLabels { operation })
            .inc();
    }

    /// An activation or renewal refused with `code` (a stable refusal code).
    pub fn license_refused(&self, operation: &'static str, code: &'static str) {
        self.refusals
            .get_or_create(&RefusalLabels { operation, code })
            .inc();
    }

    /// A webhook delivery that was applied, a duplicate, stale or ignored.
    pub fn webhook_event(&self, outcome: &'static str) {
        self.webhook_events
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A webhook delivery refused with `code`.
    pub fn webhook_refused(&self, code: &'static str) {
        self.webhook_events
            .get_or_create(&OutcomeLabels { outcome: "refused" })
            .inc();
        self.webhook_refusals
            .get_or_create(&CodeLabels { code })
            .inc();
    }

    /// A subscription invoice applied: paid, or its payment failed.
    pub fn invoice(&self, paid: bool) {
        let result = if paid { "paid" } else { "failed" };
        self.invoices.get_or_create(&ResultLabels { result }).inc();
    }

    /// A request refused by the rate limit `limit` (its name).
    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// A token signed in `took`.
    pub fn token_signed(&self, took: Duration) {
        self.signing_seconds.observe(took.as_secs_f64());
    }

    /// Reads what the database knows (outbox, pool, errors) into the
    /// gauges, before a scrape. A failure leaves the last values and
    /// counts a query error.
    pub async fn refresh(&self, store: &SharedStore, now: i64) {
        match store.outbox_backlog().await {
            Ok(backlog) => {
                self.outbox_unsent
                    .get_or_create(&StatusLabels { status: "waiting" })
                    .set(i64::try_from(backlog.waiting).unwrap_or(i64::MAX));
                self.outbox_unsent
                    .get_or_create(&StatusLabels { status: "given_up" })
                    .set(i64::try_from(backlog.given_up).unwrap_or(i64::MAX));
                let age = backlog
                    .oldest_unsent_at
                    .map_or(0, |at| now.saturating_sub(at).max(0));
                #[allow(clippy::cast_precision_loss)]
                self.outbox_oldest_age.set(age as f64);
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the mail outbox"),
        }
        let pool = store.pool_status();
        self.pool_connections
            .get_or_create(&StateLabels { state: "in_use" })
            .set(i64::from(pool.in_use));
        self.pool_connections
            .get_or_create(&StateLabels { state: "idle" })
            .set(i64::from(pool.idle));
        self.pool_max.set(i64::from(pool.max));
        self.pool_waiting.set(i64::from(pool.waiting));
        let errors = crate::store::query_errors();
        for (kind, total) in [
            ("unavailable", errors.unavailable),
            ("failed", errors.failed),
        ] {
            let counter = self.query_errors.get_or_create(&KindLabels { kind });
            // The store counts for the whole process; the counter follows.
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::error!(error = %e, "metrics: cannot encode");
        }
        text
    }
}

/// `2xx`, `4xx`, … of a status code.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The method as a label: the standard ones, else `other`.
fn known_method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_the_text_is_openmetrics() {
        let m = Metrics::new();
        m.observe_request(
            "/api/v1/licenses/validate",
            "BREW",
            503,
            Duration::from_millis(3),
        );
        m.license_refused("validate", "not_activated");
        m.rate_limited("validate");
        let text = m.encode();
        assert!(
            text.contains(
                r#"coditect_http_requests_total{route="/api/v1/licenses/validate",method="other",status="5xx"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"coditect_license_refusals_total{operation="validate",code="not_activated"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"coditect_rate_limit_refusals_total{limit="validate"} 1"#));
        assert!(text.contains("coditect_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn another_module_adds_a_gauge_in_one_call() {
        let m = Metrics::new();
        m.gauge("open_checkouts", "Checkout sessions not completed yet.")
            .set(7);
        m.float_gauge("example_ratio", "A ratio.").set(1234.5);
        let text = m.encode();
        assert!(text.contains("coditect_open_checkouts 7"), "{text}");
        assert!(text.contains("coditect_example_ratio 1234.5"), "{text}");
    }
}
