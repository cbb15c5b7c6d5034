//! Provider identities and started provider sign-ins on PostgreSQL, with
//! the behaviour of `store/sqlite/identities.rs`.

use async_trait::async_trait;

use super::accounts::{USER_COLUMNS, signup_in, user_from_row};
use super::{PgStore, column};
use crate::domain::StorageError;
use crate::domain::account::{AccountError, User};
use crate::domain::provider::{CliCode, DeviceCode, DevicePoll, ProviderLogin};
use crate::store::Identities;

/// The password hash of an account made by a provider sign-in (no
/// password matches it).
const NO_PASSWORD: &str = "!provider";

const LINK: &str = "INSERT INTO provider_identities (provider, subject, user_id, email, created_at)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";

impl PgStore {
    async fn user_where(
        &self,
        condition: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<User>, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users u
                 JOIN organizations o ON o.id = u.organization_id WHERE {condition}"
            ))
            .await?;
        match conn.query_opt(&stmt, args).await? {
            Some(row) => Ok(Some(user_from_row(&row, 0)?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl Identities for PgStore {
    async fn begin_device(&self, d: &DeviceCode, now: i64) -> Result<(), StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached("DELETE FROM device_codes WHERE expires_at <= $1")
            .await?;
        conn.execute(&stmt, &[&now]).await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO device_codes (device_code_hash, user_code, interval_seconds,
                     created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await?;
        conn.execute(
            &stmt,
            &[
                &d.device_code_hash,
                &d.user_code,
                &d.interval_seconds,
                &d.created_at,
                &d.expires_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn approve_device(
        &self,
        user_code: &str,
        user_id: &str,
        now: i64,
    ) -> Result<bool, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "UPDATE device_codes SET user_id = $2
                 WHERE user_code = $1 AND user_id IS NULL AND expires_at > $3",
            )
            .await?;
        Ok(conn.execute(&stmt, &[&user_code, &user_id, &now]).await? == 1)
    }

    async fn poll_device(
        &self,
        device_code_hash: &str,
        now: i64,
    ) -> Result<DevicePoll, StorageError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "SELECT user_id, interval_seconds, last_poll_at, expires_at FROM device_codes
                 WHERE device_code_hash = $1 FOR UPDATE",
            )
            .await?;
        let Some(r) = tx.query_opt(&stmt, &[&device_code_hash]).await? else {
            return Ok(DevicePoll::Expired);
        };
        let user_id: Option<String> = column(&r, 0)?;
        let interval: i64 = column(&r, 1)?;
        let last: Option<i64> = column(&r, 2)?;
        let expires_at: i64 = column(&r, 3)?;
        if expires_at <= now {
            return Ok(DevicePoll::Expired);
        }
        let poll = match (user_id, last) {
            (_, Some(last)) if now - last < interval => DevicePoll::SlowDown,
            (None, _) => DevicePoll::Pending,
            (Some(user_id), _) => {
                let stmt = tx
                    .prepare_cached("DELETE FROM device_codes WHERE device_code_hash = $1")
                    .await?;
                tx.execute(&stmt, &[&device_code_hash]).await?;
                tx.commit().await?;
                return Ok(self
                    .user_where("u.id = $1", &[&user_id])
                    .await?
                    .map_or(DevicePoll::Expired, DevicePoll::Approved));
            }
        };
        let stmt = tx
            .prepare_cached("UPDATE device_codes SET last_poll_at = $2 WHERE device_code_hash = $1")
            .await?;
        tx.execute(&stmt, &[&device_code_hash, &now]).await?;
        tx.commit().await?;
        Ok(poll)
    }

    async fn issue_cli_code(&self, c: &CliCode, now: i64) -> Result<(), StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached("DELETE FROM cli_codes WHERE expires_at <= $1")
            .await?;
        conn.execute(&stmt, &[&now]).await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO cli_codes (code_hash, user_id, code_challenge, redirect_uri,
                     created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await?;
        conn.execute(
            &stmt,
            &[
                &c.code_hash,
                &c.user_id,
                &c.code_challenge,
                &c.redirect_uri,
                &c.created_at,
                &c.expires_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn take_cli_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<Option<(CliCode, User)>, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "DELETE FROM cli_codes WHERE code_hash = $1
                 RETURNING code_hash, user_id, code_challenge, redirect_uri, created_at,
                           expires_at",
            )
            .await?;
        let Some(r) = conn.query_opt(&stmt, &[&code_hash]).await? else {
            return Ok(None);
        };
        let code = CliCode {
            code_hash: column(&r, 0)?,
            user_id: column(&r, 1)?,
            code_challenge: column(&r, 2)?,
            redirect_uri: column(&r, 3)?,
            created_at: column(&r, 4)?,
            expires_at: column(&r, 5)?,
        };
        drop(conn);
        if code.expires_at <= now {
            return Ok(None);
        }
        let user = self.user_where("u.id = $1", &[&code.user_id]).await?;
        Ok(user.map(|u| (code, u)))
    }

    async fn begin_provider_login(&self, l: &ProviderLogin, now: i64) -> Result<(), StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached("DELETE FROM provider_logins WHERE expires_at <= $1")
            .await?;
        conn.execute(&stmt, &[&now]).await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO provider_logins (state_hash, provider, nonce, pkce_verifier,
                     link_user_id, then_go, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .await?;
        conn.execute(
            &stmt,
            &[
                &l.state_hash,
                &l.provider,
                &l.nonce,
                &l.pkce_verifier,
                &l.link_user_id,
                &l.then_go,
                &l.created_at,
                &l.expires_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn take_provider_login(
        &self,
        state_hash: &str,
        now: i64,
    ) -> Result<Option<ProviderLogin>, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "DELETE FROM provider_logins WHERE state_hash = $1
                 RETURNING state_hash, provider, nonce, pkce_verifier, link_user_id, then_go,
                           created_at, expires_at",
            )
            .await?;
        let Some(r) = conn.query_opt(&stmt, &[&state_hash]).await? else {
            return Ok(None);
        };
        let login = ProviderLogin {
            state_hash: column(&r, 0)?,
            provider: column(&r, 1)?,
            nonce: column(&r, 2)?,
            pkce_verifier: column(&r, 3)?,
            link_user_id: column(&r, 4)?,
            then_go: column(&r, 5)?,
            created_at: column(&r, 6)?,
            expires_at: column(&r, 7)?,
        };
        Ok((login.expires_at > now).then_some(login))
    }

    async fn identity_user(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<User>, StorageError> {
        self.user_where(
            "u.id = (SELECT user_id FROM provider_identities
                     WHERE provider = $1 AND subject = $2)",
            &[&provider, &subject],
        )
        .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StorageError> {
        self.user_where("lower(u.email) = lower($1)", &[&email])
            .await
    }

    async fn link_identity(
        &self,
        user_id: &str,
        provider: &str,
        subject: &str,
        email: &str,
        now: i64,
    ) -> Result<bool, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn.prepare_cached(LINK).await?;
        let n = conn
            .execute(&stmt, &[&provider, &subject, &user_id, &email, &now])
            .await?;
        Ok(n == 1)
    }

    async fn provider_signup(
        &self,
        email: &str,
        company_name: &str,
        pilot_limit: Option<u32>,
        provider: &str,
        subject: &str,
        now: i64,
    ) -> Result<User, AccountError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        let user = signup_in(&tx, email, NO_PASSWORD, company_name, pilot_limit, now).await?;
        let stmt = tx
            .prepare_cached("UPDATE users SET email_verified_at = $2 WHERE id = $1")
            .await?;
        tx.execute(&stmt, &[&user.id, &now]).await?;
        let stmt = tx.prepare_cached(LINK).await?;
        let n = tx
            .execute(&stmt, &[&provider, &subject, &user.id, &email, &now])
            .await?;
        if n != 1 {
            return Err(AccountError::EmailTaken);
        }
        tx.commit().await?;
        Ok(user)
    }
}
