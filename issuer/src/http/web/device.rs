//! `/device`: where a person approves `coditect login --device` (RFC 8628)
//! by its user code. Signed in, the page asks for the code (filled in from
//! `?user_code=`) and a CSRF-checked post approves it; not signed in, it
//! offers the providers, whose sign-in comes back here.

use poem::http::StatusCode;
use poem::web::{Data, Form, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;

use super::Site;
use super::account_page::{respond, signed_in};
use super::csrf::{self, FormToken};
use super::html::{Page, escape};
use super::signup::{internal_error, notice_page};
use crate::app::{AppState, cli_login, now, providers};
use crate::domain::provider::normalize_user_code;
use crate::http::client;

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct DeviceQuery {
    user_code: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct DeviceForm {
    csrf_token: String,
    user_code: String,
}

fn form(token: &FormToken, code: &str, error: Option<&str>) -> String {
    let banner = error
        .map(|e| format!("<p class=\"banner\" role=\"alert\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    format!(
        "<h1>Sign in a device</h1>\n{banner}\
         <p>Enter the code <code>coditect login --device</code> shows to sign it in to your account.</p>\n\
         <form class=\"signup\" method=\"post\" action=\"/device\">\n{csrf}\n\
         <div class=\"field\">\n<label for=\"user_code\">Code</label>\n\
         <input id=\"user_code\" name=\"user_code\" value=\"{code}\" autocomplete=\"off\" required>\n</div>\n\
         <button type=\"submit\" id=\"approve\">Sign in the device</button>\n</form>",
        csrf = token.field(),
        code = escape(code),
    )
}

/// `GET /device`.
#[handler]
pub async fn page(req: &Request, state: Data<&AppState>, query: Query<DeviceQuery>) -> Response {
    let state: &AppState = &state;
    let token = match FormToken::for_account(req) {
        Ok(t) => t,
        Err(e) => return internal_error(state, &e),
    };
    let code = normalize_user_code(&query.user_code);
    let body = if signed_in(req, state).await.is_some() {
        form(&token, code.as_deref().unwrap_or_default(), None)
    } else {
        let query = code
            .as_deref()
            .map(|c| format!("?device={c}"))
            .unwrap_or_default();
        let mut buttons = String::new();
        for p in providers::offered_providers(state) {
            buttons.push_str(&format!(
                "<p><a class=\"button\" id=\"with-{name}\" href=\"/auth/{name}/start{query}\">Sign in with {label}</a></p>\n",
                name = p.as_str(),
                label = p.label(),
            ));
        }
        format!(
            "<h1>Sign in a device</h1>\n<p>Sign in to approve the code <code>coditect login --device</code> shows.</p>\n\
             {buttons}<p>With a password: <a href=\"/signin\">sign in here</a>, then open this page again.</p>"
        )
    };
    respond(state, &token, Page::new("Sign in a device", body))
}

/// `POST /device`: approves the code for the signed-in account.
#[handler]
pub async fn approve(
    req: &Request,
    state: Data<&AppState>,
    form_data: poem::Result<Form<DeviceForm>>,
) -> Response {
    let state: &AppState = &state;
    let token = match FormToken::for_account(req) {
        Ok(t) => t,
        Err(e) => return internal_error(state, &e),
    };
    let Ok(Form(posted)) = form_data else {
        return respond(
            state,
            &token,
            Page::new(
                "Sign in a device",
                form(&token, "", Some("Enter the code.")),
            )
            .status(StatusCode::UNPROCESSABLE_ENTITY),
        );
    };
    let site = Site::of(&state.config);
    if csrf::check_account(req, Some(&posted.csrf_token), &site.origin).is_err() {
        return respond(
            state,
            &token,
            Page::new(
                "Sign in a device",
                form(
                    &token,
                    &posted.user_code,
                    Some("This page expired: send it again."),
                ),
            )
            .status(StatusCode::FORBIDDEN),
        );
    }
    let Some((user, _)) = signed_in(req, state).await else {
        return super::account_page::redirect("/device");
    };
    let again = |msg: &str| {
        respond(
            state,
            &token,
            Page::new(
                "Sign in a device",
                form(&token, &posted.user_code, Some(msg)),
            )
            .status(StatusCode::UNPROCESSABLE_ENTITY),
        )
    };
    let Some(code) = normalize_user_code(&posted.user_code) else {
        return again(
            "This is not a code from coditect login --device (8 letters, like BCDF-GHJK).",
        );
    };
    match cli_login::approve_device(state, &user, &code, &client(req, state), now()).await {
        Ok(true) => notice_page(
            state,
            "Device signed in",
            &[format!(
                "The device is signed in as {}. Go back to its terminal.",
                escape(&user.email)
            )],
            StatusCode::OK,
        ),
        Ok(false) => {
            again("This code is unknown, expired or used. Run coditect login --device again.")
        }
        Err(e) => internal_error(state, &e),
    }
}
