//! The `string` namespace (and its Agent Flow top-level names): `format`, `join`, `split`,
//! `replace`, case conversion and trimming.

use super::gofmt::go_sprintf;
use super::{arity, str_arg, strs, Res};
use crate::eval::arg_error;
use crate::value::Value;

pub(super) fn format(args: &[Value]) -> Res {
    if args.is_empty() {
        return Err("expected at least 1 args, got 0".to_string());
    }
    let fmt = str_arg(args, 0)?;
    Ok(Value::String(go_sprintf(&fmt, &args[1..])))
}

pub(super) fn join(args: &[Value]) -> Res {
    arity(args, 2)?;
    let Value::Array(items) = &args[0] else {
        return Err(arg_error(
            0,
            format!("should be array, got {}", args[0].type_name()),
        ));
    };
    let sep = str_arg(args, 1)?;
    let parts: Vec<String> = items
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(crate::decode::number_to_string(*n)),
            other => Err(arg_error(
                0,
                format!(
                    "should be array of strings, got {} element",
                    other.type_name()
                ),
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(Value::String(parts.join(&sep)))
}

pub(super) fn split(args: &[Value]) -> Res {
    let a = strs(args, 2)?;
    let (s, sep) = (&a[0], &a[1]);
    let parts: Vec<Value> = if sep.is_empty() {
        // Go splits after each UTF-8 sequence.
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep.as_str())
            .map(|p| Value::String(p.to_string()))
            .collect()
    };
    Ok(Value::Array(parts))
}

pub(super) fn replace(args: &[Value]) -> Res {
    let a = strs(args, 3)?;
    if a[1].is_empty() {
        // Go inserts the replacement at every boundary.
        let mut out = a[2].clone();
        for c in a[0].chars() {
            out.push(c);
            out.push_str(&a[2]);
        }
        return Ok(Value::String(out));
    }
    Ok(Value::String(a[0].replace(&a[1], &a[2])))
}

pub(super) fn to_lower(args: &[Value]) -> Res {
    Ok(Value::String(strs(args, 1)?[0].to_lowercase()))
}

pub(super) fn to_upper(args: &[Value]) -> Res {
    Ok(Value::String(strs(args, 1)?[0].to_uppercase()))
}

pub(super) fn trim(args: &[Value]) -> Res {
    let a = strs(args, 2)?;
    let cut: Vec<char> = a[1].chars().collect();
    Ok(Value::String(
        a[0].trim_matches(|c| cut.contains(&c)).to_string(),
    ))
}

pub(super) fn trim_prefix(args: &[Value]) -> Res {
    let a = strs(args, 2)?;
    Ok(Value::String(
        a[0].strip_prefix(a[1].as_str())
            .unwrap_or(&a[0])
            .to_string(),
    ))
}

pub(super) fn trim_suffix(args: &[Value]) -> Res {
    let a = strs(args, 2)?;
    Ok(Value::String(
        a[0].strip_suffix(a[1].as_str())
            .unwrap_or(&a[0])
            .to_string(),
    ))
}

pub(super) fn trim_space(args: &[Value]) -> Res {
    Ok(Value::String(strs(args, 1)?[0].trim().to_string()))
}
