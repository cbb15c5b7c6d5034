//! Stripe's object shapes: prices, plans, subscription items and invoices.

use serde_json::{Value, json};

use super::config::Price;
use super::helpers::{merge_objects, money};
use super::state::{Shared, State};
use super::unix_now;

pub(super) fn price_json(price: &Price) -> Value {
    json!({
        "id": price.id,
        "object": "price",
        "active": true,
        "billing_scheme": "per_unit",
        "created": 1_767_225_600,
        "currency": price.currency,
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": price.lookup_key,
        "metadata": price.metadata,
        "nickname": price.nickname,
        "product": price.product,
        "recurring": {
            "interval": price.interval.as_str(),
            "interval_count": price.interval_count,
            "meter": null,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "tiers_mode": null,
        "transform_quantity": null,
        "type": "recurring",
        "unit_amount": price.unit_amount,
        "unit_amount_decimal": price.unit_amount.to_string(),
    })
}

pub(super) fn subscription_item_json(
    shared: &Shared,
    sub_id: &str,
    price: &Price,
    quantity: u64,
    start: i64,
    end: i64,
) -> Value {
    json!({
        "id": shared.ids.make("si_", 14),
        "object": "subscription_item",
        "billing_thresholds": null,
        "created": unix_now(),
        "current_period_end": end,
        "current_period_start": start,
        "discounts": [],
        "metadata": {},
        "price": price_json(price),
        "quantity": quantity,
        "subscription": sub_id,
        "tax_rates": [],
    })
}

/// An invoice for `sub`'s items over `service` (the line periods); `period`
/// is the invoice's own `period_start/end`, which for subscription
/// invoices looks back (Stripe's convention).
#[allow(clippy::too_many_arguments)]
pub(super) fn invoice_json(
    shared: &Shared,
    state: &mut State,
    sub: &Value,
    customer_id: &str,
    billing_reason: &str,
    service: (i64, i64),
    period: (i64, i64),
    paid: bool,
) -> Value {
    let now = unix_now();
    let id = shared.ids.make("in_", 24);
    let sub_id = sub["id"].as_str().unwrap_or("");
    let trialing = sub["status"] == "trialing";
    let customer = state
        .customers
        .get(customer_id)
        .cloned()
        .unwrap_or(Value::Null);
    let currency = sub["currency"].as_str().unwrap_or("usd").to_owned();
    let mut total = 0;
    let lines: Vec<Value> = sub["items"]["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|item| {
            let quantity = item["quantity"].as_i64().unwrap_or(1);
            let unit = if trialing { 0 } else { item["price"]["unit_amount"].as_i64().unwrap_or(0) };
            let amount = unit * quantity;
            total += amount;
            let name = shared
                .price(item["price"]["id"].as_str().unwrap_or(""))
                .map(|p| p.product_name.clone())
                .unwrap_or_default();
            let description = if trialing {
                format!("Trial period for {name}")
            } else {
                format!(
                    "{quantity} × {name} (at {} / {})",
                    money(unit, &currency),
                    item["price"]["recurring"]["interval"].as_str().unwrap_or("")
                )
            };
            json!({
                "id": shared.ids.make("il_", 24),
                "object": "line_item",
                "amount": amount,
                "currency": currency,
                "description": description,
                "discount_amounts": [],
                "discountable": true,
                "discounts": [],
                "invoice": id,
                "livemode": false,
                "metadata": {},
                "parent": {
                    "invoice_item_details": null,
                    "subscription_item_details": {
                        "invoice_item": null,
                        "proration": false,
                        "proration_details": { "credited_items": null },
                        "subscription": sub_id,
                        "subscription_item": item["id"],
                    },
                    "type": "subscription_item_details",
                },
                "period": { "end": service.1, "start": service.0 },
                "pretax_credit_amounts": [],
                "pricing": {
                    "price_details": { "price": item["price"]["id"], "product": item["price"]["product"] },
                    "type": "price_details",
                    "unit_amount_decimal": unit.to_string(),
                },
                "quantity": quantity,
                "quantity_decimal": quantity.to_string(),
                "subscription": null,
                "subtotal": amount,
                "taxes": [],
            })
        })
        .collect();
    state.invoice_count += 1;
    let number = format!(
        "{}-{:04}",
        customer["invoice_prefix"].as_str().unwrap_or("FAKE"),
        state.invoice_count
    );
    let base = shared.base_url();
    merge_objects([
        json!({
            "id": id,
            "object": "invoice",
            "account_country": "US",
            "account_name": shared.config.account_name,
            "account_tax_ids": null,
            "amount_due": total,
            "amount_overpaid": 0,
            "amount_paid": if paid { total } else { 0 },
            "amount_paid_off_stripe": 0,
            "amount_remaining": if paid { 0 } else { total },
            "amount_shipping": 0,
            "application": null,
            "attempt_count": 1,
            "attempted": true,
            "auto_advance": !paid,
            "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null },
            "automatically_finalizes_at": null,
            "billing_reason": billing_reason,
            "collection_method": "charge_automatically",
            "created": now,
            "currency": currency,
            "custom_fields": null,
            "customer": customer_id,
            "customer_account": null,
            "customer_address": null,
            "customer_email": customer["email"],
            "customer_name": customer["name"],
            "customer_phone": null,
            "customer_shipping": null,
            "customer_tax_exempt": "none",
            "customer_tax_ids": [],
            "default_payment_method": null,
            "default_source": null,
            "default_tax_rates": [],
            "description": null,
            "discounts": [],
        }),
        json!({
            "due_date": null,
            "effective_at": now,
            "ending_balance": 0,
            "footer": null,
            "from_invoice": null,
            "hosted_invoice_url": format!("{base}/i/{id}"),
            "invoice_pdf": format!("{base}/i/{id}/pdf"),
            "issuer": { "type": "self" },
            "last_finalization_error": null,
            "latest_revision": null,
            "lines": {
                "object": "list",
                "data": lines,
                "has_more": false,
                "url": format!("/v1/invoices/{id}/lines"),
            },
            "livemode": false,
            "metadata": {},
        }),
        json!({
            "next_payment_attempt": null,
            "number": number,
            "on_behalf_of": null,
            "parent": {
                "quote_details": null,
                "subscription_details": { "metadata": sub["metadata"], "subscription": sub_id },
                "type": "subscription_details",
            },
            "payment_settings": { "default_mandate": null, "payment_method_options": null, "payment_method_types": null },
            "period_end": period.1,
            "period_start": period.0,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": null,
            "rendering": null,
            "shipping_cost": null,
            "shipping_details": null,
            "starting_balance": 0,
            "statement_descriptor": null,
            "status": if paid { "paid" } else { "open" },
            "status_transitions": {
                "finalized_at": now,
                "marked_uncollectible_at": null,
                "paid_at": if paid { Some(now) } else { None },
                "voided_at": null,
            },
            "subtotal": total,
            "subtotal_excluding_tax": total,
            "test_clock": null,
            "total": total,
            "total_discount_amounts": [],
            "total_excluding_tax": total,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": now,
        }),
    ])
}
