//! Rate limits: keyed GCRA limiters (`governor`), checked by the HTTP
//! middleware (`http::middleware::rate_limit`) before the endpoint runs, so
//! refused requests never reach the database or Argon2. This file holds
//! the limiters; the middleware maps requests to routes, reads the key and
//! the client address, and writes the headers and the 429.
//!
//! | route (POST unless said)               | counted per         | default   | variable                |
//! |----------------------------------------|---------------------|-----------|-------------------------|
//! | `/api/v1/auth/login`                   | client IP           | 5/min     | `RATE_LIMIT_LOGIN`      |
//! | `/api/v1/auth/signup` and `/signup` (the web form), together | client IP | 3/min | `RATE_LIMIT_SIGNUP` |
//! | `/api/v1/licenses/validate`            | license key         | 60/min    | `RATE_LIMIT_VALIDATE`   |
//! | `/api/v1/licenses/activate`            | license key         | 10/hour   | `RATE_LIMIT_ACTIVATE`   |
//! | validate, activate, deactivate and `GET /api/v1/licenses/features`, together | client IP | 120/min | `RATE_LIMIT_LICENSE_IP` |
//!
//! The last one stops key guessing: every request that tells whether a
//! license key exists counts, whatever key it carries. It is checked first,
//! so a refused request does not use up the quota of the key it names.
//!
//! **Quota.** A limit of N per period lets a burst of N through and then one
//! more every period/N (GCRA): the (N+1)-th request of a burst is refused.
//!
//! **Keys.** Client IPs are kept as they are (IPv4, and IPv4-mapped IPv6 as
//! IPv4), except IPv6 addresses, which are counted per /64 (what one
//! subscriber gets). A license key is counted by the SHA-256 of a random
//! per-process salt and the key as the handlers read it (trimmed, upper
//! case); the key itself is dropped as soon as it is hashed.
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
//!
//! **Memory.** Each limiter keeps one entry per key seen within its period.
//! Every 1,024 checks, and at the first check a minute after the last
//! clean-up, entries indistinguishable from a fresh key are dropped
//! (`retain_recent`) and the maps shrunk. New license-key entries can only
//! be made at the per-IP rate, since that limit is checked first.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};

use crate::config::{Config, Per, Rate, RateLimits};
use crate::domain::license_key::LicenseKey;

/// Clean up after this many checks…
const CLEANUP_EVERY: u64 = 1024;
/// …or at the first check this long after the last clean-up.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

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

type Keyed<K, C> = RateLimiter<K, DefaultKeyedStateStore<K>, C, StateInformationMiddleware>;

/// One keyed limiter and its rate.
struct Limiter<K: std::hash::Hash + Eq + Clone, C: Clock> {
    limit: Limit,
    rate: Rate,
    inner: Keyed<K, C>,
}

fn quota(rate: Rate) -> Quota {
    // Burst = the limit; one more every period / limit.
    match rate.per {
        Per::Second => Quota::per_second(rate.count),
        Per::Minute => Quota::per_minute(rate.count),
        Per::Hour => Quota::per_hour(rate.count),
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl<K: std::hash::Hash + Eq + Clone, C: Clock + Clone> Limiter<K, C> {
    fn new(limit: Limit, rate: Rate, clock: &C) -> Self {
        let plain: RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<C::Instant>> =
            RateLimiter::new(
                quota(rate),
                DefaultKeyedStateStore::default(),
                clock.clone(),
            );
        let inner = plain.with_middleware::<StateInformationMiddleware>();
        Limiter { limit, rate, inner }
    }

    fn check(&self, key: &K, clock: &C) -> Result<Report, Refusal> {
        let count = self.rate.count.get();
        let interval = quota(self.rate).replenish_interval();
        match self.inner.check_key(key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity().min(count);
                Ok(Report {
                    limit: self.limit,
                    rate: self.rate,
                    remaining,
                    reset: ceil_secs(interval.saturating_mul(count - remaining)),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(clock.now());
                let full = wait.saturating_add(interval.saturating_mul(count - 1));
                Err(Refusal {
                    report: Report {
                        limit: self.limit,
                        rate: self.rate,
                        remaining: 0,
                        reset: ceil_secs(full).max(1),
                    },
                    retry_after: ceil_secs(wait).max(1),
                })
            }
        }
    }

    fn cleanup(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.inner.len()
    }
}

/// All the limiters of a server.
pub struct Limiters<C: Clock = DefaultClock> {
    clock: C,
    salt: [u8; 32],
    login: Limiter<IpAddr, C>,
    signup: Limiter<IpAddr, C>,
    license_ip: Limiter<IpAddr, C>,
    validate: Limiter<[u8; 32], C>,
    activate: Limiter<[u8; 32], C>,
    checks: AtomicU64,
    started: Instant,
    /// Seconds after `started` when the next timed clean-up is due.
    next_cleanup: AtomicU64,
}

impl Limiters {
    /// The limiters of the configured limits, on the real clock.
    pub fn from_config(config: &Config) -> Self {
        Self::with_clock(&config.rate_limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limiters<C> {
    /// Limiters on `clock` (tests pass a fake one).
    pub fn with_clock(limits: &RateLimits, clock: C) -> Self {
        let mut salt = [0u8; 32];
        // Without randomness the hash is still one-way; the salt only keeps
        // it from matching the key hashes in the database.
        let _ = getrandom::fill(&mut salt);
        Limiters {
            salt,
            login: Limiter::new(Limit::Login, limits.login, &clock),
            signup: Limiter::new(Limit::Signup, limits.signup, &clock),
            license_ip: Limiter::new(Limit::LicenseIp, limits.license_ip, &clock),
            validate: Limiter::new(Limit::Validate, limits.validate, &clock),
            activate: Limiter::new(Limit::Activate, limits.activate, &clock),
            clock,
            checks: AtomicU64::new(0),
            started: Instant::now(),
            next_cleanup: AtomicU64::new(CLEANUP_INTERVAL.as_secs()),
        }
    }

    /// Counts a request to `route` from `client` (`None`: unknown, all such
    /// requests share one count) naming license key `key` (`None`: it names
    /// none, or not a well-formed one; the request fails validation, and
    /// only the per-IP limit counts it).
    pub fn check(
        &self,
        route: LimitedRoute,
        client: Option<IpAddr>,
        key: Option<&LicenseKey>,
    ) -> Decision {
        self.maybe_cleanup();
        let ip = client.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), bucket);
        let result = match route {
            LimitedRoute::Login => self.login.check(&ip, &self.clock),
            LimitedRoute::Signup => self.signup.check(&ip, &self.clock),
            LimitedRoute::Deactivate | LimitedRoute::Features => {
                self.license_ip.check(&ip, &self.clock)
            }
            LimitedRoute::Validate | LimitedRoute::Activate => {
                self.license_ip.check(&ip, &self.clock).and_then(|by_ip| {
                    let per_key = if route == LimitedRoute::Validate {
                        &self.validate
                    } else {
                        &self.activate
                    };
                    match key.map(|k| self.key_hash(k)) {
                        // Report the limit closer to being reached.
                        Some(hash) => per_key.check(&hash, &self.clock).map(|by_key| {
                            if by_key.remaining <= by_ip.remaining {
                                by_key
                            } else {
                                by_ip
                            }
                        }),
                        // No key: the request fails validation anyway.
                        None => Ok(by_ip),
                    }
                })
            }
        };
        match result {
            Ok(report) => Decision::Allowed(report),
            Err(refusal) => Decision::Refused(refusal),
        }
    }

    /// The salted SHA-256 of a key (in its canonical form): the key itself
    /// is never kept.
    fn key_hash(&self, key: &LicenseKey) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(key.expose().as_bytes());
        hasher.finalize().into()
    }

    fn maybe_cleanup(&self) {
        let n = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.started.elapsed().as_secs();
        let due = self.next_cleanup.load(Ordering::Relaxed);
        let timed = now >= due
            && self
                .next_cleanup
                .compare_exchange(
                    due,
                    now + CLEANUP_INTERVAL.as_secs(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if timed || n.is_multiple_of(CLEANUP_EVERY) {
            self.cleanup();
        }
    }

    /// Drops the entries of keys whose quota is full again, and shrinks the
    /// maps.
    pub fn cleanup(&self) {
        self.login.cleanup();
        self.signup.cleanup();
        self.license_ip.cleanup();
        self.validate.cleanup();
        self.activate.cleanup();
    }

    /// Entries kept, over all limiters.
    pub fn len(&self) -> usize {
        self.login.len()
            + self.signup.len()
            + self.license_ip.len()
            + self.validate.len()
            + self.activate.len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
