//! `coditect`: the end-user command line, with the license verifier
//! embedded. The binary is a thin wrapper around [`run`].

pub mod api;
pub mod commands;
pub mod error;
pub mod format;
pub mod license;
pub mod output;
pub mod state;
pub mod system;
pub mod trust;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Printer;

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 a problem with your input or license (the message says what to do), 2 unexpected.
Environment: CODITECT_API_URL (license server), CODITECT_HOME (where coditect keeps its state), NO_COLOR.";

/// CODITECT: licensed developer tooling.
#[derive(Debug, Parser)]
#[command(
    name = "coditect",
    version = version_text(),
    about,
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// `--version`: the version, and for a build that is not the distribution
/// build, every feature that makes it one, by name (the release packaging,
/// `scripts/package-cli.sh`, refuses a binary whose version says so).
const fn version_text() -> &'static str {
    const DEV_KEYS: bool = cfg!(feature = "dev-keys");
    const TEST_HOOKS: bool = cfg!(feature = "test-hooks");
    match (DEV_KEYS, TEST_HOOKS) {
        (false, false) => env!("CARGO_PKG_VERSION"),
        (true, false) => concat!(
            env!("CARGO_PKG_VERSION"),
            " (development build: dev-keys, trusts the development signing key)"
        ),
        (false, true) => concat!(
            env!("CARGO_PKG_VERSION"),
            " (development build: test-hooks, clock and machine id from CODITECT_TEST_*)"
        ),
        (true, true) => concat!(
            env!("CARGO_PKG_VERSION"),
            " (development build: dev-keys, trusts the development signing key; test-hooks, clock and machine id from CODITECT_TEST_*)"
        ),
    }
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// License server address.
    #[arg(long, global = true, env = "CODITECT_API_URL", value_name = "URL")]
    pub server: Option<String>,
    /// Print JSON (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors.
    #[arg(long, short, global = true, conflicts_with = "json")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Activate this machine with your license key.
    Activate(ActivateArgs),
    /// License status, renewal and machines.
    #[command(subcommand)]
    License(LicenseCommand),
    /// Free this machine's seat (or another machine's with --machine) and forget the license here.
    Deactivate {
        /// Free the seat of another machine, by its activation id (see `coditect license machines`).
        #[arg(long, value_name = "ACTIVATION_ID")]
        machine: Option<String>,
    },
    /// Sign in to your CODITECT account: in the browser (Google, GitHub, or
    /// an existing browser session), or with --password.
    Login {
        /// Sign in with email and password instead of the browser.
        #[arg(long)]
        password: bool,
        /// On a machine without a browser: approve a code in a browser
        /// elsewhere (device authorization).
        #[arg(long, conflicts_with_all = ["password", "email", "password_stdin"])]
        device: bool,
        /// Account email (asked for when missing); implies --password.
        #[arg(long)]
        email: Option<String>,
        /// Read the password from standard input instead of prompting;
        /// implies --password.
        #[arg(long)]
        password_stdin: bool,
        /// Forgot the password: mail a link to choose a new one (opened in a browser).
        #[arg(long, conflicts_with = "password_stdin")]
        reset: bool,
    },
    /// Sign out.
    Logout,
    /// Set up a CODITECT project in DIR (default: the current directory).
    Init { dir: Option<PathBuf> },
    /// Show the project in DIR and the license.
    Status { dir: Option<PathBuf> },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// CODITECT-PILOT-XXXX-YYYY-ZZZZ (asked for when missing).
    pub key: Option<String>,
    /// Name this machine is shown with (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// For a machine without internet: write an activation request to FILE,
    /// for your administrator's `coditect-issuer license issue-offline`.
    #[arg(long, value_name = "FILE", conflicts_with = "token_file")]
    pub offline_request: Option<PathBuf>,
    /// Import a token file made by `coditect-issuer license issue-offline`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Plan, user, expiry, devices and token validity (works offline).
    Status,
    /// Renew the license token now.
    Renew,
    /// The machines activated on your licenses (needs `coditect login`).
    Machines,
}

/// Runs the CLI with `args`; returns the process exit code.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && args.iter().any(|a| a == "--json") => {
            // Under --json even a usage error is one JSON document.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            Printer::new(true, false).error(&error::CliError::user(
                "usage",
                first.trim_start_matches("error: "),
                Some("see `coditect --help`".to_owned()),
            ));
            return 1;
        }
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let printer = Printer::new(cli.global.json, cli.global.quiet);
    match commands::dispatch(&cli, &printer) {
        Ok(()) => 0,
        Err(err) => {
            printer.error(&err);
            err.exit_code()
        }
    }
}

/// The clap command, for completions and the man page.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
