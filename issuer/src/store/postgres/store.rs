//! [`PgStore`]: the storage interface over a PostgreSQL database. The
//! traits are implemented one per file (`accounts.rs`, `licenses.rs`,
//! `billing/`, `outbox.rs`, `audit.rs`, `rate_limits.rs`); this file has
//! the handle and [`Store`] itself.

use async_trait::async_trait;

use super::{Db, PgUrl};
use crate::domain::StorageError;
use crate::store::{Migrations, OpenError, Store};

/// The PostgreSQL backend: any number of issuer processes may share one
/// database.
#[derive(Clone)]
pub struct PgStore {
    pub(super) db: Db,
}

impl PgStore {
    /// Connects, and applies pending migrations or (with
    /// [`Migrations::Require`]) refuses a database that needs them.
    pub async fn open(url: &PgUrl, migrations: Migrations) -> Result<Self, OpenError> {
        Ok(PgStore {
            db: Db::open(url, migrations).await?,
        })
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
}
