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
