//! River's operators: unary and binary operators on values with Alloy's strict typing (no
//! implicit conversions), Go's wrapping integer arithmetic and number kinds, and value equality.

use crate::ast::{BinaryOp, UnaryOp};
use crate::value::{Number, Value};

/// Applies a unary operator. The error message is about the operand.
pub fn unary(op: UnaryOp, v: Value) -> Result<Value, String> {
    match (op, v) {
        (UnaryOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
        (UnaryOp::Not, other) => Err(format!("should be bool, got {}", other.type_name())),
        (UnaryOp::Neg, Value::Number(n)) => Ok(Value::Number(match n {
            Number::Int(i) => Number::Int(i.wrapping_neg()),
            // The reference always negates unsigned values as signed.
            Number::Uint(u) => Number::Int((u as i64).wrapping_neg()),
            Number::Float(f) => Number::Float(-f),
        })),
        (UnaryOp::Neg, other) => Err(format!("should be number, got {}", other.type_name())),
    }
}

/// Which operand of a binary operator an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uint,
    Int,
    Float,
}

fn kind(n: Number) -> Kind {
    match n {
        Number::Uint(_) => Kind::Uint,
        Number::Int(_) => Kind::Int,
        Number::Float(_) => Kind::Float,
    }
}

/// The common kind two numbers are computed in: float beats int beats uint.
fn fit(a: Number, b: Number) -> Kind {
    match (kind(a), kind(b)) {
        (Kind::Float, _) | (_, Kind::Float) => Kind::Float,
        (Kind::Int, _) | (_, Kind::Int) => Kind::Int,
        _ => Kind::Uint,
    }
}

fn as_i64(n: Number) -> i64 {
    match n {
        Number::Int(i) => i,
        Number::Uint(u) => u as i64,
        Number::Float(f) => f as i64,
    }
}

fn as_u64(n: Number) -> u64 {
    match n {
        Number::Int(i) => i as u64,
        Number::Uint(u) => u,
        Number::Float(f) => f as u64,
    }
}

fn allowed_types(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Or | BinaryOp::And => "[bool]",
        BinaryOp::Add => "[number string secret]",
        BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Pow => "[number]",
        _ => "[number string]",
    }
}

fn acceptable(op: BinaryOp, v: &Value) -> bool {
    match op {
        BinaryOp::Or | BinaryOp::And => matches!(v, Value::Bool(_)),
        BinaryOp::Add => matches!(v, Value::Number(_) | Value::String(_) | Value::Secret(_)),
        BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Pow => {
            matches!(v, Value::Number(_))
        }
        _ => matches!(v, Value::Number(_) | Value::String(_)),
    }
}

/// Applies a binary operator; errors say which operand is at fault.
pub fn binary(op: BinaryOp, l: Value, r: Value) -> Result<Value, (Side, String)> {
    match op {
        BinaryOp::Eq => return Ok(Value::Bool(values_equal(&l, &r))),
        BinaryOp::NotEq => return Ok(Value::Bool(!values_equal(&l, &r))),
        _ => {}
    }
    // Secrets mix with strings: the result of `+` stays secret.
    let (l, r) = match (l, r) {
        (Value::Secret(a), Value::String(b)) => (Value::Secret(a), Value::Secret(b)),
        (Value::String(a), Value::Secret(b)) => (Value::Secret(a), Value::Secret(b)),
        other => other,
    };
    for (side, v) in [(Side::Left, &l), (Side::Right, &r)] {
        if !acceptable(op, v) {
            return Err((
                side,
                format!(
                    "should be one of {} for binop {}, got {}",
                    allowed_types(op),
                    op.as_str(),
                    v.type_name()
                ),
            ));
        }
    }
    if l.type_name() != r.type_name() {
        return Err((
            Side::Right,
            format!("should be {}, got {}", l.type_name(), r.type_name()),
        ));
    }
    match (l, r) {
        (Value::Bool(a), Value::Bool(b)) => Ok(Value::Bool(match op {
            BinaryOp::Or => a || b,
            _ => a && b,
        })),
        (Value::String(a), Value::String(b)) => match op {
            BinaryOp::Add => {
                let mut s = a;
                s.push_str(&b);
                Ok(Value::String(s))
            }
            _ => Ok(Value::Bool(compare_ord(op, a.cmp(&b)))),
        },
        (Value::Secret(a), Value::Secret(b)) => {
            let mut s = a;
            s.push_str(&b);
            Ok(Value::Secret(s))
        }
        (Value::Number(a), Value::Number(b)) => number_binary(op, a, b),
        _ => Err((Side::Right, "unsupported operand types".to_string())),
    }
}

fn compare_ord(op: BinaryOp, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        BinaryOp::Lt => ord == Less,
        BinaryOp::LtEq => ord != Greater,
        BinaryOp::Gt => ord == Greater,
        _ => ord != Less,
    }
}

fn compare_f64(op: BinaryOp, a: f64, b: f64) -> bool {
    match op {
        BinaryOp::Lt => a < b,
        BinaryOp::LtEq => a <= b,
        BinaryOp::Gt => a > b,
        _ => a >= b,
    }
}

fn is_zero(n: Number) -> bool {
    match n {
        Number::Int(i) => i == 0,
        Number::Uint(u) => u == 0,
        Number::Float(f) => f == 0.0,
    }
}

fn number_binary(op: BinaryOp, a: Number, b: Number) -> Result<Value, (Side, String)> {
    let k = fit(a, b);
    if matches!(op, BinaryOp::Div | BinaryOp::Mod) && is_zero(b) {
        return Err((Side::Right, "divide by zero error".to_string()));
    }
    let num = |n: Number| Ok(Value::Number(n));
    match op {
        BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq => {
            let res = match k {
                Kind::Uint => compare_ord(op, as_u64(a).cmp(&as_u64(b))),
                Kind::Int => compare_ord(op, as_i64(a).cmp(&as_i64(b))),
                Kind::Float => compare_f64(op, a.as_f64(), b.as_f64()),
            };
            Ok(Value::Bool(res))
        }
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => match k {
            Kind::Uint => {
                let (x, y) = (as_u64(a), as_u64(b));
                num(Number::Uint(match op {
                    BinaryOp::Add => x.wrapping_add(y),
                    BinaryOp::Sub => x.wrapping_sub(y),
                    BinaryOp::Mul => x.wrapping_mul(y),
                    BinaryOp::Div => x / y,
                    _ => x % y,
                }))
            }
            Kind::Int => {
                let (x, y) = (as_i64(a), as_i64(b));
                num(Number::Int(match op {
                    BinaryOp::Add => x.wrapping_add(y),
                    BinaryOp::Sub => x.wrapping_sub(y),
                    BinaryOp::Mul => x.wrapping_mul(y),
                    BinaryOp::Div => x.wrapping_div(y),
                    _ => x.wrapping_rem(y),
                }))
            }
            Kind::Float => {
                let (x, y) = (a.as_f64(), b.as_f64());
                num(Number::Float(match op {
                    BinaryOp::Add => x + y,
                    BinaryOp::Sub => x - y,
                    BinaryOp::Mul => x * y,
                    BinaryOp::Div => x / y,
                    _ => x % y,
                }))
            }
        },
        BinaryOp::Pow => match k {
            Kind::Uint => num(Number::Uint(int_pow_u(as_u64(a), as_u64(b)))),
            Kind::Int => num(Number::Int(int_pow_i(as_i64(a), as_i64(b)))),
            Kind::Float => num(Number::Float(a.as_f64().powf(b.as_f64()))),
        },
        _ => Err((Side::Right, "unsupported operator".to_string())),
    }
}

/// Integer power with wrapping, matching the reference: `n^0 == 1`, a negative exponent leaves
/// the base unchanged.
fn int_pow_i(n: i64, m: i64) -> i64 {
    if m == 0 || n == 1 {
        return 1;
    }
    if n == 0 && m > 0 {
        return 0;
    }
    if m < 0 {
        return n;
    }
    let mut base = n;
    let mut exp = m as u64;
    let mut acc: i64 = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        exp >>= 1;
    }
    acc
}

fn int_pow_u(n: u64, m: u64) -> u64 {
    if m == 0 || n == 1 {
        return 1;
    }
    let mut base = n;
    let mut exp = m;
    let mut acc: u64 = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        exp >>= 1;
    }
    acc
}

/// River equality: values of different types are never equal, `3 == 3.0`, functions are never
/// equal, capsules are equal when they hold the same object.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Number(x), Value::Number(y)) => match fit(*x, *y) {
            Kind::Uint => as_u64(*x) == as_u64(*y),
            Kind::Int => as_i64(*x) == as_i64(*y),
            Kind::Float => x.as_f64() == y.as_f64(),
        },
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Secret(x), Value::Secret(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        (Value::Capsule(x), Value::Capsule(y)) => std::sync::Arc::ptr_eq(&x.inner, &y.inner),
        _ => false,
    }
}
