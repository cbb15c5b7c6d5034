//! The HTTP layer: the router, the middleware (one concern per file under
//! `middleware/`), the JSON API (`api/`, described by the OpenAPI document)
//! and the web pages (`web/`). Handlers parse their input into domain
//! types and call a use case in `app`; errors become problem documents
//! (`problem.rs`).

pub mod api;
pub mod middleware;
pub mod problem;
pub mod spec;
pub mod web;

use std::sync::Arc;

use poem::middleware::AddData;
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Response, Route};
use poem_openapi::{OpenApiService, Tags};

pub use crate::app::AppState;
use crate::domain::audit::Client;
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
         Errors are application/problem+json with a stable `code`. \
         A guide for integrators is docs/integrators.md in the source repository.",
    )
    .license(poem_openapi::LicenseObject::new("Proprietary"))
}

/// The spec of a development issuer at its default address
/// ([`spec::DEVELOPMENT_BASE_URL`]): `schemas/openapi.json`, what
/// `coditect-issuer openapi` prints, and what the middleware reads the
/// request fields from. A running issuer serves [`spec::document`] for its
/// `PUBLIC_BASE_URL`.
pub fn spec_json() -> String {
    static SPEC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| spec::document_json(spec::DEVELOPMENT_BASE_URL))
        .clone()
}

/// The whole HTTP application.
pub fn app(state: AppState) -> impl Endpoint {
    let site_state = state.clone();
    let api = service();
    // The finished document (`spec`), for this issuer's address; /docs
    // fetches it.
    let document = spec::document_json(&state.config.public_base_url);
    let docs_page = spec::docs_html();
    let docs = poem::endpoint::make_sync(move |_| poem::web::Html(docs_page.clone()));
    let spec = poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(document.clone())
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
    let mut routes = Route::new();
    // `/metrics` on this listener only behind METRICS_TOKEN (see
    // `middleware::metrics`); without it there is no such route (404).
    if state.config.metrics.token.is_some() {
        let metrics_state = state.clone();
        routes = routes.at(
            "/metrics",
            poem::get(poem::endpoint::make(move |req| {
                let state = metrics_state.clone();
                async move { middleware::metrics::guarded(&req, &state).await }
            })),
        );
    }
    let metrics_state = state.clone();
    routes
        .nest("/", api)
        .at("/openapi.json", spec)
        .nest("/docs", Route::new().at("/", docs))
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
            let state = metrics_state.clone();
            async move { Ok(middleware::metrics::observe(ep, req, &state).await) }
        })
        .around(move |ep, req| {
            let state = site_state.clone();
            async move { Ok(web::html_errors(ep, req, &state).await) }
        })
}
