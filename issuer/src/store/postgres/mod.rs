//! The PostgreSQL backend: the connection settings (`DATABASE_URL`), a
//! pool of connections, the embedded migrations (applied under an advisory
//! lock, so two processes migrating at once take turns), and [`PgStore`],
//! which implements the storage interface with the SQL in this folder (one
//! file per aggregate, as in `store/sqlite/`).
//!
//! The invariants hold inside PostgreSQL, so any number of issuer
//! processes can share one database: a seat is taken under a row lock on
//! its license (`SELECT … FOR UPDATE`), a Stripe event's id is inserted in
//! the transaction of its effect, mail is claimed with
//! `FOR UPDATE SKIP LOCKED`, and a rate-limit check is one upsert of its
//! bucket's row.

mod accounts;
mod audit;
mod billing;
mod identities;
mod licenses;
mod outbox;
mod rate_limits;
mod stats;
mod store;
mod url;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;

use super::{Migrations, OpenError};
use crate::domain::StorageError;
use crate::domain::account::AccountError;
use crate::domain::billing::ApplyError;
use crate::domain::license::LicenseError;

pub use store::PgStore;
pub use url::PgUrl;

/// The numbered migrations in `migrations/postgres/`, embedded at build
/// time. Schema version N is the state after applying the first N.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "0001_schema.sql",
        include_str!("../../../../migrations/postgres/0001_schema.sql"),
    ),
    (
        2,
        "0002_rate_limits.sql",
        include_str!("../../../../migrations/postgres/0002_rate_limits.sql"),
    ),
    (
        3,
        "0003_seats.sql",
        include_str!("../../../../migrations/postgres/0003_seats.sql"),
    ),
    (
        4,
        "0004_peppered_key_hashes.sql",
        include_str!("../../../../migrations/postgres/0004_peppered_key_hashes.sql"),
    ),
    (
        5,
        "0005_accounts.sql",
        include_str!("../../../../migrations/postgres/0005_accounts.sql"),
    ),
    (
        6,
        "0006_pilot_figures.sql",
        include_str!("../../../../migrations/postgres/0006_pilot_figures.sql"),
    ),
    (
        7,
        "0007_provider_sign_in.sql",
        include_str!("../../../../migrations/postgres/0007_provider_sign_in.sql"),
    ),
];

/// The schema version this build writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The key of the advisory lock that migrations run under ("coditect").
const MIGRATION_LOCK: i64 = 0x636f_6469_7465_6374;

/// How many connections one issuer process keeps at most. Cloud SQL's
/// smallest tiers allow 25 to 100 connections for all instances together.
const POOL_SIZE: usize = 16;

/// How long a request waits for a connection, or for a new connection to
/// be made, before the database counts as unavailable.
const WAIT: Duration = Duration::from_secs(5);

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        let transient = match e.code() {
            // No SQL error code: transient when the connection broke or
            // could not be made; otherwise a value that did not convert or
            // a query that did not return what it should (a bug or bad
            // data, not an outage).
            None => e.is_closed() || caused_by_io(&e),
            Some(code) => {
                code.code().starts_with("08") // connection exception
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::TOO_MANY_CONNECTIONS
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || *code == SqlState::CANNOT_CONNECT_NOW
            }
        };
        // The server's own message (with its detail) is more useful in the
        // log than the client's summary.
        let text = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        crate::store::counted(if transient {
            StorageError::Unavailable(text)
        } else {
            StorageError::Failed(text)
        })
    }
}

/// Whether an I/O error (a refused, reset or timed-out connection) is
/// among the causes of `e`.
fn caused_by_io(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

impl From<deadpool_postgres::PoolError> for StorageError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => crate::store::counted(StorageError::Unavailable(other.to_string())),
        }
    }
}

/// `?` on SQL inside operations that answer with a domain error.
macro_rules! storage_error_from_postgres {
    ($($t:ty),*) => {$(
        impl From<tokio_postgres::Error> for $t {
            fn from(e: tokio_postgres::Error) -> Self {
                <$t>::from(StorageError::from(e))
            }
        }
        impl From<deadpool_postgres::PoolError> for $t {
            fn from(e: deadpool_postgres::PoolError) -> Self {
                <$t>::from(StorageError::from(e))
            }
        }
    )*};
}
storage_error_from_postgres!(LicenseError, AccountError, ApplyError);

/// Whether an error is a unique-constraint violation (someone else
/// inserted the same key first).
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// A count or limit kept as BIGINT, read as the unsigned number the
/// domain uses; a negative or oversized value is a database error.
pub(crate) fn to_u32(v: i64) -> Result<u32, StorageError> {
    u32::try_from(v).map_err(|_| StorageError::Failed(format!("{v} is not a count")))
}

/// A column of a row; a value of an unexpected type, or NULL where none
/// belongs, is bad data in the database (a failure), not an outage.
pub(crate) fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    idx: usize,
) -> Result<T, StorageError> {
    row.try_get(idx)
        .map_err(|e| StorageError::Failed(format!("unexpected data in the database: {e}")))
}

/// A pool of connections to one database.
#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) pool: Pool,
    location: String,
}

impl Db {
    /// Connects, checks the server answers, and applies pending
    /// migrations.
    pub(crate) async fn open(url: &PgUrl, migrations: Migrations) -> Result<Self, OpenError> {
        let location = url.redacted();
        let open_err = |e: &dyn std::fmt::Display| OpenError::Open {
            location: location.clone(),
            reason: e.to_string(),
        };
        let manager = Manager::from_config(
            url.config().clone(),
            url.tls().map_err(|e| open_err(&e))?,
            ManagerConfig {
                // A connection the server closed (a restart, an idle
                // timeout) is dropped instead of handed out again; checking
                // each one with a query would cost a round trip per
                // request.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(WAIT))
            .create_timeout(Some(WAIT))
            .recycle_timeout(Some(WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| open_err(&e))?;
        let db = Db { pool, location };
        match migrations {
            Migrations::Apply => {
                db.migrate().await?;
            }
            Migrations::Require => db.require_current().await?,
        }
        Ok(db)
    }

    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    /// A connection from the pool.
    pub(crate) async fn conn(&self) -> Result<deadpool_postgres::Object, StorageError> {
        Ok(self.pool.get().await?)
    }

    /// Refuses a database that is behind or ahead of this build.
    async fn require_current(&self) -> Result<(), OpenError> {
        let conn = self.pool.get().await.map_err(|e| OpenError::Open {
            location: self.location.clone(),
            reason: e.to_string(),
        })?;
        let exists: bool = conn
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| OpenError::Open {
                location: self.location.clone(),
                reason: e.to_string(),
            })?;
        let found = if exists {
            version_of(&conn).await.map_err(|e| OpenError::Open {
                location: self.location.clone(),
                reason: e.to_string(),
            })?
        } else {
            0
        };
        let known = latest_version();
        match found.cmp(&known) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(OpenError::NewerSchema {
                location: self.location.clone(),
                found,
                known,
            }),
            std::cmp::Ordering::Less => Err(OpenError::NotMigrated {
                location: self.location.clone(),
                found,
                needed: known,
            }),
        }
    }

    /// Applies every migration newer than the database, each in its own
    /// transaction together with its version row, while holding an
    /// advisory lock: a second process waits, then finds nothing to do.
    /// Refuses a database from a newer build.
    async fn migrate(&self) -> Result<u32, OpenError> {
        let failed = |name: &str, e: &dyn std::fmt::Display| OpenError::Migration {
            name: name.to_owned(),
            reason: e.to_string(),
        };
        let opening = "(opening)";
        let mut conn = self.pool.get().await.map_err(|e| OpenError::Open {
            location: self.location.clone(),
            reason: e.to_string(),
        })?;
        // The lock first: two processes creating the table at once could
        // each fail on the other's (a duplicate table or type), whatever
        // `IF NOT EXISTS` says.
        conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| failed(opening, &e))?;
        let result = match conn
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    BIGINT PRIMARY KEY,
                     name       TEXT NOT NULL,
                     applied_at BIGINT NOT NULL
                 )",
            )
            .await
        {
            Ok(()) => self.migrate_locked(&mut conn).await,
            Err(e) => Err(failed(opening, &e)),
        };
        let unlocked = conn
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        let version = result?;
        unlocked.map_err(|e| failed(opening, &e))?;
        Ok(version)
    }

    async fn migrate_locked(&self, conn: &mut deadpool_postgres::Object) -> Result<u32, OpenError> {
        let failed = |name: &str, e: &dyn std::fmt::Display| OpenError::Migration {
            name: name.to_owned(),
            reason: e.to_string(),
        };
        let found = version_of(conn)
            .await
            .map_err(|e| failed("(reading the version)", &e))?;
        let known = latest_version();
        if found > known {
            return Err(OpenError::NewerSchema {
                location: self.location.clone(),
                found,
                known,
            });
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
            let tx = conn.transaction().await.map_err(|e| failed(name, &e))?;
            tx.batch_execute(sql).await.map_err(|e| failed(name, &e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                &[&i64::from(*version), name, &now],
            )
            .await
            .map_err(|e| failed(name, &e))?;
            tx.commit().await.map_err(|e| failed(name, &e))?;
        }
        version_of(conn)
            .await
            .map_err(|e| failed("(reading the version)", &e))
    }
}

/// The schema version recorded in the database (0 when empty).
pub(crate) async fn version_of(
    conn: &tokio_postgres::Client,
) -> Result<u32, tokio_postgres::Error> {
    let row = conn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?;
    let v: i64 = row.try_get(0)?;
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

/// The storage conformance suite, each test on its own new database.
#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod conformance {
    crate::conformance_tests!({
        match super::testing::TestDatabase::create().await {
            Some(db) => {
                let store = db.open().await;
                Some((db, store))
            }
            None => None,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::testing::TestDatabase;
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_opening_one_new_database_migrate_it_once() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let (a, b) = tokio::join!(
            PgStore::open(db.url(), Migrations::Apply, crate::store::test_pepper()),
            PgStore::open(db.url(), Migrations::Apply, crate::store::test_pepper())
        );
        let (a, _b) = (a.unwrap(), b.unwrap());
        let conn = a.db.conn().await.unwrap();
        let rows: i64 = conn
            .query_one("SELECT count(*) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, i64::from(latest_version()));
        assert_eq!(version_of(&conn).await.unwrap(), latest_version());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_that_may_not_migrate_refuses_an_unmigrated_database() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let Err(err) =
            PgStore::open(db.url(), Migrations::Require, crate::store::test_pepper()).await
        else {
            panic!("an empty database was accepted without migrating")
        };
        assert!(
            matches!(err, OpenError::NotMigrated { found: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("coditect-issuer migrate"), "{err}");
        PgStore::open(db.url(), Migrations::Apply, crate::store::test_pepper())
            .await
            .unwrap();
        PgStore::open(db.url(), Migrations::Require, crate::store::test_pepper())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_from_a_newer_build_is_refused() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = PgStore::open(db.url(), Migrations::Apply, crate::store::test_pepper())
            .await
            .unwrap();
        store
            .db
            .conn()
            .await
            .unwrap()
            .execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'future', 0)",
                &[&i64::from(latest_version() + 1)],
            )
            .await
            .unwrap();
        let Err(err) =
            PgStore::open(db.url(), Migrations::Apply, crate::store::test_pepper()).await
        else {
            panic!("a newer database was accepted")
        };
        assert!(
            matches!(err, OpenError::NewerSchema { found, .. } if found == latest_version() + 1),
            "{err}"
        );
        assert!(err.to_string().contains("newer than this build"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_data_is_a_failure_and_a_lost_connection_an_outage() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = PgStore::open(db.url(), Migrations::Apply, crate::store::test_pepper())
            .await
            .unwrap();
        let conn = store.db.conn().await.unwrap();
        // A text read as a number: the data is wrong, the database is fine.
        let row = conn.query_one("SELECT 'x'::text", &[]).await.unwrap();
        let err = StorageError::from(row.try_get::<_, i64>(0).unwrap_err());
        assert!(matches!(err, StorageError::Failed(_)), "{err:?}");
        let err = StorageError::from(
            conn.query_one("SELECT 1 WHERE false", &[])
                .await
                .unwrap_err(),
        );
        assert!(matches!(err, StorageError::Failed(_)), "{err:?}");
        // The server ends the connection.
        let victim = store.db.conn().await.unwrap();
        let pid: i32 = victim
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        conn.execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let err = StorageError::from(victim.query_one("SELECT 1", &[]).await.unwrap_err());
        assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_open_error_naming_it_without_the_password() {
        let url = PgUrl::parse("postgresql://issuer:hunter2@127.0.0.1:1/licenses").unwrap();
        let Err(err) = PgStore::open(&url, Migrations::Apply, crate::store::test_pepper()).await
        else {
            panic!("opened a database on port 1")
        };
        let text = err.to_string();
        assert!(
            text.contains("postgresql://issuer@127.0.0.1:1/licenses"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    /// TLS as the URL asks, against the server the tests use when it
    /// offers TLS (Debian's server does, with a self-signed certificate).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sslmode_require_encrypts_and_verify_full_refuses_an_untrusted_certificate() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let plain = PgStore::open(db.url(), Migrations::Apply, crate::store::test_pepper())
            .await
            .unwrap();
        let conn = plain.db.conn().await.unwrap();
        let ssl: String = conn.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        if ssl != "on" {
            eprintln!("skipped: the test server does not offer TLS");
            return;
        }
        let with = |mode: &str| {
            let base = db.url().redacted();
            PgUrl::parse(&format!("{base}?sslmode={mode}")).unwrap()
        };
        let tls = PgStore::open(
            &with("require"),
            Migrations::Apply,
            crate::store::test_pepper(),
        )
        .await
        .unwrap();
        let conn = tls.db.conn().await.unwrap();
        let encrypted: bool = conn
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(encrypted, "sslmode=require gave a plain connection");
        // The server's self-signed certificate is not trusted.
        let Err(err) = PgStore::open(
            &with("verify-full"),
            Migrations::Apply,
            crate::store::test_pepper(),
        )
        .await
        else {
            panic!("verify-full accepted an untrusted certificate")
        };
        assert!(matches!(err, OpenError::Open { .. }), "{err}");
    }
}
