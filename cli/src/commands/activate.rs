//! `coditect activate`: online, by offline request, or from a token file.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use serde_json::json;

use super::server_or_default;
use crate::api::{self, Client, Reply};
use crate::error::{CliError, CliResult};
use crate::format::{format_date, plan_name, rfc3339};
use crate::license::{Context, Source, accept_token};
use crate::state::{self, LicenseState};
use crate::{ActivateArgs, system};

const REQUEST_FORMAT: &str = "coditect-activation-request-v1";
const TOKEN_FILE_FORMAT: &str = "coditect-license-token-v1";

/// Accepts what a person types or pastes (spaces and case are forgiven),
/// by the one rule of the key format; anything else is refused here, before
/// any network call.
fn normalize_key(input: &str) -> CliResult<String> {
    proto::license_key::canonical(input).map_err(|_| {
        CliError::user(
            "invalid_key",
            "that is not a CODITECT license key",
            Some(
                "license keys look like CODITECT-PILOT-XXXX-YYYY-ZZZZ; copy it from your confirmation email"
                    .to_owned(),
            ),
        )
    })
}

fn ask_for_key() -> CliResult<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // On stderr, so that `--json` output stays one JSON document.
        eprint!("Enter your license key: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::user("no_key", format!("cannot read the license key: {e}"), None))?;
    if line.trim().is_empty() {
        return Err(CliError::user(
            "no_key",
            "no license key given",
            Some("run `coditect activate CODITECT-PILOT-XXXX-YYYY-ZZZZ`".to_owned()),
        ));
    }
    Ok(line)
}

pub fn run(ctx: &Context<'_>, args: &ActivateArgs) -> CliResult<()> {
    if let Some(file) = &args.token_file {
        let key = args.key.as_deref().map(normalize_key).transpose()?;
        return import(ctx, file, key);
    }
    let key = match &args.key {
        Some(k) => normalize_key(k)?,
        None => normalize_key(&ask_for_key()?)?,
    };
    let hardware_id = system::hardware_id()?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(system::machine_name)
        .trim()
        .to_owned();
    if let Some(file) = &args.offline_request {
        return write_request(ctx, file, &key, &hardware_id.to_hex(), &name);
    }

    let server = server_or_default(ctx.server);
    let client = Client::new(&server, api::FOREGROUND_TIMEOUT);
    let reply = ctx.printer.spin("Activating…", || {
        client.activate(&key, &hardware_id.to_hex(), &name)
    })?;
    let grant = match reply {
        Reply::Ok(grant) => grant,
        Reply::Refused { problem, .. } => {
            return Err(api::refusal_error(&problem.code, &problem.detail, &server));
        }
    };
    let token = grant.token.token.as_str();
    let now = system::now();
    let verified = accept_token(token, &hardware_id, now, Source::Server)?;
    let mut st = LicenseState::new(
        Some(key),
        token.to_owned(),
        Some(server),
        Some(name.clone()),
        verified.claims.issued_at,
    );
    st.high_water = now.max(verified.claims.issued_at);
    st.transfers = Some(grant.license.transfers.clone());
    state::save_license(ctx.paths, &st)?;

    let c = &verified.claims;
    ctx.printer.success("License validated");
    ctx.printer
        .success(&format!("Device registered ({name} - {})", c.email));
    ctx.printer.success("CODITECT activated successfully!");
    ctx.printer.json(&json!({
        "activated": true,
        "license_id": c.license_id,
        "plan": plan_name(&c.tier),
        "tier": c.tier,
        "email": c.email,
        "machine_name": name,
        "devices_used": c.devices_used,
        "max_devices": c.entitlements.max_devices,
        "license_expires_at": rfc3339(c.license_expires_at),
        "token_expires_at": rfc3339(c.expires_at),
        "renew_after": rfc3339(c.renew_after),
    }));
    Ok(())
}

fn write_request(
    ctx: &Context<'_>,
    file: &Path,
    key: &str,
    hardware_id: &str,
    name: &str,
) -> CliResult<()> {
    let request = json!({
        "format": REQUEST_FORMAT,
        "license_key": key,
        "hardware_id": hardware_id,
        "machine_name": name,
        "created_at": rfc3339(system::now()),
    });
    let bytes = serde_json::to_vec_pretty(&request)
        .map_err(|e| CliError::unexpected("internal", e.to_string()))?;
    state::write_private(file, &bytes).map_err(|e| {
        CliError::user(
            "write_failed",
            format!("cannot write {}: {e}", file.display()),
            None,
        )
    })?;
    ctx.printer
        .success(&format!("Activation request written to {}", file.display()));
    ctx.printer.line(&format!(
        "Give it to your CODITECT administrator, who runs:\n  coditect-issuer license issue-offline --request {} --out token.json\nthen import the answer here with:\n  coditect activate --token-file token.json",
        file.display()
    ));
    ctx.printer
        .json(&json!({ "request_file": file, "hardware_id": hardware_id }));
    Ok(())
}

fn import(ctx: &Context<'_>, file: &Path, key: Option<String>) -> CliResult<()> {
    let bad = |why: String| {
        CliError::user(
            "bad_token_file",
            format!("{} is not a usable license token file: {why}", file.display()),
            Some("use the file made by `coditect-issuer license issue-offline` for this machine's request".to_owned()),
        )
    };
    let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| bad("it is not JSON".to_owned()))?;
    if doc["format"] != TOKEN_FILE_FORMAT {
        return Err(bad(format!("its format is not {TOKEN_FILE_FORMAT}")));
    }
    let token = doc["token"]
        .as_str()
        .ok_or_else(|| bad("it has no token".to_owned()))?;
    let hardware_id = system::hardware_id()?;
    let now = system::now();
    // Importing must not reset the clock guard: a machine whose clock was
    // set back stays refused, whatever file it imports.
    let previous_high_water = state::load_license(ctx.paths)
        .ok()
        .flatten()
        .map_or(0, |s| s.high_water);
    verifier::check_clock(now, previous_high_water, verifier::DEFAULT_CLOCK_TOLERANCE).map_err(
        |e| match e {
            verifier::VerifyError::ClockRolledBack { behind_by } => {
                crate::license::clock_error(behind_by)
            }
            other => bad(other.to_string()),
        },
    )?;
    let verified = accept_token(token, &hardware_id, now, Source::File(file))
        .map_err(|e| CliError::user("bad_token_file", e.message, e.hint))?;
    let mut st = LicenseState::new(key, token.to_owned(), None, None, verified.claims.issued_at);
    st.high_water =
        verifier::next_high_water(previous_high_water, now, Some(verified.claims.issued_at));
    state::save_license(ctx.paths, &st)?;
    let c = &verified.claims;
    ctx.printer.success("License token verified");
    ctx.printer.success(&format!(
        "CODITECT activated offline ({} - {}), valid until {}",
        plan_name(&c.tier),
        c.email,
        format_date(c.expires_at)
    ));
    ctx.printer.json(&json!({
        "activated": true,
        "offline": true,
        "license_id": c.license_id,
        "tier": c.tier,
        "email": c.email,
        "token_expires_at": rfc3339(c.expires_at),
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_normalised_or_refused() {
        assert_eq!(
            normalize_key(" coditect-pilot-abcd-efgh-jkmn\n").unwrap(),
            "CODITECT-PILOT-ABCD-EFGH-JKMN"
        );
        for bad in [
            "",
            "hello",
            "CODITECT-PILOT-ABCD-EFGH",
            "CODITECT-PILOT-AB!D-EFGH-JKMN",
            // Look-alikes are not in the key alphabet: refused here, not
            // sent to the server.
            "CODITECT-PILOT-ABCD-EFGH-JKM0",
            "CODITECT-PILOT-ABCD-EFGH-JKMO",
            "CODITECT-PILOT-1BCD-EFGH-JKMN",
            "CODITECT-PILOT-ABCD-EFIH-JKMN",
            "CODITECT-PILOT-ABCD-EFGH-LKMN",
        ] {
            assert_eq!(normalize_key(bad).unwrap_err().code, "invalid_key");
        }
    }
}
