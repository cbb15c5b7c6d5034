//! One module per command; this one dispatches and holds what they share.

mod activate;
mod deactivate;
mod project;
mod session;
mod status;

use crate::error::{CliError, CliResult};
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
                    email,
                    password_stdin,
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

/// "March 24, 2026".
pub fn format_date(t: u64) -> String {
    let fmt = time::macros::format_description!("[month repr:long] [day padding:none], [year]");
    to_datetime(t).format(&fmt).unwrap_or_default()
}

/// "Nov 28, 2026 22:32 UTC".
pub fn format_time(t: u64) -> String {
    let fmt = time::macros::format_description!(
        "[month repr:short] [day padding:none], [year] [hour]:[minute] UTC"
    );
    to_datetime(t).format(&fmt).unwrap_or_default()
}

/// RFC 3339, for JSON output.
pub fn rfc3339(t: u64) -> String {
    to_datetime(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn to_datetime(t: u64) -> time::OffsetDateTime {
    i64::try_from(t)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// "Pilot Professional" for `pilot-professional`.
pub fn plan_name(tier: &str) -> String {
    match tier {
        "pilot-starter" => "Pilot Starter".to_owned(),
        "pilot-professional" => "Pilot Professional".to_owned(),
        other => other
            .split(['-', '_'])
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_plans_read_well() {
        assert_eq!(format_date(1_774_310_400), "March 24, 2026");
        assert_eq!(format_time(1_796_256_000), "Dec 3, 2026 00:00 UTC");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(plan_name("pilot-professional"), "Pilot Professional");
        assert_eq!(plan_name("team-plus"), "Team Plus");
    }
}
