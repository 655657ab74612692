//! The River standard library: the Agent Flow top-level names (`env`, `concat`, `format`, ...)
//! and Alloy's namespaced ones (`sys.env`, `string.format`, `encoding.from_json`, ...), plus the
//! `constants` object. `format` implements Go `fmt` verbs (`%s %d %q %v %f %x %t %%` with flags,
//! width and precision).

use crate::eval::arg_error;
use crate::value::{Function, Number, Value};
use base64::Engine as _;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

type Res = Result<Value, String>;

fn func(name: &'static str, f: fn(&[Value]) -> Res) -> Value {
    Value::Function(Function {
        name,
        call: Arc::new(f),
    })
}

fn table() -> &'static HashMap<&'static str, Value> {
    static TABLE: OnceLock<HashMap<&'static str, Value>> = OnceLock::new();
    TABLE.get_or_init(build)
}

/// Looks up a standard-library identifier.
pub(crate) fn lookup(name: &str) -> Option<&'static Value> {
    table().get(name)
}

/// All top-level standard-library names (sorted).
#[allow(dead_code)] // reason: used by tests and kept for the language-server style listing
pub fn names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = table().keys().copied().collect();
    v.sort_unstable();
    v
}

fn object(entries: Vec<(&'static str, Value)>) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn build() -> HashMap<&'static str, Value> {
    let mut m: HashMap<&'static str, Value> = HashMap::new();
    // Agent Flow names.
    m.insert("env", func("env", env));
    m.insert("concat", func("concat", concat));
    m.insert("coalesce", func("coalesce", coalesce));
    m.insert("format", func("format", format));
    m.insert("join", func("join", join));
    m.insert("split", func("split", split));
    m.insert("replace", func("replace", replace));
    m.insert("to_lower", func("to_lower", to_lower));
    m.insert("to_upper", func("to_upper", to_upper));
    m.insert("trim", func("trim", trim));
    m.insert("trim_prefix", func("trim_prefix", trim_prefix));
    m.insert("trim_suffix", func("trim_suffix", trim_suffix));
    m.insert("trim_space", func("trim_space", trim_space));
    m.insert("json_decode", func("json_decode", json_decode));
    m.insert("json_path", func("json_path", json_path));
    m.insert("yaml_decode", func("yaml_decode", yaml_decode));
    m.insert("base64_decode", func("base64_decode", base64_decode));
    m.insert("nonsensitive", func("nonsensitive", nonsensitive));
    // Alloy namespaces.
    m.insert(
        "constants",
        object(vec![
            ("hostname", Value::String(hostname())),
            ("os", Value::String(std::env::consts::OS.to_string())),
            ("arch", Value::String(go_arch().to_string())),
            (
                "version",
                Value::String(env!("CARGO_PKG_VERSION").to_string()),
            ),
        ]),
    );
    m.insert("sys", object(vec![("env", func("sys.env", env))]));
    m.insert(
        "string",
        object(vec![
            ("format", func("string.format", format)),
            ("join", func("string.join", join)),
            ("split", func("string.split", split)),
            ("replace", func("string.replace", replace)),
            ("to_lower", func("string.to_lower", to_lower)),
            ("to_upper", func("string.to_upper", to_upper)),
            ("trim", func("string.trim", trim)),
            ("trim_prefix", func("string.trim_prefix", trim_prefix)),
            ("trim_suffix", func("string.trim_suffix", trim_suffix)),
            ("trim_space", func("string.trim_space", trim_space)),
        ]),
    );
    m.insert(
        "array",
        object(vec![
            ("concat", func("array.concat", concat)),
            ("combine_maps", func("array.combine_maps", combine_maps)),
        ]),
    );
    m.insert(
        "file",
        object(vec![("path_join", func("file.path_join", path_join))]),
    );
    m.insert(
        "encoding",
        object(vec![
            ("from_json", func("encoding.from_json", json_decode)),
            ("from_yaml", func("encoding.from_yaml", yaml_decode)),
            ("from_base64", func("encoding.from_base64", base64_decode)),
            (
                "from_URLbase64",
                func("encoding.from_URLbase64", base64_url_decode),
            ),
            ("to_base64", func("encoding.to_base64", base64_encode)),
            (
                "to_URLbase64",
                func("encoding.to_URLbase64", base64_url_encode),
            ),
        ]),
    );
    m.insert(
        "convert",
        object(vec![(
            "nonsensitive",
            func("convert.nonsensitive", nonsensitive),
        )]),
    );
    m
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

/// Go's `GOARCH` spelling of the target architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        other => other,
    }
}

// --- argument helpers ------------------------------------------------------------------------

fn arity(args: &[Value], n: usize) -> Result<(), String> {
    if args.len() != n {
        Err(format!("expected {n} args, got {}", args.len()))
    } else {
        Ok(())
    }
}

/// A string argument: strings, and numbers converted to text as the reference does.
fn str_arg(args: &[Value], i: usize) -> Result<String, String> {
    match &args[i] {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(crate::decode::number_to_string(*n)),
        other => Err(arg_error(
            i,
            format!("should be string, got {}", other.type_name()),
        )),
    }
}

fn strs(args: &[Value], n: usize) -> Result<Vec<String>, String> {
    arity(args, n)?;
    (0..n).map(|i| str_arg(args, i)).collect()
}

// --- functions -------------------------------------------------------------------------------

fn env(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    Ok(Value::String(std::env::var(&a[0]).unwrap_or_default()))
}

fn concat(args: &[Value]) -> Res {
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

/// The first argument that is not null, an empty string, array or object, or false.
fn coalesce(args: &[Value]) -> Res {
    for a in args {
        let empty = match a {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(v) => v.is_empty(),
            Value::Object(m) => m.is_empty(),
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == 0.0,
            _ => false,
        };
        if !empty {
            return Ok(a.clone());
        }
    }
    Ok(args.last().cloned().unwrap_or(Value::Null))
}

fn format(args: &[Value]) -> Res {
    if args.is_empty() {
        return Err("expected at least 1 args, got 0".to_string());
    }
    let fmt = str_arg(args, 0)?;
    Ok(Value::String(go_sprintf(&fmt, &args[1..])))
}

fn join(args: &[Value]) -> Res {
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

fn split(args: &[Value]) -> Res {
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

fn replace(args: &[Value]) -> Res {
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

fn to_lower(args: &[Value]) -> Res {
    Ok(Value::String(strs(args, 1)?[0].to_lowercase()))
}

fn to_upper(args: &[Value]) -> Res {
    Ok(Value::String(strs(args, 1)?[0].to_uppercase()))
}

fn trim(args: &[Value]) -> Res {
    let a = strs(args, 2)?;
    let cut: Vec<char> = a[1].chars().collect();
    Ok(Value::String(
        a[0].trim_matches(|c| cut.contains(&c)).to_string(),
    ))
}

fn trim_prefix(args: &[Value]) -> Res {
    let a = strs(args, 2)?;
    Ok(Value::String(
        a[0].strip_prefix(a[1].as_str())
            .unwrap_or(&a[0])
            .to_string(),
    ))
}

fn trim_suffix(args: &[Value]) -> Res {
    let a = strs(args, 2)?;
    Ok(Value::String(
        a[0].strip_suffix(a[1].as_str())
            .unwrap_or(&a[0])
            .to_string(),
    ))
}

fn trim_space(args: &[Value]) -> Res {
    Ok(Value::String(strs(args, 1)?[0].trim().to_string()))
}

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

fn json_decode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    let j: serde_json::Value = serde_json::from_str(&a[0]).map_err(|e| e.to_string())?;
    Ok(from_json(j))
}

/// Applies a JSONPath query to a JSON document; always returns an array of matches.
fn json_path(args: &[Value]) -> Res {
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

fn from_yaml(y: serde_yaml::Value) -> Result<Value, String> {
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

fn yaml_decode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    let y: serde_yaml::Value = serde_yaml::from_str(&a[0]).map_err(|e| e.to_string())?;
    from_yaml(y)
}

fn base64_decode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(a[0].as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

fn base64_url_decode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(a[0].as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

fn base64_encode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(a[0].as_bytes()),
    ))
}

fn base64_url_encode(args: &[Value]) -> Res {
    let a = strs(args, 1)?;
    Ok(Value::String(
        base64::engine::general_purpose::URL_SAFE.encode(a[0].as_bytes()),
    ))
}

/// Joins path elements like Go's `filepath.Join` (empty elements skipped, result cleaned).
fn path_join(args: &[Value]) -> Res {
    let parts: Vec<String> = (0..args.len())
        .map(|i| str_arg(args, i))
        .collect::<Result<_, _>>()?;
    let joined = parts
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("/");
    if joined.is_empty() {
        return Ok(Value::String(String::new()));
    }
    let absolute = joined.starts_with('/');
    let mut stack: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if stack.last().is_some_and(|l| *l != "..") {
                    stack.pop();
                } else if !absolute {
                    stack.push("..");
                }
            }
            s => stack.push(s),
        }
    }
    let body = stack.join("/");
    Ok(Value::String(match (absolute, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }))
}

/// `array.combine_maps(left, right, keys)`: every pair of objects from `left` and `right` that
/// agree on all `keys` is merged (right wins).
fn combine_maps(args: &[Value]) -> Res {
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

fn nonsensitive(args: &[Value]) -> Res {
    arity(args, 1)?;
    match &args[0] {
        Value::Secret(s) | Value::String(s) => Ok(Value::String(s.clone())),
        other => Err(arg_error(
            0,
            format!("should be secret, got {}", other.type_name()),
        )),
    }
}

// --- Go fmt ----------------------------------------------------------------------------------

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

/// Go's `%q` of a string: double-quoted with Go escapes.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
