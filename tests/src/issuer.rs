//! Running the real `coditect-issuer` binary in end-to-end tests: finding
//! (and if needed building) it, admin commands as separate processes, and a
//! server on a free port that is killed when its guard is dropped, even when
//! the test panics.
//!
//! The processes get a clean configuration: every variable the issuer reads
//! is removed from their environment and only what the test passes is set,
//! so a developer's shell (a `DATABASE_URL`, a `RUST_LOG=warn`) cannot change
//! what a test sees.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use verifier::{HardwareId, KeyRing};

/// Environment variables the issuer reads; removed from every process the
/// tests start, so only what a test sets is in force.
const ISSUER_VARS: &[&str] = &[
    "CODITECT_ENV",
    "CODITECT_DATA_DIR",
    "DATABASE_URL",
    "PORT",
    "PUBLIC_BASE_URL",
    "JWT_SECRET",
    "JWT_SECRET_FILE",
    "LICENSE_KEY_PEPPER",
    "LICENSE_KEY_PEPPER_FILE",
    "JWT_EXPIRY",
    "SIGNING_KEY",
    "SIGNING_KEY_FILE",
    "SIGNING_KEY_ID",
    "PUBLISHED_KEYS_FILE",
    "DATABASE_URL_FILE",
    "TOKEN_LIFETIME",
    "TOKEN_RENEW_AFTER",
    "ENABLE_PILOT_SIGNUP",
    "PILOT_USERS_LIMIT",
    "UNVERIFIED_ACCOUNT_TTL",
    "LOG_FORMAT",
    "RUST_LOG",
    "RATE_LIMIT_LOGIN",
    "RATE_LIMIT_SIGNUP",
    "RATE_LIMIT_VALIDATE",
    "RATE_LIMIT_ACTIVATE",
    "RATE_LIMIT_LICENSE_IP",
    "RATE_LIMIT_BILLING_USER",
    "RATE_LIMIT_BILLING_ORG",
    "RATE_LIMIT_WEBHOOK_REFUSALS",
    "AUDIT_RETENTION_DAYS",
    "SMTP_URL",
    "SMTP_URL_FILE",
    "MAIL_FROM",
    "SUPPORT_EMAIL",
    "MAIL_RETRY_INITIAL",
    "BILLING_GRACE",
    "PAST_DUE_GRACE",
    "TRUST_PROXY",
    "METRICS_BIND",
    "METRICS_TOKEN",
    "METRICS_TOKEN_FILE",
    "SIGNING_KEY_ROTATE_BY",
    "GOOGLE_CLOUD_PROJECT",
];

/// Rate limits set for every process the tests start, since the tests that
/// are not about rate limits send many requests from 127.0.0.1 (50
/// concurrent activations on one license, hundreds in the load test). The
/// rate-limit tests override them; an empty value gives the issuer's own
/// default (`("RATE_LIMIT_LOGIN", "")` → 5/min).
pub const TEST_RATE_LIMITS: &[(&str, &str)] = &[
    ("RATE_LIMIT_LOGIN", "1000000/sec"),
    ("RATE_LIMIT_SIGNUP", "1000000/sec"),
    ("RATE_LIMIT_VALIDATE", "1000000/sec"),
    ("RATE_LIMIT_ACTIVATE", "1000000/sec"),
    ("RATE_LIMIT_LICENSE_IP", "1000000/sec"),
    ("RATE_LIMIT_BILLING_USER", "1000000/sec"),
    ("RATE_LIMIT_BILLING_ORG", "1000000/sec"),
    ("RATE_LIMIT_WEBHOOK_REFUSALS", "1000000/sec"),
];

/// How long a server may take to print its address and answer `/readyz`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an admin command may run before the test gives up on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// The path of the `coditect-issuer` binary, built once per test process.
///
/// `CODITECT_ISSUER_BIN` names a prebuilt binary (e.g. a release build).
/// Otherwise cargo is asked once to build the binary into the target
/// directory this test runs from (cargo sets `CARGO_BIN_EXE_*` only for
/// binaries of the test's own package): a no-op when it is up to date, and
/// never a stale binary after the issuer changed. If cargo cannot be run
/// but a binary is there, that one is used with a warning.
pub fn issuer_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(locate_or_build_issuer).clone()
}

fn locate_or_build_issuer() -> PathBuf {
    if let Some(bin) = std::env::var_os("CODITECT_ISSUER_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "CODITECT_ISSUER_BIN={} is not a file",
            bin.display()
        );
        return bin;
    }
    let bin = crate::binaries::built_path("coditect-issuer", None);
    match crate::binaries::cargo_build("coditect-issuer", "coditect-issuer", None) {
        Ok(status) if status.success() => {}
        outcome if bin.is_file() => eprintln!(
            "warning: could not rebuild coditect-issuer ({outcome:?}); using {}",
            bin.display()
        ),
        outcome => panic!(
            "cannot build coditect-issuer ({outcome:?}) and there is no {}",
            bin.display()
        ),
    }
    assert!(
        bin.is_file(),
        "cargo built coditect-issuer but {} is missing",
        bin.display()
    );
    bin
}

/// Owned `(name, value)` pairs as the `&[(&str, &str)]` the helpers take.
pub fn env_refs(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A `coditect-issuer` command with a clean configuration, working on
/// `data_dir` (and on the PostgreSQL database a [`crate::database::TestDatabase`]
/// made for it, if any), with [`TEST_RATE_LIMITS`] and then `env` set on top.
pub fn issuer_command(data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(issuer_bin());
    for var in ISSUER_VARS {
        cmd.env_remove(var);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("STRIPE_")) {
            cmd.env_remove(name);
        }
    }
    // A test on PostgreSQL named its database in the data folder.
    if let Some(url) = crate::database::database_url_for(data_dir) {
        cmd.env("DATABASE_URL", url);
    }
    cmd.env("CODITECT_DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .current_dir(data_dir);
    // Production refuses limits as high as the tests' (it keeps its own).
    let production = env
        .iter()
        .any(|(name, value)| *name == "CODITECT_ENV" && *value == "production");
    let lifted = if production {
        &[][..]
    } else {
        TEST_RATE_LIMITS
    };
    for (name, value) in lifted.iter().chain(env) {
        cmd.env(name, value);
    }
    cmd
}

/// What a finished command printed and how it ended.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// The exit code (`None` if a signal ended it).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error (the log and error messages).
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl CommandOutput {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output parsed as JSON; panics with both streams otherwise.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }

    /// Panics (showing the output) unless the command succeeded.
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    /// Both streams, for messages that may go to either.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for CommandOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn read_all(stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut stream = stream;
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `cmd` to the end, with no input, killing it (and failing the test)
/// if it runs longer than `timeout`.
pub fn run_with_timeout(cmd: Command, timeout: Duration) -> CommandOutput {
    run_process(cmd, None, timeout)
}

/// Runs `cmd` to the end with `stdin` as its input (none: `/dev/null`),
/// killing it (and failing the test) after `timeout`.
pub fn run_process(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> CommandOutput {
    let started = Instant::now();
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // A process that exits without reading makes this fail: not our concern.
        let _ = pipe.write_all(input);
    }
    let stdout = read_all(child.stdout.take().expect("stdout is piped"));
    let stderr = read_all(child.stderr.take().expect("stderr is piped"));
    let status: Option<ExitStatus> = loop {
        match child.try_wait().expect("waiting for a child process") {
            Some(status) => break Some(status),
            None if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let output = CommandOutput {
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    };
    assert!(
        status.is_some(),
        "{cmd:?} still ran after {timeout:?}; killed it\n{output}"
    );
    output
}

/// Runs an admin sub-command (`license create …`) on `data_dir`.
pub fn admin(data_dir: &Path, args: &[&str]) -> CommandOutput {
    admin_with_env(data_dir, args, &[])
}

/// Runs an admin sub-command with extra environment variables.
pub fn admin_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> CommandOutput {
    let mut cmd = issuer_command(data_dir, env);
    cmd.args(args);
    run_with_timeout(cmd, COMMAND_TIMEOUT)
}

/// A license made with `license create --json`.
#[derive(Debug, Clone)]
pub struct CreatedLicense {
    /// Its id.
    pub id: String,
    /// Its key (`CODITECT-PILOT-…`), shown only at creation.
    pub key: String,
    /// Everything the command printed.
    pub json: Value,
}

/// Creates a license with the admin command; `args` are the options after
/// `license create` (without `--json`).
pub fn create_license(data_dir: &Path, args: &[&str]) -> CreatedLicense {
    let mut all = vec!["license", "create"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = admin(data_dir, &all);
    out.assert_success();
    let json = out.json();
    let text = |field: &str| {
        json[field]
            .as_str()
            .unwrap_or_else(|| panic!("`license create --json` has no `{field}`:\n{out}"))
            .to_owned()
    };
    CreatedLicense {
        id: text("id"),
        key: text("key"),
        json: json.clone(),
    }
}

/// `license show ID --json`.
pub fn show_license(data_dir: &Path, id: &str) -> Value {
    let out = admin(data_dir, &["license", "show", id, "--json"]);
    out.assert_success();
    out.json()
}

/// An HTTP response, read whole.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body as text.
    pub body: String,
    /// `Retry-After`, if any.
    pub retry_after: Option<u64>,
}

impl HttpResponse {
    /// The body as JSON; panics with the body otherwise.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of a {} response is not JSON ({e}): {}",
                self.status, self.body
            )
        })
    }

    /// Asserts the status; returns the JSON body.
    pub fn expect_status(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {}: {}",
            self.status, self.body
        );
        self.json()
    }

    /// Asserts an RFC 9457 problem with this status and `code`; returns it.
    pub fn expect_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status, status,
            "expected HTTP {status} `{code}`, got {}: {}",
            self.status, self.body
        );
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/problem+json"),
            "a problem is application/problem+json: {}",
            self.body
        );
        let p = self.json();
        assert_eq!(p["code"], code, "{p}");
        assert_eq!(p["status"], status, "{p}");
        assert_eq!(p["type"], format!("urn:coditect:problem:{code}"), "{p}");
        for field in ["title", "detail"] {
            assert!(
                p[field].as_str().is_some_and(|s| !s.is_empty()),
                "a problem has a `{field}`: {p}"
            );
        }
        let lower = self.body.to_ascii_lowercase();
        for internal in ["sqlite", "rusqlite", "panicked", "/src/", "r2d2"] {
            assert!(!lower.contains(internal), "internals leak: {p}");
        }
        p
    }
}

/// A blocking HTTP client for one server; cheap to clone into threads.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base_url: String,
    /// Sent with every request (`Authorization`, say).
    headers: Vec<(String, String)>,
}

impl Client {
    /// A client for `base_url` (`http://127.0.0.1:PORT`), without proxies
    /// and with every status returned as a response.
    pub fn new(base_url: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Client {
            agent: config.into(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            headers: Vec::new(),
        }
    }

    /// This client, sending `name: value` with every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// This client, signed in: `Authorization: Bearer <token>`.
    pub fn with_bearer(self, token: &str) -> Self {
        self.with_header("Authorization", &format!("Bearer {token}"))
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn read(
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<HttpResponse, ureq::Error> {
        let mut resp = resp?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = resp.body_mut().read_to_string()?;
        Ok(HttpResponse {
            status,
            content_type,
            body,
            retry_after,
        })
    }

    /// `GET path`; `Err` only for transport failures.
    pub fn try_get(&self, path: &str) -> Result<HttpResponse, ureq::Error> {
        let mut req = self.agent.get(self.url(path));
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        Self::read(req.call())
    }

    /// `POST path` with a raw body; `Err` only for transport failures.
    pub fn try_post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Result<HttpResponse, ureq::Error> {
        let mut req = self
            .agent
            .post(self.url(path))
            .header("Content-Type", content_type);
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        Self::read(req.send(body))
    }

    /// `POST path` with a JSON body; `Err` only for transport failures.
    pub fn try_post_json(&self, path: &str, body: &Value) -> Result<HttpResponse, ureq::Error> {
        self.try_post_raw(path, "application/json", &body.to_string())
    }

    /// `GET path`; panics on a transport failure.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `POST path` with JSON; panics on a transport failure.
    pub fn post_json(&self, path: &str, body: &Value) -> HttpResponse {
        self.try_post_json(path, body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// `POST path` with a raw body; panics on a transport failure.
    pub fn post_raw(&self, path: &str, content_type: &str, body: &str) -> HttpResponse {
        self.try_post_raw(path, content_type, body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }
}

/// A running `coditect-issuer serve` on a free loopback port. Dropping it
/// kills the process (SIGKILL) and reaps it.
pub struct IssuerServer {
    child: Option<Child>,
    client: Client,
    log: Arc<Mutex<Vec<String>>>,
}

/// The address in the start-up log line `listening on http://ADDR`.
fn listening_addr(line: &str) -> Option<String> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok_and(|p| p != 0))
        .then_some(addr)
}

impl IssuerServer {
    /// Starts a server on `data_dir` with the default (development)
    /// configuration and waits until `/readyz` answers 200.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with_env(data_dir, &[])
    }

    /// Like [`IssuerServer::start`], with extra environment variables.
    pub fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(data_dir, &["serve", "--bind", "127.0.0.1:0"], env)
    }

    /// Starts the issuer with these arguments (a `serve` that prints its
    /// address: `--bind 127.0.0.1:0`, or `PORT` in `env`) and waits until
    /// `/readyz` answers 200.
    pub fn start_with_args(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = issuer_command(data_dir, env);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut addr_tx = Some(addr_tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = listening_addr(&line)
                        && let Some(tx) = addr_tx.take()
                    {
                        let _ = tx.send(addr);
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        // From here on the guard owns the process: a failed start kills it.
        let mut server = IssuerServer {
            child: Some(child),
            client: Client::new("http://0.0.0.0:0"),
            log,
        };
        let addr = match addr_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(addr) => addr,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "the issuer printed no `listening on` line within {STARTUP_TIMEOUT:?}\n{}",
                server.log()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.child.as_mut().and_then(|c| c.wait().ok());
                panic!(
                    "the issuer exited before listening ({status:?})\n{}",
                    server.log()
                )
            }
        };
        server.client = Client::new(&format!("http://{addr}"));
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(r) = self.client.try_get("/readyz")
                && r.status == 200
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "the issuer exited while starting ({status})\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "/readyz did not answer 200 within {STARTUP_TIMEOUT:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client for this server.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.client.base_url
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Asks the server to stop as a platform does (SIGTERM) and waits up
    /// to `limit` for it to exit; returns how it ended and how long that
    /// took (`None`: still running at the limit, then killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "cannot send SIGTERM to the issuer");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status, started.elapsed()));
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server at once (SIGKILL on Unix: no graceful shutdown, no
    /// chance to flush anything) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// A reader of the log that outlives a borrow of the server (the log
    /// keeps filling until the process has exited).
    pub fn log_handle(&self) -> impl Fn() -> String + use<> {
        let log = Arc::clone(&self.log);
        move || log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }

    /// The mails written to the log (development, no `SMTP_URL`) to `to`
    /// (any case) that carry a link to `path` (`/signup/verify`): those
    /// links, oldest first.
    pub fn mailed_links(&self, to: &str, path: &str) -> Vec<String> {
        mailed_links(&self.log(), to, path)
    }

    /// Waits (up to 30 s) until `count` mails with a link to `path` were
    /// written for `to`; returns the newest link.
    pub fn wait_for_mailed_link(&self, to: &str, path: &str, count: usize) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let links = self.mailed_links(to, path);
            if links.len() >= count {
                return links.last().cloned().unwrap_or_default();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no mail with a {path} link to {to}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.client.get(path)
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&self, path: &str, body: &Value) -> HttpResponse {
        self.client.post_json(path, body)
    }

    /// `POST path` with a raw body.
    pub fn post_raw(&self, path: &str, content_type: &str, body: &str) -> HttpResponse {
        self.client.post_raw(path, content_type, body)
    }
}

impl Drop for IssuerServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The links to `path` in the mails to `to` that a development issuer
/// wrote to its log `log`, oldest first.
pub fn mailed_links(log: &str, to: &str, path: &str) -> Vec<String> {
    let header = format!("to: {}", to.to_ascii_lowercase());
    let lower = log.to_ascii_lowercase();
    let mut links = Vec::new();
    let mut at = 0;
    while let Some(found) = lower[at..].find(&header) {
        let start = at + found + header.len();
        // The mail runs until the next one (or the end of the log).
        let end = lower[start..]
            .find("mail not sent")
            .map_or(log.len(), |e| start + e);
        let mail = &log[start..end];
        if mail.starts_with(['\n', '\r'])
            && let Some(p) = mail.find(&format!("{path}?"))
        {
            let from = mail[..p].rfind("http").unwrap_or(p);
            let link: String = mail[from..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            links.push(link);
        }
        at = start;
    }
    links
}

/// The hardware id (64 hex) of a machine whose machine id is `machine_id`.
pub fn hardware_id(machine_id: &str) -> String {
    HardwareId::from_machine_id(machine_id).to_hex()
}

/// The CBOR bytes of a token as it travels in JSON (base64url, no padding).
pub fn decode_token(token: &str) -> Vec<u8> {
    assert!(
        !token.contains('=') && !token.contains('+') && !token.contains('/'),
        "tokens are base64url without padding: {token}"
    );
    URL_SAFE_NO_PAD
        .decode(token)
        .unwrap_or_else(|e| panic!("token is not base64url ({e}): {token}"))
}

/// A key ring of the Ed25519 keys of a JWK Set (`{"keys":[{"kty":"OKP",…}]}`).
pub fn key_ring_from_jwks(jwks: &Value) -> KeyRing {
    let keys = jwks["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("not a JWK Set: {jwks}"));
    assert!(!keys.is_empty(), "the JWK Set has no key: {jwks}");
    let mut ring = KeyRing::new();
    for jwk in keys {
        assert_eq!(jwk["kty"], "OKP", "{jwk}");
        assert_eq!(jwk["crv"], "Ed25519", "{jwk}");
        assert_eq!(jwk["alg"], "EdDSA", "{jwk}");
        assert_eq!(jwk["use"], "sig", "{jwk}");
        let kid = jwk["kid"]
            .as_str()
            .unwrap_or_else(|| panic!("no kid: {jwk}"));
        let x = URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().unwrap_or_else(|| panic!("no x: {jwk}")))
            .unwrap_or_else(|e| panic!("x is not base64url ({e}): {jwk}"));
        let x: [u8; 32] = x
            .try_into()
            .unwrap_or_else(|_| panic!("x is not 32 bytes: {jwk}"));
        ring.insert(kid, &x)
            .unwrap_or_else(|e| panic!("key ring refuses {jwk}: {e:?}"));
    }
    ring
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        assert_eq!(
            listening_addr(
                "2026-01-01T00:00:00Z  INFO listening on http://127.0.0.1:40123 kid=\"coditect-dev\""
            )
            .as_deref(),
            Some("127.0.0.1:40123")
        );
        assert_eq!(listening_addr("listening on http://127.0.0.1:0"), None);
        assert_eq!(listening_addr("request status=200"), None);
    }
}
