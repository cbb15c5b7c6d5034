//! The fake Stripe (`coditect_tests::fake_stripe`) speaks Stripe's wire
//! format: every endpoint over real HTTP, the errors, idempotency, the hosted
//! checkout page from session to redirect, and webhook deliveries whose
//! signatures are checked here by an HMAC written independently of the
//! fake's (and, when Python's `stripe` package is installed, by Stripe's own
//! `stripe.Webhook.construct_event`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coditect_tests::fake_stripe::{
    API_VERSION, CARD_DECLINED, Config, DEFAULT_WEBHOOK_SECRET, FakeStripe,
    PRICE_PROFESSIONAL_ANNUAL, PRICE_PROFESSIONAL_MONTHLY, PRICE_STARTER_ANNUAL,
    PRICE_STARTER_MONTHLY, sign_payload, signature_v1, unix_now,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const DAY: i64 = 86_400;
/// Stripe's (and the issuer's) signature tolerance.
const TOLERANCE: i64 = 300;

// ---------------------------------------------------------------------------
// An HMAC-SHA256 of our own (RFC 2104 over sha2), so that signatures are
// checked by code that shares nothing with the fake's `hmac` use.
// ---------------------------------------------------------------------------

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block_key.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block_key.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a `Stripe-Signature` header the way a receiver must: `t` within
/// the tolerance of now, and some `v1` equal to HMAC(secret, "t.payload").
fn verify(payload: &str, header: &str, secret: &str) -> Result<i64, String> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("malformed part {part:?}"))?;
        match k {
            "t" => timestamp = Some(v.parse::<i64>().map_err(|e| format!("bad t: {e}"))?),
            "v1" => candidates.push(v.to_owned()),
            _ => {}
        }
    }
    let t = timestamp.ok_or("no t")?;
    let expected = to_hex(&hmac_sha256(
        secret.as_bytes(),
        format!("{t}.{payload}").as_bytes(),
    ));
    if !candidates.contains(&expected) {
        return Err(format!("no v1 matches (expected {expected}) in {header}"));
    }
    if (unix_now() - t).abs() > TOLERANCE {
        return Err(format!("timestamp {t} is not within {TOLERANCE} s of now"));
    }
    Ok(t)
}

// ---------------------------------------------------------------------------
// A local webhook receiver: a tiny HTTP/1.1 listener that records each POST.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("deliveries are JSON")
    }

    fn signature(&self) -> &str {
        self.headers
            .get("stripe-signature")
            .map(String::as_str)
            .unwrap_or("")
    }
}

struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let port = listener.local_addr().expect("address").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let (got2, status2, stop2) = (Arc::clone(&got), Arc::clone(&status), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (got, status) = (Arc::clone(&got2), Arc::clone(&status2));
                std::thread::spawn(move || serve_one(stream, &got, &status));
            }
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/webhooks/stripe"),
            got,
            status,
            stop,
            port,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.got.lock().unwrap().clear();
    }

    fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_one(stream: TcpStream, got: &Mutex<Vec<Received>>, status: &AtomicU16) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    got.lock().unwrap().push(Received {
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let status = status.load(Ordering::SeqCst);
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: 8\r\nConnection: close\r\n\r\nreceived"
    );
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// HTTP to the fake
// ---------------------------------------------------------------------------

struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Asserts a Stripe error and returns its `error` object.
    fn stripe_error(&self, status: u16, kind: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        let body = self.json();
        let error = body["error"].clone();
        assert_eq!(error["type"], kind, "{}", self.body);
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        error
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn read(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut resp = resp.expect("the fake answers");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let body = resp.body_mut().read_to_string().expect("a text body");
    Answer {
        status,
        headers,
        body,
    }
}

/// `application/x-www-form-urlencoded`, every reserved byte escaped
/// (brackets too: `%5B`, as strict encoders do).
fn form(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

struct Api<'a> {
    fake: &'a FakeStripe,
    agent: ureq::Agent,
}

impl<'a> Api<'a> {
    fn new(fake: &'a FakeStripe) -> Api<'a> {
        Api {
            fake,
            agent: agent(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.base_url())
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.fake.api_key())
    }

    fn get(&self, path: &str) -> Answer {
        read(
            self.agent
                .get(self.url(path))
                .header("Authorization", self.auth())
                .header("Stripe-Version", API_VERSION)
                .call(),
        )
    }

    /// POST with a raw form body (bracket keys as the caller wrote them).
    fn post_body(&self, path: &str, body: &str, idempotency_key: Option<&str>) -> Answer {
        let mut req = self
            .agent
            .post(self.url(path))
            .header("Authorization", self.auth())
            .header("Stripe-Version", API_VERSION)
            .header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        read(req.send(body))
    }

    fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Answer {
        self.post_body(path, &form(pairs), None)
    }

    fn delete(&self, path: &str, pairs: &[(&str, &str)]) -> Answer {
        read(
            self.agent
                .delete(self.url(path))
                .header("Authorization", self.auth())
                .header("Content-Type", "application/x-www-form-urlencoded")
                .force_send_body()
                .send(form(pairs)),
        )
    }

    /// The hosted pages need no key.
    fn page_get(&self, url: &str) -> Answer {
        read(self.agent.get(url).call())
    }

    fn page_post(&self, url: &str, pairs: &[(&str, &str)]) -> Answer {
        read(
            self.agent
                .post(url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .send(form(pairs)),
        )
    }

    fn create_customer(&self, email: &str) -> Value {
        let answer = self.post(
            "/v1/customers",
            &[
                ("email", email),
                ("name", "Ada Lovelace"),
                ("metadata[org]", "org_1"),
            ],
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()
    }

    fn create_session(&self, extra: &[(&str, &str)]) -> Value {
        let mut pairs = vec![
            ("mode", "subscription"),
            ("line_items[0][price]", PRICE_STARTER_MONTHLY),
            ("line_items[0][quantity]", "1"),
            (
                "success_url",
                "https://issuer.test/billing/success?session_id={CHECKOUT_SESSION_ID}",
            ),
            ("cancel_url", "https://issuer.test/billing/cancel"),
        ];
        pairs.extend_from_slice(extra);
        let answer = self.post("/v1/checkout/sessions", &pairs);
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()
    }
}

fn assert_recent(t: &Value) {
    let t = t.as_i64().unwrap_or_else(|| panic!("not a timestamp: {t}"));
    assert!((unix_now() - t).abs() < 60, "{t} is not now");
}

fn assert_month_after(start: i64, end: i64) {
    let days = (end - start) / DAY;
    assert!(
        (28..=31).contains(&days),
        "{start}..{end} is {days} days, not a month"
    );
    assert_eq!((end - start) % DAY, 0, "a month keeps the time of day");
}

// ---------------------------------------------------------------------------
// Signing
// ---------------------------------------------------------------------------

#[test]
fn signatures_are_stripes_hmac_sha256_over_timestamp_dot_payload() {
    // The test's own HMAC against RFC 4231 test case 2.
    assert_eq!(
        to_hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // A key longer than a block is hashed first (RFC 4231 test case 6).
    assert_eq!(
        to_hex(&hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );

    let payload = "{\n  \"id\": \"evt_1\"\n}";
    let header = sign_payload(payload, "whsec_abc", 1_767_225_600);
    let expected = to_hex(&hmac_sha256(
        b"whsec_abc",
        format!("1767225600.{payload}").as_bytes(),
    ));
    assert_eq!(header, format!("t=1767225600,v1={expected}"));
    assert_eq!(signature_v1(payload, "whsec_abc", 1_767_225_600), expected);
    // Any change to the payload, the secret or the timestamp changes it.
    assert_ne!(
        sign_payload(format!("{payload} "), "whsec_abc", 1_767_225_600),
        header
    );
    assert_ne!(sign_payload(payload, "whsec_abd", 1_767_225_600), header);
    assert_ne!(sign_payload(payload, "whsec_abc", 1_767_225_601), header);
}

// ---------------------------------------------------------------------------
// Authentication, errors, idempotency, recording
// ---------------------------------------------------------------------------

#[test]
fn the_api_wants_the_secret_key() {
    let fake = FakeStripe::start(Config::default());
    let api = Api::new(&fake);
    let agent = agent();
    let url = api.url("/v1/customers");

    let none = read(agent.post(&url).send(""));
    let error = none.stripe_error(401, "invalid_request_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("did not provide an API key")
    );

    let wrong = read(
        agent
            .post(&url)
            .header("Authorization", "Bearer sk_test_wrong0000")
            .send(""),
    );
    let error = wrong.stripe_error(401, "invalid_request_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid API Key provided: sk_test_")
    );
    assert!(
        !error["message"].as_str().unwrap().contains("wrong0000"),
        "the key is masked"
    );

    let publishable = read(
        agent
            .get(&url)
            .header("Authorization", "Bearer pk_test_123")
            .call(),
    );
    publishable.stripe_error(401, "invalid_request_error");

    // Basic auth with the key as user name works, as with Stripe (curl -u).
    let basic = base64_encode(&format!("{}:", fake.api_key()));
    let ok = read(
        agent
            .post(&url)
            .header("Authorization", format!("Basic {basic}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send("email=basic%40example.com"),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);

    // Unknown routes are 404 after authentication.
    let unknown = api.get("/v1/charges/ch_1");
    let error = unknown.stripe_error(404, "invalid_request_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Unrecognized request URL (GET: /v1/charges/ch_1)")
    );

    // A JSON body is not a form: Stripe would see no parameters.
    let json_body = read(
        agent
            .post(api.url("/v1/checkout/sessions"))
            .header("Authorization", api.auth())
            .header("Content-Type", "application/json")
            .send(r#"{"mode":"subscription"}"#),
    );
    json_body.stripe_error(400, "invalid_request_error");

    // Answers carry a request id and the API version.
    assert!(
        ok.header("request-id")
            .is_some_and(|id| id.starts_with("req_"))
    );
    assert_eq!(ok.header("stripe-version"), Some(API_VERSION));
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn customers_are_created_retrieved_and_updated() {
    let fake = FakeStripe::start(Config::default());
    let api = Api::new(&fake);

    let customer = api.create_customer("ada@example.com");
    let id = customer["id"].as_str().unwrap();
    assert!(id.starts_with("cus_"), "{id}");
    assert_eq!(customer["object"], "customer");
    assert_eq!(customer["email"], "ada@example.com");
    assert_eq!(customer["name"], "Ada Lovelace");
    assert_eq!(customer["metadata"], json!({ "org": "org_1" }));
    assert_eq!(customer["livemode"], false);
    assert_recent(&customer["created"]);

    let fetched = api.get(&format!("/v1/customers/{id}"));
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json(), customer);

    let updated = api.post(
        &format!("/v1/customers/{id}"),
        &[
            ("name", "Ada King"),
            ("metadata[plan]", "pilot-starter"),
            ("metadata[org]", ""),
        ],
    );
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.json()["name"], "Ada King");
    assert_eq!(
        updated.json()["metadata"],
        json!({ "plan": "pilot-starter" }),
        "an empty value removes a key"
    );

    let missing = api.get("/v1/customers/cus_nope");
    let error = missing.stripe_error(404, "invalid_request_error");
    assert_eq!(error["code"], "resource_missing");
    assert_eq!(error["message"], "No such customer: 'cus_nope'");
    assert_eq!(error["param"], "id");

    let bad_email = api.post("/v1/customers", &[("email", "not an email")]);
    assert_eq!(
        bad_email.stripe_error(400, "invalid_request_error")["param"],
        "email"
    );
    let unknown = api.post("/v1/customers", &[("emial", "x@example.com")]);
    let error = unknown.stripe_error(400, "invalid_request_error");
    assert_eq!(error["code"], "parameter_unknown");
    assert_eq!(error["param"], "emial");

    // What was sent is recorded, brackets decoded.
    let posts = fake.requests_to("POST", "/v1/customers");
    assert_eq!(posts[0].param("metadata[org]"), Some("org_1"));
    assert_eq!(posts[0].param("email"), Some("ada@example.com"));
    assert_eq!(posts[0].stripe_version(), Some(API_VERSION));
    assert!(
        posts[0]
            .header("Authorization")
            .unwrap()
            .starts_with("Bearer sk_test_")
    );
    assert_eq!(posts[0].status, 200);
    assert_eq!(posts[2].status, 400);
}

#[test]
fn an_idempotency_key_replays_the_first_answer() {
    let fake = FakeStripe::start(Config::default());
    let api = Api::new(&fake);
    let body = form(&[("email", "org1@example.com"), ("metadata[org]", "org_1")]);

    let first = api.post_body("/v1/customers", &body, Some("customer-org_1"));
    assert_eq!(first.status, 200);
    assert_eq!(first.header("idempotency-key"), Some("customer-org_1"));
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = api.post_body("/v1/customers", &body, Some("customer-org_1"));
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["id"], first.json()["id"], "no second customer");

    let other = api.post_body(
        "/v1/customers",
        &form(&[("email", "x@example.com")]),
        Some("customer-org_1"),
    );
    other.stripe_error(400, "idempotency_error");

    let fresh = api.post_body("/v1/customers", &body, Some("customer-org_2"));
    assert_ne!(fresh.json()["id"], first.json()["id"]);
    assert_eq!(
        fake.requests_to("POST", "/v1/customers")[0].idempotency_key(),
        Some("customer-org_1")
    );
}

#[test]
fn injected_failures_answer_before_anything_happens() {
    let fake = FakeStripe::start(Config::default());
    let api = Api::new(&fake);
    fake.fail_next_requests("POST", "/v1/checkout/*", 503, 2);
    for _ in 0..2 {
        api.post("/v1/checkout/sessions", &[("mode", "subscription")])
            .stripe_error(503, "api_error");
    }
    assert!(fake.checkout_session_ids().is_empty());
    api.create_session(&[]);
    assert_eq!(fake.checkout_session_ids().len(), 1);
}

// ---------------------------------------------------------------------------
// Checkout Sessions
// ---------------------------------------------------------------------------

#[test]
fn checkout_sessions_check_their_parameters_like_stripe() {
    let fake = FakeStripe::start(Config::default());
    let api = Api::new(&fake);
    let customer = api.create_customer("ada@example.com");
    let path = "/v1/checkout/sessions";
    let line = [
        ("line_items[0][price]", PRICE_STARTER_MONTHLY),
        ("line_items[0][quantity]", "1"),
    ];

    let error = api
        .post(path, &line)
        .stripe_error(400, "invalid_request_error");
    assert_eq!(error["code"], "parameter_missing");
    assert_eq!(error["param"], "mode");
    assert_eq!(error["message"], "Missing required param: mode.");

    let error = api
        .post(path, &[("mode", "subscription")])
        .stripe_error(400, "invalid_request_error");
    assert_eq!(error["param"], "line_items");

    let error = api
        .post(
            path,
            &[
                ("mode", "subscription"),
                ("line_items[0][price]", "price_nope"),
                ("line_items[0][quantity]", "1"),
            ],
        )
        .stripe_error(400, "invalid_request_error");
    assert_eq!(error["code"], "resource_missing");
    assert_eq!(error["param"], "line_items[0][price]");
    assert_eq!(error["message"], "No such price: 'price_nope'");

    let error = api
        .post(
            path,
            &[
                ("mode", "subscription"),
                ("line_items[0][price]", PRICE_STARTER_MONTHLY),
            ],
        )
        .stripe_error(400, "invalid_request_error");
    assert_eq!(error["param"], "line_items[0][quantity]");

    let mixed = api.post(
        path,
        &[
            ("mode", "subscription"),
            ("line_items[0][price]", PRICE_STARTER_MONTHLY),
            ("line_items[0][quantity]", "1"),
            ("line_items[1][price]", PRICE_PROFESSIONAL_ANNUAL),
            ("line_items[1][quantity]", "1"),
        ],
    );
    mixed.stripe_error(400, "invalid_request_error");

    let with = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("mode", "subscription")];
        pairs.extend_from_slice(&line);
        pairs.extend_from_slice(extra);
        api.post(path, &pairs)
    };
    let error = with(&[("customer", "cus_nope")]).stripe_error(400, "invalid_request_error");
    assert_eq!(
        (error["code"].clone(), error["param"].clone()),
        (json!("resource_missing"), json!("customer"))
    );
    let customer_id = customer["id"].as_str().unwrap();
    let error = with(&[
        ("customer", customer_id),
        ("customer_email", "a@example.com"),
    ])
    .stripe_error(400, "invalid_request_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("only specify one of")
    );
    // `hosted` was renamed `hosted_page` in 2026-03-25.dahlia.
    assert_eq!(
        with(&[("ui_mode", "hosted")]).stripe_error(400, "invalid_request_error")["param"],
        "ui_mode"
    );
    assert_eq!(with(&[("mode", "payment")]).status, 400);
    assert_eq!(
        with(&[("subscription_data[trial_period_days]", "0")])
            .stripe_error(400, "invalid_request_error")["param"],
        "subscription_data[trial_period_days]"
    );
    assert_eq!(
        with(&[("success_url", "/relative")]).stripe_error(400, "invalid_request_error")["param"],
        "success_url"
    );
    assert_eq!(
        with(&[("sucess_url", "https://x.test/")]).stripe_error(400, "invalid_request_error")["code"],
        "parameter_unknown"
    );
    let long_key = "k".repeat(41);
    assert_eq!(with(&[(&format!("metadata[{long_key}]"), "v")]).status, 400);
    assert!(
        fake.checkout_session_ids().is_empty(),
        "no session was made by a failed request"
    );
}

#[test]
fn a_checkout_session_looks_like_stripes() {
    let fake = FakeStripe::start(Config::default());
    let api = Api::new(&fake);
    let customer = api.create_customer("ada@example.com");
    let customer_id = customer["id"].as_str().unwrap();

    // The bracket keys as async-stripe (serde_qs) writes them: unescaped.
    let body = format!(
        "mode=subscription&customer={customer_id}&client_reference_id=org_1\
         &line_items[0][price]={PRICE_PROFESSIONAL_MONTHLY}&line_items[0][quantity]=1\
         &metadata[org]=org_1&metadata[plan]=pilot-professional\
         &subscription_data[metadata][org]=org_1&ui_mode=hosted_page\
         &success_url=https://issuer.test/billing/success?session_id={{CHECKOUT_SESSION_ID}}\
         &cancel_url=https://issuer.test/billing/cancel"
    );
    let created = api.post_body("/v1/checkout/sessions", &body, None);
    assert_eq!(created.status, 200, "{}", created.body);
    let session = created.json();
    let id = session["id"].as_str().unwrap();
    assert!(id.starts_with("cs_test_"), "{id}");
    assert_eq!(session["object"], "checkout.session");
    assert_eq!(session["mode"], "subscription");
    assert_eq!(session["status"], "open");
    assert_eq!(session["payment_status"], "unpaid");
    assert_eq!(session["ui_mode"], "hosted_page");
    assert_eq!(session["customer"], customer_id);
    assert_eq!(session["client_reference_id"], "org_1");
    assert_eq!(
        session["metadata"],
        json!({ "org": "org_1", "plan": "pilot-professional" })
    );
    assert_eq!(session["subscription"], Value::Null);
    assert_eq!(session["amount_total"], 4_900);
    assert_eq!(session["currency"], "usd");
    assert_eq!(session["livemode"], false);
    assert_eq!(
        session["success_url"],
        "https://issuer.test/billing/success?session_id={CHECKOUT_SESSION_ID}"
    );
    assert_eq!(session["url"], fake.checkout_page_url(id));
    assert!(
        session.get("line_items").is_none(),
        "line_items is only there when expanded"
    );
    assert_recent(&session["created"]);
    let expires = session["expires_at"].as_i64().unwrap() - session["created"].as_i64().unwrap();
    assert_eq!(expires, DAY);

    let fetched = api.get(&format!("/v1/checkout/sessions/{id}"));
    assert_eq!(fetched.json(), session);
    let expanded = api
        .get(&format!(
            "/v1/checkout/sessions/{id}?expand[]=line_items&expand[]=customer"
        ))
        .json();
    assert_eq!(expanded["customer"]["email"], "ada@example.com");
    let items = &expanded["line_items"];
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["price"]["id"], PRICE_PROFESSIONAL_MONTHLY);
    assert_eq!(items["data"][0]["price"]["recurring"]["interval"], "month");
    assert_eq!(items["data"][0]["quantity"], 1);
    assert_eq!(items["data"][0]["amount_total"], 4_900);
    let listed = api
        .get(&format!("/v1/checkout/sessions/{id}/line_items"))
        .json();
    assert_eq!(listed, *items);
    // Expanding what the API allows (a subscription session's payment
    // intent is null) works; what is no object is refused.
    let with_intent = api.get(&format!(
        "/v1/checkout/sessions/{id}?expand[0]=payment_intent"
    ));
    assert_eq!(with_intent.status, 200, "{}", with_intent.body);
    assert_eq!(with_intent.json()["payment_intent"], Value::Null);
    api.get(&format!("/v1/checkout/sessions/{id}?expand[0]=metadata"))
        .stripe_error(400, "invalid_request_error");
    api.get("/v1/checkout/sessions/cs_test_nope")
        .stripe_error(404, "invalid_request_error");

    let recorded = &fake.requests_to("POST", "/v1/checkout/sessions")[0];
    assert_eq!(
        recorded.param("line_items[0][price]"),
        Some(PRICE_PROFESSIONAL_MONTHLY)
    );
    assert_eq!(
        recorded.param("subscription_data[metadata][org]"),
        Some("org_1")
    );
    assert_eq!(fake.checkout_session(id).unwrap(), session);

    // Prices are there to read too.
    let price = api
        .get(&format!("/v1/prices/{PRICE_STARTER_ANNUAL}"))
        .json();
    assert_eq!(price["unit_amount"], 19_000);
    assert_eq!(price["recurring"]["interval"], "year");
    assert_eq!(price["metadata"]["plan"], "pilot-starter");
}

#[test]
fn paying_on_the_hosted_page_sends_signed_events_then_redirects() {
    let receiver = Receiver::start();
    let fake = FakeStripe::start(Config::with_webhook(&receiver.url));
    let api = Api::new(&fake);
    let customer = api.create_customer("ada@example.com");
    let customer_id = customer["id"].as_str().unwrap();
    let session = api.create_session(&[
        ("customer", customer_id),
        ("client_reference_id", "org_1"),
        ("metadata[org]", "org_1"),
        ("subscription_data[metadata][org]", "org_1"),
    ]);
    let id = session["id"].as_str().unwrap();
    let page_url = session["url"].as_str().unwrap();
    assert!(
        receiver.received().is_empty(),
        "nothing is sent before paying"
    );

    // The page: the plan, the test card, a way back.
    let page = api.page_get(page_url);
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("4242 4242 4242 4242"), "{}", page.body);
    assert!(page.body.contains("Pilot Starter"), "{}", page.body);
    assert!(page.body.contains("$19.00"), "{}", page.body);
    assert!(
        page.body
            .contains("href=\"https://issuer.test/billing/cancel\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("ada@example.com"), "{}", page.body);

    let paid = api.page_post(
        page_url,
        &[
            ("email", "ada@example.com"),
            ("card_number", "4242 4242 4242 4242"),
            ("billing_name", "Ada"),
        ],
    );
    assert_eq!(paid.status, 303, "{}", paid.body);
    assert_eq!(
        paid.header("location").unwrap(),
        format!("https://issuer.test/billing/success?session_id={id}")
    );

    // The events arrived before the redirect, in Stripe's order, signed.
    let got = receiver.received();
    let types: Vec<_> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "customer.subscription.created",
            "checkout.session.completed",
            "invoice.paid"
        ]
    );
    for r in &got {
        assert_eq!(r.path, "/webhooks/stripe");
        verify(&r.body, r.signature(), DEFAULT_WEBHOOK_SECRET).unwrap_or_else(|e| panic!("{e}"));
        assert!(verify(&r.body, r.signature(), "whsec_other").is_err());
        assert!(r.headers["content-type"].starts_with("application/json"));
        assert!(r.headers["user-agent"].starts_with("Stripe/1.0"));
        assert!(
            r.body.contains("\n  \"id\""),
            "pretty-printed, as Stripe sends it"
        );
        let event = r.json();
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(event["object"], "event");
        assert_eq!(event["api_version"], API_VERSION);
        assert_eq!(event["livemode"], false);
        assert_eq!(event["pending_webhooks"], 1);
        assert_eq!(
            event["request"],
            json!({ "id": null, "idempotency_key": null })
        );
        assert_recent(&event["created"]);
    }

    let sub = got[0].json()["data"]["object"].clone();
    let sub_id = sub["id"].as_str().unwrap();
    assert!(sub_id.starts_with("sub_"));
    assert_eq!(sub["object"], "subscription");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["customer"], customer_id);
    assert_eq!(sub["cancel_at_period_end"], false);
    assert_eq!(sub["metadata"], json!({ "org": "org_1" }));
    assert!(
        sub.get("current_period_end").is_none(),
        "the period is on the items since basil"
    );
    let item = &sub["items"]["data"][0];
    assert_eq!(item["price"]["id"], PRICE_STARTER_MONTHLY);
    assert_eq!(item["quantity"], 1);
    let start = item["current_period_start"].as_i64().unwrap();
    assert_recent(&item["current_period_start"]);
    assert_month_after(start, item["current_period_end"].as_i64().unwrap());

    let completed = got[1].json()["data"]["object"].clone();
    assert_eq!(completed["id"], id);
    assert_eq!(completed["status"], "complete");
    assert_eq!(completed["payment_status"], "paid");
    assert_eq!(completed["customer"], customer_id);
    assert_eq!(completed["subscription"], sub_id);
    assert_eq!(completed["client_reference_id"], "org_1");
    assert_eq!(completed["metadata"], json!({ "org": "org_1" }));
    assert_eq!(completed["customer_details"]["email"], "ada@example.com");
    assert_eq!(completed["url"], Value::Null);
    assert!(completed.get("line_items").is_none());

    let invoice = got[2].json()["data"]["object"].clone();
    assert_eq!(invoice["object"], "invoice");
    assert_eq!(invoice["status"], "paid");
    assert_eq!(invoice["billing_reason"], "subscription_create");
    assert_eq!(invoice["amount_paid"], 1_900);
    assert_eq!(invoice["customer"], customer_id);
    assert_eq!(
        invoice["parent"]["subscription_details"]["subscription"],
        sub_id
    );
    assert_eq!(
        invoice["lines"]["data"][0]["pricing"]["price_details"]["price"],
        PRICE_STARTER_MONTHLY
    );
    assert_eq!(
        invoice["lines"]["data"][0]["period"]["end"],
        item["current_period_end"]
    );
    assert_eq!(completed["invoice"], invoice["id"]);

    // The API agrees with the events.
    let fetched = api.get(&format!("/v1/subscriptions/{sub_id}")).json();
    assert_eq!(fetched["latest_invoice"], invoice["id"]);
    assert_eq!(fetched["items"], sub["items"]);
    let expanded = api
        .get(&format!(
            "/v1/subscriptions/{sub_id}?expand[]=latest_invoice"
        ))
        .json();
    assert_eq!(expanded["latest_invoice"]["status"], "paid");
    assert_eq!(
        api.get(&format!("/v1/checkout/sessions/{id}")).json()["status"],
        "complete"
    );
    assert_eq!(fake.deliveries().len(), 3);
    assert!(fake.deliveries().iter().all(|d| d.succeeded()));

    // Submitting again (a double click) redirects again and makes nothing.
    let again = api.page_post(page_url, &[("card_number", "4242424242424242")]);
    assert_eq!(again.status, 303);
    assert_eq!(receiver.received().len(), 3);
    assert_eq!(fake.subscription_ids().len(), 1);
    // The page of a finished session says so.
    assert_eq!(api.page_get(page_url).status, 410);
}

#[test]
fn a_trial_makes_a_trialing_subscription_and_a_zero_invoice() {
    let receiver = Receiver::start();
    let fake = FakeStripe::start(Config::with_webhook(&receiver.url));
    let api = Api::new(&fake);
    // No customer: Checkout creates one from the email typed on the page.
    let session = api.create_session(&[
        ("customer_email", "new@example.com"),
        ("subscription_data[trial_period_days]", "14"),
        ("line_items[0][price]", PRICE_PROFESSIONAL_ANNUAL),
    ]);
    let page = api.page_get(session["url"].as_str().unwrap());
    assert!(page.body.contains("14 days free"), "{}", page.body);
    let completion = fake.complete_checkout(session["id"].as_str().unwrap());
    assert_eq!(
        completion.redirect_url.as_deref(),
        Some(
            format!(
                "https://issuer.test/billing/success?session_id={}",
                session["id"].as_str().unwrap()
            )
            .as_str()
        )
    );

    let types: Vec<_> = receiver
        .received()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "customer.created",
            "customer.subscription.created",
            "checkout.session.completed",
            "invoice.paid"
        ]
    );
    let customer = fake.customer(&completion.customer_id).unwrap();
    assert_eq!(customer["email"], "new@example.com");
    let sub = fake.subscription(&completion.subscription_id).unwrap();
    assert_eq!(sub["status"], "trialing");
    let trial_end = sub["trial_end"].as_i64().unwrap();
    assert_eq!(trial_end - sub["trial_start"].as_i64().unwrap(), 14 * DAY);
    assert_eq!(sub["items"]["data"][0]["current_period_end"], trial_end);
    assert_eq!(
        sub["items"]["data"][0]["price"]["id"],
        PRICE_PROFESSIONAL_ANNUAL
    );
    let session = fake
        .checkout_session(session["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(session["payment_status"], "no_payment_required");
    assert_eq!(session["customer"], completion.customer_id);
    let invoice = fake.invoice(&completion.invoice_id).unwrap();
    assert_eq!(invoice["amount_paid"], 0);
    assert_eq!(invoice["status"], "paid");

    // The trial ends with the first paid year.
    let renewal = fake.advance_period(&completion.subscription_id);
    assert_eq!(renewal["amount_paid"], 49_000);
    let sub = fake.subscription(&completion.subscription_id).unwrap();
    assert_eq!(sub["status"], "active");
    let item = &sub["items"]["data"][0];
    assert_eq!(item["current_period_start"], trial_end);
    let days = (item["current_period_end"].as_i64().unwrap() - trial_end) / DAY;
    assert!((365..=366).contains(&days), "{days}");
}

#[test]
fn a_declined_card_stays_on_the_page_and_sends_nothing() {
    let receiver = Receiver::start();
    let fake = FakeStripe::start(Config::with_webhook(&receiver.url));
    let api = Api::new(&fake);
    let session = api.create_session(&[]);
    let url = session["url"].as_str().unwrap();

    let declined = api.page_post(
        url,
        &[("email", "a@example.com"), ("card_number", CARD_DECLINED)],
    );
    assert_eq!(declined.status, 402);
    assert!(
        declined.body.contains("Your card was declined."),
        "{}",
        declined.body
    );
    let invalid = api.page_post(url, &[("email", "a@example.com"), ("card_number", "1234")]);
    assert!(invalid.body.contains("invalid"), "{}", invalid.body);
    assert!(receiver.received().is_empty());
    assert!(fake.subscription_ids().is_empty());
    assert_eq!(
        fake.checkout_session(session["id"].as_str().unwrap())
            .unwrap()["status"],
        "open"
    );

    // Then the right card goes through.
    let paid = api.page_post(
        url,
        &[
            ("email", "a@example.com"),
            ("card_number", "4242424242424242"),
        ],
    );
    assert_eq!(paid.status, 303);
    assert_eq!(
        receiver.received().len(),
        4,
        "customer.created and the three checkout events"
    );
}

#[test]
fn an_expired_session_cannot_be_paid() {
    let receiver = Receiver::start();
    let fake = FakeStripe::start(Config::with_webhook(&receiver.url));
    let api = Api::new(&fake);
    let session = api.create_session(&[]);
    let id = session["id"].as_str().unwrap();
    let expired = api.post(&format!("/v1/checkout/sessions/{id}/expire"), &[]);
    assert_eq!(expired.status, 200, "{}", expired.body);
    assert_eq!(expired.json()["status"], "expired");
    assert_eq!(expired.json()["url"], Value::Null);
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["type"], "checkout.session.expired");
    assert!(
        got[0].json()["request"]["id"]
            .as_str()
            .unwrap()
            .starts_with("req_")
    );

    assert_eq!(api.page_get(&fake.checkout_page_url(id)).status, 410);
    assert_eq!(
        api.page_post(
            &fake.checkout_page_url(id),
            &[("card_number", "4242424242424242")]
        )
        .status,
        410
    );
    api.post(&format!("/v1/checkout/sessions/{id}/expire"), &[])
        .stripe_error(400, "invalid_request_error");
    assert_eq!(
        api.page_get(&fake.checkout_page_url("cs_test_nope")).status,
        404
    );
}

// ---------------------------------------------------------------------------
// Billing portal and subscriptions
// ---------------------------------------------------------------------------

#[test]
fn a_billing_portal_session_links_back_and_can_cancel() {
    let receiver = Receiver::start();
    let fake = FakeStripe::start(Config::with_webhook(&receiver.url));
    let api = Api::new(&fake);
    let customer = api.create_customer("ada@example.com");
    let customer_id = customer["id"].as_str().unwrap();
    let session = api.create_session(&[("customer", customer_id)]);
    let completion = fake.complete_checkout(session["id"].as_str().unwrap());
    receiver.clear();

    let portal = api.post(
        "/v1/billing_portal/sessions",
        &[
            ("customer", customer_id),
            ("return_url", "https://issuer.test/account"),
        ],
    );
    assert_eq!(portal.status, 200, "{}", portal.body);
    let portal = portal.json();
    assert!(portal["id"].as_str().unwrap().starts_with("bps_"));
    assert_eq!(portal["object"], "billing_portal.session");
    assert_eq!(portal["customer"], customer_id);
    assert_eq!(portal["return_url"], "https://issuer.test/account");
    assert!(
        portal["configuration"]
            .as_str()
            .unwrap()
            .starts_with("bpc_")
    );
    assert_recent(&portal["created"]);
    let url = portal["url"].as_str().unwrap();
    assert!(url.starts_with(&fake.base_url()), "{url}");

    api.post(
        "/v1/billing_portal/sessions",
        &[("return_url", "https://issuer.test/")],
    )
    .stripe_error(400, "invalid_request_error");
    let error = api
        .post("/v1/billing_portal/sessions", &[("customer", "cus_nope")])
        .stripe_error(400, "invalid_request_error");
    assert_eq!(error["code"], "resource_missing");

    let page = api.page_get(url);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&completion.subscription_id),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("href=\"https://issuer.test/account\""),
        "{}",
        page.body
    );

    let cancel_action = format!("{url}/cancel");
    let cancelled = api.page_post(
        &cancel_action,
        &[("subscription", &completion.subscription_id)],
    );
    assert_eq!(cancelled.status, 303);
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let event = got[0].json();
    assert_eq!(event["type"], "customer.subscription.updated");
    assert_eq!(event["data"]["object"]["cancel_at_period_end"], true);
    assert_eq!(
        event["data"]["previous_attributes"]["cancel_at_period_end"],
        false
    );
    verify(&got[0].body, got[0].signature(), DEFAULT_WEBHOOK_SECRET).unwrap();
    let page = api.page_get(url);
    assert!(page.body.contains("cancels at period end"), "{}", page.body);

    // At the period end it ends instead of renewing.
    let period_end = event["data"]["object"]["items"]["data"][0]["current_period_end"].clone();
    let ended = fake.advance_period(&completion.subscription_id);
    assert_eq!(ended["object"], "subscription");
    assert_eq!(ended["status"], "canceled");
    assert_eq!(ended["ended_at"], period_end);
    let last = receiver.received().last().unwrap().json();
    assert_eq!(last["type"], "customer.subscription.deleted");
    assert_eq!(receiver.received().len(), 2);
}

#[test]
fn subscription_updates_and_cancellation_send_their_events() {
    let receiver = Receiver::start();
    let fake = FakeStripe::start(Config::with_webhook(&receiver.url));
    let api = Api::new(&fake);
    let session = api.create_session(&[("customer_email", "ada@example.com")]);
    let sub_id = fake
        .complete_checkout(session["id"].as_str().unwrap())
        .subscription_id;
    let path = format!("/v1/subscriptions/{sub_id}");
    let before = api.get(&path).json();
    receiver.clear();

    // Cancel at the period end, with an idempotency key the event names.
    let answer = api.post_body(&path, "cancel_at_period_end=true", Some("cancel-1"));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sub = answer.json();
    assert_eq!(sub["cancel_at_period_end"], true);
    assert_eq!(
        sub["cancel_at"],
        before["items"]["data"][0]["current_period_end"]
    );
    assert_eq!(sub["status"], "active");
    let event = receiver.received()[0].json();
    assert_eq!(event["type"], "customer.subscription.updated");
    assert_eq!(
        event["data"]["previous_attributes"]["cancel_at_period_end"],
        false
    );
    assert_eq!(event["request"]["idempotency_key"], "cancel-1");
    assert!(event["request"]["id"].as_str().unwrap().starts_with("req_"));
    // The same request again is a replay: no second event.
    api.post_body(&path, "cancel_at_period_end=true", Some("cancel-1"));
    assert_eq!(receiver.received().len(), 1);

    // Changing to the annual price restarts the cycle and charges at once.
    let item_id = before["items"]["data"][0]["id"].as_str().unwrap();
    let changed = api.post(
        &path,
        &[
            ("items[0][id]", item_id),
            ("items[0][price]", PRICE_PROFESSIONAL_ANNUAL),
            ("proration_behavior", "always_invoice"),
            ("cancel_at_period_end", "false"),
            ("metadata[seats]", "3"),
        ],
    );
    assert_eq!(changed.status, 200, "{}", changed.body);
    let sub = changed.json();
    assert_eq!(sub["items"]["data"][0]["id"], item_id);
    assert_eq!(
        sub["items"]["data"][0]["price"]["id"],
        PRICE_PROFESSIONAL_ANNUAL
    );
    assert_eq!(
        sub["items"]["data"][0]["price"]["recurring"]["interval"],
        "year"
    );
    assert_eq!(sub["cancel_at_period_end"], false);
    assert_eq!(sub["cancel_at"], Value::Null);
    assert_eq!(sub["metadata"]["seats"], "3");
    let got = receiver.received();
    let types: Vec<_> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "customer.subscription.updated",
            "customer.subscription.updated",
            "invoice.paid"
        ]
    );
    let previous = &got[1].json()["data"]["previous_attributes"];
    assert_eq!(
        previous["items"]["data"][0]["price"]["id"],
        PRICE_STARTER_MONTHLY
    );
    assert_eq!(
        got[2].json()["data"]["object"]["billing_reason"],
        "subscription_update"
    );
    assert_eq!(got[2].json()["data"]["object"]["amount_paid"], 49_000);

    // A change that changes nothing sends nothing.
    api.post(&path, &[("metadata[seats]", "3")]);
    assert_eq!(receiver.received().len(), 3);

    // Errors.
    let error = api
        .post(
            &path,
            &[
                ("items[0][id]", "si_nope"),
                ("items[0][price]", PRICE_STARTER_MONTHLY),
            ],
        )
        .stripe_error(400, "invalid_request_error");
    assert_eq!(error["param"], "items[0][id]");
    let error = api
        .post(&path, &[("cancel_at_period_end", "yes")])
        .stripe_error(400, "invalid_request_error");
    assert_eq!(error["param"], "cancel_at_period_end");
    api.post(&path, &[("proration_behavior", "sometimes")])
        .stripe_error(400, "invalid_request_error");
    api.get("/v1/subscriptions/sub_nope")
        .stripe_error(404, "invalid_request_error");
    api.post(
        "/v1/subscriptions/sub_nope",
        &[("cancel_at_period_end", "true")],
    )
    .stripe_error(404, "invalid_request_error");

    // Cancel now.
    let cancelled = api.delete(&path, &[("cancellation_details[comment]", "too expensive")]);
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    let sub = cancelled.json();
    assert_eq!(sub["status"], "canceled");
    assert_recent(&sub["canceled_at"]);
    assert_recent(&sub["ended_at"]);
    assert_eq!(sub["cancellation_details"]["comment"], "too expensive");
    let last = receiver.received().last().unwrap().json();
    assert_eq!(last["type"], "customer.subscription.deleted");
    assert_eq!(last["data"]["object"]["status"], "canceled");
    api.delete(&path, &[])
        .stripe_error(400, "invalid_request_error");
    api.post(&path, &[("cancel_at_period_end", "true")])
        .stripe_error(400, "invalid_request_error");
    assert_eq!(fake.requests_to("DELETE", &path).len(), 2);
}

#[test]
fn renewals_failed_payments_and_recovery() {
    let receiver = Receiver::start();
    let fake = FakeStripe::start(Config::with_webhook(&receiver.url));
    let api = Api::new(&fake);
    let session = api.create_session(&[]);
    let sub_id = fake
        .complete_checkout(session["id"].as_str().unwrap())
        .subscription_id;
    let first = fake.subscription(&sub_id).unwrap();
    let first_end = first["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap();
    receiver.clear();

    let invoice = fake.advance_period(&sub_id);
    assert_eq!(invoice["status"], "paid");
    assert_eq!(invoice["billing_reason"], "subscription_cycle");
    let line_period = &invoice["lines"]["data"][0]["period"];
    assert_eq!(line_period["start"], first_end);
    assert_month_after(first_end, line_period["end"].as_i64().unwrap());
    // Stripe's invoice period looks back one period; the line has the new one.
    assert_eq!(invoice["period_end"], first_end);
    let second_end = line_period["end"].as_i64().unwrap();
    let got = receiver.received();
    assert_eq!(got[0].json()["type"], "customer.subscription.updated");
    assert_eq!(
        got[0].json()["data"]["object"]["items"]["data"][0]["current_period_end"],
        second_end
    );
    assert_eq!(got[1].json()["type"], "invoice.paid");
    assert_eq!(got[1].json()["data"]["object"]["id"], invoice["id"]);
    receiver.clear();

    let failed = fake.fail_next_payment(&sub_id);
    assert_eq!(failed["status"], "open");
    assert_eq!(failed["amount_paid"], 0);
    assert_eq!(failed["amount_remaining"], 1_900);
    assert!(failed["next_payment_attempt"].as_i64().is_some());
    assert_eq!(fake.subscription(&sub_id).unwrap()["status"], "past_due");
    let got = receiver.received();
    let types: Vec<_> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        ["customer.subscription.updated", "invoice.payment_failed"]
    );
    assert_eq!(
        got[0].json()["data"]["previous_attributes"]["status"],
        "active"
    );
    receiver.clear();

    let recovered = fake.recover_payment(&sub_id);
    assert_eq!(recovered["id"], failed["id"]);
    assert_eq!(recovered["status"], "paid");
    assert_eq!(fake.subscription(&sub_id).unwrap()["status"], "active");
    let types: Vec<_> = receiver
        .received()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["invoice.paid", "customer.subscription.updated"]);
    for r in receiver.received() {
        verify(&r.body, r.signature(), DEFAULT_WEBHOOK_SECRET).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Deliveries: duplicates, order, failures, raw posts, rolled secrets
// ---------------------------------------------------------------------------

#[test]
fn the_same_event_can_be_delivered_again_and_concurrently() {
    let receiver = Receiver::start();
    let fake = FakeStripe::start(Config::with_webhook(&receiver.url));
    let api = Api::new(&fake);
    let session = api.create_session(&[]);
    let completion = fake.complete_checkout(session["id"].as_str().unwrap());
    let completed = fake.events_of_type("checkout.session.completed").remove(0);
    assert!(completion.event_ids.contains(&completed.id));
    receiver.clear();

    let again = fake.deliver(&completed.id);
    assert!(again.succeeded());
    let concurrent = fake.deliver_concurrently(&completed.id, 10);
    assert_eq!(concurrent.len(), 10);
    assert!(concurrent.iter().all(|d| d.succeeded()));
    let got = receiver.received();
    assert_eq!(got.len(), 11);
    for r in &got {
        assert_eq!(r.body, completed.payload, "the same bytes every time");
        verify(&r.body, r.signature(), DEFAULT_WEBHOOK_SECRET).unwrap();
    }
    assert_eq!(
        fake.deliveries_of(&completed.id).len(),
        12,
        "the first delivery and 11 more"
    );
}

#[test]
fn paused_deliveries_wait_and_can_go_out_of_order() {
    let receiver = Receiver::start();
    let fake = FakeStripe::start(Config::with_webhook(&receiver.url));
    let api = Api::new(&fake);
    fake.pause_deliveries();

    // The person reaches the success page before any webhook.
    let session = api.create_session(&[]);
    let paid = api.page_post(
        session["url"].as_str().unwrap(),
        &[
            ("email", "a@example.com"),
            ("card_number", "4242424242424242"),
        ],
    );
    assert_eq!(paid.status, 303);
    assert!(receiver.received().is_empty());
    assert_eq!(fake.queued_events().len(), 4);

    let delivered = fake.resume_deliveries();
    assert_eq!(delivered.len(), 4);
    assert_eq!(receiver.received().len(), 4);
    receiver.clear();

    // Two updates of one subscription, delivered newest first.
    let sub_id = fake.subscription_ids().remove(0);
    fake.pause_deliveries();
    let path = format!("/v1/subscriptions/{sub_id}");
    api.post(&path, &[("metadata[step]", "1")]);
    api.post(&path, &[("metadata[step]", "2")]);
    let queued = fake.take_queued();
    assert_eq!(queued.len(), 2);
    assert!(fake.queued_events().is_empty());
    for id in queued.iter().rev() {
        assert!(fake.deliver(id).succeeded());
    }
    let steps: Vec<_> = receiver
        .received()
        .iter()
        .map(|r| {
            r.json()["data"]["object"]["metadata"]["step"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(steps, ["2", "1"]);
    let created: Vec<i64> = queued
        .iter()
        .map(|id| fake.event(id).unwrap().created)
        .collect();
    assert!(created[0] <= created[1]);

    // Events with chosen times, for ordering by `created`.
    let old = fake.create_event_at(
        "customer.subscription.updated",
        json!({ "id": sub_id, "object": "subscription" }),
        1_000,
    );
    assert_eq!(old.json()["created"], 1_000);
    assert!(
        fake.queued_events().is_empty(),
        "created events are not queued"
    );
}

#[test]
fn arbitrary_events_raw_posts_and_failed_deliveries_are_recorded() {
    let receiver = Receiver::start();
    let fake = FakeStripe::start(Config::with_webhook(&receiver.url));

    let sent = fake.send_event(
        "customer.updated",
        json!({ "id": "cus_x", "object": "customer" }),
    );
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, sent.payload);
    assert_eq!(sent.json()["data"]["object"]["id"], "cus_x");
    assert_eq!(sent.object()["object"], "customer");
    verify(&got[0].body, got[0].signature(), DEFAULT_WEBHOOK_SECRET).unwrap();

    // A stale signature, made on purpose.
    let stale_at = unix_now() - 3_600;
    let stale = fake.deliver_signed_at(&sent.id, stale_at);
    assert_eq!(stale.timestamp, stale_at);
    let err = verify(
        &receiver.received()[1].body,
        &stale.signature,
        DEFAULT_WEBHOOK_SECRET,
    )
    .unwrap_err();
    assert!(err.contains("not within"), "{err}");

    // Tampered, unsigned and wrongly signed bodies, posted as they are.
    let tampered = sent.payload.replace("cus_x", "cus_y");
    let header = sign_payload(&sent.payload, DEFAULT_WEBHOOK_SECRET, unix_now());
    fake.post_raw_webhook(&tampered, Some(&header));
    fake.post_raw_webhook(&sent.payload, None);
    fake.post_raw_webhook(
        &sent.payload,
        Some(&sign_payload(&sent.payload, "whsec_wrong", unix_now())),
    );
    let got = receiver.received();
    assert_eq!(got.len(), 5);
    assert!(verify(&got[2].body, got[2].signature(), DEFAULT_WEBHOOK_SECRET).is_err());
    assert!(!got[3].headers.contains_key("stripe-signature"));
    assert!(verify(&got[4].body, got[4].signature(), DEFAULT_WEBHOOK_SECRET).is_err());

    // A receiver that fails, and one that is not there.
    receiver.answer_with(500);
    let failed = fake.deliver(&sent.id);
    assert_eq!(failed.status, Some(500));
    assert!(!failed.succeeded());
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    fake.set_webhook_url(Some(&closed_url));
    let nobody = fake.deliver(&sent.id);
    assert_eq!(nobody.status, None);
    assert!(!nobody.response.is_empty());
    assert_eq!(fake.deliveries().len(), 7);

    // Without a URL events are only stored.
    fake.set_webhook_url(None);
    let quiet = fake.send_event("ping", json!({}));
    assert_eq!(quiet.json()["pending_webhooks"], 0);
    assert_eq!(fake.deliveries().len(), 7);
    assert_eq!(fake.events().len(), 2);
}

#[test]
fn a_rolled_secret_signs_every_delivery_twice_in_the_order_asked() {
    for current_first in [false, true] {
        let receiver = Receiver::start();
        let fake = FakeStripe::start(Config {
            webhook_url: Some(receiver.url.clone()),
            webhook_secret: "whsec_new".to_owned(),
            extra_webhook_secrets: vec!["whsec_old".to_owned()],
            current_signature_first: current_first,
            ..Config::default()
        });
        fake.send_event("ping", json!({}));
        let got = receiver.received();
        let header = got[0].signature();
        assert_eq!(header.matches("v1=").count(), 2, "{header}");
        let t = verify(&got[0].body, header, "whsec_new").unwrap();
        let signatures: Vec<&str> = header
            .split(',')
            .filter_map(|p| p.strip_prefix("v1="))
            .collect();
        let current = signature_v1(&got[0].body, "whsec_new", t);
        let expected = if current_first { 0 } else { 1 };
        assert_eq!(signatures[expected], current, "{header}");
        verify(&got[0].body, header, "whsec_old").unwrap();
        assert!(verify(&got[0].body, header, "whsec_other").is_err());
    }
}

// ---------------------------------------------------------------------------
// Stripe's own Python library accepts a delivery
// ---------------------------------------------------------------------------

fn in_ci() -> bool {
    coditect_tests::in_ci()
}

/// Whether `python3 -c 'import stripe'` works. If not: under CI the test
/// fails; elsewhere it prints a notice and the caller returns (skips).
fn python_stripe_ready() -> bool {
    let probe = Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-c", "import stripe"])
        .output();
    let problem = match probe {
        Err(e) => format!("cannot run `python3`: {e}"),
        Ok(out) if !out.status.success() => format!(
            "`python3 -c 'import stripe'` failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .trim()
        ),
        Ok(_) => return true,
    };
    let help = "install Python 3 and `pip install -r tests/python/requirements.txt`";
    assert!(
        !in_ci(),
        "{problem}\n{help}. (CI is set, so this test fails instead of skipping.)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "NOTICE: skipping python_stripe_library_accepts_delivered_events: {problem}\n        {help} to run it."
    );
    false
}

/// Runs `stripe.Webhook.construct_event` on a payload file and a header;
/// `Ok` holds "id type object-id", `Err` the exception's class and message.
fn construct_event_in_python(
    dir: &std::path::Path,
    payload: &str,
    header: &str,
    secret: &str,
) -> Result<String, String> {
    const SCRIPT: &str = r#"
import sys, stripe
payload = open(sys.argv[1], "rb").read().decode("utf-8")
try:
    event = stripe.Webhook.construct_event(payload, sys.argv[2], sys.argv[3], tolerance=300)
except Exception as e:
    print(type(e).__name__, e)
    sys.exit(3)
print(event.id, event.type, event.data.object.id)
"#;
    let path = dir.join("payload.json");
    std::fs::write(&path, payload).expect("write the payload");
    let out = Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&path)
        .arg(header)
        .arg(secret)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match out.status.code() {
        Some(0) => Ok(stdout),
        Some(3) => Err(stdout),
        _ => panic!(
            "python3 failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn python_stripe_library_accepts_delivered_events() {
    if !python_stripe_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let receiver = Receiver::start();
    let fake = FakeStripe::start(Config::with_webhook(&receiver.url));
    let api = Api::new(&fake);
    let session = api.create_session(&[("customer_email", "py@example.com")]);
    api.page_post(
        session["url"].as_str().unwrap(),
        &[("card_number", "4242424242424242")],
    );
    let got = receiver.received();
    assert_eq!(got.len(), 4);
    for r in &got {
        let event = r.json();
        let accepted =
            construct_event_in_python(dir.path(), &r.body, r.signature(), DEFAULT_WEBHOOK_SECRET)
                .unwrap_or_else(|e| panic!("stripe-python refused {}: {e}", event["type"]));
        let expected = format!(
            "{} {} {}",
            event["id"].as_str().unwrap(),
            event["type"].as_str().unwrap(),
            event["data"]["object"]["id"].as_str().unwrap()
        );
        assert_eq!(accepted, expected);
    }

    // And it refuses what the issuer must refuse.
    let completed = got
        .iter()
        .find(|r| r.json()["type"] == "checkout.session.completed")
        .expect("the checkout event");
    let body = &completed.body;
    let header = completed.signature();
    let tampered = body.replace("\"complete\"", "\"open\"");
    assert_ne!(&tampered, body);
    let refused = construct_event_in_python(dir.path(), &tampered, header, DEFAULT_WEBHOOK_SECRET)
        .unwrap_err();
    assert!(
        refused.starts_with("SignatureVerificationError"),
        "{refused}"
    );
    let refused = construct_event_in_python(dir.path(), body, header, "whsec_wrong").unwrap_err();
    assert!(
        refused.starts_with("SignatureVerificationError"),
        "{refused}"
    );
    let stale = sign_payload(body, DEFAULT_WEBHOOK_SECRET, unix_now() - 600);
    let refused =
        construct_event_in_python(dir.path(), body, &stale, DEFAULT_WEBHOOK_SECRET).unwrap_err();
    assert!(
        refused.starts_with("SignatureVerificationError"),
        "{refused}"
    );
}

/// Reads `json` as the async-stripe type `T` (the pinned library, made
/// from Stripe's published spec for the API version the fake claims).
#[track_caller]
fn reads_as<T: miniserde::Deserialize>(what: &str, json: &str) {
    if miniserde::json::from_str::<T>(json).is_err() {
        panic!(
            "{what} does not read as async-stripe's {}:\n{json}",
            std::any::type_name::<T>()
        );
    }
}

/// Every object and event the fake emits reads as async-stripe's own typed
/// models, so the fake cannot drift from Stripe unnoticed: a required
/// field missing or of the wrong type fails here.
#[test]
fn every_object_and_event_the_fake_emits_reads_as_async_stripe_types() {
    let fake = FakeStripe::start(Config::default());
    let api = Api::new(&fake);
    let customer = api.create_customer("typed@example.com");
    reads_as::<stripe_shared::Customer>("a customer", &customer.to_string());
    let cus = customer["id"].as_str().unwrap().to_owned();
    let session = api.create_session(&[("customer", &cus)]);
    reads_as::<stripe_shared::CheckoutSession>("a new checkout session", &session.to_string());
    let session_id = session["id"].as_str().unwrap().to_owned();
    let sub_id = fake.complete_checkout(&session_id).subscription_id;
    // A renewal, a failed payment and its recovery: every invoice event.
    fake.advance_period(&sub_id);
    fake.fail_next_payment(&sub_id);
    fake.recover_payment(&sub_id);

    let expanded = api.get(&format!(
        "/v1/checkout/sessions/{session_id}?expand[]=line_items&expand[]=customer\
         &expand[]=subscription.latest_invoice&expand[]=payment_intent"
    ));
    assert_eq!(expanded.status, 200, "{}", expanded.body);
    assert!(
        expanded.json()["subscription"]["latest_invoice"]["object"] == "invoice",
        "nested expansion: {}",
        expanded.body
    );
    reads_as::<stripe_shared::CheckoutSession>("an expanded checkout session", &expanded.body);
    let sub = api.get(&format!("/v1/subscriptions/{sub_id}"));
    assert_eq!(sub.status, 200, "{}", sub.body);
    reads_as::<stripe_shared::Subscription>("a subscription", &sub.body);
    let items = &sub.json()["items"]["data"][0];
    assert!(items.get("plan").is_none(), "no legacy plan: {items}");
    for price in fake.prices() {
        let answer = api.get(&format!("/v1/prices/{}", price.id));
        assert_eq!(answer.status, 200, "{}", answer.body);
        reads_as::<stripe_shared::Price>("a price", &answer.body);
        assert!(
            answer.json()["recurring"]
                .get("trial_period_days")
                .is_none(),
            "{}",
            answer.body
        );
    }
    let portal = api.post(
        "/v1/billing_portal/sessions",
        &[("customer", &cus), ("return_url", "https://issuer.test/")],
    );
    assert_eq!(portal.status, 200, "{}", portal.body);
    reads_as::<stripe_billing::BillingPortalSession>("a portal session", &portal.body);

    let mut kinds = std::collections::BTreeSet::new();
    for event in fake.events() {
        reads_as::<stripe_shared::Event>(&event.event_type, &event.payload);
        let object =
            serde_json::from_str::<Value>(&event.payload).unwrap()["data"]["object"].to_string();
        let what = format!("the object of {}", event.event_type);
        match event.event_type.as_str() {
            t if t.starts_with("checkout.session.") => {
                reads_as::<stripe_shared::CheckoutSession>(&what, &object);
            }
            t if t.starts_with("customer.subscription.") => {
                reads_as::<stripe_shared::Subscription>(&what, &object);
            }
            t if t.starts_with("customer.") => reads_as::<stripe_shared::Customer>(&what, &object),
            t if t.starts_with("invoice.") => {
                reads_as::<stripe_shared::Invoice>(&what, &object);
                let invoice: Value = serde_json::from_str(&object).unwrap();
                assert!(invoice.get("amount_paid_off_stripe").is_some(), "{object}");
            }
            other => panic!("an event type this test does not check: {other}"),
        }
        kinds.insert(event.event_type);
    }
    for kind in [
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "invoice.paid",
        "invoice.payment_failed",
    ] {
        assert!(kinds.contains(kind), "{kind} not emitted: {kinds:?}");
    }
}

/// The `fake-stripe` binary's controls (the same server): a script moves a
/// subscription on, a failed payment included, over HTTP.
#[test]
fn the_fakes_controls_move_a_subscription_on_over_http() {
    let fake = FakeStripe::start(Config::default());
    let api = Api::new(&fake);
    let session = api.create_session(&[("customer_email", "ctl@example.com")]);
    let sub_id = fake
        .complete_checkout(session["id"].as_str().unwrap())
        .subscription_id;
    let control = |action: &str, sub: &str| {
        api.page_post(
            &format!("{}/_fake/subscriptions/{sub}/{action}", fake.base_url()),
            &[],
        )
    };
    let failed = control("fail_next_payment", &sub_id);
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert_eq!(failed.json()["status"], "open", "{}", failed.body);
    assert_eq!(fake.events_of_type("invoice.payment_failed").len(), 1);
    assert_eq!(fake.subscription(&sub_id).unwrap()["status"], "past_due");
    let recovered = control("recover_payment", &sub_id);
    assert_eq!(recovered.status, 200, "{}", recovered.body);
    assert_eq!(fake.subscription(&sub_id).unwrap()["status"], "active");
    let renewed = control("advance_period", &sub_id);
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert_eq!(renewed.json()["status"], "paid");
    // Unknown controls and subscriptions are refused, nothing sent.
    let before = fake.events().len();
    assert_eq!(control("explode", &sub_id).status, 404);
    assert!(control("advance_period", "sub_nope").status >= 400);
    assert_eq!(fake.events().len(), before);
}
