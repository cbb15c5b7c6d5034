//! The HTTP layer: the router, the middleware (one concern per file under
//! `middleware/`), the JSON API (`api/`, described by the OpenAPI document)
//! and the web pages (`web/`). Handlers parse their input into domain
//! types and call a use case in `app`; errors become problem documents
//! (`problem.rs`).

pub mod api;
pub mod middleware;
pub mod problem;
pub mod web;

use std::sync::Arc;

use poem::middleware::AddData;
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Response, Route};
use poem_openapi::{OpenApiService, Tags};

pub use crate::app::AppState;
use crate::domain::audit::Client;
use crate::domain::input;
use problem::ApiError;

/// Results of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// Where a request came from, for the audit log: the socket peer (or the
/// address a trusted proxy reports) and the user agent.
pub fn client(req: &poem::Request, state: &AppState) -> Client {
    let ip = middleware::rate_limit::request_client_ip(req, state.config.trust_proxy)
        .map(|ip| ip.to_string());
    let ua = req
        .headers()
        .get(poem::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    Client::new(ip, ua)
}

#[derive(Tags)]
pub enum ApiTags {
    /// Accounts: signup, login, logout.
    Auth,
    /// Licenses: activate machines, renew tokens, free seats, entitlements.
    Licenses,
    /// Subscriptions: Stripe Checkout and the billing portal.
    Billing,
    /// Public keys that verify license tokens.
    Keys,
    /// Liveness and readiness probes.
    Health,
}

/// The OpenAPI service (also used by `coditect-issuer openapi`).
pub fn service() -> OpenApiService<
    (
        api::health::HealthApi,
        api::auth::AuthApi,
        api::licenses::LicensesApi,
        api::billing::BillingApi,
        api::public_keys::KeysApi,
    ),
    (),
> {
    OpenApiService::new(
        (
            api::health::HealthApi,
            api::auth::AuthApi,
            api::licenses::LicensesApi,
            api::billing::BillingApi,
            api::public_keys::KeysApi,
        ),
        "CODITECT Licensing API",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Issues and renews signed, offline-verifiable license tokens (COSE_Sign1 / CWT, Ed25519). \
         Errors are application/problem+json with a stable `code`.",
    )
}

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

/// The spec as served at `/openapi.json`.
pub fn spec_json() -> String {
    static SPEC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| {
        let raw = service().spec();
        let Ok(mut spec) = serde_json::from_str::<serde_json::Value>(&raw) else {
            return raw;
        };
        for (schema, field, pattern) in FIELD_PATTERNS {
            let prop = &mut spec["components"]["schemas"][*schema]["properties"][*field];
            if prop.is_object() {
                prop["pattern"] = serde_json::Value::String((*pattern).to_owned());
            }
        }
        serde_json::to_string_pretty(&spec).unwrap_or(raw)
    })
    .clone()
}

/// The whole HTTP application.
pub fn app(state: AppState) -> impl Endpoint {
    let site_state = state.clone();
    let api = service();
    let docs = api.swagger_ui();
    let spec = poem::endpoint::make_sync(|_| {
        Response::builder()
            .content_type("application/json")
            .body(spec_json())
    });
    // `/` is the landing page. A route at `/` would lose to the API's
    // catch-all nested at `/`, so the API endpoint hands `/` over.
    let home = Arc::new(poem::get(web::landing::page));
    let api = api.into_endpoint().around(move |ep, req| {
        let home = Arc::clone(&home);
        async move {
            if req.uri().path() == "/" {
                home.call(req).await.map(IntoResponse::into_response)
            } else {
                ep.call(req).await.map(IntoResponse::into_response)
            }
        }
    });
    Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .at("/webhooks/stripe", poem::post(api::billing::stripe_webhook))
        // The web pages (crate::web); `/` is above.
        .at(
            "/signup",
            poem::get(web::signup::show).post(web::signup::submit),
        )
        .at(
            "/signup/verify",
            poem::get(web::account::verify_page).post(web::account::verify_submit),
        )
        .at(
            "/signup/reset",
            poem::get(web::account::reset_page).post(web::account::reset_submit),
        )
        .at("/signup/success", poem::get(web::success::page))
        .at("/signup/cancel", poem::get(web::success::cancel))
        .at(
            "/signin",
            poem::get(web::signin::signin_page).post(web::signin::signin_submit),
        )
        .at("/signout", poem::post(web::signin::signout))
        .at(
            "/device",
            poem::get(web::device::page).post(web::device::approve),
        )
        .at(
            "/cli/login",
            poem::get(web::cli_login::page).post(web::cli_login::confirm),
        )
        .at("/auth/:provider/start", poem::get(web::providers::start))
        .at(
            "/auth/:provider/callback",
            poem::get(web::providers::callback),
        )
        .at("/account", poem::get(web::account_page::account))
        .at("/account/free", poem::post(web::account_page::free))
        .at(
            "/account/portal",
            poem::post(web::account_page::open_portal),
        )
        .at("/account/new-key", poem::post(web::account_page::new_key))
        .at(web::html::STYLESHEET_PATH, poem::get(web::stylesheet))
        .with(AddData::new(state.clone()))
        .around(move |ep, req| {
            let state = state.clone();
            async move { Ok(middleware::respond(ep, req, &state).await) }
        })
        .around(move |ep, req| {
            let state = site_state.clone();
            async move { Ok(web::html_errors(ep, req, &state).await) }
        })
}
