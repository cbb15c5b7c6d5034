//! Billing portal sessions: `POST /v1/billing_portal/sessions`.

use serde_json::{Value, json};

use super::api::{Routed, check_expansions, check_params, str_param};
use super::http::ApiError;
use super::state::Shared;
use super::unix_now;

pub(super) fn create_portal_session(shared: &Shared, form: &Value) -> Routed {
    check_params(
        form,
        &["customer", "expand", "return_url"],
        &["configuration", "flow_data", "locale", "on_behalf_of"],
    )?;
    check_expansions(form, &[])?;
    let customer = str_param(form, "customer")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::missing("customer"))?;
    let return_url = str_param(form, "return_url");
    if let Some(url) = return_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ApiError::invalid_value(
            "return_url",
            "Not a valid URL: return_url must be an absolute http(s) URL",
        ));
    }
    let mut state = shared.state();
    if !state.customers.contains_key(customer) {
        return Err(ApiError::no_such_param("customer", customer, "customer"));
    }
    let id = shared.ids.make("bps_", 24);
    let object = json!({
        "id": id,
        "object": "billing_portal.session",
        "configuration": "bpc_fakeDefaultConfiguration",
        "created": unix_now(),
        "customer": customer,
        "customer_account": null,
        "flow": null,
        "livemode": false,
        "locale": null,
        "on_behalf_of": null,
        "return_url": return_url,
        "url": format!("{}/p/session/{id}", shared.base_url()),
    });
    state.portal_sessions.insert(id, object.clone());
    Ok((object, Vec::new()))
}
