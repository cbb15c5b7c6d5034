//! Stripe's form encoding: URL-encoded pairs, and bracket keys nested into JSON.

use serde_json::{Map, Value};

/// Decodes `a=1&b%5Bc%5D=x+y` into pairs, in order.
pub(super) fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escaped = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, escaped) {
            (_, Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns bracket keys into nested objects: `line_items[0][price]=p` →
/// `{"line_items": {"0": {"price": "p"}}}`; `expand[]=a` appends. Lists stay
/// objects keyed by index (read them with [`list_of`]).
pub(super) fn nest(pairs: &[(String, String)]) -> Value {
    let mut root = Value::Object(Map::new());
    for (key, value) in pairs {
        let segments = key_segments(key);
        let mut node = &mut root;
        for (i, segment) in segments.iter().enumerate() {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let map = node.as_object_mut().expect("just made an object");
            let segment = if segment.is_empty() {
                map.len().to_string()
            } else {
                segment.clone()
            };
            if i + 1 == segments.len() {
                map.insert(segment, Value::String(value.clone()));
                break;
            }
            node = map
                .entry(segment)
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

/// `a[b][0]` → `["a", "b", "0"]`; a key that is not well formed is one
/// segment.
pub(super) fn key_segments(key: &str) -> Vec<String> {
    let Some(open) = key.find('[') else {
        return vec![key.to_owned()];
    };
    let mut segments = vec![key[..open].to_owned()];
    let mut rest = &key[open..];
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix('[') else {
            return vec![key.to_owned()];
        };
        let Some(close) = inner.find(']') else {
            return vec![key.to_owned()];
        };
        segments.push(inner[..close].to_owned());
        rest = &inner[close + 1..];
    }
    segments
}

/// The elements of a nested list (`{"0": …, "1": …}`), by index; a single
/// string counts as a list of one.
pub(super) fn list_of(value: &Value) -> Vec<&Value> {
    match value {
        Value::Object(map) => {
            let mut items: Vec<(usize, &Value)> = map
                .iter()
                .map(|(k, v)| (k.parse::<usize>().unwrap_or(usize::MAX), v))
                .collect();
            items.sort_by_key(|(i, _)| *i);
            items.into_iter().map(|(_, v)| v).collect()
        }
        Value::Array(items) => items.iter().collect(),
        Value::String(_) => vec![value],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bracket_keys_nest() {
        let form = nest(&parse_pairs(
            "line_items[0][price]=p1&line_items[0][quantity]=1&metadata[org]=a%20b&expand[]=x&expand[]=y&mode=subscription",
        ));
        assert_eq!(form["line_items"]["0"]["price"], "p1");
        assert_eq!(form["metadata"]["org"], "a b");
        assert_eq!(list_of(&form["expand"]), vec![&json!("x"), &json!("y")]);
        assert_eq!(form["mode"], "subscription");
        assert_eq!(percent_decode("a%5Bb%5D+c%zz%4"), "a[b] c%zz%4");
    }
}
