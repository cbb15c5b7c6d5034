//! Configuration from environment variables (listed with their defaults in
//! `.env.example`). Secrets may come from `NAME_FILE` instead of `NAME`.
//!
//! With nothing set, the issuer runs for development: SQLite in the user's
//! data directory and the development signing key. In production
//! (`CODITECT_ENV=production`) it refuses to start without real secrets.

mod audit;
mod env;
mod metrics;
mod providers;
mod rate_limits;
mod secrets;
mod stripe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use verifier::TokenSigner;
use zeroize::Zeroizing;

use crate::store::postgres::PgUrl;

pub use audit::{DEFAULT_AUDIT_RETENTION_DAYS, MIN_PRODUCTION_AUDIT_RETENTION_DAYS};
pub use env::{Env, ProcessEnv};
pub use metrics::{MIN_METRICS_TOKEN_BYTES, MetricsConfig};
pub use providers::{GitHubConfig, GoogleConfig, ProviderClient, Providers};
pub use rate_limits::{Per, Rate, RateLimits};
pub use stripe::{Prices, StripeConfig};

use audit::audit_retention_days;
use rate_limits::trust_proxy;
use secrets::{development_jwt_secret, license_key_pepper, published_keys, secret, signer};
use stripe::stripe;

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
    /// A PostgreSQL database (the URL may hold a password; it never
    /// prints it).
    Postgres(Box<PgUrl>),
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
    #[error(
        "production mode needs Stripe: set STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET and the four STRIPE_PRICE_* variables (or their _FILE forms)"
    )]
    MissingStripe,
    #[error("production mode sends license keys by mail: set SMTP_URL (or SMTP_URL_FILE)")]
    MissingSmtp,
    #[error(
        "production mode needs LICENSE_KEY_PEPPER (or LICENSE_KEY_PEPPER_FILE) of at least 32 bytes: the secret that keys the stored hashes of license keys (keep it in the secret store, never change it)"
    )]
    MissingKeyPepper,
    #[error("no data directory: set CODITECT_DATA_DIR")]
    NoDataDir,
    #[error(
        "the issuer would be reachable from other machines ({reason}) but CODITECT_ENV is not set: set CODITECT_ENV=production for a server (or CODITECT_ENV=development for a test server)"
    )]
    EnvironmentNotChosen { reason: String },
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
    /// `PUBLIC_BASE_URL` was set; otherwise `serve` derives the URL from
    /// the address it listens on.
    pub public_base_url_configured: bool,
    pub jwt_secret: Zeroizing<Vec<u8>>,
    /// Keys the stored hashes of license keys (`LICENSE_KEY_PEPPER`).
    pub license_key_pepper: crate::domain::license_key::KeyPepper,
    pub jwt_expiry: Duration,
    pub signer: TokenSigner,
    pub signing_key_is_development: bool,
    /// What `/api/v1/keys` publishes: the signing key, then the keys of
    /// `PUBLISHED_KEYS_FILE` (the previous and next keys of a rotation).
    pub published_keys: Vec<crate::keys::Jwk>,
    pub token_lifetime: Duration,
    pub token_renew_after: Duration,
    pub enable_pilot_signup: bool,
    pub pilot_users_limit: u32,
    /// How long an account may stay with its email unverified while its
    /// organization has not paid before it is deleted
    /// (`UNVERIFIED_ACCOUNT_TTL`, 7 days); deleting it frees the email.
    pub unverified_account_ttl: Duration,
    /// Request rate limits (`RATE_LIMIT_*`).
    pub rate_limits: RateLimits,
    /// How many reverse proxies in front of the issuer append to
    /// `X-Forwarded-For` (`TRUST_PROXY`; 0: the header is ignored).
    pub trust_proxy: usize,
    /// Stripe; `None` in development when `STRIPE_SECRET_KEY` is unset.
    pub stripe: Option<StripeConfig>,
    /// Sign-in providers (`GOOGLE_*`, `GITHUB_*`); one without a client
    /// id and secret is not offered.
    pub providers: Providers,
    /// How long after a paid period ends its license still renews
    /// (`BILLING_GRACE`, 2 days): room for Stripe's renewal to arrive.
    pub billing_grace: Duration,
    /// How long a past-due subscription's license keeps renewing after the
    /// first failed payment (`PAST_DUE_GRACE`, 7 days).
    pub past_due_grace: Duration,
    /// Outgoing mail.
    pub mail: MailConfig,
    /// Audit rows older than this many days are deleted by the
    /// housekeeping (`AUDIT_RETENTION_DAYS`, 400).
    pub audit_retention_days: u32,
    /// `/metrics` (`METRICS_BIND`, `METRICS_TOKEN`) and what the metrics
    /// publish about the key (`SIGNING_KEY_ROTATE_BY`).
    pub metrics: MetricsConfig,
}

/// Outgoing mail settings.
pub struct MailConfig {
    /// `SMTP_URL` (`smtp://user:pass@host:587` with STARTTLS,
    /// `smtps://…:465`, or `smtp://host:25?tls=none` for a local relay).
    /// `None`: mail is written to the log (development only).
    pub smtp_url: Option<Zeroizing<String>>,
    /// `MAIL_FROM`: the sender (`CODITECT <licenses@coditect.ai>`).
    pub from: String,
    /// `SUPPORT_EMAIL`: named in mails and pages (`support@coditect.ai`).
    pub support_email: String,
    /// `MAIL_RETRY_INITIAL`: wait before the first retry of a failed send
    /// (30s); each further failure doubles it, up to an hour.
    pub retry_initial: Duration,
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
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

/// Notes for the log about choices made for the operator (development key,
/// generated JWT secret). Never contains a secret.
pub type Notices = Vec<String>;

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
        let environment_chosen = env.get("CODITECT_ENV").is_some();
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
        // Zero configuration is for a laptop: a server reachable from
        // outside must say which mode it runs in, so a forgotten
        // CODITECT_ENV never means the development key and logged mail.
        if !environment_chosen {
            if env.get("PORT").is_some() {
                return Err(ConfigError::EnvironmentNotChosen {
                    reason: "PORT is set, as on Cloud Run".into(),
                });
            }
            if !bind.ip().is_loopback() {
                return Err(ConfigError::EnvironmentNotChosen {
                    reason: format!("it would listen on {bind}"),
                });
            }
        }

        let data_dir = match env.get("CODITECT_DATA_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => directories::ProjectDirs::from("ai", "CODITECT", "coditect-issuer")
                .map(|d| d.data_dir().to_path_buf())
                .ok_or(ConfigError::NoDataDir)?,
        };

        // The URL can hold the database password: it may come from a file.
        let database = match secret(env, "DATABASE_URL")? {
            None => DatabaseLocation::Sqlite(data_dir.join("issuer.sqlite3")),
            Some(url) => parse_database_url(&url)?,
        };

        let public_base_url_configured = env.get("PUBLIC_BASE_URL").is_some();
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
        let published_keys = published_keys(env, &signer, production)?;

        let enable_pilot_signup = boolean(env, "ENABLE_PILOT_SIGNUP", true)?;
        let pilot_users_limit = match env.get("PILOT_USERS_LIMIT") {
            None => 100,
            Some(v) => v
                .parse()
                .map_err(|_| invalid("PILOT_USERS_LIMIT", "must be a whole number"))?,
        };

        let unverified_account_ttl = duration(env, "UNVERIFIED_ACCOUNT_TTL", "7days")?;
        let rate_limits = RateLimits::load(env)?;
        let trust_proxy = trust_proxy(env)?;
        let stripe = stripe(env, production)?;
        let providers = providers::providers(env, production)?;
        let billing_grace = duration(env, "BILLING_GRACE", "2days")?;
        let past_due_grace = duration(env, "PAST_DUE_GRACE", "7days")?;
        let mail = MailConfig {
            smtp_url: secret(env, "SMTP_URL")?,
            from: env
                .get("MAIL_FROM")
                .unwrap_or_else(|| "CODITECT <licenses@coditect.ai>".into()),
            support_email: env
                .get("SUPPORT_EMAIL")
                .unwrap_or_else(|| "support@coditect.ai".into()),
            retry_initial: duration(env, "MAIL_RETRY_INITIAL", "30s")?,
        };
        if mail.smtp_url.is_none() && production {
            return Err(ConfigError::MissingSmtp);
        }
        if mail.smtp_url.is_none() {
            notices.push(
                "SMTP_URL is not set; mail (license keys included) is written to the log instead of sent"
                    .into(),
            );
        }
        let license_key_pepper = license_key_pepper(env, production, &data_dir, notices)?;

        let audit_retention_days = audit_retention_days(env, production)?;
        let metrics = metrics::metrics(env)?;
        if production {
            rate_limits.check_production_ceiling()?;
        }

        Ok(Config {
            environment,
            bind,
            data_dir,
            database,
            public_base_url,
            public_base_url_configured,
            jwt_secret,
            license_key_pepper,
            jwt_expiry,
            signer,
            signing_key_is_development,
            published_keys,
            token_lifetime,
            token_renew_after,
            enable_pilot_signup,
            pilot_users_limit,
            unverified_account_ttl,
            rate_limits,
            trust_proxy,
            stripe,
            providers,
            billing_grace,
            past_due_grace,
            mail,
            audit_retention_days,
            metrics,
        })
    }
}

fn invalid(var: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.to_owned(),
    }
}

/// `DATABASE_URL`: a file path, `sqlite://PATH`, or a PostgreSQL URL
/// (`postgres://` or `postgresql://`).
pub fn parse_database_url(url: &str) -> Result<DatabaseLocation, ConfigError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(invalid("DATABASE_URL", "sqlite:// needs a file path"));
        }
        return Ok(DatabaseLocation::Sqlite(PathBuf::from(path)));
    }
    if PgUrl::is_postgres(url) {
        return PgUrl::parse(url)
            .map(|url| DatabaseLocation::Postgres(Box::new(url)))
            .map_err(|reason| invalid("DATABASE_URL", &reason));
    }
    if url.contains("://") {
        return Err(invalid(
            "DATABASE_URL",
            "unknown scheme; use a file path, sqlite://PATH or postgresql://USER@HOST/DATABASE",
        ));
    }
    Ok(DatabaseLocation::Sqlite(PathBuf::from(url)))
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

#[cfg(test)]
mod tests;
