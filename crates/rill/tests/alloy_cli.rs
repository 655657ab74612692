//! The Alloy-compatible command line, run as a binary: `rill validate` (files and directories,
//! exit codes, every diagnostic with its `file:line:col`), `rill fmt --test`, and the `rill run`
//! flags taken from `alloy run` (`--stability.level`, unsupported Alloy flags named).

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common_rel.rs"]
mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn rill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rill"))
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, contents).unwrap();
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn validate(path: &Path) -> Output {
    rill().arg("validate").arg(path).output().unwrap()
}

const WRITE: &str = r#"pyroscope.write "staging" {
  endpoint {
    url = "http://pyroscope:4040"
  }
}
"#;

const EBPF: &str = r#"pyroscope.ebpf "default" {
  forward_to = [pyroscope.write.staging.receiver]
  targets    = [{ "service_name" = "host" }]
}
"#;

// --- validate --------------------------------------------------------------------------------

#[test]
fn validate_accepts_the_examples_silently() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/river");
    for name in ["docker.river", "kubernetes.river", "local.river"] {
        let out = validate(&examples.join(name));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{name}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn validate_reports_every_argument_error_with_its_position() {
    let dir = support::tmpdir("validate-args");
    let src = r#"discovery.docker "linux" {
  host   = "unix:///var/run/docker.sock"
  colour = "red"
}

pyroscope.write "staging" {
  endpoint {
    url = ["not", "a", "url"]
  }
}

discovery.relabel "x" {
}

pyroscope.ebpf "default" {
  forward_to  = [pyroscope.write.staging.receiver]
  targets     = discovery.docker.linux.targets
  sample_rate = "fast"
}
"#;
    let path = write(&dir, "bad.alloy", src);
    let out = validate(&path);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    let shown = path.display().to_string();
    for (pos, what) in [
        ("3:3", "colour"),
        ("8:", "url"),
        ("12:1", "missing required attribute \"targets\""),
        ("18:", "sample_rate"),
    ] {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("{shown}:{pos}")))
            .unwrap_or_else(|| panic!("no diagnostic at {pos}:\n{err}"));
        assert!(line.contains(what), "{line}\n{err}");
    }
    assert!(err.contains("3 |   colour = \"red\""), "{err}");
    assert!(err.contains('^'), "{err}");
    assert!(
        err.trim_end().ends_with("error: validation failed"),
        "{err}"
    );
}

#[test]
fn validate_reports_every_graph_error() {
    let dir = support::tmpdir("validate-graph");
    let src = r#"pyroscope.ebpf "default" {
  forward_to = [pyroscope.write.nope.receiver]
  targets    = []
}

pyroscope.scrape "s" {
}

discovery.relabel "a" {
  targets = discovery.relabel.b.output
}

discovery.relabel "b" {
  targets = discovery.relabel.a.output
}
"#;
    let path = write(&dir, "graph.river", src);
    let out = validate(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let shown = path.display().to_string();
    assert!(
        err.contains(&format!(
            "{shown}:2:17: component \"pyroscope.write.nope.receiver\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{shown}:6:1: unknown component \"pyroscope.scrape\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{shown}:9:1: cycle: discovery.relabel.a, discovery.relabel.b"
        )),
        "{err}"
    );
}

#[test]
fn validate_reports_syntax_errors() {
    let dir = support::tmpdir("validate-syntax");
    let path = write(
        &dir,
        "syntax.alloy",
        "pyroscope.write \"w\" {\n  endpoint {\n    url = \n  }\n}\n",
    );
    let out = validate(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:4:", path.display())), "{err}");
}

#[test]
fn validate_takes_a_directory_as_one_configuration() {
    let dir = support::tmpdir("validate-dir");
    write(&dir, "a_write.alloy", WRITE);
    // References the component of the other file.
    write(&dir, "b_ebpf.river", EBPF);
    // Neither of these is part of the configuration.
    write(&dir, "notes.txt", "this is not { river");
    write(&dir, "nested/broken.alloy", "this is not { river");
    let out = validate(&dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stderr.is_empty());

    // Errors are reported against the file they are in, with that file's positions; an ID
    // declared in two files is reported in both.
    write(&dir, "c_more.alloy", "pyroscope.write \"staging\" {\n  endpoint {\n    url = \"http://x\"\n  }\n}\n\ndiscovery.relabel \"r\" {\n  targets = discovery.relabel.missing.output\n}\n");
    let out = validate(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let a = dir.join("a_write.alloy").display().to_string();
    let c = dir.join("c_more.alloy").display().to_string();
    assert!(
        err.contains(&format!(
            "{c}:1:1: component \"pyroscope.write.staging\" already declared"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{a}:1:1: component \"pyroscope.write.staging\" declared again"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{c}:8:13: component \"discovery.relabel.missing.output\""
        )),
        "{err}"
    );
    assert!(
        !err.contains("broken.alloy") && !err.contains("notes.txt"),
        "{err}"
    );
}

#[test]
fn validate_rejects_a_directory_without_configuration_files_and_bad_flags() {
    let dir = support::tmpdir("validate-empty");
    write(&dir, "readme.md", "nothing here");
    let out = validate(&dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no *.alloy or *.river files"),
        "{}",
        stderr(&out)
    );

    let path = write(&dir, "ok.alloy", WRITE);
    let out = rill()
        .args(["validate", "--stability.level=experimental"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = rill()
        .args(["validate", "--stability.level=beta"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("generally-available"),
        "{}",
        stderr(&out)
    );
    let out = rill()
        .args(["validate", "--feature.community-components.enabled"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("rill does not support --feature.community-components.enabled (Alloy flag)"),
        "{}",
        stderr(&out)
    );
}

// --- fmt --test ------------------------------------------------------------------------------

const UGLY: &str = "a=1\nlonger_name=[1,2]\n";
const PRETTY: &str = "a           = 1\nlonger_name = [1, 2]\n";

#[test]
fn fmt_test_names_unformatted_files_and_changes_nothing() {
    let dir = support::tmpdir("fmt-test");
    let ugly = write(&dir, "ugly.river", UGLY);
    let pretty = write(&dir, "pretty.river", PRETTY);

    let out = rill()
        .args(["fmt", "--test"])
        .arg(&pretty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());

    let out = rill()
        .args(["fmt", "-t"])
        .arg(&pretty)
        .arg(&ugly)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "file {} is not formatted correctly",
            ugly.display()
        )),
        "{err}"
    );
    assert!(!err.contains("pretty.river"), "{err}");
    assert_eq!(std::fs::read_to_string(&ugly).unwrap(), UGLY);

    // --write and --test exclude each other.
    let out = rill()
        .args(["fmt", "-w", "-t"])
        .arg(&ugly)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&ugly).unwrap(), UGLY);
}

#[test]
fn fmt_without_a_file_reads_standard_input() {
    let mut child = rill()
        .args(["fmt", "--test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(UGLY.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("file <stdin> is not formatted correctly"),
        "{}",
        stderr(&out)
    );

    let mut child = rill()
        .arg("fmt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(UGLY.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), PRETTY);
}

// --- run flags -------------------------------------------------------------------------------

#[test]
fn run_names_alloy_flags_it_does_not_support() {
    let dir = support::tmpdir("run-flags");
    let path = write(&dir, "c.alloy", WRITE);
    for flag in [
        "--cluster.enabled",
        "--cluster.name=prod",
        "--server.http.enable-pprof=false",
    ] {
        let out = rill().arg("run").arg(flag).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let name = flag.split('=').next().unwrap();
        assert!(
            stderr(&out).contains(&format!("rill does not support {name} (Alloy flag)")),
            "{flag}: {}",
            stderr(&out)
        );
    }
    // Other unknown flags keep clap's message.
    let out = rill()
        .args(["run", "--no-such-flag"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unexpected argument '--no-such-flag'"),
        "{}",
        stderr(&out)
    );
    // Values are checked as Alloy does.
    for bad in ["--stability.level=beta", "--config.format=prometheus"] {
        let out = rill().arg("run").arg(bad).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            stderr(&out).contains("invalid value"),
            "{bad}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn run_accepts_alloy_flags_and_logs_storage_path_and_stability_level() {
    let dir = support::tmpdir("run-accepts");
    let path = write(&dir, "c.alloy", WRITE);
    let addr = support::free_addr();
    let mut cmd = support::rill_cmd(Path::new(env!("CARGO_BIN_EXE_rill")), &path, addr);
    cmd.args([
        "--stability.level=experimental",
        "--config.format=alloy",
        "--server.http.ui-path-prefix=/",
        "--disable-reporting",
    ]);
    let mut rill = support::Rill::spawn(cmd);
    support::wait_until("the run configuration log", 20, || {
        rill.logs().contains("run configuration")
    });
    let logs = rill.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("run configuration"))
        .unwrap();
    assert!(line.contains("experimental"), "{line}");
    assert!(
        line.contains(&dir.join("data").display().to_string()),
        "{line}"
    );
    support::wait_until("ready", 20, || {
        support::get(addr, "/-/ready").is_some_and(|(code, _, _)| code == 200)
    });
    rill.signal("-TERM");
    assert!(rill.wait_exit(30).success(), "{}", rill.logs());
}
