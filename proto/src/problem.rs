//! The body of every refusal: `application/problem+json` (RFC 9457) with a
//! stable `code`.

use serde::{Deserialize, Serialize};

/// A problem report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:coditect:problem:<code>`.
    #[cfg_attr(feature = "openapi", oai(rename = "type"))]
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened here and what to do.
    pub detail: String,
    /// Stable machine-readable code, e.g. `too_many_activations`.
    pub code: String,
    /// The request field at fault, when there is one.
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// When the refused action becomes possible (RFC 3339), when that is
    /// known (e.g. the next seat transfer).
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<String>,
    /// Id of the request, as in the `X-Request-Id` header and the log.
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_issuers_problem_bodies() {
        let text = r#"{"type":"urn:coditect:problem:invalid_field","title":"A field is invalid",
            "status":422,"detail":"`hardware_id` is required","code":"invalid_field",
            "field":"hardware_id","request_id":"r-1"}"#;
        let p: Problem = serde_json::from_str(text).unwrap();
        assert_eq!(p.type_, "urn:coditect:problem:invalid_field");
        assert_eq!(p.status, 422);
        assert_eq!(p.field.as_deref(), Some("hardware_id"));
        assert_eq!(
            serde_json::from_value::<Problem>(serde_json::to_value(&p).unwrap()).unwrap(),
            p
        );

        // `field` and `request_id` are optional, and left out when absent.
        let p: Problem = serde_json::from_str(
            r#"{"type":"urn:coditect:problem:not_activated","title":"Machine not activated",
                "status":403,"detail":"Run `coditect activate` first.","code":"not_activated"}"#,
        )
        .unwrap();
        assert_eq!((p.field.as_deref(), p.request_id.as_deref()), (None, None));
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("field").is_none() && json.get("request_id").is_none());
        assert_eq!(json["type"], "urn:coditect:problem:not_activated");
    }
}
