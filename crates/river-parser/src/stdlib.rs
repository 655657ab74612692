//! The River standard library: the Agent Flow top-level names (`env`, `concat`, `format`, ...)
//! and Alloy's namespaced ones (`sys.env`, `string.format`, `encoding.from_json`, ...), plus the
//! `constants` object. `format` implements Go `fmt` verbs (`%s %d %q %v %f %x %t %%` with flags,
//! width and precision).
//!
//! The Agent Flow names Alloy deprecated ([`DEPRECATED`]) keep working; the first use of each in
//! a process logs a warning naming its replacement. `coalesce`, `json_path` and `constants` are
//! not deprecated. Alloy gates `array.combine_maps` and `array.group_by` behind
//! `--stability.level=experimental`; rill always allows them.

mod array;
mod encoding;
mod gofmt;
mod string;

use array::{combine_maps, concat, group_by};
use encoding::{
    base64_decode, base64_encode, base64_url_decode, base64_url_encode, json_decode, json_path,
    to_json, url_decode, url_encode, yaml_decode,
};
use string::{
    format, join, replace, split, to_lower, to_upper, trim, trim_prefix, trim_space, trim_suffix,
};

use crate::eval::arg_error;
use crate::value::{Function, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

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

/// The Agent Flow names Alloy deprecated, with their replacements (Alloy's
/// `DeprecatedIdentifiers`).
pub(crate) const DEPRECATED: &[(&str, &str)] = &[
    ("env", "sys.env"),
    ("nonsensitive", "convert.nonsensitive"),
    ("concat", "array.concat"),
    ("json_decode", "encoding.from_json"),
    ("yaml_decode", "encoding.from_yaml"),
    ("base64_decode", "encoding.from_base64"),
    ("format", "string.format"),
    ("join", "string.join"),
    ("replace", "string.replace"),
    ("split", "string.split"),
    ("to_lower", "string.to_lower"),
    ("to_upper", "string.to_upper"),
    ("trim", "string.trim"),
    ("trim_prefix", "string.trim_prefix"),
    ("trim_suffix", "string.trim_suffix"),
    ("trim_space", "string.trim_space"),
];

/// The replacement of a deprecated standard-library name (`env` → `sys.env`).
pub(crate) fn deprecated_replacement(name: &str) -> Option<&'static str> {
    DEPRECATED
        .iter()
        .find(|(old, _)| *old == name)
        .map(|(_, new)| *new)
}

/// Looks up a standard-library identifier; the first lookup of a deprecated name in this process
/// logs a warning.
pub(crate) fn lookup(name: &str) -> Option<&'static Value> {
    let found = table().get(name);
    if found.is_some() {
        if let Some(new) = deprecated_replacement(name) {
            if first_use(name) {
                tracing::warn!(
                    function = name,
                    replacement = new,
                    "the standard library function \"{name}\" is deprecated; use \"{new}\""
                );
            }
        }
    }
    found
}

/// True the first time it is called with `name` in this process.
fn first_use(name: &str) -> bool {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    seen.insert(name.to_string())
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
            ("group_by", func("array.group_by", group_by)),
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
            ("to_json", func("encoding.to_json", to_json)),
            ("url_encode", func("encoding.url_encode", url_encode)),
            ("url_decode", func("encoding.url_decode", url_decode)),
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

#[cfg(test)]
mod tests;
