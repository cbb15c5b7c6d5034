//! Rate limits at the HTTP edge: which requests are limited (by method and
//! path), the client address and license key a request is counted by, and
//! the answer: `RateLimit-*` headers on every answer of a limited route, a
//! 429 with `Retry-After` when refused. The limiters themselves, their
//! quotas and the table of limits are in `app::limits`.
//!
//! **Client IP.** The socket peer. `X-Forwarded-For` is read only with
//! `TRUST_PROXY` = N > 0 (the number of reverse proxies in front of the
//! issuer that each append the address they received the request from):
//! the client is then the N-th address from the right of the header (all
//! `X-Forwarded-For` fields joined by commas, as HTTP says). Entries further
//! left are whatever the client sent and are never used. With fewer than N
//! entries, or an entry that is not an IP address, the peer is used.
//!
//! **Database errors.** When the counters (in the database, on PostgreSQL)
//! cannot be read, the request is answered 503 `database_unavailable` with
//! `Retry-After`, never let through and never a 500.
//!
//! **Headers** (draft-ietf-httpapi-ratelimit-headers-07 form) for the limit
//! closest to being reached: `RateLimit-Limit` (N), `RateLimit-Remaining`
//! (requests left now), `RateLimit-Reset` (seconds until all N are
//! available again) and `RateLimit-Policy` (`N;w=SECONDS`). A 429 also has
//! `Retry-After`: whole seconds, at least 1, until the next request will be
//! accepted.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use poem::http::{HeaderMap, HeaderValue, Method, StatusCode};
use poem_openapi::payload::Json;

pub use crate::app::limits::{Decision, Limit, LimitedRoute, Limiters, Refusal, Report};
use crate::domain::StorageError;
use crate::domain::license_key::LicenseKey;
use crate::http::problem::{ApiError, NewProblem, Problem};

/// The limited route a request goes to, if any. The path is compared
/// with repeated and trailing slashes removed, so that spelling variants
/// are counted too.
pub fn route_of(method: &Method, path: &str) -> Option<LimitedRoute> {
    let mut normal = String::with_capacity(path.len());
    for part in path.split('/').filter(|p| !p.is_empty()) {
        normal.push('/');
        normal.push_str(part);
    }
    // Sign-ins with a provider (their start and the browser's return) take
    // from the sign-in quota too.
    if method == Method::GET
        && normal.starts_with("/auth/")
        && (normal.ends_with("/start") || normal.ends_with("/callback"))
    {
        return Some(LimitedRoute::Login);
    }
    let route = match normal.as_str() {
        // The web sign-in form signs in too: one quota for both.
        "/api/v1/auth/login"
        | "/signin"
        | "/api/v1/auth/cli/token"
        | "/cli/login"
        | "/api/v1/auth/device/code"
        | "/device" => LimitedRoute::Login,
        // The web form creates accounts too: one quota for both.
        "/api/v1/auth/signup" | "/signup" => LimitedRoute::Signup,
        // So do the password resets (a mail, or an Argon2 hash, each): the
        // same quota. Verification links need none: their tokens cannot be
        // guessed, and each comes from a limited signup.
        "/api/v1/auth/password-reset" | "/api/v1/auth/new-password" | "/signup/reset" => {
            LimitedRoute::Signup
        }
        "/api/v1/licenses/validate" => LimitedRoute::Validate,
        "/api/v1/licenses/activate" => LimitedRoute::Activate,
        "/api/v1/licenses/deactivate" => LimitedRoute::Deactivate,
        "/api/v1/licenses/features" => {
            return (method == Method::GET).then_some(LimitedRoute::Features);
        }
        _ => return None,
    };
    (method == Method::POST).then_some(route)
}

/// Sets `RateLimit-Limit`, `-Remaining`, `-Reset` and `-Policy`.
pub fn apply_report(report: &Report, headers: &mut HeaderMap) {
    for (name, value) in [
        ("ratelimit-limit", report.rate.count.to_string()),
        ("ratelimit-remaining", report.remaining.to_string()),
        ("ratelimit-reset", report.reset.to_string()),
        ("ratelimit-policy", report.policy()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// The 429 problem (without request id).
pub fn refusal_problem(refusal: &Refusal) -> Problem {
    let rate = refusal.report.rate.describe();
    let what = match refusal.report.limit {
        Limit::Login => {
            format!("Too many sign-in attempts from your network address: at most {rate}.")
        }
        Limit::Signup => format!("Too many signups from your network address: at most {rate}."),
        Limit::LicenseIp => format!(
            "Too many license requests from your network address: at most {rate}, counting activations, renewals and other requests with a license key together."
        ),
        Limit::Validate => format!("Too many renewals for this license key: at most {rate}."),
        Limit::Activate => {
            format!("Too many activations for this license key: at most {rate}.")
        }
        Limit::BillingUser => format!(
            "Too many billing requests from your account: at most {rate}, counting checkouts and billing portal sessions together."
        ),
        Limit::BillingOrg => format!(
            "Too many billing requests for your organization: at most {rate} over all its users, counting checkouts and billing portal sessions together."
        ),
        Limit::WebhookRefusal => format!(
            "Too many refused webhook deliveries from your network address: at most {rate}. Deliveries with a valid Stripe-Signature are never limited."
        ),
    };
    let s = if refusal.retry_after == 1 { "" } else { "s" };
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many requests",
        format!("{what} Try again in {} second{s}.", refusal.retry_after),
    )
}

/// The documented 429 answer (`ApiError::TooManyRequests`): `problem`
/// with `Retry-After` and the `RateLimit-*` headers.
pub fn refusal_error(refusal: &Refusal, problem: Problem) -> ApiError {
    ApiError::TooManyRequests(
        Json(problem),
        refusal.retry_after,
        refusal.report.rate.count.get(),
        refusal.report.remaining,
        refusal.report.reset,
        refusal.report.policy(),
    )
}

/// Where a handler that checks a limit itself (once it knows who calls:
/// billing) leaves its report, for the middleware to turn into the
/// `RateLimit-*` headers of the answer. The middleware puts one in every
/// request.
#[derive(Clone, Default)]
pub struct LateReport(std::sync::Arc<std::sync::Mutex<Option<Report>>>);

impl LateReport {
    fn set(&self, report: Report) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(report);
        }
    }

    /// The report a handler left, if any.
    pub fn take(&self) -> Option<Report> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Counts a billing call (checkout or portal) of a signed-in `user`
/// against its user's and its organization's limits, before Stripe is
/// called: refused, the 429 to answer; the counts unknown, 503.
pub async fn check_billing(
    req: &poem::Request,
    state: &crate::app::AppState,
    user: &crate::domain::account::User,
) -> Result<(), ApiError> {
    match state
        .limits
        .check_billing(&user.id, &user.organization_id)
        .await
    {
        Ok(Decision::Allowed(report)) => {
            if let Some(slot) = req.extensions().get::<LateReport>() {
                slot.set(report);
            }
            Ok(())
        }
        Ok(Decision::Refused(refusal)) => {
            state.metrics.rate_limited(refusal.report.limit.name());
            tracing::warn!(user = %user.id, organization = %user.organization_id, limit = ?refusal.report.limit, retry_after = refusal.retry_after, "billing call rate limited");
            Err(refusal_error(&refusal, refusal_problem(&refusal)))
        }
        Err(e) => {
            let outage = match e {
                StorageError::Unavailable(_) => e,
                StorageError::Failed(cause) => {
                    tracing::error!(error = %cause, "cannot check the billing rate limits");
                    StorageError::Unavailable(cause)
                }
            };
            Err(ApiError::from(outage))
        }
    }
}

/// The answer when the limits could not be checked (the database holding
/// the counters failed): 503 `database_unavailable` with `Retry-After`, as
/// any request that needs the database. A failure that is not an outage
/// is logged as an error, but answered the same: the request was not
/// handled, and a 500 would say it failed half-way.
pub fn unavailable(e: StorageError, request_id: &str) -> ApiError {
    let outage = match e {
        StorageError::Unavailable(_) => e,
        StorageError::Failed(cause) => {
            tracing::error!(%request_id, error = %cause, "cannot check the rate limits");
            StorageError::Unavailable(cause)
        }
    };
    ApiError::from(outage)
}

/// The license key a JSON body names, in its canonical form; `None` when
/// it names none or not a well-formed one.
pub fn license_key_of(body: Option<&serde_json::Value>) -> Option<LicenseKey> {
    LicenseKey::parse(body?.get("license_key")?.as_str()?).ok()
}

/// The client's address: the socket peer or, with `trusted_proxies` = N > 0,
/// the N-th address from the right of `X-Forwarded-For` (see the module
/// documentation). `None` when neither is known.
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted_proxies: usize,
) -> Option<IpAddr> {
    if trusted_proxies == 0 {
        return peer;
    }
    forwarded_client(headers, trusted_proxies).or(peer)
}

/// The client's address of a request (for the limiters and the audit log).
pub fn request_client_ip(req: &poem::Request, trusted_proxies: usize) -> Option<IpAddr> {
    let peer = req.remote_addr().as_socket_addr().map(SocketAddr::ip);
    client_ip(peer, req.headers(), trusted_proxies)
}

fn forwarded_client(headers: &HeaderMap, trusted_proxies: usize) -> Option<IpAddr> {
    let mut entries = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        entries.extend(value.to_str().ok()?.split(',').map(str::trim));
    }
    let index = entries.len().checked_sub(trusted_proxies)?;
    parse_ip(entries.get(index)?)
}

/// `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, `1.2.3.4:5678` or
/// `[2001:db8::1]:5678`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn limited_routes_are_recognised_in_any_spelling() {
        let post = &Method::POST;
        assert_eq!(
            route_of(post, "/api/v1/auth/login"),
            Some(LimitedRoute::Login)
        );
        assert_eq!(
            route_of(post, "//api/v1//auth/login/"),
            Some(LimitedRoute::Login)
        );
        assert_eq!(
            route_of(post, "/api/v1/auth/signup"),
            Some(LimitedRoute::Signup)
        );
        assert_eq!(
            route_of(post, "/api/v1/licenses/validate"),
            Some(LimitedRoute::Validate)
        );
        assert_eq!(
            route_of(post, "/api/v1/licenses/activate"),
            Some(LimitedRoute::Activate)
        );
        assert_eq!(
            route_of(post, "/api/v1/licenses/deactivate"),
            Some(LimitedRoute::Deactivate)
        );
        assert_eq!(
            route_of(&Method::GET, "/api/v1/licenses/features"),
            Some(LimitedRoute::Features)
        );
        assert_eq!(route_of(post, "/signup"), Some(LimitedRoute::Signup));
        assert_eq!(route_of(post, "/signin"), Some(LimitedRoute::Login));
        assert_eq!(
            route_of(&Method::GET, "/auth/google/callback"),
            Some(LimitedRoute::Login)
        );
        assert_eq!(
            route_of(&Method::GET, "//auth/github/start/"),
            Some(LimitedRoute::Login)
        );
        assert_eq!(route_of(&Method::GET, "/signup"), None);
        assert_eq!(route_of(post, "/signup/cancel"), None);
        assert_eq!(route_of(post, "/signup/reset"), Some(LimitedRoute::Signup));
        assert_eq!(
            route_of(post, "/api/v1/auth/password-reset"),
            Some(LimitedRoute::Signup)
        );
        assert_eq!(route_of(post, "/signup/verify"), None);
        assert_eq!(route_of(&Method::GET, "/api/v1/auth/login"), None);
        assert_eq!(route_of(post, "/api/v1/auth/logout"), None);
        assert_eq!(route_of(post, "/api/v1/licenses"), None);
        assert_eq!(route_of(&Method::GET, "/healthz"), None);
    }

    #[test]
    fn forwarded_for_is_read_only_when_proxies_are_trusted() {
        let peer = ip("10.0.0.1");
        let h = xff(&["203.0.113.9"]);
        // Not trusted: the peer, whatever the header says.
        assert_eq!(client_ip(peer, &h, 0), peer);
        assert_eq!(client_ip(None, &h, 0), None);
        // One proxy (Cloud Run): the right-most entry, which it added.
        assert_eq!(client_ip(peer, &h, 1), ip("203.0.113.9"));
        let forged = xff(&["1.1.1.1, 2.2.2.2, 203.0.113.9"]);
        assert_eq!(client_ip(peer, &forged, 1), ip("203.0.113.9"));
        // Two proxies: the second from the right.
        assert_eq!(client_ip(peer, &forged, 2), ip("2.2.2.2"));
        // Several header fields are one list.
        let split = xff(&["1.1.1.1", "203.0.113.9, 10.0.0.2"]);
        assert_eq!(client_ip(peer, &split, 1), ip("10.0.0.2"));
        assert_eq!(client_ip(peer, &split, 2), ip("203.0.113.9"));
        // Too few entries, garbage or no header: the peer.
        assert_eq!(client_ip(peer, &h, 2), peer);
        assert_eq!(client_ip(peer, &xff(&["1.1.1.1, nonsense"]), 1), peer);
        assert_eq!(client_ip(peer, &xff(&[""]), 1), peer);
        assert_eq!(client_ip(peer, &HeaderMap::new(), 1), peer);
        // Addresses with ports or brackets.
        assert_eq!(
            client_ip(peer, &xff(&["203.0.113.9:4711"]), 1),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(peer, &xff(&["[2001:db8::1]:443"]), 1),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(peer, &xff(&["[2001:db8::1]"]), 1),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(peer, &xff(&["2001:db8::1"]), 1),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn the_key_is_read_as_the_handler_reads_it() {
        let key = "CODITECT-PILOT-AAAA-BBBB-CCCC";
        // A repeated field: the one parse both share keeps the last one.
        let sneaky: serde_json::Value = serde_json::from_str(&format!(
            r#"{{"license_key":"OTHER","license_key":"{key}"}}"#
        ))
        .unwrap();
        assert_eq!(license_key_of(Some(&sneaky)).unwrap().expose(), key);
        let typed = serde_json::json!({"license_key": "  coditect-pilot-aaaa-bbbb-cccc "});
        assert_eq!(license_key_of(Some(&typed)).unwrap().expose(), key);
        assert!(license_key_of(Some(&serde_json::json!({"license_key": 7}))).is_none());
        assert!(license_key_of(None).is_none());
    }

    #[test]
    fn a_429_has_retry_after_and_the_ratelimit_headers() {
        use poem::IntoResponse;
        let refusal = Refusal {
            report: Report {
                limit: Limit::Login,
                rate: crate::config::Rate::parse("5/min").unwrap(),
                remaining: 0,
                reset: 60,
            },
            retry_after: 12,
        };
        let p = refusal_problem(&refusal);
        assert_eq!((p.status, p.code.as_str()), (429, "rate_limited"));
        assert!(p.detail.contains("5 per minute"), "{}", p.detail);
        assert!(p.detail.contains("12 seconds"), "{}", p.detail);
        let resp = refusal_error(&refusal, p).into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = |n: &str| resp.headers().get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("retry-after"), "12");
        assert_eq!(h("ratelimit-limit"), "5");
        assert_eq!(h("ratelimit-remaining"), "0");
        assert_eq!(h("ratelimit-reset"), "60");
        assert_eq!(h("ratelimit-policy"), "5;w=60");
        let one = Refusal {
            retry_after: 1,
            ..refusal.clone()
        };
        assert!(refusal_problem(&one).detail.contains("1 second."));
        let by_ip = Refusal {
            report: Report {
                limit: Limit::LicenseIp,
                ..refusal.report.clone()
            },
            ..refusal
        };
        assert!(refusal_problem(&by_ip).detail.contains("network address"));
    }

    #[test]
    fn billing_and_webhook_refusals_say_what_was_counted() {
        let refusal = |limit| Refusal {
            report: Report {
                limit,
                rate: crate::config::Rate::parse("10/min").unwrap(),
                remaining: 0,
                reset: 60,
            },
            retry_after: 6,
        };
        let p = refusal_problem(&refusal(Limit::BillingUser));
        assert_eq!((p.status, p.code.as_str()), (429, "rate_limited"));
        assert!(p.detail.contains("your account"), "{}", p.detail);
        let p = refusal_problem(&refusal(Limit::BillingOrg));
        assert!(p.detail.contains("organization"), "{}", p.detail);
        let p = refusal_problem(&refusal(Limit::WebhookRefusal));
        assert!(p.detail.contains("webhook"), "{}", p.detail);
        assert!(
            p.detail.ends_with("Try again in 6 seconds."),
            "{}",
            p.detail
        );
    }

    #[test]
    fn a_refusal_says_which_limit_and_when_to_come_back() {
        let refusal = Refusal {
            report: Report {
                limit: Limit::Validate,
                rate: crate::config::Rate::parse("3/min").unwrap(),
                remaining: 0,
                reset: 60,
            },
            retry_after: 20,
        };
        let p = refusal_problem(&refusal);
        assert_eq!((p.status, p.code.as_str()), (429, "rate_limited"));
        assert!(p.detail.contains("license key"), "{}", p.detail);
        assert!(
            p.detail.ends_with("Try again in 20 seconds."),
            "{}",
            p.detail
        );
    }
}
