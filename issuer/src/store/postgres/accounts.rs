//! STUB (being written): Accounts on PostgreSQL.

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
use crate::store::Accounts;

#[async_trait]
impl Accounts for PgStore {
    async fn signup(
        &self,
        email: &str,
        password_hash: &str,
        company_name: &str,
        users_limit: Option<u32>,
        now: i64,
    ) -> Result<User, AccountError> {
        todo!()
    }

    async fn create_organization(&self, name: &str, now: i64) -> Result<String, StorageError> {
        todo!()
    }

    async fn user_count(&self) -> Result<u32, StorageError> {
        todo!()
    }

    async fn sign_in_lookup(
        &self,
        email: &str,
        now: i64,
    ) -> Result<(Option<i64>, Option<(User, String)>), StorageError> {
        todo!()
    }

    async fn record_failed_sign_in(
        &self,
        email: &str,
        now: i64,
    ) -> Result<Option<i64>, StorageError> {
        todo!()
    }

    async fn clear_failed_sign_ins(&self, email: &str) -> Result<(), StorageError> {
        todo!()
    }

    async fn create_session(
        &self,
        user_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<String, StorageError> {
        todo!()
    }

    async fn session_user(&self, session_id: &str, now: i64) -> Result<Option<User>, StorageError> {
        todo!()
    }

    async fn end_session(&self, session_id: &str, now: i64) -> Result<(), StorageError> {
        todo!()
    }
}
