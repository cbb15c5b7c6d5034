//! Rate limits of the real `coditect-issuer serve`, over TCP from 127.0.0.1
//! (the socket peer): 429 at exactly the limit with `Retry-After` and the
//! `RateLimit-*` headers, with the production defaults for login (5/min)
//! and activate (10/hour); a forged `X-Forwarded-For` does not escape a
//! limit without `TRUST_PROXY`, and is honoured (right-most entry) with
//! `TRUST_PROXY=1`. On PostgreSQL the counts are in the database: two
//! instances share a limit, and a restart keeps it.

use std::time::Duration;

use coditect_tests::database::{Backend, TestDatabase};
use coditect_tests::issuer::{IssuerServer, create_license, hardware_id};
use serde_json::{Value, json};
use tempfile::TempDir;

const LOGIN: &str = "/api/v1/auth/login";
const ACTIVATE: &str = "/api/v1/licenses/activate";
const VALIDATE: &str = "/api/v1/licenses/validate";

/// The production defaults: an empty value makes the issuer use its own.
const DEFAULT_LIMITS: &[(&str, &str)] = &[
    ("RATE_LIMIT_LOGIN", ""),
    ("RATE_LIMIT_SIGNUP", ""),
    ("RATE_LIMIT_VALIDATE", ""),
    ("RATE_LIMIT_ACTIVATE", ""),
    ("RATE_LIMIT_LICENSE_IP", ""),
];

fn data_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("coditect-rate-limits-e2e-")
        .tempdir()
        .expect("a temporary data directory")
}

/// A response with its headers.
struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn number(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header: {}", self.body))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a whole number"))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts a complete 429; returns Retry-After.
    fn assert_rate_limited(&self, limit: u64, window: u64) -> u64 {
        assert_eq!(self.status, 429, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let retry_after = self.number("retry-after");
        assert!((1..=window).contains(&retry_after), "{retry_after}");
        assert_eq!(self.number("ratelimit-limit"), limit);
        assert_eq!(self.number("ratelimit-remaining"), 0);
        assert!(self.number("ratelimit-reset") >= retry_after);
        assert_eq!(
            self.header("ratelimit-policy"),
            Some(format!("{limit};w={window}").as_str())
        );
        assert_eq!(self.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(self.header("x-frame-options"), Some("DENY"));
        assert!(self.header("strict-transport-security").is_some());
        let p = self.json();
        assert_eq!(p["code"], "rate_limited", "{p}");
        assert_eq!(p["status"], 429, "{p}");
        assert_eq!(p["request_id"].as_str(), self.header("x-request-id"), "{p}");
        retry_after
    }
}

struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn new(server: &IssuerServer) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Http {
            agent: config.into(),
            base: server.base_url().to_owned(),
        }
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Answer {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let mut resp = req
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        }
    }
}

fn login_body(n: u32) -> Value {
    json!({ "email": format!("nobody{n}@example.com"), "password": "wrong-password-123" })
}

#[test]
fn default_limits_login_5_a_minute_activate_10_an_hour_and_no_escape_by_forwarded_for() {
    let dir = data_dir();
    let server = IssuerServer::start_with_env(dir.path(), DEFAULT_LIMITS);
    let http = Http::new(&server);

    // Login: five attempts a minute from 127.0.0.1.
    for n in 0..5 {
        let r = http.post(LOGIN, &[], &login_body(n));
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.number("ratelimit-limit"), 5);
        assert_eq!(r.number("ratelimit-remaining"), 4 - u64::from(n));
    }
    http.post(LOGIN, &[], &login_body(5))
        .assert_rate_limited(5, 60);
    // Without TRUST_PROXY, X-Forwarded-For is not the client.
    for forged in ["203.0.113.1", "203.0.113.2, 198.51.100.7", "garbage"] {
        http.post(LOGIN, &[("x-forwarded-for", forged)], &login_body(6))
            .assert_rate_limited(5, 60);
    }

    // Activate: ten a license key an hour.
    let license = create_license(
        dir.path(),
        &[
            "--email",
            "limits@example.com",
            "--tier",
            "pilot-professional",
            "--max-devices",
            "50",
        ],
    );
    for n in 0..10 {
        let body =
            json!({ "license_key": license.key, "hardware_id": hardware_id(&format!("m{n}")) });
        let r = http.post(ACTIVATE, &[], &body);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let body = json!({ "license_key": license.key, "hardware_id": hardware_id("m10") });
    let r = http.post(ACTIVATE, &[("x-forwarded-for", "203.0.113.9")], &body);
    let retry_after = r.assert_rate_limited(10, 3600);
    assert!(
        retry_after > 300,
        "one activation every 6 minutes: {retry_after}"
    );
    // Another license is not affected.
    let other = create_license(
        dir.path(),
        &["--email", "other@example.com", "--tier", "pilot-starter"],
    );
    let body = json!({ "license_key": other.key, "hardware_id": hardware_id("m0") });
    let r = http.post(ACTIVATE, &[], &body);
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        server.log().contains("rate limited"),
        "refusals are logged:\n{}",
        server.log()
    );
}

#[test]
fn behind_one_trusted_proxy_clients_are_told_apart_by_forwarded_for() {
    let dir = data_dir();
    let server = IssuerServer::start_with_env(
        dir.path(),
        &[
            ("TRUST_PROXY", "1"),
            ("RATE_LIMIT_LOGIN", "2/min"),
            ("RATE_LIMIT_LICENSE_IP", "5/min"),
        ],
    );
    let http = Http::new(&server);
    let client_a = [("x-forwarded-for", "203.0.113.1")];
    for n in 0..2 {
        assert_eq!(http.post(LOGIN, &client_a, &login_body(n)).status, 401);
    }
    http.post(LOGIN, &client_a, &login_body(2))
        .assert_rate_limited(2, 60);
    // A forged left part does not help: the proxy's entry is right-most.
    http.post(
        LOGIN,
        &[("x-forwarded-for", "198.51.100.1, 203.0.113.1")],
        &login_body(3),
    )
    .assert_rate_limited(2, 60);
    // Another client behind the proxy is not affected.
    let client_b = [("x-forwarded-for", "203.0.113.2")];
    assert_eq!(http.post(LOGIN, &client_b, &login_body(4)).status, 401);

    // Key guessing: five keys a minute from one client here, then 429.
    for n in 0..5 {
        let guess = format!("CODITECT-PILOT-AAAA-BBBB-CC{}{}", n + 2, n + 2);
        let body = json!({ "license_key": guess, "hardware_id": hardware_id("m") });
        let r = http.post(VALIDATE, &client_a, &body);
        assert_eq!(r.status, 404, "{}", r.body);
    }
    let body =
        json!({ "license_key": "CODITECT-PILOT-AAAA-BBBB-CCCC", "hardware_id": hardware_id("m") });
    http.post(ACTIVATE, &client_a, &body)
        .assert_rate_limited(5, 60);
    assert_eq!(http.post(ACTIVATE, &client_b, &body).status, 404);
}

/// The buckets in the database are a limit's name and a hex hash: never a
/// client address or a license key.
fn assert_buckets_are_hashes(db: &TestDatabase, secrets: &[&str]) {
    let rows = db.rows("SELECT bucket FROM rate_limits");
    assert!(!rows.is_empty(), "no counters in the database");
    for row in rows {
        let bucket = row["bucket"].as_str().unwrap_or_default().to_owned();
        let (name, hash) = bucket.split_once(':').unwrap_or(("", ""));
        assert!(
            ["login", "signup", "license_ip", "validate", "activate"].contains(&name),
            "{bucket}"
        );
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{bucket}"
        );
        for secret in secrets {
            assert!(!bucket.contains(secret), "{bucket} holds {secret}");
        }
    }
}

/// Two instances on one PostgreSQL database count against the same limit:
/// six failed sign-ins from one address, alternating between them, and the
/// sixth is refused (login 5/min); a restarted instance still refuses.
#[test]
fn on_postgres_two_instances_share_a_limit_and_a_restart_keeps_it() {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    let a = IssuerServer::start_with_env(dir.path(), DEFAULT_LIMITS);
    let mut b = IssuerServer::start_with_env(dir.path(), DEFAULT_LIMITS);
    let (http_a, http_b) = (Http::new(&a), Http::new(&b));
    for n in 0..5 {
        let http = if n % 2 == 0 { &http_a } else { &http_b };
        let r = http.post(LOGIN, &[], &login_body(n));
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.number("ratelimit-remaining"), 4 - u64::from(n), "{n}");
    }
    let retry_after = http_b
        .post(LOGIN, &[], &login_body(5))
        .assert_rate_limited(5, 60);
    // One attempt comes back every 12 s; how much of that is left depends
    // on how long the five sign-ins took (the real clock, shared by two
    // processes), so only the bounds are exact.
    assert!(
        (1..=12).contains(&retry_after),
        "one attempt back every 12 s: {retry_after}"
    );
    http_a
        .post(LOGIN, &[], &login_body(6))
        .assert_rate_limited(5, 60);
    assert_buckets_are_hashes(&db, &["127.0.0.1", "nobody"]);

    b.kill();
    let b = IssuerServer::start_with_env(dir.path(), DEFAULT_LIMITS);
    Http::new(&b)
        .post(LOGIN, &[], &login_body(7))
        .assert_rate_limited(5, 60);
    assert!(
        a.log().contains("rate limited") && b.log().contains("rate limited"),
        "both refuse"
    );
}

/// On PostgreSQL a license key's limit outlives the issuer process: ten
/// activations an hour, the eleventh refused, also after a restart.
#[test]
fn on_postgres_a_key_limit_survives_a_restart() {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    let mut server = IssuerServer::start_with_env(dir.path(), DEFAULT_LIMITS);
    let license = create_license(
        dir.path(),
        &[
            "--email",
            "restart@example.com",
            "--tier",
            "pilot-professional",
            "--max-devices",
            "50",
        ],
    );
    let activate = |n: u32| json!({ "license_key": license.key, "hardware_id": hardware_id(&format!("m{n}")) });
    let http = Http::new(&server);
    for n in 0..10 {
        let r = http.post(ACTIVATE, &[], &activate(n));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    http.post(ACTIVATE, &[], &activate(10))
        .assert_rate_limited(10, 3600);
    assert_buckets_are_hashes(&db, &[license.key.as_str(), "127.0.0.1"]);

    server.kill();
    let server = IssuerServer::start_with_env(dir.path(), DEFAULT_LIMITS);
    let http = Http::new(&server);
    let retry_after = http
        .post(ACTIVATE, &[], &activate(10))
        .assert_rate_limited(10, 3600);
    assert!(retry_after > 300, "{retry_after}");
    // Another key is not affected.
    let other = create_license(
        dir.path(),
        &["--email", "other@example.com", "--tier", "pilot-starter"],
    );
    let body = json!({ "license_key": other.key, "hardware_id": hardware_id("m0") });
    assert_eq!(http.post(ACTIVATE, &[], &body).status, 201);
}
