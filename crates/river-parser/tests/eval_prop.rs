//! Property tests of evaluation and conversions: integer arithmetic wraps like Go's int64,
//! comparisons agree with Rust's, string concatenation and `format("%d")` agree with Rust
//! formatting, Go duration text round-trips, and decoding what `to_value` produced gives the
//! original back.

use proptest::prelude::*;
use river_parser::decode::{decode_value, format_go_duration, parse_go_duration, to_value};
use river_parser::eval::{eval_expr, Scope};
use river_parser::{parse_expr, Number, Value};
use std::collections::BTreeMap;

fn eval(src: &str) -> Value {
    let expr = parse_expr(src).unwrap_or_else(|e| panic!("{src:?} parses: {e}"));
    eval_expr(&expr, &Scope::new()).unwrap_or_else(|e| panic!("{src:?} evaluates: {e}"))
}

/// A River literal for an int (negative numbers are a unary minus applied to a literal).
fn lit(i: i64) -> String {
    if i < 0 {
        // `-(9223372036854775808)` would overflow the literal; spell i64::MIN as an expression.
        if i == i64::MIN {
            "(-9223372036854775807 - 1)".to_string()
        } else {
            format!("(-{})", i.unsigned_abs())
        }
    } else {
        i.to_string()
    }
}

proptest! {
    #[test]
    fn int_arithmetic_wraps_like_go(a in any::<i64>(), b in any::<i64>()) {
        let (la, lb) = (lit(a), lit(b));
        prop_assert_eq!(eval(&format!("{la} + {lb}")), Value::Number(Number::Int(a.wrapping_add(b))));
        prop_assert_eq!(eval(&format!("{la} - {lb}")), Value::Number(Number::Int(a.wrapping_sub(b))));
        prop_assert_eq!(eval(&format!("{la} * {lb}")), Value::Number(Number::Int(a.wrapping_mul(b))));
        if b != 0 {
            prop_assert_eq!(eval(&format!("{la} / {lb}")), Value::Number(Number::Int(a.wrapping_div(b))));
            prop_assert_eq!(eval(&format!("{la} % {lb}")), Value::Number(Number::Int(a.wrapping_rem(b))));
        }
        prop_assert_eq!(eval(&format!("{la} < {lb}")), Value::Bool(a < b));
        prop_assert_eq!(eval(&format!("{la} >= {lb}")), Value::Bool(a >= b));
        prop_assert_eq!(eval(&format!("{la} == {lb}")), Value::Bool(a == b));
    }

    #[test]
    fn strings_concat_and_compare(a in "[a-z0-9 ]{0,12}", b in "[a-z0-9 ]{0,12}") {
        prop_assert_eq!(eval(&format!("{a:?} + {b:?}")), Value::String(format!("{a}{b}")));
        prop_assert_eq!(eval(&format!("{a:?} < {b:?}")), Value::Bool(a < b));
        prop_assert_eq!(eval(&format!("{a:?} != {b:?}")), Value::Bool(a != b));
    }

    #[test]
    fn format_d_matches_rust(i in any::<i64>(), w in 0usize..25) {
        let got = eval(&format!("format(\"%{w}d|%-{w}d\", {}, {})", lit(i), lit(i)));
        prop_assert_eq!(got, Value::String(format!("{i:>w$}|{i:<w$}")));
    }

    #[test]
    fn go_duration_text_round_trips(nanos in 0u64..(i64::MAX as u64)) {
        let d = std::time::Duration::from_nanos(nanos);
        let text = format_go_duration(d);
        prop_assert_eq!(parse_go_duration(&text), Ok(d), "{}", text);
    }

    #[test]
    fn to_value_then_decode_is_identity(
        map in proptest::collection::btree_map("[a-z_]{1,8}", proptest::collection::vec(any::<i32>(), 0..4), 0..5),
    ) {
        let v = to_value(&map).map_err(TestCaseError::fail)?;
        let back: BTreeMap<String, Vec<i32>> = decode_value(&v).map_err(TestCaseError::fail)?;
        prop_assert_eq!(back, map);
    }
}
