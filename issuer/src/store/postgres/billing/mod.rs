//! STUB (being written): Billing on PostgreSQL.

use std::time::Duration;

use async_trait::async_trait;
use verifier::HardwareId;

use super::PgStore;
use crate::domain::StorageError;
use crate::domain::account::{AccountError, User};
use crate::domain::audit::Event;
use crate::domain::billing::{
    ApplyError, BillingRules, CheckoutRecord, Outcome, Reveal, StripeEvent,
};
use crate::domain::license::{Activation, Grant, License, LicenseError, NewLicense, Seat};
use crate::domain::license_key::LicenseKey;
use crate::domain::mail::{DueMail, Failure, Mail, Next, OutboxEntry};
use crate::store::Billing;

#[async_trait]
impl Billing for PgStore {
    async fn stripe_event_seen(&self, event_id: &str) -> Result<bool, StorageError> {
        todo!()
    }

    async fn apply_stripe_event(
        &self,
        event: &StripeEvent,
        rules: &BillingRules,
        now: i64,
    ) -> Result<(Outcome, bool), ApplyError> {
        todo!()
    }

    async fn stripe_customer(&self, organization_id: &str) -> Result<Option<String>, StorageError> {
        todo!()
    }

    async fn has_live_subscription(&self, organization_id: &str) -> Result<bool, StorageError> {
        todo!()
    }

    async fn set_stripe_customer(
        &self,
        organization_id: &str,
        customer_id: &str,
    ) -> Result<String, StorageError> {
        todo!()
    }

    async fn open_checkouts(
        &self,
        organization_id: &str,
        since: i64,
    ) -> Result<Vec<String>, StorageError> {
        todo!()
    }

    async fn checkout_expired(&self, session_id: &str, now: i64) -> Result<(), StorageError> {
        todo!()
    }

    async fn record_checkout(
        &self,
        checkout: &CheckoutRecord,
        now: i64,
    ) -> Result<(), StorageError> {
        todo!()
    }

    async fn reveal_key(
        &self,
        session_id: &str,
        browser_hash: &str,
        now: i64,
    ) -> Result<Reveal, StorageError> {
        todo!()
    }

    async fn wipe_stale_reveals(&self, now: i64) -> Result<usize, StorageError> {
        todo!()
    }
}
