//! With `openapi`, the types describe themselves exactly as the published
//! OpenAPI document (`schemas/openapi.json`) describes them, so that the
//! issuer can serve them without changing a byte of its document.

#![cfg(feature = "openapi")]

use coditect_proto::*;
use poem_openapi::registry::Registry;
use poem_openapi::types::Type;
use serde_json::Value;

/// The published schemas, less what the issuer adds to its document itself:
/// the `pattern`s of request fields (its `FIELD_PATTERNS`, checked with its
/// own validators rather than the framework's) and `nullable` on optional
/// fields (`http::spec`, which finishes the document for generators).
fn published() -> Value {
    let doc: Value = serde_json::from_str(include_str!("../../schemas/openapi.json")).unwrap();
    let mut schemas = doc["components"]["schemas"].clone();
    for schema in schemas.as_object_mut().unwrap().values_mut() {
        if let Some(props) = schema["properties"].as_object_mut() {
            for prop in props.values_mut() {
                if let Some(prop) = prop.as_object_mut() {
                    prop.remove("pattern");
                    prop.remove("nullable");
                }
            }
        }
    }
    schemas
}

#[test]
fn every_schema_is_the_published_one() {
    let mut registry = Registry::new();
    EntitlementsView::register(&mut registry);
    LicenseSummary::register(&mut registry);
    ActivationView::register(&mut registry);
    TokenView::register(&mut registry);
    ActivateRequest::register(&mut registry);
    ValidateRequest::register(&mut registry);
    DeactivateRequest::register(&mut registry);
    GrantResponse::register(&mut registry);
    DeactivateResponse::register(&mut registry);
    LicenseWithActivations::register(&mut registry);
    LicenseList::register(&mut registry);
    FeaturesResponse::register(&mut registry);
    SignupRequest::register(&mut registry);
    SignupResponse::register(&mut registry);
    LoginRequest::register(&mut registry);
    LoginResponse::register(&mut registry);
    Problem::register(&mut registry);
    // LicenseSummary registers TransfersView too.
    assert!(registry.schemas.contains_key("TransfersView"));
    assert_eq!(registry.schemas.len(), 18);

    let published = published();
    for (name, schema) in &registry.schemas {
        let mut ours = serde_json::to_value(schema).unwrap();
        plain_refs(&mut ours);
        assert_eq!(
            ours,
            published[name.as_str()],
            "{name}: ours\n{ours:#}\npublished\n{:#}",
            published[name.as_str()]
        );
    }
}

/// The issuer publishes a field that is another schema as a plain `$ref`,
/// where the framework writes `allOf` of the reference and the field's
/// description (which generators reject): the same here.
fn plain_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let reference = map
                .get("allOf")
                .and_then(Value::as_array)
                .filter(|parts| parts.len() == 2)
                .and_then(|parts| parts[0].get("$ref"))
                .cloned();
            if let Some(reference) = reference {
                map.clear();
                map.insert("$ref".to_owned(), reference);
                return;
            }
            map.values_mut().for_each(plain_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(plain_refs),
        _ => {}
    }
}
