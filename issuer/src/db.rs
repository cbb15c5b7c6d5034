//! The SQLite store: a connection pool, the pragmas every connection gets,
//! and the embedded migrations.
//!
//! All database work runs on tokio's blocking threads ([`Db::run`]), never
//! on the async workers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, TransactionBehavior};

/// The numbered migrations in `migrations/`, embedded at build time.
/// Schema version N is the state after applying the first N.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "0001_initial.sql",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "0002_security.sql",
        include_str!("../../migrations/0002_security.sql"),
    ),
    (
        3,
        "0003_billing.sql",
        include_str!("../../migrations/0003_billing.sql"),
    ),
];

/// The schema version this build writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "the database at {path} has schema version {found}, newer than this build knows ({known}); run a newer coditect-issuer"
    )]
    NewerSchema {
        path: String,
        found: u32,
        known: u32,
    },
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("database task failed: {0}")]
    Task(String),
}

/// After a secret (a license key waiting to be mailed or shown) has been
/// wiped from a row: copies the WAL into the database and empties it, so
/// the old versions of the row's page are gone from disk too
/// (`secure_delete` zeroes them inside the database file). Best effort: a
/// reader in the middle of a transaction makes SQLite skip the truncation,
/// and the next scrub or checkpoint finishes the job.
pub fn scrub(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::debug!(error = %e, "checkpoint after wiping a secret was skipped");
    }
}

/// A pool of connections to one SQLite file.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<SqliteConnectionManager>,
    path: PathBuf,
    /// Our own writers take turns here rather than in SQLite's busy handler,
    /// which sleeps in steps of milliseconds.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn configure(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON;",
    )
}

impl Db {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| DbError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| open_err(Box::new(e)))?;
        }
        let mut first = Connection::open(path).map_err(|e| open_err(Box::new(e)))?;
        configure(&mut first).map_err(|e| open_err(Box::new(e)))?;
        migrate(&mut first, path)?;
        drop(first);
        let manager = SqliteConnectionManager::file(path).with_init(configure);
        let pool = r2d2::Pool::builder()
            .max_size(8)
            .connection_timeout(Duration::from_secs(30))
            .build(manager)
            .map_err(|e| open_err(Box::new(e)))?;
        Ok(Db {
            pool,
            path: path.to_path_buf(),
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A connection for synchronous (admin command) use.
    pub fn conn(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, DbError> {
        Ok(self.pool.get()?)
    }

    /// Runs `f` with a connection on a blocking thread.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(DbError::from)?;
            f(&mut conn)
        })
        .await
        .map_err(|e| E::from(DbError::Task(e.to_string())))?
    }

    /// Like [`Db::run`], for work that writes: one writer at a time.
    pub async fn run_write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let _turn = self.writer.lock().await;
        self.run(f).await
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        self.run(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(DbError::from)
        })
        .await
        .is_ok()
    }
}

/// The schema version recorded in the database.
pub fn schema_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Applies every migration newer than the database, each in its own
/// transaction together with the version bump. Refuses a newer database.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, DbError> {
    let found = schema_version(conn)?;
    let known = latest_version();
    if found > known {
        return Err(DbError::NewerSchema {
            path: path.display().to_string(),
            found,
            known,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| DbError::Migration { name, source })?;
        // Another process may have migrated while we waited for the lock.
        if schema_version(&tx)? >= *version {
            continue;
        }
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version))
            .and_then(|()| tx.commit())
            .map_err(|source| DbError::Migration { name, source })?;
    }
    Ok(schema_version(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_set_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let db = Db::open(&path).unwrap();
        let conn = db.conn().unwrap();
        assert_eq!(schema_version(&conn).unwrap(), latest_version());
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        drop(db);
        // Opening again changes nothing.
        Db::open(&path).unwrap();
    }

    #[test]
    fn a_newer_database_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        Db::open(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", latest_version() + 1)
            .unwrap();
        let Err(err) = Db::open(&path) else {
            panic!("newer database accepted")
        };
        assert!(err.to_string().contains("newer than this build"), "{err}");
    }

    #[test]
    fn migrations_are_numbered_in_order_and_match_their_files() {
        for (i, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1);
            assert!(name.starts_with(&format!("{version:04}_")));
        }
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".sql")
            })
            .count();
        assert_eq!(
            on_disk,
            MIGRATIONS.len(),
            "every migrations/*.sql is embedded"
        );
    }
}
