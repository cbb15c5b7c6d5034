//! Tests of the rate limiters: the GCRA quotas, the keys (license keys,
//! IPv6 per /64), the per-IP license limit, memory given back, and the
//! salt. Each check of the limits runs on every place the counts can live
//! ([`subjects`]): this process's memory, the database through the SQLite
//! store, and PostgreSQL when its server answers; the answers must be the
//! same.

use std::any::Any;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};

use governor::clock::FakeRelativeClock;

use super::in_process::CLEANUP_EVERY;
use super::*;

/// A moment in 2026, in Unix milliseconds: the database clocks' start.
const NOW_MS: i64 = 1_796_256_000_000;

/// Limits under test, and their clock.
struct Subject {
    name: &'static str,
    limiters: Limiters<FakeRelativeClock>,
    governor: FakeRelativeClock,
    millis: Arc<AtomicI64>,
    /// Keeps the database alive.
    _keep: Option<Box<dyn Any + Send>>,
}

impl Subject {
    async fn check(
        &self,
        route: LimitedRoute,
        client: Option<IpAddr>,
        key: Option<&LicenseKey>,
    ) -> Decision {
        self.limiters
            .check(route, client, key)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    fn advance(&self, by: Duration) {
        self.governor.advance(by);
        let ms = i64::try_from(by.as_millis()).unwrap();
        self.millis.fetch_add(ms, Ordering::SeqCst);
    }

    fn in_process(&self) -> Option<&InProcess<FakeRelativeClock>> {
        self.limiters.in_process_state()
    }
}

fn salt() -> Salt {
    Salt::from_secret(b"test-secret-test-secret-test-secret!")
}

fn millis_clock() -> (Arc<AtomicI64>, MillisClock) {
    let millis = Arc::new(AtomicI64::new(NOW_MS));
    let read = Arc::clone(&millis);
    (millis, Arc::new(move || read.load(Ordering::SeqCst)))
}

fn shared_subject(
    name: &'static str,
    limits: &RateLimits,
    store: SharedStore,
    keep: Box<dyn Any + Send>,
) -> Subject {
    let (millis, clock) = millis_clock();
    Subject {
        name,
        limiters: Limiters::shared(limits, salt(), store, clock),
        governor: FakeRelativeClock::default(),
        millis,
        _keep: Some(keep),
    }
}

/// The same limits counted in memory, in SQLite and (when its server
/// answers) in PostgreSQL.
async fn subjects(limits: &RateLimits) -> Vec<Subject> {
    let governor = FakeRelativeClock::default();
    let mut all = vec![Subject {
        name: "in process",
        limiters: Limiters::in_process(limits, salt(), governor.clone()),
        governor,
        millis: Arc::new(AtomicI64::new(NOW_MS)),
        _keep: None,
    }];
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::open_sqlite(
        &dir.path().join("limits.sqlite3"),
        crate::store::test_pepper(),
    )
    .unwrap();
    all.push(shared_subject("SQLite", limits, store, Box::new(dir)));
    if let Some(db) = crate::store::postgres::testing::TestDatabase::create().await {
        let store = db.open().await;
        all.push(shared_subject("PostgreSQL", limits, store, Box::new(db)));
    }
    all
}

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
        billing_user: rate("3/min"),
        billing_org: rate("5/min"),
        webhook_refusal: rate("2/min"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_th_request_passes_and_the_next_is_refused_until_one_is_regained() {
    for l in subjects(&limits("5/min", "120/min", "60/min", "10/hour")).await {
        eprintln!("counting {}", l.name);
        let me = ip("192.0.2.7");
        for i in 0..5u32 {
            let r = allowed(&l.check(LimitedRoute::Login, me, None).await).clone();
            assert_eq!(r.limit, Limit::Login);
            assert_eq!(r.remaining, 4 - i);
            assert_eq!(r.rate.count, NonZeroU32::new(5).unwrap());
        }
        let refusal = refused(&l.check(LimitedRoute::Login, me, None).await).clone();
        // One request is regained every 12 s; all five after 60 s.
        assert_eq!(refusal.retry_after, 12);
        assert_eq!(refusal.report.remaining, 0);
        assert_eq!(refusal.report.reset, 60);
        assert_eq!(refusal.report.policy(), "5;w=60");

        l.advance(Duration::from_secs(11));
        let r = refused(&l.check(LimitedRoute::Login, me, None).await).clone();
        assert_eq!(r.retry_after, 1);
        l.advance(Duration::from_secs(1));
        assert_eq!(
            allowed(&l.check(LimitedRoute::Login, me, None).await).remaining,
            0
        );
        refused(&l.check(LimitedRoute::Login, me, None).await);
        // Another address is not affected; signup has its own count.
        assert_eq!(
            allowed(&l.check(LimitedRoute::Login, ip("192.0.2.8"), None).await).remaining,
            4
        );
        assert_eq!(
            allowed(&l.check(LimitedRoute::Signup, me, None).await).remaining,
            2
        );
        // After a full period everything is back.
        l.advance(Duration::from_secs(60));
        assert_eq!(
            allowed(&l.check(LimitedRoute::Login, me, None).await).remaining,
            4
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limits_count_normalised_keys_and_report_the_closest_limit() {
    for l in subjects(&limits("5/min", "100/min", "3/min", "2/hour")).await {
        eprintln!("counting {}", l.name);
        let me = ip("192.0.2.7");
        let key = "CODITECT-PILOT-AAAA-BBBB-CCCC";
        let r = allowed(&l.check(LimitedRoute::Validate, me, Some(&body(key))).await).clone();
        assert_eq!((r.limit, r.remaining), (Limit::Validate, 2));
        // The same key typed differently is the same key.
        l.check(
            LimitedRoute::Validate,
            me,
            Some(&body("  coditect-pilot-aaaa-bbbb-cccc ")),
        )
        .await;
        l.check(LimitedRoute::Validate, me, Some(&body(key))).await;
        let refusal = refused(&l.check(LimitedRoute::Validate, me, Some(&body(key))).await).clone();
        assert_eq!(refusal.report.limit, Limit::Validate);
        assert_eq!(refusal.retry_after, 20);
        // Another key is not affected, and activation counts separately.
        let other = "CODITECT-PILOT-DDDD-EEEE-FFFF";
        allowed(
            &l.check(LimitedRoute::Validate, me, Some(&body(other)))
                .await,
        );
        let r = allowed(&l.check(LimitedRoute::Activate, me, Some(&body(key))).await).clone();
        assert_eq!((r.limit, r.remaining), (Limit::Activate, 1));
        allowed(&l.check(LimitedRoute::Activate, me, Some(&body(key))).await);
        let refusal = refused(&l.check(LimitedRoute::Activate, me, Some(&body(key))).await).clone();
        assert_eq!(refusal.report.limit, Limit::Activate);
        assert_eq!(refusal.retry_after, 1800);
        assert_eq!(refusal.report.reset, 3600);
        // Bodies without a key are counted per IP only.
        let r = allowed(&l.check(LimitedRoute::Validate, me, None).await).clone();
        assert_eq!(r.limit, Limit::LicenseIp);
        // Plain keys are not kept: only 32-byte hashes.
        if let Some(memory) = l.in_process() {
            assert_eq!(memory.validate.len(), 2);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_license_limit_trips_on_many_keys_and_spares_the_key_quota() {
    for l in subjects(&limits("5/min", "4/min", "60/min", "2/hour")).await {
        eprintln!("counting {}", l.name);
        let me = ip("192.0.2.7");
        for i in 0..4 {
            let key = numbered_key(i);
            let route = if i % 2 == 0 {
                LimitedRoute::Validate
            } else {
                LimitedRoute::Activate
            };
            let r = allowed(&l.check(route, me, Some(&body(&key))).await).clone();
            // The closer limit is reported: a fresh activation key has one
            // left, so it is the closer one until the IP has none left.
            if route == LimitedRoute::Validate || i == 3 {
                assert_eq!((r.limit, r.remaining), (Limit::LicenseIp, 3 - i));
            } else {
                assert_eq!((r.limit, r.remaining), (Limit::Activate, 1));
            }
        }
        let victim = "CODITECT-PILOT-VVVV-VVVV-VVVV";
        let refusal = refused(
            &l.check(LimitedRoute::Activate, me, Some(&body(victim)))
                .await,
        )
        .clone();
        assert_eq!(refusal.report.limit, Limit::LicenseIp);
        assert_eq!(refusal.retry_after, 15);
        refused(
            &l.check(LimitedRoute::Activate, me, Some(&body(victim)))
                .await,
        );
        refused(
            &l.check(LimitedRoute::Deactivate, me, Some(&body(victim)))
                .await,
        );
        refused(&l.check(LimitedRoute::Features, me, None).await);
        // The refused requests did not use the victim key's quota: both of
        // its activations are still there.
        let r = allowed(
            &l.check(
                LimitedRoute::Activate,
                ip("198.51.100.1"),
                Some(&body(victim)),
            )
            .await,
        )
        .clone();
        assert_eq!((r.limit, r.remaining), (Limit::Activate, 1));
        allowed(
            &l.check(
                LimitedRoute::Activate,
                ip("198.51.100.2"),
                Some(&body(victim)),
            )
            .await,
        );
        let refusal = refused(
            &l.check(
                LimitedRoute::Activate,
                ip("198.51.100.3"),
                Some(&body(victim)),
            )
            .await,
        )
        .clone();
        assert_eq!(refusal.report.limit, Limit::Activate);
    }
}

/// Billing calls count per user (3/min here) and per organization (5/min):
/// a refused user does not use up the organization's quota; webhook
/// refusals count per address (2/min).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_calls_count_per_user_and_organization_and_webhook_refusals_per_address() {
    for l in subjects(&limits("5/min", "120/min", "60/min", "10/hour")).await {
        eprintln!("counting {}", l.name);
        let check = |user: &'static str| {
            let limiters = &l.limiters;
            async move { limiters.check_billing(user, "org-1").await.unwrap() }
        };
        for left in [2, 1, 0] {
            let r = allowed(&check("user-a").await).clone();
            assert_eq!((r.limit, r.remaining), (Limit::BillingUser, left));
        }
        let refusal = refused(&check("user-a").await).clone();
        assert_eq!(refusal.report.limit, Limit::BillingUser);
        assert_eq!(refusal.retry_after, 20);
        // The organization has 2 left: user-a's refusal did not count.
        let r = allowed(&check("user-b").await).clone();
        assert_eq!((r.limit, r.remaining), (Limit::BillingOrg, 1));
        allowed(&check("user-b").await);
        let refusal = refused(&check("user-c").await).clone();
        assert_eq!(refusal.report.limit, Limit::BillingOrg);
        // Another organization is counted on its own.
        allowed(&l.limiters.check_billing("user-c", "org-2").await.unwrap());

        let me = ip("192.0.2.7");
        for left in [1, 0] {
            let d = l.limiters.check_webhook_refusal(me).await.unwrap();
            assert_eq!(allowed(&d).remaining, left);
        }
        let d = l.limiters.check_webhook_refusal(me).await.unwrap();
        assert_eq!(refused(&d).report.limit, Limit::WebhookRefusal);
        let other = l.limiters.check_webhook_refusal(ip("192.0.2.8")).await;
        allowed(&other.unwrap());
        // The webhook's count is its own: logins from the address pass.
        allowed(&l.check(LimitedRoute::Login, me, None).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
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
    for l in subjects(&limits("2/min", "120/min", "60/min", "10/hour")).await {
        eprintln!("counting {}", l.name);
        allowed(
            &l.check(LimitedRoute::Login, ip("2001:db8:1:2::1"), None)
                .await,
        );
        allowed(
            &l.check(LimitedRoute::Login, ip("2001:db8:1:2::ffff"), None)
                .await,
        );
        refused(
            &l.check(LimitedRoute::Login, ip("2001:db8:1:2:9::9"), None)
                .await,
        );
        allowed(
            &l.check(LimitedRoute::Login, ip("2001:db8:1:3::1"), None)
                .await,
        );
        // Unknown peers share one count.
        allowed(&l.check(LimitedRoute::Login, None, None).await);
        allowed(&l.check(LimitedRoute::Login, None, None).await);
        refused(&l.check(LimitedRoute::Login, None, None).await);
    }
}

#[tokio::test]
async fn memory_is_given_back_once_quotas_are_full_again() {
    let clock = FakeRelativeClock::default();
    let l = Limiters::in_process(
        &limits("5/min", "1000/min", "60/min", "10/hour"),
        salt(),
        clock.clone(),
    );
    let memory = l.in_process_state().unwrap();
    for i in 0..300u32 {
        let client = IpAddr::V4(std::net::Ipv4Addr::from(0xC000_0200 + i));
        l.check(LimitedRoute::Login, Some(client), None)
            .await
            .unwrap();
        let key = numbered_key(i);
        l.check(LimitedRoute::Validate, Some(client), Some(&body(&key)))
            .await
            .unwrap();
    }
    assert_eq!(memory.len(), 900);
    memory.cleanup();
    assert_eq!(memory.len(), 900, "recent entries are kept");
    clock.advance(Duration::from_secs(61));
    memory.cleanup();
    assert!(memory.is_empty(), "{} entries left", memory.len());
    // Clean-up also happens by itself every 1,024 checks.
    for _ in 0..CLEANUP_EVERY {
        l.check(LimitedRoute::Features, ip("192.0.2.1"), None)
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(61));
    for i in 0..CLEANUP_EVERY {
        let client = IpAddr::V4(std::net::Ipv4Addr::from(
            0xC633_6400 + u32::try_from(i).unwrap(),
        ));
        l.check(LimitedRoute::Signup, Some(client), None)
            .await
            .unwrap();
    }
    assert!(memory.len() <= 1024, "{} entries", memory.len());
    assert!(
        memory.license_ip.len() == 0,
        "the stale entry went at the automatic clean-up"
    );
}

#[test]
fn the_salt_is_an_hmac_of_the_jwt_secret() {
    assert_eq!(
        hex::encode(salt().0),
        "b6e581a04e4d0ad65ace83a33e5e56b9b10ca1bfc9bbc526e9fe4726f969e1bd"
    );
    assert_ne!(Salt::from_secret(b"another secret").0, salt().0);
    assert_eq!(format!("{:?}", salt()), "Salt(…)");
}

/// Two instances on one database: with the same `JWT_SECRET` they count a
/// client in the same bucket; with another secret, in another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_one_secret_share_their_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::open_sqlite(
        &dir.path().join("limits.sqlite3"),
        crate::store::test_pepper(),
    )
    .unwrap();
    let rates = limits("3/min", "120/min", "60/min", "10/hour");
    let (_, clock) = millis_clock();
    let instance = |salt: Salt| {
        Limiters::<LimiterClock>::shared(&rates, salt, Arc::clone(&store), Arc::clone(&clock))
    };
    let (a, b) = (instance(salt()), instance(salt()));
    let me = ip("192.0.2.7");
    for l in [&a, &b, &a] {
        allowed(&l.check(LimitedRoute::Login, me, None).await.unwrap());
    }
    let refusal = refused(&b.check(LimitedRoute::Login, me, None).await.unwrap()).clone();
    assert_eq!(refusal.retry_after, 20);
    let other = instance(Salt::from_secret(b"another secret"));
    assert_eq!(
        allowed(&other.check(LimitedRoute::Login, me, None).await.unwrap()).remaining,
        2
    );
}

/// When the database with the counts is gone, a check is an error (the
/// middleware answers 503), never a silent pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_an_error_not_a_pass() {
    let Some(db) = crate::store::postgres::testing::TestDatabase::create().await else {
        return;
    };
    let store = db.open().await;
    let (_, clock) = millis_clock();
    let l = Limiters::<LimiterClock>::shared(
        &limits("5/min", "120/min", "60/min", "10/hour"),
        salt(),
        store,
        clock,
    );
    allowed(
        &l.check(LimitedRoute::Login, ip("192.0.2.7"), None)
            .await
            .unwrap(),
    );
    drop(db);
    // (A dropped database is refused by name: a failure rather than an
    // outage; both are answered 503.)
    let result = l.check(LimitedRoute::Login, ip("192.0.2.7"), None).await;
    assert!(result.is_err(), "{result:?}");
}
