//! `auth/signup`, `auth/login`, `auth/logout`, and the mailed links:
//! `auth/verify-email`, `auth/password-reset` (ask for a link) and
//! `auth/new-password` (use it).

use poem::web::Data;
use poem_openapi::auth::Bearer;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, SecurityScheme};
pub use proto::auth::{
    AccountAnswer, CliTokenRequest, CliTokenResponse, DeviceCodeResponse, DeviceTokenRequest,
    LoginRequest, LoginResponse, NewPasswordRequest, PasswordResetRequest, SignupRequest,
    SignupResponse, VerifyEmailRequest,
};

use super::body::JsonBody;
use crate::app::{AppState, accounts, cli_login, now};
use crate::domain::account::{AccountError, User};
use crate::domain::{input, rfc3339};
use crate::http::{ApiResult, ApiTags, client};

/// Access token from `auth/login`, sent as `Authorization: Bearer <token>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
pub struct BearerAuth(pub Bearer);

impl BearerAuth {
    /// The signed-in user and session id, or 401.
    pub async fn user(&self, state: &AppState) -> ApiResult<(User, String)> {
        Ok(accounts::authenticate(state, &self.0.token, now()).await?)
    }

    /// The signed-in user of a request where a session is optional: none
    /// without an `Authorization` header; a header that is sent must carry
    /// a valid session (401 otherwise).
    pub async fn optional_user(req: &poem::Request, state: &AppState) -> ApiResult<Option<User>> {
        let Some(header) = req.headers().get(poem::http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(crate::http::problem::ApiError::unauthorized)?;
        Ok(Some(accounts::authenticate(state, token, now()).await?.0))
    }
}

#[derive(ApiResponse)]
pub enum SignupResult {
    /// Accepted: unless the email was already registered, the account and
    /// its organization now exist. Sign in next.
    #[oai(status = 202)]
    Accepted(Json<SignupResponse>),
}

#[derive(ApiResponse)]
pub enum AcceptedResult {
    /// Accepted: if the email has an account, a link is on its way to it
    /// (the answer is the same when it has none).
    #[oai(status = 202)]
    Accepted(Json<AccountAnswer>),
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
        body: JsonBody<SignupRequest>,
    ) -> ApiResult<SignupResult> {
        if !state.config.enable_pilot_signup {
            return Err(AccountError::SignupClosed.into());
        }
        let email = input::email("email", &body.email)?;
        input::password("password", &body.password)?;
        let company = input::name("company_name", &body.company_name)?;
        let password = zeroize::Zeroizing::new(body.0.password);
        let client = client(req, &state);
        let registered = accounts::register(
            &state,
            &email,
            password,
            &company,
            &client,
            None,
            None,
            now(),
        )
        .await;
        match registered {
            // Same answer as a new signup: a new account gets the
            // verification link, the owner of a registered address a mail
            // saying someone tried (with a reset link); nobody else learns
            // that it is registered.
            Ok(_) | Err(AccountError::EmailTaken) => {}
            Err(other) => return Err(other.into()),
        }
        Ok(SignupResult::Accepted(Json(SignupResponse {
            status: "accepted".into(),
            email,
            next: "Sign in with POST /api/v1/auth/login. A link to confirm the address was mailed to it; an account neither confirmed nor paid for is deleted after UNVERIFIED_ACCOUNT_TTL.".into(),
        })))
    }

    /// Sign in: returns an access token (JWT) for a new session.
    #[oai(path = "/auth/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: JsonBody<LoginRequest>,
    ) -> ApiResult<Json<LoginResponse>> {
        let email = body.email.trim().to_ascii_lowercase();
        let password = zeroize::Zeroizing::new(body.0.password);
        let client = client(req, &state);
        let session = accounts::sign_in(&state, &client, &email, password, now()).await?;
        Ok(Json(LoginResponse {
            access_token: session.access_token,
            token_type: "Bearer".into(),
            expires_in: u64::try_from(session.lifetime).unwrap_or(0),
            expires_at: rfc3339(session.expires_at),
        }))
    }

    /// The CLI's sign-in through the browser (`coditect login`): exchanges
    /// the one-time code the browser brought to the CLI's loopback
    /// redirect, with the PKCE verifier of the challenge the CLI sent to
    /// `/cli/login` and the same redirect URI, for a session (single use;
    /// `code_invalid` when unknown, used, expired or not matching).
    #[oai(path = "/auth/cli/token", method = "post", operation_id = "cliToken")]
    async fn cli_token(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: JsonBody<CliTokenRequest>,
    ) -> ApiResult<Json<CliTokenResponse>> {
        let client = client(req, &state);
        let (session, user) = cli_login::exchange(
            &state,
            &body.code,
            &body.code_verifier,
            &body.redirect_uri,
            &client,
            now(),
        )
        .await?;
        Ok(Json(cli_session(session, user)))
    }

    /// Start a device authorization (RFC 8628) for a CLI without a browser
    /// (`coditect login --device`): the person opens `verification_uri`,
    /// signs in and approves `user_code`; the CLI polls `auth/device/token`.
    #[oai(
        path = "/auth/device/code",
        method = "post",
        operation_id = "deviceCode"
    )]
    async fn device_code(&self, state: Data<&AppState>) -> ApiResult<Json<DeviceCodeResponse>> {
        let now = now();
        let (device_code, record) = cli_login::start_device(&state, now).await?;
        let base = state.config.public_base_url.trim_end_matches('/');
        Ok(Json(DeviceCodeResponse {
            device_code,
            verification_uri: format!("{base}/device"),
            verification_uri_complete: format!("{base}/device?user_code={}", record.user_code),
            user_code: record.user_code,
            expires_in: u64::try_from(record.expires_at - now).unwrap_or(0),
            interval: u64::try_from(record.interval_seconds).unwrap_or(5),
        }))
    }

    /// Poll a device authorization: a session once it is approved (single
    /// use), else `authorization_pending`, `slow_down` (polled sooner than
    /// the interval: wait 5 seconds more from then on) or `code_invalid`
    /// (unknown, used or expired).
    #[oai(
        path = "/auth/device/token",
        method = "post",
        operation_id = "deviceToken"
    )]
    async fn device_token(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: JsonBody<DeviceTokenRequest>,
    ) -> ApiResult<Json<CliTokenResponse>> {
        let client = client(req, &state);
        let (session, user) =
            cli_login::poll_device(&state, &body.device_code, &client, now()).await?;
        Ok(Json(cli_session(session, user)))
    }

    /// Confirm an email address with the token of the link mailed at
    /// signup (single use; `link_invalid` when unknown, used or expired).
    #[oai(
        path = "/auth/verify-email",
        method = "post",
        operation_id = "verifyEmail"
    )]
    async fn verify_email(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: JsonBody<VerifyEmailRequest>,
    ) -> ApiResult<Json<AccountAnswer>> {
        let client = client(req, &state);
        accounts::verify_email(&state, &body.token, &client, now()).await?;
        Ok(Json(AccountAnswer {
            status: "done".into(),
            next: "The address is confirmed.".into(),
        }))
    }

    /// Ask for a password-reset link by mail. The answer is the same
    /// whether the email has an account or not.
    #[oai(
        path = "/auth/password-reset",
        method = "post",
        operation_id = "requestPasswordReset"
    )]
    async fn request_password_reset(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: JsonBody<PasswordResetRequest>,
    ) -> ApiResult<AcceptedResult> {
        let email = input::email("email", &body.email)?;
        let client = client(req, &state);
        accounts::request_password_reset(&state, &email, &client, now()).await?;
        Ok(AcceptedResult::Accepted(Json(AccountAnswer {
            status: "accepted".into(),
            next: "If this email has an account, a link to choose a new password is on its way (valid for an hour).".into(),
        })))
    }

    /// Choose a new password with the token of a reset link (single use,
    /// an hour). Every session of the account ends; sign in again.
    #[oai(
        path = "/auth/new-password",
        method = "post",
        operation_id = "newPassword"
    )]
    async fn new_password(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: JsonBody<NewPasswordRequest>,
    ) -> ApiResult<Json<AccountAnswer>> {
        input::password("password", &body.password)?;
        let client = client(req, &state);
        let password = zeroize::Zeroizing::new(body.0.password);
        accounts::reset_password(&state, &body.0.token, password, &client, now()).await?;
        Ok(Json(AccountAnswer {
            status: "done".into(),
            next: "The password is changed and every session has ended. Sign in with POST /api/v1/auth/login.".into(),
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
        accounts::sign_out(&state, &user, &sid, &client(req, &state), now()).await?;
        Ok(LogoutResult::Ended)
    }
}

/// A session for the CLI (`auth/cli/token`, `auth/device/token`).
fn cli_session(session: accounts::SignedIn, user: User) -> CliTokenResponse {
    CliTokenResponse {
        access_token: session.access_token,
        token_type: "Bearer".into(),
        expires_in: u64::try_from(session.lifetime).unwrap_or(0),
        expires_at: rfc3339(session.expires_at),
        email: user.email,
    }
}
