//! Small shared helpers: merging JSON objects, money, HTML escaping, the card check.

use serde_json::{Map, Value};

/// One JSON object from several (`json!` objects this large exceed the
/// macro's recursion limit).
pub(super) fn merge_objects<const N: usize>(parts: [Value; N]) -> Value {
    let mut merged = Map::new();
    for part in parts {
        if let Value::Object(map) = part {
            merged.extend(map);
        }
    }
    Value::Object(merged)
}

pub(super) fn luhn_valid(digits: &str) -> bool {
    if digits.len() < 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

pub(super) fn money(cents: i64, currency: &str) -> String {
    let symbol = match currency {
        "usd" => "$",
        "eur" => "€",
        "gbp" => "£",
        _ => "",
    };
    format!("{symbol}{}.{:02}", cents / 100, (cents % 100).abs())
}

pub(super) fn html_escape(text: &str) -> String {
    html_escape::encode_quoted_attribute(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_stripe::{CARD_DECLINED, CARD_SUCCEEDS};

    #[test]
    fn luhn() {
        assert!(luhn_valid(CARD_SUCCEEDS));
        assert!(luhn_valid(CARD_DECLINED));
        assert!(!luhn_valid("4242424242424241"));
    }
}
