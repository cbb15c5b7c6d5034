//! Every request has an id: the client's `X-Request-Id` when it is short
//! printable ASCII, else a new UUID. It is in the log line of the request,
//! in the `X-Request-Id` answer header and in every problem document, so
//! an error a user reports can be found in the log.

use poem::{Request, Response};

/// The id of this request.
pub fn of(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// Sets the `X-Request-Id` header of an answer.
pub fn tag(resp: &mut Response, request_id: &str) {
    if let Ok(v) = request_id.parse() {
        resp.headers_mut().insert("x-request-id", v);
    }
}

/// Adds the request id to a problem body that lacks one.
pub async fn into_problem(mut resp: Response, request_id: &str) -> Response {
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
