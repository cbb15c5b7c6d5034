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
//!   ([`OPERATIONS`]; the handlers share one error type, which lists them
//!   all), each with example problem documents made by the code that
//!   refuses (the `code`s an integrator can meet there).
//! - Public operations say `security: []`; `deactivate` takes an optional
//!   session.
//! - Examples of every request and success body, made from the wire types.
//! - `servers` is the issuer's `PUBLIC_BASE_URL`, and the patterns of the
//!   request fields (`FIELD_PATTERNS`) are stated.

use std::collections::BTreeMap;

use poem::http::StatusCode;
use poem_openapi::types::ToJSON;
use serde_json::{Value, json};

use super::api::auth::{
    AccountAnswer, LoginRequest, LoginResponse, NewPasswordRequest, PasswordResetRequest,
    SignupRequest, SignupResponse, VerifyEmailRequest,
};
use super::api::billing::{
    BillingInterval, CheckoutRequest, CheckoutResponse, PlanId, PortalResponse,
};
use super::api::health::HealthStatus;
use super::api::licenses::{
    ActivateRequest, ActivationView, DeactivateRequest, DeactivateResponse, EntitlementsView,
    FeaturesResponse, GrantResponse, LicenseList, LicenseSummary, LicenseWithActivations,
    TokenView, TransfersView, ValidateRequest,
};
use super::problem::{ApiError, NewProblem, Problem};
use crate::app::billing::BillingError;
use crate::domain::account::AccountError;
use crate::domain::input::{self, FieldError};
use crate::domain::license::{LicenseError, LicenseStatus};
use crate::keys::{Jwk, JwkSet};

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

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (`security: []`); a license key, when one is needed, is in
    /// the body.
    Public,
    /// A session: `Authorization: Bearer` (the framework declares it).
    Session,
    /// The license key in `X-License-Key` (the framework declares it).
    LicenseKey,
    /// Anyone, and a session when one is sent (`deactivate`: proof of
    /// standing to free another machine's seat).
    OptionalSession,
}

/// What the spec says about one operation beyond what the framework knows.
pub struct Operation {
    pub id: &'static str,
    pub access: Access,
    /// Takes a JSON body: 400 (not JSON), 413 (too large), 415 (not
    /// `application/json`) and 422 (a field is invalid) are possible.
    pub body: bool,
    /// Counted by a rate limit (`RATE_LIMIT_*`): 429 is possible.
    pub limited: bool,
    /// Reads or writes the database: 500 and 503 are possible.
    pub storage: bool,
    /// The refusals of its own, as the code makes them.
    pub refusals: fn() -> Vec<Problem>,
}

/// Every operation of the API, in the order of the document.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        id: "healthz",
        access: Access::Public,
        body: false,
        limited: false,
        storage: false,
        refusals: Vec::new,
    },
    Operation {
        id: "readyz",
        access: Access::Public,
        body: false,
        limited: false,
        storage: false,
        refusals: || {
            vec![
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "Not ready",
                    "The database is not reachable.",
                ),
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "draining",
                    "Stopping",
                    "This instance is stopping; send new requests elsewhere.",
                ),
            ]
        },
    },
    Operation {
        id: "signup",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            vec![
                account(AccountError::SignupClosed),
                account(AccountError::SignupFull),
            ]
        },
    },
    Operation {
        id: "login",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            vec![
                account(AccountError::InvalidCredentials),
                account(AccountError::Locked {
                    until: EXAMPLE_NOW - 60,
                }),
            ]
        },
    },
    Operation {
        id: "verifyEmail",
        access: Access::Public,
        body: true,
        limited: false,
        storage: true,
        refusals: || vec![account(AccountError::LinkInvalid)],
    },
    Operation {
        id: "requestPasswordReset",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: Vec::new,
    },
    Operation {
        id: "newPassword",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: || vec![account(AccountError::LinkInvalid)],
    },
    Operation {
        id: "logout",
        access: Access::Session,
        body: false,
        limited: false,
        storage: true,
        refusals: || vec![account(AccountError::Unauthorized)],
    },
    Operation {
        id: "activate",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            let mut all = vec![
                license(LicenseError::NotFound),
                license(LicenseError::TooManyActivations { max: 3 }),
            ];
            all.extend(inactive());
            all
        },
    },
    Operation {
        id: "validate",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            let mut all = vec![
                license(LicenseError::NotFound),
                license(LicenseError::NotActivated),
                license(LicenseError::SeatOverLimit { max: 1, used: 2 }),
            ];
            all.extend(inactive());
            all
        },
    },
    Operation {
        id: "deactivate",
        access: Access::OptionalSession,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            let later = EXAMPLE_NOW + 86_400;
            vec![
                account(AccountError::Unauthorized),
                license(LicenseError::NotFound),
                license(LicenseError::ActivationNotFound),
                license(LicenseError::NotActivated),
                license(LicenseError::NotAllowedToFree),
                license(LicenseError::OfflineSeat { until: later }),
                license(LicenseError::TransferLimit {
                    allowed: 3,
                    next_at: later,
                }),
            ]
        },
    },
    Operation {
        id: "listLicenses",
        access: Access::Session,
        body: false,
        limited: false,
        storage: true,
        refusals: || vec![account(AccountError::Unauthorized)],
    },
    Operation {
        id: "features",
        access: Access::LicenseKey,
        body: false,
        limited: true,
        storage: true,
        refusals: || {
            vec![
                super::api::licenses::no_license_key(),
                license(LicenseError::NotFound),
            ]
        },
    },
    Operation {
        id: "billingCheckout",
        access: Access::Session,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            vec![
                account(AccountError::Unauthorized),
                billing(BillingError::PilotFull),
                billing(BillingError::AlreadySubscribed),
                billing(BillingError::NotConfigured),
                billing_unavailable(),
            ]
        },
    },
    Operation {
        id: "billingPortal",
        access: Access::Session,
        body: false,
        limited: true,
        storage: true,
        refusals: || {
            vec![
                account(AccountError::Unauthorized),
                billing(BillingError::NoCustomer),
                billing(BillingError::NotConfigured),
                billing_unavailable(),
            ]
        },
    },
    Operation {
        id: "listKeys",
        access: Access::Public,
        body: false,
        limited: false,
        storage: false,
        refusals: Vec::new,
    },
];

fn account(e: AccountError) -> Problem {
    ApiError::from(e).problem().clone()
}

fn license(e: LicenseError) -> Problem {
    ApiError::from(e).problem().clone()
}

fn billing(e: BillingError) -> Problem {
    ApiError::from(e).problem().clone()
}

/// The `billing_unavailable` refusal (made here: the conversion of a
/// Stripe failure logs it).
fn billing_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "billing_unavailable",
        "Payments unavailable",
        "The payment provider cannot be reached right now. Try again in a minute.",
    )
}

/// The refusals of a license that is not usable (activate, validate).
fn inactive() -> Vec<Problem> {
    let now = EXAMPLE_NOW;
    vec![
        license(LicenseError::Inactive(LicenseStatus::Suspended)),
        license(LicenseError::Inactive(LicenseStatus::Revoked)),
        license(LicenseError::Inactive(LicenseStatus::Canceled)),
        license(LicenseError::Expired {
            since: now - 86_400,
        }),
        license(LicenseError::PaymentOverdue {
            since: now - 86_400,
            failed_at: now - 8 * 86_400,
        }),
    ]
}

/// The refusals any operation with these traits can answer, besides its
/// own.
fn common_refusals(op: &Operation) -> Vec<Problem> {
    let mut all = Vec::new();
    if op.body {
        all.push(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid request",
            "The request could not be read: send a JSON body with the fields this operation documents (see /docs).",
        ));
        all.push(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Request too large",
            format!(
                "The request body must be at most {} bytes.",
                super::middleware::body_limit::MAX_BODY_BYTES
            ),
        ));
        all.push(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "Send the request body as application/json.",
        ));
        let field = match op.id {
            "signup" | "login" | "requestPasswordReset" => {
                FieldError::new("email", "must be an email address such as name@example.com")
            }
            "verifyEmail" | "newPassword" => FieldError::new("token", "is required"),
            "billingCheckout" => {
                FieldError::new("plan", "must be one of: pilot-starter, pilot-professional")
            }
            _ => FieldError::new("hardware_id", "must be 64 hexadecimal characters"),
        };
        all.push(Problem::from(field));
    }
    if op.limited {
        all.push(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests",
            "Too many requests from your network address: at most 10 per minute. Try again in 6 seconds.",
        ));
    }
    if op.storage {
        all.push(ApiError::internal_problem());
        all.push(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "Temporarily unavailable",
            "The service cannot reach its database right now. Nothing was changed; try again in a few seconds.",
        ));
    }
    all
}

/// Every refusal an operation can answer, its own first.
pub fn refusals(op: &Operation) -> Vec<Problem> {
    let mut all = (op.refusals)();
    all.extend(common_refusals(op));
    all
}

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
    let examples = examples();
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

/// Swagger UI (`/docs`) showing `document` (the framework's page embeds
/// the unfinished document: it is swapped for the finished one).
pub fn docs_html(public_base_url: &str) -> String {
    let service = super::service();
    let raw = service.spec();
    service
        .swagger_ui_html()
        .replacen(&raw, &document_json(public_base_url), 1)
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

/// The example bodies of an operation.
struct Examples {
    request: Option<Value>,
    responses: Vec<(&'static str, Value)>,
}

/// The time of the examples (2026-01-05T08:00:00Z): the document does not
/// change with the clock.
const EXAMPLE_NOW: i64 = 1_767_600_000;
const EXAMPLE_KEY: &str = "CODITECT-PILOT-7K3M-Q9TX-4HWA";
const EXAMPLE_HARDWARE_ID: &str =
    "5f2c4e0b9a7d4c1e8f3a6b2d0c9e7f1a4b8d2c6e0f3a7b1d5c9e2f6a0b4d8c1e";
const EXAMPLE_EMAIL: &str = "ada@example.com";

fn example_summary() -> LicenseSummary {
    LicenseSummary {
        id: "lic_01J9Z4Q8B7W2K5X3M6N8P0R1S2".into(),
        tier: "pilot-professional".into(),
        plan_name: "Pilot Professional".into(),
        status: "active".into(),
        email: EXAMPLE_EMAIL.into(),
        organization: Some("Acme Ltd".into()),
        expires_at: "2026-12-31T00:00:00Z".into(),
        key_hint: "4HWA".into(),
        entitlements: EntitlementsView {
            max_projects: None,
            ai_requests: 1000,
            max_devices: 3,
        },
        devices_used: 1,
        transfers: TransfersView {
            allowed: 3,
            used: 0,
            remaining: 3,
            window_days: 30,
            next_at: None,
        },
    }
}

fn example_activation() -> ActivationView {
    ActivationView {
        id: "act_01J9Z4R2C3D4E5F6G7H8J9K0L1".into(),
        hardware_id: EXAMPLE_HARDWARE_ID.into(),
        machine_name: Some("ada-laptop".into()),
        status: "active".into(),
        activated_at: "2026-01-05T09:30:00Z".into(),
        last_validated_at: "2026-01-06T09:30:00Z".into(),
        deactivated_at: None,
        offline_until: None,
    }
}

fn example_grant() -> GrantResponse {
    GrantResponse {
        license: example_summary(),
        activation: example_activation(),
        token: TokenView {
            token: "0oRYIaIBJwRYHGRldi0yMDI2LTAxAKBZAQ2rAXgbaHR0cHM6Ly9saWNlbnNpbmcuY29kaXRlY3Q"
                .into(),
            expires_at: "2026-01-09T09:30:00Z".into(),
            renew_after: "2026-01-07T09:30:00Z".into(),
        },
    }
}

fn examples() -> BTreeMap<&'static str, Examples> {
    let j = |v: &dyn ToJSONValue| v.value();
    let answer = |status: &str, next: &str| AccountAnswer {
        status: status.into(),
        next: next.into(),
    };
    let mut deactivated = example_activation();
    deactivated.status = "deactivated".into();
    deactivated.deactivated_at = Some("2026-01-07T10:00:00Z".into());
    let mut freed = example_summary();
    freed.devices_used = 0;
    freed.transfers.used = 1;
    freed.transfers.remaining = 2;
    let entries = [
        (
            "healthz",
            None,
            vec![("200", j(&HealthStatus { status: "ok".into() }))],
        ),
        (
            "readyz",
            None,
            vec![(
                "200",
                j(&HealthStatus {
                    status: "ready".into(),
                }),
            )],
        ),
        (
            "signup",
            Some(j(&SignupRequest {
                email: EXAMPLE_EMAIL.into(),
                password: "correct horse battery staple".into(),
                company_name: "Acme Ltd".into(),
            })),
            vec![(
                "202",
                j(&SignupResponse {
                    status: "accepted".into(),
                    email: EXAMPLE_EMAIL.into(),
                    next: "Sign in with POST /api/v1/auth/login. A link to confirm the address was mailed to it; an account neither confirmed nor paid for is deleted after UNVERIFIED_ACCOUNT_TTL.".into(),
                }),
            )],
        ),
        (
            "login",
            Some(j(&LoginRequest {
                email: EXAMPLE_EMAIL.into(),
                password: "correct horse battery staple".into(),
            })),
            vec![(
                "200",
                j(&LoginResponse {
                    access_token: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3JfMDEifQ.c2lnbmF0dXJl".into(),
                    token_type: "Bearer".into(),
                    expires_in: 3600,
                    expires_at: "2026-01-05T10:30:00Z".into(),
                }),
            )],
        ),
        (
            "verifyEmail",
            Some(j(&VerifyEmailRequest {
                token: "q3V8mXn2Lr7Tb0Yc5Wd9Hs4Jk6Fp1Ga".into(),
            })),
            vec![("200", j(&answer("done", "The address is confirmed.")))],
        ),
        (
            "requestPasswordReset",
            Some(j(&PasswordResetRequest {
                email: EXAMPLE_EMAIL.into(),
            })),
            vec![(
                "202",
                j(&answer(
                    "accepted",
                    "If this email has an account, a link to choose a new password is on its way (valid for an hour).",
                )),
            )],
        ),
        (
            "newPassword",
            Some(j(&NewPasswordRequest {
                token: "q3V8mXn2Lr7Tb0Yc5Wd9Hs4Jk6Fp1Ga".into(),
                password: "a new long passphrase".into(),
            })),
            vec![(
                "200",
                j(&answer(
                    "done",
                    "The password is changed and every session has ended. Sign in with POST /api/v1/auth/login.",
                )),
            )],
        ),
        ("logout", None, vec![]),
        (
            "activate",
            Some(j(&ActivateRequest {
                license_key: EXAMPLE_KEY.into(),
                hardware_id: EXAMPLE_HARDWARE_ID.into(),
                machine_name: Some("ada-laptop".into()),
            })),
            vec![("201", j(&example_grant())), ("200", j(&example_grant()))],
        ),
        (
            "validate",
            Some(j(&ValidateRequest {
                license_key: EXAMPLE_KEY.into(),
                hardware_id: EXAMPLE_HARDWARE_ID.into(),
                client_version: Some("0.4.0".into()),
            })),
            vec![("200", j(&example_grant()))],
        ),
        (
            "deactivate",
            Some(j(&DeactivateRequest {
                license_key: EXAMPLE_KEY.into(),
                hardware_id: EXAMPLE_HARDWARE_ID.into(),
                activation_id: None,
            })),
            vec![(
                "200",
                j(&DeactivateResponse {
                    license: freed,
                    activation: deactivated,
                }),
            )],
        ),
        (
            "listLicenses",
            None,
            vec![(
                "200",
                j(&LicenseList {
                    licenses: vec![LicenseWithActivations {
                        license: example_summary(),
                        activations: vec![example_activation()],
                    }],
                }),
            )],
        ),
        (
            "features",
            None,
            vec![(
                "200",
                j(&FeaturesResponse {
                    license_id: example_summary().id,
                    tier: "pilot-professional".into(),
                    plan_name: "Pilot Professional".into(),
                    status: "active".into(),
                    expires_at: "2026-12-31T00:00:00Z".into(),
                    entitlements: example_summary().entitlements,
                }),
            )],
        ),
        (
            "billingCheckout",
            Some(j(&CheckoutRequest {
                plan: PlanId::PilotProfessional,
                interval: BillingInterval::Month,
            })),
            vec![(
                "200",
                j(&CheckoutResponse {
                    session_id: "cs_test_a1B2c3D4e5F6g7H8".into(),
                    url: "https://checkout.stripe.com/c/pay/cs_test_a1B2c3D4e5F6g7H8".into(),
                }),
            )],
        ),
        (
            "billingPortal",
            None,
            vec![(
                "200",
                j(&PortalResponse {
                    url: "https://billing.stripe.com/p/session/test_YWNjdF8x".into(),
                }),
            )],
        ),
        (
            "listKeys",
            None,
            vec![(
                "200",
                j(&JwkSet {
                    keys: vec![Jwk {
                        kty: "OKP".into(),
                        crv: "Ed25519".into(),
                        x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
                        kid: "coditect-2026-01".into(),
                        alg: "EdDSA".into(),
                        use_: "sig".into(),
                    }],
                }),
            )],
        ),
    ];
    entries
        .into_iter()
        .map(|(id, request, responses)| (id, Examples { request, responses }))
        .collect()
}

/// A poem-openapi object as the JSON it is sent as.
trait ToJSONValue {
    fn value(&self) -> Value;
}

impl<T: ToJSON> ToJSONValue for T {
    fn value(&self) -> Value {
        self.to_json().unwrap_or(Value::Null)
    }
}

/// The refusals that belong to no operation of the document.
fn other_refusals() -> Vec<(Problem, &'static str)> {
    use crate::app::billing::webhook::WebhookError;
    let any = "any request";
    let mut all = vec![
        (
            Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "Not found",
                "There is no such resource.",
            ),
            any,
        ),
        (
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "This resource does not accept this HTTP method.",
            ),
            any,
        ),
    ];
    for e in [
        WebhookError::NotConfigured,
        WebhookError::MissingSignature,
        WebhookError::BadSignature,
        WebhookError::Stale(0),
        WebhookError::TooLarge,
        WebhookError::BadPayload(String::new()),
        WebhookError::Unavailable(String::new()),
        WebhookError::Internal(String::new()),
    ] {
        let status = super::api::billing::webhook_status(&e);
        all.push((
            Problem::new(status, e.code(), "Webhook refused", e.to_string()),
            "`POST /webhooks/stripe` (Stripe only)",
        ));
    }
    all
}

/// The table of problem `code`s in `docs/integrators.md`: every refusal of
/// every operation ([`OPERATIONS`]) and the others, by code and status.
pub fn error_codes_markdown() -> String {
    // (code, status) → (title, where)
    let mut rows: BTreeMap<(String, u16), (String, Vec<String>)> = BTreeMap::new();
    let mut add = |p: &Problem, at: String| {
        let row = rows
            .entry((p.code.clone(), p.status))
            .or_insert_with(|| (p.title.clone(), Vec::new()));
        if !row.1.contains(&at) {
            row.1.push(at);
        }
    };
    for op in OPERATIONS {
        for p in refusals(op) {
            add(&p, format!("`{}`", op.id));
        }
    }
    for (p, at) in other_refusals() {
        add(&p, at.to_owned());
    }
    let mut out = String::from("| `code` | HTTP | title | returned by |\n|---|---|---|---|\n");
    for ((code, status), (title, at)) in rows {
        let at = at.join(", ");
        out.push_str(&format!("| `{code}` | {status} | {title} | {at} |\n"));
    }
    out
}
