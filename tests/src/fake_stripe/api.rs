//! The API's front door: authentication, idempotency, routing, shared parameter checks.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::checkout::{
    create_checkout_session, expire_checkout_session, line_items_list, retrieve_checkout_session,
};
use super::customers::{create_customer, update_customer};
use super::form::{list_of, nest};
use super::http::{Answer, ApiError, Incoming};
use super::objects::price_json;
use super::portal::create_portal_session;
use super::state::{RequestInfo, SavedAnswer, Shared, State};
use super::subscriptions::{cancel_subscription, retrieve_subscription, update_subscription};

pub(super) fn api(shared: &Shared, req: &Incoming) -> Answer {
    let request_id = shared.ids.make("req_", 14);
    let version = req
        .header("stripe-version")
        .unwrap_or(&shared.config.api_version)
        .to_owned();
    let idempotency_key = req.header("idempotency-key").map(str::to_owned);
    let mut answer = api_answer(shared, req, &request_id, idempotency_key.as_deref());
    answer.headers.push(("Request-Id", request_id));
    answer.headers.push(("Stripe-Version", version));
    if let Some(key) = idempotency_key {
        answer.headers.push(("Idempotency-Key", key));
    }
    answer
}

pub(super) fn api_answer(
    shared: &Shared,
    req: &Incoming,
    request_id: &str,
    idempotency_key: Option<&str>,
) -> Answer {
    if let Err(e) = authenticate(shared, req) {
        return e.answer();
    }
    if let Some(status) = take_injected_failure(shared, req) {
        let kind = if status >= 500 {
            "api_error"
        } else {
            "invalid_request_error"
        };
        return Answer::json(
            status,
            &json!({ "error": { "type": kind, "message": format!("Injected failure ({status}) from the fake Stripe.") } }),
        );
    }
    if req.non_form_body {
        return ApiError::invalid(
            "Invalid request: Stripe takes parameters as application/x-www-form-urlencoded, \
             and this body is not.",
            None,
        )
        .answer();
    }

    // Idempotent POSTs: a saved answer is replayed, whatever happened since.
    let idempotency_key = idempotency_key.filter(|_| req.method == "POST");
    if let Some(key) = idempotency_key {
        let mut state = shared.state();
        if state.idempotent_in_flight.contains(key) {
            return Answer::json(
                409,
                &json!({ "error": {
                    "type": "idempotency_error",
                    "message": format!(
                        "There is currently another in-progress request using this \
                         Idempotency-Key (that probably means you submitted twice, and the other \
                         request is still going through): {key}. Please try again later."
                    ),
                }}),
            );
        }
        if let Some(saved) = state.idempotent.get(key) {
            if saved.method != req.method || saved.path != req.path || saved.params != req.params {
                return Answer::json(
                    400,
                    &json!({ "error": {
                        "type": "idempotency_error",
                        "message": format!(
                            "Keys for idempotent requests can only be used with the same parameters \
                             they were first used with. Try using a key other than '{key}' if you \
                             meant to execute a different request."
                        ),
                    }}),
                );
            }
            let mut answer = Answer::json(saved.status, &Value::Null);
            answer.body = saved.body.clone();
            answer
                .headers
                .push(("Idempotent-Replayed", "true".to_owned()));
            return answer;
        }
        state.idempotent_in_flight.insert(key.to_owned());
    }

    let info = RequestInfo {
        id: Some(request_id.to_owned()),
        idempotency_key: idempotency_key.map(str::to_owned),
    };
    let result = route(shared, req, &info);
    let (answer, events) = match result {
        Ok((object, events)) => (Answer::json(200, &object), events),
        Err(e) => (e.answer(), Vec::new()),
    };
    if let Some(key) = idempotency_key {
        shared.state().idempotent_in_flight.remove(key);
    }
    if let Some(key) = idempotency_key
        && answer.status == 200
    {
        shared.state().idempotent.insert(
            key.to_owned(),
            SavedAnswer {
                method: req.method.clone(),
                path: req.path.clone(),
                params: req.params.clone(),
                status: answer.status,
                body: answer.body.clone(),
            },
        );
    }
    shared.dispatch(&events);
    answer
}

pub(super) fn authenticate(shared: &Shared, req: &Incoming) -> Result<(), ApiError> {
    let unauthorized = |message: String| ApiError {
        status: 401,
        ..ApiError::invalid(message, None)
    };
    let Some(auth) = req.header("authorization") else {
        return Err(unauthorized(
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
             YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, \
             or we can help at https://support.stripe.com/."
                .to_owned(),
        ));
    };
    let key = if let Some(token) = auth.strip_prefix("Bearer ") {
        token.trim().to_owned()
    } else if let Some(basic) = auth.strip_prefix("Basic ") {
        let decoded = STANDARD.decode(basic.trim()).unwrap_or_default();
        let text = String::from_utf8_lossy(&decoded).into_owned();
        text.split(':').next().unwrap_or("").to_owned()
    } else {
        return Err(unauthorized(
            "Invalid authorization header: use 'Authorization: Bearer YOUR_SECRET_KEY'.".to_owned(),
        ));
    };
    if key == shared.config.api_key {
        return Ok(());
    }
    if key.starts_with("pk_") {
        return Err(unauthorized(
            "This API call cannot be made with a publishable API key. Please use a secret API \
             key."
                .to_owned(),
        ));
    }
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let prefix: String = key.chars().take(8).collect();
    Err(unauthorized(format!(
        "Invalid API Key provided: {prefix}****{tail}"
    )))
}

pub(super) fn take_injected_failure(shared: &Shared, req: &Incoming) -> Option<u16> {
    let mut state = shared.state();
    let position = state.injected.iter().position(|f| {
        f.method == req.method
            && match f.path.strip_suffix('*') {
                Some(prefix) => req.path.starts_with(prefix),
                None => f.path == req.path,
            }
    })?;
    let failure = &mut state.injected[position];
    let status = failure.status;
    failure.remaining = failure.remaining.saturating_sub(1);
    if failure.remaining == 0 {
        state.injected.remove(position);
    }
    Some(status)
}

pub(super) type Routed = Result<(Value, Vec<String>), ApiError>;

pub(super) fn route(shared: &Shared, req: &Incoming, info: &RequestInfo) -> Routed {
    let segments: Vec<&str> = req
        .path
        .trim_start_matches("/v1/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let params = if req.method == "GET" {
        &req.query
    } else {
        &req.params
    };
    let form = nest(params);
    match (req.method.as_str(), segments.as_slice()) {
        ("POST", ["customers"]) => create_customer(shared, &form),
        ("GET", ["customers", id]) => retrieve(
            shared,
            &form,
            |s| s.customers.get(*id).cloned(),
            "customer",
            id,
        ),
        ("POST", ["customers", id]) => update_customer(shared, id, &form),
        ("POST", ["checkout", "sessions"]) => create_checkout_session(shared, &form),
        ("GET", ["checkout", "sessions", id]) => retrieve_checkout_session(shared, id, &form),
        ("GET", ["checkout", "sessions", id, "line_items"]) => {
            check_params(
                &form,
                &["expand", "limit", "starting_after", "ending_before"],
                &[],
            )?;
            let state = shared.state();
            let session = state
                .sessions
                .get(*id)
                .ok_or_else(|| ApiError::no_such("checkout.session", id))?;
            Ok((line_items_list(shared, id, session), Vec::new()))
        }
        ("POST", ["checkout", "sessions", id, "expire"]) => {
            expire_checkout_session(shared, id, &form, info)
        }
        ("POST", ["billing_portal", "sessions"]) => create_portal_session(shared, &form),
        ("GET", ["subscriptions", id]) => retrieve_subscription(shared, id, &form),
        ("POST", ["subscriptions", id]) => update_subscription(shared, id, &form, info),
        ("DELETE", ["subscriptions", id]) => cancel_subscription(shared, id, &form, info),
        ("GET", ["prices", id]) => {
            check_params(&form, &["expand"], &[])?;
            let price = shared
                .price(id)
                .ok_or_else(|| ApiError::no_such("price", id))?;
            Ok((price_json(price), Vec::new()))
        }
        _ => Err(ApiError {
            status: 404,
            ..ApiError::invalid(
                format!(
                    "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we \
                     can help at https://support.stripe.com/.",
                    req.method, req.path
                ),
                None,
            )
        }),
    }
}

/// Rejects top-level parameters that are neither modelled nor knowingly
/// ignored, as Stripe rejects unknown ones.
pub(super) fn check_params(
    form: &Value,
    modelled: &[&str],
    ignored: &[&str],
) -> Result<(), ApiError> {
    if let Some(map) = form.as_object() {
        for key in map.keys() {
            if !modelled.contains(&key.as_str()) && !ignored.contains(&key.as_str()) {
                return Err(ApiError::unknown_param(key));
            }
        }
    }
    Ok(())
}

pub(super) fn expansions(form: &Value) -> Vec<String> {
    list_of(&form["expand"])
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

pub(super) fn check_expansions(form: &Value, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    let wanted = expansions(form);
    for e in &wanted {
        if !allowed.contains(&e.as_str()) {
            return Err(ApiError::invalid(
                format!("This property cannot be expanded ({e})."),
                Some("expand"),
            ));
        }
    }
    Ok(wanted)
}

pub(super) fn retrieve(
    shared: &Shared,
    form: &Value,
    find: impl FnOnce(&State) -> Option<Value>,
    what: &str,
    id: &str,
) -> Routed {
    check_params(form, &["expand"], &[])?;
    check_expansions(form, &[])?;
    let found = find(&shared.state());
    found
        .map(|v| (v, Vec::new()))
        .ok_or_else(|| ApiError::no_such(what, id))
}

pub(super) fn str_param<'a>(form: &'a Value, key: &str) -> Option<&'a str> {
    form.get(key).and_then(Value::as_str)
}

pub(super) fn bool_param(form: &Value, key: &str) -> Result<Option<bool>, ApiError> {
    match form.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(other) => Err(ApiError::invalid(
            format!(
                "Invalid boolean: {}",
                other.as_str().unwrap_or("(an object)")
            ),
            Some(key),
        )),
    }
}

/// `metadata[k]=v` pairs, checked against Stripe's limits; an empty value
/// means "remove the key" (Stripe's convention), kept here as `Null`.
pub(super) fn metadata_param(form: &Value, key: &str) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    match form.get(key) {
        None => {}
        // `metadata=` (empty) clears all keys on update.
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::Object(map)) => {
            if map.len() > 50 {
                return Err(ApiError::invalid(
                    "Metadata can have at most 50 keys.",
                    Some(key),
                ));
            }
            for (k, v) in map {
                let Some(v) = v.as_str() else {
                    return Err(ApiError::invalid(
                        format!("Invalid value for {key}[{k}]: metadata values are strings."),
                        Some(&format!("{key}[{k}]")),
                    ));
                };
                if k.chars().count() > 40 {
                    return Err(ApiError::invalid(
                        format!("Metadata keys can be at most 40 characters ('{k}')."),
                        Some(&format!("{key}[{k}]")),
                    ));
                }
                if v.chars().count() > 500 {
                    return Err(ApiError::invalid(
                        format!("Metadata values can be at most 500 characters ({key}[{k}])."),
                        Some(&format!("{key}[{k}]")),
                    ));
                }
                let value = if v.is_empty() { Value::Null } else { json!(v) };
                out.insert(k.clone(), value);
            }
        }
        Some(_) => return Err(ApiError::invalid("Invalid hash", Some(key))),
    }
    Ok(out)
}

/// Applies a metadata update (`Null` removes a key).
pub(super) fn merge_metadata(target: &mut Value, update: Map<String, Value>) {
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("just made an object");
    for (k, v) in update {
        if v.is_null() {
            map.remove(&k);
        } else {
            map.insert(k, v);
        }
    }
}

pub(super) fn fresh_metadata(update: Map<String, Value>) -> Value {
    let mut value = json!({});
    merge_metadata(&mut value, update);
    value
}
