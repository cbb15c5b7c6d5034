//! Request metrics and the `/metrics` endpoint.
//!
//! [`observe`] wraps the whole pipeline: when `/metrics` is served at all,
//! every answer is counted by its route *template* (the router's pattern,
//! `/api/v1/licenses/validate`; never the raw path, which a client
//! chooses), its method and its status class, and its time goes into the
//! latency histogram. A request no route matched is `unmatched`.
//!
//! `/metrics` itself is never public by accident: it is served either on a
//! listener of its own (`METRICS_BIND`, [`endpoint`]; it needs the token
//! too when one is set, and the server warns when that listener is
//! reachable from other machines without one) or on the main listener only
//! to `Authorization: Bearer <METRICS_TOKEN>` ([`guarded`]; 401 without
//! it). With neither set the main listener has no `/metrics` (404).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use poem::PathPattern;
use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Request, Response};

use tracing::Instrument as _;

use super::{rate_limit, request_id};
use crate::app::AppState;
use crate::app::metrics::CONTENT_TYPE;

/// The label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Answers `req` through `ep`, counting it (see the module docs), inside
/// the request's span (its id, and its Cloud Trace when the platform sent
/// one: every line logged while it is handled carries them), and logs the
/// one line each request ends with (`crate::logging` turns its `http.*`
/// fields into Cloud Logging's `httpRequest`).
pub async fn observe<E: Endpoint>(ep: Arc<E>, mut req: Request, state: &AppState) -> Response {
    let started = Instant::now();
    // The id the pipeline (`request_id`) will read, fixed here.
    let request_id = request_id::of(&req);
    if let Ok(v) = request_id.parse() {
        req.headers_mut().insert("x-request-id", v);
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let remote_ip = rate_limit::request_client_ip(&req, state.config.trust_proxy);
    let user_agent: Option<String> = req
        .headers()
        .get(poem::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect());
    let trace = crate::logging::trace_name(
        req.headers()
            .get("x-cloud-trace-context")
            .and_then(|v| v.to_str().ok()),
    );
    let span = match &trace {
        Some(trace) => tracing::info_span!("request", %request_id, trace = %trace),
        None => tracing::info_span!("request", %request_id),
    };
    let resp = match ep.call(req).instrument(span.clone()).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    let took = started.elapsed();
    let status = resp.status().as_u16();
    // Counted only when someone can read the counts.
    if state.config.metrics.enabled() {
        let route = route_label(resp.data::<PathPattern>().map(|p| &*p.0), &path);
        state.metrics.observe_request(&route, &method, status, took);
    }
    let remote_ip = remote_ip.map(|ip| ip.to_string());
    span.in_scope(|| {
        tracing::info!(
            http.method = %method,
            http.path = %path,
            http.status = status,
            http.latency = took.as_secs_f64(),
            http.remote_ip = remote_ip.as_deref(),
            http.user_agent = user_agent.as_deref(),
            "request"
        );
    });
    resp
}

/// The route template of an answer: the pattern the router matched
/// (`:name` written `{name}`, as in the API spec), or, for answers given
/// before routing (a 413, a 429), the spec's path the request names;
/// `unmatched` otherwise. The API is nested at `/`, so a pattern of just
/// `/` for another path is the catch-all's: unmatched.
pub fn route_label(pattern: Option<&str>, path: &str) -> String {
    if let Some(pattern) = pattern {
        let mut template = String::with_capacity(pattern.len());
        for part in pattern.split('/').filter(|p| !p.is_empty()) {
            template.push('/');
            match part.strip_prefix(':') {
                Some(name) => {
                    template.push('{');
                    template.push_str(name);
                    template.push('}');
                }
                None => template.push_str(part),
            }
        }
        if template.is_empty() {
            if path == "/" {
                return "/".to_owned();
            }
        } else {
            return template;
        }
    }
    known_path(path).unwrap_or_else(|| UNMATCHED.to_owned())
}

/// The API spec's path (or a web form's) that `path` names, if any.
fn known_path(path: &str) -> Option<String> {
    static PATHS: OnceLock<Vec<String>> = OnceLock::new();
    let paths = PATHS.get_or_init(|| {
        let spec: serde_json::Value =
            serde_json::from_str(&crate::http::spec_json()).unwrap_or_default();
        let mut paths: Vec<String> = spec["paths"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        // The web forms that are rate limited, answered before routing.
        paths.push("/signup".to_owned());
        paths.push("/signup/reset".to_owned());
        paths
    });
    let wanted: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    paths
        .iter()
        .find(|template| {
            let parts: Vec<&str> = template.split('/').filter(|p| !p.is_empty()).collect();
            parts.len() == wanted.len()
                && parts
                    .iter()
                    .zip(&wanted)
                    .all(|(t, w)| t.starts_with('{') || t == w)
        })
        .cloned()
}

/// The metrics as a response, refreshed from the database first.
async fn scrape(state: &AppState) -> Response {
    let now = crate::app::now();
    state.metrics.refresh(&state.store, now).await;
    crate::app::pilot_gauges::refresh(state, now).await;
    Response::builder()
        .status(StatusCode::OK)
        .content_type(CONTENT_TYPE)
        .header("cache-control", "no-store")
        .body(state.metrics.encode())
}

/// `/metrics` on the main listener: only with the bearer token.
pub async fn guarded(req: &Request, state: &AppState) -> Response {
    let Some(token) = state.config.metrics.token.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Bearer realm=\"metrics\"")
            .content_type("text/plain; charset=utf-8")
            .body("The metrics need `Authorization: Bearer <METRICS_TOKEN>`.\n");
    }
    scrape(state).await
}

/// The whole application of the metrics listener (`METRICS_BIND`):
/// `GET /metrics`, nothing else; with `METRICS_TOKEN` set, for the token
/// only there too.
pub fn endpoint(state: AppState) -> impl Endpoint {
    poem::Route::new().at(
        "/metrics",
        poem::get(poem::endpoint::make(move |req| {
            let state = state.clone();
            async move {
                if state.config.metrics.token.is_some() {
                    guarded(&req, &state).await
                } else {
                    scrape(&state).await
                }
            }
        })),
    )
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_never_raw_paths() {
        assert_eq!(
            route_label(
                Some("//api/v1/licenses/validate"),
                "/api/v1/licenses/validate"
            ),
            "/api/v1/licenses/validate"
        );
        assert_eq!(
            route_label(Some("/api/v1/things/:id"), "/api/v1/things/42"),
            "/api/v1/things/{id}"
        );
        assert_eq!(route_label(Some("/"), "/"), "/");
        assert_eq!(route_label(Some("/"), "/wp-admin/x.php"), UNMATCHED);
        assert_eq!(
            route_label(None, "/api/v1/licenses//validate/"),
            "/api/v1/licenses/validate",
            "answered before routing (a 429): the spec's path"
        );
        assert_eq!(route_label(None, "/api/v1/licenses/ABCD-1234"), UNMATCHED);
    }
}
