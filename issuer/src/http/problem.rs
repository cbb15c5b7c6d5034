//! Errors as `application/problem+json` (RFC 9457) with a stable `code`.
//!
//! The body says what happened and what to do; it never carries internals
//! (SQL, paths, library messages). A 500 carries only the request id, which
//! the log pairs with the cause.

use poem::http::StatusCode;
use poem_openapi::ApiResponse;
use poem_openapi::payload::Json;

use crate::domain::StorageError;
use crate::domain::account::AccountError;
use crate::domain::input::FieldError;
use crate::domain::license::{LicenseError, LicenseStatus};
use crate::domain::rfc3339;

/// A problem report: the body every refusal carries (`proto::Problem`, the
/// type the CLI reads too).
pub use proto::Problem;

/// Making a problem document for an HTTP status.
pub trait NewProblem {
    fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Self;
}

impl NewProblem for Problem {
    fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            type_: format!("urn:coditect:problem:{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            field: None,
            available_at: None,
            request_id: None,
        }
    }
}

/// Every error response of the API.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed (not JSON, wrong types, unknown fields).
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// Not signed in, bad credentials, or the session has ended.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// The license or account does not allow this.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// No such license, activation or account link.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// Conflicts with existing state (e.g. the email is taken).
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The body is larger than the API accepts (16 KiB).
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The body is not `application/json`.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// A field is invalid; `field` names it.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>),
    /// Too many requests (`rate_limited`): wait `Retry-After` seconds.
    /// The `RateLimit-*` headers (also on successful answers of limited
    /// routes) describe the limit closest to being reached.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(
        Json<Problem>,
        /// Seconds (at least 1) until a request will be accepted again.
        #[oai(header = "Retry-After")]
        u64,
        /// Requests allowed per window.
        #[oai(header = "RateLimit-Limit")]
        u32,
        /// Requests left now (0).
        #[oai(header = "RateLimit-Remaining")]
        u32,
        /// Seconds until the whole limit is available again.
        #[oai(header = "RateLimit-Reset")]
        u64,
        /// The limit and its window in seconds: `5;w=60`.
        #[oai(header = "RateLimit-Policy")]
        String,
    ),
    /// Something failed on our side; quote `request_id` to support.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The service cannot answer right now (`database_unavailable`:
    /// the database does not answer; try again after `Retry-After`
    /// seconds).
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(
        Json<Problem>,
        /// Seconds to wait before trying again, when the outage is
        /// expected to pass.
        #[oai(header = "Retry-After")]
        Option<u64>,
    ),
}

impl ApiError {
    pub fn from_problem(p: Problem) -> Self {
        match p.status {
            400 => ApiError::BadRequest(Json(p)),
            401 => ApiError::Unauthorized(Json(p)),
            403 => ApiError::Forbidden(Json(p)),
            404 => ApiError::NotFound(Json(p)),
            409 => ApiError::Conflict(Json(p)),
            413 => ApiError::PayloadTooLarge(Json(p)),
            415 => ApiError::UnsupportedMediaType(Json(p)),
            422 => ApiError::Unprocessable(Json(p)),
            // Only the rate-limit middleware refuses with 429, with the real
            // figures (`rate_limit::Refusal::error`); these are the least a
            // client may assume.
            429 => ApiError::TooManyRequests(Json(p), 1, 1, 0, 1, "1;w=1".to_owned()),
            503 => ApiError::Unavailable(Json(p), None),
            _ => ApiError::Internal(Json(p)),
        }
    }

    pub fn problem(&self) -> &Problem {
        match self {
            ApiError::BadRequest(p)
            | ApiError::Unauthorized(p)
            | ApiError::Forbidden(p)
            | ApiError::NotFound(p)
            | ApiError::Conflict(p)
            | ApiError::PayloadTooLarge(p)
            | ApiError::UnsupportedMediaType(p)
            | ApiError::Unprocessable(p)
            | ApiError::TooManyRequests(p, ..)
            | ApiError::Internal(p)
            | ApiError::Unavailable(p, _) => &p.0,
        }
    }

    /// An unexpected failure: logged here with its cause (inside the
    /// request's span, so the log line carries the request id), answered
    /// with nothing but that id (added by the middleware).
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::from_problem(Self::internal_problem())
    }

    /// The body of a 500 (before the middleware adds the request id).
    pub fn internal_problem() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
            "Something went wrong on our side. Try again; if it persists, contact support with the request id.",
        )
    }

    pub fn unauthorized() -> Self {
        ApiError::from_problem(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Not signed in",
            "Sign in with POST /api/v1/auth/login and send the access token as `Authorization: Bearer <token>`.",
        ))
    }
}

impl From<LicenseError> for ApiError {
    fn from(e: LicenseError) -> Self {
        use StatusCode as S;
        let p = match e {
            LicenseError::NotFound => Problem::new(
                S::NOT_FOUND,
                "license_not_found",
                "License not found",
                "No license has this key. Check the key in your confirmation email.",
            ),
            LicenseError::NotActivated => Problem::new(
                S::FORBIDDEN,
                "not_activated",
                "Machine not activated",
                "This machine is not activated on the license. Run `coditect activate` first.",
            ),
            LicenseError::TooManyActivations { max } => Problem::new(
                S::FORBIDDEN,
                "too_many_activations",
                "Too many activations",
                format!(
                    "The license allows {max} machine(s) and all are in use. Run `coditect deactivate` on a machine you no longer use, or upgrade your plan."
                ),
            ),
            LicenseError::Inactive(status) => {
                let (code, title, detail) = match status {
                    LicenseStatus::Suspended => (
                        "license_suspended",
                        "License suspended",
                        "The license is suspended, usually because a payment failed. Update your payment method in the billing portal.",
                    ),
                    LicenseStatus::Revoked => (
                        "license_revoked",
                        "License revoked",
                        "The license has been revoked. Contact support if you think this is a mistake.",
                    ),
                    LicenseStatus::Canceled => (
                        "license_canceled",
                        "License canceled",
                        "The subscription behind this license was canceled. Subscribe again to continue.",
                    ),
                    LicenseStatus::Active | LicenseStatus::Expired => (
                        "license_expired",
                        "License expired",
                        "The license has expired. Renew your subscription to continue.",
                    ),
                };
                Problem::new(S::FORBIDDEN, code, title, detail)
            }
            LicenseError::Expired { .. } => Problem::new(
                S::FORBIDDEN,
                "license_expired",
                "License expired",
                "The license has expired. Renew your subscription to continue.",
            ),
            LicenseError::PaymentOverdue { since, failed_at } => Problem::new(
                S::FORBIDDEN,
                "payment_overdue",
                "Payment overdue",
                format!(
                    "The subscription's payment failed on {}, and the license stopped renewing on {} when the grace period ended. Update the payment method in the billing portal (POST /api/v1/billing/portal); the license works again as soon as the payment goes through.",
                    rfc3339(failed_at),
                    rfc3339(since)
                ),
            ),
            LicenseError::ActivationNotFound => Problem::new(
                S::NOT_FOUND,
                "activation_not_found",
                "Activation not found",
                "No activation with this id belongs to the license.",
            ),
            LicenseError::SeatOverLimit { max, used } => Problem::new(
                S::FORBIDDEN,
                "seat_over_limit",
                "Machine beyond the license's seats",
                format!(
                    "The license now allows {max} machine(s) and {used} are activated; the ones activated first keep their seats. Free a seat with `coditect deactivate` on a machine you no longer use (or `coditect deactivate --machine ID`, see `coditect license machines`), or upgrade your plan."
                ),
            ),
            LicenseError::TransferLimit { allowed, next_at } => {
                let mut p = Problem::new(
                    S::FORBIDDEN,
                    "transfer_limit_reached",
                    "Seat transfers used up",
                    format!(
                        "The license allows {allowed} seat transfers (freed seats) per 30 days and all are used. The next one is possible on {}; contact support if a machine was lost.",
                        rfc3339(next_at)
                    ),
                );
                p.available_at = Some(rfc3339(next_at));
                p
            }
            LicenseError::OfflineSeat { until } => {
                let mut p = Problem::new(
                    S::FORBIDDEN,
                    "offline_seat",
                    "Seat held by an offline activation",
                    format!(
                        "This machine was activated offline and its token is valid until {}; until then only your administrator can free its seat.",
                        rfc3339(until)
                    ),
                );
                p.available_at = Some(rfc3339(until));
                p
            }
            LicenseError::NotAllowedToFree => Problem::new(
                S::FORBIDDEN,
                "not_allowed_to_free",
                "Not allowed to free this seat",
                "Freeing another machine's seat needs a request from a machine that is active on the license, or a signed-in account of the license's organization (`Authorization: Bearer`, `coditect login`).",
            ),
            LicenseError::Signing(e) => return ApiError::internal(&e),
            LicenseError::Storage(e) => return ApiError::from(e),
        };
        ApiError::from_problem(p)
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        use StatusCode as S;
        let p = match e {
            AccountError::EmailTaken => Problem::new(
                S::CONFLICT,
                "email_taken",
                "Email already registered",
                "An account with this email exists. Sign in instead.",
            ),
            AccountError::SignupClosed => Problem::new(
                S::FORBIDDEN,
                "signup_closed",
                "Signup closed",
                "Pilot signup is closed at the moment.",
            ),
            AccountError::SignupFull => Problem::new(
                S::FORBIDDEN,
                "signup_full",
                "Pilot full",
                "The pilot has reached its number of users.",
            ),
            AccountError::InvalidCredentials => Problem::new(
                S::UNAUTHORIZED,
                "invalid_credentials",
                "Invalid credentials",
                "The email or password is wrong.",
            ),
            AccountError::Unauthorized => return ApiError::unauthorized(),
            AccountError::Locked { until } => {
                let wait = u64::try_from(until.saturating_sub(crate::app::now()))
                    .unwrap_or(0)
                    .max(1);
                let p = Problem::new(
                    S::TOO_MANY_REQUESTS,
                    "sign_in_delayed",
                    "Sign-in delayed",
                    format!(
                        "Too many failed sign-ins for this email from here. Try again after {} (in {wait} s), or reset the password by mail.",
                        rfc3339(until)
                    ),
                );
                return ApiError::TooManyRequests(Json(p), wait, 1, 0, wait, format!("1;w={wait}"));
            }
            // No such link (any more): like a resource that is gone.
            AccountError::LinkInvalid => Problem::new(
                S::NOT_FOUND,
                "link_invalid",
                "Link invalid or expired",
                "This link is unknown, was used already or has expired. Ask for a new one.",
            ),
            // Like a link: a resource that is gone (or never was).
            AccountError::CodeInvalid => Problem::new(
                S::NOT_FOUND,
                "code_invalid",
                "Sign-in code invalid or expired",
                "This sign-in code is unknown, was used already, has expired, or does not match the verifier and redirect URI. Run `coditect login` again.",
            ),
            // Not yet in the state asked for: a conflict, to ask again.
            AccountError::AuthorizationPending => Problem::new(
                S::CONFLICT,
                "authorization_pending",
                "Not approved yet",
                "The sign-in has not been approved at the verification page yet. Poll again after the interval.",
            ),
            AccountError::SlowDown => Problem::new(
                S::CONFLICT,
                "slow_down",
                "Polled too soon",
                "Wait the interval between polls, and 5 seconds more from now on.",
            ),
            AccountError::Internal(cause) => return ApiError::internal(&cause),
            AccountError::Storage(e) => return ApiError::from(e),
        };
        ApiError::from_problem(p)
    }
}

/// How long a client should wait after the database did not answer.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 5;

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            // An outage, not a bug: 503 with a time to come back, and the
            // cause in the log only.
            StorageError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "the database is unavailable");
                ApiError::Unavailable(
                    Json(Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "database_unavailable",
                        "Temporarily unavailable",
                        "The service cannot reach its database right now. Nothing was changed; try again in a few seconds.",
                    )),
                    Some(DATABASE_RETRY_AFTER_SECS),
                )
            }
            StorageError::Failed(_) => ApiError::internal(&e),
        }
    }
}

/// The one form of a field error: 422 `invalid_field`, the field named in
/// `field` and at the start of `detail`.
impl From<FieldError> for Problem {
    fn from(e: FieldError) -> Self {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "A field is invalid",
            e.to_string(),
        );
        p.field = Some(e.field);
        p
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::from_problem(Problem::from(e))
    }
}
