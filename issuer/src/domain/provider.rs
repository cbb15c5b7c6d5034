//! Signing in with an identity provider (Google, GitHub): the providers,
//! a started sign-in kept until the browser comes back, and what a
//! provider told us about the person.

/// The providers people can sign in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Google,
    GitHub,
}

impl Provider {
    /// The name in URLs, the database and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::GitHub => "github",
        }
    }

    /// The name people know.
    pub fn label(self) -> &'static str {
        match self {
            Provider::Google => "Google",
            Provider::GitHub => "GitHub",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "google" => Some(Provider::Google),
            "github" => Some(Provider::GitHub),
            _ => None,
        }
    }

    pub const ALL: [Provider; 2] = [Provider::Google, Provider::GitHub];
}

/// How long a started sign-in waits for the browser to come back (s).
pub const LOGIN_LIFETIME_SECONDS: i64 = 600;

/// A sign-in started at a provider, kept server-side until its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderLogin {
    /// SHA-256 (hex) of the `state` sent to the provider.
    pub state_hash: String,
    pub provider: String,
    /// The OpenID Connect nonce (GitHub: unused, random all the same).
    pub nonce: String,
    pub pkce_verifier: String,
    /// The signed-in user who asked to link the provider to their account.
    pub link_user_id: Option<String>,
    /// Where to go after: `checkout:<plan>:<interval>`, or `None`.
    pub then_go: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What the provider says about the person, once its answer is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderIdentity {
    pub provider: Provider,
    /// The provider's stable id of the person.
    pub subject: String,
    pub email: String,
    /// The provider says the person controls `email`.
    pub email_verified: bool,
}
