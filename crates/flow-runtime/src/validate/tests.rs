//! Tests of [`super::validate_source`] with a small component type.

use super::validate_source;
use crate::{CancellationToken, Component, Options, Registry};
use river_parser::decode::{Invalid, Validate};
use std::sync::Arc;

#[derive(serde::Deserialize, PartialEq, Debug)]
struct Args {
    value: i64,
    #[serde(default)]
    list: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    inner: Option<Inner>,
}

#[derive(serde::Deserialize, PartialEq, Debug)]
struct Inner {
    limit: i64,
}

impl Validate for Args {
    fn validate(&self) -> Result<(), Invalid> {
        if self.value < 0 {
            return Err(Invalid::attr("value", "must not be negative"));
        }
        if self.list.is_empty() && self.name.as_deref() == Some("needs-list") {
            return Err(Invalid::attr("list", "must not be empty"));
        }
        Ok(())
    }
}

/// Panics when built: validation must never build a component.
struct Probe;

impl Component for Probe {
    type Arguments = Args;
    fn build(_opts: Options, _args: Args) -> anyhow::Result<Self> {
        panic!("validate built a component");
    }
    async fn run(self: Arc<Self>, _cancel: CancellationToken) -> anyhow::Result<()> {
        Ok(())
    }
    fn update(&self, _args: Args) -> anyhow::Result<()> {
        Ok(())
    }
}

fn registry() -> Registry {
    Registry::new().with::<Probe>("test.probe")
}

/// Every diagnostic as `LINE:COL: message`.
fn check(src: &str) -> Vec<String> {
    match validate_source(src, &registry()) {
        Ok(()) => Vec::new(),
        Err(d) => {
            d.0.iter()
                .map(|d| {
                    let h = d.headline("f", src);
                    h.trim_start_matches("f:").to_string()
                })
                .collect()
        }
    }
}

#[test]
fn a_sound_file_passes_without_building_anything() {
    let src = r#"
test.probe "a" {
  value = 1
  name  = string.format("%s-%d", "x", 2)
}
test.probe "b" {
  value = test.probe.a.count
  list  = concat(test.probe.a.list, ["x"])
  name  = test.probe.a.name
  inner {
    limit = test.probe.a.limit
  }
}
logging {
  level = "debug"
}
"#;
    assert_eq!(check(src), Vec::<String>::new());
}

#[test]
fn argument_errors_of_every_component_are_reported() {
    let src = r#"test.probe "unknown_attr" {
  value = 1
  colour = "red"
}
test.probe "missing" {
  list = ["a"]
}
test.probe "wrong_type" {
  value = [1]
}
test.probe "rule" {
  value = -1
}
test.probe "nested" {
  value = 1
  inner {
    limit = "many"
  }
}
test.probe "eval" {
  value = 1 + "a"
}
"#;
    let got = check(src);
    assert_eq!(got.len(), 6, "{got:#?}");
    assert!(
        got[0].starts_with("3:3: ") && got[0].contains("colour"),
        "{}",
        got[0]
    );
    assert!(
        got[1].starts_with("5:1: ") && got[1].contains("missing required attribute \"value\""),
        "{}",
        got[1]
    );
    assert!(
        got[2].starts_with("9:") && got[2].contains("should be number"),
        "{}",
        got[2]
    );
    assert_eq!(got[3], "12:3: must not be negative");
    assert!(
        got[4].starts_with("17:") && got[4].contains("limit"),
        "{}",
        got[4]
    );
    assert!(got[5].starts_with("21:"), "{}", got[5]);
}

#[test]
fn graph_and_logging_errors_are_reported_together() {
    let src = r#"test.probe "a" {
  value = test.probe.b.count
}
test.probe "b" {
  value = test.probe.a.count
}
test.probe "c" {
  value = test.probe.nope.count
}
nope.component "x" {}
logging {
  level = "loud"
}
"#;
    let got = check(src);
    assert!(
        got.iter()
            .any(|d| d.starts_with("1:1: cycle: test.probe.a, test.probe.b")),
        "{got:#?}"
    );
    assert!(
        got.iter()
            .any(|d| d.starts_with("8:11: ") && d.contains("test.probe.nope.count")),
        "{got:#?}"
    );
    assert!(
        got.iter()
            .any(|d| d.starts_with("10:1: unknown component \"nope.component\"")),
        "{got:#?}"
    );
}

#[test]
fn logging_errors_are_reported() {
    let got = check("logging {\n  level = \"loud\"\n}\n");
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].starts_with("2:"), "{got:#?}");
}

#[test]
fn syntax_errors_stop_before_the_graph() {
    let got = check("test.probe \"a\" {\n  value = \n}\nnope.x \"y\" {}\n");
    assert!(!got.is_empty());
    assert!(
        got.iter().all(|d| !d.contains("unknown component")),
        "{got:#?}"
    );
}

#[test]
fn placeholders_never_raise_errors_but_unknown_names_still_do() {
    // `list` depends on a.name (a string at run time, maybe): no placeholder error; the rule on
    // `list` cannot be judged either.
    let src = r#"test.probe "a" {
  value = 1
}
test.probe "b" {
  value = 2
  name  = "needs-list"
  list  = test.probe.a.things
}
test.probe "c" {
  value   = 3
  bogus   = test.probe.a.count
}
"#;
    let got = check(src);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("11:3: ") && got[0].contains("bogus"),
        "{got:#?}"
    );
}

#[test]
fn errors_after_a_placeholder_are_still_found() {
    let src = r#"test.probe "a" {
  value = 1
}
test.probe "b" {
  value = test.probe.a.count
  name  = ["not", "a", "string"]
}
"#;
    let got = check(src);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].starts_with("6:"), "{got:#?}");
}

const MODULE: &str = r#"declare "pair" {
  argument "n" { }
  test.probe "first" {
    value = argument.n.value
  }
  test.probe "second" {
    value = test.probe.first.count
    name  = file.path_join(module_path, "second")
  }
  export "out" {
    value = test.probe.second.count
  }
}

pair "p" {
  n = 1
}

test.probe "outside" {
  value = pair.p.out
}
"#;

#[test]
fn components_inside_modules_are_checked_in_their_module() {
    use super::validate_sources;
    use crate::source::Source;
    let run = |src: &str, module_path: Option<&str>| {
        let mut sources = vec![Source::text("config.alloy", src)];
        validate_sources(&mut sources, &registry(), module_path.map(str::to_string))
            .map_err(|d| crate::source::render(&d, &sources))
    };
    // `argument.n`, the module's own component and an instance's export are references;
    // `module_path` is the main configuration's directory.
    assert_eq!(run(MODULE, Some("/etc/rill")), Ok(()));
    let without = run(MODULE, None).unwrap_err();
    assert!(
        without.starts_with("config.alloy:8:28: identifier \"module_path\" does not exist"),
        "{without}"
    );
    // An argument error inside the declare is reported at its position.
    let bad = MODULE.replace(
        "    value = argument.n.value\n",
        "    value = argument.n.value\n    colour = 1\n",
    );
    let err = run(&bad, Some("/etc/rill")).unwrap_err();
    assert!(
        err.starts_with("config.alloy:5:5: unrecognized attribute name \"colour\""),
        "{err}"
    );
    // So is a literal of the wrong type.
    let bad = MODULE.replace("value = argument.n.value", "value = \"many\"");
    let err = run(&bad, Some("/etc/rill")).unwrap_err();
    assert!(err.starts_with("config.alloy:4:5: "), "{err}");
}
