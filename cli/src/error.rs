//! What went wrong, what to do next, and the exit code.
//!
//! Exit codes: 0 ok, 1 a problem with the user's input or license (the
//! message says what to do), 2 something unexpected.

use core::fmt;

/// An error shown to the user: a stable code, a message and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// Stable, machine-readable (also the `code` of the JSON form).
    pub code: String,
    /// What happened.
    pub message: String,
    /// What to do next.
    pub hint: Option<String>,
    /// The page that fixes it (the account page for a subscription to
    /// renew, pay or upgrade), when there is one.
    pub url: Option<String>,
    /// Unexpected failures exit with 2, everything else with 1.
    pub unexpected: bool,
}

impl CliError {
    /// A user or license problem (exit code 1).
    pub fn user(code: &str, message: impl Into<String>, hint: impl Into<Option<String>>) -> Self {
        CliError {
            code: code.to_owned(),
            message: message.into(),
            hint: hint.into(),
            url: None,
            unexpected: false,
        }
    }

    /// Something that should not happen (exit code 2).
    pub fn unexpected(code: &str, message: impl Into<String>) -> Self {
        CliError {
            code: code.to_owned(),
            message: message.into(),
            hint: Some("this is a bug or a broken installation; please report it".into()),
            url: None,
            unexpected: true,
        }
    }

    /// Replaces the hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Names the page that fixes it.
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    pub fn exit_code(&self) -> u8 {
        if self.unexpected { 2 } else { 1 }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

pub type CliResult<T> = Result<T, CliError>;

/// The account page of the license server at `server` (the issuer serves
/// its web pages where it serves the API): the licenses, the billing
/// portal (renew, pay, change plan) and the upgrade to Pilot Professional.
pub fn account_url(server: &str) -> String {
    format!("{}/account", server.trim_end_matches('/'))
}
