//! Checkout Sessions: create, retrieve, expire, line items, expansion.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::api::{
    Routed, check_expansions, check_params, fresh_metadata, metadata_param, str_param,
};
use super::config::Interval;
use super::customers::validate_email;
use super::form::list_of;
use super::helpers::merge_objects;
use super::http::ApiError;
use super::objects::price_json;
use super::state::{RequestInfo, Session, Shared, State};
use super::unix_now;

/// How long a new Checkout Session stays open (Stripe's default: 24 hours).
pub(super) const SESSION_LIFETIME: i64 = 24 * 3600;

pub(super) const SESSION_PARAMS: &[&str] = &[
    "cancel_url",
    "client_reference_id",
    "customer",
    "customer_email",
    "expand",
    "expires_at",
    "line_items",
    "metadata",
    "mode",
    "subscription_data",
    "success_url",
    "ui_mode",
];
/// Accepted and recorded, without effect on what the fake does.
pub(super) const SESSION_IGNORED: &[&str] = &[
    "allow_promotion_codes",
    "automatic_tax",
    "billing_address_collection",
    "consent_collection",
    "currency",
    "custom_text",
    "customer_update",
    "locale",
    "payment_method_collection",
    "payment_method_types",
    "phone_number_collection",
    "submit_type",
    "tax_id_collection",
];

pub(super) fn create_checkout_session(shared: &Shared, form: &Value) -> Routed {
    check_params(form, SESSION_PARAMS, SESSION_IGNORED)?;
    let expand = check_expansions(form, &["line_items", "customer"])?;
    let mode = str_param(form, "mode").ok_or_else(|| ApiError::missing("mode"))?;
    match mode {
        "subscription" => {}
        "payment" | "setup" => {
            return Err(ApiError::invalid_value(
                "mode",
                format!(
                    "The fake Stripe models only mode=subscription (got {mode}); extend \
                     tests/src/fake_stripe/ if the issuer needs it."
                ),
            ));
        }
        other => {
            return Err(ApiError::invalid_value(
                "mode",
                format!(
                    "Invalid mode: must be one of payment, setup, or subscription (got {other})"
                ),
            ));
        }
    }
    if let Some(ui) = str_param(form, "ui_mode")
        && ui != "hosted_page"
    {
        return Err(ApiError::invalid_value(
            "ui_mode",
            format!(
                "Invalid ui_mode: must be one of elements, embedded_page, or hosted_page \
                     (got {ui}); the fake serves only hosted_page"
            ),
        ));
    }
    for url_param in ["success_url", "cancel_url"] {
        if let Some(url) = str_param(form, url_param)
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ApiError::invalid_value(
                url_param,
                format!("Not a valid URL: {url_param} must be an absolute http(s) URL"),
            ));
        }
    }
    if let Some(reference) = str_param(form, "client_reference_id")
        && reference.chars().count() > 200
    {
        return Err(ApiError::invalid_value(
            "client_reference_id",
            "client_reference_id can be at most 200 characters",
        ));
    }
    let customer_id = str_param(form, "customer").filter(|s| !s.is_empty());
    let customer_email = str_param(form, "customer_email").filter(|s| !s.is_empty());
    if customer_id.is_some() && customer_email.is_some() {
        return Err(ApiError::invalid(
            "You may only specify one of these parameters: customer, customer_email.",
            Some("customer_email"),
        ));
    }
    if let Some(email) = customer_email {
        validate_email(email, "customer_email")?;
    }
    let metadata = fresh_metadata(metadata_param(form, "metadata")?);

    // Line items: known recurring prices, all on one interval.
    let items = list_of(&form["line_items"]);
    if items.is_empty() {
        return Err(ApiError::missing("line_items"));
    }
    let mut line_items = Vec::new();
    let mut interval: Option<(Interval, u32)> = None;
    for (i, item) in items.iter().enumerate() {
        let price_param = format!("line_items[{i}][price]");
        let price_id = item
            .get("price")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::missing(&price_param))?;
        let price = shared
            .price(price_id)
            .ok_or_else(|| ApiError::no_such_param("price", price_id, &price_param))?;
        let quantity_param = format!("line_items[{i}][quantity]");
        let quantity = item
            .get("quantity")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::missing(&quantity_param))?;
        let quantity: u64 = quantity.parse().ok().filter(|q| *q >= 1).ok_or_else(|| {
            ApiError::invalid_value(&quantity_param, format!("Invalid integer: {quantity}"))
        })?;
        let this = (price.interval, price.interval_count);
        if interval.is_some_and(|i| i != this) {
            return Err(ApiError::invalid(
                "Checkout does not support multiple prices with different billing intervals.",
                Some(&price_param),
            ));
        }
        interval = Some(this);
        line_items.push((price.id.clone(), quantity));
    }

    let subscription_data = &form["subscription_data"];
    let trial_days = match subscription_data
        .get("trial_period_days")
        .and_then(Value::as_str)
    {
        None | Some("") => None,
        Some(days) => Some(
            days.parse::<u32>()
                .ok()
                .filter(|d| (1..=730).contains(d))
                .ok_or_else(|| {
                    ApiError::invalid_value(
                        "subscription_data[trial_period_days]",
                        format!("trial_period_days must be an integer from 1 to 730 (got {days})"),
                    )
                })?,
        ),
    };
    let subscription_metadata = metadata_param(subscription_data, "metadata")?;

    let now = unix_now();
    let expires_at = match str_param(form, "expires_at") {
        None => now + SESSION_LIFETIME,
        Some(t) => {
            let t: i64 = t.parse().map_err(|_| {
                ApiError::invalid_value("expires_at", format!("Invalid integer: {t}"))
            })?;
            if t < now + 30 * 60 || t > now + SESSION_LIFETIME {
                return Err(ApiError::invalid_value(
                    "expires_at",
                    "expires_at must be between 30 minutes and 24 hours from now",
                ));
            }
            t
        }
    };

    let mut state = shared.state();
    if let Some(id) = customer_id
        && !state.customers.contains_key(id)
    {
        return Err(ApiError::no_such_param("customer", id, "customer"));
    }
    let id = format!("cs_test_{}", shared.ids.make("", 56));
    let (subtotal, currency) =
        line_items
            .iter()
            .fold((0, String::from("usd")), |(sum, _), (price_id, qty)| {
                let price = shared.price(price_id).expect("checked above");
                let qty = i64::try_from(*qty).unwrap_or(i64::MAX);
                (sum + price.unit_amount * qty, price.currency.clone())
            });
    let due_now = if trial_days.is_some() { 0 } else { subtotal };
    let object = merge_objects([
        json!({
            "id": id,
            "object": "checkout.session",
            "adaptive_pricing": null,
            "after_expiration": null,
            "allow_promotion_codes": null,
            "amount_subtotal": due_now,
            "amount_total": due_now,
            "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
            "billing_address_collection": null,
            "cancel_url": str_param(form, "cancel_url"),
            "client_reference_id": str_param(form, "client_reference_id"),
            "client_secret": null,
            "collected_information": null,
            "consent": null,
            "consent_collection": null,
            "created": now,
            "currency": currency,
            "custom_fields": [],
            "custom_text": {
                "after_submit": null,
                "shipping_address": null,
                "submit": null,
                "terms_of_service_acceptance": null,
            },
            "customer": customer_id,
            "customer_creation": if customer_id.is_some() { Value::Null } else { json!("always") },
            "customer_details": null,
            "customer_email": customer_email,
            "discounts": [],
        }),
        json!({
            "expires_at": expires_at,
            "invoice": null,
            "invoice_creation": null,
            "livemode": false,
            "locale": null,
            "metadata": metadata,
            "mode": "subscription",
            "payment_intent": null,
            "payment_link": null,
        }),
        json!({
            "payment_method_collection": "always",
            "payment_method_configuration_details": null,
            "payment_method_options": { "card": { "request_three_d_secure": "automatic" } },
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "phone_number_collection": { "enabled": false },
            "recovered_from": null,
            "saved_payment_method_options": null,
            "setup_intent": null,
            "shipping_address_collection": null,
            "shipping_cost": null,
            "shipping_options": [],
            "status": "open",
            "submit_type": null,
            "subscription": null,
            "success_url": str_param(form, "success_url"),
            "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
            "ui_mode": "hosted_page",
            "url": format!("{}/pay/{id}", shared.base_url()),
            "wallet_options": null,
        }),
    ]);
    let session = Session {
        object,
        line_items,
        trial_days,
        subscription_metadata,
    };
    let answer = expand_session(shared, &state, &id, &session, &expand);
    state.session_order.push(id.clone());
    state.sessions.insert(id, session);
    Ok((answer, Vec::new()))
}

pub(super) fn retrieve_checkout_session(shared: &Shared, id: &str, form: &Value) -> Routed {
    check_params(form, &["expand"], &[])?;
    let expand = check_expansions(
        form,
        &[
            "line_items",
            "customer",
            "subscription",
            "subscription.latest_invoice",
            "invoice",
            "payment_intent",
        ],
    )?;
    let mut state = shared.state();
    expire_if_due(&mut state, id);
    let session = state
        .sessions
        .get(id)
        .ok_or_else(|| ApiError::no_such("checkout.session", id))?;
    Ok((
        expand_session(shared, &state, id, session, &expand),
        Vec::new(),
    ))
}

pub(super) fn expire_checkout_session(
    shared: &Shared,
    id: &str,
    form: &Value,
    info: &RequestInfo,
) -> Routed {
    check_params(form, &["expand"], &[])?;
    check_expansions(form, &[])?;
    let mut state = shared.state();
    let session = state
        .sessions
        .get_mut(id)
        .ok_or_else(|| ApiError::no_such("checkout.session", id))?;
    if session.object["status"] != "open" {
        return Err(ApiError::invalid(
            format!(
                "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout \
                 Session has a status of \"{}\".",
                session.object["status"].as_str().unwrap_or("")
            ),
            None,
        ));
    }
    session.object["status"] = json!("expired");
    session.object["url"] = Value::Null;
    let object = session.object.clone();
    let event = state.new_event(
        shared,
        "checkout.session.expired",
        object.clone(),
        None,
        info.clone(),
        None,
    );
    Ok((object, vec![event]))
}

/// Sessions past `expires_at` are expired on sight (Stripe expires them in
/// the background; nothing here runs in the background).
pub(super) fn expire_if_due(state: &mut State, id: &str) {
    if let Some(session) = state.sessions.get_mut(id) {
        let due = session.object["expires_at"]
            .as_i64()
            .is_some_and(|t| t <= unix_now());
        if due && session.object["status"] == "open" {
            session.object["status"] = json!("expired");
            session.object["url"] = Value::Null;
        }
    }
}

pub(super) fn expand_session(
    shared: &Shared,
    state: &State,
    id: &str,
    session: &Session,
    expand: &[String],
) -> Value {
    let mut object = session.object.clone();
    for e in expand {
        match e.as_str() {
            "line_items" => object["line_items"] = line_items_list(shared, id, session),
            "customer" => expand_field(&mut object, "customer", &state.customers),
            "subscription" => expand_field(&mut object, "subscription", &state.subscriptions),
            "subscription.latest_invoice" => {
                expand_field(&mut object, "subscription", &state.subscriptions);
                expand_field(
                    &mut object["subscription"],
                    "latest_invoice",
                    &state.invoices,
                );
            }
            "invoice" => expand_field(&mut object, "invoice", &state.invoices),
            // Subscription-mode sessions have no payment intent: stays null.
            "payment_intent" => {}
            _ => {}
        }
    }
    object
}

pub(super) fn expand_field(object: &mut Value, field: &str, from: &HashMap<String, Value>) {
    if let Some(found) = object[field].as_str().and_then(|id| from.get(id)) {
        object[field] = found.clone();
    }
}

pub(super) fn line_items_list(shared: &Shared, session_id: &str, session: &Session) -> Value {
    let data: Vec<Value> = session
        .line_items
        .iter()
        .enumerate()
        .map(|(i, (price_id, quantity))| {
            let price = shared.price(price_id).expect("sessions name known prices");
            let amount = price.unit_amount * i64::try_from(*quantity).unwrap_or(i64::MAX);
            json!({
                "id": format!("li_{}{i}", session_id.trim_start_matches("cs_test_").chars().take(20).collect::<String>()),
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": price.currency,
                "description": price.product_name,
                "price": price_json(price),
                "quantity": quantity,
            })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "url": format!("/v1/checkout/sessions/{session_id}/line_items"),
    })
}
