//! The hosted pages a browser sees: the checkout page and the billing
//! portal; and the fake's own controls (`POST /_fake/…`), with which a
//! script driving the `fake-stripe` binary moves a subscription on.

use std::collections::HashMap;

use super::checkout::expire_if_due;
use super::helpers::{html_escape, luhn_valid, money};
use super::http::{Answer, Incoming};
use super::lifecycle::{complete_checkout_locked, recover_payment_locked, renew_locked};
use super::state::{RequestInfo, Shared};
use super::subscriptions::{
    ItemChange, SubscriptionUpdate, apply_subscription_update, current_period,
};
use super::{CARD_DECLINED, CARD_INSUFFICIENT_FUNDS};

/// What the person typed on the checkout page.
pub(super) struct CardForm {
    pub(super) email: Option<String>,
    pub(super) name: Option<String>,
}

pub(super) fn pages(shared: &Shared, req: &Incoming) -> Answer {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let form: HashMap<String, String> = req.params.iter().cloned().collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["pay", id]) => checkout_page(shared, id, None),
        ("POST", ["pay", id]) => submit_checkout(shared, id, &form),
        ("GET", ["p", "session", id]) => portal_page(shared, id),
        ("POST", ["p", "session", id, action]) => portal_action(shared, id, action, &form),
        ("POST", ["_fake", "subscriptions", id, action]) => control(shared, id, action),
        _ => Answer::html(404, page("Not found", "<p>There is nothing here.</p>")),
    }
}

/// The fake's controls, the same as the handle's `advance_period`,
/// `fail_next_payment` and `recover_payment`: the subscription moves on
/// and its events are sent; the answer is the invoice (or the ended
/// subscription) as JSON.
fn control(shared: &Shared, sub_id: &str, action: &str) -> Answer {
    let result = {
        let mut state = shared.state();
        match action {
            "advance_period" => renew_locked(shared, &mut state, sub_id, true),
            "fail_next_payment" => renew_locked(shared, &mut state, sub_id, false),
            "recover_payment" => recover_payment_locked(shared, &mut state, sub_id),
            _ => {
                return Answer::json(
                    404,
                    &serde_json::json!({"error": {"message": format!(
                        "unknown control {action}: advance_period, fail_next_payment or recover_payment"
                    )}}),
                );
            }
        }
    };
    match result {
        Ok((object, events)) => {
            shared.dispatch(&events);
            Answer::json(200, &object)
        }
        Err(e) => e.answer(),
    }
}

pub(super) fn checkout_page(shared: &Shared, session_id: &str, error: Option<&str>) -> Answer {
    let mut state = shared.state();
    expire_if_due(&mut state, session_id);
    let Some(session) = state.sessions.get(session_id) else {
        return Answer::html(
            404,
            page(
                "Checkout not found",
                "<p>This checkout link is not valid.</p>",
            ),
        );
    };
    let object = &session.object;
    if object["status"] != "open" {
        return Answer::html(
            410,
            page(
                "Checkout closed",
                &format!(
                    "<p id=\"closed\">This checkout session is no longer active ({}).</p>",
                    html_escape(object["status"].as_str().unwrap_or(""))
                ),
            ),
        );
    }
    let mut lines = String::new();
    let mut total = 0;
    let mut currency = String::from("usd");
    for (price_id, qty) in &session.line_items {
        let price = shared.price(price_id).expect("sessions name known prices");
        let amount = price.unit_amount * i64::try_from(*qty).unwrap_or(1);
        total += amount;
        currency.clone_from(&price.currency);
        lines.push_str(&format!(
            "<li class=\"line-item\" data-price=\"{}\">{} × {} — {} per {}</li>",
            html_escape(&price.id),
            qty,
            html_escape(&price.product_name),
            money(amount, &price.currency),
            price.interval.as_str()
        ));
    }
    let due = match session.trial_days {
        Some(days) => format!(
            "<p id=\"trial\">{days} days free, then {} </p>",
            money(total, &currency)
        ),
        None => format!(
            "<p id=\"total\">Total due today: {}</p>",
            money(total, &currency)
        ),
    };
    let email = object["customer_email"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            object["customer"]
                .as_str()
                .and_then(|c| state.customers.get(c))
                .and_then(|c| c["email"].as_str().map(str::to_owned))
        })
        .unwrap_or_default();
    let error = error
        .map(|e| format!("<p id=\"error\" role=\"alert\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    let cancel = object["cancel_url"]
        .as_str()
        .map(|u| {
            format!(
                "<p><a id=\"cancel\" href=\"{}\">← Back to {}</a></p>",
                html_escape(u),
                html_escape(&shared.config.account_name)
            )
        })
        .unwrap_or_default();
    let button = if session.trial_days.is_some() {
        "Start trial"
    } else {
        "Subscribe"
    };
    let body = format!(
        "<h1>{merchant} <small>TEST MODE</small></h1>\
         <ul id=\"line-items\">{lines}</ul>{due}{error}\
         <form method=\"post\" action=\"/pay/{id}\">\
         <label>Email <input name=\"email\" type=\"email\" value=\"{email}\" required></label>\
         <label>Card number <input name=\"card_number\" value=\"4242 4242 4242 4242\" inputmode=\"numeric\" required></label>\
         <label>Expiry <input name=\"card_expiry\" value=\"12 / 34\" required></label>\
         <label>CVC <input name=\"card_cvc\" value=\"123\" required></label>\
         <label>Name on card <input name=\"billing_name\" value=\"Test Customer\" required></label>\
         <button id=\"submit\" type=\"submit\">{button}</button>\
         </form>{cancel}",
        merchant = html_escape(&shared.config.account_name),
        id = html_escape(session_id),
        email = html_escape(&email),
    );
    let status = if error.is_empty() { 200 } else { 402 };
    Answer::html(
        status,
        page(&format!("Pay {}", shared.config.account_name), &body),
    )
}

pub(super) fn submit_checkout(
    shared: &Shared,
    session_id: &str,
    form: &HashMap<String, String>,
) -> Answer {
    let card: String = form
        .get("card_number")
        .map(|c| c.chars().filter(char::is_ascii_digit).collect())
        .unwrap_or_default();
    let decline = match card.as_str() {
        CARD_DECLINED => Some("Your card was declined."),
        CARD_INSUFFICIENT_FUNDS => Some("Your card has insufficient funds."),
        c if !luhn_valid(c) => Some("Your card number is invalid."),
        _ => None,
    };
    // A second submit (a double click, the back button) goes to the success
    // page again and creates nothing.
    {
        let state = shared.state();
        if let Some(session) = state.sessions.get(session_id)
            && session.object["status"] == "complete"
            && let Some(url) = session.object["success_url"].as_str()
        {
            return Answer::redirect(&url.replace("{CHECKOUT_SESSION_ID}", session_id));
        }
    }
    if let Some(message) = decline {
        return checkout_page(shared, session_id, Some(message));
    }
    let card_form = CardForm {
        email: form
            .get("email")
            .filter(|e| !e.trim().is_empty())
            .map(|e| e.trim().to_owned()),
        name: form
            .get("billing_name")
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.trim().to_owned()),
    };
    let result = {
        let mut state = shared.state();
        complete_checkout_locked(shared, &mut state, session_id, &card_form)
    };
    match result {
        Err(e) if e.status == 404 => Answer::html(
            404,
            page(
                "Checkout not found",
                "<p>This checkout link is not valid.</p>",
            ),
        ),
        Err(e) => Answer::html(
            410,
            page(
                "Checkout closed",
                &format!("<p id=\"closed\">{}</p>", html_escape(&e.message)),
            ),
        ),
        Ok((completion, events)) => {
            shared.dispatch(&events);
            match completion.redirect_url {
                Some(url) => Answer::redirect(&url),
                None => Answer::html(
                    200,
                    page("Thanks", "<p id=\"done\">Thanks for your order.</p>"),
                ),
            }
        }
    }
}

pub(super) fn portal_page(shared: &Shared, portal_id: &str) -> Answer {
    let state = shared.state();
    let Some(portal) = state.portal_sessions.get(portal_id) else {
        return Answer::html(
            404,
            page("Not found", "<p>This billing portal link is not valid.</p>"),
        );
    };
    let customer = portal["customer"].as_str().unwrap_or("");
    let mut rows = String::new();
    for sub_id in &state.subscription_order {
        let sub = &state.subscriptions[sub_id];
        if sub["customer"] != customer {
            continue;
        }
        let price_id = sub["items"]["data"][0]["price"]["id"]
            .as_str()
            .unwrap_or("");
        let name = shared
            .price(price_id)
            .map(|p| p.product_name.clone())
            .unwrap_or_default();
        let (_, end) = current_period(sub);
        let mut actions = String::new();
        if sub["status"] != "canceled" {
            let (action, label) = if sub["cancel_at_period_end"] == true {
                ("renew", "Renew plan")
            } else {
                ("cancel", "Cancel plan")
            };
            actions.push_str(&format!(
                "<form method=\"post\" action=\"/p/session/{p}/{action}\">\
                 <input type=\"hidden\" name=\"subscription\" value=\"{s}\">\
                 <button id=\"{action}-{s}\" type=\"submit\">{label}</button></form>",
                p = html_escape(portal_id),
                s = html_escape(sub_id),
            ));
            let options: String = shared
                .config
                .prices
                .iter()
                .filter(|p| p.id != price_id)
                .map(|p| {
                    format!(
                        "<option value=\"{}\">{} — {} per {}</option>",
                        html_escape(&p.id),
                        html_escape(&p.product_name),
                        money(p.unit_amount, &p.currency),
                        p.interval.as_str()
                    )
                })
                .collect();
            actions.push_str(&format!(
                "<form method=\"post\" action=\"/p/session/{p}/switch\">\
                 <input type=\"hidden\" name=\"subscription\" value=\"{s}\">\
                 <select name=\"price\">{options}</select>\
                 <button id=\"switch-{s}\" type=\"submit\">Update plan</button></form>",
                p = html_escape(portal_id),
                s = html_escape(sub_id),
            ));
        }
        rows.push_str(&format!(
            "<li class=\"subscription\" id=\"{s}\" data-status=\"{status}\">{name}: {status}{cancel}, \
             current period ends at {end} (Unix time){actions}</li>",
            s = html_escape(sub_id),
            status = html_escape(sub["status"].as_str().unwrap_or("")),
            name = html_escape(&name),
            cancel = if sub["cancel_at_period_end"] == true { ", cancels at period end" } else { "" },
        ));
    }
    let back = portal["return_url"]
        .as_str()
        .map(|u| {
            format!(
                "<p><a id=\"return\" href=\"{}\">Return to {}</a></p>",
                html_escape(u),
                html_escape(&shared.config.account_name)
            )
        })
        .unwrap_or_default();
    Answer::html(
        200,
        page(
            "Billing",
            &format!(
                "<h1>{} billing <small>TEST MODE</small></h1><ul>{rows}</ul>{back}",
                html_escape(&shared.config.account_name)
            ),
        ),
    )
}

pub(super) fn portal_action(
    shared: &Shared,
    portal_id: &str,
    action: &str,
    form: &HashMap<String, String>,
) -> Answer {
    let sub_id = form.get("subscription").cloned().unwrap_or_default();
    let result = {
        let mut state = shared.state();
        let Some(customer) = state
            .portal_sessions
            .get(portal_id)
            .map(|p| p["customer"].clone())
        else {
            return Answer::html(
                404,
                page("Not found", "<p>This billing portal link is not valid.</p>"),
            );
        };
        if state.subscriptions.get(&sub_id).map(|s| &s["customer"]) != Some(&customer) {
            return Answer::html(
                404,
                page(
                    "Not found",
                    "<p>No such subscription for this customer.</p>",
                ),
            );
        }
        let update = match action {
            "cancel" => SubscriptionUpdate {
                cancel_at_period_end: Some(true),
                ..SubscriptionUpdate::default()
            },
            "renew" => SubscriptionUpdate {
                cancel_at_period_end: Some(false),
                ..SubscriptionUpdate::default()
            },
            "switch" => {
                let item_id = state.subscriptions[&sub_id]["items"]["data"][0]["id"]
                    .as_str()
                    .map(str::to_owned);
                SubscriptionUpdate {
                    items: vec![ItemChange {
                        index: 0,
                        id: item_id,
                        price: form.get("price").cloned(),
                        quantity: None,
                        deleted: false,
                    }],
                    ..SubscriptionUpdate::default()
                }
            }
            _ => return Answer::html(404, page("Not found", "<p>Unknown action.</p>")),
        };
        let info = RequestInfo {
            id: Some(shared.ids.make("req_", 14)),
            idempotency_key: None,
        };
        apply_subscription_update(shared, &mut state, &sub_id, update, &info)
    };
    match result {
        Ok((_, events)) => {
            shared.dispatch(&events);
            Answer::redirect(&format!("/p/session/{portal_id}"))
        }
        Err(e) => Answer::html(
            400,
            page(
                "Billing",
                &format!(
                    "<p id=\"error\" role=\"alert\">{}</p>",
                    html_escape(&e.message)
                ),
            ),
        ),
    }
}

pub(super) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title></head><body>{body}</body></html>",
        html_escape(title)
    )
}
