//! The log: lines on stderr, `RUST_LOG` for the level (default `info`).
//!
//! **Format.** `LOG_FORMAT=json`, the default in production
//! (`CODITECT_ENV=production`), writes one JSON object a line in the shape
//! Google Cloud Logging reads: `severity` (`DEBUG`, `INFO`, `WARNING`,
//! `ERROR`), `message`, `time`, the request's `httpRequest`
//! (`requestMethod`, `requestUrl` — the path only, never the query —,
//! `status`, `latency` as `"0.004s"`, `remoteIp`, `userAgent`) on the one
//! line each request ends with, `request_id` (also as the label
//! `logging.googleapis.com/labels`) on every line logged while a request
//! is handled, `logging.googleapis.com/trace` when the platform's
//! `X-Cloud-Trace-Context` came with it and `GOOGLE_CLOUD_PROJECT` is set,
//! and the event's other fields as they are. `LOG_FORMAT=text` (the
//! default elsewhere) writes plain lines.
//!
//! **Colour** only when stderr is a terminal and `NO_COLOR` is not set, so
//! `coditect-issuer audit 2>&1 | head` or a log file gets no escape codes.

use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The field names of a request's line that make up `httpRequest`
/// (see `http::middleware::metrics`).
pub const HTTP_FIELDS: [(&str, &str); 6] = [
    ("http.method", "requestMethod"),
    ("http.path", "requestUrl"),
    ("http.status", "status"),
    ("http.latency", "latency"),
    ("http.remote_ip", "remoteIp"),
    ("http.user_agent", "userAgent"),
];

/// The field that carries the Cloud Trace name of a request.
pub const TRACE_FIELD: &str = "trace";

/// Starts the log (see the module documentation). Reads the environment
/// itself: it starts before the configuration is loaded, so that the
/// configuration's own errors are logged the same way.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let production = std::env::var("CODITECT_ENV").is_ok_and(|v| v == "production");
    let json = match std::env::var("LOG_FORMAT") {
        Ok(v) if v.eq_ignore_ascii_case("json") => true,
        Ok(v) if v.eq_ignore_ascii_case("text") => false,
        _ => production,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(CloudJson)
            .try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(colour_on_stderr())
            .try_init()
    };
}

/// Whether stderr may be coloured: a terminal, and no `NO_COLOR` (any
/// value but empty, as no-color.org says).
fn colour_on_stderr() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// The Cloud Logging line format.
pub struct CloudJson;

impl<S, N> FormatEvent<S, N> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Map::new();
        // The fields of the spans around the event (the request's id),
        // outermost first; JsonFields wrote them as JSON objects.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(formatted) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str(&formatted.fields)
                {
                    fields.extend(map);
                }
            }
        }
        event.record(&mut Collect(&mut fields));
        let line = cloud_line(*event.metadata().level(), fields);
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writer.write_str(&text)?;
        writer.write_char('\n')
    }
}

/// An event's fields, with the values their types have.
struct Collect<'a>(&'a mut Map<String, Value>);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

/// One line: the event's fields arranged as Cloud Logging reads them.
pub fn cloud_line(level: Level, mut fields: Map<String, Value>) -> Map<String, Value> {
    let severity = match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    };
    let mut line = Map::new();
    line.insert("severity".into(), severity.into());
    let message = fields.remove("message").unwrap_or_default();
    line.insert("message".into(), message);
    if let Ok(now) =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)
    {
        line.insert("time".into(), now.into());
    }
    let mut http = Map::new();
    for (field, name) in HTTP_FIELDS {
        if let Some(value) = fields.remove(field) {
            let value = match (name, value) {
                ("latency", Value::Number(secs)) => {
                    Value::from(format!("{:.6}s", secs.as_f64().unwrap_or_default()))
                }
                (_, value) => value,
            };
            http.insert(name.into(), value);
        }
    }
    if !http.is_empty() {
        line.insert("httpRequest".into(), Value::Object(http));
    }
    if let Some(trace) = fields.remove(TRACE_FIELD) {
        line.insert("logging.googleapis.com/trace".into(), trace);
    }
    if let Some(id) = fields.get("request_id") {
        let mut labels = Map::new();
        labels.insert("request_id".into(), id.clone());
        line.insert(
            "logging.googleapis.com/labels".into(),
            Value::Object(labels),
        );
    }
    line.extend(fields);
    line
}

/// The Cloud Trace name of a request (`projects/P/traces/T`) from the
/// `X-Cloud-Trace-Context` header (`T/SPAN;o=1`), when
/// `GOOGLE_CLOUD_PROJECT` names the project.
pub fn trace_name(header: Option<&str>) -> Option<String> {
    static PROJECT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let project = PROJECT
        .get_or_init(|| {
            std::env::var("GOOGLE_CLOUD_PROJECT")
                .ok()
                .filter(|p| !p.is_empty())
        })
        .as_deref()?;
    let trace = header?.split('/').next()?;
    (!trace.is_empty() && trace.len() <= 64 && trace.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("projects/{project}/traces/{trace}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_has_the_fields_cloud_logging_reads() {
        let mut fields = Map::new();
        fields.insert("message".into(), "request".into());
        fields.insert("request_id".into(), "r-1".into());
        fields.insert("http.method".into(), "POST".into());
        fields.insert("http.path".into(), "/api/v1/licenses/validate".into());
        fields.insert("http.status".into(), 200.into());
        fields.insert("http.latency".into(), 0.0042.into());
        fields.insert(TRACE_FIELD.into(), "projects/p/traces/abc".into());
        let line = Value::Object(cloud_line(Level::WARN, fields));
        assert_eq!(line["severity"], "WARNING");
        assert_eq!(line["message"], "request");
        assert_eq!(line["httpRequest"]["requestMethod"], "POST");
        assert_eq!(line["httpRequest"]["status"], 200);
        assert_eq!(line["httpRequest"]["latency"], "0.004200s");
        assert_eq!(
            line["logging.googleapis.com/trace"],
            "projects/p/traces/abc"
        );
        assert_eq!(line["logging.googleapis.com/labels"]["request_id"], "r-1");
        assert_eq!(line["request_id"], "r-1");
        assert!(line.get("http.method").is_none());
    }
}
