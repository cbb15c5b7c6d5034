//! `auth/signup` and `auth/login`: their bodies.

use serde::{Deserialize, Serialize};

/// A new account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct SignupRequest {
    /// Email address; also the login.
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 6, max_length = 254)))]
    pub email: String,
    /// At least 10 characters.
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 10, max_length = 128)))]
    pub password: String,
    /// The organization that will hold the licenses.
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 1, max_length = 255)))]
    pub company_name: String,
}

/// The answer to every accepted signup. It is the same whether the email
/// was new or already registered, so signup cannot tell anyone which emails
/// have accounts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct SignupResponse {
    /// Always `accepted`.
    pub status: String,
    pub email: String,
    /// What to do next.
    pub next: String,
}

/// Credentials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct LoginRequest {
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 6, max_length = 254)))]
    pub email: String,
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 10, max_length = 128)))]
    pub password: String,
}

/// An access token for the account endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
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

/// The token of a link mailed to an account (the `token` parameter of the
/// link).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct VerifyEmailRequest {
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 1, max_length = 128)))]
    pub token: String,
}

/// Whom to mail a password-reset link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct PasswordResetRequest {
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 6, max_length = 254)))]
    pub email: String,
}

/// A new password, with the token of the reset link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct NewPasswordRequest {
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 1, max_length = 128)))]
    pub token: String,
    /// At least 10 characters.
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 10, max_length = 128)))]
    pub password: String,
}

/// The answer of an account request that was carried out (or, for a reset
/// request, would have been: it is the same for unknown emails).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct AccountAnswer {
    /// `accepted` or `done`.
    pub status: String,
    /// What to do next.
    pub next: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_bodies_use_the_issuers_field_names() {
        let req = LoginRequest {
            email: "a@example.com".into(),
            password: "correct horse".into(),
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"email": "a@example.com", "password": "correct horse"})
        );
        let resp: LoginResponse = serde_json::from_str(
            r#"{"access_token":"jwt","token_type":"Bearer","expires_in":3600,"expires_at":"2026-01-01T01:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(resp.access_token, "jwt");
        assert_eq!(resp.expires_in, 3600);
    }
}

/// The one-time code a browser sign-in handed to the CLI's loopback
/// redirect (`coditect login`), with the CLI's PKCE verifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct CliTokenRequest {
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 1, max_length = 128)))]
    pub code: String,
    /// The PKCE verifier (RFC 7636) whose S256 challenge the CLI sent to
    /// `/cli/login`.
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 43, max_length = 128)))]
    pub code_verifier: String,
    /// The loopback redirect URI the CLI sent to `/cli/login`.
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 1, max_length = 200)))]
    pub redirect_uri: String,
}

/// A session for the CLI, as `auth/login` gives, with the account's email.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct CliTokenResponse {
    /// JWT (HS256); send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// When the token expires (RFC 3339).
    pub expires_at: String,
    /// The signed-in account's email.
    pub email: String,
}

/// A device authorization (RFC 8628) for `coditect login --device`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct DeviceCodeResponse {
    /// What the CLI polls `auth/device/token` with (secret).
    pub device_code: String,
    /// What the person types at `verification_uri`: `XXXX-XXXX`.
    pub user_code: String,
    /// The page where the person signs in and approves.
    pub verification_uri: String,
    /// The same page with the user code filled in.
    pub verification_uri_complete: String,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    pub interval: u64,
}

/// A poll of a device authorization.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct DeviceTokenRequest {
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 1, max_length = 128)))]
    pub device_code: String,
}
