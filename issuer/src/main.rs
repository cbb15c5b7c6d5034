//! `coditect-issuer`: the license issuer's HTTP service and admin commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use coditect_issuer::{admin, http, serve};

/// CODITECT license issuer.
///
/// Configuration comes from environment variables (see .env.example); with
/// none set it runs for development on SQLite in the user's data directory.
#[derive(Parser)]
#[command(name = "coditect-issuer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve {
        /// Address to listen on (default: 0.0.0.0:$PORT if PORT is set, else 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Copy the SQLite database to a new file, consistently, while the server may be running.
    Backup {
        /// The new file (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Licenses.
    #[command(subcommand)]
    License(LicenseCommand),
    /// The outgoing mail (license keys) waiting in or sent from the outbox.
    #[command(subcommand)]
    Mail(MailCommand),
    /// Print the OpenAPI spec (JSON) that the server serves at /openapi.json.
    Openapi,
    /// Show the audit log (oldest first).
    Audit {
        /// Only events since then: a duration back from now (24h), a date or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only this event (signup, login, failed_login, lockout, activate, …).
        #[arg(long)]
        event: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// The pilot's figures (signups, activation, payments, revenue, churn, machines) against its targets.
    Stats {
        /// Only the period since then: a duration back from now (30days), a date or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a new Ed25519 signing key pair; prints its kid and public JWK.
    Generate {
        /// Key id (default: derived from the public key).
        #[arg(long)]
        kid: Option<String>,
        /// Where to write the private key (default: DATA_DIR/keys/<kid>.pem).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the signing key in use and the keys in DATA_DIR/keys.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MailCommand {
    /// List the outbox, oldest first (never the bodies: they hold license keys).
    List {
        /// Only mail not sent yet (waiting or given up).
        #[arg(long)]
        unsent: bool,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Send an unsent mail again now, with a fresh count of attempts.
    Retry {
        /// The mail's id (from `mail list`).
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LicenseCommand {
    /// Create a license and print its key (shown only now).
    Create {
        #[arg(long)]
        email: String,
        /// Plan: pilot-starter or pilot-professional.
        #[arg(long)]
        tier: String,
        /// End of the license: a date (2027-03-24), an RFC 3339 time, or a
        /// duration from now (90days). Default: one year.
        #[arg(long)]
        expires: Option<String>,
        /// Machines allowed at once (default: the plan's).
        #[arg(long)]
        max_devices: Option<u32>,
        /// Organization name to attach the license to.
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List licenses.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one license (by id or key) with its machines.
    Show {
        /// License id or license key.
        license: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a license: renewals are refused from now on.
    Revoke {
        /// License id or license key.
        license: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Free a machine's seat (an offline one too, before its token
    /// expires); never counted as one of the holder's seat transfers.
    Free {
        /// License id or license key.
        license: String,
        /// The activation to free (see `license show`).
        #[arg(long, value_name = "ID")]
        activation: String,
        #[arg(long)]
        json: bool,
    },
    /// Answer an offline activation request (from `coditect activate --offline-request`).
    IssueOffline {
        /// The request file.
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// Where to write the token file for `coditect activate --token-file`.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// How long the token is good for (default: until the license ends).
        #[arg(long, value_name = "DURATION")]
        valid_for: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    serve::init_logging();
    let result = match cli.command {
        Command::Serve { bind } => serve::run(bind),
        Command::Migrate => admin::migrate(),
        Command::Backup { out, json } => admin::backup(&out, json),
        Command::Audit {
            since,
            event,
            limit,
            json,
        } => admin::audit_list(since.as_deref(), event.as_deref(), limit, json),
        Command::Stats { since, json } => admin::stats(since.as_deref(), json),
        Command::Mail(MailCommand::List {
            unsent,
            limit,
            json,
        }) => admin::mail_list(unsent, limit, json),
        Command::Mail(MailCommand::Retry { id, json }) => admin::mail_retry(&id, json),
        Command::Openapi => {
            // `servers` names PUBLIC_BASE_URL when it is set, as `serve` does.
            let spec = match std::env::var("PUBLIC_BASE_URL") {
                Ok(base) if !base.trim().is_empty() => {
                    http::spec::document_json(base.trim().trim_end_matches('/'))
                }
                _ => http::spec_json(),
            };
            println!("{spec}");
            Ok(())
        }
        Command::Keys(KeysCommand::Generate { kid, out, json }) => {
            admin::keys_generate(kid.as_deref(), out, json)
        }
        Command::Keys(KeysCommand::List { json }) => admin::keys_list(json),
        Command::License(cmd) => match cmd {
            LicenseCommand::Create {
                email,
                tier,
                expires,
                max_devices,
                org,
                json,
            } => admin::license_create(&admin::CreateArgs {
                email,
                tier,
                expires,
                max_devices,
                org,
                json,
            }),
            LicenseCommand::List { json } => admin::license_list(json),
            LicenseCommand::Show { license, json } => admin::license_show(&license, json),
            LicenseCommand::Revoke {
                license,
                reason,
                json,
            } => admin::license_revoke(&license, reason.as_deref(), json),
            LicenseCommand::Free {
                license,
                activation,
                json,
            } => admin::license_free(&license, &activation, json),
            LicenseCommand::IssueOffline {
                request,
                out,
                valid_for,
            } => admin::issue_offline(&request, &out, valid_for.as_deref()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
