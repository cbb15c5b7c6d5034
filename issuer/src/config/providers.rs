//! Sign-in providers (`GOOGLE_*`, `GITHUB_*`): each is offered only when
//! its client id and secret are set. Their addresses are overridable for
//! development and tests only (a local OpenID provider, a fake GitHub);
//! production talks to Google and GitHub.

use zeroize::Zeroizing;

use super::{ConfigError, Env, invalid, secret};

/// Google's OpenID Connect issuer (discovery at
/// `{issuer}/.well-known/openid-configuration`).
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// Where GitHub's OAuth authorize and token endpoints are.
pub const GITHUB_BASE: &str = "https://github.com";
/// GitHub's REST API.
pub const GITHUB_API: &str = "https://api.github.com";

/// One provider's OAuth client.
pub struct ProviderClient {
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
}

/// Google (OpenID Connect).
pub struct GoogleConfig {
    pub client: ProviderClient,
    /// `GOOGLE_ISSUER_URL` (development only), or Google's.
    pub issuer_url: String,
}

/// GitHub (OAuth 2.0 and its user API).
pub struct GitHubConfig {
    pub client: ProviderClient,
    /// `GITHUB_BASE_URL` (development only), or github.com.
    pub base_url: String,
    /// `GITHUB_API_URL` (development only), or api.github.com.
    pub api_url: String,
}

/// The configured providers.
#[derive(Default)]
pub struct Providers {
    pub google: Option<GoogleConfig>,
    pub github: Option<GitHubConfig>,
}

fn client(
    env: &dyn Env,
    id_var: &'static str,
    secret_var: &'static str,
) -> Result<Option<ProviderClient>, ConfigError> {
    let id = secret(env, id_var)?;
    let sec = secret(env, secret_var)?;
    match (id, sec) {
        (None, None) => Ok(None),
        (Some(id), Some(sec)) if !id.trim().is_empty() && !sec.is_empty() => {
            Ok(Some(ProviderClient {
                client_id: id.trim().to_owned(),
                client_secret: sec,
            }))
        }
        (Some(_), _) => Err(invalid(
            secret_var,
            &format!("must be set (not empty) together with {id_var}"),
        )),
        (None, Some(_)) => Err(invalid(
            id_var,
            &format!("must be set (not empty) together with {secret_var}"),
        )),
    }
}

/// A base URL: the default, or in development the override of `var`.
fn base_url(
    env: &dyn Env,
    var: &'static str,
    default: &str,
    production: bool,
) -> Result<String, ConfigError> {
    let Some(url) = env.get(var) else {
        return Ok(default.to_owned());
    };
    if production {
        return Err(invalid(
            var,
            "is for development and tests only; production talks to the real provider",
        ));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(var, "must start with http:// or https://"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

pub(super) fn providers(env: &dyn Env, production: bool) -> Result<Providers, ConfigError> {
    let google_issuer = base_url(env, "GOOGLE_ISSUER_URL", GOOGLE_ISSUER, production)?;
    let github_base = base_url(env, "GITHUB_BASE_URL", GITHUB_BASE, production)?;
    let github_api = base_url(env, "GITHUB_API_URL", GITHUB_API, production)?;
    Ok(Providers {
        google: client(env, "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET")?.map(|client| {
            GoogleConfig {
                client,
                issuer_url: google_issuer,
            }
        }),
        github: client(env, "GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET")?.map(|client| {
            GitHubConfig {
                client,
                base_url: github_base,
                api_url: github_api,
            }
        }),
    })
}
