//! Security headers on every response, errors and 404s included.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poem::Response;
use poem::http::HeaderValue;
use sha2::{Digest, Sha256};

/// Content-Security-Policy of JSON responses: nothing may load or frame them.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Marks an HTML response as one of the site's own pages (`crate::web`):
/// they have no scripts and no inline styles, and get [`site_csp`].
#[derive(Debug, Clone, Default)]
pub struct SitePage {
    /// An origin the page's forms may be sent to besides our own. A
    /// redirect after a form post counts as part of the submission in
    /// Chromium, so the signup form, answered with a 303 to Stripe
    /// Checkout, needs Checkout's origin here.
    pub form_action: Option<String>,
}

/// Content-Security-Policy of the site's pages: no script at all, the
/// stylesheet from our origin, forms only to us (and Stripe Checkout where
/// a page says so).
pub fn site_csp(page: &SitePage) -> String {
    let extra = page
        .form_action
        .as_deref()
        .filter(|o| {
            o.bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        })
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'{extra}; \
         frame-ancestors 'none'; base-uri 'none'"
    )
}

/// Content-Security-Policy of other HTML (the Swagger UI of `/docs`): only
/// our own resources, and only the inline scripts we serve, pinned by their
/// hashes.
fn html_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let docs = crate::http::spec::docs_html();
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
    let site_page = resp.extensions().get::<SitePage>().cloned();
    // A page's own links and forms carry their origin (the signup form's
    // `Origin` check needs it; with `no-referrer` browsers send `null`);
    // other sites learn nothing, not even which page linked to them.
    let referrer = if site_page.is_some() {
        "same-origin"
    } else {
        "no-referrer"
    };
    let h = resp.headers_mut();
    h.insert("referrer-policy", HeaderValue::from_static(referrer));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "strict-transport-security",
        HeaderValue::from_static("max-age=63072000; includeSubDomains"),
    );
    let csp = match (is_html, site_page) {
        (true, Some(page)) => site_csp(&page),
        (true, None) => html_csp().to_owned(),
        (false, _) => API_CSP.to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&csp) {
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

    #[test]
    fn site_pages_get_a_script_free_policy() {
        let mut resp = Response::builder()
            .content_type("text/html; charset=utf-8")
            .finish();
        resp.extensions_mut().insert(SitePage {
            form_action: Some("https://checkout.stripe.com".into()),
        });
        apply(&mut resp, "/signup");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            !csp.contains("script-src") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(
            csp.contains("form-action 'self' https://checkout.stripe.com;"),
            "{csp}"
        );
        assert_eq!(resp.headers()["referrer-policy"], "same-origin");
        // A value that would add a directive is dropped.
        let sneaky = SitePage {
            form_action: Some("x; script-src *".into()),
        };
        assert!(site_csp(&sneaky).contains("form-action 'self';"));
        // Other HTML (Swagger UI) keeps its own policy.
        let mut docs = Response::builder().content_type("text/html").finish();
        apply(&mut docs, "/docs");
        let csp = docs.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("'sha256-"), "{csp}");
        assert_eq!(docs.headers()["referrer-policy"], "no-referrer");
    }
}
