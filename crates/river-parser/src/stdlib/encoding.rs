//! The `encoding` namespace (and `json_decode`, `json_path`, `yaml_decode`, `base64_decode` at
//! top level): JSON and YAML decoding into River values, JSONPath queries and base64.

use super::{strs, Res};
use crate::value::{Number, Value};
use base64::Engine as _;
use std::collections::BTreeMap;

/// Converts a JSON value to a River value: integers stay integers, other numbers are floats.
pub fn from_json(j: serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::Number(if let Some(i) = n.as_i64() {
            Number::Int(i)
        } else if let Some(u) = n.as_u64() {
            Number::Uint(u)
        } else {
            Number::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(from_json).collect()),
        serde_json::Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, from_json(v))).collect())
        }
    }
}

pub(super) fn json_decode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    let j: serde_json::Value = serde_json::from_str(&a[0]).map_err(|e| e.to_string())?;
    Ok(from_json(j))
}

/// Applies a JSONPath query to a JSON document; always returns an array of matches.
pub(super) fn json_path(args: &[Value]) -> Res {
    let a = strs(args, 2)?;
    let doc: serde_json::Value = serde_json::from_str(&a[0]).map_err(|e| e.to_string())?;
    let path = serde_json_path::JsonPath::parse(&a[1]).map_err(|e| e.to_string())?;
    let found: Vec<Value> = path
        .query(&doc)
        .all()
        .into_iter()
        .map(|v| from_json(v.clone()))
        .collect();
    Ok(Value::Array(found))
}

pub(super) fn from_yaml(y: serde_yaml::Value) -> Result<Value, String> {
    Ok(match y {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => Value::Number(if let Some(i) = n.as_i64() {
            Number::Int(i)
        } else if let Some(u) = n.as_u64() {
            Number::Uint(u)
        } else {
            Number::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(s) => {
            Value::Array(s.into_iter().map(from_yaml).collect::<Result<_, _>>()?)
        }
        serde_yaml::Value::Mapping(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let key = match k {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    serde_yaml::Value::Null => "null".to_string(),
                    _ => return Err("yaml object keys must be scalars".to_string()),
                };
                out.insert(key, from_yaml(v)?);
            }
            Value::Object(out)
        }
        serde_yaml::Value::Tagged(t) => from_yaml(t.value)?,
    })
}

pub(super) fn yaml_decode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    let y: serde_yaml::Value = serde_yaml::from_str(&a[0]).map_err(|e| e.to_string())?;
    from_yaml(y)
}

pub(super) fn base64_decode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(a[0].as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

pub(super) fn base64_url_decode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(a[0].as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

pub(super) fn base64_encode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(a[0].as_bytes()),
    ))
}

pub(super) fn base64_url_encode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    Ok(Value::String(
        base64::engine::general_purpose::URL_SAFE.encode(a[0].as_bytes()),
    ))
}

/// `encoding.url_encode`: Go's `url.QueryEscape` (RFC 3986 unreserved bytes kept, space as `+`,
/// everything else `%XX` with upper-case hex).
pub(super) fn url_encode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    let mut out = String::with_capacity(a[0].len());
    for b in a[0].bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    Ok(Value::String(out))
}

/// `encoding.url_decode`: Go's `url.QueryUnescape` (`+` is a space; a `%` must be followed by
/// two hex digits).
pub(super) fn url_decode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    let bytes = a[0].as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let h = std::str::from_utf8(h).ok()?;
                    u8::from_str_radix(h, 16).ok().filter(|_| h.len() == 2)
                });
                let Some(v) = hex else {
                    let end = (i + 3).min(bytes.len());
                    let bad = String::from_utf8_lossy(&bytes[i..end]);
                    return Err(format!("invalid URL escape {bad:?}"));
                };
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Ok(Value::String(String::from_utf8_lossy(&out).into_owned()))
}

/// `encoding.to_json`: encodes an object as compact JSON with sorted keys, escaping `<`, `>`, `&`,
/// U+2028 and U+2029 like Go's `json.Marshal`. Secrets, capsules and functions have no JSON form
/// here (a secret would leave the config as plain text): they are errors.
pub(super) fn to_json(args: &[Value]) -> Res {
    super::arity(args, 1)?;
    if !matches!(args[0], Value::Object(_)) {
        return Err(crate::eval::arg_error(
            0,
            format!("should be object, got {}", args[0].type_name()),
        ));
    }
    let json = value_json(&args[0])?;
    let text = serde_json::to_string(&json).map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(Value::String(out))
}

fn value_json(v: &Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::String(s) => J::String(s.clone()),
        Value::Number(Number::Int(i)) => J::from(*i),
        Value::Number(Number::Uint(u)) => J::from(*u),
        Value::Number(Number::Float(f)) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!("json: unsupported value: {f}"))?,
        Value::Array(items) => J::Array(items.iter().map(value_json).collect::<Result<_, _>>()?),
        Value::Object(map) => J::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), value_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Secret(_) => {
            return Err(
                "cannot encode a secret as JSON (convert.nonsensitive turns it into a string)"
                    .to_string(),
            )
        }
        other => return Err(format!("cannot encode a {} as JSON", other.type_name())),
    })
}
