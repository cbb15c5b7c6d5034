//! The request pipeline every request goes through, in this order (each
//! step in its own file):
//!
//! 1. `request_id`: the request's id (the client's `X-Request-Id` if sane).
//! 2. `body_limit`: the body, read whole within its cap (413 beyond).
//! 3. The body parsed as JSON, **once** (`api::body` hands the parsed value
//!    to the handler's extractor).
//! 4. `rate_limit`: the limits of the route, before any work is done
//!    (503 when the counters in the database cannot be reached).
//! 5. `field_errors`: strict JSON types against the spec (the framework
//!    would read `false` or `12` into a text field).
//! 6. The endpoint; errors the framework raises become problem documents
//!    (`errors`).
//! 7. `security_headers`, the request id and the rate-limit headers on
//!    every answer.
//!
//! Around all of it, `metrics` counts each answer by route template,
//! method and status class, and times it.

pub mod body_limit;
pub mod errors;
pub mod field_errors;
pub mod metrics;
pub mod rate_limit;
pub mod request_id;
pub mod security_headers;

use std::sync::Arc;

use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Request, Response};

use super::api::body::ParsedBody;
use super::problem::Problem;
use crate::app::AppState;

/// Runs one request through the pipeline (see the module docs).
pub async fn respond<E: Endpoint>(ep: Arc<E>, mut req: Request, state: &AppState) -> Response {
    let request_id = request_id::of(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let finish = |mut resp: Response| {
        request_id::tag(&mut resp, &request_id);
        security_headers::apply(&mut resp, &path);
        resp
    };
    let body = match body_limit::read(&mut req, &path).await {
        Ok(body) => body,
        Err(mut problem) => {
            problem.request_id = Some(request_id.clone());
            return finish(errors::problem_response(&problem));
        }
    };
    let parsed = ParsedBody::parse(&req, &body);
    let mut allowed = None;
    if let Some(route) = rate_limit::route_of(&method, &path) {
        let client = rate_limit::request_client_ip(&req, state.config.trust_proxy);
        let key = rate_limit::license_key_of(parsed.value());
        match state.limits.check(route, client, key.as_ref()).await {
            Ok(rate_limit::Decision::Allowed(report)) => allowed = Some(report),
            Ok(rate_limit::Decision::Refused(refusal)) => {
                state.metrics.rate_limited(refusal.report.limit.name());
                let mut p = rate_limit::refusal_problem(&refusal);
                p.request_id = Some(request_id.clone());
                let client = client.map(|c| c.to_string()).unwrap_or_default();
                tracing::warn!(%request_id, %method, %path, ?route, %client, limit = ?refusal.report.limit, retry_after = refusal.retry_after, "rate limited");
                return finish(rate_limit::refusal_error(&refusal, p).into_response());
            }
            // The counts are unknown: not let through, 503.
            Err(e) => {
                let resp = rate_limit::unavailable(e, &request_id).into_response();
                return finish(request_id::into_problem(resp, &request_id).await);
            }
        }
    }
    if let Some(value) = parsed.value()
        && let Some(field) = field_errors::explain(method.as_str(), &path, value)
    {
        let mut p = Problem::from(field);
        p.request_id = Some(request_id.clone());
        return finish(errors::problem_response(&p));
    }
    req.extensions_mut().insert(parsed.seal());
    let late_report = rate_limit::LateReport::default();
    req.extensions_mut().insert(late_report.clone());
    req.set_body(body.clone());
    // The request's span and its closing log line are `metrics::observe`'s.
    let mut resp = match ep.call(req).await {
        Ok(r) => r.into_response(),
        // Our own problem responses (ApiError) travel as errors made from a
        // response: keep them as they are.
        Err(err) if err.is_from_response() => err.into_response(),
        Err(err) => {
            let mut resp = errors::from_framework(&err, method.as_str(), &path, &body, &request_id);
            // The route the error came from, for the request metrics.
            if let Some(pattern) = err.data::<poem::PathPattern>() {
                resp.set_data(pattern.clone());
            }
            resp
        }
    };
    if resp.content_type() == Some("application/problem+json") {
        resp = request_id::into_problem(resp, &request_id).await;
    }
    if let Some(report) = allowed.or_else(|| late_report.take()) {
        rate_limit::apply_report(&report, resp.headers_mut());
    }
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = field_errors::allowed_methods(&path)
        && let Ok(v) = allow.parse()
    {
        resp.headers_mut().insert(poem::http::header::ALLOW, v);
    }
    finish(resp)
}
