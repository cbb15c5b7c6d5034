//! The life of a subscription: checkout completion, renewals paid or failed, recovery.

use serde_json::{Value, json};

use super::api::fresh_metadata;
use super::checkout::expire_if_due;
use super::customers::new_customer;
use super::helpers::merge_objects;
use super::hosted_pages::CardForm;
use super::http::ApiError;
use super::objects::{invoice_json, subscription_item_json};
use super::records::CheckoutCompletion;
use super::state::{RequestInfo, Shared, State};
use super::subscriptions::{current_period, previous_attributes};
use super::unix_now;

pub(super) fn complete_checkout_locked(
    shared: &Shared,
    state: &mut State,
    session_id: &str,
    form: &CardForm,
) -> Result<(CheckoutCompletion, Vec<String>), ApiError> {
    expire_if_due(state, session_id);
    let session = state
        .sessions
        .get(session_id)
        .ok_or_else(|| ApiError::no_such("checkout.session", session_id))?;
    if session.object["status"] != "open" {
        return Err(ApiError::invalid(
            format!(
                "This Checkout Session is no longer active (status {}).",
                session.object["status"].as_str().unwrap_or("")
            ),
            None,
        ));
    }
    let now = unix_now();
    let line_items = session.line_items.clone();
    let trial_days = session.trial_days;
    let sub_metadata = fresh_metadata(session.subscription_metadata.clone());
    let session_email = session.object["customer_email"].as_str().map(str::to_owned);
    let existing_customer = session.object["customer"].as_str().map(str::to_owned);
    let mut events = Vec::new();

    let customer_id = match existing_customer {
        Some(id) => id,
        None => {
            let email = form.email.clone().or(session_email);
            let customer = new_customer(shared, email.as_deref(), form.name.as_deref(), json!({}));
            let id = customer["id"]
                .as_str()
                .expect("customers have ids")
                .to_owned();
            state.customers.insert(id.clone(), customer.clone());
            events.push(state.new_event(
                shared,
                "customer.created",
                customer,
                None,
                RequestInfo::none(),
                None,
            ));
            id
        }
    };
    let customer = state.customers[&customer_id].clone();

    let sub_id = shared.ids.make("sub_", 24);
    let first_price = shared
        .price(&line_items[0].0)
        .expect("sessions name known prices");
    let (period_end, trial) = match trial_days {
        Some(days) => {
            let end = now + i64::from(days) * 86_400;
            (end, Some((now, end)))
        }
        None => (
            first_price.interval.add_to(now, first_price.interval_count),
            None,
        ),
    };
    let items: Vec<Value> = line_items
        .iter()
        .map(|(price_id, qty)| {
            let price = shared.price(price_id).expect("sessions name known prices");
            subscription_item_json(shared, &sub_id, price, *qty, now, period_end)
        })
        .collect();
    let mut sub = merge_objects([
        json!({
            "id": sub_id,
            "object": "subscription",
            "application": null,
            "application_fee_percent": null,
            "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
            "billing_cycle_anchor": period_end,
            "billing_cycle_anchor_config": null,
            "billing_mode": { "flexible": { "proration_discounts": "included" }, "type": "flexible", "updated_at": now },
            "billing_schedules": [],
            "billing_thresholds": null,
            "cancel_at": null,
            "cancel_at_period_end": false,
            "canceled_at": null,
            "cancellation_details": { "comment": null, "feedback": null, "reason": null },
            "collection_method": "charge_automatically",
            "created": now,
            "currency": first_price.currency,
            "customer": customer_id,
            "customer_account": null,
            "days_until_due": null,
            "default_payment_method": shared.ids.make("pm_", 24),
            "default_source": null,
        }),
        json!({
            "default_tax_rates": [],
            "description": null,
            "discounts": [],
            "ended_at": null,
            "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
            "items": {
                "object": "list",
                "data": items,
                "has_more": false,
                "url": format!("/v1/subscription_items?subscription={sub_id}"),
            },
            "latest_invoice": null,
            "livemode": false,
            "metadata": sub_metadata,
            "next_pending_invoice_item_invoice": null,
            "on_behalf_of": null,
            "pause_collection": null,
            "payment_settings": {
                "payment_method_options": null,
                "payment_method_types": null,
                "save_default_payment_method": "off",
            },
            "pending_invoice_item_interval": null,
            "pending_setup_intent": null,
            "pending_update": null,
            "schedule": null,
            "start_date": now,
            "status": if trial.is_some() { "trialing" } else { "active" },
            "test_clock": null,
            "transfer_data": null,
            "trial_end": trial.map(|t| t.1),
            "trial_settings": { "end_behavior": { "missing_payment_method": "create_invoice" } },
            "trial_start": trial.map(|t| t.0),
        }),
    ]);
    if trial.is_none() {
        sub["billing_cycle_anchor"] = json!(now);
    }
    let invoice = invoice_json(
        shared,
        state,
        &sub,
        &customer_id,
        "subscription_create",
        (now, period_end),
        (now, now),
        true,
    );
    let invoice_id = invoice["id"]
        .as_str()
        .expect("invoices have ids")
        .to_owned();
    sub["latest_invoice"] = json!(invoice_id);
    state.invoices.insert(invoice_id.clone(), invoice.clone());
    state.subscriptions.insert(sub_id.clone(), sub.clone());
    state.subscription_order.push(sub_id.clone());

    let session = state.sessions.get_mut(session_id).expect("checked above");
    let object = &mut session.object;
    object["status"] = json!("complete");
    object["payment_status"] = json!(if trial.is_some() {
        "no_payment_required"
    } else {
        "paid"
    });
    object["customer"] = json!(customer_id);
    object["subscription"] = json!(sub_id);
    object["invoice"] = json!(invoice_id);
    object["url"] = Value::Null;
    object["customer_details"] = json!({
        "address": null,
        "email": form.email.clone().or_else(|| customer["email"].as_str().map(str::to_owned)),
        "name": form.name.clone().or_else(|| customer["name"].as_str().map(str::to_owned)),
        "phone": null,
        "tax_exempt": "none",
        "tax_ids": [],
    });
    let session_object = object.clone();
    let redirect_url = session_object["success_url"]
        .as_str()
        .map(|u| u.replace("{CHECKOUT_SESSION_ID}", session_id));

    events.push(state.new_event(
        shared,
        "customer.subscription.created",
        sub,
        None,
        RequestInfo::none(),
        None,
    ));
    events.push(state.new_event(
        shared,
        "checkout.session.completed",
        session_object,
        None,
        RequestInfo::none(),
        None,
    ));
    events.push(state.new_event(
        shared,
        "invoice.paid",
        invoice,
        None,
        RequestInfo::none(),
        None,
    ));
    Ok((
        CheckoutCompletion {
            redirect_url,
            customer_id,
            subscription_id: sub_id,
            invoice_id,
            event_ids: events.clone(),
        },
        events,
    ))
}

pub(super) fn renew_locked(
    shared: &Shared,
    state: &mut State,
    sub_id: &str,
    paid: bool,
) -> Result<(Value, Vec<String>), ApiError> {
    let before = state
        .subscriptions
        .get(sub_id)
        .cloned()
        .ok_or_else(|| ApiError::no_such("subscription", sub_id))?;
    if before["status"] == "canceled" {
        return Err(ApiError::invalid(
            format!("subscription {sub_id} is canceled"),
            None,
        ));
    }
    // A subscription set to cancel at the period end ends instead of renewing.
    if before["cancel_at_period_end"] == true {
        let (_, end) = current_period(&before);
        let mut sub = before.clone();
        sub["status"] = json!("canceled");
        sub["ended_at"] = json!(end);
        state.subscriptions.insert(sub_id.to_owned(), sub.clone());
        let event = state.new_event(
            shared,
            "customer.subscription.deleted",
            sub.clone(),
            None,
            RequestInfo::none(),
            None,
        );
        return Ok((sub, vec![event]));
    }
    let (old_start, old_end) = current_period(&before);
    let price_id = before["items"]["data"][0]["price"]["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let price = shared
        .price(&price_id)
        .ok_or_else(|| ApiError::no_such("price", &price_id))?;
    let new_end = price.interval.add_to(old_end, price.interval_count);
    let mut sub = before.clone();
    for item in sub["items"]["data"]
        .as_array_mut()
        .expect("items")
        .iter_mut()
    {
        item["current_period_start"] = json!(old_end);
        item["current_period_end"] = json!(new_end);
    }
    sub["status"] = json!(if paid { "active" } else { "past_due" });
    let customer = sub["customer"].as_str().unwrap_or("").to_owned();
    let mut invoice = invoice_json(
        shared,
        state,
        &sub,
        &customer,
        "subscription_cycle",
        (old_end, new_end),
        (old_start, old_end),
        paid,
    );
    if !paid {
        invoice["next_payment_attempt"] = json!(unix_now() + 3 * 86_400);
    }
    let invoice_id = invoice["id"]
        .as_str()
        .expect("invoices have ids")
        .to_owned();
    sub["latest_invoice"] = json!(invoice_id);
    state.invoices.insert(invoice_id, invoice.clone());
    state.subscriptions.insert(sub_id.to_owned(), sub.clone());
    let previous = previous_attributes(&before, &sub);
    let events = vec![
        state.new_event(
            shared,
            "customer.subscription.updated",
            sub,
            previous,
            RequestInfo::none(),
            None,
        ),
        state.new_event(
            shared,
            if paid {
                "invoice.paid"
            } else {
                "invoice.payment_failed"
            },
            invoice.clone(),
            None,
            RequestInfo::none(),
            None,
        ),
    ];
    Ok((invoice, events))
}

pub(super) fn recover_payment_locked(
    shared: &Shared,
    state: &mut State,
    sub_id: &str,
) -> Result<(Value, Vec<String>), ApiError> {
    let before = state
        .subscriptions
        .get(sub_id)
        .cloned()
        .ok_or_else(|| ApiError::no_such("subscription", sub_id))?;
    let invoice_id = before["latest_invoice"].as_str().unwrap_or("").to_owned();
    let invoice = state
        .invoices
        .get_mut(&invoice_id)
        .filter(|i| i["status"] == "open")
        .ok_or_else(|| {
            ApiError::invalid(format!("subscription {sub_id} has no open invoice"), None)
        })?;
    let now = unix_now();
    let due = invoice["amount_due"].clone();
    invoice["status"] = json!("paid");
    invoice["paid"] = json!(true);
    invoice["amount_paid"] = due;
    invoice["amount_remaining"] = json!(0);
    invoice["attempt_count"] = json!(invoice["attempt_count"].as_u64().unwrap_or(1) + 1);
    invoice["next_payment_attempt"] = Value::Null;
    invoice["status_transitions"]["paid_at"] = json!(now);
    let invoice = invoice.clone();
    let mut sub = before.clone();
    sub["status"] = json!("active");
    state.subscriptions.insert(sub_id.to_owned(), sub.clone());
    let previous = previous_attributes(&before, &sub);
    let events = vec![
        state.new_event(
            shared,
            "invoice.paid",
            invoice.clone(),
            None,
            RequestInfo::none(),
            None,
        ),
        state.new_event(
            shared,
            "customer.subscription.updated",
            sub,
            previous,
            RequestInfo::none(),
            None,
        ),
    ];
    Ok((invoice, events))
}
