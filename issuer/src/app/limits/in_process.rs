//! The limits counted in this process's memory (`governor`'s keyed GCRA),
//! for a server on SQLite, which is the only process on its database.
//! Each limiter keeps one entry per salted hash seen within its period;
//! entries indistinguishable from a fresh key are dropped every 1,024
//! checks and at the first check a minute after the last clean-up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{Digest, Limit, Refusal, Report, ceil_secs};
use crate::config::{Per, Rate, RateLimits};

/// Clean up after this many checks…
pub(super) const CLEANUP_EVERY: u64 = 1024;
/// …or at the first check this long after the last clean-up.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

type Keyed<C> = RateLimiter<Digest, DefaultKeyedStateStore<Digest>, C, StateInformationMiddleware>;

/// One keyed limiter and its rate.
pub(super) struct Limiter<C: Clock> {
    limit: Limit,
    rate: Rate,
    inner: Keyed<C>,
}

fn quota(rate: Rate) -> Quota {
    // Burst = the limit; one more every period / limit.
    match rate.per {
        Per::Second => Quota::per_second(rate.count),
        Per::Minute => Quota::per_minute(rate.count),
        Per::Hour => Quota::per_hour(rate.count),
    }
}

impl<C: Clock + Clone> Limiter<C> {
    fn new(limit: Limit, rate: Rate, clock: &C) -> Self {
        let plain: RateLimiter<
            Digest,
            DefaultKeyedStateStore<Digest>,
            C,
            NoOpMiddleware<C::Instant>,
        > = RateLimiter::new(
            quota(rate),
            DefaultKeyedStateStore::default(),
            clock.clone(),
        );
        let inner = plain.with_middleware::<StateInformationMiddleware>();
        Limiter { limit, rate, inner }
    }

    fn check(&self, key: &Digest, clock: &C) -> Result<Report, Refusal> {
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

    pub(super) fn len(&self) -> usize {
        self.inner.len()
    }
}

/// The limiters of a process.
pub struct InProcess<C: Clock> {
    clock: C,
    pub(super) login: Limiter<C>,
    pub(super) signup: Limiter<C>,
    pub(super) license_ip: Limiter<C>,
    pub(super) validate: Limiter<C>,
    pub(super) activate: Limiter<C>,
    pub(super) billing_user: Limiter<C>,
    pub(super) billing_org: Limiter<C>,
    pub(super) webhook_refusal: Limiter<C>,
    checks: AtomicU64,
    started: Instant,
    /// Seconds after `started` when the next timed clean-up is due.
    next_cleanup: AtomicU64,
}

impl<C: Clock + Clone> InProcess<C> {
    pub(super) fn new(limits: &RateLimits, clock: C) -> Self {
        InProcess {
            login: Limiter::new(Limit::Login, limits.login, &clock),
            signup: Limiter::new(Limit::Signup, limits.signup, &clock),
            license_ip: Limiter::new(Limit::LicenseIp, limits.license_ip, &clock),
            validate: Limiter::new(Limit::Validate, limits.validate, &clock),
            activate: Limiter::new(Limit::Activate, limits.activate, &clock),
            billing_user: Limiter::new(Limit::BillingUser, limits.billing_user, &clock),
            billing_org: Limiter::new(Limit::BillingOrg, limits.billing_org, &clock),
            webhook_refusal: Limiter::new(Limit::WebhookRefusal, limits.webhook_refusal, &clock),
            clock,
            checks: AtomicU64::new(0),
            started: Instant::now(),
            next_cleanup: AtomicU64::new(CLEANUP_INTERVAL.as_secs()),
        }
    }

    /// Counts one request against `limit` for `key`.
    pub(super) fn count(&self, limit: Limit, key: &Digest) -> Result<Report, Refusal> {
        let limiter = match limit {
            Limit::Login => &self.login,
            Limit::Signup => &self.signup,
            Limit::LicenseIp => &self.license_ip,
            Limit::Validate => &self.validate,
            Limit::Activate => &self.activate,
            Limit::BillingUser => &self.billing_user,
            Limit::BillingOrg => &self.billing_org,
            Limit::WebhookRefusal => &self.webhook_refusal,
        };
        limiter.check(key, &self.clock)
    }

    /// Called once per request: cleans up every [`CLEANUP_EVERY`] checks
    /// and when a minute has gone by.
    pub(super) fn maybe_cleanup(&self) {
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
        self.billing_user.cleanup();
        self.billing_org.cleanup();
        self.webhook_refusal.cleanup();
    }

    /// Entries kept, over all limiters.
    pub fn len(&self) -> usize {
        self.login.len()
            + self.signup.len()
            + self.license_ip.len()
            + self.validate.len()
            + self.activate.len()
            + self.billing_user.len()
            + self.billing_org.len()
            + self.webhook_refusal.len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
