//! Operating the issuer: its metrics as a real Prometheus server sees them,
//! who may read `/metrics`, the production log as Cloud Logging reads it,
//! and admin commands' output in pipes.
//!
//! The Prometheus test starts Debian's `prometheus` (installed by
//! `scripts/prometheus.sh`) on loopback with a one-second scrape of the
//! issuer's metrics listener, sends traffic, and asks Prometheus's HTTP API
//! for the series. Every wait polls with a generous limit; nothing is
//! timed. Without the binary the test is skipped, except under CI, where
//! it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coditect_tests::fake_stripe::sign_payload;
use coditect_tests::issuer::{
    Client, IssuerServer, admin, create_license, hardware_id, issuer_command, unix_now,
};
use serde_json::{Value, json};
use tempfile::TempDir;

const ACTIVATE: &str = "/api/v1/licenses/activate";
const VALIDATE: &str = "/api/v1/licenses/validate";
const WEBHOOK_SECRET: &str = "whsec_metrics_e2e_secret";
/// How long Prometheus may take to start and to show a scraped value.
const PATIENCE: Duration = Duration::from_secs(90);

fn data_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("coditect-metrics-e2e-")
        .tempdir()
        .expect("a temporary folder")
}

/// The `prometheus` binary, or `None` (the test is skipped; under CI it
/// fails).
fn prometheus_bin(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        coditect_tests::missing_tool(
            test,
            "the `prometheus` binary is not installed",
            "Run scripts/prometheus.sh (Debian package `prometheus`)",
        );
    }
    found
}

/// A Prometheus server on loopback, killed when dropped.
struct Prometheus {
    child: Child,
    client: Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`HOST:PORT`) every second, with
    /// its configuration and data in `dir`.
    fn start(bin: &Path, dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: coditect-issuer\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = coditect_tests::smtp::free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            client: Client::new(&format!("http://127.0.0.1:{port}")),
        };
        prometheus.wait_for("Prometheus is ready", |p| {
            p.client.try_get("/-/ready").is_ok_and(|r| r.status == 200)
        });
        prometheus
    }

    /// Polls `ok` until it holds; panics with `what` after [`PATIENCE`].
    fn wait_for(&self, what: &str, ok: impl Fn(&Prometheus) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !ok(self) {
            assert!(Instant::now() < deadline, "waited {PATIENCE:?}: {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The result of an instant query (`data.result`).
    fn query(&self, promql: &str) -> Vec<Value> {
        let mut path = String::from("/api/v1/query?query=");
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                path.push(char::from(b));
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
        let r = self.client.get(&path);
        let body = r.expect_status(200);
        assert_eq!(body["status"], "success", "{body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of `promql`, if it has exactly one series.
    fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql).as_slice() {
            [one] => one["value"][1].as_str().and_then(|v| v.parse().ok()),
            _ => None,
        }
    }

    /// Waits until `promql` has one series of value `expected`.
    fn expect(&self, promql: &str, expected: f64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.value(promql);
            if got == Some(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: expected {expected}, Prometheus has {got:?} ({:?})",
                self.query(promql)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of the metrics listener, from the issuer's log line
/// `serving metrics at http://ADDR/metrics`.
fn metrics_addr(server: &IssuerServer) -> String {
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("serving metrics at http://"))
        .unwrap_or_else(|| panic!("the issuer named no metrics listener:\n{log}"));
    let rest = &line[line.find("http://").unwrap() + "http://".len()..];
    rest[..rest.find("/metrics").expect("…/metrics")].to_owned()
}

/// A Stripe event delivery, signed with `secret`.
fn deliver(server: &IssuerServer, event: &Value, secret: &str) -> u16 {
    let body = event.to_string();
    let signature = sign_payload(&body, secret, i64::try_from(unix_now()).unwrap());
    server
        .client()
        .with_header("stripe-signature", &signature)
        .post_raw("/webhooks/stripe", "application/json", &body)
        .status
}

#[test]
fn prometheus_scrapes_the_issuer_and_sees_what_happened() {
    let test = "prometheus_scrapes_the_issuer_and_sees_what_happened";
    let Some(bin) = prometheus_bin(test) else {
        return;
    };
    let dir = data_dir();
    let license = create_license(
        dir.path(),
        &["--email", "metrics@example.com", "--tier", "pilot-starter"],
    );
    let server = IssuerServer::start_with_env(
        dir.path(),
        &[
            ("METRICS_BIND", "127.0.0.1:0"),
            ("SIGNING_KEY_ROTATE_BY", "2027-03-31"),
            // One activation per key: the second is refused by the limit.
            ("RATE_LIMIT_ACTIVATE", "1/hour"),
            // Stripe's settings, for the webhook; its API is never reached
            // (an event the issuer does not act on needs no call).
            ("STRIPE_SECRET_KEY", "sk_test_metrics_e2e"),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("STRIPE_API_BASE", "http://127.0.0.1:9"),
            ("STRIPE_PRICE_STARTER_MONTHLY", "price_sm"),
            ("STRIPE_PRICE_STARTER_ANNUAL", "price_sa"),
            ("STRIPE_PRICE_PRO_MONTHLY", "price_pm"),
            ("STRIPE_PRICE_PRO_ANNUAL", "price_pa"),
        ],
    );
    // Not on the main port without METRICS_TOKEN.
    assert_eq!(server.get("/metrics").status, 404);
    let target = metrics_addr(&server);
    let scraped = Client::new(&format!("http://{target}")).get("/metrics");
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    assert!(
        scraped
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        scraped.content_type
    );

    let prom_dir = data_dir();
    let prometheus = Prometheus::start(&bin, prom_dir.path(), &target);
    prometheus.expect(r#"up{job="coditect-issuer"}"#, 1.0);

    // Traffic: one activation and one over the rate limit, two renewals,
    // one refused renewal (another machine), an event the issuer ignores
    // and one with a wrong secret.
    let hw = hardware_id("metrics-e2e-machine");
    let other = hardware_id("metrics-e2e-other");
    server
        .post_json(
            ACTIVATE,
            &json!({ "license_key": license.key, "hardware_id": hw, "machine_name": "m" }),
        )
        .expect_status(201);
    server
        .post_json(
            ACTIVATE,
            &json!({ "license_key": license.key, "hardware_id": other, "machine_name": "o" }),
        )
        .expect_problem(429, "rate_limited");
    for _ in 0..2 {
        server
            .post_json(
                VALIDATE,
                &json!({ "license_key": license.key, "hardware_id": hw }),
            )
            .expect_status(200);
    }
    server
        .post_json(
            VALIDATE,
            &json!({ "license_key": license.key, "hardware_id": other }),
        )
        .expect_problem(403, "not_activated");
    let event = json!({
        "id": "evt_metrics_e2e_1",
        "object": "event",
        "type": "customer.created",
        "created": unix_now(),
        "data": { "object": { "id": "cus_metrics", "object": "customer" } },
    });
    assert_eq!(deliver(&server, &event, WEBHOOK_SECRET), 200);
    assert_eq!(deliver(&server, &event, "whsec_the_old_secret"), 400);

    // What Prometheus sees.
    let p = &prometheus;
    p.expect(
        r#"coditect_license_grants_total{operation="activate"}"#,
        1.0,
    );
    p.expect(
        r#"coditect_license_grants_total{operation="validate"}"#,
        2.0,
    );
    p.expect(
        r#"coditect_license_refusals_total{operation="validate",code="not_activated"}"#,
        1.0,
    );
    p.expect(
        r#"coditect_http_requests_total{route="/api/v1/licenses/validate",method="POST",status="2xx"}"#,
        2.0,
    );
    p.expect(
        r#"coditect_http_requests_total{route="/api/v1/licenses/validate",method="POST",status="4xx"}"#,
        1.0,
    );
    p.expect(
        r#"coditect_http_request_duration_seconds_count{route="/api/v1/licenses/validate",method="POST"}"#,
        3.0,
    );
    p.expect(
        r#"coditect_http_requests_total{route="unmatched",method="GET",status="4xx"}"#,
        1.0,
    );
    p.expect(
        r#"coditect_rate_limit_refusals_total{limit="activate"}"#,
        1.0,
    );
    p.expect(
        r#"coditect_http_requests_total{route="/api/v1/licenses/activate",method="POST",status="4xx"}"#,
        1.0,
    );
    p.expect(r#"coditect_webhook_events_total{outcome="ignored"}"#, 1.0);
    p.expect(r#"coditect_webhook_events_total{outcome="refused"}"#, 1.0);
    p.expect(
        r#"coditect_webhook_refusals_total{code="bad_signature"}"#,
        1.0,
    );
    p.expect("coditect_token_signing_duration_seconds_count", 3.0);
    p.expect(
        &format!(
            r#"coditect_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        ),
        1.0,
    );
    p.expect(
        "coditect_signing_key_rotate_by_timestamp_seconds",
        1_806_451_200.0,
    );
    p.expect("coditect_db_pool_max_connections", 8.0);
    p.expect(r#"coditect_mail_outbox_unsent{status="given_up"}"#, 0.0);
    assert_eq!(
        p.query("coditect_mail_outbox_oldest_unsent_age_seconds")
            .len(),
        1
    );
    assert_eq!(
        p.query(r#"coditect_db_query_errors_total{kind="failed"}"#)
            .len(),
        1
    );
    // The rules' queries work on these series: with renewals going on
    // while Prometheus watches, validate's p99 is some seconds.
    let p99 = r#"histogram_quantile(0.99, sum by (le) (rate(coditect_http_request_duration_seconds_bucket{route="/api/v1/licenses/validate"}[30s])))"#;
    let deadline = Instant::now() + PATIENCE;
    loop {
        server
            .post_json(
                VALIDATE,
                &json!({ "license_key": license.key, "hardware_id": hw }),
            )
            .expect_status(200);
        let got = p.value(p99);
        if got.is_some_and(f64::is_finite) {
            assert!(got.is_some_and(|s| s > 0.0 && s <= 10.0), "{got:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{p99}: {got:?} ({:?})",
            p.query(p99)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // No label carries the key, a machine, an address or a raw path.
    let all = p.query(r#"{__name__=~"coditect_.+"}"#);
    assert!(all.len() > 20, "{all:?}");
    for series in &all {
        for (name, value) in series["metric"].as_object().unwrap() {
            if name == "instance" {
                continue;
            }
            let value = value.as_str().unwrap();
            for secret in [
                license.key.as_str(),
                hw.as_str(),
                other.as_str(),
                "127.0.0.1",
            ] {
                assert!(!value.contains(secret), "label {name}={value}");
            }
        }
    }
}

/// The production settings of these tests (Stripe and SMTP are never
/// reached).
fn production_env(dir: &Path, token: &str) -> Vec<(String, String)> {
    let key = dir.join("production.pem");
    admin(
        dir,
        &[
            "keys",
            "generate",
            "--out",
            key.to_str().expect("a UTF-8 path"),
        ],
    )
    .assert_success();
    [
        ("CODITECT_ENV", "production"),
        ("JWT_SECRET", "production-test-jwt-secret-0123456789abcdef"),
        (
            "LICENSE_KEY_PEPPER",
            "production-test-key-pepper-0123456789abcdef",
        ),
        ("SIGNING_KEY_FILE", key.to_str().expect("a UTF-8 path")),
        ("STRIPE_SECRET_KEY", "sk_test_metrics_production"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_metrics_production"),
        ("STRIPE_PRICE_STARTER_MONTHLY", "price_sm"),
        ("STRIPE_PRICE_STARTER_ANNUAL", "price_sa"),
        ("STRIPE_PRICE_PRO_MONTHLY", "price_pm"),
        ("STRIPE_PRICE_PRO_ANNUAL", "price_pa"),
        ("SMTP_URL", "smtp://127.0.0.1:1"),
        ("METRICS_TOKEN", token),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

#[test]
fn in_production_metrics_need_the_token_and_the_log_is_cloud_logging_json() {
    let dir = data_dir();
    let token = "metrics-e2e-token-0123456789abcdef0123456789";
    let env = production_env(dir.path(), token);
    let server = IssuerServer::start_with_env(dir.path(), &coditect_tests::issuer::env_refs(&env));

    // /metrics on the main port: 401 without the token or with another.
    let anonymous = server.get("/metrics");
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert!(!anonymous.body.contains("coditect_"), "{}", anonymous.body);
    let wrong = server
        .client()
        .with_bearer("metrics-e2e-token-0123456789abcdef0123456780")
        .get("/metrics");
    assert_eq!(wrong.status, 401);
    let scraped = server.client().with_bearer(token).get("/metrics");
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    assert!(
        scraped.body.contains(
            r#"coditect_http_requests_total{route="/metrics",method="GET",status="4xx"} 2"#
        ),
        "{}",
        scraped.body
    );

    // A request with a secret in its query, and a refused one.
    let reply = server
        .client()
        .with_header("x-request-id", "metrics-e2e-request-1")
        .get("/healthz?token=query-secret-never-logged");
    assert_eq!(reply.status, 200);
    server.post_json(
        VALIDATE,
        &json!({ "license_key": "CODI-TEST-NOPE", "hardware_id": hardware_id("x") }),
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let log = server.log();
        let found = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["request_id"] == "metrics-e2e-request-1" && l["message"] == "request");
        if let Some(line) = found {
            break line;
        }
        assert!(Instant::now() < deadline, "no request line:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(line["severity"], "INFO", "{line}");
    let http = &line["httpRequest"];
    assert_eq!(http["requestMethod"], "GET", "{line}");
    assert_eq!(
        http["requestUrl"], "/healthz",
        "the path, never the query: {line}"
    );
    assert_eq!(http["status"], 200, "{line}");
    assert!(
        http["latency"]
            .as_str()
            .is_some_and(|l| l.ends_with('s') && l[..l.len() - 1].parse::<f64>().is_ok()),
        "{line}"
    );
    assert_eq!(http["remoteIp"], "127.0.0.1", "{line}");
    assert_eq!(
        line["logging.googleapis.com/labels"]["request_id"],
        "metrics-e2e-request-1"
    );
    assert!(line["time"].as_str().is_some(), "{line}");

    // Every line is JSON with a severity and a message; none holds a
    // secret of the configuration or the query.
    let log = server.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for l in &lines {
        assert!(
            ["DEBUG", "INFO", "WARNING", "ERROR"].contains(&l["severity"].as_str().unwrap_or("")),
            "{l}"
        );
        assert!(l["message"].is_string(), "{l}");
    }
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening on http://"))),
        "{log}"
    );
    for secret in [
        token,
        "query-secret-never-logged",
        "production-test-jwt-secret",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[test]
fn admin_commands_write_no_colour_into_pipes_and_no_serving_warnings() {
    let dir = data_dir();
    create_license(
        dir.path(),
        &["--email", "pipes@example.com", "--tier", "pilot-starter"],
    );
    for args in [&["audit"][..], &["license", "list"], &["mail", "list"]] {
        let mut cmd = issuer_command(dir.path(), &[]);
        // As in an operator's shell: no NO_COLOR, output into a pipe.
        cmd.env_remove("NO_COLOR").args(args);
        let out =
            coditect_tests::issuer::run_with_timeout(cmd, coditect_tests::issuer::COMMAND_TIMEOUT);
        out.assert_success();
        let all = out.all_output();
        assert!(
            !all.contains('\u{1b}'),
            "{args:?} wrote escape codes:\n{all}"
        );
        for warning in [
            "DEVELOPMENT key",
            "SMTP_URL is not set",
            "JWT_SECRET is not set",
        ] {
            assert!(
                !all.contains(warning),
                "{args:?} warned `{warning}`:\n{all}"
            );
        }
    }
    // `serve` still says what a development server does, uncoloured in a
    // pipe.
    let mut cmd = issuer_command(dir.path(), &[]);
    cmd.env_remove("NO_COLOR")
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start the issuer");
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("listening on http://") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("DEVELOPMENT key"), "{seen}");
    assert!(!seen.contains('\u{1b}'), "escape codes in a pipe:\n{seen}");
}
