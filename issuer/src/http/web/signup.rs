//! `GET /signup` and `POST /signup`: the signup form (email, password,
//! company, plan and billing interval), then the account and a Stripe
//! Checkout Session, and a 303 to Stripe's payment page.
//!
//! A new address gets its account and a mail with the link that confirms
//! it and continues to the payment (`account.rs`); the form answers "check
//! your inbox". A registered address with the wrong password gets exactly
//! the same answer, and its owner a mail with a password-reset link, so
//! the form does not tell who has an account. Someone who already has an
//! account (an earlier checkout abandoned, say) and types its password
//! continues as that account straight to the payment. Wrong passwords
//! count towards the same delays as sign-ins.
//!
//! The form itself (its fields, their checks and its page) is in
//! `signup_form.rs`.

use poem::http::{HeaderValue, StatusCode, header};
use poem::web::{Data, Form, Query};
use poem::{Request, Response, handler};
use zeroize::Zeroizing;

use super::Site;
use super::cookies::{self, Cookie, SameSite};
use super::csrf::{self, FormToken};
use super::html::{Page, escape, message};
use super::signup_form::{FieldErrors, FormQuery, SignupForm, Values, check_fields, form_page};
use crate::app::accounts::{self, PasswordCheck, check_password};
use crate::app::billing::{BillingError, checkout};
use crate::app::{AppState, now};
use crate::domain::StorageError;
use crate::domain::account::{AccountError, User};

/// The cookie naming the browser that started a checkout.
pub const CHECKOUT_COOKIE: &str = "coditect_checkout";
/// How long that cookie lives: as long as a Checkout Session stays open
/// (Stripe: 24 hours), after which the key is in the mail only.
const CHECKOUT_COOKIE_SECONDS: u32 = 24 * 3600;

/// A page that only explains why nothing can be done here (titled as its
/// heading), with a way back to the home page; never cached.
pub(super) fn notice_page(
    state: &AppState,
    heading: &str,
    paragraphs: &[String],
    status: StatusCode,
) -> Response {
    Page::new(
        heading,
        message(heading, paragraphs, Some(("/", "Back to the home page"))),
    )
    .status(status)
    .no_store()
    .respond(state)
}

/// "write to <support>" as a mail link.
pub(super) fn support_link(state: &AppState) -> String {
    let support = escape(&state.config.mail.support_email);
    format!("<a href=\"mailto:{support}\">{support}</a>")
}

fn closed_page(state: &AppState, status: StatusCode) -> Response {
    let support = support_link(state);
    notice_page(
        state,
        "Pilot signup is closed",
        &[
            "We are not taking new pilot signups right now.".to_owned(),
            format!(
                "To hear when it opens again, or if you already have a license and need help, write to {support}."
            ),
        ],
        status,
    )
}

/// Why the form cannot be used at all right now, as the page that says so:
/// signup closed, the pilot full, or payments not configured.
async fn unavailable(state: &AppState, status_when_refused: StatusCode) -> Option<Response> {
    if !state.config.enable_pilot_signup {
        return Some(closed_page(state, status_when_refused));
    }
    match pilot_is_full(state).await {
        Ok(false) => {}
        Ok(true) => return Some(full_page(state, status_when_refused)),
        Err(e) => return Some(internal_error(state, &e)),
    }
    if state.stripe().is_err() {
        let support = support_link(state);
        return Some(notice_page(
            state,
            "Payments are not available",
            &[
                "This server cannot take payments at the moment, so new pilots cannot start here."
                    .to_owned(),
                format!("Please try again later, or write to {support}."),
            ],
            StatusCode::SERVICE_UNAVAILABLE,
        ));
    }
    None
}

/// Whether as many organizations have paid as `PILOT_USERS_LIMIT` allows.
async fn pilot_is_full(state: &AppState) -> Result<bool, StorageError> {
    Ok(state.store.paid_organization_count(None).await? >= state.config.pilot_users_limit)
}

pub(super) fn full_page(state: &AppState, status: StatusCode) -> Response {
    let support = support_link(state);
    notice_page(
        state,
        "The pilot is full",
        &[
            "Every place in this pilot has been taken, so we cannot start new pilots right now."
                .to_owned(),
            format!("Write to {support} to join the waiting list."),
        ],
        status,
    )
}

/// A failure on our side, logged with its cause; the page says only that.
pub fn internal_error(state: &AppState, cause: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %cause, "web page failed");
    let support = support_link(state);
    Page::new(
        "Something went wrong",
        message(
            "Something went wrong on our side",
            &[
                "Nothing was charged. Please try again in a minute.".to_owned(),
                format!("If it keeps happening, write to {support}."),
            ],
            Some(("/signup", "Back to the signup form")),
        ),
    )
    .status(StatusCode::INTERNAL_SERVER_ERROR)
    .no_store()
    .respond(state)
}

/// The CSRF refusal: the form is stale or was not ours.
pub(super) fn expired_page(state: &AppState) -> Response {
    Page::new(
        "This form expired",
        message(
            "This form expired",
            &[format!(
                "For your security we could not accept this form: it is too old, or it was not sent from this site ({}). Nothing was saved or charged. Reload the form and send it again.",
                escape(&state.config.public_base_url)
            )],
            Some(("/signup", "Reload the signup form")),
        ),
    )
    .status(StatusCode::FORBIDDEN)
    .no_store()
    .respond(state)
}

/// `GET /signup`.
#[handler]
pub async fn show(
    req: &Request,
    state: Data<&AppState>,
    query: Option<Query<FormQuery>>,
) -> Response {
    if let Some(page) = unavailable(&state, StatusCode::OK).await {
        return page;
    }
    let site = Site::of(&state.config);
    let token = match FormToken::for_request(req) {
        Ok(t) => t,
        Err(e) => return internal_error(&state, &e),
    };
    let query = query.map(|q| q.0).unwrap_or_default();
    let plan = if crate::domain::plans::find(&query.plan).is_some() {
        query.plan
    } else {
        "pilot-starter".to_owned()
    };
    let interval = if query.interval == "year" {
        "year"
    } else {
        "month"
    };
    let values = Values {
        email: String::new(),
        company_name: String::new(),
        plan,
        interval: interval.to_owned(),
    };
    form_page(
        &state,
        &site,
        &token,
        &values,
        &FieldErrors::default(),
        None,
        StatusCode::OK,
    )
}

/// The account to buy for: the existing one of this email when the
/// password is right (`Some`), or `None` when the answer is "check your
/// inbox" (a new account, or a registered address with another password:
/// the same answer). `Err` is the page to answer with.
async fn account(
    req: &Request,
    state: &AppState,
    values: &Values,
    password: Zeroizing<String>,
) -> Result<Option<User>, AccountOutcome> {
    let now = now();
    let client = crate::http::client(req, state);
    let email = values.email.clone();
    let check = check_password(
        state,
        &client,
        &email.to_ascii_lowercase(),
        password.clone(),
        now,
        Some("web signup"),
    )
    .await
    .map_err(AccountOutcome::Failed)?;
    match check {
        PasswordCheck::Right(user) => return Ok(Some(user)),
        PasswordCheck::Locked { .. } | PasswordCheck::Wrong => {
            if matches!(check, PasswordCheck::Locked { .. }) {
                // The password was not checked: spend the same time anyway.
                let _ = crate::app::passwords::verify(None, password).await;
            }
            accounts::signup_of_registered_address(state, &email, &client, now)
                .await
                .map_err(AccountOutcome::Failed)?;
            return Ok(None);
        }
        PasswordCheck::NoAccount => {}
    }
    let next = accounts::Continuation {
        plan: &values.plan,
        interval: &values.interval,
    };
    let created = accounts::register(
        state,
        &email,
        password,
        &values.company_name,
        &client,
        Some("web signup"),
        Some(next),
        now,
    )
    .await;
    match created {
        // Registered between our look-up and the insert (a double submit):
        // its owner was mailed; the answer is the same.
        Ok(_) | Err(AccountError::EmailTaken) => Ok(None),
        Err(AccountError::SignupFull) => Err(AccountOutcome::Full),
        Err(other) => Err(AccountOutcome::Failed(other)),
    }
}

/// The answer to every signup that needs the mailbox: a new account, or a
/// registered address with another password (the same page for both).
fn check_inbox_page(state: &AppState, email: &str) -> Response {
    notice_page(
        state,
        "Check your inbox",
        &[
            format!(
                "We sent a mail to <strong>{}</strong>. Open the link in it to confirm your address and continue to the payment.",
                escape(email)
            ),
            "The link works once, for 24 hours. If this address already has an account, the mail says how to sign in or choose a new password.".to_owned(),
            format!(
                "No mail after a few minutes? Look in the spam folder, or write to {}.",
                support_link(state)
            ),
        ],
        StatusCode::OK,
    )
}

/// Why no account could be used.
enum AccountOutcome {
    /// The pilot filled up.
    Full,
    Failed(AccountError),
}

/// `POST /signup`.
#[handler]
pub async fn submit(
    req: &Request,
    state: Data<&AppState>,
    form: poem::Result<Form<SignupForm>>,
) -> Response {
    let state: &AppState = &state;
    if !state.config.enable_pilot_signup {
        return closed_page(state, StatusCode::FORBIDDEN);
    }
    let site = Site::of(&state.config);
    let Ok(Form(mut form)) = form else {
        // Not our form (wrong type, repeated fields): nothing to show again.
        return expired_page(state);
    };
    if let Err(refusal) = csrf::check(req, Some(&form.csrf_token), &site.origin) {
        tracing::warn!(?refusal, "signup form refused (CSRF)");
        return expired_page(state);
    }
    if let Some(page) = unavailable(state, StatusCode::FORBIDDEN).await {
        return page;
    }
    let token = match FormToken::for_request(req) {
        Ok(t) => t,
        Err(e) => return internal_error(state, &e),
    };
    let password = Zeroizing::new(std::mem::take(&mut form.password));
    let (values, errors) = check_fields(&form, &password);
    if !errors.is_empty() {
        return form_page(
            state,
            &site,
            &token,
            &values,
            &errors,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let user = match account(req, state, &values, password).await {
        Ok(Some(u)) => u,
        Ok(None) => return check_inbox_page(state, &values.email),
        Err(AccountOutcome::Full) => return full_page(state, StatusCode::FORBIDDEN),
        Err(AccountOutcome::Failed(e)) => return internal_error(state, &e),
    };
    start_checkout(req, state, &site, &token, &values, &user).await
}

/// Starts the Stripe Checkout and sends the browser there.
pub(super) async fn start_checkout(
    req: &Request,
    state: &AppState,
    site: &Site,
    token: &FormToken,
    values: &Values,
    user: &User,
) -> Response {
    let browser = match cookies::random_value() {
        Ok(v) => v,
        Err(e) => return internal_error(state, &e),
    };
    let now = now();
    let started = checkout::start(
        state,
        user,
        &values.plan,
        &values.interval,
        Some(checkout::browser_hash(&browser)),
        &crate::http::client(req, state),
        now,
    )
    .await;
    match started {
        Ok(started) => {
            let mut resp = Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::CACHE_CONTROL, "no-store")
                .finish();
            match HeaderValue::from_str(&started.url) {
                Ok(v) => {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                Err(e) => return internal_error(state, &e),
            }
            Cookie {
                name: CHECKOUT_COOKIE,
                value: &browser,
                path: "/signup",
                max_age_seconds: CHECKOUT_COOKIE_SECONDS,
                same_site: SameSite::Lax,
                secure: site.secure,
            }
            .set_on(&mut resp);
            resp
        }
        Err(BillingError::AlreadySubscribed) => notice_page(
            state,
            "You already have a subscription",
            &[
                format!(
                    "The organization of {} already has a CODITECT subscription, so there is nothing to buy here.",
                    escape(&values.email)
                ),
                "Your license key was sent by email when you subscribed. To change your plan or billing details, open the billing portal from the CODITECT CLI or the API (POST /api/v1/billing/portal).".to_owned(),
                format!("Need help? Write to {}.", support_link(state)),
            ],
            StatusCode::CONFLICT,
        ),
        Err(BillingError::PilotFull) => full_page(state, StatusCode::FORBIDDEN),
        Err(BillingError::UnknownPlan { .. }) => {
            let mut errors = FieldErrors::default();
            errors.add(
                "plan",
                "This plan cannot be bought with this billing interval right now. Choose another, or write to us.",
            );
            form_page(
                state,
                site,
                token,
                values,
                &errors,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(BillingError::NotConfigured) => unavailable(state, StatusCode::SERVICE_UNAVAILABLE)
            .await
            .unwrap_or_else(|| internal_error(state, &BillingError::NotConfigured)),
        Err(BillingError::Stripe(e)) => {
            tracing::error!(error = %e, "Stripe call failed during web signup");
            form_page(
                state,
                site,
                token,
                values,
                &FieldErrors::default(),
                Some(
                    "We could not reach our payment provider. Your account is saved and nothing was charged: enter your password and send the form again in a minute."
                        .to_owned(),
                ),
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
        Err(e) => internal_error(state, &e),
    }
}
