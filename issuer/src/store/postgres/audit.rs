//! STUB (being written): AuditTrail on PostgreSQL.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
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
use crate::store::AuditTrail;

/// Appends one event inside the caller's transaction.
pub(super) async fn insert_event<C: GenericClient>(
    client: &C,
    e: &Event,
) -> Result<(), StorageError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO audit_log (at, event, outcome, actor, ip, user_agent, subject_type,
                 subject_id, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &e.at,
                &e.event,
                &e.outcome,
                &e.actor,
                &e.ip,
                &e.user_agent,
                &e.subject_type,
                &e.subject_id,
                &e.detail,
            ],
        )
        .await?;
    Ok(())
}

#[async_trait]
impl AuditTrail for PgStore {
    async fn append_audit(&self, events: &[Event]) -> Result<(), StorageError> {
        todo!()
    }

    async fn audit_events(
        &self,
        since: Option<i64>,
        event: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>, StorageError> {
        todo!()
    }
}
