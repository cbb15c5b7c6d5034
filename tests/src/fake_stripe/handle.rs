//! The running fake (`FakeStripe`): starting it, and what tests do with it and read from it.

use crate::loopback_server::LoopbackServer;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};

use poem::Request;
use serde_json::Value;

use super::config::{Config, Price};
use super::hosted_pages::CardForm;
use super::http::handle;
use super::lifecycle::{complete_checkout_locked, recover_payment_locked, renew_locked};
use super::records::{CheckoutCompletion, Delivery, RecordedRequest, StoredEvent};
use super::state::{InjectedFailure, RequestInfo, Shared};
use super::unix_now;

/// A running fake Stripe; dropping it stops the server.
pub struct FakeStripe {
    shared: Arc<Shared>,
    server: LoopbackServer,
}

impl FakeStripe {
    /// Starts a fake on `127.0.0.1:<free port>` (its own thread and tokio
    /// runtime). Panics if it cannot.
    pub fn start(config: Config) -> FakeStripe {
        let shared = Arc::new(Shared::new(config));
        let server_shared = Arc::clone(&shared);
        let server = LoopbackServer::start("fake Stripe", 2, move |req: Request| {
            handle(Arc::clone(&server_shared), req)
        });
        *shared.base_url.lock().expect("not poisoned") = format!("http://{}", server.addr());
        FakeStripe { shared, server }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash). Give it to async-stripe
    /// as `ClientBuilder::new(key).url(base_url)`: the client sends
    /// `{base}/v1/...`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
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

    /// Sends a stored event to `url` (another issuer instance than the
    /// webhook URL's, say), with a fresh signature.
    pub fn deliver_to(&self, url: &str, event_id: &str) -> Delivery {
        let event = {
            let state = self.shared.state();
            state
                .events
                .iter()
                .find(|e| e.id == event_id)
                .unwrap_or_else(|| panic!("no event {event_id}"))
                .clone()
        };
        self.shared.post_event(url, &event, unix_now())
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
