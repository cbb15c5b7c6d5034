//! Where Stripe Checkout sends the browser back: `GET /signup/success`
//! (the new license key, once, to the browser that started the checkout;
//! a page that reloads itself while Stripe's confirmation is on its way)
//! and `GET /signup/cancel`.

use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;

use super::cookies;
use super::html::{Page, escape, message};
use super::landing::install_steps;
use super::signup::{CHECKOUT_COOKIE, internal_error};
use crate::app::billing::checkout;
use crate::app::{AppState, now};
use crate::domain::billing::Reveal;

/// Seconds between reloads of the waiting page.
const WAIT_REFRESH_SECONDS: u32 = 2;

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct SuccessQuery {
    session_id: String,
}

/// Stripe's session ids are `cs_` and letters, digits and underscores.
fn plausible_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `GET /signup/success?session_id=…`.
#[handler]
pub async fn page(
    req: &Request,
    state: Data<&AppState>,
    query: Option<Query<SuccessQuery>>,
) -> Response {
    let state: &AppState = &state;
    let session_id = query.map(|q| q.0.session_id).unwrap_or_default();
    let cookie = cookies::read(req, CHECKOUT_COOKIE);
    let (Some(cookie), true) = (cookie, plausible_session_id(&session_id)) else {
        return unknown_page(state);
    };
    let browser = checkout::browser_hash(&cookie);
    match checkout::reveal(state, &session_id, &browser, now()).await {
        Ok(Reveal::Unknown) => unknown_page(state),
        Ok(Reveal::Pending) => waiting_page(state, &session_id),
        Ok(Reveal::Key {
            key, plan, email, ..
        }) => key_page(state, &key, &plan, &email),
        Ok(Reveal::AlreadyShown { email, key_hint }) => shown_page(state, &email, &key_hint),
        Err(e) => internal_error(state, &e),
    }
}

fn support_line(state: &AppState) -> String {
    let support = escape(&state.config.mail.support_email);
    format!("Need help? Write to <a href=\"mailto:{support}\">{support}</a>.")
}

fn unknown_page(state: &AppState) -> Response {
    Page::new(
        "Order not found",
        message(
            "We cannot show this order here",
            &[
                "This link does not match an order started in this browser, or it is too old."
                    .to_owned(),
                "If you paid, your license key is in the email we sent you after the payment."
                    .to_owned(),
                support_line(state),
            ],
            Some(("/", "Go to the home page")),
        ),
    )
    .status(StatusCode::NOT_FOUND)
    .no_store()
    .respond(state)
}

fn waiting_page(state: &AppState, session_id: &str) -> Response {
    let again = format!("/signup/success?session_id={session_id}");
    Page::new(
        "Finishing your order",
        message(
            "Finishing your order…",
            &[
                "Thank you! We are waiting for the payment confirmation from Stripe to create your license. This usually takes a few seconds; this page reloads by itself.".to_owned(),
                "Please keep it open: your license key is shown here once, and sent to you by email as well.".to_owned(),
                support_line(state),
            ],
            Some((&again, "Check again now")),
        ),
    )
    .refresh(WAIT_REFRESH_SECONDS)
    .no_store()
    .respond(state)
}

fn key_page(state: &AppState, key: &str, plan: &str, email: &str) -> Response {
    let body = format!(
        "<section class=\"welcome\">\n<h1>Welcome to CODITECT!</h1>\n\
         <p>Your <strong>{plan}</strong> license is ready.</p>\n\
         <h2>Your license key</h2>\n\
         <p><code class=\"key\" id=\"license-key\">{key}</code></p>\n\
         <p class=\"notice\">Copy it now: for your security this page shows it only once. \
         We also emailed it to <strong id=\"email\">{email}</strong>. Keep it private: anyone \
         who has it can activate a machine on your license.</p>\n\
         <h2 id=\"install\">Install and activate</h2>\n{steps}\n\
         <p>{support}</p>\n</section>",
        plan = escape(plan),
        key = escape(key),
        email = escape(email),
        steps = install_steps(key),
        support = support_line(state),
    );
    Page::new("Welcome to CODITECT", body)
        .no_store()
        .respond(state)
}

fn shown_page(state: &AppState, email: &str, key_hint: &str) -> Response {
    Page::new(
        "License key already shown",
        message(
            "Your license key was already shown",
            &[
                "For your security the key is shown on this page only once.".to_owned(),
                format!(
                    "It is also in the email we sent to <strong>{}</strong>: the key that ends in <code>{}</code>.",
                    escape(email),
                    escape(key_hint)
                ),
                "To install: <code>npm install -g @coditect-ai/coditect-core</code>, then <code>coditect activate</code> with that key. If npm answers that the package is not found, it is not published yet: write to us for the CLI.".to_owned(),
                support_line(state),
            ],
            Some(("/#install", "Installation steps")),
        ),
    )
    .no_store()
    .respond(state)
}

/// The cancel page (Stripe's "back" link).
#[handler]
pub fn cancel(state: Data<&AppState>) -> Response {
    Page::new(
        "Checkout cancelled",
        message(
            "Checkout cancelled",
            &[
                "Nothing was charged.".to_owned(),
                "Your account is saved: when you are ready, send the signup form again with the same email and password.".to_owned(),
                support_line(&state),
            ],
            Some(("/signup", "Back to the signup form")),
        ),
    )
    .no_store()
    .respond(&state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked_before_use() {
        assert!(plausible_session_id("cs_test_a1B2c3"));
        assert!(!plausible_session_id(""));
        assert!(!plausible_session_id("cs_<script>"));
        assert!(!plausible_session_id(&"a".repeat(256)));
    }
}
