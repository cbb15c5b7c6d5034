//! Customers: `POST /v1/customers`, `POST /v1/customers/{id}` and the customer object.

use serde_json::{Value, json};

use super::api::{
    Routed, check_expansions, check_params, fresh_metadata, merge_metadata, metadata_param,
    str_param,
};
use super::http::ApiError;
use super::state::Shared;
use super::unix_now;

pub(super) const CUSTOMER_PARAMS: &[&str] = &[
    "description",
    "email",
    "expand",
    "metadata",
    "name",
    "phone",
];
pub(super) const CUSTOMER_IGNORED: &[&str] = &[
    "address",
    "invoice_settings",
    "preferred_locales",
    "shipping",
    "tax",
    "tax_exempt",
];

pub(super) fn create_customer(shared: &Shared, form: &Value) -> Routed {
    check_params(form, CUSTOMER_PARAMS, CUSTOMER_IGNORED)?;
    check_expansions(form, &[])?;
    let metadata = metadata_param(form, "metadata")?;
    let email = str_param(form, "email").filter(|s| !s.is_empty());
    if let Some(email) = email {
        validate_email(email, "email")?;
    }
    let mut state = shared.state();
    let customer = new_customer(
        shared,
        email,
        str_param(form, "name").filter(|s| !s.is_empty()),
        fresh_metadata(metadata),
    );
    let mut customer = customer;
    if let Some(d) = str_param(form, "description") {
        customer["description"] = json!(d);
    }
    if let Some(p) = str_param(form, "phone") {
        customer["phone"] = json!(p);
    }
    let id = customer["id"]
        .as_str()
        .expect("customers have ids")
        .to_owned();
    state.customers.insert(id, customer.clone());
    Ok((customer, Vec::new()))
}

pub(super) fn update_customer(shared: &Shared, id: &str, form: &Value) -> Routed {
    check_params(form, CUSTOMER_PARAMS, CUSTOMER_IGNORED)?;
    check_expansions(form, &[])?;
    let metadata = metadata_param(form, "metadata")?;
    if let Some(email) = str_param(form, "email").filter(|s| !s.is_empty()) {
        validate_email(email, "email")?;
    }
    let mut state = shared.state();
    let customer = state
        .customers
        .get_mut(id)
        .ok_or_else(|| ApiError::no_such("customer", id))?;
    for key in ["email", "name", "description", "phone"] {
        if let Some(v) = str_param(form, key) {
            customer[key] = if v.is_empty() { Value::Null } else { json!(v) };
        }
    }
    if str_param(form, "metadata") == Some("") {
        customer["metadata"] = json!({});
    }
    merge_metadata(&mut customer["metadata"], metadata);
    Ok((customer.clone(), Vec::new()))
}

pub(super) fn validate_email(email: &str, param: &str) -> Result<(), ApiError> {
    let ok = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !email.contains(' ')
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError {
            code: Some("email_invalid"),
            ..ApiError::invalid(format!("Invalid email address: {email}"), Some(param))
        })
    }
}

pub(super) fn new_customer(
    shared: &Shared,
    email: Option<&str>,
    name: Option<&str>,
    metadata: Value,
) -> Value {
    let id = shared.ids.make("cus_", 14);
    let prefix: String = shared.ids.make("", 8).to_ascii_uppercase();
    json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": unix_now(),
        "currency": null,
        "customer_account": null,
        "default_source": null,
        "delinquent": false,
        "description": null,
        "discount": null,
        "email": email,
        "invoice_prefix": prefix,
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": null,
            "footer": null,
            "rendering_options": null,
        },
        "livemode": false,
        "metadata": metadata,
        "name": name,
        "next_invoice_sequence": 1,
        "phone": null,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null,
    })
}
