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

/// How long a code handed to the CLI can be exchanged (s).
pub const CLI_CODE_LIFETIME_SECONDS: i64 = 120;

/// A one-time code handing a browser sign-in to the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliCode {
    /// SHA-256 (hex) of the code.
    pub code_hash: String,
    pub user_id: String,
    /// The CLI's PKCE challenge (S256, base64url).
    pub code_challenge: String,
    /// The CLI's loopback redirect URI.
    pub redirect_uri: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What the CLI asks for when it opens the browser (`/cli/login`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliRequest {
    pub redirect_uri: String,
    pub state: String,
    pub code_challenge: String,
}

fn unreserved(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

impl CliRequest {
    /// Checks a request (RFC 8252): the redirect goes to a loopback address
    /// over plain HTTP with an explicit port (`http://127.0.0.1:PORT/…` or
    /// `http://[::1]:PORT/…`, never a host name), the state is 8 to 128
    /// unreserved characters, the challenge an S256 one (43 base64url
    /// characters). `Err` says what is wrong.
    pub fn check(
        redirect_uri: &str,
        state: &str,
        code_challenge: &str,
        method: &str,
    ) -> Result<CliRequest, &'static str> {
        let rest = redirect_uri
            .strip_prefix("http://127.0.0.1:")
            .or_else(|| redirect_uri.strip_prefix("http://[::1]:"))
            .ok_or("the redirect must go to http://127.0.0.1:PORT/")?;
        let (port, path) = rest.split_once('/').unwrap_or((rest, ""));
        if port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err()
            || port.parse::<u16>() == Ok(0)
        {
            return Err("the redirect needs a port");
        }
        if redirect_uri.len() > 200
            || !path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
        {
            return Err("the redirect path is not allowed");
        }
        if !(8..=128).contains(&state.len()) || !unreserved(state) {
            return Err("the state must be 8 to 128 unreserved characters");
        }
        if method != "S256" || code_challenge.len() != 43 || !unreserved(code_challenge) {
            return Err("an S256 code challenge is required");
        }
        Ok(CliRequest {
            redirect_uri: redirect_uri.to_owned(),
            state: state.to_owned(),
            code_challenge: code_challenge.to_owned(),
        })
    }

    /// The request as one line (`then_go` of a provider sign-in).
    pub fn to_line(&self) -> String {
        format!(
            "cli:{} {} {}",
            self.state, self.code_challenge, self.redirect_uri
        )
    }

    /// A line of [`CliRequest::to_line`], checked again.
    pub fn from_line(line: &str) -> Option<CliRequest> {
        let mut parts = line.strip_prefix("cli:")?.split(' ');
        let (state, challenge, uri) = (parts.next()?, parts.next()?, parts.next()?);
        CliRequest::check(uri, state, challenge, "S256").ok()
    }
}

/// Whether `verifier` is the PKCE (S256) verifier of `challenge`.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use base64::Engine;
    use sha2::Digest;
    if !(43..=128).contains(&verifier.len()) {
        return false;
    }
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    computed.len() == challenge.len()
        && computed
            .bytes()
            .zip(challenge.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn cli_requests_go_to_loopback_with_pkce_only() {
        let ok = CliRequest::check(
            "http://127.0.0.1:5555/callback",
            "abcdefgh",
            CHALLENGE,
            "S256",
        );
        let ok = ok.unwrap();
        assert_eq!(CliRequest::from_line(&ok.to_line()), Some(ok));
        assert!(CliRequest::check("http://[::1]:80/", "abcdefgh", CHALLENGE, "S256").is_ok());
        for uri in [
            "http://localhost:5555/callback",
            "https://127.0.0.1:5555/",
            "http://127.0.0.1/callback",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:99999/",
            "http://127.0.0.1:5555@evil.example/",
            "http://127.0.0.1:5555/a?b=c",
            "http://evil.example/",
        ] {
            assert!(
                CliRequest::check(uri, "abcdefgh", CHALLENGE, "S256").is_err(),
                "{uri}"
            );
        }
        let uri = "http://127.0.0.1:5555/callback";
        assert!(CliRequest::check(uri, "short", CHALLENGE, "S256").is_err());
        assert!(CliRequest::check(uri, "has space here", CHALLENGE, "S256").is_err());
        assert!(CliRequest::check(uri, "abcdefgh", CHALLENGE, "plain").is_err());
        assert!(CliRequest::check(uri, "abcdefgh", "short", "S256").is_err());
    }

    #[test]
    fn pkce_s256_is_the_base64url_sha256_of_the_verifier() {
        // Computed apart: base64url(sha256(verifier)), no padding.
        let verifier = "coditect-test-verifier-0123456789-abcdefghijk";
        let challenge = "ci8WAX7CYTgBb9vz4JMLjVpvuiZK8x22i3_lfhjjumg";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "coditect-test-verifier-0123456789-abcdefghijK",
            challenge
        ));
        assert!(!pkce_matches(verifier, CHALLENGE));
        assert!(!pkce_matches("short", CHALLENGE));
    }
}

/// How long a device code lives (s).
pub const DEVICE_CODE_LIFETIME_SECONDS: i64 = 600;
/// The least time between two polls of a device code (s).
pub const DEVICE_POLL_INTERVAL_SECONDS: i64 = 5;

/// A device authorization (RFC 8628) waiting for its approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCode {
    /// SHA-256 (hex) of the device code.
    pub device_code_hash: String,
    /// What the person types at `/device`: `XXXX-XXXX`.
    pub user_code: String,
    pub interval_seconds: i64,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What a poll of a device code finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    /// Not approved yet.
    Pending,
    /// Polled sooner than the interval after the last poll.
    SlowDown,
    /// Approved by this user (the code is used up).
    Approved(super::account::User),
    /// Unknown, expired or used.
    Expired,
}

/// The letters of user codes: no vowels (no words), none that look alike.
const USER_CODE_LETTERS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A user code `XXXX-XXXX` from 8 random bytes.
pub fn user_code(random: [u8; 8]) -> String {
    let letters: String = random
        .iter()
        .map(|b| USER_CODE_LETTERS[usize::from(*b) % USER_CODE_LETTERS.len()] as char)
        .collect();
    format!("{}-{}", &letters[..4], &letters[4..])
}

/// A typed user code as stored (upper case, the dash in place, spaces and
/// dashes typed anywhere ignored), or `None` when it cannot be one.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let letters: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (letters.len() == 8 && letters.bytes().all(|b| USER_CODE_LETTERS.contains(&b)))
        .then(|| format!("{}-{}", &letters[..4], &letters[4..]))
}

#[cfg(test)]
mod device_tests {
    use super::*;

    #[test]
    fn user_codes_are_typed_loosely_and_stored_one_way() {
        let code = user_code([0, 1, 2, 3, 4, 5, 6, 20]);
        assert_eq!(code, "BCDF-GHJB");
        assert_eq!(normalize_user_code(" bcdf ghjb "), Some(code.clone()));
        assert_eq!(normalize_user_code("BCDF-GHJB"), Some(code));
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
        assert_eq!(normalize_user_code("ABCD-EFGH"), None, "vowels");
    }
}
