//! A fake Stripe for end-to-end tests: a real HTTP server on a loopback port
//! that speaks the part of Stripe's API the issuer uses (customers, Checkout
//! Sessions, billing portal sessions, subscriptions, prices), serves a
//! "hosted checkout" page and a billing portal page, and delivers signed
//! webhook events to a configurable URL (DESIGN §7: "tests talk to a local
//! fake Stripe over HTTP, never to a mock object inside the process").
//!
//! # Wire format
//!
//! Modelled on Stripe API version [`API_VERSION`] (`2026-07-29.dahlia`), the
//! version `async-stripe` 1.0.0-rc.8 pins (the newest release that builds
//! with the workspace's Rust 1.88). That means:
//!
//! - requests are `application/x-www-form-urlencoded` with bracket keys
//!   (`line_items[0][price]=…`, `metadata[org]=…`, `expand[0]=…`), GET
//!   parameters in the query string, `Authorization: Bearer sk_…` (HTTP Basic
//!   with the key as user name also works, as with Stripe);
//! - responses are JSON objects with `id`, `object`, `created`, `livemode`,
//!   every field present (`null` when empty), errors as
//!   `{"error": {"type", "code", "message", "param"}}` with Stripe's statuses;
//! - a POST with an `Idempotency-Key` header is answered once: a repeat with
//!   the same parameters replays the saved answer (`Idempotent-Replayed:
//!   true`) without doing anything again, a repeat with other parameters gets
//!   Stripe's `idempotency_error`;
//! - the billing period lives on the subscription items
//!   (`items.data[].current_period_start/end`, since `2025-03-31.basil`),
//!   not on the subscription; an invoice names its subscription in
//!   `parent.subscription_details.subscription` and the price of a line in
//!   `lines.data[].pricing.price_details.price`; the service period is
//!   `lines.data[].period` (an invoice's own `period_start/end` look back one
//!   period, as Stripe's do);
//! - Checkout's `ui_mode` is `hosted_page` (the `hosted` value was removed in
//!   `2026-03-25.dahlia`), and a session's `url` is `null` once it is no
//!   longer open.
//!
//! # Webhooks
//!
//! Events are `{"id": "evt_…", "object": "event", "api_version", "created",
//! "type", "data": {"object", "previous_attributes"?}, "livemode": false,
//! "pending_webhooks", "request": {"id", "idempotency_key"}}`, sent
//! pretty-printed (as Stripe does, so a handler that re-serialises instead of
//! checking the raw bytes fails) with `Stripe-Signature: t=<unix>,v1=<hex
//! HMAC-SHA256(secret, "<t>.<payload>")>` ([`sign_payload`]). Deliveries are
//! synchronous and in order: when the hosted checkout page is submitted the
//! events have been delivered (and answered) before the browser is
//! redirected, unless deliveries are paused ([`FakeStripe::pause_deliveries`]),
//! which is how a test lets the person reach the success page first, or
//! delivers events out of order. [`FakeStripe::deliver`] sends a stored event
//! again (same id, same bytes, fresh signature) and
//! [`FakeStripe::deliver_concurrently`] sends it from several threads at once.
//! Failed deliveries are recorded, not retried.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Request, Response};
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// The Stripe API version the fake models and stamps on its events: the one
/// `async-stripe` 1.0.0-rc.8 sends as `Stripe-Version`.
pub const API_VERSION: &str = "2026-07-29.dahlia";

/// The default secret API key the fake accepts.
pub const DEFAULT_API_KEY: &str = "sk_test_51FakeCoditectKey0000000000000000000000";

/// The default webhook signing secret.
pub const DEFAULT_WEBHOOK_SECRET: &str = "whsec_fakeCoditectSigningSecret0000000000";

/// Stripe's test card that always succeeds (prefilled on the checkout page).
pub const CARD_SUCCEEDS: &str = "4242424242424242";

/// Stripe's test card that is always declined (`card_declined`).
pub const CARD_DECLINED: &str = "4000000000000002";

/// Stripe's test card declined for insufficient funds.
pub const CARD_INSUFFICIENT_FUNDS: &str = "4000000000009995";

/// Price ids of the pilot plans (seed: Starter $19/month or $190/year,
/// Professional $49/month or $490/year), configured by default.
pub const PRICE_STARTER_MONTHLY: &str = "price_pilot_starter_monthly";
/// Pilot Starter, billed yearly.
pub const PRICE_STARTER_ANNUAL: &str = "price_pilot_starter_annual";
/// Pilot Professional, billed monthly.
pub const PRICE_PROFESSIONAL_MONTHLY: &str = "price_pilot_professional_monthly";
/// Pilot Professional, billed yearly.
pub const PRICE_PROFESSIONAL_ANNUAL: &str = "price_pilot_professional_annual";

/// How long a delivery may take before it is recorded as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a new Checkout Session stays open (Stripe's default: 24 hours).
const SESSION_LIFETIME: i64 = 24 * 3600;

/// `Stripe-Signature` header value for `payload` signed with `secret` at
/// `timestamp`: `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<payload>")>`,
/// exactly as Stripe signs webhook deliveries. The whole secret string,
/// `whsec_` prefix included, is the HMAC key.
pub fn sign_payload(payload: impl AsRef<[u8]>, secret: &str, timestamp: i64) -> String {
    format!(
        "t={timestamp},v1={}",
        signature_v1(payload.as_ref(), secret, timestamp)
    )
}

/// The `v1` part of a `Stripe-Signature`: hex HMAC-SHA256 of
/// `"<timestamp>.<payload>"` keyed with `secret`.
pub fn signature_v1(payload: impl AsRef<[u8]>, secret: &str, timestamp: i64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload.as_ref());
    hex::encode(mac.finalize().into_bytes())
}

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    i64::try_from(secs).expect("the clock fits in i64")
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

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

/// How a [`FakeStripe`] is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The secret key requests must carry (`Authorization: Bearer …`).
    pub api_key: String,
    /// Where events are POSTed; `None` stores events without sending them.
    pub webhook_url: Option<String>,
    /// The endpoint's signing secret (`whsec_…`).
    pub webhook_secret: String,
    /// Further secrets that also sign every delivery (one more `v1=` each,
    /// before the current secret's), as Stripe does while a rolled secret is
    /// still valid.
    pub extra_webhook_secrets: Vec<String>,
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

// ---------------------------------------------------------------------------
// What tests read back
// ---------------------------------------------------------------------------

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `POST`, `DELETE`, …
    pub method: String,
    /// The path, without the query (`/v1/checkout/sessions`).
    pub path: String,
    /// Decoded query parameters, in order (`expand[0]`, …).
    pub query: Vec<(String, String)>,
    /// Decoded form parameters of the body, in order, with their bracket
    /// keys as sent (`line_items[0][price]`, `metadata[org]`).
    pub params: Vec<(String, String)>,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The status the fake answered with (0 while the answer is being made).
    pub status: u16,
}

impl RecordedRequest {
    /// The last form (or, failing that, query) parameter named `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .chain(self.query.iter())
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Idempotency-Key` header.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.header("idempotency-key")
    }

    /// The `Stripe-Version` header.
    pub fn stripe_version(&self) -> Option<&str> {
        self.header("stripe-version")
    }
}

/// One webhook delivery attempt.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `evt_…`
    pub event_id: String,
    /// `checkout.session.completed`, …
    pub event_type: String,
    /// Where it was POSTed.
    pub url: String,
    /// The `t` of the signature.
    pub timestamp: i64,
    /// The `Stripe-Signature` header sent.
    pub signature: String,
    /// The receiver's status, `None` when the request failed.
    pub status: Option<u16>,
    /// The receiver's body (or the transport error).
    pub response: String,
}

impl Delivery {
    /// Whether the receiver answered 2xx (what Stripe counts as delivered).
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// An event the fake created.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// `evt_…`
    pub id: String,
    /// `type`
    pub event_type: String,
    /// `created`
    pub created: i64,
    /// The exact bytes every delivery of this event carries.
    pub payload: String,
}

impl StoredEvent {
    /// The event as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.payload).expect("stored events are JSON")
    }

    /// `data.object`
    pub fn object(&self) -> Value {
        self.json()["data"]["object"].clone()
    }
}

/// What completing a checkout made.
#[derive(Debug, Clone)]
pub struct CheckoutCompletion {
    /// The success URL with `{CHECKOUT_SESSION_ID}` filled in, if the
    /// session had one.
    pub redirect_url: Option<String>,
    /// `cus_…`
    pub customer_id: String,
    /// `sub_…`
    pub subscription_id: String,
    /// `in_…`
    pub invoice_id: String,
    /// The events, in the order they were created (and sent).
    pub event_ids: Vec<String>,
}

// ---------------------------------------------------------------------------
// The handle
// ---------------------------------------------------------------------------

/// A running fake Stripe; dropping it stops the server.
pub struct FakeStripe {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeStripe {
    /// Starts a fake on `127.0.0.1:<free port>` (its own thread and tokio
    /// runtime). Panics if it cannot.
    pub fn start(config: Config) -> FakeStripe {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<std::io::Result<SocketAddr>>();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::new(Shared::new(config));
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fake-stripe".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let acceptor = match TcpListener::bind("127.0.0.1:0").into_acceptor().await {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                            return;
                        }
                    };
                    let addr = acceptor
                        .local_addr()
                        .first()
                        .and_then(|a| a.as_socket_addr().copied())
                        .expect("a TCP listener has a socket address");
                    *server_shared.base_url.lock().expect("not poisoned") =
                        format!("http://{addr}");
                    let _ = addr_tx.send(Ok(addr));
                    let endpoint = poem::endpoint::make(move |req: Request| {
                        let shared = Arc::clone(&server_shared);
                        async move { Ok::<Response, poem::Error>(handle(shared, req).await) }
                    });
                    let _ = poem::Server::new_with_acceptor(acceptor)
                        .run_with_graceful_shutdown(
                            endpoint,
                            async move {
                                let _ = shutdown_rx.await;
                            },
                            Some(Duration::from_secs(2)),
                        )
                        .await;
                });
                // A delivery still waiting on a slow receiver must not hold
                // up the test that dropped the fake.
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .expect("spawn the fake Stripe thread");
        let addr = addr_rx
            .recv()
            .expect("the fake Stripe thread reports its address")
            .unwrap_or_else(|e| panic!("cannot start the fake Stripe: {e}"));
        FakeStripe {
            shared,
            addr,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash). Give it to async-stripe
    /// as `ClientBuilder::new(key).url(base_url)`: the client sends
    /// `{base}/v1/...`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The secret key the fake accepts.
    pub fn api_key(&self) -> &str {
        &self.shared.config.api_key
    }

    /// The webhook signing secret.
    pub fn webhook_secret(&self) -> &str {
        &self.shared.config.webhook_secret
    }

    /// The API version events carry.
    pub fn api_version(&self) -> &str {
        &self.shared.config.api_version
    }

    /// The configured prices.
    pub fn prices(&self) -> &[Price] {
        &self.shared.config.prices
    }

    /// Where events go now.
    pub fn webhook_url(&self) -> Option<String> {
        self.shared.state().webhook_url.clone()
    }

    /// Points deliveries at `url` (`None`: store events, send nothing).
    pub fn set_webhook_url(&self, url: Option<&str>) {
        self.shared.state().webhook_url = url.map(str::to_owned);
    }

    /// The hosted checkout page of a session (what its `url` was).
    pub fn checkout_page_url(&self, session_id: &str) -> String {
        format!("{}/pay/{session_id}", self.base_url())
    }

    // --- requests -----------------------------------------------------------

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state().requests.clone()
    }

    /// The requests with this method and path (`"POST"`,
    /// `"/v1/checkout/sessions"`).
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.shared
            .state()
            .requests
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
    }

    /// Makes the next `times` requests whose method and path match answer
    /// `status` with Stripe's `api_error` (for 5xx) or
    /// `invalid_request_error`, without doing anything. `path` is matched
    /// exactly, or as a prefix when it ends with `*`.
    pub fn fail_next_requests(&self, method: &str, path: &str, status: u16, times: usize) {
        self.shared.state().injected.push(InjectedFailure {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            status,
            remaining: times,
        });
    }

    // --- objects ------------------------------------------------------------

    /// A customer as the API would return it.
    pub fn customer(&self, id: &str) -> Option<Value> {
        self.shared.state().customers.get(id).cloned()
    }

    /// A Checkout Session as the API would return it.
    pub fn checkout_session(&self, id: &str) -> Option<Value> {
        self.shared
            .state()
            .sessions
            .get(id)
            .map(|s| s.object.clone())
    }

    /// A subscription as the API would return it.
    pub fn subscription(&self, id: &str) -> Option<Value> {
        self.shared.state().subscriptions.get(id).cloned()
    }

    /// An invoice.
    pub fn invoice(&self, id: &str) -> Option<Value> {
        self.shared.state().invoices.get(id).cloned()
    }

    /// The ids of all Checkout Sessions, oldest first.
    pub fn checkout_session_ids(&self) -> Vec<String> {
        self.shared.state().session_order.clone()
    }

    /// The ids of all subscriptions, oldest first.
    pub fn subscription_ids(&self) -> Vec<String> {
        self.shared.state().subscription_order.clone()
    }

    // --- hosted checkout ----------------------------------------------------

    /// Does what submitting the hosted checkout page with the test card
    /// does (customer if needed, subscription, paid invoice, session
    /// complete, events sent) and returns what it made. Panics if the
    /// session is unknown or not open.
    pub fn complete_checkout(&self, session_id: &str) -> CheckoutCompletion {
        let form = CardForm {
            email: None,
            name: Some("Test Customer".to_owned()),
        };
        let (completion, events) = {
            let mut state = self.shared.state();
            complete_checkout_locked(&self.shared, &mut state, session_id, &form)
                .unwrap_or_else(|e| panic!("cannot complete checkout {session_id}: {}", e.message))
        };
        self.shared.dispatch(&events);
        completion
    }

    // --- events -------------------------------------------------------------

    /// Every event created so far, oldest first.
    pub fn events(&self) -> Vec<StoredEvent> {
        self.shared.state().events.clone()
    }

    /// The events of one type, oldest first.
    pub fn events_of_type(&self, event_type: &str) -> Vec<StoredEvent> {
        self.shared
            .state()
            .events
            .iter()
            .filter(|e| e.event_type == event_type)
            .cloned()
            .collect()
    }

    /// One event.
    pub fn event(&self, id: &str) -> Option<StoredEvent> {
        self.shared
            .state()
            .events
            .iter()
            .find(|e| e.id == id)
            .cloned()
    }

    /// Creates an event around `object` without sending it (send it with
    /// [`deliver`](Self::deliver), in any order, as often as needed).
    pub fn create_event(&self, event_type: &str, object: Value) -> StoredEvent {
        self.create_event_at(event_type, object, unix_now())
    }

    /// Like [`create_event`](Self::create_event) with a chosen `created`.
    pub fn create_event_at(&self, event_type: &str, object: Value, created: i64) -> StoredEvent {
        let mut state = self.shared.state();
        let id = state.new_event(
            &self.shared,
            event_type,
            object,
            None,
            RequestInfo::none(),
            Some(created),
        );
        state.event(&id).clone()
    }

    /// Creates an event around `object` and sends it like any other event
    /// (queued while deliveries are paused, stored only when no webhook URL
    /// is set).
    pub fn send_event(&self, event_type: &str, object: Value) -> StoredEvent {
        let event = {
            let mut state = self.shared.state();
            let id = state.new_event(
                &self.shared,
                event_type,
                object,
                None,
                RequestInfo::none(),
                None,
            );
            state.event(&id).clone()
        };
        self.shared.dispatch(std::slice::from_ref(&event.id));
        event
    }

    /// Sends a stored event now (again): same id and bytes, a fresh
    /// signature. Ignores the pause. Panics if no webhook URL is set or the
    /// event is unknown.
    pub fn deliver(&self, event_id: &str) -> Delivery {
        self.deliver_signed_at(event_id, unix_now())
    }

    /// Sends a stored event with a signature made at `timestamp` (a stale
    /// one, say).
    pub fn deliver_signed_at(&self, event_id: &str, timestamp: i64) -> Delivery {
        let (url, event) = {
            let state = self.shared.state();
            let url = state
                .webhook_url
                .clone()
                .expect("set a webhook URL before delivering events");
            let event = state
                .events
                .iter()
                .find(|e| e.id == event_id)
                .unwrap_or_else(|| panic!("no event {event_id}"))
                .clone();
            (url, event)
        };
        self.shared.post_event(&url, &event, timestamp)
    }

    /// Sends a stored event `times` times at the same moment, from as many
    /// threads, and returns every delivery.
    pub fn deliver_concurrently(&self, event_id: &str, times: usize) -> Vec<Delivery> {
        let barrier = Barrier::new(times);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..times)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        self.deliver(event_id)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a delivery thread panicked"))
                .collect()
        })
    }

    /// POSTs `payload` to the webhook URL with `signature` as the
    /// `Stripe-Signature` header (or none), for unsigned, tampered and
    /// wrongly signed requests. Recorded like a delivery, with event id and
    /// type taken from the payload when it has them.
    pub fn post_raw_webhook(&self, payload: &str, signature: Option<&str>) -> Delivery {
        let url = self
            .webhook_url()
            .expect("set a webhook URL before posting to it");
        let parsed: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        let id = parsed["id"].as_str().unwrap_or("").to_owned();
        let event_type = parsed["type"].as_str().unwrap_or("").to_owned();
        let timestamp = signature
            .and_then(|s| s.split(',').find_map(|p| p.strip_prefix("t=")))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        self.shared
            .post(&url, &id, &event_type, payload, signature, timestamp)
    }

    /// Every delivery attempt so far, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.state().deliveries.clone()
    }

    /// The delivery attempts of one event.
    pub fn deliveries_of(&self, event_id: &str) -> Vec<Delivery> {
        self.shared
            .state()
            .deliveries
            .iter()
            .filter(|d| d.event_id == event_id)
            .cloned()
            .collect()
    }

    /// From now on new events wait in a queue instead of being sent.
    pub fn pause_deliveries(&self) {
        self.shared.state().paused = true;
    }

    /// The ids of the events waiting, oldest first.
    pub fn queued_events(&self) -> Vec<String> {
        self.shared.state().queue.clone()
    }

    /// Empties the queue without sending, returning the ids (to send them
    /// with [`deliver`](Self::deliver) in another order).
    pub fn take_queued(&self) -> Vec<String> {
        std::mem::take(&mut self.shared.state().queue)
    }

    /// Sends the queued events in order and stops pausing.
    pub fn resume_deliveries(&self) -> Vec<Delivery> {
        let queued = {
            let mut state = self.shared.state();
            state.paused = false;
            std::mem::take(&mut state.queue)
        };
        self.shared.dispatch(&queued)
    }

    // --- subscription life ---------------------------------------------------

    /// A renewal that is paid: the subscription's period moves on by one
    /// interval (a trial ends), status `active`, a paid
    /// `subscription_cycle` invoice for the new period; sends
    /// `customer.subscription.updated` then `invoice.paid`. Returns the
    /// invoice. A subscription set to cancel at the period end ends
    /// instead: status `canceled`, `customer.subscription.deleted` is sent
    /// and the subscription is returned (`"object": "subscription"`).
    pub fn advance_period(&self, subscription_id: &str) -> Value {
        self.renew(subscription_id, true)
    }

    /// A renewal whose payment fails: the period moves on as with
    /// [`advance_period`](Self::advance_period) but the invoice stays
    /// `open` and the subscription becomes `past_due`; sends
    /// `customer.subscription.updated` then `invoice.payment_failed`.
    /// Returns the invoice (or, like `advance_period`, the ended
    /// subscription if it was set to cancel at the period end).
    pub fn fail_next_payment(&self, subscription_id: &str) -> Value {
        self.renew(subscription_id, false)
    }

    /// A retry of the subscription's open invoice succeeds: the invoice is
    /// paid and the subscription `active` again; sends `invoice.paid` then
    /// `customer.subscription.updated`. Returns the invoice.
    pub fn recover_payment(&self, subscription_id: &str) -> Value {
        let (invoice, events) = {
            let mut state = self.shared.state();
            recover_payment_locked(&self.shared, &mut state, subscription_id)
                .unwrap_or_else(|e| panic!("{}", e.message))
        };
        self.shared.dispatch(&events);
        invoice
    }

    fn renew(&self, subscription_id: &str, paid: bool) -> Value {
        let (invoice, events) = {
            let mut state = self.shared.state();
            renew_locked(&self.shared, &mut state, subscription_id, paid)
                .unwrap_or_else(|e| panic!("{}", e.message))
        };
        self.shared.dispatch(&events);
        invoice
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

struct Shared {
    config: Config,
    base_url: Mutex<String>,
    state: Mutex<State>,
    agent: ureq::Agent,
    ids: IdSource,
}

#[derive(Default)]
struct State {
    webhook_url: Option<String>,
    customers: HashMap<String, Value>,
    sessions: HashMap<String, Session>,
    session_order: Vec<String>,
    subscriptions: HashMap<String, Value>,
    subscription_order: Vec<String>,
    invoices: HashMap<String, Value>,
    portal_sessions: HashMap<String, Value>,
    events: Vec<StoredEvent>,
    deliveries: Vec<Delivery>,
    requests: Vec<RecordedRequest>,
    idempotent: HashMap<String, SavedAnswer>,
    idempotent_in_flight: std::collections::HashSet<String>,
    injected: Vec<InjectedFailure>,
    paused: bool,
    queue: Vec<String>,
    invoice_count: u64,
}

/// A Checkout Session and what it was asked for.
struct Session {
    object: Value,
    line_items: Vec<(String, u64)>,
    trial_days: Option<u32>,
    subscription_metadata: Map<String, Value>,
}

struct SavedAnswer {
    method: String,
    path: String,
    params: Vec<(String, String)>,
    status: u16,
    body: String,
}

struct InjectedFailure {
    method: String,
    path: String,
    status: u16,
    remaining: usize,
}

/// The `request` of an event: the API request that caused it, if any.
#[derive(Clone)]
struct RequestInfo {
    id: Option<String>,
    idempotency_key: Option<String>,
}

impl RequestInfo {
    fn none() -> RequestInfo {
        RequestInfo {
            id: None,
            idempotency_key: None,
        }
    }
}

impl Shared {
    fn new(config: Config) -> Shared {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(DELIVERY_TIMEOUT))
            .build()
            .into();
        let state = State {
            webhook_url: config.webhook_url.clone(),
            ..State::default()
        };
        Shared {
            config,
            base_url: Mutex::new(String::new()),
            state: Mutex::new(state),
            agent,
            ids: IdSource::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the
        // state from the ones after it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn base_url(&self) -> String {
        self.base_url
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn price(&self, id: &str) -> Option<&Price> {
        self.config.prices.iter().find(|p| p.id == id)
    }

    /// Sends new events: in order, unless paused (queued) or no URL is set
    /// (stored only). Never called with the state locked.
    fn dispatch(&self, event_ids: &[String]) -> Vec<Delivery> {
        let mut deliveries = Vec::new();
        for id in event_ids {
            let (url, event) = {
                let mut state = self.state();
                let Some(url) = state.webhook_url.clone() else {
                    continue;
                };
                if state.paused {
                    state.queue.push(id.clone());
                    continue;
                }
                (url, state.event(id).clone())
            };
            deliveries.push(self.post_event(&url, &event, unix_now()));
        }
        deliveries
    }

    fn post_event(&self, url: &str, event: &StoredEvent, timestamp: i64) -> Delivery {
        // The extra signatures go first: async-stripe-webhook 1.0.0-rc.8
        // checks only the last `v1`, which must stay the current secret's.
        let mut signature = format!("t={timestamp}");
        for secret in &self.config.extra_webhook_secrets {
            signature.push_str(",v1=");
            signature.push_str(&signature_v1(&event.payload, secret, timestamp));
        }
        signature.push_str(",v1=");
        signature.push_str(&signature_v1(
            &event.payload,
            &self.config.webhook_secret,
            timestamp,
        ));
        self.post(
            url,
            &event.id,
            &event.event_type,
            &event.payload,
            Some(&signature),
            timestamp,
        )
    }

    fn post(
        &self,
        url: &str,
        event_id: &str,
        event_type: &str,
        payload: &str,
        signature: Option<&str>,
        timestamp: i64,
    ) -> Delivery {
        let mut request = self
            .agent
            .post(url)
            .header("Content-Type", "application/json; charset=utf-8")
            .header(
                "User-Agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .header("Accept", "*/*; q=0.5, application/xml")
            .header("Cache-Control", "no-cache");
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        let (status, response) = match request.send(payload) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let body = resp.body_mut().read_to_string().unwrap_or_default();
                (Some(status), body)
            }
            Err(e) => (None, e.to_string()),
        };
        let delivery = Delivery {
            event_id: event_id.to_owned(),
            event_type: event_type.to_owned(),
            url: url.to_owned(),
            timestamp,
            signature: signature.unwrap_or("").to_owned(),
            status,
            response,
        };
        self.state().deliveries.push(delivery.clone());
        delivery
    }
}

impl State {
    fn event(&self, id: &str) -> &StoredEvent {
        self.events
            .iter()
            .find(|e| e.id == id)
            .expect("events are never removed")
    }

    /// Stores a new event and returns its id.
    fn new_event(
        &mut self,
        shared: &Shared,
        event_type: &str,
        object: Value,
        previous_attributes: Option<Value>,
        request: RequestInfo,
        created: Option<i64>,
    ) -> String {
        let id = shared.ids.make("evt_", 24);
        let created = created.unwrap_or_else(unix_now);
        let mut data = json!({ "object": object });
        if let Some(previous) = previous_attributes {
            data["previous_attributes"] = previous;
        }
        let event = json!({
            "id": id,
            "object": "event",
            "api_version": shared.config.api_version,
            "created": created,
            "data": data,
            "livemode": false,
            "pending_webhooks": i64::from(self.webhook_url.is_some()),
            "request": { "id": request.id, "idempotency_key": request.idempotency_key },
            "type": event_type,
        });
        let payload = serde_json::to_string_pretty(&event).expect("events serialise");
        self.events.push(StoredEvent {
            id: id.clone(),
            event_type: event_type.to_owned(),
            created,
            payload,
        });
        id
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// An answer under construction.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: u16, body: &Value) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: serde_json::to_string_pretty(body).expect("JSON serialises"),
            headers: Vec::new(),
        }
    }

    fn html(status: u16, body: String) -> Answer {
        Answer {
            status,
            content_type: "text/html; charset=utf-8",
            body,
            headers: Vec::new(),
        }
    }

    fn redirect(location: &str) -> Answer {
        Answer {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            body: format!("Redirecting to {location}"),
            headers: vec![("Location", location.to_owned())],
        }
    }

    fn into_response(self) -> Response {
        let mut builder = Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .content_type(self.content_type);
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder.body(self.body)
    }
}

/// A Stripe API error.
#[derive(Debug)]
struct ApiError {
    status: u16,
    kind: &'static str,
    code: Option<&'static str>,
    message: String,
    param: Option<String>,
}

impl ApiError {
    fn invalid(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            code: None,
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    fn invalid_value(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("parameter_invalid_string"),
            ..ApiError::invalid(message, Some(param))
        }
    }

    fn missing(param: &str) -> ApiError {
        ApiError {
            code: Some("parameter_missing"),
            ..ApiError::invalid(format!("Missing required param: {param}."), Some(param))
        }
    }

    fn unknown_param(param: &str) -> ApiError {
        ApiError {
            code: Some("parameter_unknown"),
            ..ApiError::invalid(
                format!(
                    "Received unknown parameter: {param}. (The fake Stripe in \
                     tests/src/fake_stripe.rs accepts only the parameters it models; \
                     add it there if the issuer needs it.)"
                ),
                Some(param),
            )
        }
    }

    /// An unknown id named in the path: 404.
    fn no_such(what: &str, id: &str) -> ApiError {
        ApiError {
            status: 404,
            code: Some("resource_missing"),
            ..ApiError::invalid(format!("No such {what}: '{id}'"), Some("id"))
        }
    }

    /// An unknown id named in a parameter: 400.
    fn no_such_param(what: &str, id: &str, param: &str) -> ApiError {
        ApiError {
            code: Some("resource_missing"),
            ..ApiError::invalid(format!("No such {what}: '{id}'"), Some(param))
        }
    }

    fn to_json(&self) -> Value {
        let mut error = Map::new();
        if let Some(code) = self.code {
            error.insert("code".into(), json!(code));
            error.insert(
                "doc_url".into(),
                json!(format!(
                    "https://stripe.com/docs/error-codes/{}",
                    code.replace('_', "-")
                )),
            );
        }
        error.insert("message".into(), json!(self.message));
        if let Some(param) = &self.param {
            error.insert("param".into(), json!(param));
        }
        error.insert("type".into(), json!(self.kind));
        json!({ "error": error })
    }

    fn answer(&self) -> Answer {
        Answer::json(self.status, &self.to_json())
    }
}

/// One incoming request, decoded.
struct Incoming {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    params: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    /// A body that is not a form (so Stripe would see no parameters).
    non_form_body: bool,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn handle(shared: Arc<Shared>, mut req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = parse_pairs(req.uri().query().unwrap_or(""));
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req.take_body().into_vec().await.unwrap_or_default();
    let is_form = headers.iter().any(|(k, v)| {
        k == "content-type"
            && v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
    });
    let body_text = String::from_utf8_lossy(&body);
    let params = if is_form {
        parse_pairs(&body_text)
    } else {
        Vec::new()
    };
    let incoming = Incoming {
        method,
        path,
        query,
        params,
        headers,
        non_form_body: !is_form && !body_text.trim().is_empty(),
    };
    let index = {
        let mut state = shared.state();
        state.requests.push(RecordedRequest {
            method: incoming.method.clone(),
            path: incoming.path.clone(),
            query: incoming.query.clone(),
            params: incoming.params.clone(),
            headers: incoming.headers.clone(),
            status: 0,
        });
        state.requests.len() - 1
    };

    let answer = if incoming.path.starts_with("/v1/") {
        let blocking = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || api(&blocking, &incoming))
            .await
            .unwrap_or_else(|e| {
                Answer::json(
                    500,
                    &json!({ "error": { "type": "api_error", "message": e.to_string() } }),
                )
            })
    } else {
        let blocking = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || pages(&blocking, &incoming))
            .await
            .unwrap_or_else(|e| {
                Answer::html(
                    500,
                    format!("internal error: {}", html_escape(&e.to_string())),
                )
            })
    };

    if let Some(recorded) = shared.state().requests.get_mut(index) {
        recorded.status = answer.status;
    }
    answer.into_response()
}

// ---------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------

fn api(shared: &Shared, req: &Incoming) -> Answer {
    let request_id = shared.ids.make("req_", 14);
    let version = req
        .header("stripe-version")
        .unwrap_or(&shared.config.api_version)
        .to_owned();
    let idempotency_key = req.header("idempotency-key").map(str::to_owned);
    let mut answer = api_answer(shared, req, &request_id, idempotency_key.as_deref());
    answer.headers.push(("Request-Id", request_id));
    answer.headers.push(("Stripe-Version", version));
    if let Some(key) = idempotency_key {
        answer.headers.push(("Idempotency-Key", key));
    }
    answer
}

fn api_answer(
    shared: &Shared,
    req: &Incoming,
    request_id: &str,
    idempotency_key: Option<&str>,
) -> Answer {
    if let Err(e) = authenticate(shared, req) {
        return e.answer();
    }
    if let Some(status) = take_injected_failure(shared, req) {
        let kind = if status >= 500 {
            "api_error"
        } else {
            "invalid_request_error"
        };
        return Answer::json(
            status,
            &json!({ "error": { "type": kind, "message": format!("Injected failure ({status}) from the fake Stripe.") } }),
        );
    }
    if req.non_form_body {
        return ApiError::invalid(
            "Invalid request: Stripe takes parameters as application/x-www-form-urlencoded, \
             and this body is not.",
            None,
        )
        .answer();
    }

    // Idempotent POSTs: a saved answer is replayed, whatever happened since.
    let idempotency_key = idempotency_key.filter(|_| req.method == "POST");
    if let Some(key) = idempotency_key {
        let mut state = shared.state();
        if state.idempotent_in_flight.contains(key) {
            return Answer::json(
                409,
                &json!({ "error": {
                    "type": "idempotency_error",
                    "message": format!(
                        "There is currently another in-progress request using this \
                         Idempotency-Key (that probably means you submitted twice, and the other \
                         request is still going through): {key}. Please try again later."
                    ),
                }}),
            );
        }
        if let Some(saved) = state.idempotent.get(key) {
            if saved.method != req.method || saved.path != req.path || saved.params != req.params {
                return Answer::json(
                    400,
                    &json!({ "error": {
                        "type": "idempotency_error",
                        "message": format!(
                            "Keys for idempotent requests can only be used with the same parameters \
                             they were first used with. Try using a key other than '{key}' if you \
                             meant to execute a different request."
                        ),
                    }}),
                );
            }
            let mut answer = Answer::json(saved.status, &Value::Null);
            answer.body = saved.body.clone();
            answer
                .headers
                .push(("Idempotent-Replayed", "true".to_owned()));
            return answer;
        }
        state.idempotent_in_flight.insert(key.to_owned());
    }

    let info = RequestInfo {
        id: Some(request_id.to_owned()),
        idempotency_key: idempotency_key.map(str::to_owned),
    };
    let result = route(shared, req, &info);
    let (answer, events) = match result {
        Ok((object, events)) => (Answer::json(200, &object), events),
        Err(e) => (e.answer(), Vec::new()),
    };
    if let Some(key) = idempotency_key {
        shared.state().idempotent_in_flight.remove(key);
    }
    if let Some(key) = idempotency_key
        && answer.status == 200
    {
        shared.state().idempotent.insert(
            key.to_owned(),
            SavedAnswer {
                method: req.method.clone(),
                path: req.path.clone(),
                params: req.params.clone(),
                status: answer.status,
                body: answer.body.clone(),
            },
        );
    }
    shared.dispatch(&events);
    answer
}

fn authenticate(shared: &Shared, req: &Incoming) -> Result<(), ApiError> {
    let unauthorized = |message: String| ApiError {
        status: 401,
        ..ApiError::invalid(message, None)
    };
    let Some(auth) = req.header("authorization") else {
        return Err(unauthorized(
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
             YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, \
             or we can help at https://support.stripe.com/."
                .to_owned(),
        ));
    };
    let key = if let Some(token) = auth.strip_prefix("Bearer ") {
        token.trim().to_owned()
    } else if let Some(basic) = auth.strip_prefix("Basic ") {
        let decoded = STANDARD.decode(basic.trim()).unwrap_or_default();
        let text = String::from_utf8_lossy(&decoded).into_owned();
        text.split(':').next().unwrap_or("").to_owned()
    } else {
        return Err(unauthorized(
            "Invalid authorization header: use 'Authorization: Bearer YOUR_SECRET_KEY'.".to_owned(),
        ));
    };
    if key == shared.config.api_key {
        return Ok(());
    }
    if key.starts_with("pk_") {
        return Err(unauthorized(
            "This API call cannot be made with a publishable API key. Please use a secret API \
             key."
                .to_owned(),
        ));
    }
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let prefix: String = key.chars().take(8).collect();
    Err(unauthorized(format!(
        "Invalid API Key provided: {prefix}****{tail}"
    )))
}

fn take_injected_failure(shared: &Shared, req: &Incoming) -> Option<u16> {
    let mut state = shared.state();
    let position = state.injected.iter().position(|f| {
        f.method == req.method
            && match f.path.strip_suffix('*') {
                Some(prefix) => req.path.starts_with(prefix),
                None => f.path == req.path,
            }
    })?;
    let failure = &mut state.injected[position];
    let status = failure.status;
    failure.remaining = failure.remaining.saturating_sub(1);
    if failure.remaining == 0 {
        state.injected.remove(position);
    }
    Some(status)
}

type Routed = Result<(Value, Vec<String>), ApiError>;

fn route(shared: &Shared, req: &Incoming, info: &RequestInfo) -> Routed {
    let segments: Vec<&str> = req
        .path
        .trim_start_matches("/v1/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let params = if req.method == "GET" {
        &req.query
    } else {
        &req.params
    };
    let form = nest(params);
    match (req.method.as_str(), segments.as_slice()) {
        ("POST", ["customers"]) => create_customer(shared, &form),
        ("GET", ["customers", id]) => retrieve(
            shared,
            &form,
            |s| s.customers.get(*id).cloned(),
            "customer",
            id,
        ),
        ("POST", ["customers", id]) => update_customer(shared, id, &form),
        ("POST", ["checkout", "sessions"]) => create_checkout_session(shared, &form),
        ("GET", ["checkout", "sessions", id]) => retrieve_checkout_session(shared, id, &form),
        ("GET", ["checkout", "sessions", id, "line_items"]) => {
            check_params(
                &form,
                &["expand", "limit", "starting_after", "ending_before"],
                &[],
            )?;
            let state = shared.state();
            let session = state
                .sessions
                .get(*id)
                .ok_or_else(|| ApiError::no_such("checkout.session", id))?;
            Ok((line_items_list(shared, id, session), Vec::new()))
        }
        ("POST", ["checkout", "sessions", id, "expire"]) => {
            expire_checkout_session(shared, id, &form, info)
        }
        ("POST", ["billing_portal", "sessions"]) => create_portal_session(shared, &form),
        ("GET", ["subscriptions", id]) => retrieve_subscription(shared, id, &form),
        ("POST", ["subscriptions", id]) => update_subscription(shared, id, &form, info),
        ("DELETE", ["subscriptions", id]) => cancel_subscription(shared, id, &form, info),
        ("GET", ["prices", id]) => {
            check_params(&form, &["expand"], &[])?;
            let price = shared
                .price(id)
                .ok_or_else(|| ApiError::no_such("price", id))?;
            Ok((price_json(price), Vec::new()))
        }
        _ => Err(ApiError {
            status: 404,
            ..ApiError::invalid(
                format!(
                    "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we \
                     can help at https://support.stripe.com/.",
                    req.method, req.path
                ),
                None,
            )
        }),
    }
}

/// Rejects top-level parameters that are neither modelled nor knowingly
/// ignored, as Stripe rejects unknown ones.
fn check_params(form: &Value, modelled: &[&str], ignored: &[&str]) -> Result<(), ApiError> {
    if let Some(map) = form.as_object() {
        for key in map.keys() {
            if !modelled.contains(&key.as_str()) && !ignored.contains(&key.as_str()) {
                return Err(ApiError::unknown_param(key));
            }
        }
    }
    Ok(())
}

fn expansions(form: &Value) -> Vec<String> {
    list_of(&form["expand"])
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn check_expansions(form: &Value, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    let wanted = expansions(form);
    for e in &wanted {
        if !allowed.contains(&e.as_str()) {
            return Err(ApiError::invalid(
                format!("This property cannot be expanded ({e})."),
                Some("expand"),
            ));
        }
    }
    Ok(wanted)
}

fn retrieve(
    shared: &Shared,
    form: &Value,
    find: impl FnOnce(&State) -> Option<Value>,
    what: &str,
    id: &str,
) -> Routed {
    check_params(form, &["expand"], &[])?;
    check_expansions(form, &[])?;
    let found = find(&shared.state());
    found
        .map(|v| (v, Vec::new()))
        .ok_or_else(|| ApiError::no_such(what, id))
}

fn str_param<'a>(form: &'a Value, key: &str) -> Option<&'a str> {
    form.get(key).and_then(Value::as_str)
}

fn bool_param(form: &Value, key: &str) -> Result<Option<bool>, ApiError> {
    match form.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(other) => Err(ApiError::invalid(
            format!(
                "Invalid boolean: {}",
                other.as_str().unwrap_or("(an object)")
            ),
            Some(key),
        )),
    }
}

/// `metadata[k]=v` pairs, checked against Stripe's limits; an empty value
/// means "remove the key" (Stripe's convention), kept here as `Null`.
fn metadata_param(form: &Value, key: &str) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    match form.get(key) {
        None => {}
        // `metadata=` (empty) clears all keys on update.
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::Object(map)) => {
            if map.len() > 50 {
                return Err(ApiError::invalid(
                    "Metadata can have at most 50 keys.",
                    Some(key),
                ));
            }
            for (k, v) in map {
                let Some(v) = v.as_str() else {
                    return Err(ApiError::invalid(
                        format!("Invalid value for {key}[{k}]: metadata values are strings."),
                        Some(&format!("{key}[{k}]")),
                    ));
                };
                if k.chars().count() > 40 {
                    return Err(ApiError::invalid(
                        format!("Metadata keys can be at most 40 characters ('{k}')."),
                        Some(&format!("{key}[{k}]")),
                    ));
                }
                if v.chars().count() > 500 {
                    return Err(ApiError::invalid(
                        format!("Metadata values can be at most 500 characters ({key}[{k}])."),
                        Some(&format!("{key}[{k}]")),
                    ));
                }
                let value = if v.is_empty() { Value::Null } else { json!(v) };
                out.insert(k.clone(), value);
            }
        }
        Some(_) => return Err(ApiError::invalid("Invalid hash", Some(key))),
    }
    Ok(out)
}

/// Applies a metadata update (`Null` removes a key).
fn merge_metadata(target: &mut Value, update: Map<String, Value>) {
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("just made an object");
    for (k, v) in update {
        if v.is_null() {
            map.remove(&k);
        } else {
            map.insert(k, v);
        }
    }
}

fn fresh_metadata(update: Map<String, Value>) -> Value {
    let mut value = json!({});
    merge_metadata(&mut value, update);
    value
}

// --- customers ---------------------------------------------------------------

const CUSTOMER_PARAMS: &[&str] = &[
    "description",
    "email",
    "expand",
    "metadata",
    "name",
    "phone",
];
const CUSTOMER_IGNORED: &[&str] = &[
    "address",
    "invoice_settings",
    "preferred_locales",
    "shipping",
    "tax",
    "tax_exempt",
];

fn create_customer(shared: &Shared, form: &Value) -> Routed {
    check_params(form, CUSTOMER_PARAMS, CUSTOMER_IGNORED)?;
    check_expansions(form, &[])?;
    let metadata = metadata_param(form, "metadata")?;
    let email = str_param(form, "email").filter(|s| !s.is_empty());
    if let Some(email) = email {
        validate_email(email, "email")?;
    }
    let mut state = shared.state();
    let customer = new_customer(
        shared,
        email,
        str_param(form, "name").filter(|s| !s.is_empty()),
        fresh_metadata(metadata),
    );
    let mut customer = customer;
    if let Some(d) = str_param(form, "description") {
        customer["description"] = json!(d);
    }
    if let Some(p) = str_param(form, "phone") {
        customer["phone"] = json!(p);
    }
    let id = customer["id"]
        .as_str()
        .expect("customers have ids")
        .to_owned();
    state.customers.insert(id, customer.clone());
    Ok((customer, Vec::new()))
}

fn update_customer(shared: &Shared, id: &str, form: &Value) -> Routed {
    check_params(form, CUSTOMER_PARAMS, CUSTOMER_IGNORED)?;
    check_expansions(form, &[])?;
    let metadata = metadata_param(form, "metadata")?;
    if let Some(email) = str_param(form, "email").filter(|s| !s.is_empty()) {
        validate_email(email, "email")?;
    }
    let mut state = shared.state();
    let customer = state
        .customers
        .get_mut(id)
        .ok_or_else(|| ApiError::no_such("customer", id))?;
    for key in ["email", "name", "description", "phone"] {
        if let Some(v) = str_param(form, key) {
            customer[key] = if v.is_empty() { Value::Null } else { json!(v) };
        }
    }
    if str_param(form, "metadata") == Some("") {
        customer["metadata"] = json!({});
    }
    merge_metadata(&mut customer["metadata"], metadata);
    Ok((customer.clone(), Vec::new()))
}

fn validate_email(email: &str, param: &str) -> Result<(), ApiError> {
    let ok = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !email.contains(' ')
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError {
            code: Some("email_invalid"),
            ..ApiError::invalid(format!("Invalid email address: {email}"), Some(param))
        })
    }
}

fn new_customer(
    shared: &Shared,
    email: Option<&str>,
    name: Option<&str>,
    metadata: Value,
) -> Value {
    let id = shared.ids.make("cus_", 14);
    let prefix: String = shared.ids.make("", 8).to_ascii_uppercase();
    json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": unix_now(),
        "currency": null,
        "customer_account": null,
        "default_source": null,
        "delinquent": false,
        "description": null,
        "discount": null,
        "email": email,
        "invoice_prefix": prefix,
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": null,
            "footer": null,
            "rendering_options": null,
        },
        "livemode": false,
        "metadata": metadata,
        "name": name,
        "next_invoice_sequence": 1,
        "phone": null,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null,
    })
}

// --- checkout sessions ---------------------------------------------------------

const SESSION_PARAMS: &[&str] = &[
    "cancel_url",
    "client_reference_id",
    "customer",
    "customer_email",
    "expand",
    "expires_at",
    "line_items",
    "metadata",
    "mode",
    "subscription_data",
    "success_url",
    "ui_mode",
];
/// Accepted and recorded, without effect on what the fake does.
const SESSION_IGNORED: &[&str] = &[
    "allow_promotion_codes",
    "automatic_tax",
    "billing_address_collection",
    "consent_collection",
    "currency",
    "custom_text",
    "customer_update",
    "locale",
    "payment_method_collection",
    "payment_method_types",
    "phone_number_collection",
    "submit_type",
    "tax_id_collection",
];

fn create_checkout_session(shared: &Shared, form: &Value) -> Routed {
    check_params(form, SESSION_PARAMS, SESSION_IGNORED)?;
    let expand = check_expansions(form, &["line_items", "customer"])?;
    let mode = str_param(form, "mode").ok_or_else(|| ApiError::missing("mode"))?;
    match mode {
        "subscription" => {}
        "payment" | "setup" => {
            return Err(ApiError::invalid_value(
                "mode",
                format!(
                    "The fake Stripe models only mode=subscription (got {mode}); extend \
                     tests/src/fake_stripe.rs if the issuer needs it."
                ),
            ));
        }
        other => {
            return Err(ApiError::invalid_value(
                "mode",
                format!(
                    "Invalid mode: must be one of payment, setup, or subscription (got {other})"
                ),
            ));
        }
    }
    if let Some(ui) = str_param(form, "ui_mode")
        && ui != "hosted_page"
    {
        return Err(ApiError::invalid_value(
            "ui_mode",
            format!(
                "Invalid ui_mode: must be one of elements, embedded_page, or hosted_page \
                     (got {ui}); the fake serves only hosted_page"
            ),
        ));
    }
    for url_param in ["success_url", "cancel_url"] {
        if let Some(url) = str_param(form, url_param)
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ApiError::invalid_value(
                url_param,
                format!("Not a valid URL: {url_param} must be an absolute http(s) URL"),
            ));
        }
    }
    if let Some(reference) = str_param(form, "client_reference_id")
        && reference.chars().count() > 200
    {
        return Err(ApiError::invalid_value(
            "client_reference_id",
            "client_reference_id can be at most 200 characters",
        ));
    }
    let customer_id = str_param(form, "customer").filter(|s| !s.is_empty());
    let customer_email = str_param(form, "customer_email").filter(|s| !s.is_empty());
    if customer_id.is_some() && customer_email.is_some() {
        return Err(ApiError::invalid(
            "You may only specify one of these parameters: customer, customer_email.",
            Some("customer_email"),
        ));
    }
    if let Some(email) = customer_email {
        validate_email(email, "customer_email")?;
    }
    let metadata = fresh_metadata(metadata_param(form, "metadata")?);

    // Line items: known recurring prices, all on one interval.
    let items = list_of(&form["line_items"]);
    if items.is_empty() {
        return Err(ApiError::missing("line_items"));
    }
    let mut line_items = Vec::new();
    let mut interval: Option<(Interval, u32)> = None;
    for (i, item) in items.iter().enumerate() {
        let price_param = format!("line_items[{i}][price]");
        let price_id = item
            .get("price")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::missing(&price_param))?;
        let price = shared
            .price(price_id)
            .ok_or_else(|| ApiError::no_such_param("price", price_id, &price_param))?;
        let quantity_param = format!("line_items[{i}][quantity]");
        let quantity = item
            .get("quantity")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::missing(&quantity_param))?;
        let quantity: u64 = quantity.parse().ok().filter(|q| *q >= 1).ok_or_else(|| {
            ApiError::invalid_value(&quantity_param, format!("Invalid integer: {quantity}"))
        })?;
        let this = (price.interval, price.interval_count);
        if interval.is_some_and(|i| i != this) {
            return Err(ApiError::invalid(
                "Checkout does not support multiple prices with different billing intervals.",
                Some(&price_param),
            ));
        }
        interval = Some(this);
        line_items.push((price.id.clone(), quantity));
    }

    let subscription_data = &form["subscription_data"];
    let trial_days = match subscription_data
        .get("trial_period_days")
        .and_then(Value::as_str)
    {
        None | Some("") => None,
        Some(days) => Some(
            days.parse::<u32>()
                .ok()
                .filter(|d| (1..=730).contains(d))
                .ok_or_else(|| {
                    ApiError::invalid_value(
                        "subscription_data[trial_period_days]",
                        format!("trial_period_days must be an integer from 1 to 730 (got {days})"),
                    )
                })?,
        ),
    };
    let subscription_metadata = metadata_param(subscription_data, "metadata")?;

    let now = unix_now();
    let expires_at = match str_param(form, "expires_at") {
        None => now + SESSION_LIFETIME,
        Some(t) => {
            let t: i64 = t.parse().map_err(|_| {
                ApiError::invalid_value("expires_at", format!("Invalid integer: {t}"))
            })?;
            if t < now + 30 * 60 || t > now + SESSION_LIFETIME {
                return Err(ApiError::invalid_value(
                    "expires_at",
                    "expires_at must be between 30 minutes and 24 hours from now",
                ));
            }
            t
        }
    };

    let mut state = shared.state();
    if let Some(id) = customer_id
        && !state.customers.contains_key(id)
    {
        return Err(ApiError::no_such_param("customer", id, "customer"));
    }
    let id = format!("cs_test_{}", shared.ids.make("", 56));
    let (subtotal, currency) =
        line_items
            .iter()
            .fold((0, String::from("usd")), |(sum, _), (price_id, qty)| {
                let price = shared.price(price_id).expect("checked above");
                let qty = i64::try_from(*qty).unwrap_or(i64::MAX);
                (sum + price.unit_amount * qty, price.currency.clone())
            });
    let due_now = if trial_days.is_some() { 0 } else { subtotal };
    let object = merge_objects([
        json!({
            "id": id,
            "object": "checkout.session",
            "adaptive_pricing": null,
            "after_expiration": null,
            "allow_promotion_codes": null,
            "amount_subtotal": due_now,
            "amount_total": due_now,
            "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
            "billing_address_collection": null,
            "cancel_url": str_param(form, "cancel_url"),
            "client_reference_id": str_param(form, "client_reference_id"),
            "client_secret": null,
            "collected_information": null,
            "consent": null,
            "consent_collection": null,
            "created": now,
            "currency": currency,
            "custom_fields": [],
            "custom_text": {
                "after_submit": null,
                "shipping_address": null,
                "submit": null,
                "terms_of_service_acceptance": null,
            },
            "customer": customer_id,
            "customer_creation": if customer_id.is_some() { Value::Null } else { json!("always") },
            "customer_details": null,
            "customer_email": customer_email,
            "discounts": [],
        }),
        json!({
            "expires_at": expires_at,
            "invoice": null,
            "invoice_creation": null,
            "livemode": false,
            "locale": null,
            "metadata": metadata,
            "mode": "subscription",
            "payment_intent": null,
            "payment_link": null,
        }),
        json!({
            "payment_method_collection": "always",
            "payment_method_configuration_details": null,
            "payment_method_options": { "card": { "request_three_d_secure": "automatic" } },
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "phone_number_collection": { "enabled": false },
            "recovered_from": null,
            "saved_payment_method_options": null,
            "setup_intent": null,
            "shipping_address_collection": null,
            "shipping_cost": null,
            "shipping_options": [],
            "status": "open",
            "submit_type": null,
            "subscription": null,
            "success_url": str_param(form, "success_url"),
            "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
            "ui_mode": "hosted_page",
            "url": format!("{}/pay/{id}", shared.base_url()),
            "wallet_options": null,
        }),
    ]);
    let session = Session {
        object,
        line_items,
        trial_days,
        subscription_metadata,
    };
    let answer = expand_session(shared, &state, &id, &session, &expand);
    state.session_order.push(id.clone());
    state.sessions.insert(id, session);
    Ok((answer, Vec::new()))
}

fn retrieve_checkout_session(shared: &Shared, id: &str, form: &Value) -> Routed {
    check_params(form, &["expand"], &[])?;
    let expand = check_expansions(form, &["line_items", "customer", "subscription", "invoice"])?;
    let mut state = shared.state();
    expire_if_due(&mut state, id);
    let session = state
        .sessions
        .get(id)
        .ok_or_else(|| ApiError::no_such("checkout.session", id))?;
    Ok((
        expand_session(shared, &state, id, session, &expand),
        Vec::new(),
    ))
}

fn expire_checkout_session(shared: &Shared, id: &str, form: &Value, info: &RequestInfo) -> Routed {
    check_params(form, &["expand"], &[])?;
    check_expansions(form, &[])?;
    let mut state = shared.state();
    let session = state
        .sessions
        .get_mut(id)
        .ok_or_else(|| ApiError::no_such("checkout.session", id))?;
    if session.object["status"] != "open" {
        return Err(ApiError::invalid(
            format!(
                "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout \
                 Session has a status of \"{}\".",
                session.object["status"].as_str().unwrap_or("")
            ),
            None,
        ));
    }
    session.object["status"] = json!("expired");
    session.object["url"] = Value::Null;
    let object = session.object.clone();
    let event = state.new_event(
        shared,
        "checkout.session.expired",
        object.clone(),
        None,
        info.clone(),
        None,
    );
    Ok((object, vec![event]))
}

/// Sessions past `expires_at` are expired on sight (Stripe expires them in
/// the background; nothing here runs in the background).
fn expire_if_due(state: &mut State, id: &str) {
    if let Some(session) = state.sessions.get_mut(id) {
        let due = session.object["expires_at"]
            .as_i64()
            .is_some_and(|t| t <= unix_now());
        if due && session.object["status"] == "open" {
            session.object["status"] = json!("expired");
            session.object["url"] = Value::Null;
        }
    }
}

fn expand_session(
    shared: &Shared,
    state: &State,
    id: &str,
    session: &Session,
    expand: &[String],
) -> Value {
    let mut object = session.object.clone();
    for e in expand {
        match e.as_str() {
            "line_items" => object["line_items"] = line_items_list(shared, id, session),
            "customer" => expand_field(&mut object, "customer", &state.customers),
            "subscription" => expand_field(&mut object, "subscription", &state.subscriptions),
            "invoice" => expand_field(&mut object, "invoice", &state.invoices),
            _ => {}
        }
    }
    object
}

fn expand_field(object: &mut Value, field: &str, from: &HashMap<String, Value>) {
    if let Some(found) = object[field].as_str().and_then(|id| from.get(id)) {
        object[field] = found.clone();
    }
}

fn line_items_list(shared: &Shared, session_id: &str, session: &Session) -> Value {
    let data: Vec<Value> = session
        .line_items
        .iter()
        .enumerate()
        .map(|(i, (price_id, quantity))| {
            let price = shared.price(price_id).expect("sessions name known prices");
            let amount = price.unit_amount * i64::try_from(*quantity).unwrap_or(i64::MAX);
            json!({
                "id": format!("li_{}{i}", session_id.trim_start_matches("cs_test_").chars().take(20).collect::<String>()),
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": price.currency,
                "description": price.product_name,
                "price": price_json(price),
                "quantity": quantity,
            })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "url": format!("/v1/checkout/sessions/{session_id}/line_items"),
    })
}

// --- billing portal ------------------------------------------------------------

fn create_portal_session(shared: &Shared, form: &Value) -> Routed {
    check_params(
        form,
        &["customer", "expand", "return_url"],
        &["configuration", "flow_data", "locale", "on_behalf_of"],
    )?;
    check_expansions(form, &[])?;
    let customer = str_param(form, "customer")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::missing("customer"))?;
    let return_url = str_param(form, "return_url");
    if let Some(url) = return_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ApiError::invalid_value(
            "return_url",
            "Not a valid URL: return_url must be an absolute http(s) URL",
        ));
    }
    let mut state = shared.state();
    if !state.customers.contains_key(customer) {
        return Err(ApiError::no_such_param("customer", customer, "customer"));
    }
    let id = shared.ids.make("bps_", 24);
    let object = json!({
        "id": id,
        "object": "billing_portal.session",
        "configuration": "bpc_fakeDefaultConfiguration",
        "created": unix_now(),
        "customer": customer,
        "customer_account": null,
        "flow": null,
        "livemode": false,
        "locale": null,
        "on_behalf_of": null,
        "return_url": return_url,
        "url": format!("{}/p/session/{id}", shared.base_url()),
    });
    state.portal_sessions.insert(id, object.clone());
    Ok((object, Vec::new()))
}

// --- subscriptions -------------------------------------------------------------

fn retrieve_subscription(shared: &Shared, id: &str, form: &Value) -> Routed {
    check_params(form, &["expand"], &[])?;
    let expand = check_expansions(form, &["customer", "latest_invoice"])?;
    let state = shared.state();
    let mut sub = state
        .subscriptions
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::no_such("subscription", id))?;
    for e in &expand {
        match e.as_str() {
            "customer" => expand_field(&mut sub, "customer", &state.customers),
            "latest_invoice" => expand_field(&mut sub, "latest_invoice", &state.invoices),
            _ => {}
        }
    }
    Ok((sub, Vec::new()))
}

/// A change to one subscription item (`items[i]`).
struct ItemChange {
    index: usize,
    id: Option<String>,
    price: Option<String>,
    quantity: Option<u64>,
    deleted: bool,
}

/// What an update asks for; shared by the API and the portal page.
#[derive(Default)]
struct SubscriptionUpdate {
    cancel_at_period_end: Option<bool>,
    items: Vec<ItemChange>,
    metadata: Map<String, Value>,
    clear_metadata: bool,
}

fn update_subscription(shared: &Shared, id: &str, form: &Value, info: &RequestInfo) -> Routed {
    check_params(
        form,
        &["cancel_at_period_end", "expand", "items", "metadata"],
        &["payment_behavior", "proration_behavior", "proration_date"],
    )?;
    check_expansions(form, &[])?;
    if let Some(behavior) = str_param(form, "proration_behavior")
        && !["always_invoice", "create_prorations", "none"].contains(&behavior)
    {
        return Err(ApiError::invalid_value(
            "proration_behavior",
            format!(
                "Invalid proration_behavior: must be one of always_invoice, create_prorations, \
                     or none (got {behavior})"
            ),
        ));
    }
    let mut update = SubscriptionUpdate {
        cancel_at_period_end: bool_param(form, "cancel_at_period_end")?,
        metadata: metadata_param(form, "metadata")?,
        clear_metadata: str_param(form, "metadata") == Some(""),
        ..SubscriptionUpdate::default()
    };
    for (index, item) in list_of(&form["items"]).into_iter().enumerate() {
        let quantity = match item.get("quantity").and_then(Value::as_str) {
            None => None,
            Some(q) => Some(q.parse::<u64>().ok().filter(|q| *q >= 1).ok_or_else(|| {
                ApiError::invalid_value(
                    &format!("items[{index}][quantity]"),
                    format!("Invalid integer: {q}"),
                )
            })?),
        };
        update.items.push(ItemChange {
            index,
            id: item.get("id").and_then(Value::as_str).map(str::to_owned),
            price: item.get("price").and_then(Value::as_str).map(str::to_owned),
            quantity,
            deleted: bool_param(item, "deleted")?.unwrap_or(false),
        });
    }
    let mut state = shared.state();
    apply_subscription_update(shared, &mut state, id, update, info)
}

fn apply_subscription_update(
    shared: &Shared,
    state: &mut State,
    id: &str,
    update: SubscriptionUpdate,
    info: &RequestInfo,
) -> Routed {
    let before = state
        .subscriptions
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::no_such("subscription", id))?;
    if before["status"] == "canceled" {
        return Err(ApiError::invalid(
            "A canceled subscription can only update its cancellation_details and metadata.",
            None,
        ));
    }
    let now = unix_now();
    let mut sub = before.clone();
    let customer = sub["customer"].as_str().unwrap_or("").to_owned();
    let mut events = Vec::new();
    let mut new_period: Option<(i64, i64)> = None;

    for change in &update.items {
        let price = match &change.price {
            None => None,
            Some(price_id) => Some(shared.price(price_id).ok_or_else(|| {
                ApiError::no_such_param(
                    "price",
                    price_id,
                    &format!("items[{}][price]", change.index),
                )
            })?),
        };
        let items = sub["items"]["data"]
            .as_array_mut()
            .expect("subscriptions have items");
        match &change.id {
            Some(item_id) => {
                let position = items
                    .iter()
                    .position(|i| i["id"] == item_id.as_str())
                    .ok_or_else(|| {
                        ApiError::no_such_param(
                            "subscription item",
                            item_id,
                            &format!("items[{}][id]", change.index),
                        )
                    })?;
                if change.deleted {
                    items.remove(position);
                    continue;
                }
                let item = &mut items[position];
                if let Some(price) = price {
                    let old_interval = item["price"]["recurring"]["interval"].clone();
                    item["price"] = price_json(price);
                    item["plan"] = plan_json(price);
                    // A new interval restarts the billing cycle now.
                    if item["price"]["recurring"]["interval"] != old_interval {
                        let end = price.interval.add_to(now, price.interval_count);
                        new_period = Some((now, end));
                    }
                }
                if let Some(q) = change.quantity {
                    item["quantity"] = json!(q);
                }
            }
            None => {
                let price = price
                    .ok_or_else(|| ApiError::missing(&format!("items[{}][price]", change.index)))?;
                let (start, end) = current_period(&before);
                items.push(subscription_item_json(
                    shared,
                    id,
                    price,
                    change.quantity.unwrap_or(1),
                    start,
                    end,
                ));
            }
        }
    }
    if sub["items"]["data"].as_array().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid(
            "A subscription must have at least one active plan.",
            Some("items"),
        ));
    }
    // A trial keeps its period whatever the price.
    if before["status"] == "trialing" {
        new_period = None;
    }
    if let Some((start, end)) = new_period {
        for item in sub["items"]["data"]
            .as_array_mut()
            .expect("items")
            .iter_mut()
        {
            item["current_period_start"] = json!(start);
            item["current_period_end"] = json!(end);
        }
        sub["billing_cycle_anchor"] = json!(start);
    }
    if let Some(cancel) = update.cancel_at_period_end {
        sub["cancel_at_period_end"] = json!(cancel);
        if cancel {
            let (_, end) = current_period(&sub);
            sub["cancel_at"] = json!(end);
            sub["canceled_at"] = json!(now);
            sub["cancellation_details"] =
                json!({ "comment": null, "feedback": null, "reason": "cancellation_requested" });
        } else {
            sub["cancel_at"] = Value::Null;
            sub["canceled_at"] = Value::Null;
            sub["cancellation_details"] =
                json!({ "comment": null, "feedback": null, "reason": null });
        }
    }
    if update.clear_metadata {
        sub["metadata"] = json!({});
    }
    merge_metadata(&mut sub["metadata"], update.metadata);

    // A billing-cycle restart is charged at once, as Stripe does.
    if let Some((start, end)) = new_period {
        let invoice = invoice_json(
            shared,
            state,
            &sub,
            &customer,
            "subscription_update",
            (start, end),
            (start, start),
            true,
        );
        let invoice_id = invoice["id"]
            .as_str()
            .expect("invoices have ids")
            .to_owned();
        sub["latest_invoice"] = json!(invoice_id);
        state.invoices.insert(invoice_id, invoice);
    }
    let previous = previous_attributes(&before, &sub);
    state.subscriptions.insert(id.to_owned(), sub.clone());
    if let Some(previous) = previous {
        events.push(state.new_event(
            shared,
            "customer.subscription.updated",
            sub.clone(),
            Some(previous),
            info.clone(),
            None,
        ));
        if new_period.is_some() {
            let invoice_id = sub["latest_invoice"].as_str().unwrap_or("").to_owned();
            let invoice = state.invoices[&invoice_id].clone();
            events.push(state.new_event(shared, "invoice.paid", invoice, None, info.clone(), None));
        }
    }
    Ok((sub, events))
}

fn cancel_subscription(shared: &Shared, id: &str, form: &Value, info: &RequestInfo) -> Routed {
    check_params(
        form,
        &["cancellation_details", "expand"],
        &["invoice_now", "prorate"],
    )?;
    check_expansions(form, &[])?;
    let mut state = shared.state();
    let sub = state
        .subscriptions
        .get_mut(id)
        .ok_or_else(|| ApiError::no_such("subscription", id))?;
    if sub["status"] == "canceled" {
        return Err(ApiError::invalid(
            format!("This subscription ({id}) has already been canceled."),
            None,
        ));
    }
    let now = unix_now();
    let details = &form["cancellation_details"];
    sub["status"] = json!("canceled");
    sub["canceled_at"] = json!(now);
    sub["ended_at"] = json!(now);
    sub["cancellation_details"] = json!({
        "comment": details.get("comment").and_then(Value::as_str),
        "feedback": details.get("feedback").and_then(Value::as_str),
        "reason": "cancellation_requested",
    });
    let sub = sub.clone();
    let event = state.new_event(
        shared,
        "customer.subscription.deleted",
        sub.clone(),
        None,
        info.clone(),
        None,
    );
    Ok((sub, vec![event]))
}

/// The top-level fields of `before` that differ in `after`, with their old
/// values: Stripe's `previous_attributes`. `None` when nothing changed.
fn previous_attributes(before: &Value, after: &Value) -> Option<Value> {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return None;
    };
    let changed: Map<String, Value> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!changed.is_empty()).then_some(Value::Object(changed))
}

/// The first item's period (all items share one here).
fn current_period(sub: &Value) -> (i64, i64) {
    let item = &sub["items"]["data"][0];
    (
        item["current_period_start"].as_i64().unwrap_or(0),
        item["current_period_end"].as_i64().unwrap_or(0),
    )
}

// --- life of a subscription ------------------------------------------------------

fn complete_checkout_locked(
    shared: &Shared,
    state: &mut State,
    session_id: &str,
    form: &CardForm,
) -> Result<(CheckoutCompletion, Vec<String>), ApiError> {
    expire_if_due(state, session_id);
    let session = state
        .sessions
        .get(session_id)
        .ok_or_else(|| ApiError::no_such("checkout.session", session_id))?;
    if session.object["status"] != "open" {
        return Err(ApiError::invalid(
            format!(
                "This Checkout Session is no longer active (status {}).",
                session.object["status"].as_str().unwrap_or("")
            ),
            None,
        ));
    }
    let now = unix_now();
    let line_items = session.line_items.clone();
    let trial_days = session.trial_days;
    let sub_metadata = fresh_metadata(session.subscription_metadata.clone());
    let session_email = session.object["customer_email"].as_str().map(str::to_owned);
    let existing_customer = session.object["customer"].as_str().map(str::to_owned);
    let mut events = Vec::new();

    let customer_id = match existing_customer {
        Some(id) => id,
        None => {
            let email = form.email.clone().or(session_email);
            let customer = new_customer(shared, email.as_deref(), form.name.as_deref(), json!({}));
            let id = customer["id"]
                .as_str()
                .expect("customers have ids")
                .to_owned();
            state.customers.insert(id.clone(), customer.clone());
            events.push(state.new_event(
                shared,
                "customer.created",
                customer,
                None,
                RequestInfo::none(),
                None,
            ));
            id
        }
    };
    let customer = state.customers[&customer_id].clone();

    let sub_id = shared.ids.make("sub_", 24);
    let first_price = shared
        .price(&line_items[0].0)
        .expect("sessions name known prices");
    let (period_end, trial) = match trial_days {
        Some(days) => {
            let end = now + i64::from(days) * 86_400;
            (end, Some((now, end)))
        }
        None => (
            first_price.interval.add_to(now, first_price.interval_count),
            None,
        ),
    };
    let items: Vec<Value> = line_items
        .iter()
        .map(|(price_id, qty)| {
            let price = shared.price(price_id).expect("sessions name known prices");
            subscription_item_json(shared, &sub_id, price, *qty, now, period_end)
        })
        .collect();
    let mut sub = merge_objects([
        json!({
            "id": sub_id,
            "object": "subscription",
            "application": null,
            "application_fee_percent": null,
            "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
            "billing_cycle_anchor": period_end,
            "billing_cycle_anchor_config": null,
            "billing_mode": { "flexible": { "proration_discounts": "included" }, "type": "flexible", "updated_at": now },
            "billing_schedules": [],
            "billing_thresholds": null,
            "cancel_at": null,
            "cancel_at_period_end": false,
            "canceled_at": null,
            "cancellation_details": { "comment": null, "feedback": null, "reason": null },
            "collection_method": "charge_automatically",
            "created": now,
            "currency": first_price.currency,
            "customer": customer_id,
            "customer_account": null,
            "days_until_due": null,
            "default_payment_method": shared.ids.make("pm_", 24),
            "default_source": null,
        }),
        json!({
            "default_tax_rates": [],
            "description": null,
            "discounts": [],
            "ended_at": null,
            "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
            "items": {
                "object": "list",
                "data": items,
                "has_more": false,
                "url": format!("/v1/subscription_items?subscription={sub_id}"),
            },
            "latest_invoice": null,
            "livemode": false,
            "metadata": sub_metadata,
            "next_pending_invoice_item_invoice": null,
            "on_behalf_of": null,
            "pause_collection": null,
            "payment_settings": {
                "payment_method_options": null,
                "payment_method_types": null,
                "save_default_payment_method": "off",
            },
            "pending_invoice_item_interval": null,
            "pending_setup_intent": null,
            "pending_update": null,
            "schedule": null,
            "start_date": now,
            "status": if trial.is_some() { "trialing" } else { "active" },
            "test_clock": null,
            "transfer_data": null,
            "trial_end": trial.map(|t| t.1),
            "trial_settings": { "end_behavior": { "missing_payment_method": "create_invoice" } },
            "trial_start": trial.map(|t| t.0),
        }),
    ]);
    if trial.is_none() {
        sub["billing_cycle_anchor"] = json!(now);
    }
    let invoice = invoice_json(
        shared,
        state,
        &sub,
        &customer_id,
        "subscription_create",
        (now, period_end),
        (now, now),
        true,
    );
    let invoice_id = invoice["id"]
        .as_str()
        .expect("invoices have ids")
        .to_owned();
    sub["latest_invoice"] = json!(invoice_id);
    state.invoices.insert(invoice_id.clone(), invoice.clone());
    state.subscriptions.insert(sub_id.clone(), sub.clone());
    state.subscription_order.push(sub_id.clone());

    let session = state.sessions.get_mut(session_id).expect("checked above");
    let object = &mut session.object;
    object["status"] = json!("complete");
    object["payment_status"] = json!(if trial.is_some() {
        "no_payment_required"
    } else {
        "paid"
    });
    object["customer"] = json!(customer_id);
    object["subscription"] = json!(sub_id);
    object["invoice"] = json!(invoice_id);
    object["url"] = Value::Null;
    object["customer_details"] = json!({
        "address": null,
        "email": form.email.clone().or_else(|| customer["email"].as_str().map(str::to_owned)),
        "name": form.name.clone().or_else(|| customer["name"].as_str().map(str::to_owned)),
        "phone": null,
        "tax_exempt": "none",
        "tax_ids": [],
    });
    let session_object = object.clone();
    let redirect_url = session_object["success_url"]
        .as_str()
        .map(|u| u.replace("{CHECKOUT_SESSION_ID}", session_id));

    events.push(state.new_event(
        shared,
        "customer.subscription.created",
        sub,
        None,
        RequestInfo::none(),
        None,
    ));
    events.push(state.new_event(
        shared,
        "checkout.session.completed",
        session_object,
        None,
        RequestInfo::none(),
        None,
    ));
    events.push(state.new_event(
        shared,
        "invoice.paid",
        invoice,
        None,
        RequestInfo::none(),
        None,
    ));
    Ok((
        CheckoutCompletion {
            redirect_url,
            customer_id,
            subscription_id: sub_id,
            invoice_id,
            event_ids: events.clone(),
        },
        events,
    ))
}

fn renew_locked(
    shared: &Shared,
    state: &mut State,
    sub_id: &str,
    paid: bool,
) -> Result<(Value, Vec<String>), ApiError> {
    let before = state
        .subscriptions
        .get(sub_id)
        .cloned()
        .ok_or_else(|| ApiError::no_such("subscription", sub_id))?;
    if before["status"] == "canceled" {
        return Err(ApiError::invalid(
            format!("subscription {sub_id} is canceled"),
            None,
        ));
    }
    // A subscription set to cancel at the period end ends instead of renewing.
    if before["cancel_at_period_end"] == true {
        let (_, end) = current_period(&before);
        let mut sub = before.clone();
        sub["status"] = json!("canceled");
        sub["ended_at"] = json!(end);
        state.subscriptions.insert(sub_id.to_owned(), sub.clone());
        let event = state.new_event(
            shared,
            "customer.subscription.deleted",
            sub.clone(),
            None,
            RequestInfo::none(),
            None,
        );
        return Ok((sub, vec![event]));
    }
    let (old_start, old_end) = current_period(&before);
    let price_id = before["items"]["data"][0]["price"]["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let price = shared
        .price(&price_id)
        .ok_or_else(|| ApiError::no_such("price", &price_id))?;
    let new_end = price.interval.add_to(old_end, price.interval_count);
    let mut sub = before.clone();
    for item in sub["items"]["data"]
        .as_array_mut()
        .expect("items")
        .iter_mut()
    {
        item["current_period_start"] = json!(old_end);
        item["current_period_end"] = json!(new_end);
    }
    sub["status"] = json!(if paid { "active" } else { "past_due" });
    let customer = sub["customer"].as_str().unwrap_or("").to_owned();
    let mut invoice = invoice_json(
        shared,
        state,
        &sub,
        &customer,
        "subscription_cycle",
        (old_end, new_end),
        (old_start, old_end),
        paid,
    );
    if !paid {
        invoice["next_payment_attempt"] = json!(unix_now() + 3 * 86_400);
    }
    let invoice_id = invoice["id"]
        .as_str()
        .expect("invoices have ids")
        .to_owned();
    sub["latest_invoice"] = json!(invoice_id);
    state.invoices.insert(invoice_id, invoice.clone());
    state.subscriptions.insert(sub_id.to_owned(), sub.clone());
    let previous = previous_attributes(&before, &sub);
    let events = vec![
        state.new_event(
            shared,
            "customer.subscription.updated",
            sub,
            previous,
            RequestInfo::none(),
            None,
        ),
        state.new_event(
            shared,
            if paid {
                "invoice.paid"
            } else {
                "invoice.payment_failed"
            },
            invoice.clone(),
            None,
            RequestInfo::none(),
            None,
        ),
    ];
    Ok((invoice, events))
}

fn recover_payment_locked(
    shared: &Shared,
    state: &mut State,
    sub_id: &str,
) -> Result<(Value, Vec<String>), ApiError> {
    let before = state
        .subscriptions
        .get(sub_id)
        .cloned()
        .ok_or_else(|| ApiError::no_such("subscription", sub_id))?;
    let invoice_id = before["latest_invoice"].as_str().unwrap_or("").to_owned();
    let invoice = state
        .invoices
        .get_mut(&invoice_id)
        .filter(|i| i["status"] == "open")
        .ok_or_else(|| {
            ApiError::invalid(format!("subscription {sub_id} has no open invoice"), None)
        })?;
    let now = unix_now();
    let due = invoice["amount_due"].clone();
    invoice["status"] = json!("paid");
    invoice["paid"] = json!(true);
    invoice["amount_paid"] = due;
    invoice["amount_remaining"] = json!(0);
    invoice["attempt_count"] = json!(invoice["attempt_count"].as_u64().unwrap_or(1) + 1);
    invoice["next_payment_attempt"] = Value::Null;
    invoice["status_transitions"]["paid_at"] = json!(now);
    let invoice = invoice.clone();
    let mut sub = before.clone();
    sub["status"] = json!("active");
    state.subscriptions.insert(sub_id.to_owned(), sub.clone());
    let previous = previous_attributes(&before, &sub);
    let events = vec![
        state.new_event(
            shared,
            "invoice.paid",
            invoice.clone(),
            None,
            RequestInfo::none(),
            None,
        ),
        state.new_event(
            shared,
            "customer.subscription.updated",
            sub,
            previous,
            RequestInfo::none(),
            None,
        ),
    ];
    Ok((invoice, events))
}

// --- objects -------------------------------------------------------------------

fn price_json(price: &Price) -> Value {
    json!({
        "id": price.id,
        "object": "price",
        "active": true,
        "billing_scheme": "per_unit",
        "created": 1_767_225_600,
        "currency": price.currency,
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": price.lookup_key,
        "metadata": price.metadata,
        "nickname": price.nickname,
        "product": price.product,
        "recurring": {
            "interval": price.interval.as_str(),
            "interval_count": price.interval_count,
            "meter": null,
            "trial_period_days": null,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "tiers_mode": null,
        "transform_quantity": null,
        "type": "recurring",
        "unit_amount": price.unit_amount,
        "unit_amount_decimal": price.unit_amount.to_string(),
    })
}

/// The legacy `plan` view of a price, still on subscription items.
fn plan_json(price: &Price) -> Value {
    json!({
        "id": price.id,
        "object": "plan",
        "active": true,
        "amount": price.unit_amount,
        "amount_decimal": price.unit_amount.to_string(),
        "billing_scheme": "per_unit",
        "created": 1_767_225_600,
        "currency": price.currency,
        "interval": price.interval.as_str(),
        "interval_count": price.interval_count,
        "livemode": false,
        "metadata": price.metadata,
        "meter": null,
        "nickname": price.nickname,
        "product": price.product,
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": "licensed",
    })
}

fn subscription_item_json(
    shared: &Shared,
    sub_id: &str,
    price: &Price,
    quantity: u64,
    start: i64,
    end: i64,
) -> Value {
    json!({
        "id": shared.ids.make("si_", 14),
        "object": "subscription_item",
        "billing_thresholds": null,
        "created": unix_now(),
        "current_period_end": end,
        "current_period_start": start,
        "discounts": [],
        "metadata": {},
        "plan": plan_json(price),
        "price": price_json(price),
        "quantity": quantity,
        "subscription": sub_id,
        "tax_rates": [],
    })
}

/// An invoice for `sub`'s items over `service` (the line periods); `period`
/// is the invoice's own `period_start/end`, which for subscription
/// invoices looks back (Stripe's convention).
#[allow(clippy::too_many_arguments)]
fn invoice_json(
    shared: &Shared,
    state: &mut State,
    sub: &Value,
    customer_id: &str,
    billing_reason: &str,
    service: (i64, i64),
    period: (i64, i64),
    paid: bool,
) -> Value {
    let now = unix_now();
    let id = shared.ids.make("in_", 24);
    let sub_id = sub["id"].as_str().unwrap_or("");
    let trialing = sub["status"] == "trialing";
    let customer = state
        .customers
        .get(customer_id)
        .cloned()
        .unwrap_or(Value::Null);
    let currency = sub["currency"].as_str().unwrap_or("usd").to_owned();
    let mut total = 0;
    let lines: Vec<Value> = sub["items"]["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|item| {
            let quantity = item["quantity"].as_i64().unwrap_or(1);
            let unit = if trialing { 0 } else { item["price"]["unit_amount"].as_i64().unwrap_or(0) };
            let amount = unit * quantity;
            total += amount;
            let name = shared
                .price(item["price"]["id"].as_str().unwrap_or(""))
                .map(|p| p.product_name.clone())
                .unwrap_or_default();
            let description = if trialing {
                format!("Trial period for {name}")
            } else {
                format!(
                    "{quantity} × {name} (at {} / {})",
                    money(unit, &currency),
                    item["price"]["recurring"]["interval"].as_str().unwrap_or("")
                )
            };
            json!({
                "id": shared.ids.make("il_", 24),
                "object": "line_item",
                "amount": amount,
                "currency": currency,
                "description": description,
                "discount_amounts": [],
                "discountable": true,
                "discounts": [],
                "invoice": id,
                "livemode": false,
                "metadata": {},
                "parent": {
                    "invoice_item_details": null,
                    "subscription_item_details": {
                        "invoice_item": null,
                        "proration": false,
                        "proration_details": { "credited_items": null },
                        "subscription": sub_id,
                        "subscription_item": item["id"],
                    },
                    "type": "subscription_item_details",
                },
                "period": { "end": service.1, "start": service.0 },
                "pretax_credit_amounts": [],
                "pricing": {
                    "price_details": { "price": item["price"]["id"], "product": item["price"]["product"] },
                    "type": "price_details",
                    "unit_amount_decimal": unit.to_string(),
                },
                "quantity": quantity,
                "quantity_decimal": quantity.to_string(),
                "subscription": null,
                "subtotal": amount,
                "taxes": [],
            })
        })
        .collect();
    state.invoice_count += 1;
    let number = format!(
        "{}-{:04}",
        customer["invoice_prefix"].as_str().unwrap_or("FAKE"),
        state.invoice_count
    );
    let base = shared.base_url();
    merge_objects([
        json!({
            "id": id,
            "object": "invoice",
            "account_country": "US",
            "account_name": shared.config.account_name,
            "account_tax_ids": null,
            "amount_due": total,
            "amount_overpaid": 0,
            "amount_paid": if paid { total } else { 0 },
            "amount_remaining": if paid { 0 } else { total },
            "amount_shipping": 0,
            "application": null,
            "attempt_count": 1,
            "attempted": true,
            "auto_advance": !paid,
            "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null },
            "automatically_finalizes_at": null,
            "billing_reason": billing_reason,
            "collection_method": "charge_automatically",
            "created": now,
            "currency": currency,
            "custom_fields": null,
            "customer": customer_id,
            "customer_account": null,
            "customer_address": null,
            "customer_email": customer["email"],
            "customer_name": customer["name"],
            "customer_phone": null,
            "customer_shipping": null,
            "customer_tax_exempt": "none",
            "customer_tax_ids": [],
            "default_payment_method": null,
            "default_source": null,
            "default_tax_rates": [],
            "description": null,
            "discounts": [],
        }),
        json!({
            "due_date": null,
            "effective_at": now,
            "ending_balance": 0,
            "footer": null,
            "from_invoice": null,
            "hosted_invoice_url": format!("{base}/i/{id}"),
            "invoice_pdf": format!("{base}/i/{id}/pdf"),
            "issuer": { "type": "self" },
            "last_finalization_error": null,
            "latest_revision": null,
            "lines": {
                "object": "list",
                "data": lines,
                "has_more": false,
                "url": format!("/v1/invoices/{id}/lines"),
            },
            "livemode": false,
            "metadata": {},
        }),
        json!({
            "next_payment_attempt": null,
            "number": number,
            "on_behalf_of": null,
            "parent": {
                "quote_details": null,
                "subscription_details": { "metadata": sub["metadata"], "subscription": sub_id },
                "type": "subscription_details",
            },
            "payment_settings": { "default_mandate": null, "payment_method_options": null, "payment_method_types": null },
            "period_end": period.1,
            "period_start": period.0,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": null,
            "rendering": null,
            "shipping_cost": null,
            "shipping_details": null,
            "starting_balance": 0,
            "statement_descriptor": null,
            "status": if paid { "paid" } else { "open" },
            "status_transitions": {
                "finalized_at": now,
                "marked_uncollectible_at": null,
                "paid_at": if paid { Some(now) } else { None },
                "voided_at": null,
            },
            "subtotal": total,
            "subtotal_excluding_tax": total,
            "test_clock": null,
            "total": total,
            "total_discount_amounts": [],
            "total_excluding_tax": total,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": now,
        }),
    ])
}

// ---------------------------------------------------------------------------
// Hosted pages: checkout and billing portal
// ---------------------------------------------------------------------------

/// What the person typed on the checkout page.
struct CardForm {
    email: Option<String>,
    name: Option<String>,
}

fn pages(shared: &Shared, req: &Incoming) -> Answer {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let form: HashMap<String, String> = req.params.iter().cloned().collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["pay", id]) => checkout_page(shared, id, None),
        ("POST", ["pay", id]) => submit_checkout(shared, id, &form),
        ("GET", ["p", "session", id]) => portal_page(shared, id),
        ("POST", ["p", "session", id, action]) => portal_action(shared, id, action, &form),
        _ => Answer::html(404, page("Not found", "<p>There is nothing here.</p>")),
    }
}

fn checkout_page(shared: &Shared, session_id: &str, error: Option<&str>) -> Answer {
    let mut state = shared.state();
    expire_if_due(&mut state, session_id);
    let Some(session) = state.sessions.get(session_id) else {
        return Answer::html(
            404,
            page(
                "Checkout not found",
                "<p>This checkout link is not valid.</p>",
            ),
        );
    };
    let object = &session.object;
    if object["status"] != "open" {
        return Answer::html(
            410,
            page(
                "Checkout closed",
                &format!(
                    "<p id=\"closed\">This checkout session is no longer active ({}).</p>",
                    html_escape(object["status"].as_str().unwrap_or(""))
                ),
            ),
        );
    }
    let mut lines = String::new();
    let mut total = 0;
    let mut currency = String::from("usd");
    for (price_id, qty) in &session.line_items {
        let price = shared.price(price_id).expect("sessions name known prices");
        let amount = price.unit_amount * i64::try_from(*qty).unwrap_or(1);
        total += amount;
        currency.clone_from(&price.currency);
        lines.push_str(&format!(
            "<li class=\"line-item\" data-price=\"{}\">{} × {} — {} per {}</li>",
            html_escape(&price.id),
            qty,
            html_escape(&price.product_name),
            money(amount, &price.currency),
            price.interval.as_str()
        ));
    }
    let due = match session.trial_days {
        Some(days) => format!(
            "<p id=\"trial\">{days} days free, then {} </p>",
            money(total, &currency)
        ),
        None => format!(
            "<p id=\"total\">Total due today: {}</p>",
            money(total, &currency)
        ),
    };
    let email = object["customer_email"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            object["customer"]
                .as_str()
                .and_then(|c| state.customers.get(c))
                .and_then(|c| c["email"].as_str().map(str::to_owned))
        })
        .unwrap_or_default();
    let error = error
        .map(|e| format!("<p id=\"error\" role=\"alert\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    let cancel = object["cancel_url"]
        .as_str()
        .map(|u| {
            format!(
                "<p><a id=\"cancel\" href=\"{}\">← Back to {}</a></p>",
                html_escape(u),
                html_escape(&shared.config.account_name)
            )
        })
        .unwrap_or_default();
    let button = if session.trial_days.is_some() {
        "Start trial"
    } else {
        "Subscribe"
    };
    let body = format!(
        "<h1>{merchant} <small>TEST MODE</small></h1>\
         <ul id=\"line-items\">{lines}</ul>{due}{error}\
         <form method=\"post\" action=\"/pay/{id}\">\
         <label>Email <input name=\"email\" type=\"email\" value=\"{email}\" required></label>\
         <label>Card number <input name=\"card_number\" value=\"4242 4242 4242 4242\" inputmode=\"numeric\" required></label>\
         <label>Expiry <input name=\"card_expiry\" value=\"12 / 34\" required></label>\
         <label>CVC <input name=\"card_cvc\" value=\"123\" required></label>\
         <label>Name on card <input name=\"billing_name\" value=\"Test Customer\" required></label>\
         <button id=\"submit\" type=\"submit\">{button}</button>\
         </form>{cancel}",
        merchant = html_escape(&shared.config.account_name),
        id = html_escape(session_id),
        email = html_escape(&email),
    );
    let status = if error.is_empty() { 200 } else { 402 };
    Answer::html(
        status,
        page(&format!("Pay {}", shared.config.account_name), &body),
    )
}

fn submit_checkout(shared: &Shared, session_id: &str, form: &HashMap<String, String>) -> Answer {
    let card: String = form
        .get("card_number")
        .map(|c| c.chars().filter(char::is_ascii_digit).collect())
        .unwrap_or_default();
    let decline = match card.as_str() {
        CARD_DECLINED => Some("Your card was declined."),
        CARD_INSUFFICIENT_FUNDS => Some("Your card has insufficient funds."),
        c if !luhn_valid(c) => Some("Your card number is invalid."),
        _ => None,
    };
    // A second submit (a double click, the back button) goes to the success
    // page again and creates nothing.
    {
        let state = shared.state();
        if let Some(session) = state.sessions.get(session_id)
            && session.object["status"] == "complete"
            && let Some(url) = session.object["success_url"].as_str()
        {
            return Answer::redirect(&url.replace("{CHECKOUT_SESSION_ID}", session_id));
        }
    }
    if let Some(message) = decline {
        return checkout_page(shared, session_id, Some(message));
    }
    let card_form = CardForm {
        email: form
            .get("email")
            .filter(|e| !e.trim().is_empty())
            .map(|e| e.trim().to_owned()),
        name: form
            .get("billing_name")
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.trim().to_owned()),
    };
    let result = {
        let mut state = shared.state();
        complete_checkout_locked(shared, &mut state, session_id, &card_form)
    };
    match result {
        Err(e) if e.status == 404 => Answer::html(
            404,
            page(
                "Checkout not found",
                "<p>This checkout link is not valid.</p>",
            ),
        ),
        Err(e) => Answer::html(
            410,
            page(
                "Checkout closed",
                &format!("<p id=\"closed\">{}</p>", html_escape(&e.message)),
            ),
        ),
        Ok((completion, events)) => {
            shared.dispatch(&events);
            match completion.redirect_url {
                Some(url) => Answer::redirect(&url),
                None => Answer::html(
                    200,
                    page("Thanks", "<p id=\"done\">Thanks for your order.</p>"),
                ),
            }
        }
    }
}

fn portal_page(shared: &Shared, portal_id: &str) -> Answer {
    let state = shared.state();
    let Some(portal) = state.portal_sessions.get(portal_id) else {
        return Answer::html(
            404,
            page("Not found", "<p>This billing portal link is not valid.</p>"),
        );
    };
    let customer = portal["customer"].as_str().unwrap_or("");
    let mut rows = String::new();
    for sub_id in &state.subscription_order {
        let sub = &state.subscriptions[sub_id];
        if sub["customer"] != customer {
            continue;
        }
        let price_id = sub["items"]["data"][0]["price"]["id"]
            .as_str()
            .unwrap_or("");
        let name = shared
            .price(price_id)
            .map(|p| p.product_name.clone())
            .unwrap_or_default();
        let (_, end) = current_period(sub);
        let mut actions = String::new();
        if sub["status"] != "canceled" {
            let (action, label) = if sub["cancel_at_period_end"] == true {
                ("renew", "Renew plan")
            } else {
                ("cancel", "Cancel plan")
            };
            actions.push_str(&format!(
                "<form method=\"post\" action=\"/p/session/{p}/{action}\">\
                 <input type=\"hidden\" name=\"subscription\" value=\"{s}\">\
                 <button id=\"{action}-{s}\" type=\"submit\">{label}</button></form>",
                p = html_escape(portal_id),
                s = html_escape(sub_id),
            ));
            let options: String = shared
                .config
                .prices
                .iter()
                .filter(|p| p.id != price_id)
                .map(|p| {
                    format!(
                        "<option value=\"{}\">{} — {} per {}</option>",
                        html_escape(&p.id),
                        html_escape(&p.product_name),
                        money(p.unit_amount, &p.currency),
                        p.interval.as_str()
                    )
                })
                .collect();
            actions.push_str(&format!(
                "<form method=\"post\" action=\"/p/session/{p}/switch\">\
                 <input type=\"hidden\" name=\"subscription\" value=\"{s}\">\
                 <select name=\"price\">{options}</select>\
                 <button id=\"switch-{s}\" type=\"submit\">Update plan</button></form>",
                p = html_escape(portal_id),
                s = html_escape(sub_id),
            ));
        }
        rows.push_str(&format!(
            "<li class=\"subscription\" id=\"{s}\" data-status=\"{status}\">{name}: {status}{cancel}, \
             current period ends at {end} (Unix time){actions}</li>",
            s = html_escape(sub_id),
            status = html_escape(sub["status"].as_str().unwrap_or("")),
            name = html_escape(&name),
            cancel = if sub["cancel_at_period_end"] == true { ", cancels at period end" } else { "" },
        ));
    }
    let back = portal["return_url"]
        .as_str()
        .map(|u| {
            format!(
                "<p><a id=\"return\" href=\"{}\">Return to {}</a></p>",
                html_escape(u),
                html_escape(&shared.config.account_name)
            )
        })
        .unwrap_or_default();
    Answer::html(
        200,
        page(
            "Billing",
            &format!(
                "<h1>{} billing <small>TEST MODE</small></h1><ul>{rows}</ul>{back}",
                html_escape(&shared.config.account_name)
            ),
        ),
    )
}

fn portal_action(
    shared: &Shared,
    portal_id: &str,
    action: &str,
    form: &HashMap<String, String>,
) -> Answer {
    let sub_id = form.get("subscription").cloned().unwrap_or_default();
    let result = {
        let mut state = shared.state();
        let Some(customer) = state
            .portal_sessions
            .get(portal_id)
            .map(|p| p["customer"].clone())
        else {
            return Answer::html(
                404,
                page("Not found", "<p>This billing portal link is not valid.</p>"),
            );
        };
        if state.subscriptions.get(&sub_id).map(|s| &s["customer"]) != Some(&customer) {
            return Answer::html(
                404,
                page(
                    "Not found",
                    "<p>No such subscription for this customer.</p>",
                ),
            );
        }
        let update = match action {
            "cancel" => SubscriptionUpdate {
                cancel_at_period_end: Some(true),
                ..SubscriptionUpdate::default()
            },
            "renew" => SubscriptionUpdate {
                cancel_at_period_end: Some(false),
                ..SubscriptionUpdate::default()
            },
            "switch" => {
                let item_id = state.subscriptions[&sub_id]["items"]["data"][0]["id"]
                    .as_str()
                    .map(str::to_owned);
                SubscriptionUpdate {
                    items: vec![ItemChange {
                        index: 0,
                        id: item_id,
                        price: form.get("price").cloned(),
                        quantity: None,
                        deleted: false,
                    }],
                    ..SubscriptionUpdate::default()
                }
            }
            _ => return Answer::html(404, page("Not found", "<p>Unknown action.</p>")),
        };
        let info = RequestInfo {
            id: Some(shared.ids.make("req_", 14)),
            idempotency_key: None,
        };
        apply_subscription_update(shared, &mut state, &sub_id, update, &info)
    };
    match result {
        Ok((_, events)) => {
            shared.dispatch(&events);
            Answer::redirect(&format!("/p/session/{portal_id}"))
        }
        Err(e) => Answer::html(
            400,
            page(
                "Billing",
                &format!(
                    "<p id=\"error\" role=\"alert\">{}</p>",
                    html_escape(&e.message)
                ),
            ),
        ),
    }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title></head><body>{body}</body></html>",
        html_escape(title)
    )
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Random-looking ids: a per-process random key hashed with a counter.
struct IdSource {
    hasher: RandomState,
    counter: AtomicU64,
}

impl IdSource {
    fn new() -> IdSource {
        IdSource {
            hasher: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    /// `prefix` followed by `len` base-62 characters.
    fn make(&self, prefix: &str, len: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut out = String::with_capacity(prefix.len() + len);
        out.push_str(prefix);
        let mut word = 0u64;
        let mut left = 0;
        for _ in 0..len {
            if left == 0 {
                let mut h = self.hasher.build_hasher();
                h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
                word = h.finish();
                left = 10; // 62^10 < 2^64
            }
            out.push(ALPHABET[(word % 62) as usize] as char);
            word /= 62;
            left -= 1;
        }
        out
    }
}

/// One JSON object from several (`json!` objects this large exceed the
/// macro's recursion limit).
fn merge_objects<const N: usize>(parts: [Value; N]) -> Value {
    let mut merged = Map::new();
    for part in parts {
        if let Value::Object(map) = part {
            merged.extend(map);
        }
    }
    Value::Object(merged)
}

/// Decodes `a=1&b%5Bc%5D=x+y` into pairs, in order.
fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escaped = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, escaped) {
            (_, Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns bracket keys into nested objects: `line_items[0][price]=p` →
/// `{"line_items": {"0": {"price": "p"}}}`; `expand[]=a` appends. Lists stay
/// objects keyed by index (read them with [`list_of`]).
fn nest(pairs: &[(String, String)]) -> Value {
    let mut root = Value::Object(Map::new());
    for (key, value) in pairs {
        let segments = key_segments(key);
        let mut node = &mut root;
        for (i, segment) in segments.iter().enumerate() {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let map = node.as_object_mut().expect("just made an object");
            let segment = if segment.is_empty() {
                map.len().to_string()
            } else {
                segment.clone()
            };
            if i + 1 == segments.len() {
                map.insert(segment, Value::String(value.clone()));
                break;
            }
            node = map
                .entry(segment)
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

/// `a[b][0]` → `["a", "b", "0"]`; a key that is not well formed is one
/// segment.
fn key_segments(key: &str) -> Vec<String> {
    let Some(open) = key.find('[') else {
        return vec![key.to_owned()];
    };
    let mut segments = vec![key[..open].to_owned()];
    let mut rest = &key[open..];
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix('[') else {
            return vec![key.to_owned()];
        };
        let Some(close) = inner.find(']') else {
            return vec![key.to_owned()];
        };
        segments.push(inner[..close].to_owned());
        rest = &inner[close + 1..];
    }
    segments
}

/// The elements of a nested list (`{"0": …, "1": …}`), by index; a single
/// string counts as a list of one.
fn list_of(value: &Value) -> Vec<&Value> {
    match value {
        Value::Object(map) => {
            let mut items: Vec<(usize, &Value)> = map
                .iter()
                .map(|(k, v)| (k.parse::<usize>().unwrap_or(usize::MAX), v))
                .collect();
            items.sort_by_key(|(i, _)| *i);
            items.into_iter().map(|(_, v)| v).collect()
        }
        Value::Array(items) => items.iter().collect(),
        Value::String(_) => vec![value],
        _ => Vec::new(),
    }
}

fn luhn_valid(digits: &str) -> bool {
    if digits.len() < 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn money(cents: i64, currency: &str) -> String {
    let symbol = match currency {
        "usd" => "$",
        "eur" => "€",
        "gbp" => "£",
        _ => "",
    };
    format!("{symbol}{}.{:02}", cents / 100, (cents % 100).abs())
}

fn html_escape(text: &str) -> String {
    html_escape::encode_quoted_attribute(text).into_owned()
}

/// `ts` plus `months` calendar months (UTC), the day clamped to the target
/// month's length.
fn add_months(ts: i64, months: i64) -> i64 {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + i64::from(m) - 1 + months;
    let year = total.div_euclid(12);
    let month = u32::try_from(total.rem_euclid(12)).expect("0..12") + 1;
    let day = d.min(days_in_month(year, month));
    days_from_civil(year, month, day) * 86_400 + secs
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

// Howard Hinnant's civil-date algorithms.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
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

    #[test]
    fn bracket_keys_nest() {
        let form = nest(&parse_pairs(
            "line_items[0][price]=p1&line_items[0][quantity]=1&metadata[org]=a%20b&expand[]=x&expand[]=y&mode=subscription",
        ));
        assert_eq!(form["line_items"]["0"]["price"], "p1");
        assert_eq!(form["metadata"]["org"], "a b");
        assert_eq!(list_of(&form["expand"]), vec![&json!("x"), &json!("y")]);
        assert_eq!(form["mode"], "subscription");
        assert_eq!(percent_decode("a%5Bb%5D+c%zz%4"), "a[b] c%zz%4");
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(CARD_SUCCEEDS));
        assert!(luhn_valid(CARD_DECLINED));
        assert!(!luhn_valid("4242424242424241"));
    }
}
