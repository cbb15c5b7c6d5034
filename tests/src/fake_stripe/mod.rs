//! A fake Stripe for end-to-end tests: a real HTTP server on a loopback port
//! that speaks the part of Stripe's API the issuer uses (customers, Checkout
//! Sessions, billing portal sessions, subscriptions, prices), serves a
//! "hosted checkout" page and a billing portal page, and delivers signed
//! webhook events to a configurable URL: the billing tests talk to a local
//! fake Stripe over HTTP, never to a mock object inside the process.
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
//! HMAC-SHA256(secret, "<t>.<payload>")>` ([`sign_payload`]), one more `v1=`
//! per extra secret (a rotation) and a `v0=` as test-mode events carry
//! (`Config::test_mode_v0`), which receivers must ignore. Deliveries are
//! synchronous and in order: when the hosted checkout page is submitted the
//! events have been delivered (and answered) before the browser is
//! redirected, unless deliveries are paused ([`FakeStripe::pause_deliveries`]),
//! which is how a test lets the person reach the success page first, or
//! delivers events out of order. [`FakeStripe::deliver`] sends a stored event
//! again (same id, same bytes, fresh signature) and
//! [`FakeStripe::deliver_concurrently`] sends it from several threads at once.
//! Failed deliveries are recorded, not retried.
//!
//! # Layout
//!
//! [`FakeStripe`] (`handle`) is what tests hold; [`Config`] (`config`) sets
//! it up and `records` holds what they read back. Behind it, `state` is
//! what the server and the handle share, `http` decodes requests, `api`
//! authenticates, replays idempotent answers and routes to one module per
//! Stripe resource (`customers`, `checkout`, `portal`, `subscriptions`),
//! `lifecycle` moves subscriptions through paid and failed periods,
//! `objects` shapes prices, items and invoices, `hosted_pages` serves the
//! checkout and portal pages, and `webhooks` signs and delivers events.
//! `form`, `ids`, `calendar` and `helpers` are the small pieces they share.

mod api;
mod calendar;
mod checkout;
mod config;
mod customers;
mod form;
mod handle;
mod helpers;
mod hosted_pages;
mod http;
mod ids;
mod lifecycle;
mod objects;
mod portal;
mod records;
mod state;
mod subscriptions;
mod webhooks;

use std::time::{SystemTime, UNIX_EPOCH};

pub use config::{Config, Interval, Price, pilot_prices};
pub use handle::FakeStripe;
pub use records::{CheckoutCompletion, Delivery, RecordedRequest, StoredEvent};
pub use webhooks::{sign_payload, signature_v1};

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

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    i64::try_from(secs).expect("the clock fits in i64")
}
