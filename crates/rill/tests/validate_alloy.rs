//! `rill validate` on current Alloy configurations (no root needed): the examples and fixtures
//! of the end-to-end runs pass silently (a module directory imported with `import.file` and
//! `module_path`, the Helm chart's `declare`-wrapped module); errors inside modules are reported
//! at their `file:line:col` in the module's file, every one of them, on stderr only, with exit
//! code 1; `rill run` refuses the same configuration at the same position.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common_rel.rs"]
mod common_rel;

#[path = "support/alloy_e2e.rs"]
mod alloy_e2e;

use std::path::Path;
use std::process::{Command, Output};

use alloy_e2e::{copy_tree, example, fixture};
use common_rel::{free_addr, tmpdir};

fn validate(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rill"))
        .arg("validate")
        .arg(path)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `LINE:COL` (1-based) of the first occurrence of `needle` in file `path`.
fn position(path: &Path, needle: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {}", path.display()));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{line}:{col}")
}

/// Replaces `from` (which must occur once) by `to` in file `path`.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} in {}",
        path.display()
    );
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// Asserts a failed validation: exit code 1, nothing on stdout, each `(file, LINE:COL,
/// message part)` as a diagnostic line on stderr, and the final line.
fn assert_reports(out: &Output, expected: &[(&Path, String, &str)]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    for (file, pos, what) in expected {
        let prefix = format!("{}:{pos}: ", file.display());
        let line = err
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no diagnostic at {prefix}\n{err}"));
        assert!(line.contains(what), "{line}\n{err}");
    }
    assert!(
        err.trim_end().ends_with("error: validation failed"),
        "{err}"
    );
}

/// A temporary directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch(tmpdir(tag))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The modules fixture, copied to a fresh directory (`scratch.0/modules`).
fn modules_copy(tag: &str) -> (Scratch, std::path::PathBuf) {
    let scratch = Scratch::new(tag);
    let dir = scratch.0.join("modules");
    copy_tree(&fixture("modules"), &dir, &[]);
    (scratch, dir)
}

#[test]
fn current_alloy_examples_and_fixtures_validate_silently() {
    for path in [
        example("docker.alloy"),
        example("kubernetes.alloy"),
        example("host.alloy"),
        example("process.river"),
        fixture("helm-profiling.alloy"),
        fixture("process-join.alloy"),
        fixture("modules/config"),
    ] {
        let out = validate(&path);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            stderr(&out)
        );
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{}: nothing is printed on success: {}",
            path.display(),
            stderr(&out)
        );
    }
}

#[test]
fn argument_errors_in_two_module_files_are_both_reported_in_their_files() {
    let (_scratch, dir) = modules_copy("validate-module-args");
    let discovery = dir.join("lib/discovery.alloy");
    let profiling = dir.join("lib/profiling.alloy");
    edit(
        &discovery,
        "      container_id = false\n",
        "      container_id = false\n      pid          = true\n",
    );
    edit(
        &profiling,
        "comm             = \"label\"",
        "comm             = \"labels\"",
    );
    let out = validate(&dir.join("config"));
    assert_reports(
        &out,
        &[
            (
                &discovery,
                position(&discovery, "pid          = true"),
                "unrecognized attribute name \"pid\"",
            ),
            (
                &profiling,
                position(&profiling, "comm             = \"labels\""),
                "invalid comm mode \"labels\"",
            ),
        ],
    );
    let err = stderr(&out);
    assert!(err.contains("|       pid          = true"), "{err}");
    assert!(!err.contains("config/main.alloy"), "{err}");

    // `rill run` refuses it, at the first error, before anything starts (the components that
    // read the failed one report their own errors after it).
    let data = dir.join("data");
    let run = Command::new(env!("CARGO_BIN_EXE_rill"))
        .arg("run")
        .arg(dir.join("config"))
        .arg(format!("--server.http.listen-addr={}", free_addr()))
        .arg(format!("--storage.path={}", data.display()))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let run_err = stderr(&run);
    let at = format!(
        "{}:{}: unrecognized attribute name \"pid\"",
        discovery.display(),
        position(&discovery, "pid          = true")
    );
    assert!(run_err.contains(&at), "{run_err}");
}

#[test]
fn syntax_and_reference_errors_inside_modules_name_the_module_file() {
    // A syntax error in an imported file.
    let (_scratch, dir) = modules_copy("validate-module-syntax");
    let discovery = dir.join("lib/discovery.alloy");
    edit(
        &discovery,
        "    targets = discovery.process.all.targets\n",
        "    targets = \n",
    );
    let out = validate(&dir.join("config"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The parser sees the next line's block where the value should be.
    let line: usize = position(&discovery, "    targets = \n")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        err.lines().any(|l| l.starts_with(&format!(
            "{}:{}:5: cannot use a block as an expression",
            discovery.display(),
            line + 1
        ))),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // A reference to a component the module does not have, and a wrong use in the main file.
    let (_scratch2, dir) = modules_copy("validate-module-refs");
    let profiling = dir.join("lib/profiling.alloy");
    let main = dir.join("config/main.alloy");
    edit(
        &profiling,
        "targets          = programs.found.targets",
        "targets          = programs.lost.targets",
    );
    edit(
        &main,
        "  exe_regex    = \".*/shop-checkout\"\n",
        "  exe_regex    = \".*/shop-checkout\"\n  exe_regexp   = \"typo\"\n",
    );
    let out = validate(&dir.join("config"));
    assert_reports(
        &out,
        &[
            (
                &profiling,
                position(&profiling, "programs.lost.targets"),
                "component \"programs.lost.targets\" does not exist",
            ),
            (
                &main,
                position(&main, "exe_regexp"),
                "unknown argument \"exe_regexp\" of custom component \"profiling.host\"",
            ),
        ],
    );
}

#[test]
fn errors_inside_the_helm_charts_declare_are_reported_there() {
    let scratch = Scratch::new("validate-helm");
    let path = scratch.0.join("alloy-profiles.alloy");
    std::fs::copy(fixture("helm-profiling.alloy"), &path).unwrap();
    edit(&path, "demangle = \"none\"", "demangle = \"fancy\"");
    edit(
        &path,
        "    source_labels = [\"__meta_kubernetes_pod_phase\"]\n",
        "    source_labels = [\"__meta_kubernetes_pod_phase\"]\n    regexp = \"x\"\n",
    );
    let out = validate(&path);
    assert_reports(
        &out,
        &[
            (
                &path,
                position(&path, "demangle = \"fancy\""),
                "invalid demangle value \"fancy\"",
            ),
            (
                &path,
                position(&path, "regexp = \"x\""),
                "unrecognized attribute name \"regexp\"",
            ),
        ],
    );
}

#[test]
fn badly_formed_alloy_arguments_of_an_example_are_reported_at_the_attribute() {
    let scratch = Scratch::new("validate-probe-links");
    let path = scratch.0.join("docker.alloy");
    std::fs::copy(example("docker.alloy"), &path).unwrap();
    edit(
        &path,
        "  kernel_frames    = false        // user-space stacks only\n",
        "  kernel_frames    = false\n  probe_links      = [\"uprobe:shop:main\"]\n  comm_mode        = \"label\"\n",
    );
    let out = validate(&path);
    // The first argument error of the component: the unknown name.
    assert_reports(
        &out,
        &[(
            &path,
            position(&path, "comm_mode"),
            "unrecognized attribute name \"comm_mode\"",
        )],
    );
    edit(&path, "  comm_mode        = \"label\"\n", "");
    let out = validate(&path);
    assert_reports(
        &out,
        &[(
            &path,
            position(&path, "probe_links"),
            "invalid probe link \"uprobe:shop:main\"",
        )],
    );
}
