//! Rate limits: GCRA limits per client address and per license key,
//! checked by the HTTP middleware (`http::middleware::rate_limit`) before
//! the endpoint runs, so refused requests never reach the use case or
//! Argon2. This module is the one interface, [`Limiters`]: the middleware
//! maps requests to routes, reads the key and the client address, asks
//! [`Limiters::check`], and writes the headers and the 429; where the
//! counts live (the database or this process) is decided here, once.
//!
//! | route (POST unless said)               | counted per         | default   | variable                |
//! |----------------------------------------|---------------------|-----------|-------------------------|
//! | `/api/v1/auth/login`                   | client IP           | 5/min     | `RATE_LIMIT_LOGIN`      |
//! | `/api/v1/auth/signup` and `/signup` (the web form), together | client IP | 3/min | `RATE_LIMIT_SIGNUP` |
//! | `/api/v1/licenses/validate`            | license key         | 60/min    | `RATE_LIMIT_VALIDATE`   |
//! | `/api/v1/licenses/activate`            | license key         | 10/hour   | `RATE_LIMIT_ACTIVATE`   |
//! | validate, activate, deactivate and `GET /api/v1/licenses/features`, together | client IP | 120/min | `RATE_LIMIT_LICENSE_IP` |
//! | `/api/v1/billing/checkout` and `/portal`, together | signed-in user | 10/min | `RATE_LIMIT_BILLING_USER` |
//! | the same                                | organization        | 30/min    | `RATE_LIMIT_BILLING_ORG` |
//! | `/webhooks/stripe`, refused deliveries only | client IP       | 10/min    | `RATE_LIMIT_WEBHOOK_REFUSALS` |
//!
//! The billing limits are checked by the handlers once the caller is
//! signed in ([`Limiters::check_billing`]: the user's limit first, so that
//! one user refused does not use up the organization's quota), before
//! Stripe is called. The webhook limit is checked by the webhook use case
//! only after a delivery's signature failed ([`Limiters::check_webhook_refusal`]):
//! a delivery Stripe signed is never limited, whatever else came from its
//! address.
//!
//! The last one stops key guessing: every request that tells whether a
//! license key exists counts, whatever key it carries. It is checked first,
//! so a refused request does not use up the quota of the key it names.
//!
//! **Quota.** A limit of N per period lets a burst of N through and then one
//! more every period/N (GCRA): the (N+1)-th request of a burst is refused.
//! In the database the interval is whole milliseconds (rounded down, at
//! least 1: `1000000/sec` is then 1,000 a second after its burst).
//!
//! **Keys.** Client IPs are counted as they are (IPv4, and IPv4-mapped
//! IPv6 as IPv4), except IPv6 addresses, which are counted per /64 (what
//! one subscriber gets). License keys are counted as the handlers read
//! them (trimmed, upper case). Neither is kept: each is counted by the
//! SHA-256 of the salt and its text, dropped as soon as it is hashed.
//!
//! **Salt.** `HMAC-SHA256(JWT_SECRET, "coditect rate-limit salt")`: every
//! instance has the same `JWT_SECRET`, so all of them count a client in the
//! same bucket, with no setting of its own; a hash in the database cannot
//! be matched with the license keys' hashes (unsalted) nor turned back into
//! an address by trying them all without the secret. Changing
//! `JWT_SECRET` starts every count afresh.
//!
//! **Where the counts live** ([`Limiters::for_store`]). On PostgreSQL, in
//! the database (`store::RateCounters`, table `rate_limits`): one row per
//! bucket (`login:` + hex hash), its GCRA state updated by one statement
//! per check, so a limit holds across any number of instances and across
//! restarts; every instance deletes expired rows once a minute, at most
//! 100,000 a round (`shared.rs`). On SQLite, where the server is the only
//! process, in this process's memory (`governor`, `in_process.rs`): each
//! limiter keeps one entry per key seen within its period, and entries
//! indistinguishable from a fresh key are dropped every 1,024 checks and a
//! minute after the last clean-up. New license-key entries can only be made
//! at the per-IP rate, since that limit is checked first. Both count the
//! same way (the same tests run on both, `tests.rs`).
//!
//! **Database errors.** When the counters cannot be read, the request is
//! not let through: the middleware answers 503 `database_unavailable`.
//!
//! **Client IP.** The socket peer. `X-Forwarded-For` is read only with
//! `TRUST_PROXY` = N > 0 (the number of reverse proxies in front of the
//! issuer that each append the address they received the request from):
//! the client is then the N-th address from the right of the header (all
//! `X-Forwarded-For` fields joined by commas, as HTTP says). Entries further
//! left are whatever the client sent and are never used. With fewer than N
//! entries, or an entry that is not an IP address, the peer is used.
//!
//! **Headers** (draft-ietf-httpapi-ratelimit-headers-07 form) on every
//! answer of a limited route, 429s included, for the limit closest to being
//! reached: `RateLimit-Limit` (N), `RateLimit-Remaining` (requests left now),
//! `RateLimit-Reset` (seconds until all N are available again) and
//! `RateLimit-Policy` (`N;w=SECONDS`). A 429 also has `Retry-After`: whole
//! seconds, at least 1, until the next request will be accepted.

mod in_process;
mod shared;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock};
use governor::nanos::Nanos;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest as _, Sha256};

pub use in_process::InProcess;
pub use shared::MillisClock;

use crate::config::{Config, Rate, RateLimits};
use crate::domain::StorageError;
use crate::domain::license_key::LicenseKey;
use crate::store::SharedStore;

/// What a client or key is counted as: a salted SHA-256.
type Digest = [u8; 32];

/// The requests that are rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedRoute {
    Login,
    Signup,
    Validate,
    Activate,
    Deactivate,
    Features,
}

/// Which limit a report or refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Login,
    Signup,
    LicenseIp,
    Validate,
    Activate,
    BillingUser,
    BillingOrg,
    WebhookRefusal,
}

impl Limit {
    /// The limit's name, the first part of its buckets in the database.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Login => "login",
            Limit::Signup => "signup",
            Limit::LicenseIp => "license_ip",
            Limit::Validate => "validate",
            Limit::Activate => "activate",
            Limit::BillingUser => "billing_user",
            Limit::BillingOrg => "billing_org",
            Limit::WebhookRefusal => "webhook_refusal",
        }
    }

    fn rate(self, limits: &RateLimits) -> Rate {
        match self {
            Limit::Login => limits.login,
            Limit::Signup => limits.signup,
            Limit::LicenseIp => limits.license_ip,
            Limit::Validate => limits.validate,
            Limit::Activate => limits.activate,
            Limit::BillingUser => limits.billing_user,
            Limit::BillingOrg => limits.billing_org,
            Limit::WebhookRefusal => limits.webhook_refusal,
        }
    }
}

/// The limits a request to `route` counts against: one per client address,
/// checked first, and one per license key when the route takes one.
fn limits_of(route: LimitedRoute) -> (Limit, Option<Limit>) {
    match route {
        LimitedRoute::Login => (Limit::Login, None),
        LimitedRoute::Signup => (Limit::Signup, None),
        LimitedRoute::Deactivate | LimitedRoute::Features => (Limit::LicenseIp, None),
        LimitedRoute::Validate => (Limit::LicenseIp, Some(Limit::Validate)),
        LimitedRoute::Activate => (Limit::LicenseIp, Some(Limit::Activate)),
    }
}

/// The state of one limit after a check, for the `RateLimit-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub limit: Limit,
    pub rate: Rate,
    /// Requests that would be accepted now.
    pub remaining: u32,
    /// Whole seconds until all of the limit is available again.
    pub reset: u64,
}

impl Report {
    /// `RateLimit-Policy`: the limit and its window in seconds, `5;w=60`.
    pub fn policy(&self) -> String {
        let window = self.rate.per.duration().as_secs();
        format!("{};w={window}", self.rate.count)
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that refused it.
    pub report: Report,
    /// Whole seconds (at least 1) until a request will be accepted again.
    pub retry_after: u64,
}

/// The result of checking a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it through; report this limit in the headers.
    Allowed(Report),
    Refused(Refusal),
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The secret every count is salted with (see the module documentation).
#[derive(Clone)]
pub struct Salt([u8; 32]);

/// The HMAC message the salt is derived with.
const SALT_LABEL: &[u8] = b"coditect rate-limit salt";

impl Salt {
    /// `HMAC-SHA256(secret, "coditect rate-limit salt")`.
    pub fn from_secret(secret: &[u8]) -> Self {
        match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
            Ok(mut mac) => {
                mac.update(SALT_LABEL);
                Salt(mac.finalize().into_bytes().into())
            }
            // HMAC takes keys of any length; should that ever change, a
            // plain hash of the secret still keeps the salt secret.
            Err(_) => Salt(
                Sha256::new()
                    .chain_update(secret)
                    .chain_update(SALT_LABEL)
                    .finalize()
                    .into(),
            ),
        }
    }

    fn digest(&self, text: &[u8]) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(text);
        hasher.finalize().into()
    }
}

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Salt(…)")
    }
}

enum Counters<C: Clock> {
    /// Boxed: the maps and their counters, next to one handle.
    InProcess(Box<InProcess<C>>),
    Shared(shared::Shared),
}

/// The clock of a server's in-process limits: the system's monotonic clock,
/// or a fake one that a test moves by hand (`governor`'s
/// [`FakeRelativeClock`]), so tests of the limits never race the real clock.
#[derive(Debug, Clone)]
pub enum LimiterClock {
    /// Time since this clock was made.
    System(std::time::Instant),
    /// Time as the test sets it.
    Fake(FakeRelativeClock),
}

impl LimiterClock {
    /// The system clock.
    pub fn system() -> Self {
        LimiterClock::System(std::time::Instant::now())
    }
}

impl Clock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            LimiterClock::System(origin) => Nanos::from(origin.elapsed()),
            LimiterClock::Fake(clock) => clock.now(),
        }
    }
}

/// All the limits of a server, wherever they are counted: the middleware
/// asks [`Limiters::check`] and knows nothing more.
pub struct Limiters<C: Clock = LimiterClock> {
    rates: RateLimits,
    salt: Salt,
    counters: Counters<C>,
}

impl Limiters {
    /// The limiters of a server on `store`: counted in the database when
    /// several processes may share it (PostgreSQL; expired counters are
    /// then pruned in the background, so this must be called inside the
    /// tokio runtime), in memory otherwise (SQLite).
    pub fn for_store(config: &Config, store: &SharedStore) -> Self {
        let salt = Salt::from_secret(&config.jwt_secret);
        if store.is_shared() {
            let clock: MillisClock = Arc::new(super::now_ms);
            shared::start_pruning(Arc::clone(store), Arc::clone(&clock));
            Self::shared(&config.rate_limits, salt, Arc::clone(store), clock)
        } else {
            Self::in_process(&config.rate_limits, salt, LimiterClock::system())
        }
    }
}

impl<C: Clock + Clone> Limiters<C> {
    /// Limits counted in this process, on `clock` (tests pass a fake one).
    pub fn in_process(limits: &RateLimits, salt: Salt, clock: C) -> Self {
        Limiters {
            rates: *limits,
            salt,
            counters: Counters::InProcess(Box::new(InProcess::new(limits, clock))),
        }
    }

    /// Limits counted in `store` at the times `now_ms` tells (no pruning:
    /// see [`Limiters::for_store`]).
    pub fn shared(
        limits: &RateLimits,
        salt: Salt,
        store: SharedStore,
        now_ms: MillisClock,
    ) -> Self {
        Limiters {
            rates: *limits,
            salt,
            counters: Counters::Shared(shared::Shared::new(store, now_ms)),
        }
    }

    /// What the failed sign-ins count a client address as: the hex of its
    /// SHA-256 salted like every count here (never the address itself).
    pub fn client_key(&self, ip: Option<&str>) -> String {
        hex::encode(self.salt.digest(ip.unwrap_or("unknown").as_bytes()))
    }

    /// Whether the counts are kept in the database.
    pub fn is_shared(&self) -> bool {
        matches!(self.counters, Counters::Shared(_))
    }

    /// The in-process limiters, if the counts are kept here.
    pub fn in_process_state(&self) -> Option<&InProcess<C>> {
        match &self.counters {
            Counters::InProcess(l) => Some(l),
            Counters::Shared(_) => None,
        }
    }

    /// Counts a request to `route` from `client` (`None`: unknown, all such
    /// requests share one count) naming license key `key` (`None`: it names
    /// none, or not a well-formed one; the request fails validation, and
    /// only the per-IP limit counts it). An error: the counts could not be
    /// read or written (the request must not be let through).
    pub async fn check(
        &self,
        route: LimitedRoute,
        client: Option<IpAddr>,
        key: Option<&LicenseKey>,
    ) -> Result<Decision, StorageError> {
        if let Counters::InProcess(l) = &self.counters {
            l.maybe_cleanup();
        }
        let ip = client.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), bucket);
        let (ip_limit, key_limit) = limits_of(route);
        let by_ip = match self
            .count(ip_limit, &self.salt.digest(ip.to_string().as_bytes()))
            .await?
        {
            Ok(report) => report,
            Err(refusal) => return Ok(Decision::Refused(refusal)),
        };
        // No key: the request fails validation anyway.
        let (Some(key_limit), Some(key)) = (key_limit, key) else {
            return Ok(Decision::Allowed(by_ip));
        };
        let hash = self.salt.digest(key.expose().as_bytes());
        Ok(match self.count(key_limit, &hash).await? {
            // Report the limit closer to being reached.
            Ok(by_key) if by_key.remaining <= by_ip.remaining => Decision::Allowed(by_key),
            Ok(_) => Decision::Allowed(by_ip),
            Err(refusal) => Decision::Refused(refusal),
        })
    }

    /// Counts a billing call (checkout or portal, each calls Stripe) by
    /// user `user_id` of organization `organization_id`: the user's limit
    /// first, then the organization's.
    pub async fn check_billing(
        &self,
        user_id: &str,
        organization_id: &str,
    ) -> Result<Decision, StorageError> {
        if let Counters::InProcess(l) = &self.counters {
            l.maybe_cleanup();
        }
        let user = self.salt.digest(user_id.as_bytes());
        let by_user = match self.count(Limit::BillingUser, &user).await? {
            Ok(report) => report,
            Err(refusal) => return Ok(Decision::Refused(refusal)),
        };
        let org = self.salt.digest(organization_id.as_bytes());
        Ok(match self.count(Limit::BillingOrg, &org).await? {
            Ok(by_org) if by_org.remaining < by_user.remaining => Decision::Allowed(by_org),
            Ok(_) => Decision::Allowed(by_user),
            Err(refusal) => Decision::Refused(refusal),
        })
    }

    /// Counts a refused webhook delivery from `client` (`None`: unknown,
    /// all such share one count). Refused: the address has been refused too
    /// often; answer it cheaply and write nothing for it.
    pub async fn check_webhook_refusal(
        &self,
        client: Option<IpAddr>,
    ) -> Result<Decision, StorageError> {
        if let Counters::InProcess(l) = &self.counters {
            l.maybe_cleanup();
        }
        let ip = client.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), bucket);
        let digest = self.salt.digest(ip.to_string().as_bytes());
        Ok(match self.count(Limit::WebhookRefusal, &digest).await? {
            Ok(report) => Decision::Allowed(report),
            Err(refusal) => Decision::Refused(refusal),
        })
    }

    async fn count(
        &self,
        limit: Limit,
        key: &Digest,
    ) -> Result<Result<Report, Refusal>, StorageError> {
        match &self.counters {
            Counters::InProcess(l) => Ok(l.count(limit, key)),
            Counters::Shared(s) => s.count(limit, limit.rate(&self.rates), key).await,
        }
    }
}

/// What an IP address is counted as: IPv4-mapped IPv6 as IPv4, other IPv6
/// addresses by their /64.
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests;
