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
    #[oai(validator(max_length = 254))]
    pub email: String,
    /// At least 10 characters.
    #[oai(validator(max_length = 128))]
    pub password: String,
    /// The organization that will hold the licenses.
    #[oai(validator(max_length = 255))]
    pub company_name: String,
}

/// The created account.
#[derive(Debug, Object)]
pub struct SignupResponse {
    pub user_id: String,
    pub organization_id: String,
    pub email: String,
}

#[derive(ApiResponse)]
pub enum SignupResult {
    /// Account and organization created; sign in next.
    #[oai(status = 201)]
    Created(Json<SignupResponse>),
}

/// Credentials.
#[derive(Debug, Object)]
pub struct LoginRequest {
    #[oai(validator(max_length = 254))]
    pub email: String,
    #[oai(validator(max_length = 128))]
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
        let user = state
            .db
            .run_write(move |c| accounts::signup(c, &email, &hash, &company, limit, now))
            .await?;
        Ok(SignupResult::Created(Json(SignupResponse {
            user_id: user.id,
            organization_id: user.organization_id,
            email: user.email,
        })))
    }

    /// Sign in: returns an access token (JWT) for a new session.
    #[oai(path = "/auth/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        state: Data<&AppState>,
        body: Json<LoginRequest>,
    ) -> ApiResult<Json<LoginResponse>> {
        let email = body.email.trim().to_owned();
        let password = zeroize::Zeroizing::new(body.0.password);
        let found = state
            .db
            .run(move |c| accounts::find_by_email(c, &email))
            .await?;
        let (user, hash) = match found {
            Some((u, h)) => (Some(u), Some(h)),
            None => (None, None),
        };
        // Unknown users cost one Argon2 check too.
        let ok = crate::passwords::verify(hash, password).await;
        let user = match (ok, user) {
            (true, Some(u)) => u,
            _ => return Err(AccountError::InvalidCredentials.into()),
        };
        let now = now();
        let lifetime = i64::try_from(state.config.jwt_expiry.as_secs()).unwrap_or(86_400);
        let expires_at = now.saturating_add(lifetime);
        let user_id = user.id.clone();
        let sid = state
            .db
            .run_write(move |c| accounts::create_session(c, &user_id, now, expires_at))
            .await?;
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
    async fn logout(&self, state: Data<&AppState>, auth: BearerAuth) -> ApiResult<LogoutResult> {
        let (_, sid) = auth.user(&state).await?;
        let now = now();
        state
            .db
            .run_write(move |c| accounts::end_session(c, &sid, now))
            .await?;
        Ok(LogoutResult::Ended)
    }
}
