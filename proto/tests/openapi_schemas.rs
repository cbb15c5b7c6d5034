//! With `openapi`, the types describe themselves exactly as the published
//! OpenAPI document (`schemas/openapi.json`) describes them, so that the
//! issuer can serve them without changing a byte of its document.

#![cfg(feature = "openapi")]

use coditect_proto::*;
use poem_openapi::registry::Registry;
use poem_openapi::types::Type;
use serde_json::Value;

/// The published schemas, less the `pattern`s of request fields: the issuer
/// adds those to its document itself (its `FIELD_PATTERNS`), and checks
/// them with its own validators rather than the framework's.
fn published() -> Value {
    let doc: Value = serde_json::from_str(include_str!("../../schemas/openapi.json")).unwrap();
    let mut schemas = doc["components"]["schemas"].clone();
    for schema in schemas.as_object_mut().unwrap().values_mut() {
        if let Some(props) = schema["properties"].as_object_mut() {
            for prop in props.values_mut() {
                if let Some(prop) = prop.as_object_mut() {
                    prop.remove("pattern");
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
        let ours = serde_json::to_value(schema).unwrap();
        assert_eq!(
            ours,
            published[name.as_str()],
            "{name}: ours\n{ours:#}\npublished\n{:#}",
            published[name.as_str()]
        );
    }
}
