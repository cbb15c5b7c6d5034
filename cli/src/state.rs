//! The CLI's files: the license state (token, key, clock high-water mark),
//! the login session and the list of initialised projects.
//!
//! Files are written atomically (temporary file + rename) and readable by
//! the user only (0600, in a 0700 directory). A corrupt or foreign file gives
//! a clear error and a way out, never a panic.
//!
//! On Windows the state lives in the user's local (not roaming) application
//! data, `%LOCALAPPDATA%\CODITECT\coditect\config`: the license is bound to
//! this machine, and a roaming profile would carry it to others. Its
//! access list is the one it inherits from the user's profile (the user,
//! SYSTEM and Administrators), Windows' counterpart of the 0700 folder; the
//! rename replaces the file in one step (`MoveFileExW` with
//! `MOVEFILE_REPLACE_EXISTING`, through the standard library).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

const LICENSE_FORMAT: &str = "coditect-license-state-v1";
const SESSION_FORMAT: &str = "coditect-session-v1";
const PROJECTS_FORMAT: &str = "coditect-projects-v1";

/// Where the state lives: `$CODITECT_HOME`, else the OS config directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
}

impl Paths {
    pub fn resolve() -> CliResult<Self> {
        if let Some(home) = std::env::var_os("CODITECT_HOME").filter(|v| !v.is_empty()) {
            return Ok(Paths { home: home.into() });
        }
        // The local configuration folder: the same as the configuration
        // folder on Linux and macOS; on Windows the non-roaming one.
        directories::ProjectDirs::from("ai", "CODITECT", "coditect")
            .map(|d| Paths {
                home: d.config_local_dir().to_path_buf(),
            })
            .ok_or_else(|| {
                CliError::user(
                    "no_home",
                    "cannot find a configuration directory for coditect",
                    Some("set CODITECT_HOME to a directory coditect may write to".to_owned()),
                )
            })
    }

    pub fn license(&self) -> PathBuf {
        self.home.join("license.json")
    }

    pub fn session(&self) -> PathBuf {
        self.home.join("session.json")
    }

    pub fn projects(&self) -> PathBuf {
        self.home.join("projects.json")
    }
}

/// Why the issuer last refused this machine's license, kept so that every
/// command can say so without going online again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refusal {
    pub code: String,
    pub message: String,
    pub at: u64,
}

/// The activated license of this machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LicenseState {
    pub format: String,
    /// Needed to renew; absent after an offline import without a key.
    pub license_key: Option<String>,
    /// The license token, base64url.
    pub token: String,
    /// The issuer the license was activated with.
    pub server: Option<String>,
    pub machine_name: Option<String>,
    /// When the issuer last confirmed the license (the newest token's `iat`).
    pub last_verified_at: u64,
    /// The latest time this machine has seen; the clock may not go behind it.
    pub high_water: u64,
    /// Set when a renewal was refused (revoked, canceled, …).
    pub refused: Option<Refusal>,
    /// The license's seat transfers as the issuer last reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfers: Option<proto::TransfersView>,
}

impl LicenseState {
    pub fn new(
        license_key: Option<String>,
        token: String,
        server: Option<String>,
        machine_name: Option<String>,
        verified_at: u64,
    ) -> Self {
        LicenseState {
            format: LICENSE_FORMAT.into(),
            license_key,
            token,
            server,
            machine_name,
            last_verified_at: verified_at,
            high_water: verified_at,
            refused: None,
            transfers: None,
        }
    }
}

/// A login session for the account commands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub format: String,
    pub server: String,
    pub email: String,
    pub access_token: String,
    pub expires_at: String,
}

impl Session {
    pub fn new(server: String, email: String, access_token: String, expires_at: String) -> Self {
        Session {
            format: SESSION_FORMAT.into(),
            server,
            email,
            access_token,
            expires_at,
        }
    }
}

/// One initialised project.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Project {
    pub path: PathBuf,
    pub created_at: u64,
}

/// The projects initialised on this machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Projects {
    pub format: String,
    pub projects: Vec<Project>,
}

impl Default for Projects {
    fn default() -> Self {
        Projects {
            format: PROJECTS_FORMAT.into(),
            projects: Vec::new(),
        }
    }
}

fn corrupt(path: &Path, why: &str, fix: &str) -> CliError {
    CliError::user(
        "state_corrupt",
        format!("{} is unreadable: {why}", path.display()),
        Some(fix.to_owned()),
    )
}

fn read<T: DeserializeOwned>(path: &Path, format: &str, fix: &str) -> CliResult<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(corrupt(path, &e.to_string(), fix)),
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| corrupt(path, "it is not a coditect state file", fix))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(format) {
        return Err(corrupt(
            path,
            "it was written by another program or another version of coditect",
            fix,
        ));
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| corrupt(path, &format!("unexpected content ({e})"), fix))
}

const LICENSE_FIX: &str = "run `coditect activate` to activate again; it replaces the file";

pub fn load_license(paths: &Paths) -> CliResult<Option<LicenseState>> {
    read(&paths.license(), LICENSE_FORMAT, LICENSE_FIX)
}

pub fn save_license(paths: &Paths, state: &LicenseState) -> CliResult<()> {
    write_json(&paths.license(), state)
}

pub fn remove_license(paths: &Paths) -> CliResult<()> {
    remove(&paths.license())
}

pub fn load_session(paths: &Paths) -> CliResult<Option<Session>> {
    read(
        &paths.session(),
        SESSION_FORMAT,
        "run `coditect login` again; it replaces the file",
    )
}

pub fn save_session(paths: &Paths, session: &Session) -> CliResult<()> {
    write_json(&paths.session(), session)
}

pub fn remove_session(paths: &Paths) -> CliResult<()> {
    remove(&paths.session())
}

pub fn load_projects(paths: &Paths) -> CliResult<Projects> {
    Ok(read(
        &paths.projects(),
        PROJECTS_FORMAT,
        "delete the file; coditect rebuilds the list as you run `coditect init`",
    )?
    .unwrap_or_default())
}

pub fn save_projects(paths: &Paths, projects: &Projects) -> CliResult<()> {
    write_json(&paths.projects(), projects)
}

fn remove(path: &Path) -> CliResult<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::user(
            "state_write",
            format!("cannot remove {}: {e}", path.display()),
            None,
        )),
    }
}

/// Writes one of the CLI's state files (in its own state folder, which is
/// made owner-only).
fn write_json<T: Serialize>(path: &Path, value: &T) -> CliResult<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| CliError::unexpected("state_write", e.to_string()))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    private_state_dir(dir)
        .and_then(|()| write_private(path, &bytes))
        .map_err(|e| {
            CliError::user(
                "state_write",
                format!("cannot write {}: {e}", path.display()),
                Some("check that the directory is writable, or set CODITECT_HOME".to_owned()),
            )
        })
}

/// The CLI's state folder: created owner-only (0700), and an existing one
/// made so too, unless it is a shared folder (world-writable or sticky,
/// such as `/tmp` named by `CODITECT_HOME`), whose mode is never changed.
fn private_state_dir(dir: &Path) -> std::io::Result<()> {
    create_dirs(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        let shared = mode & 0o1002 != 0;
        if !shared && mode & 0o777 != 0o700 {
            // Best effort, as the files in it are 0600 anyway.
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    Ok(())
}

/// Creates `dir` and missing parents, new ones owner-only (0700); folders
/// that exist keep their mode.
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Atomic, owner-only write of a file (0600). The folder it goes into is
/// created if missing but otherwise left as it is: it may be the user's
/// own (an offline request written to `/tmp/req.json`).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    create_dirs(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(bytes)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    // Windows refuses to replace a file another program holds open without
    // sharing its deletion (a virus scanner, an indexer, briefly): try a
    // few more times before giving up. Elsewhere the rename never waits.
    let mut retries = if cfg!(windows) { 20 } else { 0 };
    loop {
        match tmp.persist(path) {
            Ok(_) => return Ok(()),
            Err(e) if retries > 0 && e.error.kind() == std::io::ErrorKind::PermissionDenied => {
                retries -= 1;
                tmp = e.file;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e.error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths {
            home: dir.path().join("home"),
        };
        (dir, p)
    }

    #[test]
    fn license_state_round_trips_with_owner_only_permissions() {
        let (_d, p) = paths();
        assert_eq!(load_license(&p).unwrap(), None);
        let s = LicenseState::new(Some("K".into()), "T".into(), None, None, 5);
        save_license(&p, &s).unwrap();
        assert_eq!(load_license(&p).unwrap(), Some(s));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p.license()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_or_foreign_files_give_a_way_out() {
        let (_d, p) = paths();
        std::fs::create_dir_all(&p.home).unwrap();
        for content in [
            &b"\x00\xff garbage"[..],
            b"{\"format\":\"other\"}",
            b"[]",
            b"{\"format\":\"coditect-license-state-v1\"}",
        ] {
            std::fs::write(p.license(), content).unwrap();
            let err = load_license(&p).unwrap_err();
            assert_eq!(err.code, "state_corrupt");
            assert!(err.hint.unwrap().contains("coditect activate"));
        }
    }
}
