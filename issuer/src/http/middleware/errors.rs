//! Errors the framework raises, and any problem, as responses: an
//! `application/problem+json` body with a stable `code` (the answer of a
//! 500 carries only the request id; the log has the cause).

use poem::Response;
use poem::http::StatusCode;

use super::field_errors;
use crate::http::problem::{NewProblem, Problem};

/// A problem response for an error the framework raised (unknown route,
/// wrong method, a body that does not fit, missing credentials). A body
/// that does not fit is explained field by field ([`field_errors`]).
pub fn from_framework(
    err: &poem::Error,
    method: &str,
    path: &str,
    body: &[u8],
    request_id: &str,
) -> Response {
    let explained = err
        .downcast_ref::<poem_openapi::error::ParseRequestPayloadError>()
        .and_then(|_| field_errors::explain_bytes(method, path, body));
    if let Some(field) = explained {
        let mut p = Problem::from(field);
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
