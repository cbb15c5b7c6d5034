//! `coditect login`, `coditect logout`, `coditect license machines`.

use std::io::{BufRead, IsTerminal, Read, Write};

use proto::{LoginRequest, PasswordResetRequest};
use serde_json::json;

use super::server_or_default;
use crate::api::{self, Client, Reply};
use crate::error::{CliError, CliResult};
use crate::license::Context;
use crate::state::{self, Session};

fn prompt_line(label: &str) -> CliResult<String> {
    if std::io::stdin().is_terminal() {
        print!("{label}");
        let _ = std::io::stdout().flush();
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::user("input", format!("cannot read input: {e}"), None))?;
    Ok(line.trim().to_owned())
}

pub fn login(ctx: &Context<'_>, email: Option<&str>, password_stdin: bool) -> CliResult<()> {
    let email = match email {
        Some(e) => e.trim().to_owned(),
        None => prompt_line("Email: ")?,
    };
    let password = if password_stdin {
        let mut p = String::new();
        std::io::stdin()
            .read_to_string(&mut p)
            .map_err(|e| CliError::user("input", format!("cannot read the password: {e}"), None))?;
        p.trim_end_matches(['\n', '\r']).to_owned()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ")
            .map_err(|e| CliError::user("input", format!("cannot read the password: {e}"), None))?
    } else {
        return Err(CliError::user(
            "input",
            "no terminal to ask for the password",
            Some("pipe it in with --password-stdin".to_owned()),
        ));
    };
    if email.is_empty() || password.is_empty() {
        return Err(CliError::user(
            "input",
            "email and password are required",
            None,
        ));
    }
    let server = server_or_default(ctx.server);
    let client = Client::new(&server, api::FOREGROUND_TIMEOUT);
    let request = LoginRequest {
        email: email.clone(),
        password,
    };
    let reply = ctx.printer.spin("Signing in…", || client.login(&request))?;
    match reply {
        Reply::Ok(body) => {
            let token = body.access_token;
            let expires = body.expires_at;
            state::save_session(
                ctx.paths,
                &Session::new(server, email.clone(), token, expires.clone()),
            )?;
            ctx.printer.success(&format!("Signed in as {email}"));
            ctx.printer
                .json(&json!({ "signed_in": true, "email": email, "expires_at": expires }));
            Ok(())
        }
        Reply::Refused { problem, .. } => Err(CliError::user(
            &problem.code,
            problem.detail,
            Some(
                "check your email and password; `coditect login` to try again, or `coditect login --reset` if you forgot the password"
                    .to_owned(),
            ),
        )),
    }
}

/// `coditect login --reset`: asks the server to mail a link that sets a
/// new password (in a browser). The server answers the same whether the
/// email has an account or not, and so does this.
pub fn reset(ctx: &Context<'_>, email: Option<&str>) -> CliResult<()> {
    let email = match email {
        Some(e) => e.trim().to_owned(),
        None => prompt_line("Email: ")?,
    };
    if email.is_empty() {
        return Err(CliError::user("input", "an email is required", None));
    }
    let server = server_or_default(ctx.server);
    let client = Client::new(&server, api::FOREGROUND_TIMEOUT);
    let request = PasswordResetRequest {
        email: email.clone(),
    };
    let reply = ctx.printer.spin("Asking for a reset link…", || {
        client.request_password_reset(&request)
    })?;
    match reply {
        Reply::Ok(_) => {
            let page = format!("{}/signup/reset", server.trim_end_matches('/'));
            ctx.printer.success(&format!(
                "If {email} has an account, a link to choose a new password is on its way (valid for an hour)"
            ));
            ctx.printer.line(&format!(
                "Open it in a browser, then run `coditect login`. No mail? Ask again at {page}."
            ));
            ctx.printer
                .json(&json!({ "reset_requested": true, "email": email, "page": page }));
            Ok(())
        }
        Reply::Refused { problem, .. } => {
            Err(api::refusal_error(&problem.code, &problem.detail, &server))
        }
    }
}

pub fn logout(ctx: &Context<'_>) -> CliResult<()> {
    let Some(session) = state::load_session(ctx.paths)? else {
        ctx.printer.success("Not signed in");
        ctx.printer.json(&json!({ "signed_in": false }));
        return Ok(());
    };
    let client = Client::new(&session.server, api::BACKGROUND_TIMEOUT);
    // Ending the session server-side is best effort; forgetting it here is not.
    let ended = matches!(client.logout(&session.access_token), Ok(Reply::Ok(_)));
    state::remove_session(ctx.paths)?;
    ctx.printer
        .success(&format!("Signed out {}", session.email));
    if !ended {
        ctx.printer
            .warn("the server could not be told; the session ends on its own when it expires");
    }
    ctx.printer
        .json(&json!({ "signed_in": false, "server_session_ended": ended }));
    Ok(())
}

pub fn machines(ctx: &Context<'_>) -> CliResult<()> {
    let not_signed_in = || {
        CliError::user(
            "not_signed_in",
            "listing machines needs your account",
            Some("run `coditect login` first".to_owned()),
        )
    };
    let session = state::load_session(ctx.paths)?.ok_or_else(not_signed_in)?;
    let server = ctx.server.map_or(session.server.clone(), str::to_owned);
    let client = Client::new(&server, api::FOREGROUND_TIMEOUT);
    let reply = ctx
        .printer
        .spin("Loading…", || client.licenses(&session.access_token))?;
    let list = match reply {
        Reply::Ok(list) => list,
        Reply::Refused { status: 401, .. } => {
            state::remove_session(ctx.paths)?;
            return Err(CliError::user(
                "not_signed_in",
                "your session has ended",
                Some("run `coditect login` again".to_owned()),
            ));
        }
        Reply::Refused { problem, .. } => {
            return Err(api::refusal_error(&problem.code, &problem.detail, &server));
        }
    };
    if list.licenses.is_empty() {
        ctx.printer.line("No licenses on this account.");
    }
    for entry in &list.licenses {
        let l = &entry.license;
        ctx.printer.line(&format!(
            "{} ({}), {}/{} devices, key …{}",
            l.plan_name, l.status, l.devices_used, l.entitlements.max_devices, l.key_hint
        ));
        for a in entry.activations.iter().filter(|a| a.status == "active") {
            ctx.printer.line(&format!(
                "  {}  {}  last seen {}",
                a.id,
                a.machine_name.as_deref().unwrap_or("(unnamed)"),
                a.last_validated_at
            ));
        }
    }
    ctx.printer
        .line("Free a seat with `coditect deactivate --machine <id>`.");
    // Through a JSON value, so the document's keys come out sorted like
    // every other document of the CLI.
    let doc =
        serde_json::to_value(&list).map_err(|e| CliError::unexpected("internal", e.to_string()))?;
    ctx.printer.json(&doc);
    Ok(())
}
