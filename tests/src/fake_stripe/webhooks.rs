//! Webhook events on the wire: `Stripe-Signature` signing and delivery to the configured endpoint.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::records::{Delivery, StoredEvent};
use super::state::Shared;
use super::unix_now;

/// How long a delivery may take before it is recorded as failed.
pub(super) const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

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

impl Shared {
    /// Sends new events: in order, unless paused (queued) or no URL is set
    /// (stored only). Never called with the state locked.
    pub(super) fn dispatch(&self, event_ids: &[String]) -> Vec<Delivery> {
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

    pub(super) fn post_event(&self, url: &str, event: &StoredEvent, timestamp: i64) -> Delivery {
        // One `v1=` per secret, the current one first or last.
        let current = signature_v1(&event.payload, &self.config.webhook_secret, timestamp);
        let extra = self
            .config
            .extra_webhook_secrets
            .iter()
            .map(|secret| signature_v1(&event.payload, secret, timestamp));
        let signatures: Vec<String> = if self.config.current_signature_first {
            std::iter::once(current).chain(extra).collect()
        } else {
            extra.chain(std::iter::once(current)).collect()
        };
        let mut signature = format!("t={timestamp}");
        for v1 in signatures {
            signature.push_str(",v1=");
            signature.push_str(&v1);
        }
        if self.config.test_mode_v0 {
            // Test-mode events also carry a `v0=` scheme signature, which
            // receivers must ignore.
            signature.push_str(",v0=");
            signature.push_str(&signature_v1(
                &event.payload,
                "whsec_test_mode_v0",
                timestamp,
            ));
        }
        self.post(
            url,
            &event.id,
            &event.event_type,
            &event.payload,
            Some(&signature),
            timestamp,
        )
    }

    pub(super) fn post(
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
