//! Names the field at fault when a JSON body does not fit an operation's
//! request schema (the framework's own message names neither the field nor
//! the problem in words a user can act on).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

/// A field of a request body: its name, JSON type and whether it is required.
struct FieldSpec {
    name: String,
    json_type: String,
    required: bool,
    /// The values an enumerated field may take.
    allowed: Option<Vec<String>>,
}

type Operations = HashMap<(String, String), Vec<FieldSpec>>;

/// (METHOD, path) → fields of the JSON request body, from the served spec.
fn operations() -> &'static Operations {
    static OPS: OnceLock<Operations> = OnceLock::new();
    OPS.get_or_init(|| {
        let spec: Value = serde_json::from_str(&super::spec_json()).unwrap_or(Value::Null);
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
/// `method path`, with what is wrong: `("hardware_id", "is required")`.
pub fn explain(method: &str, path: &str, body: &[u8]) -> Option<(String, String)> {
    let fields = operations().get(&(method.to_owned(), path.to_owned()))?;
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    for field in fields {
        match object.get(&field.name) {
            None | Some(Value::Null) if field.required => {
                return Some((field.name.clone(), "is required".into()));
            }
            Some(v) if !v.is_null() && !type_matches(&field.json_type, v) => {
                return Some((field.name.clone(), format!("must be a {}", field.json_type)));
            }
            Some(Value::String(v))
                if field
                    .allowed
                    .as_ref()
                    .is_some_and(|allowed| !allowed.contains(v)) =>
            {
                let allowed = field.allowed.as_deref().unwrap_or_default().join(", ");
                return Some((field.name.clone(), format!("must be one of: {allowed}")));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_missing_and_mistyped_fields() {
        let path = "/api/v1/licenses/activate";
        assert_eq!(
            explain("POST", path, br#"{"license_key":"k"}"#),
            Some(("hardware_id".into(), "is required".into()))
        );
        assert_eq!(
            explain("POST", path, br#"{"license_key":[],"hardware_id":"h"}"#),
            Some(("license_key".into(), "must be a string".into()))
        );
        assert_eq!(
            explain(
                "POST",
                path,
                br#"{"license_key":"k","hardware_id":"h","machine_name":7}"#
            ),
            Some(("machine_name".into(), "must be a string".into()))
        );
        assert_eq!(explain("POST", path, b"[]"), None);
        let checkout = "/api/v1/billing/checkout";
        assert_eq!(
            explain("POST", checkout, br#"{"plan":"gold","interval":"month"}"#),
            Some((
                "plan".into(),
                "must be one of: pilot-starter, pilot-professional".into()
            ))
        );
        assert_eq!(
            explain(
                "POST",
                checkout,
                br#"{"plan":"pilot-starter","interval":"month"}"#
            ),
            None
        );
        assert_eq!(explain("POST", "/nope", b"{}"), None);
    }
}
