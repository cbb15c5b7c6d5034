//! Rate limits, in process through the same app the server runs: 429 at
//! exactly the limit of each limited route, with `Retry-After` and the
//! `RateLimit-*` headers; other clients and other keys unaffected; the
//! client IP from the socket peer, and from `X-Forwarded-For` only with
//! `TRUST_PROXY`.
//!
//! `TestClient` cannot set the socket peer, so the app is wrapped: a request
//! with `x-test-peer: IP` reaches the app from `IP:40000` (the header itself
//! is removed). Requests without it have no known peer.
//!
//! The limits run on a fake clock (`governor`'s `FakeRelativeClock`) that
//! stands still unless a test moves it: however slow the machine, a burst
//! is one instant, and a test that waits moves the clock by exactly that.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use coditect_issuer::app::limits::{LimiterClock, Limiters, Salt};
use coditect_issuer::app::{self as api, AppState};
use coditect_issuer::config::{Config, Env, Overrides};
use coditect_issuer::domain::license::NewLicense;
use coditect_issuer::domain::license_key::LicenseKey;
use coditect_issuer::domain::plans;
use coditect_issuer::http;
use governor::clock::FakeRelativeClock;
use poem::http::StatusCode;
use poem::http::uri::Scheme;
use poem::test::{TestClient, TestResponse};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, EndpointExt, Request, RequestParts};
use serde_json::{Value, json};
use verifier::HardwareId;

struct Harness {
    _dir: tempfile::TempDir,
    state: AppState,
    /// The limits' clock: moves only when the test advances it.
    clock: FakeRelativeClock,
    /// The SQLite file, for tests that look at or break the database.
    db_path: std::path::PathBuf,
}

struct VecEnv(Vec<(String, String)>);

impl Env for VecEnv {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// An app with the production default limits, plus `extra` variables.
fn harness_with(extra: &[(&str, &str)]) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut vars: Vec<(String, String)> = vec![
        (
            "CODITECT_DATA_DIR".into(),
            dir.path().to_str().unwrap().to_owned(),
        ),
        (
            "JWT_SECRET".into(),
            "test-secret-test-secret-test-secret!".into(),
        ),
    ];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let config = Config::load(&VecEnv(vars), &Overrides::default(), &mut Vec::new()).unwrap();
    let coditect_issuer::config::DatabaseLocation::Sqlite(path) = &config.database else {
        panic!("the harness runs on SQLite");
    };
    let store =
        coditect_issuer::store::open_sqlite(path, config.license_key_pepper.clone()).unwrap();
    let db_path = path.clone();
    let clock = FakeRelativeClock::default();
    let mut state = AppState::new(config, store);
    state.limits = Arc::new(Limiters::in_process(
        &state.config.rate_limits,
        Salt::from_secret(&state.config.jwt_secret),
        LimiterClock::Fake(clock.clone()),
    ));
    Harness {
        _dir: dir,
        state,
        clock,
        db_path,
    }
}

/// Gives the request the socket peer named by `x-test-peer`.
fn with_test_peer(req: Request) -> Request {
    let Some(peer) = req
        .headers()
        .get("x-test-peer")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<IpAddr>().ok())
    else {
        return req;
    };
    let (parts, body) = req.into_parts();
    let mut head = poem::http::Request::new(());
    *head.method_mut() = parts.method;
    *head.uri_mut() = parts.uri;
    *head.version_mut() = parts.version;
    *head.headers_mut() = parts.headers;
    *head.extensions_mut() = parts.extensions;
    head.headers_mut().remove("x-test-peer");
    let (head, ()) = head.into_parts();
    let parts = RequestParts::from((
        head,
        LocalAddr::default(),
        RemoteAddr(Addr::SocketAddr(SocketAddr::new(peer, 40000))),
        Scheme::HTTP,
    ));
    Request::from_parts(parts, body)
}

impl Harness {
    /// A connection of its own to the database file.
    #[allow(dead_code)]
    fn sql(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db_path).unwrap()
    }

    fn client(&self) -> TestClient<impl Endpoint> {
        TestClient::new(
            http::app(self.state.clone()).before(|req| async move { Ok(with_test_peer(req)) }),
        )
    }

    /// A license allowing `devices` machines; returns (id, key).
    async fn license(&self, devices: u32) -> (String, String) {
        let (lic, key) = self
            .state
            .store
            .create_license(
                &NewLicense {
                    email: "hal@az1.ai",
                    plan: plans::find("pilot-professional").unwrap(),
                    expires_at: api::now() + 90 * 86_400,
                    max_devices: Some(devices),
                    organization_id: None,
                    stripe_subscription_id: None,
                },
                api::now(),
            )
            .await
            .unwrap();
        (lic.id, key.expose().to_owned())
    }

    async fn activations(&self, license_id: &str) -> usize {
        self.state
            .store
            .activations(license_id)
            .await
            .unwrap()
            .len()
    }
}

fn hw(n: u32) -> String {
    HardwareId::from_machine_id(&format!("machine-{n}")).to_hex()
}

fn header(resp: &TestResponse, name: &str) -> Option<String> {
    resp.0
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn number(resp: &TestResponse, name: &str) -> u64 {
    header(resp, name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a whole number"))
}

/// A POST from `peer`, with extra headers.
async fn post(
    c: &TestClient<impl Endpoint>,
    path: &str,
    peer: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> TestResponse {
    let mut req = c.post(path).header("x-test-peer", peer);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body_json(body).send().await
}

async fn login(c: &TestClient<impl Endpoint>, peer: &str, n: u32) -> TestResponse {
    login_via(c, peer, &[], n).await
}

async fn login_via(
    c: &TestClient<impl Endpoint>,
    peer: &str,
    headers: &[(&str, &str)],
    n: u32,
) -> TestResponse {
    // A different unknown email each time: no lockout, only the rate limit.
    let body =
        json!({ "email": format!("nobody{n}@example.com"), "password": "wrong-password-123" });
    post(c, "/api/v1/auth/login", peer, headers, &body).await
}

/// Asserts a 429 `rate_limited` problem with all its headers; returns
/// (Retry-After, body).
async fn assert_rate_limited(resp: TestResponse, limit: u64, window: u64) -> (u64, Value) {
    resp.assert_status(StatusCode::TOO_MANY_REQUESTS);
    resp.assert_content_type("application/problem+json");
    let retry_after = number(&resp, "retry-after");
    assert!(
        (1..=window).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(number(&resp, "ratelimit-limit"), limit);
    assert_eq!(number(&resp, "ratelimit-remaining"), 0);
    let reset = number(&resp, "ratelimit-reset");
    assert!(
        reset >= retry_after && reset <= window,
        "RateLimit-Reset {reset}"
    );
    assert_eq!(
        header(&resp, "ratelimit-policy").as_deref(),
        Some(format!("{limit};w={window}").as_str())
    );
    // The security headers are on 429s too.
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(header(&resp, name).as_deref(), Some(value), "{name}");
    }
    assert!(header(&resp, "strict-transport-security").is_some());
    assert!(header(&resp, "content-security-policy").is_some());
    let request_id = header(&resp, "x-request-id").expect("x-request-id");
    let body: Value = resp.json().await.value().deserialize();
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert_eq!(body["type"], "urn:coditect:problem:rate_limited");
    assert_eq!(body["status"], 429);
    assert_eq!(body["request_id"], request_id.as_str());
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("Try again in {retry_after} second")),
        "{detail}"
    );
    (retry_after, body)
}

fn assert_not_limited(resp: &TestResponse) {
    assert_ne!(
        resp.0.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "unexpected 429"
    );
}

#[tokio::test]
async fn login_allows_5_a_minute_per_ip_by_default() {
    let h = harness_with(&[]);
    let c = h.client();
    let started = std::time::Instant::now();
    for n in 0..5 {
        let r = login(&c, "203.0.113.1", n).await;
        r.assert_status(StatusCode::UNAUTHORIZED);
        // Answers of limited routes say how much is left.
        assert_eq!(number(&r, "ratelimit-limit"), 5);
        assert_eq!(number(&r, "ratelimit-remaining"), 4 - u64::from(n));
        assert_eq!(header(&r, "ratelimit-policy").as_deref(), Some("5;w=60"));
        assert!(number(&r, "ratelimit-reset") <= 60);
        assert_eq!(header(&r, "retry-after"), None);
    }
    let (retry_after, body) = assert_rate_limited(login(&c, "203.0.113.1", 5).await, 5, 60).await;
    // One attempt is regained every 12 s from the first: the wait is 12 s
    // less the time the five sign-ins took (Argon2 is slow on a busy
    // machine), rounded up.
    let spent = started.elapsed().as_secs();
    assert!(
        retry_after + spent >= 11 && retry_after <= 12,
        "one attempt is regained every 12 s (waited {retry_after} s after {spent} s)"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("at most 5 per minute"),
        "{body}"
    );
    // The same route spelt differently is the same route.
    assert_rate_limited(
        post(&c, "/api/v1//auth/login/", "203.0.113.1", &[], &json!({})).await,
        5,
        60,
    )
    .await;
    // Another client is not affected.
    login(&c, "203.0.113.2", 6)
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    // Nor are other routes of the same client.
    let r = c
        .get("/healthz")
        .header("x-test-peer", "203.0.113.1")
        .send()
        .await;
    r.assert_status_is_ok();
    assert_eq!(header(&r, "ratelimit-limit"), None);
}

#[tokio::test]
async fn a_forged_forwarded_for_does_not_escape_the_limit_without_trust_proxy() {
    let h = harness_with(&[]);
    let c = h.client();
    for n in 0..5u8 {
        let forged = format!("198.51.100.{n}");
        let r = login_via(&c, "203.0.113.1", &[("x-forwarded-for", &forged)], n.into()).await;
        r.assert_status(StatusCode::UNAUTHORIZED);
    }
    for forged in ["198.51.100.99", "1.1.1.1, 198.51.100.98", "garbage"] {
        let r = login_via(&c, "203.0.113.1", &[("x-forwarded-for", forged)], 9).await;
        assert_rate_limited(r, 5, 60).await;
    }
}

#[tokio::test]
async fn with_trust_proxy_the_client_is_the_nth_forwarded_address_from_the_right() {
    let h = harness_with(&[("TRUST_PROXY", "1"), ("RATE_LIMIT_LOGIN", "2/min")]);
    let c = h.client();
    let proxy = "10.0.0.1";
    for n in 0..2 {
        let r = login_via(&c, proxy, &[("x-forwarded-for", "203.0.113.5")], n).await;
        r.assert_status(StatusCode::UNAUTHORIZED);
    }
    // Whatever the client puts on the left, the proxy's entry decides.
    for xff in [
        "203.0.113.5",
        "6.6.6.6, 203.0.113.5",
        "203.0.113.6, 203.0.113.5",
    ] {
        assert_rate_limited(
            login_via(&c, proxy, &[("x-forwarded-for", xff)], 3).await,
            2,
            60,
        )
        .await;
    }
    // Another forwarded client is not affected, nor is the proxy itself
    // (requests without a usable header count against the peer).
    login_via(&c, proxy, &[("x-forwarded-for", "203.0.113.6")], 4)
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    login(&c, proxy, 5)
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    login_via(&c, proxy, &[("x-forwarded-for", "not-an-address")], 6)
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    assert_rate_limited(login(&c, proxy, 7).await, 2, 60).await;
}

#[tokio::test]
async fn signup_allows_3_a_minute_per_ip_by_default() {
    let h = harness_with(&[("TRUST_PROXY", "1")]);
    let c = h.client();
    let signup = |n: u32| {
        json!({
            "email": format!("user{n}@example.com"),
            "password": "correct-horse-battery",
            "company_name": "Example",
        })
    };
    let xff = [("x-forwarded-for", "203.0.113.7")];
    for n in 0..3 {
        let r = post(&c, "/api/v1/auth/signup", "10.0.0.1", &xff, &signup(n)).await;
        assert!(r.0.status().is_success(), "{}", r.0.status());
        assert_eq!(number(&r, "ratelimit-remaining"), 2 - u64::from(n));
    }
    let r = post(&c, "/api/v1/auth/signup", "10.0.0.1", &xff, &signup(3)).await;
    let (_, body) = assert_rate_limited(r, 3, 60).await;
    assert!(
        body["detail"].as_str().unwrap().contains("signups"),
        "{body}"
    );
    // The refused signup did not happen; another client can sign up.
    let other = [("x-forwarded-for", "203.0.113.8")];
    let credentials = json!({ "email": "user3@example.com", "password": "correct-horse-battery" });
    post(&c, "/api/v1/auth/login", "10.0.0.1", &other, &credentials)
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    let r = post(&c, "/api/v1/auth/signup", "10.0.0.1", &other, &signup(3)).await;
    assert!(r.0.status().is_success(), "{}", r.0.status());
    post(&c, "/api/v1/auth/login", "10.0.0.1", &other, &credentials)
        .await
        .assert_status_is_ok();
}

#[tokio::test]
async fn activate_allows_10_an_hour_per_license_key_by_default() {
    let h = harness_with(&[]);
    let c = h.client();
    let (id, key) = h.license(50).await;
    let activate = |key: &str, n: u32| json!({ "license_key": key, "hardware_id": hw(n) });
    for n in 0..10 {
        let r = post(
            &c,
            "/api/v1/licenses/activate",
            "203.0.113.1",
            &[],
            &activate(&key, n),
        )
        .await;
        r.assert_status(StatusCode::CREATED);
    }
    // The same key from elsewhere, and typed in lower case: still the key.
    let r = post(
        &c,
        "/api/v1/licenses/activate",
        "198.51.100.1",
        &[],
        &activate(&key.to_lowercase(), 10),
    )
    .await;
    let (retry_after, body) = assert_rate_limited(r, 10, 3600).await;
    assert!(retry_after > 300, "one activation is regained every 6 min");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("at most 10 per hour"),
        "{body}"
    );
    assert_eq!(
        h.activations(&id).await,
        10,
        "the refused request did nothing"
    );
    // Another key from the same client is not affected.
    let (_, other) = h.license(5).await;
    let r = post(
        &c,
        "/api/v1/licenses/activate",
        "203.0.113.1",
        &[],
        &activate(&other, 0),
    )
    .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(number(&r, "ratelimit-remaining"), 9);
    assert_eq!(header(&r, "ratelimit-policy").as_deref(), Some("10;w=3600"));
}

#[tokio::test]
async fn validate_allows_60_a_minute_per_license_key_by_default() {
    let h = harness_with(&[]);
    let c = h.client();
    let (_, key) = h.license(5).await;
    let (_, other) = h.license(5).await;
    for k in [&key, &other] {
        let body = json!({ "license_key": k, "hardware_id": hw(1) });
        post(&c, "/api/v1/licenses/activate", "203.0.113.1", &[], &body)
            .await
            .assert_status(StatusCode::CREATED);
    }
    let validate = |key: &str| json!({ "license_key": key, "hardware_id": hw(1) });
    for _ in 0..60 {
        let r = post(
            &c,
            "/api/v1/licenses/validate",
            "203.0.113.1",
            &[],
            &validate(&key),
        )
        .await;
        r.assert_status_is_ok();
    }
    let r = post(
        &c,
        "/api/v1/licenses/validate",
        "203.0.113.1",
        &[],
        &validate(&key),
    )
    .await;
    let (retry_after, _) = assert_rate_limited(r, 60, 60).await;
    assert_eq!(retry_after, 1, "one more a second");
    // A second later exactly one more is let through.
    h.clock.advance(Duration::from_secs(1));
    post(
        &c,
        "/api/v1/licenses/validate",
        "203.0.113.1",
        &[],
        &validate(&key),
    )
    .await
    .assert_status_is_ok();
    let r = post(
        &c,
        "/api/v1/licenses/validate",
        "203.0.113.1",
        &[],
        &validate(&key),
    )
    .await;
    assert_rate_limited(r, 60, 60).await;
    // Per key: another client with this key is refused too…
    let r = post(
        &c,
        "/api/v1/licenses/validate",
        "198.51.100.1",
        &[],
        &validate(&key),
    )
    .await;
    assert_rate_limited(r, 60, 60).await;
    // …and another key from the same client is not.
    post(
        &c,
        "/api/v1/licenses/validate",
        "203.0.113.1",
        &[],
        &validate(&other),
    )
    .await
    .assert_status_is_ok();
}

#[tokio::test]
async fn trying_many_license_keys_from_one_ip_trips_the_per_ip_limit() {
    let h = harness_with(&[]);
    let c = h.client();
    let (_, real) = h.license(5).await;
    // 120 guesses a minute by default, over every route that takes a key.
    for n in 0..120u32 {
        let guess = LicenseKey::generate().unwrap().expose().to_owned();
        let body = json!({ "license_key": guess, "hardware_id": hw(n) });
        let r = match n % 4 {
            0 => post(&c, "/api/v1/licenses/validate", "203.0.113.1", &[], &body).await,
            1 => post(&c, "/api/v1/licenses/activate", "203.0.113.1", &[], &body).await,
            2 => post(&c, "/api/v1/licenses/deactivate", "203.0.113.1", &[], &body).await,
            _ => {
                c.get("/api/v1/licenses/features")
                    .header("x-test-peer", "203.0.113.1")
                    .header("x-license-key", &guess)
                    .send()
                    .await
            }
        };
        r.assert_status(StatusCode::NOT_FOUND);
    }
    // Even the real key is refused now, on every route, from this client.
    let body = json!({ "license_key": real, "hardware_id": hw(1) });
    for path in [
        "/api/v1/licenses/activate",
        "/api/v1/licenses/validate",
        "/api/v1/licenses/deactivate",
    ] {
        let (_, problem) =
            assert_rate_limited(post(&c, path, "203.0.113.1", &[], &body).await, 120, 60).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("from your network address"),
            "{problem}"
        );
    }
    let r = c
        .get("/api/v1/licenses/features")
        .header("x-test-peer", "203.0.113.1")
        .header("x-license-key", &real)
        .send()
        .await;
    assert_rate_limited(r, 120, 60).await;
    // Another client is not affected, and the refusals did not use up the
    // real key's own quota.
    let r = post(&c, "/api/v1/licenses/activate", "198.51.100.1", &[], &body).await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("10;w=3600"),
        "the closer limit is reported"
    );
    assert_eq!(number(&r, "ratelimit-remaining"), 9);
}

#[tokio::test]
async fn limits_are_configurable() {
    let h = harness_with(&[
        ("RATE_LIMIT_LOGIN", "2/min"),
        ("RATE_LIMIT_SIGNUP", "1/hour"),
        ("RATE_LIMIT_VALIDATE", "3/sec"),
        ("RATE_LIMIT_ACTIVATE", "2/min"),
        ("RATE_LIMIT_LICENSE_IP", "100/hour"),
    ]);
    let c = h.client();
    for n in 0..2 {
        assert_not_limited(&login(&c, "203.0.113.1", n).await);
    }
    assert_rate_limited(login(&c, "203.0.113.1", 2).await, 2, 60).await;

    let signup = |n: u32| json!({ "email": format!("u{n}@example.com"), "password": "correct-horse-battery", "company_name": "X" });
    let r = post(&c, "/api/v1/auth/signup", "203.0.113.1", &[], &signup(0)).await;
    assert!(r.0.status().is_success(), "{}", r.0.status());
    let r = post(&c, "/api/v1/auth/signup", "203.0.113.1", &[], &signup(1)).await;
    let (retry_after, _) = assert_rate_limited(r, 1, 3600).await;
    assert!(retry_after > 3000, "{retry_after}");

    let (_, key) = h.license(5).await;
    for n in 0..2 {
        let body = json!({ "license_key": key, "hardware_id": hw(n) });
        let r = post(&c, "/api/v1/licenses/activate", "203.0.113.1", &[], &body).await;
        r.assert_status(StatusCode::CREATED);
        assert_eq!(
            header(&r, "ratelimit-policy").as_deref(),
            Some("2;w=60"),
            "per key"
        );
    }
    let body = json!({ "license_key": key, "hardware_id": hw(2) });
    let r = post(&c, "/api/v1/licenses/activate", "203.0.113.1", &[], &body).await;
    assert_rate_limited(r, 2, 60).await;

    let body = json!({ "license_key": key, "hardware_id": hw(0) });
    let mut refused = None;
    for n in 0..4 {
        let r = post(&c, "/api/v1/licenses/validate", "203.0.113.1", &[], &body).await;
        if r.0.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some((n, r));
            break;
        }
        r.assert_status_is_ok();
        assert_eq!(header(&r, "ratelimit-policy").as_deref(), Some("3;w=1"));
    }
    // Three a second: the fourth in a row is refused (the clock stands
    // still, so it always is).
    let Some((n, r)) = refused else {
        panic!("the 3/sec validate limit never refused a request");
    };
    assert_eq!(n, 3);
    let (retry_after, _) = assert_rate_limited(r, 3, 1).await;
    assert_eq!(retry_after, 1);
    // A third of a second later one more is let through, and only one.
    h.clock.advance(Duration::from_millis(334));
    post(&c, "/api/v1/licenses/validate", "203.0.113.1", &[], &body)
        .await
        .assert_status_is_ok();
    let r = post(&c, "/api/v1/licenses/validate", "203.0.113.1", &[], &body).await;
    assert_rate_limited(r, 3, 1).await;
}

#[tokio::test]
async fn the_429_is_documented_with_its_headers() {
    let spec: Value = serde_json::from_str(&http::spec_json()).unwrap();
    for path in [
        "/api/v1/auth/login",
        "/api/v1/auth/signup",
        "/api/v1/licenses/validate",
        "/api/v1/licenses/activate",
    ] {
        let r = &spec["paths"][path]["post"]["responses"]["429"];
        assert!(
            r["content"]["application/problem+json"].is_object(),
            "{path}: {r}"
        );
        for name in [
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
            "RateLimit-Policy",
        ] {
            let found = r["headers"]
                .as_object()
                .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case(name)));
            assert!(found, "{path}: no {name} in {r}");
        }
    }
}
