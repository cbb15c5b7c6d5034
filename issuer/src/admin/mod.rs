//! Admin commands: run locally by an operator, never over HTTP. They parse
//! their arguments and call the use cases (`app`) and the store, like the
//! HTTP handlers do; one file per command group.

mod audit;
mod keys;
mod licenses;
mod mail;
mod offline;
mod stats;

pub use self::audit::audit_list;
pub use self::keys::{keys_generate, keys_list};
pub use self::licenses::{
    CreateArgs, license_create, license_free, license_list, license_revoke, license_show,
    parse_expiry,
};
pub use self::mail::{mail_list, mail_retry};
pub use self::offline::{
    OFFLINE_REQUEST_FORMAT, OFFLINE_TOKEN_FORMAT, OfflineRequest, OfflineToken, issue_offline,
};
pub use self::stats::stats;

use crate::config::{ConfigError, DatabaseLocation, Overrides};
use crate::domain::StorageError;
use crate::domain::license::LicenseError;
use crate::serve::{load_config, migrations_for, open_store};
use crate::store::sqlite::{BackupError, SqliteStore};
use crate::store::{Migrations, OpenError, SharedStore};

/// Why a command failed; the exit code tells scripts whether it was the
/// operator's input (1) or something unexpected (2).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    User(String),
    #[error("{0}")]
    Unexpected(String),
}

impl AdminError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::User(_) => 1,
            AdminError::Unexpected(_) => 2,
        }
    }
}

impl From<ConfigError> for AdminError {
    fn from(e: ConfigError) -> Self {
        AdminError::User(format!("configuration: {e}"))
    }
}

impl From<OpenError> for AdminError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::NewerSchema { .. } | OpenError::NotMigrated { .. } => {
                AdminError::User(e.to_string())
            }
            other => AdminError::Unexpected(other.to_string()),
        }
    }
}

impl From<StorageError> for AdminError {
    fn from(e: StorageError) -> Self {
        AdminError::Unexpected(e.to_string())
    }
}

impl From<LicenseError> for AdminError {
    fn from(e: LicenseError) -> Self {
        match e {
            LicenseError::Storage(s) => s.into(),
            LicenseError::Signing(s) => AdminError::Unexpected(s),
            other => AdminError::User(other.to_string()),
        }
    }
}

/// Runs one admin command's storage work: the store is async (it serves
/// the API too), the commands are not. One runtime serves the whole
/// command, so that the store's connections (made in it) stay usable.
pub(crate) fn run<T>(
    work: impl std::future::Future<Output = Result<T, AdminError>>,
) -> Result<T, AdminError> {
    runtime()?.block_on(work)
}

fn runtime() -> Result<&'static tokio::runtime::Runtime, AdminError> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminError::Unexpected(format!("cannot start the runtime: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// The configured store.
pub(crate) fn store() -> Result<SharedStore, AdminError> {
    let config = load_config(&Overrides::default())?;
    run(open_store(&config, migrations_for(&config)))
}

impl From<crate::keys::KeyFileError> for AdminError {
    fn from(e: crate::keys::KeyFileError) -> Self {
        AdminError::User(e.to_string())
    }
}

pub(crate) fn print_json(value: &serde_json::Value) -> Result<(), AdminError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| AdminError::Unexpected(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// `coditect-issuer backup --out FILE`: a consistent copy of the SQLite
/// database, made while the server may be serving. PostgreSQL has its own
/// tools (`pg_dump`, Cloud SQL's automated backups).
pub fn backup(out: &std::path::Path, json: bool) -> Result<(), AdminError> {
    let config = load_config(&Overrides::default())?;
    let path = match &config.database {
        DatabaseLocation::Sqlite(path) => path.clone(),
        DatabaseLocation::Postgres(url) => {
            return Err(AdminError::User(format!(
                "backup copies the SQLite database; {} is PostgreSQL: use \
                 `pg_dump --format=custom --file=FILE \"$DATABASE_URL\"` (restore with pg_restore) \
                 or Cloud SQL's automated backups",
                url.redacted()
            )));
        }
    };
    if !path.is_file() {
        return Err(AdminError::User(format!(
            "there is no database at {} to back up",
            path.display()
        )));
    }
    let store = SqliteStore::open(&path, config.license_key_pepper.clone())?;
    run(async {
        store.backup_to(out).await.map_err(|e| match e {
            BackupError::Storage(s) => AdminError::Unexpected(s.to_string()),
            other => AdminError::User(other.to_string()),
        })
    })?;
    if json {
        print_json(&serde_json::json!({
            "database": path.display().to_string(),
            "backup": out.display().to_string(),
        }))
    } else {
        println!("backed up {} to {}", path.display(), out.display());
        println!(
            "restore: stop the issuer, then point DATABASE_URL at the copy (or copy it over {})",
            path.display()
        );
        println!(
            "the license keys in it are found only under the same LICENSE_KEY_PEPPER: keep the pepper with the backup, apart from it"
        );
        Ok(())
    }
}

pub fn migrate() -> Result<(), AdminError> {
    let config = load_config(&Overrides::default())?;
    let store = run(open_store(&config, Migrations::Apply))?;
    let version = run(async { Ok(store.schema_version().await?) })?;
    println!(
        "database {} is at schema version {version}",
        store.location()
    );
    Ok(())
}
