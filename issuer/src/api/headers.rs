//! Security headers on every response, errors and 404s included.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poem::Response;
use poem::http::HeaderValue;
use sha2::{Digest, Sha256};

/// Content-Security-Policy of JSON responses: nothing may load or frame them.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Content-Security-Policy of HTML pages: only our own resources, and only
/// the inline scripts we serve, pinned by their hashes.
fn html_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let docs = super::service().swagger_ui_html();
        let hashes: Vec<String> = inline_scripts(&docs)
            .into_iter()
            .map(|script| format!("'sha256-{}'", STANDARD.encode(Sha256::digest(script))))
            .collect();
        format!(
            "default-src 'none'; script-src 'self' {}; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            hashes.join(" ")
        )
    })
}

/// The bodies of the inline `<script>` elements of a page, in order. A
/// script's text runs to the next `</script>` (which an HTML script cannot
/// contain), whatever it holds, even the text `<script`.
fn inline_scripts(html: &str) -> Vec<&str> {
    let mut scripts = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let after_tag_name = &rest[start + "<script".len()..];
        let Some(tag_end) = after_tag_name.find('>') else {
            break;
        };
        let attrs = &after_tag_name[..tag_end];
        let body_and_rest = &after_tag_name[tag_end + 1..];
        let Some(close) = body_and_rest.find("</script>") else {
            break;
        };
        if !attrs.contains("src=") {
            scripts.push(&body_and_rest[..close]);
        }
        rest = &body_and_rest[close + "</script>".len()..];
    }
    scripts
}

/// Adds the security headers; `path` decides caching.
pub fn apply(resp: &mut Response, path: &str) {
    let is_html = resp
        .content_type()
        .is_some_and(|t| t.starts_with("text/html"));
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "strict-transport-security",
        HeaderValue::from_static("max-age=63072000; includeSubDomains"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    let csp = if is_html { html_csp() } else { API_CSP };
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert("content-security-policy", v);
    }
    // Accounts and licenses are personal: never stored by a cache. The
    // public keys may be.
    if path.starts_with("/api/v1/") && path != "/api/v1/keys" {
        h.insert("cache-control", HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_found_and_external_ones_skipped() {
        let html = r#"<script src="/a.js"></script><script>one("<script(?=\s|>")</script><p><script type="x">two</script>"#;
        assert_eq!(
            inline_scripts(html),
            vec![r#"one("<script(?=\s|>")"#, "two"]
        );
        assert!(html_csp().contains("'sha256-"));
    }
}
