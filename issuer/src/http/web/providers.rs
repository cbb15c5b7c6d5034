//! `/auth/{provider}/start` and `/auth/{provider}/callback`: signing in
//! with Google or GitHub (`app::providers`), and the buttons the sign-in,
//! signup and account pages show for each configured provider.
//!
//! The start sends the browser to the provider with a fresh `state`, which
//! it also sets in a short-lived HttpOnly cookie (`coditect_oauth`, path
//! `/auth`, `SameSite=Lax` so it comes back with the provider's redirect);
//! the callback needs both to match, and the server-side row of the state
//! is used once. A signed-in person who starts with `?link=1` links the
//! provider to their account instead.

use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;

use super::Site;
use super::account_page::{redirect, session_cookie, signed_in};
use super::cookies::{self, Cookie, SameSite};
use super::csrf::FormToken;
use super::html::escape;
use super::signup::{full_page, internal_error, notice_page, start_checkout};
use super::signup_form::Values;
use crate::app::providers::{self, Finished, ProviderError};
use crate::app::{AppState, cli_login, now};
use crate::domain::plans;
use crate::domain::provider::{CliRequest, LOGIN_LIFETIME_SECONDS, Provider, normalize_user_code};
use crate::http::client;

/// The cookie holding the `state` of this browser's provider sign-in.
pub const STATE_COOKIE: &str = "coditect_oauth";

/// Buttons for the configured providers (`verb`: "Sign in" or "Continue"),
/// carrying the plan and interval to buy when given; empty when none is
/// configured.
pub fn buttons(state: &AppState, verb: &str, plan: Option<(&str, &str)>) -> String {
    let offered = providers::offered_providers(state);
    if offered.is_empty() {
        return String::new();
    }
    let query = plan
        .map(|(p, i)| format!("?plan={}&amp;interval={}", escape(p), escape(i)))
        .unwrap_or_default();
    let mut html = String::from("<div class=\"providers\">\n");
    for p in offered {
        html.push_str(&format!(
            "<p><a class=\"button secondary\" id=\"with-{name}\" href=\"/auth/{name}/start{query}\">{verb} with {label}</a></p>\n",
            name = p.as_str(),
            label = p.label(),
        ));
    }
    html.push_str("<p class=\"or\">or with your email and password:</p>\n</div>\n");
    html
}

/// Links on the account page to tie each configured provider to it.
pub fn link_buttons(state: &AppState) -> String {
    let offered = providers::offered_providers(state);
    if offered.is_empty() {
        return String::new();
    }
    let mut html = String::from(
        "<section aria-labelledby=\"providers-heading\">\n<h2 id=\"providers-heading\">Sign-in providers</h2>\n\
         <p>Sign in with these too, once linked (the provider must have verified its email).</p>\n",
    );
    for p in offered {
        html.push_str(&format!(
            "<p><a class=\"button secondary\" id=\"link-{name}\" href=\"/auth/{name}/start?link=1\">Link {label}</a></p>\n",
            name = p.as_str(),
            label = p.label(),
        ));
    }
    html.push_str("</section>\n");
    html
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct StartQuery {
    plan: String,
    interval: String,
    link: String,
    /// From `/cli/login`: the sign-in ends at the CLI's loopback.
    cli_redirect_uri: String,
    cli_state: String,
    cli_challenge: String,
    /// From `/device`: the sign-in comes back there with this user code.
    device: String,
}

fn unknown_provider(state: &AppState) -> Response {
    notice_page(
        state,
        "Sign-in not available",
        &[
            "This way of signing in is not offered here. Sign in with your email and password."
                .to_owned(),
        ],
        StatusCode::NOT_FOUND,
    )
}

fn offered(state: &AppState, name: &str) -> Option<Provider> {
    Provider::parse(name).filter(|p| providers::offered(state, *p))
}

/// `GET /auth/{provider}/start`.
#[handler]
pub async fn start(
    req: &Request,
    state: Data<&AppState>,
    Path(name): Path<String>,
    query: Query<StartQuery>,
) -> Response {
    let state: &AppState = &state;
    let Some(provider) = offered(state, &name) else {
        return unknown_provider(state);
    };
    let link_user = if query.link == "1" {
        match signed_in(req, state).await {
            Some((user, _)) => Some(user),
            None => return redirect("/signin"),
        }
    } else {
        None
    };
    let then_go = if let Some(code) = normalize_user_code(&query.device) {
        Some(format!("device:{code}"))
    } else if query.cli_redirect_uri.is_empty() {
        (plans::find(&query.plan).is_some() && matches!(query.interval.as_str(), "month" | "year"))
            .then(|| format!("checkout:{}:{}", query.plan, query.interval))
    } else {
        match CliRequest::check(
            &query.cli_redirect_uri,
            &query.cli_state,
            &query.cli_challenge,
            "S256",
        ) {
            Ok(request) => Some(request.to_line()),
            Err(why) => {
                return notice_page(
                    state,
                    "This sign-in link is not valid",
                    &[format!("{why}. Run `coditect login` again.")],
                    StatusCode::BAD_REQUEST,
                );
            }
        }
    };
    match providers::start(state, provider, link_user.as_ref(), then_go, now()).await {
        Ok(started) => {
            let mut resp = redirect(&started.url);
            Cookie {
                name: STATE_COOKIE,
                value: &started.state,
                path: "/auth",
                max_age_seconds: u32::try_from(LOGIN_LIFETIME_SECONDS).unwrap_or(600),
                same_site: SameSite::Lax,
                secure: Site::of(&state.config).secure,
            }
            .set_on(&mut resp);
            resp
        }
        Err(ProviderError::Provider(why)) => {
            tracing::error!(provider = provider.as_str(), reason = %why, "cannot reach the sign-in provider");
            notice_page(
                state,
                "Sign-in provider unavailable",
                &[format!(
                    "We could not reach {} just now. Try again in a minute, or sign in with your email and password.",
                    provider.label()
                )],
                StatusCode::BAD_GATEWAY,
            )
        }
        Err(e) => internal_error(state, &e),
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct CallbackQuery {
    code: String,
    state: String,
    error: String,
}

fn refused_page(state: &AppState, provider: Provider, e: &ProviderError) -> Response {
    let label = provider.label();
    let (heading, text, status) = match e {
        ProviderError::StateInvalid => (
            "This sign-in expired",
            format!(
                "This sign-in with {label} was already used, has expired, or was started in another browser. Start again from the sign-in page."
            ),
            StatusCode::BAD_REQUEST,
        ),
        ProviderError::Provider(_) => (
            "Sign-in refused",
            format!(
                "{label} did not confirm who you are, so you are not signed in. Start again from the sign-in page."
            ),
            StatusCode::BAD_REQUEST,
        ),
        ProviderError::EmailUnverified => (
            "Email not verified",
            format!(
                "{label} has not verified your email address, so we cannot use it. Verify it with {label} and try again, or sign up with your email and password."
            ),
            StatusCode::FORBIDDEN,
        ),
        ProviderError::EmailTaken { email } => (
            "This email already has an account",
            format!(
                "An account with {} already exists, and this browser is not signed in to it. If it is yours, sign in with your password first, then choose “Link {label}” on your account page.",
                escape(email)
            ),
            StatusCode::CONFLICT,
        ),
        ProviderError::IdentityTaken => (
            "Linked to another account",
            format!("This {label} account is linked to another CODITECT account already."),
            StatusCode::CONFLICT,
        ),
        ProviderError::AlreadyLinked => (
            "Already linked",
            format!("Your account is linked to another {label} account already."),
            StatusCode::CONFLICT,
        ),
        ProviderError::SignupClosed => (
            "Signup is closed",
            "New accounts cannot be created right now.".to_owned(),
            StatusCode::FORBIDDEN,
        ),
        ProviderError::SignupFull => return full_page(state, StatusCode::FORBIDDEN),
        ProviderError::NotConfigured => return unknown_provider(state),
        ProviderError::Account(e) => return internal_error(state, e),
    };
    let mut resp = notice_page(state, heading, &[text], status);
    clear_state_cookie(&mut resp, state);
    resp
}

fn clear_state_cookie(resp: &mut Response, state: &AppState) {
    Cookie {
        name: STATE_COOKIE,
        value: "",
        path: "/auth",
        max_age_seconds: 0,
        same_site: SameSite::Lax,
        secure: Site::of(&state.config).secure,
    }
    .set_on(resp);
}

/// `GET /auth/{provider}/callback`.
#[handler]
pub async fn callback(
    req: &Request,
    state: Data<&AppState>,
    Path(name): Path<String>,
    query: Query<CallbackQuery>,
) -> Response {
    let state: &AppState = &state;
    let Some(provider) = offered(state, &name) else {
        return unknown_provider(state);
    };
    if !query.error.is_empty() {
        let mut resp = notice_page(
            state,
            "Sign-in cancelled",
            &[format!(
                "{} did not sign you in. Start again from the sign-in page.",
                provider.label()
            )],
            StatusCode::BAD_REQUEST,
        );
        clear_state_cookie(&mut resp, state);
        return resp;
    }
    let browser_state = cookies::read(req, STATE_COOKIE);
    let current = signed_in(req, state).await.map(|(u, _)| u);
    let client = client(req, state);
    let finished = providers::finish(
        state,
        provider,
        &query.code,
        &query.state,
        browser_state.as_deref(),
        current.as_ref(),
        &client,
        now(),
    )
    .await;
    let site = Site::of(&state.config);
    match finished {
        Ok(Finished::Linked { .. }) => {
            let mut resp = redirect("/account?done=linked");
            clear_state_cookie(&mut resp, state);
            resp
        }
        Ok(Finished::SignedIn {
            signed,
            user,
            then_go,
            ..
        }) => {
            if let Some(code) = then_go
                .as_deref()
                .and_then(|t| t.strip_prefix("device:"))
                .and_then(normalize_user_code)
            {
                let mut resp = redirect(&format!("/device?user_code={code}"));
                let max_age = u32::try_from(signed.lifetime).unwrap_or(86_400);
                session_cookie(&mut resp, &signed.access_token, max_age, site.secure);
                clear_state_cookie(&mut resp, state);
                return resp;
            }
            if let Some(request) = then_go.as_deref().and_then(CliRequest::from_line) {
                let mut resp =
                    match cli_login::hand_over(state, &user, &request, &client, now()).await {
                        Ok(url) => redirect(&url),
                        Err(e) => return internal_error(state, &e),
                    };
                let max_age = u32::try_from(signed.lifetime).unwrap_or(86_400);
                session_cookie(&mut resp, &signed.access_token, max_age, site.secure);
                clear_state_cookie(&mut resp, state);
                return resp;
            }
            let checkout = then_go.as_deref().and_then(|t| {
                let mut parts = t.strip_prefix("checkout:")?.splitn(2, ':');
                Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
            });
            let mut resp = match checkout {
                Some((plan, interval)) => {
                    let token = match FormToken::for_request(req) {
                        Ok(t) => t,
                        Err(e) => return internal_error(state, &e),
                    };
                    let values = Values {
                        email: user.email.clone(),
                        company_name: user.organization_name.clone(),
                        plan,
                        interval,
                    };
                    start_checkout(req, state, &site, &token, &values, &user).await
                }
                None => redirect("/account"),
            };
            let max_age = u32::try_from(signed.lifetime).unwrap_or(86_400);
            session_cookie(&mut resp, &signed.access_token, max_age, site.secure);
            clear_state_cookie(&mut resp, state);
            resp
        }
        Err(e) => refused_page(state, provider, &e),
    }
}
