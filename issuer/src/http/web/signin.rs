//! `/signin` (email and password, the API's sign-in with its delays after
//! failures) and `/signout` (a CSRF-checked post that ends the session).

use poem::http::StatusCode;
use poem::web::{Data, Form, Query};
use poem::{Request, Response, handler};
use zeroize::Zeroizing;

use super::Site;
use super::account_page::{
    AccountPost, Done, checked, moment, redirect, respond, session_cookie, signed_in,
};
use super::csrf::FormToken;
use super::html::{Page, escape};
use super::signup::internal_error;
use crate::app::{AppState, accounts, now};
use crate::domain::account::AccountError;
use crate::domain::input;
use crate::http::client;

fn signin_form(state: &AppState, token: &FormToken, email: &str, error: Option<&str>) -> String {
    let banner = error
        .map(|e| format!("<p class=\"banner\" role=\"alert\" id=\"signin-error\">{e}</p>\n"))
        .unwrap_or_default();
    let described = if error.is_some() {
        " aria-describedby=\"signin-error\""
    } else {
        ""
    };
    format!(
        "<h1>Sign in</h1>\n<p>Your account shows your licenses and machines, and opens billing.</p>\n\
         {banner}{providers}<form class=\"signup\" method=\"post\" action=\"/signin\">\n{csrf}\n\
         <div class=\"field\">\n<label for=\"email\">Email</label>\n\
         <input id=\"email\" name=\"email\" type=\"email\" value=\"{email}\" autocomplete=\"username\" required{described}>\n</div>\n\
         <div class=\"field\">\n<label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\n</div>\n\
         <button type=\"submit\" id=\"submit\">Sign in</button>\n</form>\n\
         <p><a href=\"/signup/reset\">Forgot your password?</a> · <a href=\"/signup\">No account yet? Start your pilot</a></p>",
        csrf = token.field(),
        email = escape(email),
        providers = super::providers::buttons(state, "Sign in", None),
    )
}

/// `GET /signin` (to `/account` when already signed in).
#[handler]
pub async fn signin_page(req: &Request, state: Data<&AppState>, done: Query<Done>) -> Response {
    if signed_in(req, &state).await.is_some() {
        return redirect("/account");
    }
    let token = match FormToken::for_account(req) {
        Ok(t) => t,
        Err(e) => return internal_error(&state, &e),
    };
    let mut body = String::new();
    if done.done == "signed_out" {
        body.push_str("<p class=\"notice\" role=\"status\">You are signed out.</p>\n");
    }
    body.push_str(&signin_form(&state, &token, "", None));
    respond(&state, &token, Page::new("Sign in", body))
}

/// `POST /signin`: a session and its cookie, then the account page.
#[handler]
pub async fn signin_submit(
    req: &Request,
    state: Data<&AppState>,
    form: poem::Result<Form<AccountPost>>,
) -> Response {
    let form = match checked(req, &state, form) {
        Ok(f) => f,
        Err(page) => return page,
    };
    let token = match FormToken::for_account(req) {
        Ok(t) => t,
        Err(e) => return internal_error(&state, &e),
    };
    let email = form.email.trim().to_owned();
    let again = |status: StatusCode, error: &str| {
        respond(
            &state,
            &token,
            Page::new("Sign in", signin_form(&state, &token, &email, Some(error))).status(status),
        )
    };
    let Ok(valid_email) = input::email("email", &email) else {
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter the email address of your account.",
        );
    };
    let password = Zeroizing::new(form.password);
    let client = client(req, &state);
    match accounts::sign_in(&state, &client, &valid_email, password, now()).await {
        Ok(signed) => {
            let mut resp = redirect("/account");
            let max_age = u32::try_from(signed.lifetime).unwrap_or(86_400);
            session_cookie(
                &mut resp,
                &signed.access_token,
                max_age,
                Site::of(&state.config).secure,
            );
            resp
        }
        Err(AccountError::InvalidCredentials) => again(
            StatusCode::UNAUTHORIZED,
            "The email or the password is wrong.",
        ),
        Err(AccountError::Locked { until }) => again(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many failed sign-ins: try again after {}.",
                escape(&moment(until))
            ),
        ),
        Err(e) => internal_error(&state, &e),
    }
}

/// `POST /signout`: the session ends, its cookie goes.
#[handler]
pub async fn signout(
    req: &Request,
    state: Data<&AppState>,
    form: poem::Result<Form<AccountPost>>,
) -> Response {
    if let Err(page) = checked(req, &state, form) {
        return page;
    }
    if let Some((user, sid)) = signed_in(req, &state).await {
        let client = client(req, &state);
        if let Err(e) = accounts::sign_out(&state, &user, &sid, &client, now()).await {
            return internal_error(&state, &e);
        }
    }
    let mut resp = redirect("/signin?done=signed_out");
    session_cookie(&mut resp, "", 0, Site::of(&state.config).secure);
    resp
}
