//! Request bodies are parsed once. The middleware parses a JSON body into a
//! [`ParsedBody`] (it needs the value for the rate limits and the strict
//! type check) and leaves it in the request; the handlers' [`JsonBody`]
//! extractor takes that value instead of parsing the bytes again. In the
//! OpenAPI document a `JsonBody<T>` is exactly a `Json<T>`.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::error::ParseRequestPayloadError;
use poem_openapi::payload::{Json, ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, Type};
use serde_json::Value;

/// The JSON value of a request body, parsed by the middleware.
#[derive(Debug, Default)]
pub struct ParsedBody(Option<Value>);

impl ParsedBody {
    /// Parses a body sent as JSON (an `application/json` or `+json` content
    /// type); anything else is left to the extractor, which refuses it.
    pub fn parse(req: &Request, body: &[u8]) -> Self {
        let is_json = req
            .content_type()
            .is_some_and(<Json<Value> as Payload>::check_content_type);
        ParsedBody(if is_json && !body.is_empty() {
            serde_json::from_slice::<Value>(body).ok()
        } else {
            None
        })
    }

    /// The parsed value, for the middleware's checks.
    pub fn value(&self) -> Option<&Value> {
        self.0.as_ref()
    }

    /// Hands the value over to the handler's extractor (it goes into the
    /// request's extensions, which need a shareable type).
    pub fn seal(self) -> SealedBody {
        SealedBody(Arc::new(Mutex::new(self.0)))
    }
}

/// The parsed body, waiting in the request for the extractor to take it.
#[derive(Debug, Clone)]
pub struct SealedBody(Arc<Mutex<Option<Value>>>);

impl SealedBody {
    fn take(&self) -> Option<Value> {
        self.0.lock().ok().and_then(|mut v| v.take())
    }
}

/// A JSON request body of type `T`, as the middleware parsed it.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T> Deref for JsonBody<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: ParseFromJSON> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let parsed = request
            .extensions()
            .get::<SealedBody>()
            .and_then(SealedBody::take);
        let value = match parsed {
            Some(value) => value,
            // Not parsed by the middleware (no JSON, or called without
            // it): read the bytes, as `Json<T>` does.
            None => {
                let data = Vec::<u8>::from_request(request, body).await?;
                if data.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&data).map_err(|err| ParseRequestPayloadError {
                        reason: err.to_string(),
                    })?
                }
            }
        };
        let value = T::parse_from_json(Some(value)).map_err(|err| ParseRequestPayloadError {
            reason: err.into_message(),
        })?;
        Ok(JsonBody(value))
    }
}

poem_openapi::impl_apirequest_for_payload!(JsonBody<T>, T: ParseFromJSON);
