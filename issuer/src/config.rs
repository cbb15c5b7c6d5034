//! Configuration from environment variables (listed with their defaults in
//! `.env.example`). Secrets may come from `NAME_FILE` instead of `NAME`.
//!
//! With nothing set, the issuer runs for development: SQLite in the user's
//! data directory and the development signing key. In production
//! (`CODITECT_ENV=production`) it refuses to start without real secrets.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use verifier::TokenSigner;
use zeroize::Zeroizing;

use crate::keys;

/// Development (the default) or production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Local runs and tests: development key and generated secrets allowed.
    Development,
    /// Real deployment: every secret must be configured.
    Production,
}

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// An SQLite file.
    Sqlite(PathBuf),
}

/// What the configuration refused. Messages name variables, never values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error(
        "production mode refuses the development signing key; set SIGNING_KEY_FILE to the production key"
    )]
    DevelopmentKeyInProduction,
    #[error("production mode needs a signing key: set SIGNING_KEY_FILE (or SIGNING_KEY)")]
    MissingSigningKey,
    #[error("production mode needs JWT_SECRET (or JWT_SECRET_FILE) of at least 32 bytes")]
    WeakJwtSecret,
    #[error("no data directory: set CODITECT_DATA_DIR")]
    NoDataDir,
    #[error("{0}")]
    Key(String),
}

/// The whole configuration of the issuer.
pub struct Config {
    pub environment: Environment,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseLocation,
    pub public_base_url: String,
    pub jwt_secret: Zeroizing<Vec<u8>>,
    pub jwt_expiry: Duration,
    pub signer: TokenSigner,
    pub signing_key_is_development: bool,
    pub token_lifetime: Duration,
    pub token_renew_after: Duration,
    pub enable_pilot_signup: bool,
    pub pilot_users_limit: u32,
    /// Request rate limits (`RATE_LIMIT_*`).
    pub rate_limits: RateLimits,
    /// How many reverse proxies in front of the issuer append to
    /// `X-Forwarded-For` (`TRUST_PROXY`; 0: the header is ignored).
    pub trust_proxy: usize,
}

/// A number of requests per period: `5/min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed in one period (also the largest burst).
    pub count: NonZeroU32,
    /// The period.
    pub per: Per,
}

/// The period of a [`Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        })
    }

    fn unit(self) -> &'static str {
        match self {
            Per::Second => "sec",
            Per::Minute => "min",
            Per::Hour => "hour",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Per::Second => "second",
            Per::Minute => "minute",
            Per::Hour => "hour",
        }
    }
}

/// Largest count a rate may have.
const MAX_RATE_COUNT: u32 = 1_000_000;

impl Rate {
    /// Parses `N/sec`, `N/min` or `N/hour` (also `s`, `second`, `m`,
    /// `minute`, `h`; any case, spaces allowed), N from 1 to 1,000,000.
    pub fn parse(text: &str) -> Option<Self> {
        let (count, unit) = text.split_once('/')?;
        let count: u32 = count.trim().parse().ok()?;
        if count > MAX_RATE_COUNT {
            return None;
        }
        let per = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => Per::Second,
            "m" | "min" | "minute" => Per::Minute,
            "h" | "hour" => Per::Hour,
            _ => return None,
        };
        Some(Rate {
            count: NonZeroU32::new(count)?,
            per,
        })
    }

    /// In words, for messages: `5 per minute`.
    pub fn describe(&self) -> String {
        format!("{} per {}", self.count, self.per.word())
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.count, self.per.unit())
    }
}

/// The request rate limits (see `api::rate_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `POST /api/v1/auth/login`, per client IP (`RATE_LIMIT_LOGIN`, 5/min).
    pub login: Rate,
    /// `POST /api/v1/auth/signup`, per client IP (`RATE_LIMIT_SIGNUP`, 3/min).
    pub signup: Rate,
    /// `POST /api/v1/licenses/validate`, per license key
    /// (`RATE_LIMIT_VALIDATE`, 60/min).
    pub validate: Rate,
    /// `POST /api/v1/licenses/activate`, per license key
    /// (`RATE_LIMIT_ACTIVATE`, 10/hour).
    pub activate: Rate,
    /// Every request that carries a license key (validate, activate,
    /// deactivate, features), together, per client IP, so that nobody can
    /// try many keys (`RATE_LIMIT_LICENSE_IP`, 120/min).
    pub license_ip: Rate,
}

const fn rate(count: u32, per: Per) -> Rate {
    match NonZeroU32::new(count) {
        Some(count) => Rate { count, per },
        None => panic!("a rate limit is at least 1"),
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            login: rate(5, Per::Minute),
            signup: rate(3, Per::Minute),
            validate: rate(60, Per::Minute),
            activate: rate(10, Per::Hour),
            license_ip: rate(120, Per::Minute),
        }
    }
}

impl RateLimits {
    fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        let defaults = RateLimits::default();
        Ok(RateLimits {
            login: rate_var(env, "RATE_LIMIT_LOGIN", defaults.login)?,
            signup: rate_var(env, "RATE_LIMIT_SIGNUP", defaults.signup)?,
            validate: rate_var(env, "RATE_LIMIT_VALIDATE", defaults.validate)?,
            activate: rate_var(env, "RATE_LIMIT_ACTIVATE", defaults.activate)?,
            license_ip: rate_var(env, "RATE_LIMIT_LICENSE_IP", defaults.license_ip)?,
        })
    }
}

fn rate_var(env: &dyn Env, name: &'static str, default: Rate) -> Result<Rate, ConfigError> {
    match env.get(name) {
        None => Ok(default),
        Some(text) => Rate::parse(&text).ok_or_else(|| {
            invalid(
                name,
                "must be a number of requests (1 to 1000000) per sec, min or hour, such as 5/min",
            )
        }),
    }
}

/// Largest `TRUST_PROXY`.
const MAX_TRUSTED_PROXIES: usize = 10;

fn trust_proxy(env: &dyn Env) -> Result<usize, ConfigError> {
    match env.get("TRUST_PROXY") {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_TRUSTED_PROXIES)
            .ok_or_else(|| {
                invalid(
                    "TRUST_PROXY",
                    "must be the number of proxies in front of the issuer, at most ten (Cloud Run: one)",
                )
            }),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are left out on purpose.
        f.debug_struct("Config")
            .field("environment", &self.environment)
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("database", &self.database)
            .field("public_base_url", &self.public_base_url)
            .field("kid", &self.signer.kid())
            .field(
                "signing_key_is_development",
                &self.signing_key_is_development,
            )
            .field("token_lifetime", &self.token_lifetime)
            .field("token_renew_after", &self.token_renew_after)
            .field("rate_limits", &self.rate_limits)
            .field("trust_proxy", &self.trust_proxy)
            .finish_non_exhaustive()
    }
}

/// Notes for the log about choices made for the operator (development key,
/// generated JWT secret). Never contains a secret.
pub type Notices = Vec<String>;

/// A read-only view of the environment, so tests pass their own.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
            .filter(|v| !v.is_empty())
    }
}

const DEFAULT_BIND: &str = "127.0.0.1:8080";

/// Options that come from the command line rather than the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<SocketAddr>,
}

impl Config {
    /// Reads the configuration; `notices` collects what the log should say.
    pub fn load(
        env: &dyn Env,
        overrides: &Overrides,
        notices: &mut Notices,
    ) -> Result<Self, ConfigError> {
        let environment = match env.get("CODITECT_ENV").as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(_) => {
                return Err(invalid(
                    "CODITECT_ENV",
                    "must be `development` or `production`",
                ));
            }
        };
        let production = environment == Environment::Production;

        let bind = match (overrides.bind, env.get("PORT")) {
            (Some(addr), _) => addr,
            (None, Some(port)) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| invalid("PORT", "must be a port number"))?;
                SocketAddr::from(([0, 0, 0, 0], port))
            }
            (None, None) => DEFAULT_BIND
                .parse()
                .map_err(|_| invalid("--bind", "bad default"))?,
        };

        let data_dir = match env.get("CODITECT_DATA_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => directories::ProjectDirs::from("ai", "CODITECT", "coditect-issuer")
                .map(|d| d.data_dir().to_path_buf())
                .ok_or(ConfigError::NoDataDir)?,
        };

        let database = match env.get("DATABASE_URL") {
            None => DatabaseLocation::Sqlite(data_dir.join("issuer.sqlite3")),
            Some(url) => parse_database_url(&url)?,
        };

        let public_base_url = env
            .get("PUBLIC_BASE_URL")
            .unwrap_or_else(|| format!("http://{bind}"))
            .trim_end_matches('/')
            .to_owned();
        if !(public_base_url.starts_with("http://") || public_base_url.starts_with("https://")) {
            return Err(invalid(
                "PUBLIC_BASE_URL",
                "must start with http:// or https://",
            ));
        }

        let jwt_secret = match secret(env, "JWT_SECRET")? {
            Some(s) if s.len() >= 32 => Zeroizing::new(s.as_bytes().to_vec()),
            Some(_) if production => return Err(ConfigError::WeakJwtSecret),
            None if production => return Err(ConfigError::WeakJwtSecret),
            Some(s) => {
                notices.push(
                    "JWT_SECRET is shorter than 32 bytes; acceptable only in development".into(),
                );
                Zeroizing::new(s.as_bytes().to_vec())
            }
            None => {
                notices.push(format!(
                    "JWT_SECRET is not set; using a generated secret kept in {}",
                    data_dir.join("jwt-secret").display()
                ));
                development_jwt_secret(&data_dir)?
            }
        };

        let jwt_expiry = duration(env, "JWT_EXPIRY", "24h")?;
        let token_lifetime = duration(env, "TOKEN_LIFETIME", "72h")?;
        let token_renew_after = duration(env, "TOKEN_RENEW_AFTER", "24h")?;
        if token_renew_after >= token_lifetime {
            return Err(invalid(
                "TOKEN_RENEW_AFTER",
                "must be shorter than TOKEN_LIFETIME",
            ));
        }

        let (signer, signing_key_is_development) = signer(env, production, notices)?;

        let enable_pilot_signup = boolean(env, "ENABLE_PILOT_SIGNUP", true)?;
        let pilot_users_limit = match env.get("PILOT_USERS_LIMIT") {
            None => 100,
            Some(v) => v
                .parse()
                .map_err(|_| invalid("PILOT_USERS_LIMIT", "must be a whole number"))?,
        };

        let rate_limits = RateLimits::load(env)?;
        let trust_proxy = trust_proxy(env)?;

        Ok(Config {
            environment,
            bind,
            data_dir,
            database,
            public_base_url,
            jwt_secret,
            jwt_expiry,
            signer,
            signing_key_is_development,
            token_lifetime,
            token_renew_after,
            enable_pilot_signup,
            pilot_users_limit,
            rate_limits,
            trust_proxy,
        })
    }
}

fn invalid(var: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.to_owned(),
    }
}

/// `DATABASE_URL`: a file path, or `sqlite://PATH`.
pub fn parse_database_url(url: &str) -> Result<DatabaseLocation, ConfigError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(invalid("DATABASE_URL", "sqlite:// needs a file path"));
        }
        return Ok(DatabaseLocation::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(invalid(
            "DATABASE_URL",
            "PostgreSQL is not supported yet; use a file path or sqlite://PATH",
        ));
    }
    if url.contains("://") {
        return Err(invalid(
            "DATABASE_URL",
            "unknown scheme; use a file path or sqlite://PATH",
        ));
    }
    Ok(DatabaseLocation::Sqlite(PathBuf::from(url)))
}

/// `NAME` or the contents of the file named by `NAME_FILE` (not both).
fn secret(env: &dyn Env, name: &'static str) -> Result<Option<Zeroizing<String>>, ConfigError> {
    let file_var = format!("{name}_FILE");
    match (env.get(name), env.get(&file_var)) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid {
            var: name,
            reason: format!("set either {name} or {file_var}, not both"),
        }),
        (Some(v), None) => Ok(Some(Zeroizing::new(v))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
                var: name,
                reason: format!("cannot read {file_var} ({path}): {e}"),
            })?;
            Ok(Some(Zeroizing::new(
                text.trim_end_matches(['\n', '\r']).to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

fn duration(env: &dyn Env, name: &'static str, default: &str) -> Result<Duration, ConfigError> {
    let text = env.get(name).unwrap_or_else(|| default.to_owned());
    let d = humantime::parse_duration(&text)
        .map_err(|_| invalid(name, "must be a duration such as 30m, 24h or 3days"))?;
    if d.is_zero() {
        return Err(invalid(name, "must be longer than zero"));
    }
    Ok(d)
}

fn boolean(env: &dyn Env, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match env.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(_) => Err(invalid(name, "must be true or false")),
    }
}

fn signer(
    env: &dyn Env,
    production: bool,
    notices: &mut Notices,
) -> Result<(TokenSigner, bool), ConfigError> {
    let key_file = env.get("SIGNING_KEY_FILE");
    let (key, origin, file_kid): (SigningKey, String, Option<String>) =
        match (env.get("SIGNING_KEY"), key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "SIGNING_KEY",
                    "set either SIGNING_KEY or SIGNING_KEY_FILE, not both",
                ));
            }
            (Some(pem), None) => (
                keys::parse_pem(&Zeroizing::new(pem), "SIGNING_KEY")
                    .map_err(|e| ConfigError::Key(e.to_string()))?,
                "SIGNING_KEY".into(),
                None,
            ),
            (None, Some(path)) => {
                let path = PathBuf::from(path);
                let key =
                    keys::read_pem_file(&path).map_err(|e| ConfigError::Key(e.to_string()))?;
                (key, path.display().to_string(), kid_from_file_name(&path))
            }
            (None, None) if production => return Err(ConfigError::MissingSigningKey),
            (None, None) => (
                keys::parse_pem(keys::DEVELOPMENT_KEY_PEM, "development key")
                    .map_err(|e| ConfigError::Key(e.to_string()))?,
                "development key".into(),
                None,
            ),
        };
    let dev_public = keys::parse_pem(keys::DEVELOPMENT_KEY_PEM, "development key")
        .map_err(|e| ConfigError::Key(e.to_string()))?
        .verifying_key();
    let is_development = key.verifying_key() == dev_public;
    if is_development && production {
        return Err(ConfigError::DevelopmentKeyInProduction);
    }
    let kid = if is_development {
        keys::DEVELOPMENT_KID.to_owned()
    } else {
        env.get("SIGNING_KEY_ID")
            .or(file_kid)
            .unwrap_or_else(|| keys::default_kid(&key.verifying_key()))
    };
    if is_development {
        notices.push(format!(
            "signing with the DEVELOPMENT key (kid {kid}, from {origin}); only development builds of the CLI trust its tokens"
        ));
    }
    let signer = TokenSigner::new(&kid, key).map_err(|e| ConfigError::Invalid {
        var: "SIGNING_KEY_ID",
        reason: e.to_string(),
    })?;
    Ok((signer, is_development))
}

/// `keys generate` names files `<kid>.pem`; such a file keeps its kid.
fn kid_from_file_name(path: &Path) -> Option<String> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".pem")?;
    verifier::is_valid_kid(stem).then(|| stem.to_owned())
}

/// In development without JWT_SECRET, a random secret is kept in the data
/// directory so sessions survive a restart.
fn development_jwt_secret(data_dir: &Path) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let path = data_dir.join("jwt-secret");
    let io = |e: std::io::Error| ConfigError::Invalid {
        var: "JWT_SECRET",
        reason: format!("cannot keep a generated secret in {}: {e}", path.display()),
    };
    if let Ok(existing) = std::fs::read(&path)
        && existing.len() >= 32
    {
        return Ok(Zeroizing::new(existing));
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let mut secret = Zeroizing::new(vec![0u8; 32]);
    getrandom::fill(&mut secret).map_err(|e| ConfigError::Key(e.to_string()))?;
    let hexed = Zeroizing::new(hex::encode(&*secret).into_bytes());
    crate::fsutil::write_private_file(&path, &hexed).map_err(io)?;
    Ok(hexed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &dyn Env) -> Result<Config, ConfigError> {
        Config::load(env, &Overrides::default(), &mut Vec::new())
    }

    #[test]
    fn development_runs_with_nothing_but_a_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let mut notices = Vec::new();
        let cfg = Config::load(
            &[("CODITECT_DATA_DIR", d)],
            &Overrides::default(),
            &mut notices,
        )
        .unwrap();
        assert_eq!(cfg.environment, Environment::Development);
        assert!(cfg.signing_key_is_development);
        assert_eq!(cfg.signer.kid(), keys::DEVELOPMENT_KID);
        assert_eq!(
            cfg.database,
            DatabaseLocation::Sqlite(dir.path().join("issuer.sqlite3"))
        );
        assert_eq!(cfg.token_lifetime, Duration::from_secs(72 * 3600));
        assert_eq!(cfg.token_renew_after, Duration::from_secs(24 * 3600));
        assert!(notices.iter().any(|n| n.contains("DEVELOPMENT key")));
        // The generated JWT secret is stable across restarts.
        let again = load(&[("CODITECT_DATA_DIR", d)]).unwrap();
        assert_eq!(*cfg.jwt_secret, *again.jwt_secret);
    }

    #[test]
    fn production_refuses_missing_or_weak_secrets_and_the_dev_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let strong = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            load(&[("CODITECT_DATA_DIR", d), ("CODITECT_ENV", "production")]).unwrap_err(),
            ConfigError::WeakJwtSecret
        );
        assert_eq!(
            load(&[
                ("CODITECT_DATA_DIR", d),
                ("CODITECT_ENV", "production"),
                ("JWT_SECRET", "short")
            ])
            .unwrap_err(),
            ConfigError::WeakJwtSecret
        );
        assert_eq!(
            load(&[
                ("CODITECT_DATA_DIR", d),
                ("CODITECT_ENV", "production"),
                ("JWT_SECRET", strong)
            ])
            .unwrap_err(),
            ConfigError::MissingSigningKey
        );
        let dev_key = format!(
            "{}/../keys/development/coditect-dev.private.pem",
            env!("CARGO_MANIFEST_DIR")
        );
        assert_eq!(
            load(&[
                ("CODITECT_DATA_DIR", d),
                ("CODITECT_ENV", "production"),
                ("JWT_SECRET", strong),
                ("SIGNING_KEY_FILE", &dev_key)
            ])
            .unwrap_err(),
            ConfigError::DevelopmentKeyInProduction
        );
        let prod = dir.path().join("prod-2026.pem");
        keys::write_pem_file(&prod, &keys::generate().unwrap()).unwrap();
        let cfg = load(&[
            ("CODITECT_DATA_DIR", d),
            ("CODITECT_ENV", "production"),
            ("JWT_SECRET", strong),
            ("SIGNING_KEY_FILE", prod.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(cfg.signer.kid(), "prod-2026");
        assert!(!cfg.signing_key_is_development);
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            parse_database_url("sqlite:///var/lib/x.db"),
            Ok(DatabaseLocation::Sqlite("/var/lib/x.db".into()))
        );
        assert_eq!(
            parse_database_url("data/x.db"),
            Ok(DatabaseLocation::Sqlite("data/x.db".into()))
        );
        assert!(parse_database_url("postgres://u@h/db").is_err());
        assert!(parse_database_url("mysql://h/db").is_err());
        assert!(parse_database_url("sqlite://").is_err());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        for (var, value) in [
            ("JWT_EXPIRY", "soon"),
            ("TOKEN_LIFETIME", "0s"),
            ("PORT", "eighty"),
            ("ENABLE_PILOT_SIGNUP", "maybe"),
            ("PILOT_USERS_LIMIT", "-1"),
            ("CODITECT_ENV", "staging"),
            ("PUBLIC_BASE_URL", "ftp://x"),
        ] {
            let err = load(&[("CODITECT_DATA_DIR", d), (var, value)]).unwrap_err();
            assert!(err.to_string().contains(var), "{var}: {err}");
            assert!(!err.to_string().contains(value) || var == "PORT", "{err}");
        }
        let err = load(&[
            ("CODITECT_DATA_DIR", d),
            ("TOKEN_LIFETIME", "1h"),
            ("TOKEN_RENEW_AFTER", "2h"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("TOKEN_RENEW_AFTER"));
    }

    #[test]
    fn rates_parse_and_bad_ones_are_refused() {
        let r = |text: &str| Rate::parse(text).map(|r| r.to_string());
        assert_eq!(r("5/min").as_deref(), Some("5/min"));
        assert_eq!(r(" 10 / HOUR ").as_deref(), Some("10/hour"));
        assert_eq!(r("3/s").as_deref(), Some("3/sec"));
        assert_eq!(r("7/second").as_deref(), Some("7/sec"));
        assert_eq!(r("60/m").as_deref(), Some("60/min"));
        assert_eq!(r("2/h").as_deref(), Some("2/hour"));
        assert_eq!(r("1000000/sec").as_deref(), Some("1000000/sec"));
        for bad in [
            "",
            "5",
            "0/min",
            "-1/min",
            "5/day",
            "5/",
            "/min",
            "five/min",
            "5/min/x",
            "1000001/sec",
            "4294967296/min",
        ] {
            assert_eq!(Rate::parse(bad), None, "{bad:?}");
        }
        let rate = Rate::parse("10/hour").unwrap();
        assert_eq!(rate.count.get(), 10);
        assert_eq!(rate.per.duration(), Duration::from_secs(3600));
        assert_eq!(rate.describe(), "10 per hour");
    }

    #[test]
    fn rate_limits_and_trusted_proxies_default_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let cfg = load(&[("CODITECT_DATA_DIR", d)]).unwrap();
        let limits = cfg.rate_limits;
        assert_eq!(limits.login.to_string(), "5/min");
        assert_eq!(limits.signup.to_string(), "3/min");
        assert_eq!(limits.validate.to_string(), "60/min");
        assert_eq!(limits.activate.to_string(), "10/hour");
        assert_eq!(limits.license_ip.to_string(), "120/min");
        assert_eq!(cfg.trust_proxy, 0);
        let cfg = load(&[
            ("CODITECT_DATA_DIR", d),
            ("RATE_LIMIT_LOGIN", "7/sec"),
            ("RATE_LIMIT_SIGNUP", "1/hour"),
            ("RATE_LIMIT_VALIDATE", "100/min"),
            ("RATE_LIMIT_ACTIVATE", "20/min"),
            ("RATE_LIMIT_LICENSE_IP", "300/min"),
            ("TRUST_PROXY", "1"),
        ])
        .unwrap();
        let limits = cfg.rate_limits;
        assert_eq!(limits.login.to_string(), "7/sec");
        assert_eq!(limits.signup.to_string(), "1/hour");
        assert_eq!(limits.validate.to_string(), "100/min");
        assert_eq!(limits.activate.to_string(), "20/min");
        assert_eq!(limits.license_ip.to_string(), "300/min");
        assert_eq!(cfg.trust_proxy, 1);
    }

    #[test]
    fn bad_rate_limits_and_trusted_proxies_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        for (var, value) in [
            ("RATE_LIMIT_LOGIN", "lots"),
            ("RATE_LIMIT_SIGNUP", "0/min"),
            ("RATE_LIMIT_VALIDATE", "60/fortnight"),
            ("RATE_LIMIT_ACTIVATE", "10 per hour"),
            ("RATE_LIMIT_LICENSE_IP", "-120/min"),
            ("TRUST_PROXY", "yes"),
            ("TRUST_PROXY", "-1"),
            ("TRUST_PROXY", "99"),
        ] {
            let err = load(&[("CODITECT_DATA_DIR", d), (var, value)]).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { var: v, .. } if v == var),
                "{var}: {err}"
            );
            assert!(err.to_string().starts_with(var), "{var}: {err}");
            assert!(!err.to_string().contains(value), "{err}");
        }
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let f = dir.path().join("jwt");
        std::fs::write(&f, "0123456789abcdef0123456789abcdef-from-file\n").unwrap();
        let cfg = load(&[
            ("CODITECT_DATA_DIR", d),
            ("JWT_SECRET_FILE", f.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(
            &*cfg.jwt_secret,
            b"0123456789abcdef0123456789abcdef-from-file"
        );
        assert!(
            load(&[
                ("CODITECT_DATA_DIR", d),
                ("JWT_SECRET_FILE", f.to_str().unwrap()),
                ("JWT_SECRET", "x")
            ])
            .is_err()
        );
    }
}
