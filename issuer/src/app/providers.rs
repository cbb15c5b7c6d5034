//! Signing in with Google (OpenID Connect) and GitHub (OAuth 2.0).
//!
//! [`start`] keeps the flow's secrets server-side (the SHA-256 of the
//! `state`, the nonce, the PKCE verifier: `Identities::begin_provider_login`)
//! and answers the provider's authorization URL and the `state`, which the
//! web layer also puts in a short-lived HttpOnly cookie. [`finish`] takes
//! the started sign-in once (a replayed or forged `state` finds nothing),
//! checks that the browser is the one that started it, exchanges the code
//! with the PKCE verifier and checks the answer: for Google the ID token's
//! signature against the provider's keys (JWKS), its issuer, audience,
//! expiry and nonce (the `openidconnect` crate); for GitHub the verified
//! primary email of the user API. Then:
//!
//! - an identity tied to a user signs that user in;
//! - a signed-in user who asked to link gets the identity tied to their
//!   account, when the provider verified the email;
//! - otherwise a verified email that no account has makes a new account
//!   (the email counts as verified); one that an account has is refused:
//!   its owner signs in with the password first and links from there;
//! - an unverified email is never used.

use std::sync::OnceLock;
use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;

use super::AppState;
use super::accounts::{SignedIn, open_session};
use crate::config::{GitHubConfig, GoogleConfig};
use crate::domain::account::{AccountError, User, link_token_hash};
use crate::domain::audit::{Client, Event};
use crate::domain::provider::{LOGIN_LIFETIME_SECONDS, Provider, ProviderIdentity, ProviderLogin};

/// Why a provider sign-in did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("this provider is not configured")]
    NotConfigured,
    /// Unknown, used or expired `state`, or not this browser's.
    #[error("the sign-in expired or was already used")]
    StateInvalid,
    /// The provider refused, or its answer did not check out.
    #[error("the provider's answer was refused: {0}")]
    Provider(String),
    #[error("the provider has not verified this email")]
    EmailUnverified,
    /// An account has this email and the person has not shown they hold it.
    #[error("an account with this email exists")]
    EmailTaken { email: String },
    /// The identity is tied to another account.
    #[error("this identity belongs to another account")]
    IdentityTaken,
    /// The account has another identity of this provider.
    #[error("the account has another identity of this provider")]
    AlreadyLinked,
    #[error("pilot signup is closed")]
    SignupClosed,
    #[error("the pilot is full")]
    SignupFull,
    #[error(transparent)]
    Account(#[from] AccountError),
}

impl From<crate::domain::StorageError> for ProviderError {
    fn from(e: crate::domain::StorageError) -> Self {
        ProviderError::Account(e.into())
    }
}

/// A started sign-in: where to send the browser, and the `state` for its
/// cookie.
pub struct Started {
    pub url: String,
    pub state: String,
}

/// How a sign-in ended.
pub enum Finished {
    /// Signed in (a new account when `new_account`).
    SignedIn {
        signed: SignedIn,
        user: User,
        new_account: bool,
        then_go: Option<String>,
    },
    /// The identity is now tied to the signed-in account.
    Linked { user: User },
}

/// The HTTP client for providers: no redirects followed, bounded time.
fn http() -> Result<&'static reqwest::Client, ProviderError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .user_agent("coditect-issuer")
        .build()
        .map_err(|e| ProviderError::Account(AccountError::Internal(e.to_string())))?;
    Ok(CLIENT.get_or_init(|| client))
}

fn redirect_url(state: &AppState, provider: Provider) -> Result<RedirectUrl, ProviderError> {
    let base = state.config.public_base_url.trim_end_matches('/');
    RedirectUrl::new(format!("{base}/auth/{}/callback", provider.as_str()))
        .map_err(|e| ProviderError::Account(AccountError::Internal(e.to_string())))
}

fn refused(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Provider(e.to_string())
}

/// Whether `provider` is configured (and so offered).
pub fn offered(state: &AppState, provider: Provider) -> bool {
    match provider {
        Provider::Google => state.config.providers.google.is_some(),
        Provider::GitHub => state.config.providers.github.is_some(),
    }
}

/// The configured providers, in the order the pages show them.
pub fn offered_providers(state: &AppState) -> Vec<Provider> {
    Provider::ALL
        .into_iter()
        .filter(|p| offered(state, *p))
        .collect()
}

fn google(state: &AppState) -> Result<&GoogleConfig, ProviderError> {
    state
        .config
        .providers
        .google
        .as_ref()
        .ok_or(ProviderError::NotConfigured)
}

fn github(state: &AppState) -> Result<&GitHubConfig, ProviderError> {
    state
        .config
        .providers
        .github
        .as_ref()
        .ok_or(ProviderError::NotConfigured)
}

/// How long a provider's discovery document and keys are reused: a
/// sign-in then costs no extra round trips to the provider, and keys the
/// provider publishes ahead of a rotation are picked up within this time.
const DISCOVERY_TTL: Duration = Duration::from_secs(10 * 60);

/// The discovery document (with its key set) of `issuer_url`, fetched at
/// most once per [`DISCOVERY_TTL`] by this process.
async fn google_metadata(issuer_url: &str) -> Result<CoreProviderMetadata, ProviderError> {
    type Cached = Option<(String, std::time::Instant, CoreProviderMetadata)>;
    static CACHE: std::sync::Mutex<Cached> = std::sync::Mutex::new(None);
    let cached = |cache: &Cached| {
        cache.as_ref().and_then(|(url, at, metadata)| {
            (url == issuer_url && at.elapsed() < DISCOVERY_TTL).then(|| metadata.clone())
        })
    };
    if let Some(metadata) = cached(
        &CACHE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    ) {
        return Ok(metadata);
    }
    let issuer = IssuerUrl::new(issuer_url.to_owned()).map_err(refused)?;
    let metadata = CoreProviderMetadata::discover_async(issuer, http()?)
        .await
        .map_err(|e| refused(format!("discovery: {e}")))?;
    *CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((
        issuer_url.to_owned(),
        std::time::Instant::now(),
        metadata.clone(),
    ));
    Ok(metadata)
}

/// Google's client, from its discovery document (and its keys).
async fn google_client(
    state: &AppState,
    config: &GoogleConfig,
) -> Result<
    openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    ProviderError,
> {
    let metadata = google_metadata(&config.issuer_url).await?;
    Ok(CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(config.client.client_id.clone()),
        Some(ClientSecret::new(config.client.client_secret.to_string())),
    )
    .set_redirect_uri(redirect_url(state, Provider::Google)?))
}

fn github_client(
    state: &AppState,
    config: &GitHubConfig,
) -> Result<
    oauth2::basic::BasicClient<
        oauth2::EndpointSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    >,
    ProviderError,
> {
    let auth = oauth2::AuthUrl::new(format!("{}/login/oauth/authorize", config.base_url))
        .map_err(refused)?;
    let token = oauth2::TokenUrl::new(format!("{}/login/oauth/access_token", config.base_url))
        .map_err(refused)?;
    Ok(
        oauth2::basic::BasicClient::new(oauth2::ClientId::new(config.client.client_id.clone()))
            .set_client_secret(oauth2::ClientSecret::new(
                config.client.client_secret.to_string(),
            ))
            .set_auth_uri(auth)
            .set_token_uri(token)
            .set_redirect_uri(redirect_url(state, Provider::GitHub)?),
    )
}

/// A new `state`: 32 random bytes, base64url (the form of our cookies).
fn new_state() -> CsrfToken {
    CsrfToken::new_random_len(32)
}

/// Starts a sign-in: `link_user` is the signed-in user (the identity is
/// then linked to their account), `then_go` where to continue after.
pub async fn start(
    state: &AppState,
    provider: Provider,
    link_user: Option<&User>,
    then_go: Option<String>,
    now: i64,
) -> Result<Started, ProviderError> {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = match provider {
        Provider::Google => {
            let client = google_client(state, google(state)?).await?;
            let (url, csrf, nonce) = client
                .authorize_url(
                    CoreAuthenticationFlow::AuthorizationCode,
                    new_state,
                    Nonce::new_random,
                )
                .add_scope(Scope::new("email".into()))
                .set_pkce_challenge(challenge)
                .url();
            (url, csrf, nonce.secret().clone())
        }
        Provider::GitHub => {
            let client = github_client(state, github(state)?)?;
            let (url, csrf) = client
                .authorize_url(new_state)
                .add_scope(oauth2::Scope::new("user:email".into()))
                .set_pkce_challenge(challenge)
                .url();
            (url, csrf, Nonce::new_random().secret().clone())
        }
    };
    let login = ProviderLogin {
        state_hash: link_token_hash(csrf.secret()),
        provider: provider.as_str().to_owned(),
        nonce,
        pkce_verifier: verifier.secret().clone(),
        link_user_id: link_user.map(|u| u.id.clone()),
        then_go,
        created_at: now,
        expires_at: now.saturating_add(LOGIN_LIFETIME_SECONDS),
    };
    state.store.begin_provider_login(&login, now).await?;
    Ok(Started {
        url: url.to_string(),
        state: csrf.secret().clone(),
    })
}

/// GitHub's `GET /user`.
#[derive(Deserialize)]
struct GitHubUser {
    id: u64,
}

/// One entry of GitHub's `GET /user/emails`.
#[derive(Deserialize)]
struct GitHubEmail {
    email: String,
    primary: bool,
    verified: bool,
}

async fn github_get<T: serde::de::DeserializeOwned>(
    config: &GitHubConfig,
    token: &str,
    path: &str,
) -> Result<T, ProviderError> {
    let resp = http()?
        .get(format!("{}{path}", config.api_url))
        .bearer_auth(token)
        .header("accept", "application/vnd.github+json")
        .send()
        .await
        .map_err(|e| refused(format!("GitHub {path}: {}", e.without_url())))?;
    if !resp.status().is_success() {
        return Err(refused(format!("GitHub {path} answered {}", resp.status())));
    }
    resp.json()
        .await
        .map_err(|e| refused(format!("GitHub {path}: {}", e.without_url())))
}

/// Exchanges the code and checks the provider's answer.
async fn identity(
    state: &AppState,
    provider: Provider,
    code: &str,
    login: &ProviderLogin,
) -> Result<ProviderIdentity, ProviderError> {
    let verifier = PkceCodeVerifier::new(login.pkce_verifier.clone());
    match provider {
        Provider::Google => {
            let client = google_client(state, google(state)?).await?;
            let token = client
                .exchange_code(AuthorizationCode::new(code.to_owned()))
                .map_err(refused)?
                .set_pkce_verifier(verifier)
                .request_async(http()?)
                .await
                .map_err(|e| refused(format!("token: {e}")))?;
            let id_token = token
                .id_token()
                .ok_or_else(|| refused("no ID token in the answer"))?;
            let claims = id_token
                .claims(
                    &client.id_token_verifier(),
                    &Nonce::new(login.nonce.clone()),
                )
                .map_err(|e| refused(format!("ID token: {e}")))?;
            let email = claims
                .email()
                .map(|e| e.as_str().to_owned())
                .ok_or_else(|| refused("the ID token has no email"))?;
            Ok(ProviderIdentity {
                provider,
                subject: claims.subject().as_str().to_owned(),
                email,
                email_verified: claims.email_verified() == Some(true),
            })
        }
        Provider::GitHub => {
            let config = github(state)?;
            let client = github_client(state, config)?;
            let token = client
                .exchange_code(oauth2::AuthorizationCode::new(code.to_owned()))
                .set_pkce_verifier(verifier)
                .request_async(http()?)
                .await
                .map_err(|e| refused(format!("token: {e}")))?;
            let access = token.access_token().secret();
            let user: GitHubUser = github_get(config, access, "/user").await?;
            let emails: Vec<GitHubEmail> = github_get(config, access, "/user/emails").await?;
            let primary = emails
                .into_iter()
                .find(|e| e.primary)
                .ok_or_else(|| refused("GitHub gave no primary email"))?;
            Ok(ProviderIdentity {
                provider,
                subject: user.id.to_string(),
                email: primary.email,
                email_verified: primary.verified,
            })
        }
    }
}

/// Finishes a sign-in from the provider's redirect: `code` and `state`
/// from the query, `browser_state` from this browser's cookie,
/// `signed_in` the user of this browser's session, if any.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    state: &AppState,
    provider: Provider,
    code: &str,
    state_param: &str,
    browser_state: Option<&str>,
    signed_in: Option<&User>,
    client: &Client,
    now: i64,
) -> Result<Finished, ProviderError> {
    let result = finish_inner(
        state,
        provider,
        code,
        state_param,
        browser_state,
        signed_in,
        client,
        now,
    )
    .await;
    if let Err(e) = &result {
        let outcome = match e {
            ProviderError::NotConfigured => "not_configured",
            ProviderError::StateInvalid => "state_invalid",
            ProviderError::Provider(_) => "provider_refused",
            ProviderError::EmailUnverified => "email_unverified",
            ProviderError::EmailTaken { .. } => "email_taken",
            ProviderError::IdentityTaken => "identity_taken",
            ProviderError::AlreadyLinked => "already_linked",
            ProviderError::SignupClosed => "signup_closed",
            ProviderError::SignupFull => "signup_full",
            ProviderError::Account(_) => "failed",
        };
        let mut event = Event::new(now, "provider_login", outcome)
            .client(client)
            .detail(provider.as_str());
        if let ProviderError::EmailTaken { email } = e {
            event = event.actor(format!("email:{email}"));
        }
        if let ProviderError::Provider(why) = e {
            tracing::warn!(provider = provider.as_str(), reason = %why, "provider sign-in refused");
            event = event.detail(format!("{}: {}", provider.as_str(), short(why)));
        }
        state.audit.log(event).await;
    }
    result
}

/// A reason cut to a length fit for an audit row.
fn short(why: &str) -> String {
    why.chars().take(200).collect()
}

#[allow(clippy::too_many_arguments)]
async fn finish_inner(
    state: &AppState,
    provider: Provider,
    code: &str,
    state_param: &str,
    browser_state: Option<&str>,
    signed_in: Option<&User>,
    client: &Client,
    now: i64,
) -> Result<Finished, ProviderError> {
    if !offered(state, provider) {
        return Err(ProviderError::NotConfigured);
    }
    // The browser must be the one that started: its cookie holds the state.
    let same_browser = browser_state.is_some_and(|b| {
        b.len() == state_param.len()
            && b.bytes()
                .zip(state_param.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    });
    if !same_browser || state_param.is_empty() || state_param.len() > 256 {
        return Err(ProviderError::StateInvalid);
    }
    let login = state
        .store
        .take_provider_login(&link_token_hash(state_param), now)
        .await?
        .filter(|l| l.provider == provider.as_str())
        .ok_or(ProviderError::StateInvalid)?;
    if code.is_empty() || code.len() > 2048 {
        return Err(refused("no authorization code"));
    }
    let found = identity(state, provider, code, &login).await?;
    let p = provider.as_str();
    let tied = state.store.identity_user(p, &found.subject).await?;
    if let Some(link_user_id) = &login.link_user_id {
        // Linking to the signed-in account.
        if let Some(owner) = tied {
            if &owner.id != link_user_id {
                return Err(ProviderError::IdentityTaken);
            }
            return Ok(Finished::Linked { user: owner });
        }
        if !found.email_verified {
            return Err(ProviderError::EmailUnverified);
        }
        // Still signed in as the one who asked.
        let user = signed_in
            .filter(|u| &u.id == link_user_id)
            .cloned()
            .ok_or(ProviderError::StateInvalid)?;
        if !state
            .store
            .link_identity(&user.id, p, &found.subject, &found.email, now)
            .await?
        {
            return Err(ProviderError::AlreadyLinked);
        }
        state
            .audit
            .log(
                Event::new(now, "provider_link", "ok")
                    .actor(format!("user:{}", user.id))
                    .client(client)
                    .detail(format!("{p} ({})", found.email)),
            )
            .await;
        return Ok(Finished::Linked { user });
    }
    if let Some(user) = tied {
        let signed = open_session(state, client, user.clone(), Some(p), now).await?;
        return Ok(Finished::SignedIn {
            signed,
            user,
            new_account: false,
            then_go: login.then_go,
        });
    }
    if !found.email_verified {
        return Err(ProviderError::EmailUnverified);
    }
    if state.store.user_by_email(&found.email).await?.is_some() {
        return Err(ProviderError::EmailTaken { email: found.email });
    }
    if !state.config.enable_pilot_signup {
        return Err(ProviderError::SignupClosed);
    }
    let limit = Some(state.config.pilot_users_limit);
    let user = match state
        .store
        .provider_signup(&found.email, &found.email, limit, p, &found.subject, now)
        .await
    {
        Ok(user) => user,
        Err(AccountError::EmailTaken) => {
            return Err(ProviderError::EmailTaken { email: found.email });
        }
        Err(AccountError::SignupFull) => return Err(ProviderError::SignupFull),
        Err(e) => return Err(e.into()),
    };
    state
        .audit
        .log(
            Event::new(now, "signup", "ok")
                .actor(format!("user:{}", user.id))
                .subject("organization", user.organization_id.clone())
                .client(client)
                .detail(format!("with {p}; email verified by {p}")),
        )
        .await;
    let signed = open_session(state, client, user.clone(), Some(p), now).await?;
    Ok(Finished::SignedIn {
        signed,
        user,
        new_account: true,
        then_go: login.then_go,
    })
}
