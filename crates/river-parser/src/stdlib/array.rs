//! The `array` namespace: `concat` (also top level) and `combine_maps`.

use super::Res;
use crate::eval::arg_error;
use crate::value::Value;
use std::collections::BTreeMap;

pub(super) fn concat(args: &[Value]) -> Res {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        match a {
            Value::Array(items) => out.extend(items.iter().cloned()),
            other => {
                return Err(arg_error(
                    i,
                    format!("should be array, got {}", other.type_name()),
                ))
            }
        }
    }
    Ok(Value::Array(out))
}

/// `array.combine_maps(left, right, keys)`: every pair of objects from `left` and `right` that
/// agree on all `keys` is merged (right wins).
pub(super) fn combine_maps(args: &[Value]) -> Res {
    if args.len() != 3 {
        return Err(format!(
            "combine_maps: expected 3 arguments, got {}",
            args.len()
        ));
    }
    let objects = |v: &Value| -> Result<Vec<BTreeMap<String, Value>>, String> {
        match v {
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::Object(m) => Ok(m.clone()),
                    other => Err(format!("should be object, got {}", other.type_name())),
                })
                .collect(),
            other => Err(format!("should be array, got {}", other.type_name())),
        }
    };
    let left = objects(&args[0])?;
    let right = objects(&args[1])?;
    let keys: Vec<String> = match &args[2] {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("should be string, got {}", other.type_name())),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("should be array, got {}", other.type_name())),
    };
    if keys.is_empty() {
        return Err("combine_maps: merge conditions must not be empty".to_string());
    }
    let mut out = Vec::new();
    for l in &left {
        for r in &right {
            let joins = keys.iter().all(|k| match (l.get(k), r.get(k)) {
                (Some(a), Some(b)) => crate::eval::values_equal(a, b),
                _ => false,
            });
            if joins {
                let mut merged = l.clone();
                merged.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
                out.push(Value::Object(merged));
            }
        }
    }
    Ok(Value::Array(out))
}
