//! [`PgStore`]: the storage interface over a PostgreSQL database. The
//! traits are implemented one per file (`accounts.rs`, `licenses.rs`,
//! `billing/`, `outbox.rs`, `audit.rs`, `rate_limits.rs`); this file has
//! the handle and [`Store`] itself.

use async_trait::async_trait;

use super::{Db, PgUrl};
use crate::domain::StorageError;
use crate::domain::license_key::KeyPepper;
use crate::store::{Migrations, OpenError, Store};

/// The PostgreSQL backend: any number of issuer processes may share one
/// database.
#[derive(Clone)]
pub struct PgStore {
    pub(super) db: Db,
    /// Keys the stored hashes of license keys.
    pub(super) pepper: KeyPepper,
}

impl PgStore {
    /// Connects, and applies pending migrations or (with
    /// [`Migrations::Require`]) refuses a database that needs them; then
    /// converts license-key hashes of the scheme before the pepper to the
    /// peppered one under `pepper` (in either mode: it changes no schema,
    /// and keys an older issuer stored during an upgrade are found once an
    /// instance of this one starts).
    pub async fn open(
        url: &PgUrl,
        migrations: Migrations,
        pepper: KeyPepper,
    ) -> Result<Self, OpenError> {
        let db = Db::open(url, migrations).await?;
        let failed = |e: StorageError| OpenError::Migration {
            name: "(peppering license-key hashes)".into(),
            reason: e.to_string(),
        };
        let mut conn = db.conn().await.map_err(failed)?;
        let upgraded = super::licenses::upgrade_legacy_key_hashes(&mut conn, &pepper)
            .await
            .map_err(failed)?;
        if upgraded > 0 {
            tracing::info!(
                licenses = upgraded,
                "converted license-key hashes to the peppered scheme"
            );
        }
        Ok(PgStore { db, pepper })
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StorageError> {
        let conn = self.db.conn().await?;
        conn.simple_query("SELECT 1").await?;
        Ok(())
    }

    async fn schema_version(&self) -> Result<u32, StorageError> {
        let conn = self.db.conn().await?;
        Ok(super::version_of(&conn).await?)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn location(&self) -> String {
        self.db.location().to_owned()
    }

    fn pool_status(&self) -> crate::store::PoolStatus {
        let status = self.db.pool.status();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        crate::store::PoolStatus {
            in_use: count(status.size.saturating_sub(status.available)),
            idle: count(status.available),
            max: count(status.max_size),
            waiting: count(status.waiting),
        }
    }
}
