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
    #[error(
        "production mode needs Stripe: set STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET and the four STRIPE_PRICE_* variables (or their _FILE forms)"
    )]
    MissingStripe,
    #[error("production mode sends license keys by mail: set SMTP_URL (or SMTP_URL_FILE)")]
    MissingSmtp,
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
    /// `PUBLIC_BASE_URL` was set; otherwise `serve` derives the URL from
    /// the address it listens on.
    pub public_base_url_configured: bool,
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
    /// Stripe; `None` in development when `STRIPE_SECRET_KEY` is unset.
    pub stripe: Option<StripeConfig>,
    /// How long after a paid period ends its license still renews
    /// (`BILLING_GRACE`, 2 days): room for Stripe's renewal to arrive.
    pub billing_grace: Duration,
    /// How long a past-due subscription's license keeps renewing after the
    /// first failed payment (`PAST_DUE_GRACE`, 7 days).
    pub past_due_grace: Duration,
    /// Outgoing mail.
    pub mail: MailConfig,
}

/// Stripe settings (`STRIPE_*`).
pub struct StripeConfig {
    /// `STRIPE_SECRET_KEY` (`sk_…` or a restricted `rk_…`).
    pub secret_key: Zeroizing<String>,
    /// `STRIPE_WEBHOOK_SECRET` (`whsec_…`): checks `Stripe-Signature`.
    pub webhook_secret: Option<Zeroizing<String>>,
    /// `STRIPE_API_BASE`: where Stripe's API is (development only; tests
    /// point it at a local fake). `None`: api.stripe.com.
    pub api_base: Option<String>,
    /// Price ids of the two tiers, monthly and annual.
    pub prices: Prices,
    /// `STRIPE_TRIAL_DAYS`: free days before the first charge (none by default).
    pub trial_days: Option<u32>,
}

/// The Stripe price ids of the pilot plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    pub starter_monthly: String,
    pub starter_annual: String,
    pub pro_monthly: String,
    pub pro_annual: String,
}

impl Prices {
    /// The price of a plan billed every `interval` (`month` or `year`).
    pub fn price_for(&self, plan: &str, interval: &str) -> Option<&str> {
        Some(match (plan, interval) {
            ("pilot-starter", "month") => &self.starter_monthly,
            ("pilot-starter", "year") => &self.starter_annual,
            ("pilot-professional", "month") => &self.pro_monthly,
            ("pilot-professional", "year") => &self.pro_annual,
            _ => return None,
        })
    }

    /// The plan id and interval of a price.
    pub fn plan_of(&self, price: &str) -> Option<(&'static str, &'static str)> {
        [
            ("pilot-starter", "month"),
            ("pilot-starter", "year"),
            ("pilot-professional", "month"),
            ("pilot-professional", "year"),
        ]
        .into_iter()
        .find(|(plan, interval)| self.price_for(plan, interval) == Some(price))
    }
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

        let enable_pilot_signup = boolean(env, "ENABLE_PILOT_SIGNUP", true)?;
        let pilot_users_limit = match env.get("PILOT_USERS_LIMIT") {
            None => 100,
            Some(v) => v
                .parse()
                .map_err(|_| invalid("PILOT_USERS_LIMIT", "must be a whole number"))?,
        };

        let rate_limits = RateLimits::load(env)?;
        let trust_proxy = trust_proxy(env)?;
        let stripe = stripe(env, production)?;
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

        Ok(Config {
            environment,
            bind,
            data_dir,
            database,
            public_base_url,
            public_base_url_configured,
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
            stripe,
            billing_grace,
            past_due_grace,
            mail,
        })
    }
}

fn stripe(env: &dyn Env, production: bool) -> Result<Option<StripeConfig>, ConfigError> {
    let Some(secret_key) = secret(env, "STRIPE_SECRET_KEY")? else {
        if production {
            return Err(ConfigError::MissingStripe);
        }
        return Ok(None);
    };
    if !(secret_key.starts_with("sk_") || secret_key.starts_with("rk_")) {
        return Err(invalid(
            "STRIPE_SECRET_KEY",
            "must be a Stripe secret key (sk_…) or restricted key (rk_…)",
        ));
    }
    let webhook_secret = secret(env, "STRIPE_WEBHOOK_SECRET")?;
    if production && webhook_secret.is_none() {
        return Err(ConfigError::MissingStripe);
    }
    let api_base = env
        .get("STRIPE_API_BASE")
        .map(|b| b.trim_end_matches('/').to_owned());
    if let Some(base) = &api_base {
        if production {
            return Err(invalid(
                "STRIPE_API_BASE",
                "is for development and tests only; production talks to api.stripe.com",
            ));
        }
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(invalid(
                "STRIPE_API_BASE",
                "must start with http:// or https://",
            ));
        }
    }
    let price = |name: &'static str| {
        env.get(name).ok_or_else(|| {
            invalid(
                name,
                "must be set to a Stripe price id (price_…) when STRIPE_SECRET_KEY is set",
            )
        })
    };
    let prices = Prices {
        starter_monthly: price("STRIPE_PRICE_STARTER_MONTHLY")?,
        starter_annual: price("STRIPE_PRICE_STARTER_ANNUAL")?,
        pro_monthly: price("STRIPE_PRICE_PRO_MONTHLY")?,
        pro_annual: price("STRIPE_PRICE_PRO_ANNUAL")?,
    };
    let trial_days = match env.get("STRIPE_TRIAL_DAYS") {
        None => None,
        Some(v) => match v.trim().parse::<u32>() {
            Ok(0) => None,
            Ok(n) if n <= 730 => Some(n),
            _ => {
                return Err(invalid(
                    "STRIPE_TRIAL_DAYS",
                    "must be a number of days from 0 to 730",
                ));
            }
        },
    };
    Ok(Some(StripeConfig {
        secret_key,
        webhook_secret,
        api_base,
        prices,
        trial_days,
    }))
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
        let prod = prod.to_str().unwrap();
        let base = [
            ("CODITECT_DATA_DIR", d),
            ("CODITECT_ENV", "production"),
            ("JWT_SECRET", strong),
            ("SIGNING_KEY_FILE", prod),
        ];
        assert_eq!(load(&base).unwrap_err(), ConfigError::MissingStripe);
        let stripe = [
            ("STRIPE_SECRET_KEY", "sk_live_abc"),
            ("STRIPE_PRICE_STARTER_MONTHLY", "price_sm"),
            ("STRIPE_PRICE_STARTER_ANNUAL", "price_sa"),
            ("STRIPE_PRICE_PRO_MONTHLY", "price_pm"),
            ("STRIPE_PRICE_PRO_ANNUAL", "price_pa"),
        ];
        let without_webhook_secret: Vec<(&str, &str)> =
            base.iter().chain(stripe.iter()).copied().collect();
        assert_eq!(
            load(&VecEnv(without_webhook_secret.clone())).unwrap_err(),
            ConfigError::MissingStripe
        );
        let mut full = without_webhook_secret;
        full.push(("STRIPE_WEBHOOK_SECRET", "whsec_abc"));
        assert_eq!(
            load(&VecEnv(full.clone())).unwrap_err(),
            ConfigError::MissingSmtp
        );
        full.push(("SMTP_URL", "smtp://mail.example.com:587"));
        let mut redirected = full.clone();
        redirected.push(("STRIPE_API_BASE", "http://127.0.0.1:9"));
        assert!(matches!(
            load(&VecEnv(redirected)).unwrap_err(),
            ConfigError::Invalid {
                var: "STRIPE_API_BASE",
                ..
            }
        ));
        let cfg = load(&VecEnv(full)).unwrap();
        assert_eq!(cfg.signer.kid(), "prod-2026");
        assert!(!cfg.signing_key_is_development);
        let stripe = cfg.stripe.as_ref().unwrap();
        assert_eq!(
            stripe.prices.price_for("pilot-professional", "year"),
            Some("price_pa")
        );
        assert_eq!(
            stripe.prices.plan_of("price_sm"),
            Some(("pilot-starter", "month"))
        );
        assert_eq!(stripe.prices.plan_of("price_other"), None);
    }

    struct VecEnv<'a>(Vec<(&'a str, &'a str)>);

    impl Env for VecEnv<'_> {
        fn get(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn stripe_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let cfg = load(&[("CODITECT_DATA_DIR", d)]).unwrap();
        assert!(cfg.stripe.is_none(), "no Stripe without a key");
        assert_eq!(cfg.billing_grace, Duration::from_secs(2 * 86400));
        assert_eq!(cfg.past_due_grace, Duration::from_secs(7 * 86400));
        match load(&[("CODITECT_DATA_DIR", d), ("STRIPE_SECRET_KEY", "pk_test_x")]) {
            Err(ConfigError::Invalid { var, .. }) => assert_eq!(var, "STRIPE_SECRET_KEY"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        match load(&[("CODITECT_DATA_DIR", d), ("STRIPE_SECRET_KEY", "sk_test_x")]) {
            Err(ConfigError::Invalid { var, .. }) => {
                assert_eq!(var, "STRIPE_PRICE_STARTER_MONTHLY")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        let env = [
            ("CODITECT_DATA_DIR", d),
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("STRIPE_PRICE_STARTER_MONTHLY", "a"),
            ("STRIPE_PRICE_STARTER_ANNUAL", "b"),
            ("STRIPE_PRICE_PRO_MONTHLY", "c"),
            ("STRIPE_PRICE_PRO_ANNUAL", "d"),
            ("STRIPE_TRIAL_DAYS", "7"),
            ("STRIPE_API_BASE", "http://127.0.0.1:12111/"),
        ];
        let cfg = load(&env).unwrap();
        let stripe = cfg.stripe.unwrap();
        assert_eq!(stripe.trial_days, Some(7));
        assert_eq!(stripe.api_base.as_deref(), Some("http://127.0.0.1:12111"));
        assert!(stripe.webhook_secret.is_none());
        let mut bad = env;
        bad[6] = ("STRIPE_TRIAL_DAYS", "many");
        assert!(load(&bad).is_err());
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
