//! Headless Chromium for the browser tests: finding Chromium and
//! chromedriver (Debian's `chromium` and `chromium-driver`, installed by
//! `.ci/run`), running chromedriver on a free port (killed when dropped),
//! and the capabilities that start a headless Chromium with a fresh profile.
//!
//! The WebDriver client itself (`fantoccini`) is a dev-dependency of the
//! browser tests; this module needs nothing but the standard library, JSON
//! and the blocking HTTP client.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver (package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver may take to answer `/status`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The two programs a browser test needs.
#[derive(Debug, Clone)]
pub struct BrowserTools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// Chromium and chromedriver, or why not. `CHROMIUM` and `CHROMEDRIVER`
/// name other binaries.
pub fn find_tools() -> Result<BrowserTools, String> {
    let pick = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let tools = BrowserTools {
        chromium: pick("CHROMIUM", CHROMIUM),
        chromedriver: pick("CHROMEDRIVER", CHROMEDRIVER),
    };
    let missing: Vec<String> = [&tools.chromium, &tools.chromedriver]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        Ok(tools)
    } else {
        Err(format!(
            "missing {} (install the Debian packages `chromium` and `chromium-driver`, as .ci/run does)",
            missing.join(" and ")
        ))
    }
}

/// Whether this run is CI's, where a missing browser fails (the one rule:
/// [`crate::in_ci`]).
pub fn in_ci() -> bool {
    crate::in_ci()
}

/// The browser tools, or `None` after a loud message when they are missing
/// outside CI. In CI (`CI=true`) missing tools fail the test.
pub fn tools_or_skip(test: &str) -> Option<BrowserTools> {
    match find_tools() {
        Ok(tools) => Some(tools),
        Err(why) if in_ci() => panic!("{test}: cannot run the browser test in CI: {why}"),
        Err(why) => {
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPED {test}: {why}\n\
                 !!! (with CI=true this is a failure)\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            None
        }
    }
}

/// A running chromedriver on a free loopback port; killed and reaped when
/// dropped, also when the test panics.
pub struct ChromeDriver {
    child: Option<Child>,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn collect(stream: impl Read + Send + 'static, log: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}

impl ChromeDriver {
    /// Starts chromedriver and waits until it is ready for sessions.
    pub fn start(tools: &BrowserTools) -> ChromeDriver {
        // A port found free can be taken before chromedriver binds it: try
        // a few.
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(&tools.chromedriver);
            cmd.arg(format!("--port={port}"))
                .arg("--log-level=WARNING")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", tools.chromedriver.display()));
            let log = Arc::new(Mutex::new(Vec::new()));
            if let Some(out) = child.stdout.take() {
                collect(out, Arc::clone(&log));
            }
            if let Some(err) = child.stderr.take() {
                collect(err, Arc::clone(&log));
            }
            let mut driver = ChromeDriver {
                child: Some(child),
                port,
                log,
            };
            if driver.wait_ready() {
                return driver;
            }
            last_log = driver.log();
        }
        panic!("chromedriver did not become ready within {STARTUP_TIMEOUT:?}\n{last_log}");
    }

    fn wait_ready(&mut self) -> bool {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            if let Ok(mut resp) = agent.get(format!("{}/status", self.url())).call()
                && let Ok(body) = resp.body_mut().read_to_string()
                && serde_json::from_str::<Value>(&body)
                    .is_ok_and(|v| v["value"]["ready"] == Value::Bool(true))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The WebDriver endpoint, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What chromedriver printed so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// WebDriver capabilities for a headless Chromium with its profile in
/// `profile_dir` (a fresh directory per session: no cookies, no cache).
pub fn chromium_capabilities(tools: &BrowserTools, profile_dir: &Path) -> Map<String, Value> {
    let args = [
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1280,900".to_owned(),
        format!("--user-data-dir={}", profile_dir.display()),
    ];
    let caps = json!({
        "browserName": "chrome",
        "pageLoadStrategy": "normal",
        "goog:chromeOptions": {
            "binary": tools.chromium.display().to_string(),
            "args": args,
        },
    });
    match caps {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
