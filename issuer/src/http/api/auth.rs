//! `auth/signup`, `auth/login`, `auth/logout`.

use poem::web::Data;
use poem_openapi::auth::Bearer;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, SecurityScheme};
pub use proto::auth::{LoginRequest, LoginResponse, SignupRequest, SignupResponse};

use super::body::JsonBody;
use crate::app::{AppState, accounts, now};
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
        match accounts::register(&state, &email, password, &company, &client, None, now()).await {
            // Same answer as a new signup; the owner of the address is not
            // told here (and nobody else learns that it is registered).
            Ok(_) | Err(AccountError::EmailTaken) => {}
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
