//! Go `fmt` formatting for `format`/`string.format`: [`go_sprintf`] with the verbs, flags, width
//! and precision River configs use, and Go's float text (`%v`, `%e`, `%g`).

use crate::quote::go_quote;
use crate::value::{Number, Value};
use std::fmt::Write as _;

#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    sharp: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Formats like Go's `fmt.Sprintf` for the verbs River configs use:
/// `%v %s %q %d %f %F %e %g %x %X %o %b %t %%`, flags `- + 0 space #`, width and precision.
/// Missing or extra arguments are reported inline as Go does (`%!d(MISSING)`, `%!(EXTRA ...)`).
pub fn go_sprintf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars().peekable();
    let mut next_arg = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        spec.width = read_num(&mut chars);
        // Go rejects widths and precisions above 10^6 instead of allocating them.
        let bad_width = spec.width.is_some_and(|w| w > MAX_WIDTH);
        let mut bad_prec = false;
        if chars.peek() == Some(&'.') {
            chars.next();
            let p = read_num(&mut chars).unwrap_or(0);
            bad_prec = p > MAX_WIDTH;
            spec.prec = Some(p);
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if bad_width || bad_prec {
            out.push_str(if bad_width {
                "%!(BADWIDTH)"
            } else {
                "%!(BADPREC)"
            });
            spec.width = None;
            spec.prec = None;
        }
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next_arg) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next_arg += 1;
        let body = format_one(verb, &spec, arg);
        out.push_str(&pad(&body, &spec, verb));
    }
    if next_arg < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next_arg..]
            .iter()
            .map(|a| format!("{}={}", go_type(a), format_v(a)))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

const MAX_WIDTH: usize = 1_000_000;

fn read_num(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(&d) = chars.peek() {
        if let Some(v) = d.to_digit(10) {
            n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(v as usize));
            chars.next();
        } else {
            break;
        }
    }
    n
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Number(Number::Int(_)) => "int",
        Value::Number(Number::Uint(_)) => "uint",
        Value::Number(Number::Float(_)) => "float64",
        Value::String(_) | Value::Secret(_) => "string",
        Value::Bool(_) => "bool",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
        Value::Function(_) => "func",
        Value::Capsule(_) => "capsule",
    }
}

fn pad(body: &str, spec: &Spec, verb: char) -> String {
    let len = body.chars().count();
    let Some(w) = spec.width else {
        return body.to_string();
    };
    if len >= w {
        return body.to_string();
    }
    let fill = w - len;
    if spec.minus {
        format!("{body}{}", " ".repeat(fill))
    } else if spec.zero && !matches!(verb, 's' | 'q' | 'v' | 't') {
        // Zero padding goes after the sign.
        let (sign, digits) = match body.chars().next() {
            Some(c @ ('-' | '+' | ' ')) => (c.to_string(), &body[1..]),
            _ => (String::new(), body),
        };
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else if spec.zero {
        format!("{}{body}", "0".repeat(fill))
    } else {
        format!("{}{body}", " ".repeat(fill))
    }
}

fn bad_verb(verb: char, v: &Value) -> String {
    format!("%!{verb}({}={})", go_type(v), format_v(v))
}

fn format_one(verb: char, spec: &Spec, v: &Value) -> String {
    match verb {
        'v' => format_v(v),
        's' => match v {
            Value::String(s) => truncate(s, spec.prec),
            Value::Secret(_) => "(secret)".to_string(),
            Value::Number(_) | Value::Bool(_) => bad_verb(verb, v),
            other => truncate(&format_v(other), spec.prec),
        },
        'q' => match v {
            Value::String(s) => go_quote(s),
            Value::Number(Number::Int(i)) => char::from_u32(*i as u32)
                .map(|c| format!("'{c}'"))
                .unwrap_or_else(|| bad_verb(verb, v)),
            _ => bad_verb(verb, v),
        },
        't' => match v {
            Value::Bool(b) => b.to_string(),
            _ => bad_verb(verb, v),
        },
        'd' => match v {
            Value::Number(Number::Int(i)) => signed(*i < 0, i.unsigned_abs().to_string(), spec),
            Value::Number(Number::Uint(u)) => signed(false, u.to_string(), spec),
            _ => bad_verb(verb, v),
        },
        'x' | 'X' | 'o' | 'b' => match v {
            Value::Number(Number::Int(i)) => {
                signed(*i < 0, radix(i.unsigned_abs(), verb, spec.sharp), spec)
            }
            Value::Number(Number::Uint(u)) => signed(false, radix(*u, verb, spec.sharp), spec),
            Value::String(s) if verb == 'x' || verb == 'X' => {
                let mut h = String::new();
                for b in s.bytes() {
                    if verb == 'x' {
                        let _ = write!(h, "{b:02x}");
                    } else {
                        let _ = write!(h, "{b:02X}");
                    }
                }
                h
            }
            Value::Number(Number::Float(_)) => bad_verb(verb, v),
            _ => bad_verb(verb, v),
        },
        'f' | 'F' | 'e' | 'E' | 'g' | 'G' => match v {
            Value::Number(n) => {
                let f = n.as_f64();
                let text = match verb {
                    'f' | 'F' => format!("{:.*}", spec.prec.unwrap_or(6), f.abs()),
                    'e' | 'E' => {
                        let t = go_exp(f.abs(), spec.prec.unwrap_or(6));
                        if verb == 'E' {
                            t.to_uppercase()
                        } else {
                            t
                        }
                    }
                    _ => {
                        let t = match spec.prec {
                            Some(p) => go_g_prec(f.abs(), p.max(1)),
                            None => format_float_g(f.abs()),
                        };
                        if verb == 'G' {
                            t.to_uppercase()
                        } else {
                            t
                        }
                    }
                };
                if f.is_nan() {
                    return "NaN".to_string();
                }
                signed(f.is_sign_negative() && f != 0.0, text, spec)
            }
            _ => bad_verb(verb, v),
        },
        'c' => match v {
            Value::Number(Number::Int(i)) => char::from_u32(*i as u32)
                .map(String::from)
                .unwrap_or_else(|| bad_verb(verb, v)),
            _ => bad_verb(verb, v),
        },
        _ => bad_verb(verb, v),
    }
}

fn truncate(s: &str, prec: Option<usize>) -> String {
    match prec {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

fn signed(negative: bool, digits: String, spec: &Spec) -> String {
    if negative {
        format!("-{digits}")
    } else if spec.plus {
        format!("+{digits}")
    } else if spec.space {
        format!(" {digits}")
    } else {
        digits
    }
}

fn radix(u: u64, verb: char, sharp: bool) -> String {
    match verb {
        'x' => format!("{}{u:x}", if sharp { "0x" } else { "" }),
        'X' => format!("{}{u:X}", if sharp { "0X" } else { "" }),
        'o' => format!("{}{u:o}", if sharp { "0" } else { "" }),
        _ => format!("{u:b}"),
    }
}

/// Go's `%v` of a River value (maps print with sorted keys, like Go's fmt).
fn format_v(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_string(),
        Value::Number(Number::Int(i)) => i.to_string(),
        Value::Number(Number::Uint(u)) => u.to_string(),
        Value::Number(Number::Float(f)) => format_float_g(*f),
        Value::String(s) => s.clone(),
        Value::Secret(_) => "(secret)".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(format_v).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}:{}", format_v(v)))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
        Value::Function(f) => format!("function({})", f.name),
        Value::Capsule(c) => format!("capsule({})", c.type_name),
    }
}

/// Go's `%e` with the given precision (`1.234560e+03`).
fn go_exp(f: f64, prec: usize) -> String {
    let s = format!("{f:.prec$e}");
    // Rust prints `1.5e3`; Go wants a sign and at least two exponent digits.
    match s.split_once('e') {
        Some((mant, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mant}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// Go's `%g` with a precision (significant digits).
fn go_g_prec(f: f64, prec: usize) -> String {
    if f == 0.0 {
        return "0".to_string();
    }
    let exp = f.abs().log10().floor() as i32;
    if exp < -4 || exp >= prec as i32 {
        let t = go_exp(f, prec.saturating_sub(1));
        // Strip trailing zeros of the mantissa.
        match t.split_once('e') {
            Some((m, e)) if m.contains('.') => {
                format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => t,
        }
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        let t = format!("{f:.decimals$}");
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        }
    }
}

/// Go's `%v`/`strconv.FormatFloat(f, 'g', -1, 64)`: shortest representation, exponent form when
/// the exponent is < -4 or >= 21.
pub fn format_float_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let exp = f.abs().log10().floor() as i32;
    if !(-4..21).contains(&exp) {
        // Shortest digits in exponent form.
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mant, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                format!("{mant}e{sign}{digits:0>2}")
            }
            None => s,
        }
    } else {
        // Rust's Display is the shortest round-tripping decimal form.
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::String(x.to_string())
    }
    fn i(x: i64) -> Value {
        Value::Number(Number::Int(x))
    }
    fn f(x: f64) -> Value {
        Value::Number(Number::Float(x))
    }

    #[test]
    fn go_format_verbs() {
        let cases: Vec<(&str, Vec<Value>, &str)> = vec![
            ("%s-%d", vec![s("a"), i(5)], "a-5"),
            ("%q", vec![s("a\"b\n")], "\"a\\\"b\\n\""),
            (
                "%v %v %v",
                vec![i(1), s("x"), Value::Bool(true)],
                "1 x true",
            ),
            ("%f", vec![f(1.23456)], "1.234560"),
            ("%5.2f|", vec![f(1.23456)], " 1.23|"),
            ("%-6d|", vec![i(42)], "42    |"),
            ("%05d", vec![i(-42)], "-0042"),
            ("%x %X %#x", vec![i(255), i(255), i(255)], "ff FF 0xff"),
            ("%x", vec![s("hi")], "6869"),
            ("100%%", vec![], "100%"),
            ("%+d", vec![i(3)], "+3"),
            ("%d", vec![s("x")], "%!d(string=x)"),
            ("%s %s", vec![s("a")], "a %!s(MISSING)"),
            ("%s", vec![s("a"), i(2)], "a%!(EXTRA int=2)"),
            ("%.3s", vec![s("abcdef")], "abc"),
            ("%8s|", vec![s("ab")], "      ab|"),
            ("%v", vec![f(1.5)], "1.5"),
            ("%v", vec![f(1e21)], "1e+21"),
            ("%v", vec![f(100000.0)], "100000"),
            ("%e", vec![f(1234.5678)], "1.234568e+03"),
            ("%g", vec![f(0.00001)], "1e-05"),
            ("%.3g", vec![f(1.23456)], "1.23"),
            ("%t", vec![Value::Bool(false)], "false"),
            ("%v", vec![Value::Array(vec![i(1), s("a")])], "[1 a]"),
            (
                "%d",
                vec![Value::Number(Number::Uint(u64::MAX))],
                "18446744073709551615",
            ),
            ("%.1f", vec![f(-0.25)], "-0.2"),
            ("%99999999999d", vec![i(1)], "%!(BADWIDTH)1"),
            ("%.99999999999f", vec![f(1.0)], "%!(BADPREC)1.000000"),
        ];
        for (fmt, args, want) in cases {
            assert_eq!(go_sprintf(fmt, &args), want, "format {fmt:?}");
        }
    }

    #[test]
    fn float_text_matches_go() {
        assert_eq!(format_float_g(0.1), "0.1");
        assert_eq!(format_float_g(2.0), "2");
        assert_eq!(format_float_g(-1.25), "-1.25");
        assert_eq!(format_float_g(1e-7), "1e-07");
        assert_eq!(format_float_g(123456789.0), "123456789");
    }
}
