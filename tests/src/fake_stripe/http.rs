//! The HTTP side: decoding and recording requests; answers (JSON, HTML, Stripe errors).

use std::sync::Arc;

use poem::http::StatusCode;
use poem::{Request, Response};
use serde_json::{Map, Value, json};

use super::api::api;
use super::form::parse_pairs;
use super::helpers::html_escape;
use super::hosted_pages::pages;
use super::records::RecordedRequest;
use super::state::Shared;

/// An answer under construction.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) content_type: &'static str,
    pub(super) body: String,
    pub(super) headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub(super) fn json(status: u16, body: &Value) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: serde_json::to_string_pretty(body).expect("JSON serialises"),
            headers: Vec::new(),
        }
    }

    pub(super) fn html(status: u16, body: String) -> Answer {
        Answer {
            status,
            content_type: "text/html; charset=utf-8",
            body,
            headers: Vec::new(),
        }
    }

    pub(super) fn redirect(location: &str) -> Answer {
        Answer {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            body: format!("Redirecting to {location}"),
            headers: vec![("Location", location.to_owned())],
        }
    }

    pub(super) fn into_response(self) -> Response {
        let mut builder = Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .content_type(self.content_type);
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder.body(self.body)
    }
}

/// A Stripe API error.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: u16,
    pub(super) kind: &'static str,
    pub(super) code: Option<&'static str>,
    pub(super) message: String,
    pub(super) param: Option<String>,
}

impl ApiError {
    pub(super) fn invalid(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            code: None,
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    pub(super) fn invalid_value(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("parameter_invalid_string"),
            ..ApiError::invalid(message, Some(param))
        }
    }

    pub(super) fn missing(param: &str) -> ApiError {
        ApiError {
            code: Some("parameter_missing"),
            ..ApiError::invalid(format!("Missing required param: {param}."), Some(param))
        }
    }

    pub(super) fn unknown_param(param: &str) -> ApiError {
        ApiError {
            code: Some("parameter_unknown"),
            ..ApiError::invalid(
                format!(
                    "Received unknown parameter: {param}. (The fake Stripe in \
                     tests/src/fake_stripe/ accepts only the parameters it models; \
                     add it there if the issuer needs it.)"
                ),
                Some(param),
            )
        }
    }

    /// An unknown id named in the path: 404.
    pub(super) fn no_such(what: &str, id: &str) -> ApiError {
        ApiError {
            status: 404,
            code: Some("resource_missing"),
            ..ApiError::invalid(format!("No such {what}: '{id}'"), Some("id"))
        }
    }

    /// An unknown id named in a parameter: 400.
    pub(super) fn no_such_param(what: &str, id: &str, param: &str) -> ApiError {
        ApiError {
            code: Some("resource_missing"),
            ..ApiError::invalid(format!("No such {what}: '{id}'"), Some(param))
        }
    }

    pub(super) fn to_json(&self) -> Value {
        let mut error = Map::new();
        if let Some(code) = self.code {
            error.insert("code".into(), json!(code));
            error.insert(
                "doc_url".into(),
                json!(format!(
                    "https://stripe.com/docs/error-codes/{}",
                    code.replace('_', "-")
                )),
            );
        }
        error.insert("message".into(), json!(self.message));
        if let Some(param) = &self.param {
            error.insert("param".into(), json!(param));
        }
        error.insert("type".into(), json!(self.kind));
        json!({ "error": error })
    }

    pub(super) fn answer(&self) -> Answer {
        Answer::json(self.status, &self.to_json())
    }
}

/// One incoming request, decoded.
pub(super) struct Incoming {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    pub(super) params: Vec<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
    /// A body that is not a form (so Stripe would see no parameters).
    pub(super) non_form_body: bool,
}

impl Incoming {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) async fn handle(shared: Arc<Shared>, mut req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = parse_pairs(req.uri().query().unwrap_or(""));
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req.take_body().into_vec().await.unwrap_or_default();
    let is_form = headers.iter().any(|(k, v)| {
        k == "content-type"
            && v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
    });
    let body_text = String::from_utf8_lossy(&body);
    let params = if is_form {
        parse_pairs(&body_text)
    } else {
        Vec::new()
    };
    let incoming = Incoming {
        method,
        path,
        query,
        params,
        headers,
        non_form_body: !is_form && !body_text.trim().is_empty(),
    };
    let index = {
        let mut state = shared.state();
        state.requests.push(RecordedRequest {
            method: incoming.method.clone(),
            path: incoming.path.clone(),
            query: incoming.query.clone(),
            params: incoming.params.clone(),
            headers: incoming.headers.clone(),
            status: 0,
        });
        state.requests.len() - 1
    };

    let answer = if incoming.path.starts_with("/v1/") {
        let blocking = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || api(&blocking, &incoming))
            .await
            .unwrap_or_else(|e| {
                Answer::json(
                    500,
                    &json!({ "error": { "type": "api_error", "message": e.to_string() } }),
                )
            })
    } else {
        let blocking = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || pages(&blocking, &incoming))
            .await
            .unwrap_or_else(|e| {
                Answer::html(
                    500,
                    format!("internal error: {}", html_escape(&e.to_string())),
                )
            })
    };

    if let Some(recorded) = shared.state().requests.get_mut(index) {
        recorded.status = answer.status;
    }
    answer.into_response()
}
