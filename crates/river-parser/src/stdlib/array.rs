//! The `array` namespace: `concat` (also top level), `combine_maps` and `group_by`.

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

/// `array.combine_maps(left, right, keys[, passthrough])`: every pair of objects from `left` and
/// `right` that agree on all `keys` is merged (right wins). With `passthrough = true`, an object
/// of `left` that matched nothing is kept unchanged (once; Alloy's documentation describes that,
/// its code appends it once per non-matching object of `right`).
pub(super) fn combine_maps(args: &[Value]) -> Res {
    if args.len() != 3 && args.len() != 4 {
        return Err(format!(
            "combine_maps: expected 3 or 4 arguments, got {}",
            args.len()
        ));
    }
    let left = objects(args, 0)?;
    let right = objects(args, 1)?;
    let keys: Vec<&str> = match &args[2] {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.as_str()),
                other => Err(arg_error(
                    2,
                    format!(
                        "should be array of strings, got {} element",
                        other.type_name()
                    ),
                )),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(arg_error(
                2,
                format!("should be array, got {}", other.type_name()),
            ))
        }
    };
    if keys.is_empty() {
        return Err(arg_error(
            2,
            "combine_maps: merge conditions must not be empty",
        ));
    }
    let passthrough = match args.get(3) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(arg_error(
                3,
                format!("should be bool, got {}", other.type_name()),
            ))
        }
    };
    let mut out = Vec::new();
    for l in &left {
        let mut matched = false;
        for r in &right {
            let joins = keys.iter().all(|k| match (l.get(*k), r.get(*k)) {
                (Some(a), Some(b)) => crate::eval::values_equal(a, b),
                _ => false,
            });
            if joins {
                matched = true;
                let mut merged = (*l).clone();
                merged.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
                out.push(Value::Object(merged));
            }
        }
        if passthrough && !matched {
            out.push(Value::Object((*l).clone()));
        }
    }
    Ok(Value::Array(out))
}

/// The objects of array argument `i`.
fn objects(args: &[Value], i: usize) -> Result<Vec<&BTreeMap<String, Value>>, String> {
    match &args[i] {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(m) => Ok(m),
                other => Err(arg_error(
                    i,
                    format!(
                        "should be array of objects, got {} element",
                        other.type_name()
                    ),
                )),
            })
            .collect(),
        other => Err(arg_error(
            i,
            format!("should be array, got {}", other.type_name()),
        )),
    }
}

/// `array.group_by(items, key, drop_missing)`: one `{KEY = value, items = [...]}` object per
/// distinct string value of `key`, in order of first appearance. Objects without `key` go to the
/// group of `""`, or are dropped when `drop_missing` is true.
pub(super) fn group_by(args: &[Value]) -> Res {
    if args.len() != 3 {
        return Err(format!(
            "group_by: expected 3 arguments, got {}",
            args.len()
        ));
    }
    let items = objects(args, 0)?;
    let Value::String(key) = &args[1] else {
        return Err(arg_error(
            1,
            format!("should be string, got {}", args[1].type_name()),
        ));
    };
    let Value::Bool(drop_missing) = args[2] else {
        return Err(arg_error(
            2,
            format!("should be bool, got {}", args[2].type_name()),
        ));
    };
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for (n, item) in items.into_iter().enumerate() {
        let group = match item.get(key) {
            None if drop_missing => continue,
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(arg_error(
                    0,
                    format!(
                        "element {n}: {key:?} should be string, got {}",
                        other.type_name()
                    ),
                ))
            }
        };
        let item = Value::Object(item.clone());
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, members)) => members.push(item),
            None => groups.push((group, vec![item])),
        }
    }
    Ok(Value::Array(
        groups
            .into_iter()
            .map(|(group, members)| {
                let mut obj = BTreeMap::new();
                obj.insert(key.clone(), Value::String(group));
                obj.insert("items".to_string(), Value::Array(members));
                Value::Object(obj)
            })
            .collect(),
    ))
}
