//! One module per command; this one dispatches and holds what they share.

mod activate;
mod browser_login;
mod deactivate;
mod project;
mod session;
mod status;

use crate::error::{CliError, CliResult};
use crate::format::format_time;
use crate::license::{Context, Licensed, Renew};
use crate::output::Printer;
use crate::state::Paths;
use crate::{Cli, Command, LicenseCommand, api};

pub fn dispatch(cli: &Cli, printer: &Printer) -> CliResult<()> {
    let server = cli.global.server.as_deref();
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = crate::command();
            clap_complete::generate(*shell, &mut cmd, "coditect", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(crate::command())
            .render(&mut std::io::stdout())
            .map_err(|e| CliError::unexpected("io", e.to_string())),
        command => {
            let paths = Paths::resolve()?;
            let ctx = Context {
                paths: &paths,
                printer,
                server,
            };
            match command {
                Command::Activate(args) => activate::run(&ctx, args),
                Command::License(LicenseCommand::Status) => status::license_status(&ctx),
                Command::License(LicenseCommand::Renew) => status::renew(&ctx),
                Command::License(LicenseCommand::Machines) => session::machines(&ctx),
                Command::Deactivate { machine } => deactivate::run(&ctx, machine.as_deref()),
                Command::Login {
                    email, reset: true, ..
                } => session::reset(&ctx, email.as_deref()),
                Command::Login { device: true, .. } => browser_login::device(&ctx),
                Command::Login {
                    password: false,
                    email: None,
                    password_stdin: false,
                    ..
                } => browser_login::run(&ctx),
                Command::Login {
                    email,
                    password_stdin,
                    ..
                } => session::login(&ctx, email.as_deref(), *password_stdin),
                Command::Logout => session::logout(&ctx),
                Command::Init { dir } => project::init(&ctx, dir.as_deref()),
                Command::Status { dir } => project::status(&ctx, dir.as_deref()),
                Command::Completions { .. } | Command::Man => Ok(()),
            }
        }
    }
}

/// The license check of a licensed command, telling the user about a
/// renewal that could not happen.
pub fn licensed(ctx: &Context<'_>) -> CliResult<Licensed> {
    let licensed = crate::license::ensure(ctx, Renew::WhenDue)?;
    if let Some(why) = &licensed.renewal_failed {
        ctx.printer.warn(&format!(
            "the license is due for renewal but the server could not be reached ({why}); it stays valid until {}",
            format_time(licensed.claims.expires_at.min(licensed.claims.license_expires_at))
        ));
    }
    Ok(licensed)
}

/// The server to talk to for a new activation or login.
pub fn server_or_default(server: Option<&str>) -> String {
    server.unwrap_or(api::DEFAULT_SERVER).to_owned()
}
