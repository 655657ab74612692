//! Golden tests of evaluation and decoding.
//!
//! - `tests/golden/eval/*.river`: the file is parsed and evaluated with a test scope; the `.out`
//!   file holds every top-level attribute as `name = value` (numbers tagged with their kind),
//!   blocks as nested sections, or the rendered diagnostics when evaluation fails.
//! - `tests/golden/decode/*.river`: the evaluated body is decoded into the sample argument struct
//!   [`Args`] below and validated; the `.out` holds its `Debug` dump, its re-encoding with
//!   `to_value`, or the rendered diagnostics.
//!
//! `UPDATE_GOLDEN=1` rewrites the expectations.

use river_parser::decode::{
    decode_body_validated, to_value, CapsuleRef, Duration, Invalid, Secret, Validate,
};
use river_parser::eval::{eval_body, BodyItem, BodyValue, Scope};
use river_parser::json::body_to_json;
use river_parser::{parse_file, Capsule, Number, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

// --- value rendering -------------------------------------------------------------------------

fn render_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Number(Number::Int(i)) => format!("{i}"),
        Value::Number(Number::Uint(u)) => format!("{u}u"),
        Value::Number(Number::Float(f)) => format!("{f:?}f"),
        Value::String(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(render_value).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(o) => {
            if o.is_empty() {
                return "{}".into();
            }
            let parts: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{k:?} = {}", render_value(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
        Value::Function(f) => format!("function({})", f.name),
        Value::Capsule(c) => format!("capsule({})", c.type_name),
        Value::Secret(s) => format!("secret({s:?})"),
    }
}

fn render_body(out: &mut String, body: &BodyValue, indent: usize) {
    let pad = "  ".repeat(indent);
    for item in &body.items {
        match item {
            BodyItem::Attr { name, value, .. } => {
                let _ = writeln!(out, "{pad}{name} = {}", render_value(value));
            }
            BodyItem::Block {
                name, label, body, ..
            } => {
                match label {
                    Some(l) => {
                        let _ = writeln!(out, "{pad}{name} {l:?} {{");
                    }
                    None => {
                        let _ = writeln!(out, "{pad}{name} {{");
                    }
                }
                render_body(out, body, indent + 1);
                let _ = writeln!(out, "{pad}}}");
            }
        }
    }
}

// --- the sample argument struct ---------------------------------------------------------------

/// Stands for a component's exported receiver.
#[derive(Debug)]
struct Receiver {
    id: u32,
}

/// Some other capsule type, to test type mismatches.
#[derive(Debug)]
struct Other;

#[derive(Debug, Deserialize, Serialize, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Mode {
    #[default]
    Replace,
    Keep,
    #[serde(rename = "labelmap")]
    LabelMap,
}

#[derive(Debug, Deserialize, Serialize)]
struct Args {
    targets: Vec<BTreeMap<String, String>>,
    forward_to: Vec<CapsuleRef<Receiver>>,
    #[serde(default = "default_interval")]
    scrape_interval: Duration,
    #[serde(default)]
    scrape_timeout: Option<Duration>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    ratio: f64,
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    endpoint: Vec<Endpoint>,
    #[serde(default)]
    tls_config: Option<Tls>,
    client: Client,
    #[serde(default)]
    stage: Vec<Stage>,
    /// An object attribute decoded into a struct.
    #[serde(default)]
    limits: Option<Limits>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Limits {
    max_samples: u32,
    #[serde(default)]
    burst: f64,
}

fn default_interval() -> Duration {
    Duration::from_secs(15)
}

#[derive(Debug, Deserialize, Serialize)]
struct Endpoint {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    basic_auth: Option<BasicAuth>,
}

#[derive(Debug, Deserialize, Serialize)]
struct BasicAuth {
    username: String,
    password: Secret,
}

#[derive(Debug, Deserialize, Serialize)]
struct Tls {
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Debug, Deserialize, Serialize)]
struct Client {
    name: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct Stage {
    #[serde(rename = "__label")]
    name: String,
    #[serde(default)]
    values: Vec<i64>,
}

impl Validate for Args {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(t) = self.scrape_timeout {
            if t > self.scrape_interval {
                return Err(Invalid::attr(
                    "scrape_timeout",
                    format!(
                        "scrape_timeout ({t}) must not be greater than scrape_interval ({})",
                        self.scrape_interval
                    ),
                ));
            }
        }
        // A rule inside a repeated block: the diagnostic points at the attribute in that block.
        for (i, e) in self.endpoint.iter().enumerate() {
            if e.url.trim().is_empty() {
                return Err(Invalid::attr("url", "url must not be empty").in_block("endpoint", i));
            }
        }
        // A rule about the body as a whole.
        if self.enabled && self.endpoint.is_empty() {
            return Err(Invalid::body(
                "enabled = true needs at least one endpoint block",
            ));
        }
        Ok(())
    }
}

// --- harness ---------------------------------------------------------------------------------

fn test_scope() -> Scope {
    let mut scope = Scope::new();
    let receiver = Capsule::new("test.Receiver", Arc::new(Receiver { id: 7 }));
    scope.set_path(
        &["pyroscope", "write", "default", "receiver"],
        Value::Capsule(receiver),
    );
    scope.set_path(
        &["other", "thing", "output"],
        Value::Capsule(Capsule::new("test.Other", Arc::new(Other))),
    );
    scope.set_path(
        &["discovery", "relabel", "local_pods", "output"],
        Value::Array(vec![Value::Object(BTreeMap::from([(
            "__address__".to_string(),
            Value::String("10.0.0.1:4040".into()),
        )]))]),
    );
    scope.set("token", Value::Secret("s3cr3t".into()));
    scope.set(
        "nums",
        Value::Array(vec![
            Value::Number(Number::Int(1)),
            Value::Number(Number::Uint(2)),
        ]),
    );
    scope
}

fn run_case(kind: &str, path: &Path) -> String {
    let src = std::fs::read_to_string(path).expect("read golden input");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("test.river");
    let file = match parse_file(&src) {
        Ok(f) => f,
        Err(d) => return format!("parse error:\n{}", d.render(name, &src)),
    };
    let scope = test_scope();
    let body = match eval_body(&file.body, &scope) {
        Ok(b) => b,
        Err(d) => return d.render(name, &src),
    };
    match kind {
        "eval" => {
            let mut out = String::new();
            render_body(&mut out, &body, 0);
            if name.starts_with("json_") {
                out.push_str("--- json\n");
                out.push_str(
                    &serde_json::to_string_pretty(&body_to_json(&body)).unwrap_or_default(),
                );
                out.push('\n');
            }
            out
        }
        _ => match decode_body_validated::<Args>(&body, body.span()) {
            Ok(args) => {
                let mut out = format!("{args:#?}\n");
                let ids: Vec<u32> = args.forward_to.iter().map(|r| r.id).collect();
                let _ = writeln!(out, "--- receiver ids: {ids:?}");
                match to_value(&args) {
                    Ok(v) => {
                        let _ = writeln!(out, "--- to_value\n{}", render_value(&v));
                    }
                    Err(e) => {
                        let _ = writeln!(out, "--- to_value error: {e}");
                    }
                }
                out
            }
            Err(d) => d.render(name, &src),
        },
    }
}

fn run_dir(kind: &str) {
    // Stable inputs for `env` and `sys.env`.
    std::env::set_var("RILL_EVAL_GOLDEN", "from-env");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(kind);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("golden dir exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "river"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no golden inputs in {}", dir.display());
    let mut failures = Vec::new();
    for input in &inputs {
        let got = run_case(kind, input);
        let out_path = input.with_extension("out");
        if update {
            std::fs::write(&out_path, &got).expect("write golden output");
            continue;
        }
        let want = std::fs::read_to_string(&out_path).unwrap_or_default();
        if want != got {
            failures.push(format!(
                "{}:\n--- want\n{want}\n--- got\n{got}",
                input.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn eval_golden() {
    run_dir("eval");
}

#[test]
fn decode_golden() {
    run_dir("decode");
}

/// Trait objects travel as `Arc<Arc<dyn Trait>>` inside capsules (see `CapsuleRef`).
#[test]
fn capsule_of_trait_object_decodes() {
    trait Appendable: Send + Sync {
        fn name(&self) -> String;
    }
    struct Writer;
    impl Appendable for Writer {
        fn name(&self) -> String {
            "writer".into()
        }
    }
    let receiver: Arc<dyn Appendable> = Arc::new(Writer);
    let cap = Value::Capsule(Capsule::new("pyroscope.Appendable", Arc::new(receiver)));
    let got: Vec<CapsuleRef<Arc<dyn Appendable>>> =
        river_parser::decode::decode_value(&Value::Array(vec![cap.clone(), cap])).expect("decodes");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0.name(), "writer");
    // A different concrete type is rejected with the capsule type names.
    let wrong = Value::Capsule(Capsule::new("test.Other", Arc::new(Other)));
    let err = river_parser::decode::decode_value::<CapsuleRef<Arc<dyn Appendable>>>(&wrong)
        .expect_err("type mismatch");
    assert!(
        err.contains("got capsule of type test.Other"),
        "unexpected error: {err}"
    );
}
