//! Cross-site request forgery protection of the form posts: a random token
//! in a cookie and in a hidden field of the form, which must be equal
//! (double submit), and, when the browser names the page the post came
//! from (`Origin`), that page must be ours.

use poem::{Request, Response};

use super::cookies::{self, Cookie, SameSite};

/// The cookie holding the token of the signup pages (under `/signup`).
pub const COOKIE: &str = "coditect_csrf";
/// The cookie holding the token of the account pages (`/signin`,
/// `/signout`, `/account`: a cookie for the whole site, under another name
/// than the signup pages' so that the two never shadow each other).
pub const ACCOUNT_COOKIE: &str = "coditect_account_csrf";
/// The hidden form field holding the token.
pub const FIELD: &str = "csrf_token";
/// A form left open longer than this must be reloaded.
const MAX_AGE_SECONDS: u32 = 2 * 3600;

/// The token a form carries: the browser's own when it sent a good one,
/// else a new one that [`FormToken::set_cookie`] must hand to the browser.
pub struct FormToken {
    pub value: String,
    new: bool,
    cookie: &'static str,
    path: &'static str,
}

impl FormToken {
    /// The token of the signup pages.
    pub fn for_request(req: &Request) -> Result<Self, getrandom::Error> {
        Self::of(req, COOKIE, "/signup")
    }

    /// The token of the account pages.
    pub fn for_account(req: &Request) -> Result<Self, getrandom::Error> {
        Self::of(req, ACCOUNT_COOKIE, "/")
    }

    fn of(
        req: &Request,
        cookie: &'static str,
        path: &'static str,
    ) -> Result<Self, getrandom::Error> {
        let (value, new) = match cookies::read(req, cookie) {
            Some(value) => (value, false),
            None => (cookies::random_value()?, true),
        };
        Ok(FormToken {
            value,
            new,
            cookie,
            path,
        })
    }

    /// Sets the cookie when the token is new.
    pub fn set_cookie(&self, resp: &mut Response, secure: bool) {
        if self.new {
            Cookie {
                name: self.cookie,
                value: &self.value,
                path: self.path,
                max_age_seconds: MAX_AGE_SECONDS,
                same_site: SameSite::Strict,
                secure,
            }
            .set_on(resp);
        }
    }

    /// The hidden field for a form.
    pub fn field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"{FIELD}\" value=\"{}\">",
            super::html::escape(&self.value)
        )
    }
}

/// Why a post was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token in the cookie or in the form (cookie expired, or a post
    /// made without our form).
    Missing,
    /// The two tokens differ.
    Mismatch,
    /// `Origin` names another site (or is `null`).
    ForeignOrigin,
}

/// Checks a form post: `submitted` is the form's token, `site_origin` our
/// own origin (`https://host[:port]`).
pub fn check(req: &Request, submitted: Option<&str>, site_origin: &str) -> Result<(), Refusal> {
    check_with(req, COOKIE, submitted, site_origin)
}

/// [`check`] for a post of the account pages.
pub fn check_account(
    req: &Request,
    submitted: Option<&str>,
    site_origin: &str,
) -> Result<(), Refusal> {
    check_with(req, ACCOUNT_COOKIE, submitted, site_origin)
}

fn check_with(
    req: &Request,
    cookie_name: &str,
    submitted: Option<&str>,
    site_origin: &str,
) -> Result<(), Refusal> {
    if let Some(origin) = req.headers().get(poem::http::header::ORIGIN) {
        let theirs = origin.to_str().ok().and_then(super::origin_of);
        if theirs.as_deref() != Some(site_origin) {
            return Err(Refusal::ForeignOrigin);
        }
    }
    let cookie = cookies::read(req, cookie_name).ok_or(Refusal::Missing)?;
    let submitted = submitted
        .filter(|t| cookies::well_formed(t))
        .ok_or(Refusal::Missing)?;
    if cookies::same_secret(&cookie, submitted) {
        Ok(())
    } else {
        Err(Refusal::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "https://licenses.coditect.ai";

    fn post(cookie: Option<&str>, origin: Option<&str>) -> Request {
        let mut b = Request::builder().method(poem::http::Method::POST);
        if let Some(c) = cookie {
            b = b.header("cookie", format!("{COOKIE}={c}"));
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.finish()
    }

    #[test]
    fn equal_tokens_from_our_origin_pass() {
        let t = cookies::random_value().unwrap();
        assert_eq!(check(&post(Some(&t), Some(SITE)), Some(&t), SITE), Ok(()));
        // Without Origin (older browsers) the tokens decide.
        assert_eq!(check(&post(Some(&t), None), Some(&t), SITE), Ok(()));
        // Default ports and case do not matter.
        let o = "HTTPS://Licenses.Coditect.AI:443";
        assert_eq!(check(&post(Some(&t), Some(o)), Some(&t), SITE), Ok(()));
    }

    #[test]
    fn missing_or_different_tokens_and_foreign_origins_are_refused() {
        let t = cookies::random_value().unwrap();
        let other = cookies::random_value().unwrap();
        assert_eq!(
            check(&post(None, None), Some(&t), SITE),
            Err(Refusal::Missing)
        );
        assert_eq!(
            check(&post(Some(&t), None), None, SITE),
            Err(Refusal::Missing)
        );
        assert_eq!(
            check(&post(Some(&t), None), Some(&other), SITE),
            Err(Refusal::Mismatch)
        );
        for origin in [
            "https://evil.example",
            "null",
            "http://licenses.coditect.ai",
            "https://licenses.coditect.ai:8443",
        ] {
            assert_eq!(
                check(&post(Some(&t), Some(origin)), Some(&t), SITE),
                Err(Refusal::ForeignOrigin),
                "{origin}"
            );
        }
    }
}
