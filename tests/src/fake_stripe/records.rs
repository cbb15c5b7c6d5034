//! What tests read back: requests, webhook deliveries, events, checkout results.

use serde_json::Value;

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
