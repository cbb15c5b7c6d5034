//! Metrics settings: where `/metrics` is served (`METRICS_BIND`, a listener
//! of its own, or the main listener behind `METRICS_TOKEN`), and the date
//! the signing key is due to be replaced (`SIGNING_KEY_ROTATE_BY`), which
//! the metrics publish for the alert that warns before it.

use std::net::SocketAddr;

use zeroize::Zeroizing;

use super::{ConfigError, Env, invalid, secret};

/// Shortest `METRICS_TOKEN` accepted: a guessable token would make the
/// metrics public.
pub const MIN_METRICS_TOKEN_BYTES: usize = 32;

/// Where and how `/metrics` is served. Neither set: not at all.
#[derive(Default)]
pub struct MetricsConfig {
    /// `METRICS_BIND`: a listener of its own that serves only `/metrics`
    /// (e.g. `127.0.0.1:9464` for a collector beside the issuer).
    pub bind: Option<SocketAddr>,
    /// `METRICS_TOKEN` (or `METRICS_TOKEN_FILE`): `/metrics` on the main
    /// listener, for `Authorization: Bearer <token>` only.
    pub token: Option<Zeroizing<String>>,
    /// `SIGNING_KEY_ROTATE_BY`: when the signing key must have been
    /// replaced, Unix time.
    pub signing_key_rotate_by: Option<i64>,
}

impl MetricsConfig {
    /// Whether `/metrics` is served anywhere.
    pub fn enabled(&self) -> bool {
        self.bind.is_some() || self.token.is_some()
    }
}

impl std::fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsConfig")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("signing_key_rotate_by", &self.signing_key_rotate_by)
            .finish()
    }
}

pub(super) fn metrics(env: &dyn Env) -> Result<MetricsConfig, ConfigError> {
    let bind = match env.get("METRICS_BIND") {
        None => None,
        Some(v) => Some(v.trim().parse::<SocketAddr>().map_err(|_| {
            invalid(
                "METRICS_BIND",
                "must be an address and port such as 127.0.0.1:9464",
            )
        })?),
    };
    let token = secret(env, "METRICS_TOKEN")?;
    if let Some(t) = &token
        && (t.len() < MIN_METRICS_TOKEN_BYTES || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(ConfigError::Invalid {
            var: "METRICS_TOKEN",
            reason: format!(
                "must be at least {MIN_METRICS_TOKEN_BYTES} printable characters without spaces (e.g. `openssl rand -hex 32`)"
            ),
        });
    }
    let signing_key_rotate_by = match env.get("SIGNING_KEY_ROTATE_BY") {
        None => None,
        Some(v) => Some(parse_date(v.trim()).ok_or_else(|| {
            invalid(
                "SIGNING_KEY_ROTATE_BY",
                "must be a date (2027-03-31) or an RFC 3339 time",
            )
        })?),
    };
    Ok(MetricsConfig {
        bind,
        token,
        signing_key_rotate_by,
    })
}

/// A date (midnight UTC) or an RFC 3339 time, as Unix time.
fn parse_date(text: &str) -> Option<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Some(t.unix_timestamp());
    }
    let date = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_off_unless_asked_for() {
        let none: [(&str, &str); 0] = [];
        let m = metrics(&none).unwrap();
        assert!(!m.enabled());
        let m = metrics(&[
            ("METRICS_BIND", "127.0.0.1:9464"),
            ("SIGNING_KEY_ROTATE_BY", "2027-03-31"),
        ])
        .unwrap();
        assert_eq!(m.bind, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(m.signing_key_rotate_by, Some(1_806_451_200));
        assert!(m.enabled());
    }

    #[test]
    fn weak_tokens_and_bad_values_are_refused_without_echoing_them() {
        for (var, value) in [
            ("METRICS_TOKEN", "short-secret"),
            ("METRICS_TOKEN", "a token with spaces that is long enough"),
            ("METRICS_BIND", "everywhere"),
            ("SIGNING_KEY_ROTATE_BY", "soon"),
        ] {
            let err = metrics(&[(var, value)]).unwrap_err().to_string();
            assert!(err.starts_with(var), "{err}");
            assert!(!err.contains(value), "{err}");
        }
        let long = "x".repeat(32);
        let ok = metrics(&[("METRICS_TOKEN", long.as_str())]).unwrap();
        assert!(ok.enabled());
    }
}
