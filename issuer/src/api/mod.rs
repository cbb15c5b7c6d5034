//! The HTTP API (`/api/v1`), health probes, the OpenAPI spec and `/docs`.

pub mod auth;
pub mod billing;
pub mod headers;
pub mod health;
pub mod licenses;
pub mod problem;
pub mod public_keys;
pub mod rate_limit;
mod request_check;
pub mod validate;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use poem::http::StatusCode;
use poem::middleware::AddData;
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route};
use poem_openapi::{OpenApiService, Tags};

use crate::config::Config;
use crate::db::Db;
use problem::{ApiError, Problem};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub audit: crate::audit::AuditLog,
    /// Request rate limits, checked by the middleware (`respond`).
    pub limits: Arc<rate_limit::Limiters>,
    /// Stripe's API, when configured.
    pub stripe: Option<Arc<crate::billing::stripe_api::StripeApi>>,
    /// The mail sender.
    pub mailer: crate::mail::Mailer,
}

impl AppState {
    /// The state of a running server (starts the audit writer, so it must be
    /// called inside the tokio runtime).
    pub fn new(config: Config, db: Db) -> Self {
        let stripe = config.stripe.as_ref().and_then(|c| {
            crate::billing::stripe_api::StripeApi::new(c)
                .map_err(|e| tracing::error!(error = %e, "cannot set up the Stripe client"))
                .ok()
                .map(Arc::new)
        });
        let config = Arc::new(config);
        crate::billing::start_housekeeping(db.clone());
        AppState {
            limits: Arc::new(rate_limit::Limiters::from_config(&config)),
            mailer: crate::mail::Mailer::start(db.clone(), Arc::clone(&config)),
            config,
            audit: crate::audit::AuditLog::start(db.clone()),
            stripe,
            db,
        }
    }

    /// The Stripe client and settings, or `NotConfigured`.
    pub fn stripe(
        &self,
    ) -> Result<
        (
            &crate::billing::stripe_api::StripeApi,
            &crate::config::StripeConfig,
        ),
        crate::billing::BillingError,
    > {
        match (&self.stripe, &self.config.stripe) {
            (Some(api), Some(cfg)) => Ok((api, cfg)),
            _ => Err(crate::billing::BillingError::NotConfigured),
        }
    }

    pub fn token_policy(&self) -> crate::tokens::TokenPolicy {
        crate::tokens::TokenPolicy {
            lifetime: self.config.token_lifetime,
            renew_after: self.config.token_renew_after,
        }
    }
}

/// Where a request came from, for the audit log: the socket peer (or the
/// address a trusted proxy reports) and the user agent.
pub fn client(req: &poem::Request, state: &AppState) -> crate::audit::Client {
    let ip = rate_limit::request_client_ip(req, state.config.trust_proxy).map(|ip| ip.to_string());
    let ua = req
        .headers()
        .get(poem::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    crate::audit::Client::new(ip, ua)
}

/// Current Unix time. Handlers read the clock here and hand it to the logic.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// RFC 3339 form of a Unix time, for JSON bodies.
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
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
        health::HealthApi,
        auth::AuthApi,
        licenses::LicensesApi,
        billing::BillingApi,
        public_keys::KeysApi,
    ),
    (),
> {
    OpenApiService::new(
        (
            health::HealthApi,
            auth::AuthApi,
            licenses::LicensesApi,
            billing::BillingApi,
            public_keys::KeysApi,
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
    ("SignupRequest", "email", validate::EMAIL_PATTERN),
    ("LoginRequest", "email", validate::EMAIL_PATTERN),
    ("SignupRequest", "company_name", validate::NAME_PATTERN),
    ("ActivateRequest", "license_key", validate::KEY_PATTERN),
    ("ValidateRequest", "license_key", validate::KEY_PATTERN),
    ("DeactivateRequest", "license_key", validate::KEY_PATTERN),
    (
        "ActivateRequest",
        "hardware_id",
        validate::HARDWARE_ID_PATTERN,
    ),
    (
        "ValidateRequest",
        "hardware_id",
        validate::HARDWARE_ID_PATTERN,
    ),
    (
        "DeactivateRequest",
        "hardware_id",
        validate::HARDWARE_ID_PATTERN,
    ),
    ("ActivateRequest", "machine_name", validate::TEXT_PATTERN),
    ("ValidateRequest", "client_version", validate::TEXT_PATTERN),
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
    use crate::web;
    let limits = Arc::clone(&state.limits);
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
        .at("/webhooks/stripe", poem::post(billing::stripe_webhook))
        // The web pages (crate::web); `/` is above.
        .at(
            "/signup",
            poem::get(web::signup::show).post(web::signup::submit),
        )
        .at("/signup/success", poem::get(web::success::page))
        .at("/signup/cancel", poem::get(web::success::cancel))
        .at(web::html::STYLESHEET_PATH, poem::get(web::stylesheet))
        .with(AddData::new(state))
        .around(move |ep, req| {
            let limits = Arc::clone(&limits);
            async move { Ok(respond(ep, req, &limits).await) }
        })
        .around(move |ep, req| {
            let state = site_state.clone();
            async move { Ok(web::html_errors(ep, req, &state).await) }
        })
}

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Turns every error the framework raises (unknown route, wrong method,
/// unparsable body, missing credentials) into a problem response, and tags
/// responses with a request id.
async fn respond<E: Endpoint>(ep: Arc<E>, req: Request, limits: &rate_limit::Limiters) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Bodies are small JSON documents: read them here, with a cap, so that a
    // body that does not fit its schema can be explained field by field.
    let mut req = req;
    let limit = if path == "/webhooks/stripe" {
        crate::billing::webhook::MAX_WEBHOOK_BYTES
    } else {
        MAX_BODY_BYTES
    };
    let body = match req.take_body().into_bytes_limit(limit).await {
        Ok(b) => b,
        Err(_) => {
            let mut p = Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request too large",
                format!("The request body must be at most {limit} bytes."),
            );
            p.request_id = Some(request_id.clone());
            let mut resp = problem_response(&p);
            headers::apply(&mut resp, &path);
            return resp;
        }
    };
    // Rate limits, before the endpoint does any work.
    let limited = rate_limit::LimitedRoute::of(&method, &path).map(|route| {
        let client = rate_limit::request_client_ip(&req, limits.trusted_proxies());
        (route, client, limits.check(route, client, &body))
    });
    let mut allowed = None;
    match limited {
        Some((route, client, rate_limit::Decision::Refused(refusal))) => {
            let mut p = refusal.problem();
            p.request_id = Some(request_id.clone());
            let mut resp = refusal.error(p).into_response();
            if let Ok(v) = request_id.parse() {
                resp.headers_mut().insert("x-request-id", v);
            }
            headers::apply(&mut resp, &path);
            let client = client.map(|c| c.to_string()).unwrap_or_default();
            tracing::warn!(%request_id, %method, %path, ?route, %client, limit = ?refusal.report.limit, retry_after = refusal.retry_after, "rate limited");
            return resp;
        }
        Some((_, _, rate_limit::Decision::Allowed(report))) => allowed = Some(report),
        None => {}
    }
    // JSON types are checked strictly here: the framework would read `false`
    // or `12` into a text field.
    if !body.is_empty()
        && let Some((field, detail)) = request_check::explain(method.as_str(), &path, &body)
    {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "A field is invalid",
            format!("`{field}` {detail}"),
        );
        p.field = Some(field);
        p.request_id = Some(request_id.clone());
        let mut resp = problem_response(&p);
        if let Ok(v) = request_id.parse() {
            resp.headers_mut().insert("x-request-id", v);
        }
        headers::apply(&mut resp, &path);
        return resp;
    }
    req.set_body(body.clone());
    let span = tracing::info_span!("request", %request_id);
    let mut resp = match tracing::Instrument::instrument(ep.call(req), span).await {
        Ok(r) => r.into_response(),
        // Our own problem responses (ApiError) travel as errors made from a
        // response: keep them as they are.
        Err(err) if err.is_from_response() => err.into_response(),
        Err(err) => {
            let explained = err
                .downcast_ref::<poem_openapi::error::ParseRequestPayloadError>()
                .and_then(|_| request_check::explain(method.as_str(), &path, &body));
            match explained {
                Some((field, detail)) => {
                    let mut p = Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_field",
                        "A field is invalid",
                        format!("`{field}` {detail}"),
                    );
                    p.field = Some(field);
                    p.request_id = Some(request_id.clone());
                    problem_response(&p)
                }
                None => error_response(&err, &request_id),
            }
        }
    };
    if resp.content_type() == Some("application/problem+json") {
        resp = with_request_id(resp, &request_id).await;
    }
    if let Ok(v) = request_id.parse() {
        resp.headers_mut().insert("x-request-id", v);
    }
    if let Some(report) = allowed {
        report.apply(resp.headers_mut());
    }
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = request_check::allowed_methods(&path)
        && let Ok(v) = allow.parse()
    {
        resp.headers_mut().insert(poem::http::header::ALLOW, v);
    }
    headers::apply(&mut resp, &path);
    tracing::info!(%request_id, %method, %path, status = resp.status().as_u16(), "request");
    resp
}

/// Adds the request id to a problem body that lacks one, so every error a
/// user reports can be found in the log.
async fn with_request_id(mut resp: Response, request_id: &str) -> Response {
    let body = resp.take_body().into_vec().await.unwrap_or_default();
    let body = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.entry("request_id")
                .or_insert_with(|| serde_json::Value::String(request_id.to_owned()));
            serde_json::to_vec(&map).unwrap_or(body)
        }
        _ => body,
    };
    resp.set_body(body);
    resp
}

/// For a body that parsed as JSON but not as the operation's request: the
/// field at fault and what is wrong with it, in our words.
fn field_problem(err: &poem::Error) -> Option<Problem> {
    let reason = &err
        .downcast_ref::<poem_openapi::error::ParseRequestPayloadError>()?
        .reason;
    let start = reason.find("field `")? + "field `".len();
    let field = reason.get(start..)?.split('`').next()?;
    let detail = if reason.contains("maxLength(") {
        let max = reason
            .split("maxLength(")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap_or("the allowed number of");
        format!("must be at most {max} characters")
    } else if reason.contains("expected input") || reason.contains("is missing") {
        "is required".to_owned()
    } else {
        "has the wrong type or format".to_owned()
    };
    let mut p = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "A field is invalid",
        format!("`{field}` {detail}"),
    );
    p.field = Some(field.to_owned());
    Some(p)
}

fn error_response(err: &poem::Error, request_id: &str) -> Response {
    if let Some(mut p) = field_problem(err) {
        p.request_id = Some(request_id.to_owned());
        return problem_response(&p);
    }
    let status = err.status();
    let (code, title, detail) = match status {
        StatusCode::NOT_FOUND => (
            "not_found",
            "Not found",
            "There is no such resource. The API is under /api/v1; see /docs.",
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "Method not allowed",
            "This resource does not accept this HTTP method; see /docs.",
        ),
        StatusCode::UNAUTHORIZED => (
            "unauthorized",
            "Not signed in",
            "Sign in with POST /api/v1/auth/login and send the access token as `Authorization: Bearer <token>`.",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "Unsupported media type",
            "Send the request body as application/json.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "Request too large",
            "The request body is too large.",
        ),
        s if s.is_client_error() => (
            "invalid_request",
            "Invalid request",
            "The request could not be read: send a JSON body with the fields this operation documents (see /docs).",
        ),
        _ => {
            tracing::error!(%request_id, error = %err, "unhandled error");
            (
                "internal_error",
                "Internal error",
                "Something went wrong on our side. Try again; if it persists, contact support with the request id.",
            )
        }
    };
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let mut problem = Problem::new(status, code, title, detail);
    problem.request_id = Some(request_id.to_owned());
    problem_response(&problem)
}

/// A problem as an HTTP response.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(serde_json::to_vec(problem).unwrap_or_default())
}

/// Results of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
