//! The issuer's web pages: landing, signup, checkout success and cancel,
//! and the pages mailed links open (confirm an address, reset a password:
//! `account.rs`).
//!
//! Plain server-rendered HTML with one stylesheet and no scripts, under a
//! strict Content-Security-Policy (`api::headers`). The signup form posts
//! to us (CSRF-checked, `csrf`) and is answered with a 303 to Stripe
//! Checkout; Stripe sends the browser back to the success page, which shows
//! the new license key once to the browser that started the checkout (the
//! `coditect_checkout` cookie). `/signin`, `/signout` and `/account` are
//! the signed-in part (`account_page`).

pub mod account;
pub mod account_page;
pub mod cli_login;
pub mod cookies;
pub mod csrf;
pub mod device;
pub mod html;
pub mod landing;
pub mod offers;
pub mod providers;
pub mod signin;
pub mod signup;
pub mod signup_form;
pub mod success;

use std::sync::Arc;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response, handler};

use crate::app::AppState;
use crate::config::Config;
use html::{Page, escape, message};

/// Where Stripe's hosted checkout pages are (the signup form's post is
/// redirected there).
pub const STRIPE_CHECKOUT_ORIGIN: &str = "https://checkout.stripe.com";

/// The `scheme://host[:port]` origin of an http(s) URL, lower case and
/// without a default port, as browsers send it in `Origin`. `None` for
/// anything else (`null`, other schemes, user info).
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            if port == default_port {
                host.to_owned()
            } else {
                authority.clone()
            }
        }
        _ => authority.clone(),
    };
    if host.is_empty() || host.starts_with(':') {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

/// What the pages need to know about where they are served.
pub struct Site {
    /// Our origin, from `PUBLIC_BASE_URL`.
    pub origin: String,
    /// Served over HTTPS: cookies are `Secure`.
    pub secure: bool,
    /// Stripe Checkout's origin, when payments are configured: the real one,
    /// or in development that of `STRIPE_API_BASE` (a local fake).
    pub checkout_origin: Option<String>,
}

impl Site {
    pub fn of(config: &Config) -> Self {
        let base = &config.public_base_url;
        Site {
            origin: origin_of(base).unwrap_or_else(|| base.trim_end_matches('/').to_owned()),
            secure: base.to_ascii_lowercase().starts_with("https://"),
            checkout_origin: config.stripe.as_ref().map(|s| {
                s.api_base
                    .as_deref()
                    .and_then(origin_of)
                    .unwrap_or_else(|| STRIPE_CHECKOUT_ORIGIN.to_owned())
            }),
        }
    }
}

/// `GET /assets/site.css`.
#[handler]
pub fn stylesheet() -> Response {
    Response::builder()
        .content_type("text/css; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(html::STYLESHEET)
}

/// Paths of the pages (always answered in HTML, errors too).
fn is_page_path(path: &str) -> bool {
    path == "/"
        || path == "/signup"
        || path.starts_with("/signup/")
        || path.starts_with("/assets/")
        || path == "/signin"
        || path == "/signout"
        || path == "/account"
        || path.starts_with("/account/")
        || path.starts_with("/auth/")
        || path == "/cli/login"
        || path == "/device"
}

/// Paths of the API and the machine-facing endpoints (always JSON).
fn is_api_path(path: &str) -> bool {
    [
        "/api/",
        "/webhooks/",
        "/docs",
        "/openapi.json",
        "/healthz",
        "/readyz",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

fn accepts_html(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// Around the whole application: an error answered as a problem document
/// (unknown page, rate limit, request too large) becomes an HTML page when
/// it answers a page, or a browser asking for HTML outside the API. The
/// status and the headers (`Retry-After`, `X-Request-Id`, …) are kept.
pub async fn html_errors<E: Endpoint>(ep: Arc<E>, req: Request, state: &AppState) -> Response {
    let path = req.uri().path().to_owned();
    let wants_html = is_page_path(&path) || (!is_api_path(&path) && accepts_html(&req));
    let resp = match ep.call(req).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    if !wants_html || resp.content_type() != Some("application/problem+json") {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let problem: serde_json::Value = body
        .into_vec()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let text = |k: &str| problem[k].as_str().unwrap_or_default().to_owned();
    let (heading, detail) = match parts.status {
        StatusCode::NOT_FOUND => (
            "Page not found".to_owned(),
            "There is no page at this address.".to_owned(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "Not possible here".to_owned(),
            "This page cannot be used this way. Start again from the home page.".to_owned(),
        ),
        _ => (text("title"), text("detail")),
    };
    let mut paragraphs = vec![escape(&detail)];
    let request_id = text("request_id");
    if !request_id.is_empty() {
        paragraphs.push(format!(
            "Reference for support: <code>{}</code>",
            escape(&request_id)
        ));
    }
    let body = message(&heading, &paragraphs, Some(("/", "Go to the home page")));
    let mut page = Page::new(heading.clone(), body)
        .status(parts.status)
        .no_store()
        .respond(state);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && name != header::CONTENT_SECURITY_POLICY
        {
            page.headers_mut().insert(name.clone(), value.clone());
        }
    }
    page.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    crate::http::middleware::security_headers::apply(&mut page, &path);
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_as_browsers_send_them() {
        for (url, origin) in [
            (
                "https://licenses.coditect.ai",
                "https://licenses.coditect.ai",
            ),
            (
                "https://Licenses.Coditect.ai/",
                "https://licenses.coditect.ai",
            ),
            ("https://x.io:443/a/b?c", "https://x.io"),
            ("http://x.io:80", "http://x.io"),
            ("http://127.0.0.1:8080/signup", "http://127.0.0.1:8080"),
            ("https://x.io:8443", "https://x.io:8443"),
            ("http://[::1]:3000", "http://[::1]:3000"),
            ("http://[::1]", "http://[::1]"),
        ] {
            assert_eq!(origin_of(url).as_deref(), Some(origin), "{url}");
        }
        for bad in [
            "null",
            "",
            "ftp://x.io",
            "https://",
            "https://u:p@x.io",
            "x.io",
        ] {
            assert_eq!(origin_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn page_and_api_paths() {
        assert!(is_page_path("/") && is_page_path("/signup") && is_page_path("/signup/success"));
        assert!(!is_page_path("/signups") && !is_page_path("/api/v1/keys"));
        assert!(is_api_path("/api/v1/auth/login") && is_api_path("/docs/"));
        assert!(!is_api_path("/nothing-here"));
    }
}
