//! A real SMTP listener for the mail tests: `tests/python/smtp_sink.py`
//! (aiosmtpd) as a child process on a loopback port. It stores every
//! message it accepts as a file in a directory, which this side reads back.
//! The listener can be stopped and started again on the same port and
//! directory (an outage of the mail server), and is killed when its guard
//! is dropped, even when the test panics.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The interpreter the python tests use.
const PYTHON: &str = "python3";

/// How long the listener may take to start.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A free loopback port: bound and released at once, so that nothing
/// listens there until a test starts something on it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The issuer's `SMTP_URL` for a plain (no TLS) listener on `port`.
pub fn smtp_url(port: u16) -> String {
    format!("smtp://127.0.0.1:{port}?tls=none")
}

fn sink_script() -> PathBuf {
    crate::repo_file("tests/python/smtp_sink.py")
}

fn python_command() -> Command {
    let mut cmd = Command::new(PYTHON);
    // Keep the source tree clean of __pycache__.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

/// Whether `python3` with aiosmtpd can run the listener. If not: under CI
/// (`CI` set) this panics; elsewhere it prints a notice and returns false,
/// and the caller skips.
pub fn listener_available(test: &str) -> bool {
    let problem = match python_command()
        .args(["-c", "import aiosmtpd.smtp"])
        .output()
    {
        Err(e) => format!("cannot run `{PYTHON}`: {e}"),
        Ok(out) if !out.status.success() => format!(
            "`{PYTHON} -c 'import aiosmtpd.smtp'` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => return true,
    };
    let help = "install Python 3 and `pip install -r tests/python/requirements.txt`";
    crate::missing_tool(test, &problem, help);
    false
}

/// One message the listener accepted.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// `MAIL FROM` of the envelope.
    pub mail_from: String,
    /// `RCPT TO` of the envelope.
    pub rcpt_tos: Vec<String>,
    /// Header fields in order, decoded.
    pub headers: Vec<(String, String)>,
    /// The decoded text body (`\n` line ends); `None` for multipart.
    pub body: Option<String>,
    /// The message as it came over the wire.
    pub raw: String,
}

impl ReceivedMail {
    /// The first header field named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The text body; panics for a multipart message.
    pub fn text(&self) -> &str {
        self.body
            .as_deref()
            .unwrap_or_else(|| panic!("not a single-part text message:\n{}", self.raw))
    }

    fn read(json_path: &Path) -> ReceivedMail {
        let text = std::fs::read_to_string(json_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", json_path.display()));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", json_path.display()));
        let raw_path = json_path.with_extension("eml");
        let raw = std::fs::read(&raw_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", raw_path.display()));
        let str_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        ReceivedMail {
            mail_from: str_of(&v["mail_from"]),
            rcpt_tos: v["rcpt_tos"]
                .as_array()
                .map(|a| a.iter().map(str_of).collect())
                .unwrap_or_default(),
            headers: v["headers"]
                .as_array()
                .map(|a| a.iter().map(|h| (str_of(&h[0]), str_of(&h[1]))).collect())
                .unwrap_or_default(),
            body: v["body"].as_str().map(str::to_owned),
            raw: String::from_utf8_lossy(&raw).into_owned(),
        }
    }
}

/// The running (or stopped) listener.
pub struct SmtpSink {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    /// Starts a listener on a free port, storing messages in `dir`.
    pub fn start(dir: &Path) -> SmtpSink {
        Self::start_on(dir, 0)
    }

    /// Starts a listener on `port` (0: any free one), storing messages in
    /// `dir`; returns once it accepts connections.
    pub fn start_on(dir: &Path, port: u16) -> SmtpSink {
        let mut sink = SmtpSink {
            child: None,
            port,
            dir: dir.to_path_buf(),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        sink.spawn();
        sink
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the listener is already running");
        let mut cmd = python_command();
        cmd.arg(sink_script())
            .arg("--dir")
            .arg(&self.dir)
            .arg("--port")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        collect_lines(stdout, Arc::clone(&self.log), Some(tx));
        collect_lines(stderr, Arc::clone(&self.log), None);
        let port = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(port) => port,
            Err(e) => {
                let status = self.child.as_mut().and_then(|c| c.try_wait().ok());
                self.stop();
                panic!(
                    "the SMTP listener did not start ({e}; exit: {status:?})\n{}",
                    self.log()
                );
            }
        };
        assert!(
            self.port == 0 || self.port == port,
            "asked for port {}, listening on {port}",
            self.port
        );
        self.port = port;
    }

    /// The port it listens (or listened) on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The issuer's `SMTP_URL` for this listener.
    pub fn url(&self) -> String {
        smtp_url(self.port)
    }

    /// Whether the listener is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the listener (nothing listens on the port afterwards) and
    /// waits until it is gone. The messages stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the listener again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("cannot read {}: {e}", self.dir.display()),
        };
        paths.sort();
        paths.iter().map(|p| ReceivedMail::read(p)).collect()
    }

    /// Waits until at least `n` messages have arrived; panics (with the
    /// listener's output) when `timeout` passes first.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived within {timeout:?}\n--- listener output\n{}",
                messages.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the listener printed.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Collects the lines of `stream` into `log`; the port of the first
/// `listening on 127.0.0.1:PORT` line goes to `ready`.
fn collect_lines(
    stream: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    mut ready: Option<mpsc::Sender<u16>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(port) = line
                .strip_prefix("listening on 127.0.0.1:")
                .and_then(|p| p.trim().parse::<u16>().ok())
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(port);
            }
            log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}
