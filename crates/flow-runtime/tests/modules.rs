//! Modules as Alloy has them: `declare` with `argument` and `export`, custom component
//! instances (IDs `NAME.LABEL/inner.id`), nesting, `import.string`, `import.file` of a file and
//! of a directory, a main configuration directory, cycles through a module, reloads that change
//! an argument or a module file, and the API listing module components.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common.rs"]
mod common;

use common::*;
use flow_runtime::testing::{fire, stats};
use flow_runtime::{LoadError, Runtime};
use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;

async fn loaded(src: &str) -> (Runtime, std::path::PathBuf) {
    let dir = storage();
    let rt = runtime_with(dir.clone(), None);
    if let Err(e) = rt.load(src).await {
        panic!("load failed:\n{}", e.rendered());
    }
    (rt, dir)
}

async fn rejected(src: &str) -> String {
    let rt = runtime_with(storage(), None);
    match rt.load(src).await {
        Err(LoadError::Rejected { rendered, .. }) => rendered,
        Err(e) => panic!("expected a rejected load, got an evaluation error:\n{e}"),
        Ok(()) => panic!("expected a rejected load, the config loaded"),
    }
}

async fn ids(rt: &Runtime) -> Vec<String> {
    rt.components().await.into_iter().map(|c| c.id).collect()
}

const ADD: &str = r#"
declare "add" {
  argument "a" {
    comment = "first operand"
  }
  argument "b" {
    optional = true
    default  = 10
  }
  argument "c" {
    optional = true
  }

  export "sum" {
    value = argument.a.value + argument.b.value
  }
  export "c_is_null" {
    value = argument.c.value == null
  }
}

add "x" {
  a = 15
  b = 17
}

add "y" {
  a = 1
}

test.passthrough "out" {
  input = add.x.sum + add.y.sum
}
"#;

#[tokio::test]
async fn declare_arguments_defaults_and_exports() {
    let (rt, _dir) = loaded(ADD).await;
    // 15 + 17, and 1 + the default 10.
    assert_eq!(
        export(&rt, "test.passthrough.out", "output").await,
        Some(int(43))
    );
    assert_eq!(export(&rt, "add.x", "sum").await, Some(int(32)));
    assert_eq!(export(&rt, "add.y", "sum").await, Some(int(11)));
    assert_eq!(
        export(&rt, "add.y", "c_is_null").await,
        Some(river_parser::Value::Bool(true))
    );
    assert_eq!(ids(&rt).await, ["add.x", "add.y", "test.passthrough.out"]);
    let out = rt.component("test.passthrough.out").await.unwrap();
    assert_eq!(out.references_to, ["add.x", "add.y"]);
    let x = rt.component("add.x").await.unwrap();
    assert_eq!((x.name.as_str(), x.label.as_str()), ("add", "x"));
    assert_eq!(x.referenced_by, ["test.passthrough.out"]);
    assert_eq!(x.created_modules, ["add.x"]);
}

const PIPELINE: &str = r#"
declare "pipeline" {
  argument "start" { }

  test.passthrough "inner" {
    input = argument.start.value
  }

  export "out" {
    value = test.passthrough.inner.output
  }
}

pipeline "p" {
  start = test.pulse.src.count
}

test.pulse "src" { }

test.passthrough "after" {
  input = pipeline.p.out
}
"#;

#[tokio::test]
async fn module_components_have_alloy_ids_and_follow_their_arguments() {
    let (rt, dir) = loaded(PIPELINE).await;
    assert_eq!(
        ids(&rt).await,
        [
            "pipeline.p",
            "pipeline.p/test.passthrough.inner",
            "test.pulse.src",
            "test.passthrough.after"
        ]
    );
    let inner = rt
        .component("pipeline.p/test.passthrough.inner")
        .await
        .unwrap();
    assert_eq!(inner.module_id, "pipeline.p");
    assert_eq!(inner.local_id, "test.passthrough.inner");
    assert_eq!(inner.references_to, ["pipeline.p"]);
    assert_eq!(
        export(&rt, "test.passthrough.after", "output").await,
        Some(int(0))
    );

    // A new export of the pulse flows through the module's argument, its inner component and
    // its export to the component after it.
    fire(&dir.join("test.pulse.src"));
    wait_for(
        "the pulse's count to reach the end of the pipeline",
        || async { export(&rt, "test.passthrough.after", "output").await == Some(int(1)) },
    )
    .await;
    // The inner component's data directory is under the instance's.
    let s = stats(&dir.join("pipeline.p/test.passthrough.inner"));
    assert_eq!(s.builds.load(SeqCst), 1);
    assert_eq!(s.updates.load(SeqCst), 1);
}

#[tokio::test]
async fn api_lists_module_components_under_their_ids() {
    let dir = storage();
    let rt = runtime_with(dir.clone(), None);
    rt.load(PIPELINE).await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let (addr, _task) =
        flow_runtime::http::serve(rt.clone(), "127.0.0.1:0".parse().unwrap(), cancel.clone())
            .await
            .unwrap();

    let (status, body) = http(addr, "GET", "/api/v0/web/components").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let inner = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "pipeline.p/test.passthrough.inner")
        .unwrap_or_else(|| panic!("inner component missing from {body}"));
    assert_eq!(inner["moduleID"], "pipeline.p");
    assert_eq!(inner["localID"], "test.passthrough.inner");
    let instance = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "pipeline.p")
        .unwrap();
    assert_eq!(
        instance["createdModuleIDs"],
        serde_json::json!(["pipeline.p"])
    );

    // The ID with its slash, raw or escaped as the UI sends it.
    for path in [
        "/api/v0/web/components/pipeline.p/test.passthrough.inner",
        "/api/v0/web/components/pipeline.p%2Ftest.passthrough.inner",
    ] {
        let (status, body) = http(addr, "GET", path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let c: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(c["id"], "pipeline.p/test.passthrough.inner");
        assert_eq!(c["referencesTo"], serde_json::json!(["pipeline.p"]));
    }
    let (status, body) = http(addr, "GET", "/api/v0/web/components/pipeline.p").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"out\""), "instance exports: {body}");

    let (status, body) = http(addr, "GET", "/api/v0/web/modules/pipeline.p/components").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["pipeline.p/test.passthrough.inner"]);
    cancel.cancel();
}

const NESTED: &str = r#"
declare "double" {
  argument "x" { }
  export "y" {
    value = argument.x.value * 2
  }
}

declare "outer" {
  argument "v" { }

  declare "inc" {
    argument "x" { }
    export "y" {
      value = argument.x.value + 1
    }
  }

  inc "i" {
    x = argument.v.value
  }

  double "d" {
    x = inc.i.y
  }

  test.passthrough "seen" {
    input = double.d.y
  }

  export "result" {
    value = test.passthrough.seen.output
  }
}

outer "o" {
  v = 4
}
"#;

#[tokio::test]
async fn nested_declares_and_modules_using_modules() {
    let (rt, _dir) = loaded(NESTED).await;
    assert_eq!(export(&rt, "outer.o", "result").await, Some(int(10)));
    assert_eq!(
        ids(&rt).await,
        [
            "outer.o",
            "outer.o/inc.i",
            "outer.o/double.d",
            "outer.o/test.passthrough.seen"
        ]
    );
    // `inc` is declared inside `outer`: not visible at the top level.
    let err = rejected(&format!("{NESTED}\ninc \"top\" {{\n  x = 1\n}}\n")).await;
    assert!(err.contains("unknown component \"inc\""), "{err}");
}

#[tokio::test]
async fn use_site_errors_have_positions() {
    let src = r#"declare "add" {
  argument "a" { }
  argument "b" {
    optional = true
  }
  export "sum" {
    value = argument.a.value
  }
}

add "x" {
  b     = 1
  extra = 2
}
"#;
    let got = rejected(src).await;
    let want = r#"config.river:11:1: missing required argument "a" of custom component "add"
   |
11 | add "x" {
   | ^^^
   = hint: set it in the block: a = ...

config.river:13:3: unknown argument "extra" of custom component "add"
   |
13 |   extra = 2
   |   ^^^^^
   = hint: its arguments are: a, b
"#;
    assert_eq!(got, want);

    let got = rejected(
        "declare \"m\" {\n  test.passthrough \"p\" {\n    input = argument.nope.value\n  }\n}\n\nm \"a\" { }\n",
    )
    .await;
    assert!(
        got.starts_with(
            "config.river:3:13: argument \"nope\" is not declared in custom component \"m\"\n"
        ),
        "{got}"
    );
    let got = rejected("argument \"x\" { }\n").await;
    assert!(
        got.starts_with(
            "config.river:1:1: block \"argument\" is only allowed inside a declare block\n"
        ),
        "{got}"
    );
    let got = rejected("declare \"loop\" {\n  loop \"again\" { }\n}\n\nloop \"l\" { }\n").await;
    assert!(
        got.contains("config.river:2:3: custom component \"loop\" uses itself"),
        "{got}"
    );
    let got = rejected("declare \"m\" {\n  export \"e\" { }\n}\nm \"a\" { }\n").await;
    assert!(
        got.contains("config.river:2:3: missing required attribute \"value\" in block \"export\""),
        "{got}"
    );
}

#[tokio::test]
async fn cycles_through_a_module_are_rejected() {
    let src = r#"declare "echo" {
  argument "in" { }
  export "out" {
    value = argument.in.value
  }
}

echo "e" {
  in = test.passthrough.a.output
}

test.passthrough "a" {
  input = echo.e.out
}
"#;
    let got = rejected(src).await;
    assert!(
        got.starts_with("config.river:8:1: cycle: echo.e, test.passthrough.a\n"),
        "{got}"
    );

    // A cycle inside a module body names the inner components' IDs.
    let got = rejected(
        "declare \"m\" {\n  test.passthrough \"a\" { input = test.passthrough.b.output }\n  test.passthrough \"b\" { input = test.passthrough.a.output }\n}\n\nm \"x\" { }\n",
    )
    .await;
    assert!(
        got.starts_with(
            "config.river:2:3: cycle: m.x/test.passthrough.a, m.x/test.passthrough.b\n"
        ),
        "{got}"
    );
    // An instance reading its own export.
    let got = rejected(
        "declare \"echo\" {\n  argument \"in\" { }\n  export \"out\" { value = 1 }\n}\n\necho \"e\" {\n  in = echo.e.out\n}\n",
    )
    .await;
    assert!(
        got.starts_with("config.river:7:8: component \"echo.e\" references itself\n"),
        "{got}"
    );
}

const TWO: &str = r#"
declare "two" {
  argument "a" { }
  argument "b" { }

  test.passthrough "pa" {
    input = argument.a.value
  }

  test.passthrough "pb" {
    input = argument.b.value
  }
}

two "t" {
  a = 1
  b = 2
}
"#;

#[tokio::test]
async fn reload_changing_an_argument_updates_only_its_dependants() {
    let (rt, dir) = loaded(TWO).await;
    let (pa, pb) = (
        stats(&dir.join("two.t/test.passthrough.pa")),
        stats(&dir.join("two.t/test.passthrough.pb")),
    );
    assert_eq!(
        export(&rt, "two.t/test.passthrough.pa", "output").await,
        Some(int(1))
    );
    rt.load(&TWO.replace("a = 1", "a = 3")).await.unwrap();
    assert_eq!(
        export(&rt, "two.t/test.passthrough.pa", "output").await,
        Some(int(3))
    );
    assert_eq!(
        export(&rt, "two.t/test.passthrough.pb", "output").await,
        Some(int(2))
    );
    assert_eq!(pa.updates.load(SeqCst), 1, "pa follows its argument");
    assert_eq!(pb.updates.load(SeqCst), 0, "pb's argument did not change");
    for s in [&pa, &pb] {
        assert_eq!(s.builds.load(SeqCst), 1, "not rebuilt");
        assert_eq!(s.run_stops.load(SeqCst), 0, "not stopped");
    }

    // Renaming the instance replaces its components.
    rt.load(&TWO.replace("two \"t\"", "two \"u\""))
        .await
        .unwrap();
    assert_eq!(
        pa.run_stops.load(SeqCst),
        1,
        "old instance's component stopped"
    );
    assert_eq!(
        ids(&rt).await,
        [
            "two.u",
            "two.u/test.passthrough.pa",
            "two.u/test.passthrough.pb"
        ]
    );
}

const LIB: &str = r#"declare "add" {
  argument "a" { }
  argument "b" { }
  export "sum" {
    value = argument.a.value + argument.b.value
  }
}
"#;

#[tokio::test]
async fn import_string_namespaces_declares() {
    let src = format!(
        "import.string \"math\" {{\n  content = {}\n}}\n\nmath.add \"x\" {{\n  a = 1\n  b = 2\n}}\n\ntest.passthrough \"out\" {{\n  input = math.add.x.sum\n}}\n",
        river_parser::go_quote(LIB)
    );
    let (rt, _dir) = loaded(&src).await;
    assert_eq!(
        export(&rt, "test.passthrough.out", "output").await,
        Some(int(3))
    );
    assert_eq!(ids(&rt).await, ["math.add.x", "test.passthrough.out"]);

    // An error inside the imported module names the import.
    let bad = LIB.replace("export \"sum\"", "nope.thing \"t\" { }\n  export \"sum\"");
    let got = rejected(&format!(
        "import.string \"math\" {{\n  content = {}\n}}\n\nmath.add \"x\" {{\n  a = 1\n  b = 2\n}}\n",
        river_parser::go_quote(&bad)
    ))
    .await;
    assert!(
        got.starts_with("import.string.math:4:3: unknown component \"nope.thing\"\n"),
        "{got}"
    );
    // Only declare and import blocks may be imported.
    let got = rejected(&format!(
        "import.string \"m\" {{\n  content = {}\n}}\n",
        river_parser::go_quote("test.pulse \"p\" { }\n")
    ))
    .await;
    assert!(
        got.starts_with(
            "import.string.m:1:1: block \"test.pulse\" is not allowed in an imported module"
        ),
        "{got}"
    );
    let got = rejected("math.add \"x\" { }\n").await;
    assert!(got.contains("unknown component \"math.add\""), "{got}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn import_file_of_a_file_follows_module_path_and_reloads() {
    let dir = storage();
    write(&dir.join("lib.alloy"), LIB);
    let config = dir.join("main.alloy");
    write(
        &config,
        "import.file \"lib\" {\n  filename = file.path_join(module_path, \"lib.alloy\")\n}\n\nlib.add \"x\" {\n  a = 2\n  b = 3\n}\n",
    );
    let rt = runtime_with(dir.join("data"), Some(config.clone()));
    rt.reload().await.unwrap();
    assert_eq!(export(&rt, "lib.add.x", "sum").await, Some(int(5)));
    assert!(rt.source_files().await.contains(&dir.join("lib.alloy")));

    // A change of the module file is picked up by the next reload.
    write(
        &dir.join("lib.alloy"),
        &LIB.replace("+ argument.b.value", "* argument.b.value"),
    );
    rt.reload().await.unwrap();
    assert_eq!(export(&rt, "lib.add.x", "sum").await, Some(int(6)));

    // Errors inside the imported file name that file.
    write(
        &dir.join("lib.alloy"),
        &LIB.replace(
            "argument \"b\" { }",
            "argument \"b\" { }\n  bad.thing \"t\" { }",
        ),
    );
    let err = rt.reload().await.unwrap_err().to_string();
    let lib = dir.join("lib.alloy").display().to_string();
    assert!(
        err.starts_with(&format!("{lib}:4:3: unknown component \"bad.thing\"\n")),
        "{err}"
    );
    // A rejected load still names the files it read (a watch follows them until fixed).
    write(&dir.join("other.alloy"), "oops \"x\" { }\n");
    write(
        &config,
        "import.file \"o\" {\n  filename = file.path_join(module_path, \"other.alloy\")\n}\n",
    );
    assert!(rt.reload().await.is_err());
    assert!(rt.source_files().await.contains(&dir.join("other.alloy")));

    // A missing file is an error at the filename.
    write(
        &config,
        "import.file \"lib\" {\n  filename = \"/nonexistent/lib.alloy\"\n}\n",
    );
    let err = rt.reload().await.unwrap_err().to_string();
    assert!(
        err.starts_with("config.river:2:14: reading /nonexistent/lib.alloy: "),
        "{err}"
    );
}

#[tokio::test]
async fn import_file_of_a_directory_is_one_module() {
    let dir = storage();
    let modules = dir.join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    // `quad` (in one file) uses `double` (in another): one module.
    write(
        &modules.join("a_quad.alloy"),
        "declare \"quad\" {\n  argument \"x\" { }\n  double \"once\" {\n    x = argument.x.value\n  }\n  double \"twice\" {\n    x = double.once.y\n  }\n  export \"y\" {\n    value = double.twice.y\n  }\n}\n",
    );
    write(
        &modules.join("b_double.river"),
        "declare \"double\" {\n  argument \"x\" { }\n  export \"y\" {\n    value = argument.x.value * 2\n  }\n}\n",
    );
    write(&modules.join("ignored.txt"), "not a module");
    let src = format!(
        "import.file \"m\" {{\n  filename = {}\n}}\n\nm.quad \"q\" {{\n  x = 3\n}}\n",
        river_parser::go_quote(&modules.display().to_string())
    );
    let (rt, _d) = loaded(&src).await;
    assert_eq!(export(&rt, "m.quad.q", "y").await, Some(int(12)));
    assert_eq!(
        ids(&rt).await,
        ["m.quad.q", "m.quad.q/double.once", "m.quad.q/double.twice"]
    );
}

#[tokio::test]
async fn import_cycles_are_rejected() {
    let dir = storage();
    let (a, b) = (dir.join("a.alloy"), dir.join("b.alloy"));
    let import = |p: &Path| {
        format!(
            "import.file \"other\" {{\n  filename = {}\n}}\n",
            river_parser::go_quote(&p.display().to_string())
        )
    };
    write(&a, &import(&b));
    write(&b, &import(&a));
    let got = rejected(&import(&a)).await;
    assert!(got.contains("import cycle"), "{got}");
}

#[tokio::test]
async fn a_main_directory_is_one_configuration() {
    let dir = storage();
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    write(
        &config.join("a.alloy"),
        "test.passthrough \"first\" {\n  input = double.d.y\n}\n",
    );
    write(
        &config.join("b.river"),
        "declare \"double\" {\n  argument \"x\" { }\n  export \"y\" {\n    value = argument.x.value * 2\n  }\n}\n\ndouble \"d\" {\n  x = 21\n}\n",
    );
    let rt = Runtime::new(
        flow_runtime::testing::registry(),
        flow_runtime::RuntimeOptions {
            storage_path: dir.join("data"),
            file_name: "config".into(),
            config_path: Some(config.clone()),
        },
    );
    rt.reload().await.unwrap();
    assert_eq!(
        export(&rt, "test.passthrough.first", "output").await,
        Some(int(42))
    );

    // Diagnostics name the file they belong to; a duplicate ID names both files.
    write(
        &config.join("c.alloy"),
        "test.passthrough \"first\" {\n  input = 1\n}\n\nnope.x \"y\" { }\n",
    );
    let err = rt.reload().await.unwrap_err().to_string();
    assert!(
        err.starts_with("config/a.alloy:1:1: component \"test.passthrough.first\" declared again at config/c.alloy:1:1\n"),
        "{err}"
    );
    assert!(
        err.contains("\nconfig/c.alloy:1:1: component \"test.passthrough.first\" already declared at config/a.alloy:1:1\n"),
        "{err}"
    );
    assert!(
        err.contains("\nconfig/c.alloy:5:1: unknown component \"nope.x\"\n"),
        "{err}"
    );
}

#[tokio::test]
async fn a_new_export_reaches_only_the_components_of_the_argument_it_feeds() {
    let src = TWO
        .replace("a = 1", "a = test.pulse.src.count")
        .replace("two \"t\"", "test.pulse \"src\" { }\n\ntwo \"t\"");
    let (rt, dir) = loaded(&src).await;
    let (pa, pb) = (
        stats(&dir.join("two.t/test.passthrough.pa")),
        stats(&dir.join("two.t/test.passthrough.pb")),
    );
    fire(&dir.join("test.pulse.src"));
    wait_for("the pulse's count inside the module", || async {
        export(&rt, "two.t/test.passthrough.pa", "output").await == Some(int(1))
    })
    .await;
    assert_eq!(pa.updates.load(SeqCst), 1);
    assert_eq!(pb.updates.load(SeqCst), 0, "argument b did not change");
    let t = rt.component("two.t").await.unwrap();
    assert_eq!(t.references_to, ["test.pulse.src"]);
}

#[tokio::test]
async fn evaluation_errors_inside_an_import_name_the_import() {
    let lib = "declare \"m\" {\n  argument \"x\" { }\n  test.sum \"s\" {\n    inputs = [argument.x.value, \"two\"]\n  }\n}\n";
    let src = format!(
        "import.string \"lib\" {{\n  content = {}\n}}\n\nlib.m \"a\" {{\n  x = 1\n}}\n",
        river_parser::go_quote(lib)
    );
    let rt = runtime_with(storage(), None);
    match rt.load(&src).await {
        Err(LoadError::Evaluation { rendered, .. }) => assert_eq!(
            rendered.lines().next(),
            Some("import.string.lib:4:5: inputs[1] should be number, got string"),
            "{rendered}"
        ),
        other => panic!("expected an evaluation error, got {other:?}"),
    }
    // The failing component is the one inside the instance.
    let s = rt.component("lib.m.a/test.sum.s").await.unwrap();
    assert_eq!(s.health.state, flow_runtime::HealthState::Unhealthy);
}

#[tokio::test]
async fn a_declare_may_import_modules_of_its_own() {
    let src = format!(
        "declare \"wrapper\" {{\n  import.string \"math\" {{\n    content = {}\n  }}\n\n  math.add \"inner\" {{\n    a = 20\n    b = 22\n  }}\n\n  export \"answer\" {{\n    value = math.add.inner.sum\n  }}\n}}\n\nwrapper \"w\" {{ }}\n",
        river_parser::go_quote(LIB)
    );
    let (rt, _dir) = loaded(&src).await;
    assert_eq!(export(&rt, "wrapper.w", "answer").await, Some(int(42)));
    assert_eq!(ids(&rt).await, ["wrapper.w", "wrapper.w/math.add.inner"]);
    // The import is local to the declare.
    let err = rejected(&format!(
        "{src}\nmath.add \"top\" {{\n  a = 1\n  b = 2\n}}\n"
    ))
    .await;
    assert!(err.contains("unknown component \"math.add\""), "{err}");
}
