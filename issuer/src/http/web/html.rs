//! The frame every page shares (header, footer, stylesheet) and HTML
//! escaping. Pages are plain server-rendered HTML without scripts; every
//! value interpolated into them goes through [`escape`].

use poem::Response;
use poem::http::{HeaderValue, StatusCode, header};

use crate::app::AppState;
use crate::http::middleware::security_headers::SitePage;

/// `text` with the five HTML-significant characters escaped, safe in
/// element content and in quoted attribute values.
pub fn escape(text: &str) -> String {
    html_escape::encode_quoted_attribute(text).into_owned()
}

/// The site's stylesheet, served at [`STYLESHEET_PATH`].
pub const STYLESHEET: &str = include_str!("site.css");
/// Where the stylesheet is served.
pub const STYLESHEET_PATH: &str = "/assets/site.css";

/// A page to send.
pub struct Page {
    pub status: StatusCode,
    /// The `<title>` and, unless the body has its own, nothing else.
    pub title: String,
    /// The content of `<main>`, already escaped.
    pub body: String,
    /// Reload the page after this many seconds (the success page waits for
    /// Stripe's confirmation this way, without a script).
    pub refresh_seconds: Option<u32>,
    /// Personal or single-use content: `Cache-Control: no-store`.
    pub no_store: bool,
    /// An origin the page's forms may be sent to (and redirected to) besides
    /// our own: Stripe Checkout, for the signup form.
    pub form_action: Option<String>,
}

impl Page {
    /// A 200 page, cacheable, without extras.
    pub fn new(title: impl Into<String>, body: impl Into<String>) -> Self {
        Page {
            status: StatusCode::OK,
            title: title.into(),
            body: body.into(),
            refresh_seconds: None,
            no_store: false,
            form_action: None,
        }
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn no_store(mut self) -> Self {
        self.no_store = true;
        self
    }

    pub fn refresh(mut self, seconds: u32) -> Self {
        self.refresh_seconds = Some(seconds);
        self
    }

    pub fn form_action(mut self, origin: Option<String>) -> Self {
        self.form_action = origin;
        self
    }

    /// The whole document.
    pub fn render(&self, state: &AppState) -> String {
        let refresh = self
            .refresh_seconds
            .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
            .unwrap_or_default();
        let support = escape(&state.config.mail.support_email);
        format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             {refresh}<title>{title} · CODITECT</title>\n\
             <link rel=\"stylesheet\" href=\"{STYLESHEET_PATH}\">\n</head>\n<body>\n\
             <header class=\"site\"><a class=\"brand\" href=\"/\">CODITECT</a>\
             <nav><a href=\"/#plans\">Plans</a> <a href=\"/#install\">Install</a> \
             <a href=\"/account\">Account</a> <a href=\"/docs\">API docs</a></nav></header>\n\
             <main>\n{body}\n</main>\n\
             <footer class=\"site\">Questions? Write to \
             <a href=\"mailto:{support}\">{support}</a>.</footer>\n</body>\n</html>\n",
            title = escape(&self.title),
            body = self.body,
        )
    }

    /// The page as a response, marked as one of the site's pages so that
    /// the security headers give it the site's script-free policy.
    pub fn respond(self, state: &AppState) -> Response {
        let html = self.render(state);
        let mut resp = Response::builder()
            .status(self.status)
            .content_type("text/html; charset=utf-8")
            .body(html);
        if self.no_store {
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        resp.extensions_mut().insert(SitePage {
            form_action: self.form_action,
        });
        resp
    }
}

/// A short page: a heading, paragraphs (already escaped) and a link.
pub fn message(heading: &str, paragraphs: &[String], link: Option<(&str, &str)>) -> String {
    let mut body = format!(
        "<section class=\"message\">\n<h1>{}</h1>\n",
        escape(heading)
    );
    for p in paragraphs {
        body.push_str(&format!("<p>{p}</p>\n"));
    }
    if let Some((href, text)) = link {
        body.push_str(&format!(
            "<p><a class=\"button\" href=\"{}\">{}</a></p>\n",
            escape(href),
            escape(text)
        ));
    }
    body.push_str("</section>");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">O'Neil & co</a>"#),
            "&lt;a href=&quot;x&quot;&gt;O&#x27;Neil &amp; co&lt;/a&gt;"
        );
        assert_eq!(escape("plain"), "plain");
    }
}
