//! Provider identities and started provider sign-ins on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::SqliteStore;
use super::accounts::{USER_COLUMNS, signup_in, user_from_row};
use crate::domain::StorageError;
use crate::domain::account::{AccountError, User};
use crate::domain::provider::{CliCode, DeviceCode, DevicePoll, ProviderLogin};
use crate::store::Identities;

/// The password hash of an account made by a provider sign-in: not a
/// PHC string, so no password ever matches it (a password can be set
/// with a reset link).
pub const NO_PASSWORD: &str = "!provider";

fn begin(conn: &Connection, l: &ProviderLogin, now: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM provider_logins WHERE expires_at <= ?1", [now])?;
    conn.execute(
        "INSERT INTO provider_logins (state_hash, provider, nonce, pkce_verifier,
             link_user_id, then_go, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            l.state_hash,
            l.provider,
            l.nonce,
            l.pkce_verifier,
            l.link_user_id,
            l.then_go,
            l.created_at,
            l.expires_at
        ],
    )?;
    Ok(())
}

fn take(conn: &Connection, state_hash: &str, now: i64) -> rusqlite::Result<Option<ProviderLogin>> {
    let found = conn
        .query_row(
            "DELETE FROM provider_logins WHERE state_hash = ?1
             RETURNING state_hash, provider, nonce, pkce_verifier, link_user_id, then_go,
                       created_at, expires_at",
            [state_hash],
            |r| {
                Ok(ProviderLogin {
                    state_hash: r.get(0)?,
                    provider: r.get(1)?,
                    nonce: r.get(2)?,
                    pkce_verifier: r.get(3)?,
                    link_user_id: r.get(4)?,
                    then_go: r.get(5)?,
                    created_at: r.get(6)?,
                    expires_at: r.get(7)?,
                })
            },
        )
        .optional()?;
    Ok(found.filter(|l| l.expires_at > now))
}

fn user_where(conn: &Connection, condition: &str, args: &[&str]) -> rusqlite::Result<Option<User>> {
    conn.query_row(
        &format!(
            "SELECT {USER_COLUMNS} FROM users u
             JOIN organizations o ON o.id = u.organization_id WHERE {condition}"
        ),
        rusqlite::params_from_iter(args),
        user_from_row,
    )
    .optional()
}

fn link(
    conn: &Connection,
    user_id: &str,
    provider: &str,
    subject: &str,
    email: &str,
    now: i64,
) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "INSERT INTO provider_identities (provider, subject, user_id, email, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        params![provider, subject, user_id, email, now],
    )? == 1)
}

fn provider_signup(
    conn: &mut Connection,
    email: &str,
    company_name: &str,
    pilot_limit: Option<u32>,
    provider: &str,
    subject: &str,
    now: i64,
) -> Result<User, AccountError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let user = signup_in(&tx, email, NO_PASSWORD, company_name, pilot_limit, now)?;
    tx.execute(
        "UPDATE users SET email_verified_at = ?2 WHERE id = ?1",
        params![user.id, now],
    )?;
    if !link(&tx, &user.id, provider, subject, email, now)? {
        return Err(AccountError::EmailTaken);
    }
    tx.commit()?;
    Ok(user)
}

fn issue_code(conn: &Connection, c: &CliCode, now: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM cli_codes WHERE expires_at <= ?1", [now])?;
    conn.execute(
        "INSERT INTO cli_codes (code_hash, user_id, code_challenge, redirect_uri, created_at,
             expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            c.code_hash,
            c.user_id,
            c.code_challenge,
            c.redirect_uri,
            c.created_at,
            c.expires_at
        ],
    )?;
    Ok(())
}

fn take_code(
    conn: &mut Connection,
    code_hash: &str,
    now: i64,
) -> rusqlite::Result<Option<(CliCode, User)>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let code = tx
        .query_row(
            "DELETE FROM cli_codes WHERE code_hash = ?1
             RETURNING code_hash, user_id, code_challenge, redirect_uri, created_at, expires_at",
            [code_hash],
            |r| {
                Ok(CliCode {
                    code_hash: r.get(0)?,
                    user_id: r.get(1)?,
                    code_challenge: r.get(2)?,
                    redirect_uri: r.get(3)?,
                    created_at: r.get(4)?,
                    expires_at: r.get(5)?,
                })
            },
        )
        .optional()?;
    let found = match code.filter(|c| c.expires_at > now) {
        Some(c) => user_where(&tx, "u.id = ?1", &[&c.user_id])?.map(|u| (c, u)),
        None => None,
    };
    tx.commit()?;
    Ok(found)
}

fn begin_device(conn: &Connection, d: &DeviceCode, now: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM device_codes WHERE expires_at <= ?1", [now])?;
    conn.execute(
        "INSERT INTO device_codes (device_code_hash, user_code, interval_seconds, created_at,
             expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            d.device_code_hash,
            d.user_code,
            d.interval_seconds,
            d.created_at,
            d.expires_at
        ],
    )?;
    Ok(())
}

fn poll_device(conn: &mut Connection, hash: &str, now: i64) -> rusqlite::Result<DevicePoll> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row: Option<(Option<String>, i64, Option<i64>, i64)> = tx
        .query_row(
            "SELECT user_id, interval_seconds, last_poll_at, expires_at FROM device_codes
             WHERE device_code_hash = ?1",
            [hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let poll = match row {
        None => DevicePoll::Expired,
        Some((_, _, _, expires_at)) if expires_at <= now => DevicePoll::Expired,
        Some((_, interval, Some(last), _)) if now - last < interval => {
            tx.execute(
                "UPDATE device_codes SET last_poll_at = ?2 WHERE device_code_hash = ?1",
                params![hash, now],
            )?;
            DevicePoll::SlowDown
        }
        Some((None, ..)) => {
            tx.execute(
                "UPDATE device_codes SET last_poll_at = ?2 WHERE device_code_hash = ?1",
                params![hash, now],
            )?;
            DevicePoll::Pending
        }
        Some((Some(user_id), ..)) => {
            tx.execute(
                "DELETE FROM device_codes WHERE device_code_hash = ?1",
                [hash],
            )?;
            match user_where(&tx, "u.id = ?1", &[&user_id])? {
                Some(user) => DevicePoll::Approved(user),
                None => DevicePoll::Expired,
            }
        }
    };
    tx.commit()?;
    Ok(poll)
}

#[async_trait]
impl Identities for SqliteStore {
    async fn begin_device(&self, code: &DeviceCode, now: i64) -> Result<(), StorageError> {
        let code = code.clone();
        self.db
            .run_write(move |c| begin_device(c, &code, now).map_err(StorageError::from))
            .await
    }

    async fn approve_device(
        &self,
        user_code: &str,
        user_id: &str,
        now: i64,
    ) -> Result<bool, StorageError> {
        let (code, user) = (user_code.to_owned(), user_id.to_owned());
        self.db
            .run_write(move |c| {
                c.execute(
                    "UPDATE device_codes SET user_id = ?2
                     WHERE user_code = ?1 AND user_id IS NULL AND expires_at > ?3",
                    params![code, user, now],
                )
                .map(|n| n == 1)
                .map_err(StorageError::from)
            })
            .await
    }

    async fn poll_device(
        &self,
        device_code_hash: &str,
        now: i64,
    ) -> Result<DevicePoll, StorageError> {
        let hash = device_code_hash.to_owned();
        self.db
            .run_write(move |c| poll_device(c, &hash, now).map_err(StorageError::from))
            .await
    }

    async fn issue_cli_code(&self, code: &CliCode, now: i64) -> Result<(), StorageError> {
        let code = code.clone();
        self.db
            .run_write(move |c| issue_code(c, &code, now).map_err(StorageError::from))
            .await
    }

    async fn take_cli_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<Option<(CliCode, User)>, StorageError> {
        let code_hash = code_hash.to_owned();
        self.db
            .run_write(move |c| take_code(c, &code_hash, now).map_err(StorageError::from))
            .await
    }

    async fn begin_provider_login(
        &self,
        login: &ProviderLogin,
        now: i64,
    ) -> Result<(), StorageError> {
        let login = login.clone();
        self.db
            .run_write(move |c| begin(c, &login, now).map_err(StorageError::from))
            .await
    }

    async fn take_provider_login(
        &self,
        state_hash: &str,
        now: i64,
    ) -> Result<Option<ProviderLogin>, StorageError> {
        let state_hash = state_hash.to_owned();
        self.db
            .run_write(move |c| take(c, &state_hash, now).map_err(StorageError::from))
            .await
    }

    async fn identity_user(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<User>, StorageError> {
        let (provider, subject) = (provider.to_owned(), subject.to_owned());
        self.db
            .run(move |c| {
                user_where(
                    c,
                    "u.id = (SELECT user_id FROM provider_identities
                             WHERE provider = ?1 AND subject = ?2)",
                    &[&provider, &subject],
                )
                .map_err(StorageError::from)
            })
            .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StorageError> {
        let email = email.to_owned();
        self.db
            .run(move |c| user_where(c, "u.email = ?1", &[&email]).map_err(StorageError::from))
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
        let (u, p, s, e) = (
            user_id.to_owned(),
            provider.to_owned(),
            subject.to_owned(),
            email.to_owned(),
        );
        self.db
            .run_write(move |c| link(c, &u, &p, &s, &e, now).map_err(StorageError::from))
            .await
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
        let (e, c, p, s) = (
            email.to_owned(),
            company_name.to_owned(),
            provider.to_owned(),
            subject.to_owned(),
        );
        self.db
            .run_write(move |conn| provider_signup(conn, &e, &c, pilot_limit, &p, &s, now))
            .await
    }
}
