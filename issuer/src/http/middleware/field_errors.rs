//! The one way a field error is explained: the field of a JSON body that
//! does not fit the operation's request schema (type, required, allowed
//! values, length), read from the served spec. The middleware checks every
//! parsed body with it before the endpoint runs (the framework would read
//! `false` or `12` into a text field), and explains the framework's own
//! parse errors with it, whose messages name neither the field nor the
//! problem in words a user can act on.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::domain::input::FieldError;

/// A field of a request body: its name, JSON type and whether it is required.
struct FieldSpec {
    name: String,
    json_type: String,
    required: bool,
    /// The values an enumerated field may take.
    allowed: Option<Vec<String>>,
    /// Length bounds of a text field, in characters.
    min_length: Option<usize>,
    max_length: Option<usize>,
}

type Operations = HashMap<(String, String), Vec<FieldSpec>>;

/// (METHOD, path) → fields of the JSON request body, from the served spec.
fn operations() -> &'static Operations {
    static OPS: OnceLock<Operations> = OnceLock::new();
    OPS.get_or_init(|| {
        let spec: Value = serde_json::from_str(&crate::http::spec_json()).unwrap_or(Value::Null);
        let mut ops = HashMap::new();
        let Some(paths) = spec["paths"].as_object() else {
            return ops;
        };
        for (path, methods) in paths {
            let Some(methods) = methods.as_object() else {
                continue;
            };
            for (method, op) in methods {
                ops.entry((method.to_ascii_uppercase(), path.clone()))
                    .or_insert_with(Vec::new);
                let reference = op["requestBody"]["content"]
                    .as_object()
                    .and_then(|c| c.iter().find(|(t, _)| t.starts_with("application/json")))
                    .and_then(|(_, media)| media["schema"]["$ref"].as_str())
                    .unwrap_or_default();
                let Some(name) = reference.strip_prefix("#/components/schemas/") else {
                    continue;
                };
                let schema = &spec["components"]["schemas"][name];
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let fields = schema["properties"]
                    .as_object()
                    .map(|props| {
                        props
                            .iter()
                            .map(|(field, prop)| {
                                // An enumerated field refers to its own schema.
                                // (`{"$ref": …}`, or `{"allOf": [{"$ref": …}, …]}`
                                // when the field has a description).
                                let reference = prop["$ref"]
                                    .as_str()
                                    .or_else(|| prop["allOf"][0]["$ref"].as_str());
                                let prop = match reference
                                    .and_then(|r| r.strip_prefix("#/components/schemas/"))
                                {
                                    Some(name) => &spec["components"]["schemas"][name],
                                    None => prop,
                                };
                                FieldSpec {
                                    name: field.clone(),
                                    json_type: prop["type"].as_str().unwrap_or_default().to_owned(),
                                    required: required.contains(&field.as_str()),
                                    allowed: prop["enum"].as_array().map(|values| {
                                        values
                                            .iter()
                                            .filter_map(Value::as_str)
                                            .map(str::to_owned)
                                            .collect()
                                    }),
                                    min_length: length(&prop["minLength"]),
                                    max_length: length(&prop["maxLength"]),
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                ops.insert((method.to_ascii_uppercase(), path.clone()), fields);
            }
        }
        ops
    })
}

fn length(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// The methods a path answers, for the `Allow` header of a 405.
pub fn allowed_methods(path: &str) -> Option<String> {
    let mut methods: Vec<&str> = operations()
        .keys()
        .filter(|(_, p)| p == path)
        .map(|(m, _)| m.as_str())
        .collect();
    if methods.is_empty() {
        return None;
    }
    methods.sort_unstable();
    Some(methods.join(", "))
}

fn type_matches(json_type: &str, value: &Value) -> bool {
    match json_type {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

/// The first field of `body` that does not fit the request schema of
/// `method path`, with what is wrong: `hardware_id` "is required".
pub fn explain(method: &str, path: &str, body: &Value) -> Option<FieldError> {
    let fields = operations().get(&(method.to_owned(), path.to_owned()))?;
    let Value::Object(object) = body else {
        return None;
    };
    for field in fields {
        let fail = |detail: String| Some(FieldError::new(&field.name, detail));
        match object.get(&field.name) {
            None | Some(Value::Null) if field.required => return fail("is required".into()),
            Some(v) if !v.is_null() && !type_matches(&field.json_type, v) => {
                return fail(format!("must be a {}", field.json_type));
            }
            Some(Value::String(v)) => {
                if let Some(allowed) = &field.allowed
                    && !allowed.contains(v)
                {
                    return fail(format!("must be one of: {}", allowed.join(", ")));
                }
                let n = v.chars().count();
                match (field.min_length, field.max_length) {
                    (Some(min), Some(max)) if n < min || n > max => {
                        return fail(format!("must be {min} to {max} characters long"));
                    }
                    (Some(min), None) if n < min => {
                        return fail(format!("must be at least {min} characters long"));
                    }
                    (None, Some(max)) if n > max => {
                        return fail(format!("must be at most {max} characters"));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    None
}

/// [`explain`] for a raw body (the framework's parse errors).
pub fn explain_bytes(method: &str, path: &str, body: &[u8]) -> Option<FieldError> {
    explain(method, path, &serde_json::from_slice(body).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_missing_and_mistyped_fields() {
        let path = "/api/v1/licenses/activate";
        assert_eq!(
            explain_bytes("POST", path, br#"{"license_key":"k"}"#),
            Some(FieldError::new("hardware_id", "is required"))
        );
        assert_eq!(
            explain_bytes("POST", path, br#"{"license_key":[],"hardware_id":"h"}"#),
            Some(FieldError::new("license_key", "must be a string"))
        );
        assert_eq!(
            explain_bytes(
                "POST",
                path,
                br#"{"license_key":"k","hardware_id":"h","machine_name":7}"#
            ),
            Some(FieldError::new("machine_name", "must be a string"))
        );
        assert_eq!(explain_bytes("POST", path, b"[]"), None);
        let checkout = "/api/v1/billing/checkout";
        assert_eq!(
            explain_bytes("POST", checkout, br#"{"plan":"gold","interval":"month"}"#),
            Some(FieldError::new(
                "plan",
                "must be one of: pilot-starter, pilot-professional"
            ))
        );
        assert_eq!(
            explain_bytes(
                "POST",
                checkout,
                br#"{"plan":"pilot-starter","interval":"month"}"#
            ),
            None
        );
        assert_eq!(explain_bytes("POST", "/nope", b"{}"), None);
    }
}
