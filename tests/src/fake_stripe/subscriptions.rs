//! Subscriptions: retrieve, update (items, plan switches, cancel at period end) and cancel.

use serde_json::{Map, Value, json};

use super::api::{
    Routed, bool_param, check_expansions, check_params, merge_metadata, metadata_param, str_param,
};
use super::checkout::expand_field;
use super::form::list_of;
use super::http::ApiError;
use super::objects::{invoice_json, price_json, subscription_item_json};
use super::state::{RequestInfo, Shared, State};
use super::unix_now;

pub(super) fn retrieve_subscription(shared: &Shared, id: &str, form: &Value) -> Routed {
    check_params(form, &["expand"], &[])?;
    let expand = check_expansions(form, &["customer", "latest_invoice"])?;
    let state = shared.state();
    let mut sub = state
        .subscriptions
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::no_such("subscription", id))?;
    for e in &expand {
        match e.as_str() {
            "customer" => expand_field(&mut sub, "customer", &state.customers),
            "latest_invoice" => expand_field(&mut sub, "latest_invoice", &state.invoices),
            _ => {}
        }
    }
    Ok((sub, Vec::new()))
}

/// A change to one subscription item (`items[i]`).
pub(super) struct ItemChange {
    pub(super) index: usize,
    pub(super) id: Option<String>,
    pub(super) price: Option<String>,
    pub(super) quantity: Option<u64>,
    pub(super) deleted: bool,
}

/// What an update asks for; shared by the API and the portal page.
#[derive(Default)]
pub(super) struct SubscriptionUpdate {
    pub(super) cancel_at_period_end: Option<bool>,
    pub(super) items: Vec<ItemChange>,
    pub(super) metadata: Map<String, Value>,
    pub(super) clear_metadata: bool,
}

pub(super) fn update_subscription(
    shared: &Shared,
    id: &str,
    form: &Value,
    info: &RequestInfo,
) -> Routed {
    check_params(
        form,
        &["cancel_at_period_end", "expand", "items", "metadata"],
        &["payment_behavior", "proration_behavior", "proration_date"],
    )?;
    check_expansions(form, &[])?;
    if let Some(behavior) = str_param(form, "proration_behavior")
        && !["always_invoice", "create_prorations", "none"].contains(&behavior)
    {
        return Err(ApiError::invalid_value(
            "proration_behavior",
            format!(
                "Invalid proration_behavior: must be one of always_invoice, create_prorations, \
                     or none (got {behavior})"
            ),
        ));
    }
    let mut update = SubscriptionUpdate {
        cancel_at_period_end: bool_param(form, "cancel_at_period_end")?,
        metadata: metadata_param(form, "metadata")?,
        clear_metadata: str_param(form, "metadata") == Some(""),
        ..SubscriptionUpdate::default()
    };
    for (index, item) in list_of(&form["items"]).into_iter().enumerate() {
        let quantity = match item.get("quantity").and_then(Value::as_str) {
            None => None,
            Some(q) => Some(q.parse::<u64>().ok().filter(|q| *q >= 1).ok_or_else(|| {
                ApiError::invalid_value(
                    &format!("items[{index}][quantity]"),
                    format!("Invalid integer: {q}"),
                )
            })?),
        };
        update.items.push(ItemChange {
            index,
            id: item.get("id").and_then(Value::as_str).map(str::to_owned),
            price: item.get("price").and_then(Value::as_str).map(str::to_owned),
            quantity,
            deleted: bool_param(item, "deleted")?.unwrap_or(false),
        });
    }
    let mut state = shared.state();
    apply_subscription_update(shared, &mut state, id, update, info)
}

pub(super) fn apply_subscription_update(
    shared: &Shared,
    state: &mut State,
    id: &str,
    update: SubscriptionUpdate,
    info: &RequestInfo,
) -> Routed {
    let before = state
        .subscriptions
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::no_such("subscription", id))?;
    if before["status"] == "canceled" {
        return Err(ApiError::invalid(
            "A canceled subscription can only update its cancellation_details and metadata.",
            None,
        ));
    }
    let now = unix_now();
    let mut sub = before.clone();
    let customer = sub["customer"].as_str().unwrap_or("").to_owned();
    let mut events = Vec::new();
    let mut new_period: Option<(i64, i64)> = None;

    for change in &update.items {
        let price = match &change.price {
            None => None,
            Some(price_id) => Some(shared.price(price_id).ok_or_else(|| {
                ApiError::no_such_param(
                    "price",
                    price_id,
                    &format!("items[{}][price]", change.index),
                )
            })?),
        };
        let items = sub["items"]["data"]
            .as_array_mut()
            .expect("subscriptions have items");
        match &change.id {
            Some(item_id) => {
                let position = items
                    .iter()
                    .position(|i| i["id"] == item_id.as_str())
                    .ok_or_else(|| {
                        ApiError::no_such_param(
                            "subscription item",
                            item_id,
                            &format!("items[{}][id]", change.index),
                        )
                    })?;
                if change.deleted {
                    items.remove(position);
                    continue;
                }
                let item = &mut items[position];
                if let Some(price) = price {
                    let old_interval = item["price"]["recurring"]["interval"].clone();
                    item["price"] = price_json(price);
                    // A new interval restarts the billing cycle now.
                    if item["price"]["recurring"]["interval"] != old_interval {
                        let end = price.interval.add_to(now, price.interval_count);
                        new_period = Some((now, end));
                    }
                }
                if let Some(q) = change.quantity {
                    item["quantity"] = json!(q);
                }
            }
            None => {
                let price = price
                    .ok_or_else(|| ApiError::missing(&format!("items[{}][price]", change.index)))?;
                let (start, end) = current_period(&before);
                items.push(subscription_item_json(
                    shared,
                    id,
                    price,
                    change.quantity.unwrap_or(1),
                    start,
                    end,
                ));
            }
        }
    }
    if sub["items"]["data"].as_array().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid(
            "A subscription must have at least one active plan.",
            Some("items"),
        ));
    }
    // A trial keeps its period whatever the price.
    if before["status"] == "trialing" {
        new_period = None;
    }
    if let Some((start, end)) = new_period {
        for item in sub["items"]["data"]
            .as_array_mut()
            .expect("items")
            .iter_mut()
        {
            item["current_period_start"] = json!(start);
            item["current_period_end"] = json!(end);
        }
        sub["billing_cycle_anchor"] = json!(start);
    }
    if let Some(cancel) = update.cancel_at_period_end {
        sub["cancel_at_period_end"] = json!(cancel);
        if cancel {
            let (_, end) = current_period(&sub);
            sub["cancel_at"] = json!(end);
            sub["canceled_at"] = json!(now);
            sub["cancellation_details"] =
                json!({ "comment": null, "feedback": null, "reason": "cancellation_requested" });
        } else {
            sub["cancel_at"] = Value::Null;
            sub["canceled_at"] = Value::Null;
            sub["cancellation_details"] =
                json!({ "comment": null, "feedback": null, "reason": null });
        }
    }
    if update.clear_metadata {
        sub["metadata"] = json!({});
    }
    merge_metadata(&mut sub["metadata"], update.metadata);

    // A billing-cycle restart is charged at once, as Stripe does.
    if let Some((start, end)) = new_period {
        let invoice = invoice_json(
            shared,
            state,
            &sub,
            &customer,
            "subscription_update",
            (start, end),
            (start, start),
            true,
        );
        let invoice_id = invoice["id"]
            .as_str()
            .expect("invoices have ids")
            .to_owned();
        sub["latest_invoice"] = json!(invoice_id);
        state.invoices.insert(invoice_id, invoice);
    }
    let previous = previous_attributes(&before, &sub);
    state.subscriptions.insert(id.to_owned(), sub.clone());
    if let Some(previous) = previous {
        events.push(state.new_event(
            shared,
            "customer.subscription.updated",
            sub.clone(),
            Some(previous),
            info.clone(),
            None,
        ));
        if new_period.is_some() {
            let invoice_id = sub["latest_invoice"].as_str().unwrap_or("").to_owned();
            let invoice = state.invoices[&invoice_id].clone();
            events.push(state.new_event(shared, "invoice.paid", invoice, None, info.clone(), None));
        }
    }
    Ok((sub, events))
}

pub(super) fn cancel_subscription(
    shared: &Shared,
    id: &str,
    form: &Value,
    info: &RequestInfo,
) -> Routed {
    check_params(
        form,
        &["cancellation_details", "expand"],
        &["invoice_now", "prorate"],
    )?;
    check_expansions(form, &[])?;
    let mut state = shared.state();
    let sub = state
        .subscriptions
        .get_mut(id)
        .ok_or_else(|| ApiError::no_such("subscription", id))?;
    if sub["status"] == "canceled" {
        return Err(ApiError::invalid(
            format!("This subscription ({id}) has already been canceled."),
            None,
        ));
    }
    let now = unix_now();
    let details = &form["cancellation_details"];
    sub["status"] = json!("canceled");
    sub["canceled_at"] = json!(now);
    sub["ended_at"] = json!(now);
    sub["cancellation_details"] = json!({
        "comment": details.get("comment").and_then(Value::as_str),
        "feedback": details.get("feedback").and_then(Value::as_str),
        "reason": "cancellation_requested",
    });
    let sub = sub.clone();
    let event = state.new_event(
        shared,
        "customer.subscription.deleted",
        sub.clone(),
        None,
        info.clone(),
        None,
    );
    Ok((sub, vec![event]))
}

/// The top-level fields of `before` that differ in `after`, with their old
/// values: Stripe's `previous_attributes`. `None` when nothing changed.
pub(super) fn previous_attributes(before: &Value, after: &Value) -> Option<Value> {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return None;
    };
    let changed: Map<String, Value> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!changed.is_empty()).then_some(Value::Object(changed))
}

/// The first item's period (all items share one here).
pub(super) fn current_period(sub: &Value) -> (i64, i64) {
    let item = &sub["items"]["data"][0];
    (
        item["current_period_start"].as_i64().unwrap_or(0),
        item["current_period_end"].as_i64().unwrap_or(0),
    )
}
