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
mod tests {
    use std::num::NonZeroU32;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn rate(text: &str) -> Rate {
        Rate::parse(text).unwrap()
    }

    fn limits(login: &str, license_ip: &str, validate: &str, activate: &str) -> RateLimits {
        RateLimits {
            login: rate(login),
            signup: rate("3/min"),
            validate: rate(validate),
            activate: rate(activate),
            license_ip: rate(license_ip),
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    /// A well-formed key, a different one for each `n`.
    fn numbered_key(n: impl TryInto<usize>) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
        let mut n = n.try_into().unwrap_or(0);
        let mut group = String::new();
        for _ in 0..4 {
            group.insert(0, char::from(ALPHABET[n % ALPHABET.len()]));
            n /= ALPHABET.len();
        }
        format!("CODITECT-PILOT-AAAA-BBBB-{group}")
    }

    /// The key a request names, as the middleware reads it.
    fn body(key: &str) -> LicenseKey {
        LicenseKey::parse(key).unwrap()
    }

    fn refused(d: &Decision) -> &Refusal {
        match d {
            Decision::Refused(r) => r,
            Decision::Allowed(r) => panic!("allowed: {r:?}"),
        }
    }

    fn allowed(d: &Decision) -> &Report {
        match d {
            Decision::Allowed(r) => r,
            Decision::Refused(r) => panic!("refused: {r:?}"),
        }
    }

    #[test]
    fn the_limit_th_request_passes_and_the_next_is_refused_until_one_is_regained() {
        let clock = FakeRelativeClock::default();
        let l = Limiters::with_clock(
            &limits("5/min", "120/min", "60/min", "10/hour"),
            clock.clone(),
        );
        let me = ip("192.0.2.7");
        for i in 0..5u32 {
            let r = allowed(&l.check(LimitedRoute::Login, me, None)).clone();
            assert_eq!(r.limit, Limit::Login);
            assert_eq!(r.remaining, 4 - i);
            assert_eq!(r.rate.count, NonZeroU32::new(5).unwrap());
        }
        let refusal = refused(&l.check(LimitedRoute::Login, me, None)).clone();
        // One request is regained every 12 s; all five after 60 s.
        assert_eq!(refusal.retry_after, 12);
        assert_eq!(refusal.report.remaining, 0);
        assert_eq!(refusal.report.reset, 60);
        assert_eq!(refusal.report.policy(), "5;w=60");

        clock.advance(Duration::from_secs(11));
        let r = refused(&l.check(LimitedRoute::Login, me, None)).clone();
        assert_eq!(r.retry_after, 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            allowed(&l.check(LimitedRoute::Login, me, None)).remaining,
            0
        );
        refused(&l.check(LimitedRoute::Login, me, None));
        // Another address is not affected; signup has its own count.
        assert_eq!(
            allowed(&l.check(LimitedRoute::Login, ip("192.0.2.8"), None)).remaining,
            4
        );
        assert_eq!(
            allowed(&l.check(LimitedRoute::Signup, me, None)).remaining,
            2
        );
        // After a full period everything is back.
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            allowed(&l.check(LimitedRoute::Login, me, None)).remaining,
            4
        );
    }

    #[test]
    fn per_key_limits_count_normalised_keys_and_report_the_closest_limit() {
        let clock = FakeRelativeClock::default();
        let l = Limiters::with_clock(
            &limits("5/min", "100/min", "3/min", "2/hour"),
            clock.clone(),
        );
        let me = ip("192.0.2.7");
        let key = "CODITECT-PILOT-AAAA-BBBB-CCCC";
        let r = allowed(&l.check(LimitedRoute::Validate, me, Some(&body(key)))).clone();
        assert_eq!((r.limit, r.remaining), (Limit::Validate, 2));
        // The same key typed differently is the same key.
        l.check(
            LimitedRoute::Validate,
            me,
            Some(&body("  coditect-pilot-aaaa-bbbb-cccc ")),
        );
        l.check(LimitedRoute::Validate, me, Some(&body(key)));
        let refusal = refused(&l.check(LimitedRoute::Validate, me, Some(&body(key)))).clone();
        assert_eq!(refusal.report.limit, Limit::Validate);
        assert_eq!(refusal.retry_after, 20);
        // Another key is not affected, and activation counts separately.
        let other = "CODITECT-PILOT-DDDD-EEEE-FFFF";
        allowed(&l.check(LimitedRoute::Validate, me, Some(&body(other))));
        let r = allowed(&l.check(LimitedRoute::Activate, me, Some(&body(key)))).clone();
        assert_eq!((r.limit, r.remaining), (Limit::Activate, 1));
        allowed(&l.check(LimitedRoute::Activate, me, Some(&body(key))));
        let refusal = refused(&l.check(LimitedRoute::Activate, me, Some(&body(key)))).clone();
        assert_eq!(refusal.report.limit, Limit::Activate);
        assert_eq!(refusal.retry_after, 1800);
        assert_eq!(refusal.report.reset, 3600);
        // Bodies without a key are counted per IP only.
        let r = allowed(&l.check(LimitedRoute::Validate, me, None)).clone();
        assert_eq!(r.limit, Limit::LicenseIp);
        // Plain keys are not kept: only 32-byte hashes.
        assert_eq!(l.validate.len(), 2);
    }

    #[test]
    fn the_per_ip_license_limit_trips_on_many_keys_and_spares_the_key_quota() {
        let clock = FakeRelativeClock::default();
        let l = Limiters::with_clock(&limits("5/min", "4/min", "60/min", "2/hour"), clock);
        let me = ip("192.0.2.7");
        for i in 0..4 {
            let key = numbered_key(i);
            let route = if i % 2 == 0 {
                LimitedRoute::Validate
            } else {
                LimitedRoute::Activate
            };
            let r = allowed(&l.check(route, me, Some(&body(&key)))).clone();
            // The closer limit is reported: a fresh activation key has one
            // left, so it is the closer one until the IP has none left.
            if route == LimitedRoute::Validate || i == 3 {
                assert_eq!((r.limit, r.remaining), (Limit::LicenseIp, 3 - i));
            } else {
                assert_eq!((r.limit, r.remaining), (Limit::Activate, 1));
            }
        }
        let victim = "CODITECT-PILOT-VVVV-VVVV-VVVV";
        let refusal = refused(&l.check(LimitedRoute::Activate, me, Some(&body(victim)))).clone();
        assert_eq!(refusal.report.limit, Limit::LicenseIp);
        assert_eq!(refusal.retry_after, 15);
        refused(&l.check(LimitedRoute::Activate, me, Some(&body(victim))));
        refused(&l.check(LimitedRoute::Deactivate, me, Some(&body(victim))));
        refused(&l.check(LimitedRoute::Features, me, None));
        // The refused requests did not use the victim key's quota: both of
        // its activations are still there.
        let r = allowed(&l.check(
            LimitedRoute::Activate,
            ip("198.51.100.1"),
            Some(&body(victim)),
        ))
        .clone();
        assert_eq!((r.limit, r.remaining), (Limit::Activate, 1));
        allowed(&l.check(
            LimitedRoute::Activate,
            ip("198.51.100.2"),
            Some(&body(victim)),
        ));
        let refusal = refused(&l.check(
            LimitedRoute::Activate,
            ip("198.51.100.3"),
            Some(&body(victim)),
        ))
        .clone();
        assert_eq!(refusal.report.limit, Limit::Activate);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            bucket("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            bucket("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            bucket("192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        let l = Limiters::with_clock(
            &limits("2/min", "120/min", "60/min", "10/hour"),
            FakeRelativeClock::default(),
        );
        allowed(&l.check(LimitedRoute::Login, ip("2001:db8:1:2::1"), None));
        allowed(&l.check(LimitedRoute::Login, ip("2001:db8:1:2::ffff"), None));
        refused(&l.check(LimitedRoute::Login, ip("2001:db8:1:2:9::9"), None));
        allowed(&l.check(LimitedRoute::Login, ip("2001:db8:1:3::1"), None));
        // Unknown peers share one count.
        allowed(&l.check(LimitedRoute::Login, None, None));
        allowed(&l.check(LimitedRoute::Login, None, None));
        refused(&l.check(LimitedRoute::Login, None, None));
    }

    #[test]
    fn memory_is_given_back_once_quotas_are_full_again() {
        let clock = FakeRelativeClock::default();
        let l = Limiters::with_clock(
            &limits("5/min", "1000/min", "60/min", "10/hour"),
            clock.clone(),
        );
        for i in 0..300u32 {
            let client = IpAddr::V4(std::net::Ipv4Addr::from(0xC000_0200 + i));
            l.check(LimitedRoute::Login, Some(client), None);
            let key = numbered_key(i);
            l.check(LimitedRoute::Validate, Some(client), Some(&body(&key)));
        }
        assert_eq!(l.len(), 900);
        l.cleanup();
        assert_eq!(l.len(), 900, "recent entries are kept");
        clock.advance(Duration::from_secs(61));
        l.cleanup();
        assert!(l.is_empty(), "{} entries left", l.len());
        // Clean-up also happens by itself every 1,024 checks.
        for _ in 0..CLEANUP_EVERY {
            l.check(LimitedRoute::Features, ip("192.0.2.1"), None);
        }
        clock.advance(Duration::from_secs(61));
        for i in 0..CLEANUP_EVERY {
            let client = IpAddr::V4(std::net::Ipv4Addr::from(
                0xC633_6400 + u32::try_from(i).unwrap(),
            ));
            l.check(LimitedRoute::Signup, Some(client), None);
        }
        assert!(l.len() <= 1024, "{} entries", l.len());
        assert!(
            l.license_ip.len() == 0,
            "the stale entry went at the automatic clean-up"
        );
    }
}
