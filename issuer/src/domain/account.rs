//! Accounts: organizations and their users, sign-in lockout rules, and the
//! access tokens (HS256 JWTs) that name a login session.

use serde::{Deserialize, Serialize};

use super::StorageError;

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("pilot signup is closed")]
    SignupClosed,
    #[error("the pilot is full")]
    SignupFull,
    #[error("email or password is wrong")]
    InvalidCredentials,
    #[error("not signed in, or the session has ended")]
    Unauthorized,
    /// Too many failed sign-ins for this email from this client (or from
    /// everywhere, for a client that never signed in to it): wait until
    /// `until`.
    #[error("too many failed sign-ins")]
    Locked { until: i64 },
    /// A verification or password-reset link that is unknown, used,
    /// expired or for something else.
    #[error("the link is invalid, used or expired")]
    LinkInvalid,
    /// A code handed to the CLI that is unknown, used, expired, or whose
    /// PKCE verifier or redirect URI does not match.
    #[error("the sign-in code is invalid, used or expired")]
    CodeInvalid,
    /// A device authorization not approved yet (RFC 8628).
    #[error("the sign-in is not approved yet")]
    AuthorizationPending,
    /// A device code polled sooner than its interval (RFC 8628).
    #[error("polled too soon")]
    SlowDown,
    #[error("internal: {0}")]
    Internal(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Failed sign-ins of one email from one client that pass without delay;
/// each further failure doubles the wait (see [`sign_in_refused_until`]).
pub const CLIENT_FREE_FAILURES: u32 = 5;
/// Failed sign-ins of one email from all clients together before clients
/// that never signed in to it are slowed down as well: the global bound
/// on guessing one password from many addresses.
pub const EMAIL_FREE_FAILURES: u32 = 50;
/// The wait after the first failure past the free ones (seconds).
pub const FIRST_DELAY_SECONDS: i64 = 30;
/// The longest wait (seconds).
pub const MAX_DELAY_SECONDS: i64 = 15 * 60;
/// Failures are forgotten this long after the last one (seconds).
pub const FAILURE_MEMORY_SECONDS: i64 = 24 * 3600;
/// A client that signed in to an email is "known" for this long (seconds):
/// other clients' failures do not slow it down.
pub const KNOWN_CLIENT_SECONDS: i64 = 30 * 24 * 3600;

/// Failed sign-ins counted for one email from one client, or from all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureCount {
    pub failures: u32,
    pub last_failure_at: i64,
}

impl FailureCount {
    /// The failures still remembered at `now`.
    pub fn current(&self, now: i64) -> u32 {
        if now.saturating_sub(self.last_failure_at) >= FAILURE_MEMORY_SECONDS {
            0
        } else {
            self.failures
        }
    }

    /// Until when attempts are refused, `free` failures passing freely.
    fn refused_until(&self, free: u32, now: i64) -> Option<i64> {
        let delay = delay_after(self.current(now), free);
        let until = self.last_failure_at.saturating_add(delay);
        (delay > 0 && until > now).then_some(until)
    }
}

/// The wait after `failures` failures when `free` of them pass freely:
/// none below `free`, then 30 s, doubling per failure up to 15 minutes.
pub fn delay_after(failures: u32, free: u32) -> i64 {
    if failures < free {
        return 0;
    }
    let doublings = (failures - free).min(20);
    FIRST_DELAY_SECONDS
        .saturating_mul(1_i64 << doublings)
        .min(MAX_DELAY_SECONDS)
}

/// What the store keeps about the sign-ins of one email: from this client
/// (a salted hash of its address), and from all clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignInRecord {
    pub client: FailureCount,
    /// When this client last signed in to this email successfully.
    pub client_succeeded_at: Option<i64>,
    pub email: FailureCount,
}

/// Until when a sign-in of this email from this client is refused at
/// `now` (without checking the password), if it is. A client's own
/// failures slow it down after [`CLIENT_FREE_FAILURES`]; the failures of
/// all clients together slow down every client that has not signed in to
/// this email within [`KNOWN_CLIENT_SECONDS`] after
/// [`EMAIL_FREE_FAILURES`]. So a stranger cannot lock the owner out of
/// their own address, and guessing one password is bounded globally.
pub fn sign_in_refused_until(record: &SignInRecord, now: i64) -> Option<i64> {
    let own = record.client.refused_until(CLIENT_FREE_FAILURES, now);
    let known = record
        .client_succeeded_at
        .is_some_and(|at| now.saturating_sub(at) < KNOWN_CLIENT_SECONDS);
    let everyone = if known {
        None
    } else {
        record.email.refused_until(EMAIL_FREE_FAILURES, now)
    };
    own.max(everyone)
}

/// What an account link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    VerifyEmail,
    ResetPassword,
}

impl LinkPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::VerifyEmail => "verify_email",
            LinkPurpose::ResetPassword => "reset_password",
        }
    }

    /// How long a link works (seconds): a day to verify, an hour to reset.
    pub fn lifetime(self) -> i64 {
        match self {
            LinkPurpose::VerifyEmail => 24 * 3600,
            LinkPurpose::ResetPassword => 3600,
        }
    }
}

/// What the database keeps of a link token: its hex SHA-256.
pub fn link_token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.trim().as_bytes()))
}

/// A user with their organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub organization_id: String,
    pub organization_name: String,
    pub role: String,
}

/// The claims of an access token (HS256 JWT).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// User id.
    pub sub: String,
    /// Session id.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

/// Signs an access token.
pub fn encode_jwt(secret: &[u8], claims: &AccessClaims) -> Result<String, AccountError> {
    super::hs256::install();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .map_err(|e| AccountError::Internal(e.to_string()))
}

/// Checks an access token's signature and expiry at `now` (the library's own
/// clock is not used).
pub fn decode_jwt(secret: &[u8], token: &str, now: i64) -> Result<AccessClaims, AccountError> {
    super::hs256::install();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<AccessClaims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret),
        &validation,
    )
    .map_err(|_| AccountError::Unauthorized)?;
    if data.claims.exp <= now {
        return Err(AccountError::Unauthorized);
    }
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_256_000;

    fn count(failures: u32, at: i64) -> FailureCount {
        FailureCount {
            failures,
            last_failure_at: at,
        }
    }

    #[test]
    fn the_delay_grows_with_failures_and_is_capped() {
        let delays: Vec<i64> = (0..12).map(|f| delay_after(f, 5)).collect();
        assert_eq!(delays, [0, 0, 0, 0, 0, 30, 60, 120, 240, 480, 900, 900]);
        assert_eq!(delay_after(u32::MAX, 0), MAX_DELAY_SECONDS);
    }

    #[test]
    fn a_strangers_failures_do_not_slow_down_a_known_client() {
        // Five failures from this client: refused for 30 s after the last.
        let mine = SignInRecord {
            client: count(5, NOW),
            email: count(5, NOW),
            ..SignInRecord::default()
        };
        assert_eq!(sign_in_refused_until(&mine, NOW + 1), Some(NOW + 30));
        assert_eq!(sign_in_refused_until(&mine, NOW + 30), None);
        // Others failed 60 times: a new client waits, a known one does not.
        let others = SignInRecord {
            email: count(60, NOW),
            ..SignInRecord::default()
        };
        assert_eq!(sign_in_refused_until(&others, NOW + 1), Some(NOW + 900));
        let owner = SignInRecord {
            client_succeeded_at: Some(NOW - 3600),
            ..others
        };
        assert_eq!(sign_in_refused_until(&owner, NOW + 1), None);
        // A success long ago does not count; old failures are forgotten.
        let stale = SignInRecord {
            client_succeeded_at: Some(NOW - KNOWN_CLIENT_SECONDS),
            ..others
        };
        assert_eq!(sign_in_refused_until(&stale, NOW + 1), Some(NOW + 900));
        assert_eq!(
            sign_in_refused_until(&others, NOW + FAILURE_MEMORY_SECONDS),
            None
        );
    }

    #[test]
    fn link_tokens_are_stored_as_hashes_of_the_trimmed_text() {
        let a = "b3BlbiBzZXNhbWUgb3BlbiBzZXNhbWUgb3BlbiBzZXM";
        assert_eq!(link_token_hash(a).len(), 64);
        assert_ne!(link_token_hash(a), link_token_hash("other"));
        assert_eq!(link_token_hash(a), link_token_hash(&format!(" {a}\n")));
    }

    #[test]
    fn jwts_check_signature_and_expiry_against_the_given_time() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let claims = AccessClaims {
            sub: "u".into(),
            sid: "s".into(),
            iat: NOW,
            exp: NOW + 60,
        };
        let t = encode_jwt(secret, &claims).unwrap();
        assert_eq!(decode_jwt(secret, &t, NOW).unwrap(), claims);
        assert!(decode_jwt(secret, &t, NOW + 60).is_err());
        assert!(decode_jwt(b"another secret another secret!!", &t, NOW).is_err());
        assert!(decode_jwt(secret, "not.a.jwt", NOW).is_err());
        let none_alg = format!("eyJhbGciOiJub25lIn0.{}.", t.split('.').nth(1).unwrap());
        assert!(decode_jwt(secret, &none_alg, NOW).is_err());
    }
}
