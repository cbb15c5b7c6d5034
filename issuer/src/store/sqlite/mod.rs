//! The SQLite backend: a connection pool, the pragmas every connection
//! gets, the embedded migrations, and [`SqliteStore`], which implements the
//! storage interface with the SQL in this folder (one file per aggregate).
//!
//! All database work of one operation runs in one hop on tokio's blocking
//! threads ([`Db::run`]), never on the async workers. Writers take turns on
//! an async mutex rather than in SQLite's busy handler, which sleeps in
//! steps of milliseconds.

mod accounts;
mod audit;
mod billing;
mod checkouts;
mod identities;
mod licenses;
mod outbox;
mod rate_limits;
mod stats;
mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, TransactionBehavior};

use super::OpenError;
use crate::domain::StorageError;
use crate::domain::account::AccountError;
use crate::domain::billing::ApplyError;
use crate::domain::license::LicenseError;

pub use store::SqliteStore;

/// The numbered migrations in `migrations/`, embedded at build time.
/// Schema version N is the state after applying the first N.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "0001_initial.sql",
        include_str!("../../../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "0002_security.sql",
        include_str!("../../../../migrations/sqlite/0002_security.sql"),
    ),
    (
        3,
        "0003_billing.sql",
        include_str!("../../../../migrations/sqlite/0003_billing.sql"),
    ),
    (
        4,
        "0004_rate_limits.sql",
        include_str!("../../../../migrations/sqlite/0004_rate_limits.sql"),
    ),
    (
        5,
        "0005_seats.sql",
        include_str!("../../../../migrations/sqlite/0005_seats.sql"),
    ),
    (
        6,
        "0006_peppered_key_hashes.sql",
        include_str!("../../../../migrations/sqlite/0006_peppered_key_hashes.sql"),
    ),
    (
        7,
        "0007_accounts.sql",
        include_str!("../../../../migrations/sqlite/0007_accounts.sql"),
    ),
    (
        8,
        "0008_pilot_figures.sql",
        include_str!("../../../../migrations/sqlite/0008_pilot_figures.sql"),
    ),
    (
        9,
        "0009_provider_sign_in.sql",
        include_str!("../../../../migrations/sqlite/0009_provider_sign_in.sql"),
    ),
];

/// The schema version this build writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        super::counted(match e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                StorageError::Unavailable(e.to_string())
            }
            other => StorageError::Failed(other.to_string()),
        })
    }
}

impl From<r2d2::Error> for StorageError {
    fn from(e: r2d2::Error) -> Self {
        super::counted(StorageError::Unavailable(e.to_string()))
    }
}

/// `?` on SQL inside operations that answer with a domain error.
macro_rules! storage_error_from_sqlite {
    ($($t:ty),*) => {$(
        impl From<rusqlite::Error> for $t {
            fn from(e: rusqlite::Error) -> Self {
                <$t>::from(StorageError::from(e))
            }
        }
    )*};
}
storage_error_from_sqlite!(LicenseError, AccountError, ApplyError);

/// After a secret (a license key waiting to be mailed or shown) has been
/// wiped from a row: copies the WAL into the database and empties it, so
/// the old versions of the row's page are gone from disk too
/// (`secure_delete` zeroes them inside the database file). Best effort: a
/// reader in the middle of a transaction makes SQLite skip the truncation,
/// and the next scrub or checkpoint finishes the job.
fn scrub(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::debug!(error = %e, "checkpoint after wiping a secret was skipped");
    }
}

/// Why a backup could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} exists already; choose a new file (a backup never overwrites one)")]
    Exists(String),
    #[error("cannot write the backup at {path}: {reason}")]
    Write { path: String, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Copies the open database `conn` to a new file `out` (see
/// [`SqliteStore::backup_to`]).
fn backup(conn: &mut Connection, out: &Path) -> Result<(), BackupError> {
    let write_err = |e: &dyn std::fmt::Display| BackupError::Write {
        path: out.display().to_string(),
        reason: e.to_string(),
    };
    if out.exists() {
        return Err(BackupError::Exists(out.display().to_string()));
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let partial = tempfile::Builder::new()
        .prefix(".coditect-backup-")
        .tempfile_in(&dir)
        .map_err(|e| write_err(&e))?;
    {
        let mut dst = Connection::open(partial.path()).map_err(|e| write_err(&e))?;
        let copy = rusqlite::backup::Backup::new(conn, &mut dst).map_err(StorageError::from)?;
        copy.run_to_completion(512, Duration::ZERO, None)
            .map_err(StorageError::from)?;
    }
    // `persist_noclobber` refuses an `out` made in the meantime.
    partial
        .persist_noclobber(out)
        .map_err(|e| match e.error.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists(out.display().to_string()),
            _ => write_err(&e.error),
        })?;
    Ok(())
}

/// Creates the database file, empty and readable by its owner only (mode
/// 0600, whatever the umask), unless it exists. SQLite gives the `-wal`
/// and `-shm` files it makes beside it the database file's mode, so they
/// are 0600 too. An existing file keeps its mode (the operator's choice);
/// a mode that lets others read it is logged.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format!("{:o}", mode & 0o777),
                        "the database file can be read by others than its owner; consider chmod 600"
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A pool of connections to one SQLite file.
#[derive(Clone)]
pub(crate) struct Db {
    pool: r2d2::Pool<SqliteConnectionManager>,
    path: PathBuf,
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
    pub(crate) fn open(path: &Path) -> Result<Self, OpenError> {
        let open_err = |e: &dyn std::fmt::Display| OpenError::Open {
            location: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            crate::fsutil::create_private_dir_all(dir).map_err(|e| open_err(&e))?;
        }
        create_private_file(path).map_err(|e| open_err(&e))?;
        let mut first = Connection::open(path).map_err(|e| open_err(&e))?;
        configure(&mut first).map_err(|e| open_err(&e))?;
        migrate(&mut first, path)?;
        drop(first);
        let manager = SqliteConnectionManager::file(path).with_init(configure);
        let pool = r2d2::Pool::builder()
            .max_size(8)
            .connection_timeout(Duration::from_secs(30))
            .build(manager)
            .map_err(|e| open_err(&e))?;
        Ok(Db {
            pool,
            path: path.to_path_buf(),
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Runs `f` with a connection on a blocking thread.
    pub(crate) async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(StorageError::from)?;
            f(&mut conn)
        })
        .await
        .map_err(|e| E::from(StorageError::Failed(format!("database task failed: {e}"))))?
    }

    /// Like [`Db::run`], for work that writes: one writer at a time.
    pub(crate) async fn run_write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        let _turn = self.writer.lock().await;
        self.run(f).await
    }
}

impl Db {
    /// The pool's state.
    pub(crate) fn pool_status(&self) -> crate::store::PoolStatus {
        let state = self.pool.state();
        crate::store::PoolStatus {
            in_use: state.connections.saturating_sub(state.idle_connections),
            idle: state.idle_connections,
            max: self.pool.max_size(),
            waiting: 0,
        }
    }

    /// A connection on this thread: for work at opening (before any
    /// request) and for tests that look at the SQL itself.
    pub(crate) fn conn(
        &self,
    ) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, r2d2::Error> {
        self.pool.get()
    }
}

/// The schema version recorded in the database.
fn schema_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Applies every migration newer than the database, each in its own
/// transaction together with the version bump. Refuses a newer database.
fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, OpenError> {
    let failed = |name: &str, e: rusqlite::Error| OpenError::Migration {
        name: name.to_owned(),
        reason: e.to_string(),
    };
    let found = schema_version(conn).map_err(|e| failed("(reading the version)", e))?;
    let known = latest_version();
    if found > known {
        return Err(OpenError::NewerSchema {
            location: path.display().to_string(),
            found,
            known,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| failed(name, e))?;
        // Another process may have migrated while we waited for the lock.
        if schema_version(&tx).map_err(|e| failed(name, e))? >= *version {
            continue;
        }
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version))
            .and_then(|()| tx.commit())
            .map_err(|e| failed(name, e))?;
    }
    schema_version(conn).map_err(|e| failed("(reading the version)", e))
}

/// The storage conformance suite, on a fresh SQLite file per test.
#[cfg(test)]
mod conformance {
    crate::conformance_tests!({
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open_sqlite(
            &dir.path().join("conformance.sqlite3"),
            crate::store::test_pepper(),
        )
        .unwrap();
        Some((dir, store))
    });
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

    #[cfg(unix)]
    #[test]
    fn a_new_database_its_wal_and_shm_and_its_new_folder_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("db.sqlite3");
        let db = Db::open(&path).unwrap();
        let conn = db.conn().unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        for file in ["db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm"] {
            assert_eq!(mode(&dir.path().join("new").join(file)), 0o600, "{file}");
        }
        // A folder that exists keeps its mode.
        let shared = tempfile::tempdir().unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Db::open(&shared.path().join("db.sqlite3")).unwrap();
        assert_eq!(mode(shared.path()), 0o755);
        assert_eq!(mode(&shared.path().join("db.sqlite3")), 0o600);
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
        let on_disk =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite"))
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
