//! Runs the `rill fmt` binary: stdout output, `--write` in place, `-` for stdin, and exit code 1
//! with `file:line:col` diagnostics on invalid input.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const UGLY: &str = "a=1\nlonger_name=[1,2]\nblock \"x\" {\n}\n";
const PRETTY: &str = "a           = 1\nlonger_name = [1, 2]\n\nblock \"x\" { }\n";

fn rill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rill"))
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rill-fmt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn prints_formatted_file_to_stdout_without_touching_it() {
    let path = temp_file("stdout.river", UGLY);
    let out = rill().arg("fmt").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), PRETTY);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), UGLY);
}

#[test]
fn write_rewrites_in_place_only_when_changed() {
    let path = temp_file("write.river", UGLY);
    let out = rill().args(["fmt", "--write"]).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), PRETTY);

    // Already formatted: the file is left alone (its modification time does not move).
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = rill().args(["fmt", "-w"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    let after = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(before, after);
}

#[test]
fn dash_reads_standard_input() {
    let mut child = rill()
        .args(["fmt", "-"])
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), PRETTY);
}

#[test]
fn invalid_input_exits_1_with_located_diagnostics() {
    let src = "ok = 1\nblock `raw` {\n}\nx = (1 +\n";
    let path = temp_file("bad.river", src);
    let out = rill().args(["fmt", "--write"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let shown = path.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{shown}:2:7: expected block label to be a double quoted string, but got \"`raw`\""
        )),
        "{stderr}"
    );
    // The second error is reported too, with its own location and caret.
    assert!(stderr.contains(&format!("{shown}:5:")), "{stderr}");
    assert!(stderr.contains("2 | block `raw` {"), "{stderr}");
    assert!(stderr.contains('^'), "{stderr}");
    // Nothing was written.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), src);
}

#[test]
fn missing_file_is_an_error() {
    let out = rill()
        .args(["fmt", "/nonexistent/rill-fmt.river"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent/rill-fmt.river"));
}
