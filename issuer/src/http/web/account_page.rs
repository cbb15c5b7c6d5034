//! The signed-in part of the site: `/account`, the organization's
//! licenses, their machines (a seat can be freed here), the billing portal,
//! and a new key for a lost one; `/signin` and `/signout` are in
//! `signin.rs`.
//!
//! The session is the API's: signing in makes a session and its access
//! token (`app::accounts::sign_in`), kept in the `coditect_session` cookie
//! (`HttpOnly`, `SameSite=Lax`, `Secure` over HTTPS); signing out ends the
//! session in the database. Every post is CSRF-checked (`csrf`, with the
//! account pages' own cookie) and answered with a 303 back to a page, so a
//! reload never posts twice.

use poem::http::{StatusCode, header};
use poem::web::{Data, Form, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;

use super::Site;
use super::cookies::{self, Cookie, SameSite};
use super::csrf::{self, FormToken};
use super::html::{Page, escape, message};
use super::signup::{internal_error, support_link};
use crate::app::{AppState, accounts, billing, licenses, now};
use crate::domain::account::User;
use crate::domain::license::{
    Activation, License, LicenseError, Releaser, Seat, status_at, transfer_use,
};
use crate::domain::plans;
use crate::http::client;

/// The cookie holding the access token of a web session.
pub const SESSION_COOKIE: &str = "coditect_session";

/// Posted fields of the account pages. Missing fields are empty.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct AccountPost {
    pub(super) csrf_token: String,
    pub(super) email: String,
    pub(super) password: String,
    license: String,
    activation: String,
    confirm: String,
}

/// `?done=…`: what the last post did, for the page it returns to.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct Done {
    pub(super) done: String,
}

/// `Jan 5, 2027` (UTC).
fn day(t: i64) -> String {
    let format = time::macros::format_description!("[month repr:short] [day padding:none], [year]");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// `Jan 5, 2027 14:03 UTC`.
pub(super) fn moment(t: i64) -> String {
    let format = time::macros::format_description!(
        "[month repr:short] [day padding:none], [year] [hour]:[minute] UTC"
    );
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

pub(super) fn redirect(to: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .header(header::CACHE_CONTROL, "no-store")
        .finish()
}

/// The session cookie carrying `token` for `max_age` seconds (0: removed).
pub(super) fn session_cookie(resp: &mut Response, token: &str, max_age: u32, secure: bool) {
    Cookie {
        name: SESSION_COOKIE,
        value: token,
        path: "/",
        max_age_seconds: max_age,
        same_site: SameSite::Lax,
        secure,
    }
    .set_on(resp);
}

/// The signed-in user of the request, with the session id.
pub(super) async fn signed_in(req: &Request, state: &AppState) -> Option<(User, String)> {
    let token = cookies::read_token(req, SESSION_COOKIE)?;
    accounts::authenticate(state, &token, now()).await.ok()
}

/// A page of this module: never cached, with the account pages' CSRF
/// cookie when it is new.
pub(super) fn respond(state: &AppState, token: &FormToken, page: Page) -> Response {
    let site = Site::of(&state.config);
    let mut resp = page.no_store().respond(state);
    token.set_cookie(&mut resp, site.secure);
    resp
}

/// The posted form after the CSRF check; `Err` is the page to answer.
pub(super) fn checked(
    req: &Request,
    state: &AppState,
    form: poem::Result<Form<AccountPost>>,
) -> Result<AccountPost, Response> {
    let stale = || {
        Page::new(
            "This form expired",
            message(
                "This form expired",
                &["Nothing was changed. Open the page again and repeat what you did.".to_owned()],
                Some(("/account", "Back to your account")),
            ),
        )
        .status(StatusCode::FORBIDDEN)
        .no_store()
        .respond(state)
    };
    let Ok(Form(form)) = form else {
        return Err(stale());
    };
    let site = Site::of(&state.config);
    if let Err(refusal) = csrf::check_account(req, Some(&form.csrf_token), &site.origin) {
        tracing::warn!(?refusal, "account page post refused (CSRF)");
        return Err(stale());
    }
    Ok(form)
}

fn notice_of(done: &str) -> Option<&'static str> {
    match done {
        "linked" => Some("The sign-in provider is linked: you can sign in with it from now on."),
        "freed" => Some(
            "The machine's seat is free. That machine stops working at its next renewal; activate another one with your key.",
        ),
        "new_key" => Some(
            "A new key is on its way to your email. The old key no longer works: run `coditect activate NEW-KEY` on each of your machines (they keep their seats).",
        ),
        _ => None,
    }
}

/// What to do about a license that does not work now (HTML).
fn fix_of(status: &str, portal: bool) -> Option<String> {
    let portal_words = if portal {
        "in the billing portal (button below)"
    } else {
        "by writing to us"
    };
    match status {
        "expired" => Some(format!("This license has ended. Renew the subscription {portal_words}; your machines work again at their next renewal.")),
        "suspended" => Some(format!("Payments for this license are not going through. Update the payment method {portal_words}.")),
        "canceled" => Some("The subscription was canceled. To subscribe again, send the <a href=\"/signup\">signup form</a> with this account's email and password; the new subscription comes with a new key.".to_owned()),
        "revoked" => Some("This license was revoked. Write to us if you think this is a mistake.".to_owned()),
        _ => None,
    }
}

fn machine_item(token: &FormToken, license: &License, a: &Activation, now: i64) -> String {
    let name = a.machine_name.as_deref().unwrap_or("Unnamed machine");
    let action = match a.offline_until {
        Some(until) if until > now => format!(
            "<p class=\"hint\">Activated offline: its seat can be freed by us only, or by you after {}.</p>",
            escape(&day(until))
        ),
        _ => format!(
            "<form method=\"post\" action=\"/account/free\">\n{csrf}\n\
             <input type=\"hidden\" name=\"license\" value=\"{license}\">\n\
             <input type=\"hidden\" name=\"activation\" value=\"{activation}\">\n\
             <button type=\"submit\" class=\"secondary\" aria-label=\"Free the seat of {name}\">Free this seat</button>\n</form>",
            csrf = token.field(),
            license = escape(&license.id),
            activation = escape(&a.id),
            name = escape(name),
        ),
    };
    format!(
        "<li class=\"machine\">\n<h4>{name}</h4>\n<dl>\n\
         <dt>First activated</dt><dd>{first}</dd>\n\
         <dt>Last renewed</dt><dd>{last}</dd>\n</dl>\n{action}\n</li>\n",
        name = escape(name),
        first = escape(&moment(a.activated_at)),
        last = escape(&moment(a.last_validated_at)),
    )
}

fn license_section(
    token: &FormToken,
    license: &License,
    activations: &[Activation],
    transfers: &[i64],
    portal: bool,
    now: i64,
) -> String {
    let plan = plans::find(&license.tier).map_or(license.tier.as_str(), |p| p.name);
    let status = status_at(license, now);
    let active: Vec<&Activation> = activations.iter().filter(|a| a.active).collect();
    let used = active.len();
    let t = transfer_use(license, transfers, now);
    let transfers_left = t.allowed.saturating_sub(t.used);
    let transfers_text = match t.next_at {
        Some(next) => format!(
            "none left; the next on {} (of {} per 30 days)",
            day(next),
            t.allowed
        ),
        None => format!("{transfers_left} of {} left in the last 30 days", t.allowed),
    };
    let ends = if status == "active" {
        "Paid until"
    } else {
        "Ended"
    };
    let fix = fix_of(status, portal)
        .map(|f| format!("<p class=\"banner\" role=\"alert\">{f}</p>\n"))
        .unwrap_or_default();
    let machines = if active.is_empty() {
        "<p>No machine is activated. Run <code>coditect activate YOUR-KEY</code> on a machine to use it.</p>".to_owned()
    } else {
        let items: String = active
            .iter()
            .map(|a| machine_item(token, license, a, now))
            .collect();
        format!("<ul class=\"machines\">\n{items}</ul>")
    };
    format!(
        "<section class=\"license\" aria-labelledby=\"license-{id}\">\n\
         <h2 id=\"license-{id}\">{plan}</h2>\n{fix}<dl class=\"facts\">\n\
         <dt>Status</dt><dd class=\"status-{status}\">{status}</dd>\n\
         <dt>{ends}</dt><dd>{expires}</dd>\n\
         <dt>Machines</dt><dd>{used} of {allowed} in use</dd>\n\
         <dt>Seat transfers</dt><dd>{transfers_text}</dd>\n\
         <dt>License key</dt><dd>ends in <code class=\"key-end\">{hint}</code></dd>\n</dl>\n\
         <h3>Machines</h3>\n\
         <p class=\"hint\">Freeing a seat lets another machine activate; it counts as one of the seat transfers.</p>\n\
         {machines}\n</section>\n",
        id = escape(&license.id),
        plan = escape(plan),
        status = escape(status),
        expires = escape(&day(license.expires_at)),
        allowed = license.max_activations,
        transfers_text = escape(&transfers_text),
        hint = escape(&license.key_hint),
    )
}

/// `GET /account` (to `/signin` without a session).
#[handler]
pub async fn account(req: &Request, state: Data<&AppState>, done: Query<Done>) -> Response {
    let Some((user, _)) = signed_in(req, &state).await else {
        return redirect("/signin");
    };
    let token = match FormToken::for_account(req) {
        Ok(t) => t,
        Err(e) => return internal_error(&state, &e),
    };
    let now = now();
    let rows = match licenses::of_organization(&state, &user.organization_id, now).await {
        Ok(rows) => rows,
        Err(e) => return internal_error(&state, &e),
    };
    let has_customer = match state.store.stripe_customer(&user.organization_id).await {
        Ok(c) => c.is_some(),
        Err(e) => return internal_error(&state, &e),
    };
    let portal = has_customer && state.stripe().is_ok();
    let support = support_link(&state);
    let mut body = format!(
        "<div class=\"account-head\">\n<h1>Your account</h1>\n\
         <form method=\"post\" action=\"/signout\">{csrf}<button type=\"submit\" class=\"secondary\">Sign out</button></form>\n</div>\n\
         <p>Signed in as <strong id=\"account-email\">{email}</strong>, {org}.</p>\n",
        csrf = token.field(),
        email = escape(&user.email),
        org = escape(&user.organization_name),
    );
    if let Some(notice) = notice_of(&done.done) {
        body.push_str(&format!(
            "<p class=\"notice\" role=\"status\" id=\"notice\">{}</p>\n",
            escape(notice)
        ));
    }
    if rows.is_empty() {
        body.push_str(
            "<p>Your organization has no license yet. <a href=\"/#plans\">Choose a plan</a> to start.</p>\n",
        );
    }
    for (license, activations, transfers) in &rows {
        body.push_str(&license_section(
            &token,
            license,
            activations,
            transfers,
            portal,
            now,
        ));
    }
    if portal {
        body.push_str(&format!(
            "<section aria-labelledby=\"billing\">\n<h2 id=\"billing\">Billing</h2>\n\
             <p>Change the plan or the number of seats, update the payment method, see invoices or cancel, on Stripe.</p>\n\
             <form method=\"post\" action=\"/account/portal\">{}<button type=\"submit\" id=\"portal\">Open the billing portal</button></form>\n</section>\n",
            token.field()
        ));
    }
    let mut reissue = String::new();
    for (license, _, _) in rows
        .iter()
        .filter(|(l, _, _)| l.status.as_str() != "revoked")
    {
        let plan = plans::find(&license.tier).map_or(license.tier.as_str(), |p| p.name);
        reissue.push_str(&format!(
            "<form method=\"post\" action=\"/account/new-key\" class=\"new-key\">\n{csrf}\n\
             <input type=\"hidden\" name=\"license\" value=\"{id}\">\n\
             <p><input type=\"checkbox\" id=\"confirm-{id}\" name=\"confirm\" value=\"yes\" required> \
             <label for=\"confirm-{id}\">I understand that the key ending in <code>{hint}</code> stops working</label></p>\n\
             <button type=\"submit\" class=\"secondary\" id=\"new-key-{id}\">Mail me a new {plan} key</button>\n</form>\n",
            csrf = token.field(),
            id = escape(&license.id),
            hint = escape(&license.key_hint),
            plan = escape(plan),
        ));
    }
    body.push_str(&format!(
        "<section aria-labelledby=\"lost-key\">\n<h2 id=\"lost-key\">Lost your license key?</h2>\n\
         <p>For your security we keep only a fingerprint of the key, so we cannot show it again. \
         Instead we replace it: the new key is mailed to <strong>{email}</strong> and the old one stops working at once. \
         Your machines keep their seats; run <code>coditect activate NEW-KEY</code> on each of them. \
         Questions: {support}.</p>\n{reissue}</section>\n",
        email = escape(&user.email),
    ));
    body.push_str(&super::providers::link_buttons(&state));
    let site = Site::of(&state.config);
    respond(
        &state,
        &token,
        Page::new("Your account", body).form_action(portal_origin(&site, &state)),
    )
}

/// Where the billing portal's form post is redirected to: Stripe's portal
/// (in development, the local fake Stripe).
fn portal_origin(site: &Site, state: &AppState) -> Option<String> {
    let stripe = state.config.stripe.as_ref()?;
    match &stripe.api_base {
        Some(_) => site.checkout_origin.clone(),
        None => Some("https://billing.stripe.com".to_owned()),
    }
}

/// `POST /account/free`: frees a machine's seat of one of the
/// organization's licenses (the same use case and rules as the API's
/// `licenses/deactivate` with the organization's session: audited, counted
/// as a seat transfer).
#[handler]
pub async fn free(
    req: &Request,
    state: Data<&AppState>,
    form: poem::Result<Form<AccountPost>>,
) -> Response {
    let form = match checked(req, &state, form) {
        Ok(f) => f,
        Err(page) => return page,
    };
    let Some((user, _)) = signed_in(req, &state).await else {
        return redirect("/signin");
    };
    let by = Releaser::Organization {
        license_id: &form.license,
        organization: &user.organization_id,
    };
    let client = client(req, &state);
    let refused = |heading: &str, text: String, status: StatusCode| {
        Page::new(
            heading,
            message(heading, &[text], Some(("/account", "Back to your account"))),
        )
        .status(status)
        .no_store()
        .respond(&state)
    };
    let now = now();
    match licenses::deactivate(
        &state,
        &client,
        &by,
        Seat::Activation(&form.activation),
        now,
    )
    .await
    {
        Ok(_) => redirect("/account?done=freed"),
        Err(LicenseError::TransferLimit { allowed, next_at }) => refused(
            "No seat transfer left",
            format!(
                "Your license allows {allowed} seat transfers in 30 days, and they are used. The next is possible on {}. If a machine was lost, write to {}.",
                escape(&moment(next_at)),
                support_link(&state)
            ),
            StatusCode::CONFLICT,
        ),
        Err(LicenseError::OfflineSeat { until }) => refused(
            "This seat is held offline",
            format!(
                "The machine was activated offline; its seat can be freed by you after {}, or now by us: write to {}.",
                escape(&moment(until)),
                support_link(&state)
            ),
            StatusCode::CONFLICT,
        ),
        Err(
            LicenseError::NotFound
            | LicenseError::ActivationNotFound
            | LicenseError::NotAllowedToFree,
        ) => refused(
            "No such machine",
            "That machine is not on one of your organization's licenses. Nothing was changed."
                .to_owned(),
            StatusCode::NOT_FOUND,
        ),
        Err(e) => internal_error(&state, &e),
    }
}

/// `POST /account/portal`: to Stripe's billing portal, which returns to
/// `/account`.
#[handler]
pub async fn open_portal(
    req: &Request,
    state: Data<&AppState>,
    form: poem::Result<Form<AccountPost>>,
) -> Response {
    if let Err(page) = checked(req, &state, form) {
        return page;
    }
    let Some((user, _)) = signed_in(req, &state).await else {
        return redirect("/signin");
    };
    if let Err(e) = crate::http::middleware::rate_limit::check_billing(req, &state, &user).await {
        return poem::IntoResponse::into_response(e);
    }
    match billing::checkout::portal(&state, &user).await {
        Ok(url) => redirect(&url),
        Err(billing::BillingError::NoCustomer | billing::BillingError::NotConfigured) => {
            redirect("/account")
        }
        Err(billing::BillingError::Stripe(e)) => {
            tracing::warn!(error = %e, "billing portal unavailable");
            Page::new(
                "Billing is unavailable",
                message(
                    "Billing is unavailable for a moment",
                    &["Stripe could not be reached. Nothing was changed; please try again in a minute.".to_owned()],
                    Some(("/account", "Back to your account")),
                ),
            )
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .no_store()
            .respond(&state)
        }
        Err(e) => internal_error(&state, &e),
    }
}

/// `POST /account/new-key`: replaces a lost key of one of the
/// organization's licenses; the new key is mailed to the signed-in member.
#[handler]
pub async fn new_key(
    req: &Request,
    state: Data<&AppState>,
    form: poem::Result<Form<AccountPost>>,
) -> Response {
    let form = match checked(req, &state, form) {
        Ok(f) => f,
        Err(page) => return page,
    };
    let Some((user, _)) = signed_in(req, &state).await else {
        return redirect("/signin");
    };
    let back = |heading: &str, text: &str, status: StatusCode| {
        Page::new(
            heading,
            message(
                heading,
                &[escape(text)],
                Some(("/account", "Back to your account")),
            ),
        )
        .status(status)
        .no_store()
        .respond(&state)
    };
    if form.confirm != "yes" {
        return back(
            "Nothing was changed",
            "Tick the box that says the old key stops working, then ask again.",
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let client = client(req, &state);
    match licenses::replace_key(&state, &client, &user, &form.license, now()).await {
        Ok(_) => redirect("/account?done=new_key"),
        Err(LicenseError::NotFound) => back(
            "No such license",
            "That license is not one of your organization's, or it was revoked. Nothing was changed.",
            StatusCode::NOT_FOUND,
        ),
        Err(e) => internal_error(&state, &e),
    }
}
