//! What the server and the handle share: Stripe's objects, events, requests, idempotency.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value, json};

use super::config::{Config, Price};
use super::ids::IdSource;
use super::records::{Delivery, RecordedRequest, StoredEvent};
use super::unix_now;
use super::webhooks::DELIVERY_TIMEOUT;

pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) base_url: Mutex<String>,
    pub(super) state: Mutex<State>,
    pub(super) agent: ureq::Agent,
    pub(super) ids: IdSource,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) webhook_url: Option<String>,
    pub(super) customers: HashMap<String, Value>,
    pub(super) sessions: HashMap<String, Session>,
    pub(super) session_order: Vec<String>,
    pub(super) subscriptions: HashMap<String, Value>,
    pub(super) subscription_order: Vec<String>,
    pub(super) invoices: HashMap<String, Value>,
    pub(super) portal_sessions: HashMap<String, Value>,
    pub(super) events: Vec<StoredEvent>,
    pub(super) deliveries: Vec<Delivery>,
    pub(super) requests: Vec<RecordedRequest>,
    pub(super) idempotent: HashMap<String, SavedAnswer>,
    pub(super) idempotent_in_flight: std::collections::HashSet<String>,
    pub(super) injected: Vec<InjectedFailure>,
    pub(super) paused: bool,
    pub(super) queue: Vec<String>,
    pub(super) invoice_count: u64,
}

/// A Checkout Session and what it was asked for.
pub(super) struct Session {
    pub(super) object: Value,
    pub(super) line_items: Vec<(String, u64)>,
    pub(super) trial_days: Option<u32>,
    pub(super) subscription_metadata: Map<String, Value>,
}

pub(super) struct SavedAnswer {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) params: Vec<(String, String)>,
    pub(super) status: u16,
    pub(super) body: String,
}

pub(super) struct InjectedFailure {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) status: u16,
    pub(super) remaining: usize,
}

/// The `request` of an event: the API request that caused it, if any.
#[derive(Clone)]
pub(super) struct RequestInfo {
    pub(super) id: Option<String>,
    pub(super) idempotency_key: Option<String>,
}

impl RequestInfo {
    pub(super) fn none() -> RequestInfo {
        RequestInfo {
            id: None,
            idempotency_key: None,
        }
    }
}

impl Shared {
    pub(super) fn new(config: Config) -> Shared {
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

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the
        // state from the ones after it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn base_url(&self) -> String {
        self.base_url
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn price(&self, id: &str) -> Option<&Price> {
        self.config.prices.iter().find(|p| p.id == id)
    }
}

impl State {
    pub(super) fn event(&self, id: &str) -> &StoredEvent {
        self.events
            .iter()
            .find(|e| e.id == id)
            .expect("events are never removed")
    }

    /// Stores a new event and returns its id.
    pub(super) fn new_event(
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
