//! Signing up, signing in (with the lockout), sessions and signing out.
//!
//! Passwords are hashed by [`super::passwords`]. A login creates a session
//! in the store; the JWT carries its id, and logout ends the session
//! server-side, so a signed-out token is refused everywhere.

use zeroize::Zeroizing;

use super::{AppState, passwords};
use crate::domain::account::{self, AccessClaims, AccountError, User};
use crate::domain::audit::{Client, Event};
use crate::domain::rfc3339;

/// Creates an organization and its owner. An address that is taken gets
/// `EmailTaken` (audited as such); callers decide what to tell whom.
/// `via` is a short note for the audit row (`web signup`).
pub async fn register(
    state: &AppState,
    email: &str,
    password: Zeroizing<String>,
    company_name: &str,
    client: &Client,
    via: Option<&'static str>,
    now: i64,
) -> Result<User, AccountError> {
    let hash = passwords::hash(password)
        .await
        .map_err(AccountError::Internal)?;
    let limit = Some(state.config.pilot_users_limit);
    let outcome = state
        .store
        .signup(email, &hash, company_name, limit, now)
        .await;
    let event = Event::new(now, "signup", "ok").client(client);
    let event = match via {
        Some(note) => event.detail(note),
        None => event,
    };
    match &outcome {
        Ok(user) => {
            state
                .audit
                .log(
                    event
                        .actor(format!("user:{}", user.id))
                        .subject("organization", user.organization_id.clone()),
                )
                .await;
        }
        Err(AccountError::EmailTaken) => {
            let mut e = event.actor(format!("email:{email}"));
            e.outcome = "email_taken".into();
            state.audit.log(e).await;
        }
        Err(_) => {}
    }
    outcome
}

/// The result of checking a password.
pub enum PasswordCheck {
    Right(User),
    Locked {
        until: i64,
    },
    Wrong,
    /// No account has this email (only reported to the web signup form,
    /// which then creates one; sign-in answers `Wrong`).
    NoAccount,
}

/// The one password check, with the lockout: sign-in and the web signup
/// form (`web_signup` names the form in the audit row) both use it.
pub async fn check_password(
    state: &AppState,
    client: &Client,
    email: &str,
    password: Zeroizing<String>,
    now: i64,
    web_signup: Option<&'static str>,
) -> Result<PasswordCheck, AccountError> {
    let failed = |outcome: &str| {
        let e = Event::new(now, "failed_login", outcome)
            .actor(format!("email:{email}"))
            .client(client);
        match web_signup {
            Some(detail) => e.detail(detail),
            None => e,
        }
    };
    let (locked, found) = state.store.sign_in_lookup(email, now).await?;
    if found.is_none() && web_signup.is_some() {
        return Ok(PasswordCheck::NoAccount);
    }
    if let Some(until) = locked {
        state.audit.log(failed("locked")).await;
        return Ok(PasswordCheck::Locked { until });
    }
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    // Unknown users cost one Argon2 check too.
    let ok = passwords::verify(hash, password).await;
    match (ok, user) {
        (true, Some(user)) => {
            state.store.clear_failed_sign_ins(email).await?;
            Ok(PasswordCheck::Right(user))
        }
        _ => {
            tracing::warn!(ip = client.ip.as_deref().unwrap_or("-"), "failed sign-in");
            let lock = state.store.record_failed_sign_in(email, now).await?;
            state.audit.log(failed("invalid_credentials")).await;
            if let Some(until) = lock {
                tracing::warn!(
                    ip = client.ip.as_deref().unwrap_or("-"),
                    "sign-in locked for 15 minutes after repeated failures"
                );
                state
                    .audit
                    .log(
                        Event::new(now, "lockout", "locked")
                            .actor(format!("email:{email}"))
                            .client(client)
                            .detail(format!("until {}", rfc3339(until))),
                    )
                    .await;
            }
            Ok(PasswordCheck::Wrong)
        }
    }
}

/// A signed-in session: the access token and when it ends.
pub struct SignedIn {
    pub access_token: String,
    /// Seconds the token is good for.
    pub lifetime: i64,
    pub expires_at: i64,
}

/// Signs in with email and password: a new session and its access token.
pub async fn sign_in(
    state: &AppState,
    client: &Client,
    email: &str,
    password: Zeroizing<String>,
    now: i64,
) -> Result<SignedIn, AccountError> {
    let user = match check_password(state, client, email, password, now, None).await? {
        PasswordCheck::Right(user) => user,
        PasswordCheck::Locked { until } => return Err(AccountError::Locked { until }),
        PasswordCheck::Wrong | PasswordCheck::NoAccount => {
            return Err(AccountError::InvalidCredentials);
        }
    };
    let lifetime = i64::try_from(state.config.jwt_expiry.as_secs()).unwrap_or(86_400);
    let expires_at = now.saturating_add(lifetime);
    let sid = state
        .store
        .create_session(&user.id, now, expires_at)
        .await?;
    state
        .audit
        .log(
            Event::new(now, "login", "ok")
                .actor(format!("user:{}", user.id))
                .subject("session", sid.clone())
                .client(client),
        )
        .await;
    let access_token = account::encode_jwt(
        &state.config.jwt_secret,
        &AccessClaims {
            sub: user.id,
            sid,
            iat: now,
            exp: expires_at,
        },
    )?;
    Ok(SignedIn {
        access_token,
        lifetime,
        expires_at,
    })
}

/// The user and session id an access token names, if its session is live.
pub async fn authenticate(
    state: &AppState,
    token: &str,
    now: i64,
) -> Result<(User, String), AccountError> {
    let claims = account::decode_jwt(&state.config.jwt_secret, token, now)?;
    let user = state
        .store
        .session_user(&claims.sid, now)
        .await?
        .filter(|u| u.id == claims.sub)
        .ok_or(AccountError::Unauthorized)?;
    Ok((user, claims.sid))
}

/// Ends a session.
pub async fn sign_out(
    state: &AppState,
    user: &User,
    session_id: &str,
    client: &Client,
    now: i64,
) -> Result<(), AccountError> {
    state.store.end_session(session_id, now).await?;
    state
        .audit
        .log(
            Event::new(now, "logout", "ok")
                .actor(format!("user:{}", user.id))
                .subject("session", session_id.to_owned())
                .client(client),
        )
        .await;
    Ok(())
}
