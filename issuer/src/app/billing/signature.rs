//! The `Stripe-Signature` check of webhook deliveries: any `v1` signature
//! that matches is enough (Stripe signs with two secrets while a rolled
//! one is still valid), each compared in constant time, within a 5-minute
//! tolerance.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::webhook::WebhookError;

/// How far a signature's time may be from the server's clock, in seconds
/// (Stripe's libraries' default).
pub const SIGNATURE_TOLERANCE_SECS: u64 = 300;

/// Checks a `Stripe-Signature` header (`t=…,v1=…[,v1=…][,v0=…]`) against
/// `body` and `secret` at `now`: good when any `v1` is the hex
/// HMAC-SHA256 of `"{t}.{body}"` keyed with the whole secret, and `t` is
/// within [`SIGNATURE_TOLERANCE_SECS`] of `now`. The MAC is computed once;
/// each `v1` is compared with it in constant time (`verify_slice`), so a
/// header with many signatures costs a few hash blocks each, not the body
/// again. A time too far off is reported only for a good signature.
pub fn check_signature(
    header: &str,
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<(), WebhookError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(WebhookError::BadSignature)?;
        match key {
            // One time only: Stripe sends one.
            "t" if timestamp.is_none() => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| WebhookError::BadSignature)?,
                );
            }
            "t" => return Err(WebhookError::BadSignature),
            "v1" => candidates.push(value),
            _ => {}
        }
    }
    let t = timestamp.ok_or(WebhookError::BadSignature)?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .map_err(|_| WebhookError::NotConfigured)?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = candidates.iter().any(|hex_signature| {
        hex::decode(hex_signature).is_ok_and(|bytes| mac.clone().verify_slice(&bytes).is_ok())
    });
    if !matched {
        return Err(WebhookError::BadSignature);
    }
    if now.abs_diff(t) > SIGNATURE_TOLERANCE_SECS {
        return Err(WebhookError::Stale(t));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_current";
    const T: i64 = 1_800_000_000;

    fn v1(body: &[u8], secret: &str, t: i64) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn any_v1_signature_that_matches_is_enough_in_either_order() {
        let body = br#"{"id":"evt_1"}"#;
        let good = v1(body, SECRET, T);
        let other = v1(body, "whsec_rolled", T);
        let check = |header: String| check_signature(&header, body, SECRET, T + 10);
        assert!(check(format!("t={T},v1={good}")).is_ok());
        assert!(check(format!("t={T},v1={good},v1={other}")).is_ok());
        assert!(check(format!("t={T},v1={other},v1={good}")).is_ok());
        assert!(check(format!("t={T},v1={other},v1={good},v0={other}")).is_ok());
        // A thousand wrong ones first: still found, the body hashed once.
        let many = format!("t={T}{}", format!(",v1={other}").repeat(1000));
        assert!(check(format!("{many},v1={good}")).is_ok());
        for bad in [
            format!("t={T},v1={other}"),
            format!("t={T},v1={other},v1={other}"),
            format!("t={T},v0={good}"),
            format!("t={T}"),
            format!("v1={good}"),
            format!("t={T},t={T},v1={good}"),
            format!("t=abc,v1={good}"),
            format!("t={T},v1={}", &good[..63]),
            format!("t={T},v1=zz{}", &good[2..]),
            format!("t={T},v1={good}00"),
            format!("t={T};v1={good}"),
            String::new(),
            "garbage".to_owned(),
        ] {
            assert!(
                matches!(check(bad.clone()), Err(WebhookError::BadSignature)),
                "{bad}"
            );
        }
        // Another body, another time: the signature does not carry over.
        let h = format!("t={T},v1={good}");
        assert!(check_signature(&h, br#"{"id":"evt_2"}"#, SECRET, T).is_err());
        let h = format!("t={},v1={good}", T + 1);
        assert!(check_signature(&h, body, SECRET, T).is_err());
    }

    #[test]
    fn a_good_signature_outside_five_minutes_is_stale_and_a_bad_one_is_bad() {
        let body = b"{}";
        let header = |t: i64| format!("t={t},v1={}", v1(body, SECRET, t));
        assert!(check_signature(&header(T), body, SECRET, T + 300).is_ok());
        assert!(check_signature(&header(T), body, SECRET, T - 300).is_ok());
        assert!(matches!(
            check_signature(&header(T), body, SECRET, T + 301),
            Err(WebhookError::Stale(T))
        ));
        assert!(matches!(
            check_signature(&header(T), body, SECRET, T - 301),
            Err(WebhookError::Stale(T))
        ));
        let wrong = format!("t={T},v1={}", v1(body, "whsec_other", T));
        assert!(matches!(
            check_signature(&wrong, body, SECRET, T + 3600),
            Err(WebhookError::BadSignature)
        ));
        // Extreme times neither overflow nor pass.
        let far = format!("t={},v1={}", i64::MIN, v1(body, SECRET, i64::MIN));
        assert!(matches!(
            check_signature(&far, body, SECRET, i64::MAX),
            Err(WebhookError::Stale(_))
        ));
    }
}
