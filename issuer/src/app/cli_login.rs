//! `coditect login` through the browser (RFC 8252): the CLI listens on a
//! loopback port and opens `/cli/login` with its redirect URI, a `state`
//! and a PKCE (S256) challenge. Once the person is signed in in the
//! browser (with a provider, or already), [`hand_over`] keeps a one-time
//! code for that user and sends the browser to the CLI's loopback with it;
//! the CLI exchanges the code with its verifier ([`exchange`],
//! `POST /api/v1/auth/cli/token`) for a session of its own. A code works
//! once, for two minutes, only with the verifier of its challenge and the
//! same redirect URI.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::AppState;
use super::accounts::{SignedIn, open_session};
use crate::domain::account::{AccountError, User, link_token_hash};
use crate::domain::audit::{Client, Event};
use crate::domain::provider::{
    CLI_CODE_LIFETIME_SECONDS, CliCode, CliRequest, DEVICE_CODE_LIFETIME_SECONDS,
    DEVICE_POLL_INTERVAL_SECONDS, DeviceCode, DevicePoll, pkce_matches, user_code,
};

/// Keeps a code for `user` and answers the loopback URL to send the
/// browser to (with the code and the CLI's state).
pub async fn hand_over(
    state: &AppState,
    user: &User,
    request: &CliRequest,
    client: &Client,
    now: i64,
) -> Result<String, AccountError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AccountError::Internal(e.to_string()))?;
    let code = URL_SAFE_NO_PAD.encode(bytes);
    state
        .store
        .issue_cli_code(
            &CliCode {
                code_hash: link_token_hash(&code),
                user_id: user.id.clone(),
                code_challenge: request.code_challenge.clone(),
                redirect_uri: request.redirect_uri.clone(),
                created_at: now,
                expires_at: now.saturating_add(CLI_CODE_LIFETIME_SECONDS),
            },
            now,
        )
        .await?;
    state
        .audit
        .log(
            Event::new(now, "cli_login", "code_issued")
                .actor(format!("user:{}", user.id))
                .client(client),
        )
        .await;
    Ok(format!(
        "{}?code={code}&state={}",
        request.redirect_uri, request.state
    ))
}

/// Exchanges a code for a session of the CLI.
pub async fn exchange(
    state: &AppState,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
    client: &Client,
    now: i64,
) -> Result<(SignedIn, User), AccountError> {
    let found = state
        .store
        .take_cli_code(&link_token_hash(code), now)
        .await?
        .filter(|(c, _)| {
            c.redirect_uri == redirect_uri && pkce_matches(verifier, &c.code_challenge)
        });
    let Some((_, user)) = found else {
        state
            .audit
            .log(Event::new(now, "cli_login", "code_invalid").client(client))
            .await;
        return Err(AccountError::CodeInvalid);
    };
    let signed = open_session(state, client, user.clone(), Some("the browser (CLI)"), now).await?;
    Ok((signed, user))
}

/// `coditect login --device` (RFC 8628): a new device authorization; the
/// device code (secret, for the CLI's polls) and the stored record with
/// its user code.
pub async fn start_device(
    state: &AppState,
    now: i64,
) -> Result<(String, DeviceCode), AccountError> {
    let mut bytes = [0u8; 32];
    let mut letters = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| AccountError::Internal(e.to_string()))?;
    getrandom::fill(&mut letters).map_err(|e| AccountError::Internal(e.to_string()))?;
    let device_code = URL_SAFE_NO_PAD.encode(bytes);
    let record = DeviceCode {
        device_code_hash: link_token_hash(&device_code),
        user_code: user_code(letters),
        interval_seconds: DEVICE_POLL_INTERVAL_SECONDS,
        created_at: now,
        expires_at: now.saturating_add(DEVICE_CODE_LIFETIME_SECONDS),
    };
    state.store.begin_device(&record, now).await?;
    Ok((device_code, record))
}

/// The signed-in `user` approves the device authorization of `user_code`
/// (normalized); `false` when unknown, expired or approved already.
pub async fn approve_device(
    state: &AppState,
    user: &User,
    user_code: &str,
    client: &Client,
    now: i64,
) -> Result<bool, AccountError> {
    let approved = state.store.approve_device(user_code, &user.id, now).await?;
    state
        .audit
        .log(
            Event::new(
                now,
                "device_login",
                if approved { "approved" } else { "code_invalid" },
            )
            .actor(format!("user:{}", user.id))
            .client(client),
        )
        .await;
    Ok(approved)
}

/// One poll of the CLI: a session once approved (once), or why not yet.
pub async fn poll_device(
    state: &AppState,
    device_code: &str,
    client: &Client,
    now: i64,
) -> Result<(SignedIn, User), AccountError> {
    match state
        .store
        .poll_device(&link_token_hash(device_code), now)
        .await?
    {
        DevicePoll::Pending => Err(AccountError::AuthorizationPending),
        DevicePoll::SlowDown => Err(AccountError::SlowDown),
        DevicePoll::Expired => Err(AccountError::CodeInvalid),
        DevicePoll::Approved(user) => {
            let signed = open_session(
                state,
                client,
                user.clone(),
                Some("a device code (CLI)"),
                now,
            )
            .await?;
            Ok((signed, user))
        }
    }
}
