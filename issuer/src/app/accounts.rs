//! Signing up (with the verification mail), signing in (with the
//! progressive delay after failures), sessions, signing out, and the
//! password reset by mail.
//!
//! Passwords are hashed by [`super::passwords`]. A login creates a session
//! in the store; the JWT carries its id, and logout ends the session
//! server-side, so a signed-out token is refused everywhere.
//!
//! Links mailed to an account (verify the address, reset the password)
//! carry 32 random bytes; the database keeps only their SHA-256, with an
//! expiry and the time they were used (once).

use std::sync::Arc;

use zeroize::Zeroizing;

use super::mail::templates;
use super::{AppState, passwords};
use crate::domain::account::{
    self, AccessClaims, AccountError, LinkPurpose, User, link_token_hash, sign_in_refused_until,
};
use crate::domain::audit::{Client, Event};
use crate::domain::mail::Mail;
use crate::domain::rfc3339;
use crate::store::SharedStore;

/// Where a web signup continues after its address is confirmed: the plan
/// and billing interval chosen in the form.
#[derive(Debug, Clone, Copy)]
pub struct Continuation<'a> {
    pub plan: &'a str,
    pub interval: &'a str,
}

/// A new link token: 32 random bytes, base64url.
fn new_link_token() -> Result<String, AccountError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AccountError::Internal(e.to_string()))?;
    Ok(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        bytes,
    ))
}

/// Mails a link of `purpose` to the account of `email`, if there is one
/// (`mail` makes the mail from the link's URL, `url` the URL from the
/// token). An unknown email costs the same store call and queues nothing.
async fn mail_link(
    state: &AppState,
    email: &str,
    purpose: LinkPurpose,
    now: i64,
    url: impl FnOnce(&str) -> String,
    mail: impl FnOnce(&str) -> Mail,
) -> Result<bool, AccountError> {
    let token = Zeroizing::new(new_link_token()?);
    let link = Zeroizing::new(url(&token));
    let mail = mail(&link);
    let issued = state
        .store
        .issue_account_link(
            email,
            purpose,
            &link_token_hash(&token),
            now.saturating_add(purpose.lifetime()),
            &mail,
            now,
        )
        .await?;
    if issued {
        state.mailer.wake();
    }
    Ok(issued)
}

/// The page a verification link opens.
fn verify_url(state: &AppState, token: &str, next: Option<Continuation<'_>>) -> String {
    let base = state.config.public_base_url.trim_end_matches('/');
    match next {
        Some(c) => format!(
            "{base}/signup/verify?token={token}&plan={}&interval={}",
            c.plan, c.interval
        ),
        None => format!("{base}/signup/verify?token={token}"),
    }
}

/// The page a password-reset link opens.
fn reset_url(state: &AppState, token: &str) -> String {
    let base = state.config.public_base_url.trim_end_matches('/');
    format!("{base}/signup/reset?token={token}")
}

/// Tells the owner of a registered address that someone tried to sign
/// up with it, with a password-reset link (the answer to the one who
/// tried is the same as for a new address).
async fn mail_existing_owner(state: &AppState, email: &str, now: i64) -> Result<(), AccountError> {
    let config = Arc::clone(&state.config);
    mail_link(
        state,
        email,
        LinkPurpose::ResetPassword,
        now,
        |t| reset_url(state, t),
        |link| templates::signup_existing_mail(&config, email, link),
    )
    .await?;
    Ok(())
}

/// Creates an organization and its owner, unverified, and mails the
/// verification link (continuing to the payment after a web signup,
/// `next`). An address that is taken gets `EmailTaken` (audited as such)
/// and its owner a mail with a password-reset link; callers answer both
/// the same way. An address held by an account that was never verified
/// nor paid for and is older than `UNVERIFIED_ACCOUNT_TTL` is freed first.
/// `via` is a short note for the audit row (`web signup`).
#[allow(clippy::too_many_arguments)]
pub async fn register(
    state: &AppState,
    email: &str,
    password: Zeroizing<String>,
    company_name: &str,
    client: &Client,
    via: Option<&'static str>,
    next: Option<Continuation<'_>>,
    now: i64,
) -> Result<User, AccountError> {
    let hash = passwords::hash(password)
        .await
        .map_err(AccountError::Internal)?;
    let limit = Some(state.config.pilot_users_limit);
    let store = &state.store;
    let mut outcome = store.signup(email, &hash, company_name, limit, now).await;
    if matches!(outcome, Err(AccountError::EmailTaken)) {
        let ttl = i64::try_from(state.config.unverified_account_ttl.as_secs()).unwrap_or(i64::MAX);
        if store
            .delete_unverified_accounts(now.saturating_sub(ttl), Some(email))
            .await?
            > 0
        {
            state
                .audit
                .log(
                    Event::new(now, "account_expired", "deleted")
                        .actor(format!("email:{email}"))
                        .detail("unverified and unpaid; the address was signed up again"),
                )
                .await;
            outcome = store.signup(email, &hash, company_name, limit, now).await;
        }
    }
    let event = Event::new(now, "signup", "ok").client(client);
    let event = match via {
        Some(note) => event.detail(note),
        None => event,
    };
    match &outcome {
        Ok(user) => {
            let config = Arc::clone(&state.config);
            mail_link(
                state,
                email,
                LinkPurpose::VerifyEmail,
                now,
                |t| verify_url(state, t, next),
                |link| templates::verify_email_mail(&config, email, link, next.is_some()),
            )
            .await?;
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
            mail_existing_owner(state, email, now).await?;
            let mut e = event.actor(format!("email:{email}"));
            e.outcome = "email_taken".into();
            state.audit.log(e).await;
        }
        Err(_) => {}
    }
    outcome
}

/// The web signup form was sent for a registered address with the wrong
/// password (or while its sign-ins are delayed): the owner gets the same
/// mail as an API signup of a taken address would send, and the form
/// answers as for a new address.
pub async fn signup_of_registered_address(
    state: &AppState,
    email: &str,
    client: &Client,
    now: i64,
) -> Result<(), AccountError> {
    mail_existing_owner(state, email, now).await?;
    state
        .audit
        .log(
            Event::new(now, "signup", "email_taken")
                .actor(format!("email:{email}"))
                .client(client)
                .detail("web signup"),
        )
        .await;
    Ok(())
}

/// Confirms an address with the token of its verification link.
pub async fn verify_email(
    state: &AppState,
    token: &str,
    client: &Client,
    now: i64,
) -> Result<User, AccountError> {
    let user = state
        .store
        .verify_email(&link_token_hash(token), now)
        .await?;
    let Some(user) = user else {
        state
            .audit
            .log(Event::new(now, "email_verified", "link_invalid").client(client))
            .await;
        return Err(AccountError::LinkInvalid);
    };
    state
        .audit
        .log(
            Event::new(now, "email_verified", "ok")
                .actor(format!("user:{}", user.id))
                .client(client),
        )
        .await;
    Ok(user)
}

/// Mails a password-reset link to `email` if it has an account. The
/// caller answers the same whether it has or not.
pub async fn request_password_reset(
    state: &AppState,
    email: &str,
    client: &Client,
    now: i64,
) -> Result<(), AccountError> {
    let config = Arc::clone(&state.config);
    let mailed = mail_link(
        state,
        email,
        LinkPurpose::ResetPassword,
        now,
        |t| reset_url(state, t),
        |link| templates::password_reset_mail(&config, email, link),
    )
    .await?;
    state
        .audit
        .log(
            Event::new(
                now,
                "password_reset_requested",
                if mailed { "mailed" } else { "unknown_email" },
            )
            .actor(format!("email:{email}"))
            .client(client),
        )
        .await;
    Ok(())
}

/// Sets a new password with the token of a reset link: every session of
/// the account ends, the address counts as verified, and the failed
/// sign-ins of the email are forgotten.
pub async fn reset_password(
    state: &AppState,
    token: &str,
    password: Zeroizing<String>,
    client: &Client,
    now: i64,
) -> Result<User, AccountError> {
    let hash = passwords::hash(password)
        .await
        .map_err(AccountError::Internal)?;
    let user = state
        .store
        .reset_password(&link_token_hash(token), &hash, now)
        .await?;
    let Some(user) = user else {
        state
            .audit
            .log(Event::new(now, "password_reset", "link_invalid").client(client))
            .await;
        return Err(AccountError::LinkInvalid);
    };
    state
        .audit
        .log(
            Event::new(now, "password_reset", "ok")
                .actor(format!("user:{}", user.id))
                .client(client)
                .detail("every session revoked"),
        )
        .await;
    Ok(user)
}

/// How often unverified, unpaid accounts past `UNVERIFIED_ACCOUNT_TTL` are
/// deleted.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Starts the account housekeeping (inside the tokio runtime): accounts
/// whose address was never verified and whose organization never paid are
/// deleted once older than `ttl`, which frees their address.
pub fn start_housekeeping(store: SharedStore, ttl: std::time::Duration) {
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
        loop {
            tick.tick().await;
            let cutoff = super::now().saturating_sub(ttl);
            match store.delete_unverified_accounts(cutoff, None).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(accounts = n, "deleted accounts never verified nor paid for")
                }
                Err(e) => tracing::warn!(error = %e, "account housekeeping failed"),
            }
        }
    });
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

/// The one password check, with the progressive delay: sign-in and the
/// web signup form (`web_signup` names the form in the audit row) both
/// use it. Failures are counted per (email, client) and per email
/// (`domain::account::sign_in_refused_until`); while refused, the password
/// is not checked and nothing is counted.
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
    let key = state.limits.client_key(client.ip.as_deref());
    let (record, found) = state.store.sign_in_lookup(email, &key, now).await?;
    if found.is_none() && web_signup.is_some() {
        return Ok(PasswordCheck::NoAccount);
    }
    if let Some(until) = sign_in_refused_until(&record, now) {
        state.audit.log(failed("delayed")).await;
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
            state.store.clear_failed_sign_ins(email, &key, now).await?;
            Ok(PasswordCheck::Right(user))
        }
        _ => {
            tracing::warn!(ip = client.ip.as_deref().unwrap_or("-"), "failed sign-in");
            let record = state.store.record_failed_sign_in(email, &key, now).await?;
            state.audit.log(failed("invalid_credentials")).await;
            if let Some(until) = sign_in_refused_until(&record, now) {
                tracing::warn!(
                    ip = client.ip.as_deref().unwrap_or("-"),
                    "sign-ins delayed after repeated failures"
                );
                state
                    .audit
                    .log(
                        Event::new(now, "lockout", "delayed")
                            .actor(format!("email:{email}"))
                            .client(client)
                            .detail(format!(
                                "until {} ({} failures from this client, {} in all)",
                                rfc3339(until),
                                record.client.failures,
                                record.email.failures
                            )),
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
    open_session(state, client, user, None, now).await
}

/// A new session for `user` and its access token, audited as a `login`
/// (`via`: how, when not with the password, e.g. `google`).
pub async fn open_session(
    state: &AppState,
    client: &Client,
    user: User,
    via: Option<&str>,
    now: i64,
) -> Result<SignedIn, AccountError> {
    let lifetime = i64::try_from(state.config.jwt_expiry.as_secs()).unwrap_or(86_400);
    let expires_at = now.saturating_add(lifetime);
    let sid = state
        .store
        .create_session(&user.id, now, expires_at)
        .await?;
    let event = Event::new(now, "login", "ok")
        .actor(format!("user:{}", user.id))
        .subject("session", sid.clone())
        .client(client);
    let event = match via {
        Some(via) => event.detail(format!("with {via}")),
        None => event,
    };
    state.audit.log(event).await;
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
