//! `auth/signup`, `auth/login`, `auth/logout`.

use poem::web::Data;
use poem_openapi::auth::Bearer;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme};

use super::problem::ApiError;
use super::{ApiResult, ApiTags, AppState, now, rfc3339, validate};
use crate::accounts::{self, AccessClaims, AccountError, User};

/// Access token from `auth/login`, sent as `Authorization: Bearer <token>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
pub struct BearerAuth(pub Bearer);

impl BearerAuth {
    /// The signed-in user and their session id, or 401.
    pub async fn user(&self, state: &AppState) -> ApiResult<(User, String)> {
        let now = now();
        let claims = accounts::decode_jwt(&state.config.jwt_secret, &self.0.token, now)?;
        let sid = claims.sid.clone();
        let user = state
            .db
            .run(move |c| accounts::session_user(c, &sid, now))
            .await?
            .filter(|u| u.id == claims.sub)
            .ok_or(AccountError::Unauthorized)?;
        Ok((user, claims.sid))
    }
}

/// A new account.
#[derive(Debug, Object)]
pub struct SignupRequest {
    /// Email address; also the login.
    #[oai(validator(min_length = 6, max_length = 254))]
    pub email: String,
    /// At least 10 characters.
    #[oai(validator(min_length = 10, max_length = 128))]
    pub password: String,
    /// The organization that will hold the licenses.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub company_name: String,
}

/// The answer to every accepted signup. It is the same whether the email
/// was new or already registered, so signup cannot tell anyone which emails
/// have accounts.
#[derive(Debug, Object)]
pub struct SignupResponse {
    /// Always `accepted`.
    pub status: String,
    pub email: String,
    /// What to do next.
    pub next: String,
}

#[derive(ApiResponse)]
pub enum SignupResult {
    /// Accepted: unless the email was already registered, the account and
    /// its organization now exist. Sign in next.
    #[oai(status = 202)]
    Accepted(Json<SignupResponse>),
}

/// Credentials.
#[derive(Debug, Object)]
pub struct LoginRequest {
    #[oai(validator(min_length = 6, max_length = 254))]
    pub email: String,
    #[oai(validator(min_length = 10, max_length = 128))]
    pub password: String,
}

/// An access token for the account endpoints.
#[derive(Debug, Object)]
pub struct LoginResponse {
    /// JWT (HS256); send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// When the token expires (RFC 3339).
    pub expires_at: String,
}

#[derive(ApiResponse)]
pub enum LogoutResult {
    /// The session has ended; the access token no longer works.
    #[oai(status = 204)]
    Ended,
}

pub struct AuthApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Create an account and its organization.
    ///
    /// Honours `ENABLE_PILOT_SIGNUP` (`signup_closed`) and
    /// `PILOT_USERS_LIMIT` (`signup_full`).
    #[oai(path = "/auth/signup", method = "post", operation_id = "signup")]
    async fn signup(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: Json<SignupRequest>,
    ) -> ApiResult<SignupResult> {
        let cfg = &state.config;
        if !cfg.enable_pilot_signup {
            return Err(AccountError::SignupClosed.into());
        }
        let email = validate::email("email", &body.email)?;
        validate::password("password", &body.password)?;
        let company = validate::name("company_name", &body.company_name)?;
        let password = zeroize::Zeroizing::new(body.0.password);
        let hash = crate::passwords::hash(password)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let limit = Some(cfg.pilot_users_limit);
        let now = now();
        let client = super::client(req, &state);
        let email_for_db = email.clone();
        let outcome = state
            .db
            .run_write(move |c| accounts::signup(c, &email_for_db, &hash, &company, limit, now))
            .await;
        let event = crate::audit::Event::new(now, "signup", "ok").client(&client);
        match outcome {
            Ok(user) => {
                state
                    .audit
                    .log(
                        event
                            .actor(format!("user:{}", user.id))
                            .subject("organization", user.organization_id),
                    )
                    .await;
            }
            // Same answer as a new signup; the owner of the address is not
            // told here (and nobody else learns that it is registered).
            Err(AccountError::EmailTaken) => {
                let mut e = event.actor(format!("email:{email}"));
                e.outcome = "email_taken".into();
                state.audit.log(e).await;
            }
            Err(other) => return Err(other.into()),
        }
        Ok(SignupResult::Accepted(Json(SignupResponse {
            status: "accepted".into(),
            email,
            next: "Sign in with POST /api/v1/auth/login.".into(),
        })))
    }

    /// Sign in: returns an access token (JWT) for a new session.
    #[oai(path = "/auth/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: Json<LoginRequest>,
    ) -> ApiResult<Json<LoginResponse>> {
        let email = body.email.trim().to_ascii_lowercase();
        let password = zeroize::Zeroizing::new(body.0.password);
        let client = super::client(req, &state);
        let now = now();
        let user = match check_password(&state, &client, &email, password, now, None).await? {
            PasswordCheck::Right(user) => user,
            PasswordCheck::Locked { until } => return Err(AccountError::Locked { until }.into()),
            PasswordCheck::Wrong | PasswordCheck::NoAccount => {
                return Err(AccountError::InvalidCredentials.into());
            }
        };
        let lifetime = i64::try_from(state.config.jwt_expiry.as_secs()).unwrap_or(86_400);
        let expires_at = now.saturating_add(lifetime);
        let user_id = user.id.clone();
        let sid = state
            .db
            .run_write(move |c| accounts::create_session(c, &user_id, now, expires_at))
            .await?;
        state
            .audit
            .log(
                crate::audit::Event::new(now, "login", "ok")
                    .actor(format!("user:{}", user.id))
                    .subject("session", sid.clone())
                    .client(&client),
            )
            .await;
        let token = accounts::encode_jwt(
            &state.config.jwt_secret,
            &AccessClaims {
                sub: user.id,
                sid,
                iat: now,
                exp: expires_at,
            },
        )?;
        Ok(Json(LoginResponse {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in: u64::try_from(lifetime).unwrap_or(0),
            expires_at: rfc3339(expires_at),
        }))
    }

    /// End the current session; its access token stops working at once.
    #[oai(path = "/auth/logout", method = "post", operation_id = "logout")]
    async fn logout(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        auth: BearerAuth,
    ) -> ApiResult<LogoutResult> {
        let (user, sid) = auth.user(&state).await?;
        let now = now();
        let ended = sid.clone();
        state
            .db
            .run_write(move |c| accounts::end_session(c, &ended, now))
            .await?;
        state
            .audit
            .log(
                crate::audit::Event::new(now, "logout", "ok")
                    .actor(format!("user:{}", user.id))
                    .subject("session", sid)
                    .client(&super::client(req, &state)),
            )
            .await;
        Ok(LogoutResult::Ended)
    }
}

/// What a password check found.
pub enum PasswordCheck {
    /// The password is the account's.
    Right(User),
    /// Too many wrong passwords for this email: refused until `until`.
    Locked { until: i64 },
    /// Wrong password (or, for a sign-in, no such account).
    Wrong,
    /// No account has this email (only when `web_signup` asked).
    NoAccount,
}

/// Checks `password` for `email` (lower case), with the lockout: refused
/// while locked; a wrong password counts towards the lock (and locking is
/// audited); a right one clears the count. Failures are audited as
/// `failed_login`.
///
/// For a sign-in (`web_signup: None`) an unknown email costs one Argon2
/// check and counts as a failure too, so nothing tells the two apart. The
/// web signup form (`Some(detail)`) creates the account instead, so an
/// unknown email is simply `NoAccount`.
pub async fn check_password(
    state: &AppState,
    client: &crate::audit::Client,
    email: &str,
    password: zeroize::Zeroizing<String>,
    now: i64,
    web_signup: Option<&'static str>,
) -> Result<PasswordCheck, AccountError> {
    let failed = |outcome: &str| {
        let e = crate::audit::Event::new(now, "failed_login", outcome)
            .actor(format!("email:{email}"))
            .client(client);
        match web_signup {
            Some(detail) => e.detail(detail),
            None => e,
        }
    };
    let lookup = email.to_owned();
    let (locked, found) = state
        .db
        .run(move |c| {
            Ok::<_, AccountError>((
                accounts::locked_until(c, &lookup, now)?,
                accounts::find_by_email(c, &lookup)?,
            ))
        })
        .await?;
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
    let ok = crate::passwords::verify(hash, password).await;
    let throttled = email.to_owned();
    match (ok, user) {
        (true, Some(user)) => {
            state
                .db
                .run_write(move |c| accounts::clear_failures(c, &throttled))
                .await?;
            Ok(PasswordCheck::Right(user))
        }
        _ => {
            tracing::warn!(ip = client.ip.as_deref().unwrap_or("-"), "failed sign-in");
            let lock = state
                .db
                .run_write(move |c| accounts::record_failure(c, &throttled, now))
                .await?;
            state.audit.log(failed("invalid_credentials")).await;
            if let Some(until) = lock {
                tracing::warn!(
                    ip = client.ip.as_deref().unwrap_or("-"),
                    "sign-in locked for 15 minutes after repeated failures"
                );
                state
                    .audit
                    .log(
                        crate::audit::Event::new(now, "lockout", "locked")
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
