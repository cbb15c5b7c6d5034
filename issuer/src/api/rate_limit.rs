//! Request rate limits: keyed GCRA limiters (`governor`), checked by the
//! `respond` middleware before the endpoint runs, so refused requests never
//! reach the database or Argon2.
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

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use poem::http::{HeaderMap, HeaderValue, Method, StatusCode};
use poem_openapi::payload::Json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::problem::{ApiError, Problem};
use crate::config::{Config, Per, Rate, RateLimits};

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

impl LimitedRoute {
    /// The limited route a request goes to, if any. The path is compared
    /// with repeated and trailing slashes removed, so that spelling variants
    /// are counted too.
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        let mut normal = String::with_capacity(path.len());
        for part in path.split('/').filter(|p| !p.is_empty()) {
            normal.push('/');
            normal.push_str(part);
        }
        let route = match normal.as_str() {
            "/api/v1/auth/login" => LimitedRoute::Login,
            // The web form creates accounts too: one quota for both.
            "/api/v1/auth/signup" | "/signup" => LimitedRoute::Signup,
            "/api/v1/licenses/validate" => LimitedRoute::Validate,
            "/api/v1/licenses/activate" => LimitedRoute::Activate,
            "/api/v1/licenses/deactivate" => LimitedRoute::Deactivate,
            "/api/v1/licenses/features" => {
                return (method == Method::GET).then_some(Self::Features);
            }
            _ => return None,
        };
        (method == Method::POST).then_some(route)
    }
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

    /// Sets `RateLimit-Limit`, `-Remaining`, `-Reset` and `-Policy`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("ratelimit-limit", self.rate.count.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset.to_string()),
            ("ratelimit-policy", self.policy()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
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

impl Refusal {
    /// The 429 problem (without request id).
    pub fn problem(&self) -> Problem {
        let rate = self.report.rate.describe();
        let what = match self.report.limit {
            Limit::Login => {
                format!("Too many sign-in attempts from your network address: at most {rate}.")
            }
            Limit::Signup => format!("Too many signups from your network address: at most {rate}."),
            Limit::LicenseIp => format!(
                "Too many license requests from your network address: at most {rate}, counting activations, renewals and other requests with a license key together."
            ),
            Limit::Validate => format!("Too many renewals for this license key: at most {rate}."),
            Limit::Activate => {
                format!("Too many activations for this license key: at most {rate}.")
            }
        };
        let s = if self.retry_after == 1 { "" } else { "s" };
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests",
            format!("{what} Try again in {} second{s}.", self.retry_after),
        )
    }

    /// Sets `Retry-After` and the `RateLimit-*` headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        self.report.apply(headers);
        headers.insert("retry-after", HeaderValue::from(self.retry_after));
    }

    /// The documented 429 answer (`ApiError::TooManyRequests`): `problem`
    /// with `Retry-After` and the `RateLimit-*` headers.
    pub fn error(&self, problem: Problem) -> ApiError {
        ApiError::TooManyRequests(
            Json(problem),
            self.retry_after,
            self.report.rate.count.get(),
            self.report.remaining,
            self.report.reset,
            self.report.policy(),
        )
    }
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
    trusted_proxies: usize,
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
        Self::with_clock(
            &config.rate_limits,
            config.trust_proxy,
            DefaultClock::default(),
        )
    }
}

impl<C: Clock + Clone> Limiters<C> {
    /// Limiters on `clock` (tests pass a fake one).
    pub fn with_clock(limits: &RateLimits, trusted_proxies: usize, clock: C) -> Self {
        let mut salt = [0u8; 32];
        // Without randomness the hash is still one-way; the salt only keeps
        // it from matching the key hashes in the database.
        let _ = getrandom::fill(&mut salt);
        Limiters {
            trusted_proxies,
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

    /// `TRUST_PROXY`.
    pub fn trusted_proxies(&self) -> usize {
        self.trusted_proxies
    }

    /// Counts a request to `route` from `client` (`None`: unknown, all such
    /// requests share one count) with request body `body`.
    pub fn check(&self, route: LimitedRoute, client: Option<IpAddr>, body: &[u8]) -> Decision {
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
                    match self.key_hash(body) {
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

    /// The salted SHA-256 of the `license_key` of a JSON body, normalised as
    /// the handlers normalise it. The body is parsed as the framework parses
    /// it (a repeated field: the last one counts).
    fn key_hash(&self, body: &[u8]) -> Option<[u8; 32]> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let key = Zeroizing::new(
            value
                .get("license_key")?
                .as_str()?
                .trim()
                .to_ascii_uppercase(),
        );
        drop(value);
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(key.as_bytes());
        Some(hasher.finalize().into())
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

/// The client's address: the socket peer or, with `trusted_proxies` = N > 0,
/// the N-th address from the right of `X-Forwarded-For` (see the module
/// documentation). `None` when neither is known.
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted_proxies: usize,
) -> Option<IpAddr> {
    if trusted_proxies == 0 {
        return peer;
    }
    forwarded_client(headers, trusted_proxies).or(peer)
}

/// The client's address of a request (for the limiters and the audit log).
pub fn request_client_ip(req: &poem::Request, trusted_proxies: usize) -> Option<IpAddr> {
    let peer = req.remote_addr().as_socket_addr().map(SocketAddr::ip);
    client_ip(peer, req.headers(), trusted_proxies)
}

fn forwarded_client(headers: &HeaderMap, trusted_proxies: usize) -> Option<IpAddr> {
    let mut entries = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        entries.extend(value.to_str().ok()?.split(',').map(str::trim));
    }
    let index = entries.len().checked_sub(trusted_proxies)?;
    parse_ip(entries.get(index)?)
}

/// `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, `1.2.3.4:5678` or
/// `[2001:db8::1]:5678`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })
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

    fn body(key: &str) -> Vec<u8> {
        serde_json::json!({ "license_key": key, "hardware_id": "h" })
            .to_string()
            .into_bytes()
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
    fn limited_routes_are_recognised_in_any_spelling() {
        let post = &Method::POST;
        assert_eq!(
            LimitedRoute::of(post, "/api/v1/auth/login"),
            Some(LimitedRoute::Login)
        );
        assert_eq!(
            LimitedRoute::of(post, "//api/v1//auth/login/"),
            Some(LimitedRoute::Login)
        );
        assert_eq!(
            LimitedRoute::of(post, "/api/v1/auth/signup"),
            Some(LimitedRoute::Signup)
        );
        assert_eq!(
            LimitedRoute::of(post, "/api/v1/licenses/validate"),
            Some(LimitedRoute::Validate)
        );
        assert_eq!(
            LimitedRoute::of(post, "/api/v1/licenses/activate"),
            Some(LimitedRoute::Activate)
        );
        assert_eq!(
            LimitedRoute::of(post, "/api/v1/licenses/deactivate"),
            Some(LimitedRoute::Deactivate)
        );
        assert_eq!(
            LimitedRoute::of(&Method::GET, "/api/v1/licenses/features"),
            Some(LimitedRoute::Features)
        );
        assert_eq!(
            LimitedRoute::of(post, "/signup"),
            Some(LimitedRoute::Signup)
        );
        assert_eq!(LimitedRoute::of(&Method::GET, "/signup"), None);
        assert_eq!(LimitedRoute::of(post, "/signup/cancel"), None);
        assert_eq!(LimitedRoute::of(&Method::GET, "/api/v1/auth/login"), None);
        assert_eq!(LimitedRoute::of(post, "/api/v1/auth/logout"), None);
        assert_eq!(LimitedRoute::of(post, "/api/v1/licenses"), None);
        assert_eq!(LimitedRoute::of(&Method::GET, "/healthz"), None);
    }

    #[test]
    fn the_limit_th_request_passes_and_the_next_is_refused_until_one_is_regained() {
        let clock = FakeRelativeClock::default();
        let l = Limiters::with_clock(
            &limits("5/min", "120/min", "60/min", "10/hour"),
            0,
            clock.clone(),
        );
        let me = ip("192.0.2.7");
        for i in 0..5u32 {
            let r = allowed(&l.check(LimitedRoute::Login, me, b"")).clone();
            assert_eq!(r.limit, Limit::Login);
            assert_eq!(r.remaining, 4 - i);
            assert_eq!(r.rate.count, NonZeroU32::new(5).unwrap());
        }
        let refusal = refused(&l.check(LimitedRoute::Login, me, b"")).clone();
        // One request is regained every 12 s; all five after 60 s.
        assert_eq!(refusal.retry_after, 12);
        assert_eq!(refusal.report.remaining, 0);
        assert_eq!(refusal.report.reset, 60);
        let p = refusal.problem();
        assert_eq!((p.status, p.code.as_str()), (429, "rate_limited"));
        assert!(p.detail.contains("5 per minute"), "{}", p.detail);
        assert!(p.detail.contains("12 seconds"), "{}", p.detail);
        let mut headers = HeaderMap::new();
        refusal.apply(&mut headers);
        let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("retry-after"), "12");
        assert_eq!(h("ratelimit-limit"), "5");
        assert_eq!(h("ratelimit-remaining"), "0");
        assert_eq!(h("ratelimit-reset"), "60");
        assert_eq!(h("ratelimit-policy"), "5;w=60");

        clock.advance(Duration::from_secs(11));
        let r = refused(&l.check(LimitedRoute::Login, me, b"")).clone();
        assert_eq!(r.retry_after, 1);
        assert!(r.problem().detail.contains("1 second."));
        clock.advance(Duration::from_secs(1));
        assert_eq!(allowed(&l.check(LimitedRoute::Login, me, b"")).remaining, 0);
        refused(&l.check(LimitedRoute::Login, me, b""));
        // Another address is not affected; signup has its own count.
        assert_eq!(
            allowed(&l.check(LimitedRoute::Login, ip("192.0.2.8"), b"")).remaining,
            4
        );
        assert_eq!(
            allowed(&l.check(LimitedRoute::Signup, me, b"")).remaining,
            2
        );
        // After a full period everything is back.
        clock.advance(Duration::from_secs(60));
        assert_eq!(allowed(&l.check(LimitedRoute::Login, me, b"")).remaining, 4);
    }

    #[test]
    fn per_key_limits_count_normalised_keys_and_report_the_closest_limit() {
        let clock = FakeRelativeClock::default();
        let l = Limiters::with_clock(
            &limits("5/min", "100/min", "3/min", "2/hour"),
            0,
            clock.clone(),
        );
        let me = ip("192.0.2.7");
        let key = "CODITECT-PILOT-AAAA-BBBB-CCCC";
        let r = allowed(&l.check(LimitedRoute::Validate, me, &body(key))).clone();
        assert_eq!((r.limit, r.remaining), (Limit::Validate, 2));
        // The same key typed differently is the same key.
        l.check(
            LimitedRoute::Validate,
            me,
            &body("  coditect-pilot-aaaa-bbbb-cccc "),
        );
        l.check(LimitedRoute::Validate, me, &body(key));
        let refusal = refused(&l.check(LimitedRoute::Validate, me, &body(key))).clone();
        assert_eq!(refusal.report.limit, Limit::Validate);
        assert_eq!(refusal.retry_after, 20);
        assert!(refusal.problem().detail.contains("license key"));
        // A repeated field counts as the framework reads it: the last one.
        let sneaky = format!(r#"{{"license_key":"OTHER","license_key":"{key}"}}"#);
        refused(&l.check(LimitedRoute::Validate, me, sneaky.as_bytes()));
        // Another key is not affected, and activation counts separately.
        let other = "CODITECT-PILOT-DDDD-EEEE-FFFF";
        allowed(&l.check(LimitedRoute::Validate, me, &body(other)));
        let r = allowed(&l.check(LimitedRoute::Activate, me, &body(key))).clone();
        assert_eq!((r.limit, r.remaining), (Limit::Activate, 1));
        allowed(&l.check(LimitedRoute::Activate, me, &body(key)));
        let refusal = refused(&l.check(LimitedRoute::Activate, me, &body(key))).clone();
        assert_eq!(refusal.report.limit, Limit::Activate);
        assert_eq!(refusal.retry_after, 1800);
        assert_eq!(refusal.report.reset, 3600);
        // Bodies without a key are counted per IP only.
        let r = allowed(&l.check(LimitedRoute::Validate, me, b"not json")).clone();
        assert_eq!(r.limit, Limit::LicenseIp);
        // Plain keys are not kept: only 32-byte hashes.
        assert_eq!(l.validate.len(), 2);
    }

    #[test]
    fn the_per_ip_license_limit_trips_on_many_keys_and_spares_the_key_quota() {
        let clock = FakeRelativeClock::default();
        let l = Limiters::with_clock(&limits("5/min", "4/min", "60/min", "2/hour"), 0, clock);
        let me = ip("192.0.2.7");
        for i in 0..4 {
            let key = format!("CODITECT-PILOT-AAAA-BBBB-{i:04}");
            let route = if i % 2 == 0 {
                LimitedRoute::Validate
            } else {
                LimitedRoute::Activate
            };
            let r = allowed(&l.check(route, me, &body(&key))).clone();
            // The closer limit is reported: a fresh activation key has one
            // left, so it is the closer one until the IP has none left.
            if route == LimitedRoute::Validate || i == 3 {
                assert_eq!((r.limit, r.remaining), (Limit::LicenseIp, 3 - i));
            } else {
                assert_eq!((r.limit, r.remaining), (Limit::Activate, 1));
            }
        }
        let victim = "CODITECT-PILOT-VVVV-VVVV-VVVV";
        let refusal = refused(&l.check(LimitedRoute::Activate, me, &body(victim))).clone();
        assert_eq!(refusal.report.limit, Limit::LicenseIp);
        assert_eq!(refusal.retry_after, 15);
        assert!(refusal.problem().detail.contains("network address"));
        refused(&l.check(LimitedRoute::Activate, me, &body(victim)));
        refused(&l.check(LimitedRoute::Deactivate, me, &body(victim)));
        refused(&l.check(LimitedRoute::Features, me, b""));
        // The refused requests did not use the victim key's quota: both of
        // its activations are still there.
        let r =
            allowed(&l.check(LimitedRoute::Activate, ip("198.51.100.1"), &body(victim))).clone();
        assert_eq!((r.limit, r.remaining), (Limit::Activate, 1));
        allowed(&l.check(LimitedRoute::Activate, ip("198.51.100.2"), &body(victim)));
        let refusal =
            refused(&l.check(LimitedRoute::Activate, ip("198.51.100.3"), &body(victim))).clone();
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
            0,
            FakeRelativeClock::default(),
        );
        allowed(&l.check(LimitedRoute::Login, ip("2001:db8:1:2::1"), b""));
        allowed(&l.check(LimitedRoute::Login, ip("2001:db8:1:2::ffff"), b""));
        refused(&l.check(LimitedRoute::Login, ip("2001:db8:1:2:9::9"), b""));
        allowed(&l.check(LimitedRoute::Login, ip("2001:db8:1:3::1"), b""));
        // Unknown peers share one count.
        allowed(&l.check(LimitedRoute::Login, None, b""));
        allowed(&l.check(LimitedRoute::Login, None, b""));
        refused(&l.check(LimitedRoute::Login, None, b""));
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_read_only_when_proxies_are_trusted() {
        let peer = ip("10.0.0.1");
        let h = xff(&["203.0.113.9"]);
        // Not trusted: the peer, whatever the header says.
        assert_eq!(client_ip(peer, &h, 0), peer);
        assert_eq!(client_ip(None, &h, 0), None);
        // One proxy (Cloud Run): the right-most entry, which it added.
        assert_eq!(client_ip(peer, &h, 1), ip("203.0.113.9"));
        let forged = xff(&["1.1.1.1, 2.2.2.2, 203.0.113.9"]);
        assert_eq!(client_ip(peer, &forged, 1), ip("203.0.113.9"));
        // Two proxies: the second from the right.
        assert_eq!(client_ip(peer, &forged, 2), ip("2.2.2.2"));
        // Several header fields are one list.
        let split = xff(&["1.1.1.1", "203.0.113.9, 10.0.0.2"]);
        assert_eq!(client_ip(peer, &split, 1), ip("10.0.0.2"));
        assert_eq!(client_ip(peer, &split, 2), ip("203.0.113.9"));
        // Too few entries, garbage or no header: the peer.
        assert_eq!(client_ip(peer, &h, 2), peer);
        assert_eq!(client_ip(peer, &xff(&["1.1.1.1, nonsense"]), 1), peer);
        assert_eq!(client_ip(peer, &xff(&[""]), 1), peer);
        assert_eq!(client_ip(peer, &HeaderMap::new(), 1), peer);
        // Addresses with ports or brackets.
        assert_eq!(
            client_ip(peer, &xff(&["203.0.113.9:4711"]), 1),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(peer, &xff(&["[2001:db8::1]:443"]), 1),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(peer, &xff(&["[2001:db8::1]"]), 1),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(peer, &xff(&["2001:db8::1"]), 1),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn memory_is_given_back_once_quotas_are_full_again() {
        let clock = FakeRelativeClock::default();
        let l = Limiters::with_clock(
            &limits("5/min", "1000/min", "60/min", "10/hour"),
            0,
            clock.clone(),
        );
        for i in 0..300u32 {
            let client = IpAddr::V4(std::net::Ipv4Addr::from(0xC000_0200 + i));
            l.check(LimitedRoute::Login, Some(client), b"");
            let key = format!("CODITECT-PILOT-AAAA-BBBB-{i:04}");
            l.check(LimitedRoute::Validate, Some(client), &body(&key));
        }
        assert_eq!(l.len(), 900);
        l.cleanup();
        assert_eq!(l.len(), 900, "recent entries are kept");
        clock.advance(Duration::from_secs(61));
        l.cleanup();
        assert!(l.is_empty(), "{} entries left", l.len());
        // Clean-up also happens by itself every 1,024 checks.
        for _ in 0..CLEANUP_EVERY {
            l.check(LimitedRoute::Features, ip("192.0.2.1"), b"");
        }
        clock.advance(Duration::from_secs(61));
        for i in 0..CLEANUP_EVERY {
            let client = IpAddr::V4(std::net::Ipv4Addr::from(
                0xC633_6400 + u32::try_from(i).unwrap(),
            ));
            l.check(LimitedRoute::Signup, Some(client), b"");
        }
        assert!(l.len() <= 1024, "{} entries", l.len());
        assert!(
            l.license_ip.len() == 0,
            "the stale entry went at the automatic clean-up"
        );
    }
}
