//! The OpenAPI document as integrators get it, at `/openapi.json` and in
//! `/docs` (and, for the default development address, in
//! `schemas/openapi.json`).
//!
//! poem-openapi writes the document from the handlers' types; this module
//! finishes it, because some of what generators and linters need cannot be
//! said through the framework:
//!
//! - A field that refers to another schema is a plain `$ref` (the framework
//!   wraps it in an `allOf` with a description, which many generators
//!   refuse).
//! - Each operation lists only the error statuses it can really answer
//!   ([`operations::OPERATIONS`]; the handlers share one error type, which lists them
//!   all), each with example problem documents made by the code that
//!   refuses (the `code`s an integrator can meet there).
//! - Public operations say `security: []`; `deactivate` takes an optional
//!   session.
//! - Examples of every request and success body, made from the wire types.
//! - `servers` is the issuer's `PUBLIC_BASE_URL`, and the patterns of the
//!   request fields (`FIELD_PATTERNS`) are stated.

mod examples;
mod operations;

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub use operations::{Access, OPERATIONS, Operation, error_codes_markdown, refusals};

use super::problem::Problem;
use crate::domain::input;
use examples::Examples;

/// The address in `schemas/openapi.json`: what a development issuer with
/// no `PUBLIC_BASE_URL` serves (`http://` + its default bind address).
pub const DEVELOPMENT_BASE_URL: &str = "http://127.0.0.1:8080";

/// The format rules of request fields, stated in the spec as patterns.
/// They are enforced by `validate` (not by the framework's `pattern`
/// validator, which compiles its regex on every request); schemathesis in CI
/// checks that both say the same.
const FIELD_PATTERNS: &[(&str, &str, &str)] = &[
    ("SignupRequest", "email", input::EMAIL_PATTERN),
    ("LoginRequest", "email", input::EMAIL_PATTERN),
    ("PasswordResetRequest", "email", input::EMAIL_PATTERN),
    ("SignupRequest", "company_name", input::NAME_PATTERN),
    ("ActivateRequest", "license_key", input::KEY_PATTERN),
    ("ValidateRequest", "license_key", input::KEY_PATTERN),
    ("DeactivateRequest", "license_key", input::KEY_PATTERN),
    ("ActivateRequest", "hardware_id", input::HARDWARE_ID_PATTERN),
    ("ValidateRequest", "hardware_id", input::HARDWARE_ID_PATTERN),
    (
        "DeactivateRequest",
        "hardware_id",
        input::HARDWARE_ID_PATTERN,
    ),
    ("ActivateRequest", "machine_name", input::TEXT_PATTERN),
    ("ValidateRequest", "client_version", input::TEXT_PATTERN),
];
/// The spec for an issuer reached at `public_base_url`.
pub fn document(public_base_url: &str) -> Value {
    let raw = super::service().spec();
    let mut spec: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    if !spec.is_object() {
        return spec;
    }
    for (schema, field, pattern) in FIELD_PATTERNS {
        let prop = &mut spec["components"]["schemas"][*schema]["properties"][*field];
        if prop.is_object() {
            prop["pattern"] = Value::String((*pattern).to_owned());
        }
    }
    unwrap_ref_all_of(&mut spec);
    mark_optional_nullable(&mut spec);
    spec["servers"] = json!([{
        "url": public_base_url,
        "description": "This issuer (its PUBLIC_BASE_URL)."
    }]);
    let examples = examples::examples();
    if let Some(paths) = spec["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(methods) = item.as_object_mut() else {
                continue;
            };
            for op in methods.values_mut() {
                finish_operation(op, &examples);
            }
        }
    }
    spec
}

/// `document` as pretty JSON text.
pub fn document_json(public_base_url: &str) -> String {
    serde_json::to_string_pretty(&document(public_base_url)).unwrap_or_default()
}

/// Swagger UI (`/docs`) showing the served document: the framework's page,
/// which would embed its own unfinished document, made to fetch
/// `/openapi.json` instead. The page does not depend on the configuration,
/// so the Content-Security-Policy can pin its inline scripts once.
pub fn docs_html() -> String {
    let service = super::service();
    let raw = service.spec();
    service
        .swagger_ui_html()
        .replacen(
            &format!("let spec = {raw};"),
            "let spec = \"/openapi.json\";",
            1,
        )
        .replacen("spec: spec,", "url: spec,", 1)
}

/// An optional field (`Option` in Rust) is sent as `null` when it has no
/// value, and `null` is accepted for it: say so (`nullable`, OpenAPI 3.0).
fn mark_optional_nullable(spec: &mut Value) {
    let Some(schemas) = spec
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for schema in schemas.values_mut() {
        let required: Vec<String> = schema["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (name, prop) in props.iter_mut() {
            if !required.contains(name) && prop.get("$ref").is_none() && prop.is_object() {
                prop["nullable"] = Value::Bool(true);
            }
        }
    }
}

/// `{"allOf": [{"$ref": R}, {"description": …}], …}` becomes `{"$ref": R}`.
fn unwrap_ref_all_of(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let reference = map
                .get("allOf")
                .and_then(Value::as_array)
                .filter(|parts| {
                    parts.len() == 2
                        && parts[1]
                            .as_object()
                            .is_some_and(|o| o.keys().all(|k| k == "description"))
                })
                .and_then(|parts| parts[0].get("$ref"))
                .cloned();
            if let Some(reference) = reference {
                map.clear();
                map.insert("$ref".to_owned(), reference);
                return;
            }
            for value in map.values_mut() {
                unwrap_ref_all_of(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_ref_all_of),
        _ => {}
    }
}

fn finish_operation(op: &mut Value, examples: &BTreeMap<&'static str, Examples>) {
    let Some(id) = op["operationId"].as_str().map(str::to_owned) else {
        return;
    };
    let Some(meta) = OPERATIONS.iter().find(|o| o.id == id) else {
        return;
    };
    match meta.access {
        Access::Public => op["security"] = json!([]),
        Access::OptionalSession => op["security"] = json!([{}, {"BearerAuth": []}]),
        Access::Session | Access::LicenseKey => {}
    }
    // The statuses it can answer, each with its problems as examples.
    let mut by_status: BTreeMap<String, Vec<Problem>> = BTreeMap::new();
    for p in refusals(meta) {
        by_status.entry(p.status.to_string()).or_default().push(p);
    }
    if let Some(responses) = op["responses"].as_object_mut() {
        responses
            .retain(|status, _| !status.starts_with(['4', '5']) || by_status.contains_key(status));
        for (status, problems) in &by_status {
            let Some(media) = responses
                .get_mut(status)
                .and_then(|r| r.get_mut("content"))
                .and_then(|c| c.get_mut("application/problem+json"))
            else {
                continue;
            };
            let mut named = serde_json::Map::new();
            for p in problems {
                if !named.contains_key(&p.code) {
                    named.insert(p.code.clone(), json!({"summary": p.title, "value": p}));
                }
            }
            media["examples"] = Value::Object(named);
        }
    }
    let Some(ex) = examples.get(meta.id) else {
        return;
    };
    if let Some(request) = &ex.request
        && let Some(media) = json_media(op.pointer_mut("/requestBody/content"))
    {
        media["example"] = request.clone();
    }
    for (status, body) in &ex.responses {
        let content = op
            .get_mut("responses")
            .and_then(|r| r.get_mut(*status))
            .and_then(|r| r.get_mut("content"));
        if let Some(media) = json_media(content) {
            media["example"] = body.clone();
        }
    }
}

/// The JSON media type (`application/json; charset=utf-8`) of a
/// `content`.
fn json_media(content: Option<&mut Value>) -> Option<&mut Value> {
    content?
        .as_object_mut()?
        .iter_mut()
        .find(|(media, _)| media.starts_with("application/json"))
        .map(|(_, m)| m)
}
