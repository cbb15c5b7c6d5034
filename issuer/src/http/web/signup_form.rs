//! The signup form: its fields, their checks (the API's rules, reworded
//! for people), and the page that shows it.

use poem::Response;
use poem::http::StatusCode;
use serde::Deserialize;

use super::Site;
use super::csrf::FormToken;
use super::html::{Page, escape};
use super::offers::{INTERVALS, offers};
use crate::app::AppState;
use crate::domain::input;

/// The fields of the form. Missing fields are empty; unknown ones ignored.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct SignupForm {
    pub(super) email: String,
    pub(super) password: String,
    pub(super) company_name: String,
    pub(super) plan: String,
    pub(super) interval: String,
    pub(super) csrf_token: String,
}

/// `?plan=` on the form's address preselects a plan.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct FormQuery {
    pub(super) plan: String,
    pub(super) interval: String,
}

/// What the form shows again after an error (never the password).
pub(super) struct Values {
    pub(super) email: String,
    pub(super) company_name: String,
    pub(super) plan: String,
    pub(super) interval: String,
}

/// Messages shown under the fields, by field name.
#[derive(Default)]
pub(super) struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    pub(super) fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }

    fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn radio(name: &str, value: &str, checked: bool, label: &str) -> String {
    format!(
        "<label><input type=\"radio\" name=\"{name}\" value=\"{}\"{} required> {label}</label>",
        escape(value),
        if checked { " checked" } else { "" },
    )
}

/// A text input with its label, hint and error.
fn text_field(
    name: &str,
    label: &str,
    kind: &str,
    value: &str,
    autocomplete: &str,
    hint: Option<&str>,
    errors: &FieldErrors,
) -> String {
    let error = errors.get(name);
    let described = match (hint.is_some(), error.is_some()) {
        (_, true) => format!(" aria-invalid=\"true\" aria-describedby=\"{name}-error\""),
        (true, false) => format!(" aria-describedby=\"{name}-hint\""),
        _ => String::new(),
    };
    let value = if kind == "password" {
        String::new()
    } else {
        format!(" value=\"{}\"", escape(value))
    };
    format!(
        "<div class=\"field{invalid}\">\n<label for=\"{name}\">{label}</label>\n\
         <input id=\"{name}\" name=\"{name}\" type=\"{kind}\"{value} autocomplete=\"{autocomplete}\" required{described}>\n\
         {hint}{error}</div>\n",
        invalid = if error.is_some() { " invalid" } else { "" },
        hint = hint
            .map(|h| format!("<p class=\"hint\" id=\"{name}-hint\">{}</p>\n", escape(h)))
            .unwrap_or_default(),
        error = error
            .map(|e| format!("<p class=\"error\" id=\"{name}-error\">{}</p>\n", escape(e)))
            .unwrap_or_default(),
    )
}

fn choice_error(name: &str, errors: &FieldErrors) -> String {
    errors
        .get(name)
        .map(|e| format!("<p class=\"error\" id=\"{name}-error\">{}</p>\n", escape(e)))
        .unwrap_or_default()
}

/// The form page, with `values` filled in, `errors` beside their fields and
/// an optional banner (already escaped) above the form.
pub(super) fn form_page(
    state: &AppState,
    site: &Site,
    token: &FormToken,
    values: &Values,
    errors: &FieldErrors,
    banner: Option<String>,
    status: StatusCode,
) -> Response {
    let mut plans = String::new();
    for offer in offers(state) {
        let label = format!(
            "<strong>{}</strong>, {} <span class=\"hint\">({})</span>",
            escape(offer.plan.name),
            escape(&offer.prices()),
            escape(&offer.features().join(", "))
        );
        plans.push_str(&radio(
            "plan",
            offer.plan.id,
            values.plan == offer.plan.id,
            &label,
        ));
        plans.push('\n');
    }
    let mut intervals = String::new();
    for (value, label) in INTERVALS {
        let label = if *value == "year" {
            format!("{label} <span class=\"hint\">(two months free)</span>")
        } else {
            (*label).to_owned()
        };
        intervals.push_str(&radio("interval", value, values.interval == *value, &label));
        intervals.push('\n');
    }
    let summary = if errors.is_empty() {
        String::new()
    } else {
        "<p class=\"banner\" role=\"alert\">Please correct the fields marked below.</p>\n"
            .to_owned()
    };
    let banner = banner
        .map(|b| format!("<p class=\"banner\" role=\"alert\" id=\"banner\">{b}</p>\n"))
        .unwrap_or_default();
    let invalid = |f: &str| {
        if errors.get(f).is_some() {
            " invalid"
        } else {
            ""
        }
    };
    let body = format!(
        "<h1>Start your pilot</h1>\n\
         <p>Create your account and choose a plan. We mail you a link to confirm your address, \
         then you pay on Stripe's secure page; \
         your license key is shown right after payment and sent by email.</p>\n\
         {banner}{summary}{providers}\
         <form class=\"signup\" method=\"post\" action=\"/signup\">\n{csrf}\n\
         {email}{password}{company}\
         <fieldset class=\"{plan_invalid}\" id=\"plan\"><legend>Plan</legend>\n{plans}{plan_error}</fieldset>\n\
         <fieldset class=\"{interval_invalid}\" id=\"interval\"><legend>Billing</legend>\n{intervals}{interval_error}</fieldset>\n\
         <button type=\"submit\" id=\"submit\">Continue to payment</button>\n</form>\n\
         <p class=\"hint\">Nothing is charged until you confirm the payment on Stripe's page.</p>\n\
         <p class=\"hint\">Forgot your password? <a href=\"/signup/reset\">Reset it by mail</a>.</p>",
        csrf = token.field(),
        providers =
            super::providers::buttons(state, "Continue", Some((&values.plan, &values.interval))),
        email = text_field(
            "email",
            "Email",
            "email",
            &values.email,
            "email",
            Some("Your license key is sent here; it is also your sign-in."),
            errors
        ),
        password = text_field(
            "password",
            "Password",
            "password",
            "",
            "new-password",
            Some(&format!(
                "At least {} characters. Already have an account? Use its password.",
                input::MIN_PASSWORD
            )),
            errors
        ),
        company = text_field(
            "company_name",
            "Company name",
            "text",
            &values.company_name,
            "organization",
            None,
            errors
        ),
        plan_invalid = invalid("plan"),
        interval_invalid = invalid("interval"),
        plan_error = choice_error("plan", errors),
        interval_error = choice_error("interval", errors),
    );
    let mut resp = Page::new("Start your pilot", body)
        .status(status)
        .no_store()
        .form_action(site.checkout_origin.clone())
        .respond(state);
    token.set_cookie(&mut resp, site.secure);
    resp
}

/// The fields checked with the API's rules; the messages reworded for
/// people.
pub(super) fn check_fields(form: &SignupForm, password: &str) -> (Values, FieldErrors) {
    let mut errors = FieldErrors::default();
    let email = form.email.trim().to_owned();
    if email.is_empty() {
        errors.add("email", "Enter your email address.");
    } else if input::email("email", &email).is_err() {
        errors.add("email", "Enter an email address such as name@example.com.");
    }
    if password.is_empty() {
        errors.add("password", "Choose a password.");
    } else if let Err(e) = input::password("password", password) {
        errors.add("password", format!("The password {}.", e.detail));
    }
    let company_name = form.company_name.trim().to_owned();
    if company_name.is_empty() {
        errors.add("company_name", "Enter your company's name.");
    } else if let Err(e) = input::name("company_name", &company_name) {
        errors.add("company_name", format!("The company name {}.", e.detail));
    }
    if crate::domain::plans::find(&form.plan).is_none() {
        errors.add("plan", "Choose a plan.");
    }
    if !INTERVALS.iter().any(|(v, _)| *v == form.interval) {
        errors.add("interval", "Choose monthly or annual billing.");
    }
    let values = Values {
        email,
        company_name,
        plan: form.plan.clone(),
        interval: form.interval.clone(),
    };
    (values, errors)
}
