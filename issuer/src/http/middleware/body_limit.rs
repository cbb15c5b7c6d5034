//! Request bodies are small JSON documents (or a Stripe event): they are
//! read whole here, with a cap, before anything else looks at them.

use poem::Request;
use poem::http::StatusCode;

use crate::app::billing::webhook::MAX_WEBHOOK_BYTES;
use crate::http::problem::{NewProblem, Problem};

/// Largest request body accepted, in bytes (the Stripe webhook has its own
/// cap, `MAX_WEBHOOK_BYTES`).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The cap of a path's body.
pub fn limit_of(path: &str) -> usize {
    if path == "/webhooks/stripe" {
        MAX_WEBHOOK_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// Takes the body out of the request; a larger one than the path allows
/// is a 413 problem.
pub async fn read(req: &mut Request, path: &str) -> Result<bytes::Bytes, Problem> {
    let limit = limit_of(path);
    req.take_body().into_bytes_limit(limit).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Request too large",
            format!("The request body must be at most {limit} bytes."),
        )
    })
}
