//! `/cli/login`: where `coditect login` sends the browser (RFC 8252). The
//! query names the CLI's loopback redirect, its `state` and its PKCE
//! challenge (`domain::provider::CliRequest`). Signed in already, the
//! person confirms with a button (a CSRF-checked post) and the browser
//! goes to the CLI with a one-time code (`app::cli_login`). Not signed in,
//! the page offers the configured providers: their sign-in ends at the CLI
//! the same way.

use poem::http::StatusCode;
use poem::web::{Data, Form, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;

use super::Site;
use super::account_page::{redirect, respond, signed_in};
use super::csrf::{self, FormToken};
use super::html::{Page, escape};
use super::signup::{internal_error, notice_page};
use crate::app::{AppState, cli_login, now, providers};
use crate::domain::provider::CliRequest;
use crate::http::client;

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct CliQuery {
    redirect_uri: String,
    state: String,
    code_challenge: String,
    code_challenge_method: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct CliConfirm {
    csrf_token: String,
    redirect_uri: String,
    state: String,
    code_challenge: String,
}

fn bad_request(state: &AppState, why: &str) -> Response {
    notice_page(
        state,
        "This sign-in link is not valid",
        &[
            format!("{why}."),
            "Run `coditect login` again and open the page it shows.".to_owned(),
        ],
        StatusCode::BAD_REQUEST,
    )
}

/// The query of `/auth/{provider}/start` that ends a provider sign-in at
/// the CLI.
pub fn start_query(request: &CliRequest) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    format!(
        "?cli_redirect_uri={}&amp;cli_state={}&amp;cli_challenge={}",
        enc(&request.redirect_uri),
        enc(&request.state),
        enc(&request.code_challenge)
    )
}

/// `GET /cli/login`.
#[handler]
pub async fn page(req: &Request, state: Data<&AppState>, query: Query<CliQuery>) -> Response {
    let state: &AppState = &state;
    let request = match CliRequest::check(
        &query.redirect_uri,
        &query.state,
        &query.code_challenge,
        &query.code_challenge_method,
    ) {
        Ok(r) => r,
        Err(why) => return bad_request(state, why),
    };
    let token = match FormToken::for_account(req) {
        Ok(t) => t,
        Err(e) => return internal_error(state, &e),
    };
    let body = match signed_in(req, state).await {
        Some((user, _)) => format!(
            "<h1>Sign in the CODITECT CLI</h1>\n\
             <p>The <code>coditect</code> command on this computer asks to sign in as <strong id=\"cli-email\">{email}</strong>.</p>\n\
             <form method=\"post\" action=\"/cli/login\">\n{csrf}\n\
             <input type=\"hidden\" name=\"redirect_uri\" value=\"{uri}\">\n\
             <input type=\"hidden\" name=\"state\" value=\"{st}\">\n\
             <input type=\"hidden\" name=\"code_challenge\" value=\"{ch}\">\n\
             <button type=\"submit\" id=\"allow\">Sign in the CLI</button>\n</form>\n\
             <p class=\"hint\">Did not run <code>coditect login</code> just now? Close this page.</p>",
            email = escape(&user.email),
            csrf = token.field(),
            uri = escape(&request.redirect_uri),
            st = escape(&request.state),
            ch = escape(&request.code_challenge),
        ),
        None => {
            let offered = providers::offered_providers(state);
            let mut buttons = String::new();
            for p in &offered {
                buttons.push_str(&format!(
                    "<p><a class=\"button\" id=\"with-{name}\" href=\"/auth/{name}/start{query}\">Sign in with {label}</a></p>\n",
                    name = p.as_str(),
                    label = p.label(),
                    query = start_query(&request),
                ));
            }
            format!(
                "<h1>Sign in the CODITECT CLI</h1>\n{buttons}\
                 <p>With a password instead: <a href=\"/signin\">sign in here</a>, then open the page \
                 <code>coditect login</code> showed again, or run <code>coditect login --password</code>.</p>"
            )
        }
    };
    // The confirmation posts to ourselves; the answer redirects to the
    // CLI's loopback (form-action 'self' plus that origin).
    let loopback = super::origin_of(&request.redirect_uri);
    respond(
        state,
        &token,
        Page::new("Sign in the CLI", body).form_action(loopback),
    )
}

/// `POST /cli/login`: the signed-in person confirmed.
#[handler]
pub async fn confirm(
    req: &Request,
    state: Data<&AppState>,
    form: poem::Result<Form<CliConfirm>>,
) -> Response {
    let state: &AppState = &state;
    let Ok(Form(form)) = form else {
        return bad_request(state, "The form was not complete");
    };
    let site = Site::of(&state.config);
    if csrf::check_account(req, Some(&form.csrf_token), &site.origin).is_err() {
        return bad_request(state, "The page expired");
    }
    let request = match CliRequest::check(
        &form.redirect_uri,
        &form.state,
        &form.code_challenge,
        "S256",
    ) {
        Ok(r) => r,
        Err(why) => return bad_request(state, why),
    };
    let Some((user, _)) = signed_in(req, state).await else {
        return redirect("/signin");
    };
    match cli_login::hand_over(state, &user, &request, &client(req, state), now()).await {
        Ok(url) => redirect(&url),
        Err(e) => internal_error(state, &e),
    }
}
