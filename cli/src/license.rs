//! The offline-first license check every licensed command runs.
//!
//! While the stored token is fresh this never touches the network. From
//! renew-after it tries to renew with a short timeout and carries on if the
//! issuer is unreachable; after `exp` it must renew, and says so plainly.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use verifier::{
    DEFAULT_CLOCK_TOLERANCE, HardwareId, LicenseClaims, RenewalState, VerifiedToken, VerifyError,
};

use crate::api::{self, Client, Reply};
use crate::error::{CliError, CliResult};
use crate::format::format_time;
use crate::output::Printer;
use crate::state::{self, LicenseState, Paths, Refusal};
use crate::{system, trust};

/// How hard to try the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renew {
    /// Only when due or expired; failing to reach the issuer is fine while
    /// the token is good.
    WhenDue,
    /// Now, whatever the token's state (`coditect license renew`).
    Now,
}

/// A license that checked out, with what the user may want to know.
#[derive(Debug, Clone)]
pub struct Licensed {
    pub claims: LicenseClaims,
    pub kid: String,
    pub renewal: RenewalState,
    pub state: LicenseState,
    /// A renewal happened during this command.
    pub renewed: bool,
    /// A renewal was due but the issuer could not be reached.
    pub renewal_failed: Option<String>,
}

/// Everything the check needs from the outside, gathered once.
pub struct Context<'a> {
    pub paths: &'a Paths,
    pub printer: &'a Printer,
    /// `--server`, overriding the stored issuer.
    pub server: Option<&'a str>,
}

impl Context<'_> {
    pub(crate) fn server_for(&self, state: &LicenseState) -> String {
        self.server
            .map(str::to_owned)
            .or_else(|| state.server.clone())
            .unwrap_or_else(|| api::DEFAULT_SERVER.to_owned())
    }
}

/// Decodes a token from its base64url form.
pub fn decode_token(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim()).ok()
}

fn not_activated() -> CliError {
    CliError::user(
        "not_activated",
        "this machine has no CODITECT license",
        Some("run `coditect activate` with the key from your confirmation email".to_owned()),
    )
}

fn stored_token_error(e: &VerifyError) -> CliError {
    let message = match e {
        VerifyError::UnknownKey { kid } => format!(
            "the stored license was signed by a key this build of coditect does not trust ({kid})"
        ),
        VerifyError::HardwareMismatch => {
            "the stored license belongs to another machine (was the state copied?)".to_owned()
        }
        other => format!("the stored license is not valid: {other}"),
    };
    CliError::user(
        "license_invalid",
        message,
        Some("run `coditect activate` to activate this machine again".to_owned()),
    )
}

/// A human description of how long ago `then` was.
pub fn ago(now: u64, then: u64) -> String {
    let secs = now.saturating_sub(then);
    match secs {
        0..=119 => "just now".to_owned(),
        120..=7199 => format!("{} minutes ago", secs / 60),
        7200..=172_799 => format!("{} hours ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

pub(crate) fn clock_error(behind_by: u64) -> CliError {
    let amount = if behind_by >= 48 * 3600 {
        format!("{} days", behind_by / 86_400)
    } else if behind_by >= 7200 {
        format!("{} hours", behind_by / 3600)
    } else {
        format!("{} minutes", behind_by.div_ceil(60))
    };
    CliError::user(
        "clock_rolled_back",
        format!("the system clock is {amount} behind the last time coditect ran on this machine"),
        Some("set the clock to the correct time; if it is correct, connect and run `coditect license renew`".to_owned()),
    )
}

/// Where a token being accepted came from, for the words of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// Just signed by the issuer: its clock is the reference.
    Server,
    /// A token file (offline activation), judged at `now`.
    File(&'a std::path::Path),
}

/// Verifies a freshly received token for this machine.
pub fn accept_token(
    token_b64: &str,
    hardware_id: &HardwareId,
    now: u64,
    source: Source<'_>,
) -> CliResult<VerifiedToken> {
    let (origin, fix) = match source {
        Source::Server => (
            "the license server sent a token".to_owned(),
            "check --server points at the CODITECT license server".to_owned(),
        ),
        Source::File(path) => (
            format!("{} holds a token", path.display()),
            "use the file made by `coditect-issuer license issue-offline` for this machine's request"
                .to_owned(),
        ),
    };
    let refuse =
        |why: String| CliError::user("bad_token", format!("{origin} {why}"), Some(fix.clone()));
    let bytes = decode_token(token_b64).ok_or_else(|| refuse("that is not base64url".into()))?;
    let ring = trust::key_ring()?;
    let verified = verifier::authenticate(&bytes, &ring).map_err(|e| {
        // The server signs with a key newer than this build: the key
        // rotation shipped the new key in a later release of coditect.
        if let (Source::Server, VerifyError::UnknownKey { kid }) = (&source, &e) {
            return update_required(kid);
        }
        refuse(if trust::TRUSTS_DEVELOPMENT_KEY {
            format!("that this build refuses: {e}")
        } else {
            format!("that this build refuses (it trusts only production keys): {e}")
        })
    })?;
    // A token the issuer just signed must be good now, unless our clock is
    // off (which the clock guard reports on its own); a file is judged now.
    let at = match source {
        Source::Server => now.max(verified.claims.issued_at),
        Source::File(_) => now,
    };
    verified
        .check(at, hardware_id)
        .map_err(|e| refuse(format!("that is not good for this machine now: {e}")))?;
    Ok(verified)
}

/// The license server signs with a key this build does not know yet.
fn update_required(kid: &str) -> CliError {
    CliError::user(
        "update_required",
        format!(
            "the license server now signs licenses with a key this version of coditect does not know ({kid}); update coditect"
        ),
        Some(
            "update coditect (`npm install -g @coditect-ai/coditect-core`); until then this machine keeps working with the license it has until that expires"
                .to_owned(),
        ),
    )
}

enum Attempt {
    Renewed(Box<(LicenseState, VerifiedToken)>),
    Unreachable(CliError),
    Refused(CliError),
}

fn try_renew(
    ctx: &Context<'_>,
    state: &LicenseState,
    hardware_id: &HardwareId,
    now: u64,
    timeout: std::time::Duration,
) -> CliResult<Attempt> {
    let Some(key) = state.license_key.as_deref() else {
        return Ok(Attempt::Unreachable(CliError::user(
            "offline_license",
            "this license was imported offline and cannot be renewed online",
            Some("ask your administrator for a new token file and run `coditect activate --token-file FILE`".to_owned()),
        )));
    };
    let server = ctx.server_for(state);
    let client = Client::new(&server, timeout);
    let reply = ctx.printer.spin("Renewing license…", || {
        client.validate(key, &hardware_id.to_hex())
    });
    match reply {
        Err(e) => Ok(Attempt::Unreachable(e)),
        Ok(Reply::Refused { status, problem }) => {
            let err = api::refusal_error(&problem.code, &problem.detail, &server);
            if status == 429 || status >= 500 {
                return Ok(Attempt::Unreachable(err));
            }
            Ok(Attempt::Refused(err))
        }
        Ok(Reply::Ok(grant)) => {
            let token = grant.token.token.as_str();
            let verified = match accept_token(token, hardware_id, now, Source::Server) {
                Ok(v) => v,
                // Not a refusal of the license: the stored token stays in
                // use while it is good, and the message says to update.
                Err(e) if e.code == "update_required" => return Ok(Attempt::Unreachable(e)),
                Err(e) => return Err(e),
            };
            let mut next = state.clone();
            next.token = token.to_owned();
            next.server = Some(server);
            next.last_verified_at = verified.claims.issued_at;
            // The issuer's time repairs a high-water mark that a clock set
            // into the future once pushed too far.
            next.high_water = now.max(verified.claims.issued_at);
            next.refused = None;
            next.transfers = Some(grant.license.transfers.clone());
            Ok(Attempt::Renewed(Box::new((next, verified))))
        }
    }
}

fn refusal_from_state(r: &Refusal, server: &str) -> CliError {
    let mut err = api::refusal_error(&r.code, &r.message, server);
    err.message = format!(
        "on {} the license server refused this license: {}",
        format_time(r.at),
        r.message
    );
    err
}

/// The check: the license of this machine, renewed if due and possible.
pub fn ensure(ctx: &Context<'_>, renew: Renew) -> CliResult<Licensed> {
    let mut state = state::load_license(ctx.paths)?.ok_or_else(not_activated)?;
    let now = system::now();
    let hardware_id = system::hardware_id()?;

    if renew == Renew::WhenDue {
        if let Some(refusal) = &state.refused {
            return Err(refusal_from_state(refusal, &ctx.server_for(&state)));
        }
        verifier::check_clock(now, state.high_water, DEFAULT_CLOCK_TOLERANCE).map_err(
            |e| match e {
                VerifyError::ClockRolledBack { behind_by } => clock_error(behind_by),
                other => stored_token_error(&other),
            },
        )?;
    }

    let ring = trust::key_ring()?;
    let bytes = decode_token(&state.token)
        .ok_or_else(|| stored_token_error(&VerifyError::Malformed(verifier::Malformed::NotCbor)))?;
    let mut verified = verifier::authenticate(&bytes, &ring).map_err(|e| stored_token_error(&e))?;

    let judged = verified.check(now, &hardware_id);
    let must_renew = match &judged {
        Ok(()) => {
            renew == Renew::Now
                || !matches!(
                    verifier::renewal_state(&verified.claims, now),
                    RenewalState::Fresh { .. }
                )
        }
        Err(VerifyError::Expired { .. } | VerifyError::LicenseExpired { .. }) => true,
        Err(VerifyError::NotYetValid { .. }) if renew == Renew::Now => true,
        Err(VerifyError::NotYetValid { valid_from }) => {
            return Err(clock_error(valid_from.saturating_sub(now)));
        }
        Err(other) => return Err(stored_token_error(other)),
    };

    let mut renewed = false;
    let mut renewal_failed = None;
    if must_renew {
        let blocking = renew == Renew::Now || judged.is_err();
        let timeout = if blocking {
            api::FOREGROUND_TIMEOUT
        } else {
            api::BACKGROUND_TIMEOUT
        };
        match try_renew(ctx, &state, &hardware_id, now, timeout)? {
            Attempt::Renewed(next) => {
                let (next, v) = *next;
                state = next;
                verified = v;
                renewed = true;
                state::save_license(ctx.paths, &state)?;
            }
            Attempt::Refused(err) => {
                state.refused = Some(Refusal {
                    code: err.code.clone(),
                    message: err.message.clone(),
                    at: now,
                });
                state::save_license(ctx.paths, &state)?;
                return Err(err);
            }
            Attempt::Unreachable(err) if blocking && err.code == "update_required" => {
                return Err(err);
            }
            Attempt::Unreachable(err) if blocking => {
                return Err(match judged {
                    Err(VerifyError::Expired { since }) => CliError::user(
                        "token_expired",
                        format!(
                            "the license was last verified {} ({}), and this machine has been offline past its {}-hour grace period (it ended {})",
                            format_time(state.last_verified_at),
                            ago(now, state.last_verified_at),
                            verified
                                .claims
                                .expires_at
                                .saturating_sub(verified.claims.issued_at)
                                / 3600,
                            format_time(since),
                        ),
                        Some(format!(
                            "connect to the internet and run `coditect license renew` ({})",
                            err.message
                        )),
                    ),
                    Err(VerifyError::LicenseExpired { since }) => CliError::user(
                        "license_expired",
                        format!("the license ended {}", format_time(since)),
                        Some(
                            "renew your subscription in the billing portal (on your account page, link below), then connect and run `coditect license renew`"
                                .to_owned(),
                        ),
                    )
                    .with_url(crate::error::account_url(&ctx.server_for(&state))),
                    _ => err,
                });
            }
            Attempt::Unreachable(err) => renewal_failed = Some(err.message),
        }
    }

    if renewed && verified.claims.issued_at > now.saturating_add(DEFAULT_CLOCK_TOLERANCE) {
        // The license is renewed and stored, but this machine's clock is
        // behind the issuer's: every command would refuse it, so say so now.
        return Err(clock_error(verified.claims.issued_at - now).with_hint(
            "the license was renewed, but set the system clock to the correct time before using coditect",
        ));
    }
    let fresh_check = verified.check(now.max(verified.claims.issued_at), &hardware_id);
    if let Err(e) = fresh_check {
        return Err(stored_token_error(&e));
    }
    let high_water =
        verifier::next_high_water(state.high_water, now, Some(verified.claims.issued_at));
    // The high-water mark moves in steps of a minute: far finer than the
    // five-minute tolerance, and most runs write nothing.
    if !renewed && high_water >= state.high_water.saturating_add(60) {
        state.high_water = high_water;
        state::save_license(ctx.paths, &state)?;
    }
    Ok(Licensed {
        renewal: verifier::renewal_state(&verified.claims, now),
        claims: verified.claims,
        kid: verified.kid,
        state,
        renewed,
        renewal_failed,
    })
}
