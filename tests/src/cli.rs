//! Running the `coditect` CLI in end-to-end tests: finding (and if needed
//! building) a test build of it, a runner with its own state directory and a
//! clean environment, license state files written by hand (tokens signed
//! with the development key), and ports on which nothing answers.
//!
//! The binary is built with the `dev-keys` and `test-hooks` features: it
//! trusts the development key, and `CODITECT_TEST_NOW` / `CODITECT_TEST_MACHINE_ID`
//! stand in for its clock and machine id, which is how a test moves time or
//! plays another machine.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use verifier::{HardwareId, LicenseClaims};

use crate::issuer::{CommandOutput, run_process};
use crate::{dev_key_ring, dev_signer};

/// The features of the test build of the CLI.
pub const CLI_FEATURES: &str = "dev-keys,test-hooks";

/// The machine id a [`Cli`] plays unless told otherwise.
pub const DEFAULT_MACHINE_ID: &str = "coditect-tests-machine-a";

/// How long one CLI command may run before the test gives up on it (the
/// CLI's own network timeout is 20 s).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(45);

/// Variables removed from every CLI process besides `CODITECT_*`: colour,
/// and proxies (the tests talk to loopback only).
const CLEARED_VARS: &[&str] = &[
    "NO_COLOR",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// A directory under the system temporary directory, removed on drop.
///
/// (The helpers of this library cannot use `tempfile`, a dev-dependency.)
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// A new empty directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "{prefix}{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        // Canonical, so that paths the CLI prints (canonicalised) match.
        let path = path.canonicalize().unwrap_or(path);
        ScratchDir { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The path of a `coditect` binary built with [`CLI_FEATURES`], built once
/// per test process.
///
/// `CODITECT_CLI_BIN` names a prebuilt one. Otherwise cargo builds it into
/// the test builds' own target folder (`<target>/e2e/<profile>/coditect`,
/// never where `cargo build` puts the real CLI), and the result is
/// hard-linked to `<target>/tmp/coditect-tests/coditect`, which another
/// test process's build cannot change under a running test. The binary is checked
/// before use: it must say it is a development build and obey
/// `CODITECT_TEST_MACHINE_ID`.
pub fn cli_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(locate_or_build_cli).clone()
}

fn locate_or_build_cli() -> PathBuf {
    if let Some(bin) = std::env::var_os("CODITECT_CLI_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "CODITECT_CLI_BIN={} is not a file",
            bin.display()
        );
        if let Err(why) = check_test_build(&bin) {
            panic!("CODITECT_CLI_BIN={}: {why}", bin.display());
        }
        return bin;
    }
    let (target_dir, _) = crate::binaries::target_dir_and_profile();
    let built = crate::binaries::built_path("coditect", Some(CLI_FEATURES));
    let link_dir = target_dir.join("tmp").join("coditect-tests");
    let link = link_dir.join(format!("coditect{}", std::env::consts::EXE_SUFFIX));
    let mut last_problem = String::new();
    // Someone else may rebuild the CLI without the features between our
    // build and the link; the check catches that, and we try again.
    for _ in 0..3 {
        build_cli(&built);
        std::fs::create_dir_all(&link_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", link_dir.display()));
        let staging = link_dir.join(format!("coditect.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&staging);
        if std::fs::hard_link(&built, &staging).is_err() {
            std::fs::copy(&built, &staging).unwrap_or_else(|e| {
                panic!(
                    "cannot copy {} to {}: {e}",
                    built.display(),
                    staging.display()
                )
            });
        }
        std::fs::rename(&staging, &link).unwrap_or_else(|e| {
            panic!(
                "cannot rename {} to {}: {e}",
                staging.display(),
                link.display()
            )
        });
        match check_test_build(&link) {
            Ok(()) => return link,
            Err(why) => last_problem = why,
        }
    }
    panic!(
        "{} is not a test build of the CLI after three builds: {last_problem}",
        link.display()
    )
}

fn build_cli(bin: &Path) {
    let status = crate::binaries::cargo_build("coditect-cli", "coditect", Some(CLI_FEATURES));
    assert!(
        matches!(&status, Ok(s) if s.success()),
        "cannot build the CLI: `cargo build -p coditect-cli --bin coditect --features {CLI_FEATURES}` ended with {status:?}"
    );
    assert!(
        bin.is_file(),
        "cargo built coditect but {} is missing",
        bin.display()
    );
}

/// Whether `bin` trusts the development key and obeys the test hooks.
fn check_test_build(bin: &Path) -> Result<(), String> {
    let scratch = ScratchDir::new("coditect-cli-probe-");
    let run = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        clean_env(&mut cmd);
        cmd.args(args)
            .env("CODITECT_HOME", scratch.path().join("home"))
            .env("CODITECT_TEST_MACHINE_ID", "coditect-tests-probe")
            .current_dir(scratch.path());
        run_process(cmd, None, CLI_TIMEOUT)
    };
    let version = run(&["--version"]);
    if !version.success() || !version.stdout.contains("development build") {
        return Err(format!(
            "`coditect --version` does not say it is a development build (built without `dev-keys`?):\n{version}"
        ));
    }
    let request = scratch.path().join("probe-request.json");
    let probe = run(&[
        "--json",
        "activate",
        "CODITECT-PILOT-TEST-PRBE-2222",
        "--offline-request",
        request.to_str().unwrap_or("probe-request.json"),
    ]);
    let expected = HardwareId::from_machine_id("coditect-tests-probe").to_hex();
    let got = serde_json::from_str::<Value>(&probe.stdout)
        .ok()
        .and_then(|v| v["hardware_id"].as_str().map(str::to_owned));
    if got.as_deref() != Some(expected.as_str()) {
        return Err(format!(
            "the binary ignores CODITECT_TEST_MACHINE_ID (built without `test-hooks`?):\n{probe}"
        ));
    }
    Ok(())
}

/// Removes every variable that could change what the CLI does.
fn clean_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("CODITECT_")) {
            cmd.env_remove(name);
        }
    }
    for var in CLEARED_VARS {
        cmd.env_remove(var);
    }
}

/// One user of the CLI on one machine: a state directory (`CODITECT_HOME`)
/// of its own, a machine id, and the environment a test gives it; nothing
/// else of the test's environment that the CLI reads.
#[derive(Debug)]
pub struct Cli {
    home: PathBuf,
    _scratch: Option<ScratchDir>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    timeout: Duration,
}

impl Default for Cli {
    fn default() -> Self {
        Self::new()
    }
}

impl Cli {
    /// A user with a new, empty state directory (created by the CLI itself
    /// on first write), playing [`DEFAULT_MACHINE_ID`].
    pub fn new() -> Self {
        let scratch = ScratchDir::new("coditect-cli-home-");
        let home = scratch.path().join("home");
        let cwd = scratch.path().to_path_buf();
        let mut cli = Cli::with_home(&home);
        cli.cwd = cwd;
        cli._scratch = Some(scratch);
        cli
    }

    /// A user whose state lives in `home` (kept after the test).
    pub fn with_home(home: &Path) -> Self {
        let mut cli = Cli {
            home: home.to_path_buf(),
            _scratch: None,
            env: Vec::new(),
            cwd: home.parent().unwrap_or(home).to_path_buf(),
            timeout: CLI_TIMEOUT,
        };
        cli.set_env("CODITECT_TEST_MACHINE_ID", DEFAULT_MACHINE_ID);
        cli
    }

    /// `CODITECT_HOME`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `CODITECT_HOME/license.json`.
    pub fn license_file(&self) -> PathBuf {
        self.home.join("license.json")
    }

    /// `CODITECT_HOME/projects.json`.
    pub fn projects_file(&self) -> PathBuf {
        self.home.join("projects.json")
    }

    /// The working directory of the commands (the parent of the home for
    /// [`Cli::new`]): relative paths given to the CLI land there.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Sets a variable for every following command.
    pub fn set_env(&mut self, name: &str, value: &str) -> &mut Self {
        self.remove_env(name);
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Unsets a variable the test set.
    pub fn remove_env(&mut self, name: &str) -> &mut Self {
        self.env.retain(|(n, _)| n != name);
        self
    }

    /// Plays the machine whose machine id is `machine_id`.
    pub fn set_machine(&mut self, machine_id: &str) -> &mut Self {
        self.set_env("CODITECT_TEST_MACHINE_ID", machine_id)
    }

    /// Builder form of [`Cli::set_machine`].
    pub fn machine(mut self, machine_id: &str) -> Self {
        self.set_machine(machine_id);
        self
    }

    /// The machine id this user plays.
    pub fn machine_id(&self) -> &str {
        self.env
            .iter()
            .find(|(n, _)| n == "CODITECT_TEST_MACHINE_ID")
            .map_or(DEFAULT_MACHINE_ID, |(_, v)| v.as_str())
    }

    /// Sets the CLI's clock (`CODITECT_TEST_NOW`), or gives it back the
    /// real one with `None`.
    pub fn set_now(&mut self, now: Option<u64>) -> &mut Self {
        match now {
            Some(t) => self.set_env("CODITECT_TEST_NOW", &t.to_string()),
            None => self.remove_env("CODITECT_TEST_NOW"),
        }
    }

    /// Builder form of [`Cli::set_now`].
    pub fn now(mut self, now: u64) -> Self {
        self.set_now(Some(now));
        self
    }

    /// The command, ready to run `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with_env(args, &[])
    }

    /// The command with variables set on top of this user's.
    pub fn command_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(cli_bin());
        self.configure(&mut cmd, env);
        cmd.args(args);
        cmd
    }

    /// This user's environment and working directory, `env` on top.
    fn configure(&self, cmd: &mut Command, env: &[(&str, &str)]) {
        clean_env(cmd);
        cmd.env("CODITECT_HOME", &self.home).current_dir(&self.cwd);
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
    }

    /// Runs `coditect ARGS` with its standard input, output and error on a
    /// pseudo-terminal, through util-linux `script` (in Debian's essential
    /// `bsdutils`). What the terminal showed (both streams, `\r\n` line
    /// ends) is in `stdout`.
    pub fn run_in_terminal(&self, args: &[&str], env: &[(&str, &str)]) -> CommandOutput {
        let bin = cli_bin();
        let line = std::iter::once(bin.to_string_lossy().into_owned())
            .chain(args.iter().map(|a| (*a).to_owned()))
            .map(|word| shell_quote(&word))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        self.configure(&mut cmd, env);
        cmd.env("SHELL", "/bin/sh")
            .args(["--quiet", "--return", "--command"])
            .arg(line)
            .arg("/dev/null");
        run_process(cmd, None, self.timeout)
    }

    /// Runs `coditect ARGS` with no input.
    pub fn run(&self, args: &[&str]) -> CommandOutput {
        run_process(self.command(args), None, self.timeout)
    }

    /// Runs `coditect ARGS` with extra variables for this command only.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> CommandOutput {
        run_process(self.command_with_env(args, env), None, self.timeout)
    }

    /// Runs `coditect ARGS` with `input` on standard input.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> CommandOutput {
        run_process(self.command(args), Some(input.as_bytes()), self.timeout)
    }

    /// The claims of the token in `license.json`, authenticated with the
    /// development key (time and machine not judged).
    pub fn stored_claims(&self) -> LicenseClaims {
        stored_claims(&self.license_file())
    }

    /// `license.json` as JSON.
    pub fn stored_state(&self) -> Value {
        let text = std::fs::read_to_string(self.license_file())
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.license_file().display()));
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {text}",
                self.license_file().display()
            )
        })
    }

    /// Writes `license.json` as the CLI would (see [`license_state`]).
    pub fn write_state(&self, state: &Value) {
        write_state(&self.home, state);
    }
}

/// The claims of the token of a `license.json`.
pub fn stored_claims(license_file: &Path) -> LicenseClaims {
    let text = std::fs::read_to_string(license_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", license_file.display()));
    let state: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e})", license_file.display()));
    let token = state["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {}: {text}", license_file.display()));
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .unwrap_or_else(|e| panic!("the stored token is not base64url ({e}): {token}"));
    verifier::authenticate(&bytes, &dev_key_ring())
        .unwrap_or_else(|e| panic!("the stored token does not authenticate: {e:?}"))
        .claims
}

/// A token for `claims` signed with the development key, base64url as the
/// CLI stores it.
pub fn dev_token(claims: &LicenseClaims) -> String {
    let bytes = dev_signer()
        .sign(claims)
        .expect("the development key signs the claims");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The content of a `license.json` (format `coditect-license-state-v1`)
/// holding `token`, last verified at `iat`, with the clock high-water mark
/// `high_water`. `server` is where a renewal would go.
pub fn license_state(
    license_key: Option<&str>,
    token: &str,
    server: &str,
    last_verified_at: u64,
    high_water: u64,
) -> Value {
    json!({
        "format": "coditect-license-state-v1",
        "license_key": license_key,
        "token": token,
        "server": server,
        "machine_name": "test-machine",
        "last_verified_at": last_verified_at,
        "high_water": high_water,
        "refused": null,
    })
}

/// Writes `CODITECT_HOME/license.json` owner-only, as the CLI does.
pub fn write_state(home: &Path, state: &Value) {
    std::fs::create_dir_all(home)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", home.display()));
    let path = home.join("license.json");
    let text = serde_json::to_string_pretty(state).expect("JSON serialises");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
    }
}

/// A loopback port on which nothing listens (bound, then released: a
/// connection to it is refused at once).
pub fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// `http://127.0.0.1:PORT` of a port on which nothing listens.
pub fn unreachable_server() -> String {
    format!("http://127.0.0.1:{}", unused_port())
}

/// A loopback port that counts the connections made to it and closes each
/// one at once, so a client that tries gets an error quickly and a test can
/// prove that no connection was attempted.
pub struct ConnectionTrap {
    listener: Arc<TcpListener>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Default for ConnectionTrap {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectionTrap {
    /// A trap on a free port.
    pub fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let listener = Arc::new(listener);
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (listener, accepted, stop) = (
                Arc::clone(&listener),
                Arc::clone(&accepted),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if !drain(&listener, &accepted) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            })
        };
        ConnectionTrap {
            listener,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!(
            "http://{}",
            self.listener.local_addr().expect("a bound listener")
        )
    }

    /// Connections made so far, including any still waiting to be accepted.
    pub fn connections(&self) -> usize {
        drain(&self.listener, &self.accepted);
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Accepts and closes what is waiting; whether there was anything.
fn drain(listener: &TcpListener, accepted: &AtomicUsize) -> bool {
    let mut any = false;
    while let Ok((stream, _)) = listener.accept() {
        accepted.fetch_add(1, Ordering::SeqCst);
        close_now(stream);
        any = true;
    }
    any
}

fn close_now(stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

impl Drop for ConnectionTrap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `word` quoted for a POSIX shell.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Whether `text` holds an ANSI escape sequence.
pub fn has_ansi(text: &str) -> bool {
    text.contains('\u{1b}')
}

/// Waits (polling, at most three seconds) until the real clock has passed
/// `t`: a precondition for tests that need a token with a later `iat`, not
/// an assertion.
pub fn wait_until_after(t: u64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while crate::issuer::unix_now() <= t {
        assert!(
            Instant::now() < deadline,
            "the clock did not pass {t} within 3 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
