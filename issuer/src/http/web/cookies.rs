//! Reading and setting the two cookies of the site: the CSRF token of the
//! signup form and the checkout cookie that lets one browser see its new
//! license key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use poem::http::{HeaderValue, header};
use poem::{Request, Response};

/// Random bytes in a cookie value (256 bits).
const RANDOM_BYTES: usize = 32;
/// Length of such a value, base64url without padding.
const VALUE_LEN: usize = 43;

/// A fresh random cookie value: 32 bytes, base64url without padding.
pub fn random_value() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `value` looks like one of our random values (anything else a
/// client sends is ignored).
pub fn well_formed(value: &str) -> bool {
    value.len() == VALUE_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The well-formed value of cookie `name` in the request, if any. Every
/// `Cookie` header field is read; the first well-formed value wins.
pub fn read(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .find(|v| well_formed(v))
        .map(str::to_owned)
}

/// The value of cookie `name` when it is a signed access token (a JWT:
/// base64url parts joined by dots, at most 2 KiB); anything else is
/// ignored.
pub fn read_token(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
        .find(|v| {
            !v.is_empty()
                && v.len() <= 2048
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_owned)
}

/// How a cookie may travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Only with requests started by our own pages.
    Strict,
    /// Also with top-level navigations from other sites (the way back from
    /// Stripe Checkout).
    Lax,
}

/// A cookie to set: always `HttpOnly`, `Secure` when the site is served
/// over HTTPS.
pub struct Cookie<'a> {
    pub name: &'a str,
    pub value: &'a str,
    pub path: &'a str,
    pub max_age_seconds: u32,
    pub same_site: SameSite,
    pub secure: bool,
}

impl Cookie<'_> {
    /// The `Set-Cookie` header value.
    pub fn header(&self) -> String {
        let same_site = match self.same_site {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
        };
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{}={}; Path={}; Max-Age={}; HttpOnly; SameSite={same_site}{secure}",
            self.name, self.value, self.path, self.max_age_seconds
        )
    }

    /// Adds the cookie to a response.
    pub fn set_on(&self, resp: &mut Response) {
        if let Ok(v) = HeaderValue::from_str(&self.header()) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

/// Whether two secrets are equal, in time that depends only on their
/// lengths (which are public: every token has the same length).
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_are_well_formed_and_differ() {
        let a = random_value().unwrap();
        let b = random_value().unwrap();
        assert!(well_formed(&a) && well_formed(&b));
        assert_ne!(a, b);
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}!", &a[1..])));
    }

    #[test]
    fn cookies_are_read_from_every_header_field() {
        let v = random_value().unwrap();
        let req = Request::builder()
            .header("cookie", "a=1; coditect_csrf=garbage")
            .header("cookie", format!("other=2; coditect_csrf={v}"))
            .finish();
        assert_eq!(read(&req, "coditect_csrf"), Some(v));
        assert_eq!(read(&req, "missing"), None);
    }

    #[test]
    fn set_cookie_says_http_only_and_secure_only_over_https() {
        let mut c = Cookie {
            name: "n",
            value: "v",
            path: "/signup",
            max_age_seconds: 60,
            same_site: SameSite::Lax,
            secure: false,
        };
        assert_eq!(
            c.header(),
            "n=v; Path=/signup; Max-Age=60; HttpOnly; SameSite=Lax"
        );
        c.secure = true;
        c.same_site = SameSite::Strict;
        assert!(c.header().ends_with("SameSite=Strict; Secure"));
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
