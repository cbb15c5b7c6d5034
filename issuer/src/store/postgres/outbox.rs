//! STUB (being written): Outbox on PostgreSQL.

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
use crate::store::Outbox;

/// Queues a mail inside the caller's transaction (the change that needs
/// it); returns its id.
pub(super) async fn insert_mail<C: GenericClient>(
    client: &C,
    mail: &Mail,
    now: i64,
) -> Result<String, StorageError> {
    let id = uuid::Uuid::new_v4().to_string();
    let stmt = client
        .prepare_cached(
            "INSERT INTO email_outbox (id, kind, recipient, subject, body, created_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[&id, &mail.kind, &mail.to, &mail.subject, &mail.body, &now],
        )
        .await?;
    Ok(id)
}

#[async_trait]
impl Outbox for PgStore {
    async fn enqueue_mail(&self, mail: &Mail, now: i64) -> Result<String, StorageError> {
        todo!()
    }

    async fn claim_mail(&self, now: i64, limit: usize) -> Result<Vec<DueMail>, StorageError> {
        todo!()
    }

    async fn mail_sent(&self, id: &str, now: i64) -> Result<(), StorageError> {
        todo!()
    }

    async fn mail_failed(
        &self,
        id: &str,
        now: i64,
        failure: &Failure,
        retry_initial: Duration,
    ) -> Result<Option<Next>, StorageError> {
        todo!()
    }

    async fn outbox(
        &self,
        unsent_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        todo!()
    }

    async fn retry_mail(&self, id: &str, now: i64) -> Result<bool, StorageError> {
        todo!()
    }
}
