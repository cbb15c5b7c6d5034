//! Tests of the rate limiters: the GCRA quotas, the keys (license keys,
//! IPv6 per /64), the per-IP license limit, and memory given back.

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
