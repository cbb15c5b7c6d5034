//! The pages mailed links open: `/signup/verify` (confirm an address, then
//! continue to the payment chosen in the signup form) and `/signup/reset`
//! (ask for a password-reset link; choose a new password with one).
//!
//! Opening a link (`GET`) changes nothing: mail scanners that fetch links
//! cannot use them up. The page shows a form whose post (CSRF-checked like
//! the signup form) uses the single-use token. The pages live under
//! `/signup` so that they share its CSRF cookie.

use poem::http::StatusCode;
use poem::web::{Data, Form, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::Site;
use super::csrf::{self, FormToken};
use super::html::{Page, escape, message};
use super::signup::{expired_page, internal_error, notice_page, start_checkout};
use super::signup_form::Values;
use crate::app::{AppState, accounts, now};
use crate::domain::account::AccountError;
use crate::domain::input;

/// `?token=…` (and, after a web signup, `&plan=…&interval=…`).
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct LinkQuery {
    token: String,
    plan: String,
    interval: String,
}

/// The posted forms of these pages. Missing fields are empty.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct AccountForm {
    csrf_token: String,
    token: String,
    plan: String,
    interval: String,
    email: String,
    password: String,
}

/// A page with one form posting to `action`.
#[allow(clippy::too_many_arguments)]
fn form_page(
    state: &AppState,
    token: &FormToken,
    heading: &str,
    intro: &str,
    action: &str,
    fields: &str,
    button: &str,
    status: StatusCode,
) -> Response {
    let body = format!(
        "<h1>{heading}</h1>\n<p>{intro}</p>\n\
         <form class=\"signup\" method=\"post\" action=\"{action}\">\n{csrf}\n{fields}\
         <button type=\"submit\" id=\"submit\">{button}</button>\n</form>",
        heading = escape(heading),
        csrf = token.field(),
    );
    let site = Site::of(&state.config);
    // The confirmation's post is answered with a 303 to Stripe Checkout,
    // which the page's `form-action` must allow (as the signup form's).
    let checkout = if action == "/signup/verify" {
        site.checkout_origin.clone()
    } else {
        None
    };
    let mut resp = Page::new(heading, body)
        .status(status)
        .no_store()
        .form_action(checkout)
        .respond(state);
    token.set_cookie(&mut resp, site.secure);
    resp
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
        escape(value)
    )
}

fn link_invalid_page(state: &AppState) -> Response {
    Page::new(
        "This link does not work",
        message(
            "This link does not work",
            &[
                "It was used already, has expired, or is not one of ours. Nothing was changed."
                    .to_owned(),
            ],
            Some(("/signup/reset", "Ask for a new link")),
        ),
    )
    .status(StatusCode::BAD_REQUEST)
    .no_store()
    .respond(state)
}

/// The posted form, after the CSRF check; `Err` is the page to answer.
fn checked_form(
    req: &Request,
    state: &AppState,
    form: poem::Result<Form<AccountForm>>,
) -> Result<(AccountForm, FormToken), Response> {
    let Ok(Form(form)) = form else {
        return Err(expired_page(state));
    };
    let site = Site::of(&state.config);
    if let Err(refusal) = csrf::check(req, Some(&form.csrf_token), &site.origin) {
        tracing::warn!(?refusal, "account form refused (CSRF)");
        return Err(expired_page(state));
    }
    match FormToken::for_request(req) {
        Ok(t) => Ok((form, t)),
        Err(e) => Err(internal_error(state, &e)),
    }
}

/// `GET /signup/verify?token=…`: the button that confirms the address.
#[handler]
pub async fn verify_page(
    req: &Request,
    state: Data<&AppState>,
    query: Option<Query<LinkQuery>>,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    let token = match FormToken::for_request(req) {
        Ok(t) => t,
        Err(e) => return internal_error(&state, &e),
    };
    let pays = !query.plan.is_empty();
    let fields = format!(
        "{}{}{}",
        hidden("token", &query.token),
        hidden("plan", &query.plan),
        hidden("interval", &query.interval)
    );
    form_page(
        &state,
        &token,
        "Confirm your email",
        if pays {
            "One step left before the payment: confirm that this address is yours."
        } else {
            "Confirm that this address is yours."
        },
        "/signup/verify",
        &fields,
        if pays {
            "Confirm and continue to payment"
        } else {
            "Confirm my email"
        },
        StatusCode::OK,
    )
}

/// `POST /signup/verify`: uses the link, then continues to the payment.
#[handler]
pub async fn verify_submit(
    req: &Request,
    state: Data<&AppState>,
    form: poem::Result<Form<AccountForm>>,
) -> Response {
    let state: &AppState = &state;
    let (form, token) = match checked_form(req, state, form) {
        Ok(f) => f,
        Err(page) => return page,
    };
    let client = crate::http::client(req, state);
    let user = match accounts::verify_email(state, &form.token, &client, now()).await {
        Ok(u) => u,
        Err(AccountError::LinkInvalid) => return link_invalid_page(state),
        Err(e) => return internal_error(state, &e),
    };
    if form.plan.is_empty() || state.stripe().is_err() {
        return notice_page(
            state,
            "Your email is confirmed",
            &[format!("Thank you: {} is confirmed.", escape(&user.email))],
            StatusCode::OK,
        );
    }
    let values = Values {
        email: user.email.clone(),
        company_name: user.organization_name.clone(),
        plan: form.plan,
        interval: form.interval,
    };
    let site = Site::of(&state.config);
    start_checkout(req, state, &site, &token, &values, &user).await
}

/// `GET /signup/reset`: the form that asks for a link; with `?token=…`
/// (the link), the form that sets a new password.
#[handler]
pub async fn reset_page(
    req: &Request,
    state: Data<&AppState>,
    query: Option<Query<LinkQuery>>,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    let token = match FormToken::for_request(req) {
        Ok(t) => t,
        Err(e) => return internal_error(&state, &e),
    };
    if query.token.is_empty() {
        ask_page(&state, &token, "", StatusCode::OK)
    } else {
        new_password_page(&state, &token, &query.token, None, StatusCode::OK)
    }
}

fn ask_page(state: &AppState, token: &FormToken, error: &str, status: StatusCode) -> Response {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"error\" id=\"email-error\">{}</p>\n",
            escape(error)
        )
    };
    form_page(
        state,
        token,
        "Reset your password",
        "Enter the email of your account; we mail it a link to choose a new password.",
        "/signup/reset",
        &format!(
            "<label for=\"email\">Email</label>\n\
             <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required>\n{error}"
        ),
        "Mail me a link",
        status,
    )
}

fn new_password_page(
    state: &AppState,
    token: &FormToken,
    link_token: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error\" id=\"password-error\">{}</p>\n",
                escape(e)
            )
        })
        .unwrap_or_default();
    form_page(
        state,
        token,
        "Choose a new password",
        "Setting a new password signs out every session of your account.",
        "/signup/reset",
        &format!(
            "{}<label for=\"password\">New password</label>\n\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\n{error}",
            hidden("token", link_token)
        ),
        "Set the new password",
        status,
    )
}

/// `POST /signup/reset`: asks for a link (an `email`), or uses one (a
/// `token` and a `password`). Asking answers the same page whether the
/// email has an account or not.
#[handler]
pub async fn reset_submit(
    req: &Request,
    state: Data<&AppState>,
    form: poem::Result<Form<AccountForm>>,
) -> Response {
    let state: &AppState = &state;
    let (form, token) = match checked_form(req, state, form) {
        Ok(f) => f,
        Err(page) => return page,
    };
    let client = crate::http::client(req, state);
    if form.token.is_empty() {
        let email = match input::email("email", &form.email) {
            Ok(e) => e,
            Err(e) => {
                return ask_page(state, &token, &e.detail, StatusCode::UNPROCESSABLE_ENTITY);
            }
        };
        return match accounts::request_password_reset(state, &email, &client, now()).await {
            Ok(()) => notice_page(
                state,
                "Check your inbox",
                &[format!(
                    "If <strong>{}</strong> has an account, a link to choose a new password is on its way. It works once, for an hour.",
                    escape(&email)
                )],
                StatusCode::OK,
            ),
            Err(e) => internal_error(state, &e),
        };
    }
    let password = Zeroizing::new(form.password);
    if let Err(e) = input::password("password", &password) {
        return new_password_page(
            state,
            &token,
            &form.token,
            Some(&e.detail),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    match accounts::reset_password(state, &form.token, password, &client, now()).await {
        Ok(user) => notice_page(
            state,
            "Your password is changed",
            &[format!(
                "Sign in to {} with the new password. Every earlier session has ended.",
                escape(&user.email)
            )],
            StatusCode::OK,
        ),
        Err(AccountError::LinkInvalid) => link_invalid_page(state),
        Err(e) => internal_error(state, &e),
    }
}
