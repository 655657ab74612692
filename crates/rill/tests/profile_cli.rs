//! `rill profile` end to end, as root: a static C program (`main → outer → middle → hot_leaf`
//! 75% / `cold_leaf` 25%, frame pointers; the pyroscope.ebpf test fixture) runs; `rill profile
//! --duration 5s --pid PID` writes a pprof that `go tool pprof -top` reads with `hot_leaf` on
//! top, and `--format folded` prints lines that parse as `frames count`. `--off-cpu` on a shell
//! loop that waits for `sleep` children gives about the run's wall time off CPU, in `wait4`.
//! FAILS (does not skip) without root, gcc or go.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rill-profile-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn output_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-output");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn require(tool: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {tool} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success()),
        "{tool} is required (golang-go for go, gcc)"
    );
}

fn require_root() {
    let out = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "rill profile tests need root (eBPF)"
    );
}

/// Builds the workload (static, frame pointers) into `dir`.
pub fn build_workload(dir: &Path) -> PathBuf {
    require("gcc");
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../components/tests/fixtures/ebpf/workload.c");
    let bin = dir.join("workload");
    let st = Command::new("gcc")
        .args(["-static", "-O1", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "gcc failed");
    bin
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rill(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The function of the first row of `go tool pprof -top`.
fn pprof_top(file: &Path) -> (String, String) {
    require("go");
    let out = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines().skip_while(|l| !l.contains("flat%"));
    lines.next();
    let first = lines.next().unwrap_or_default();
    let name = first
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    (name, text)
}

#[test]
#[ignore = "needs root and eBPF, Go toolchain"]
fn profile_pid_pprof_and_folded() {
    require_root();
    let dir = tmpdir("pid");
    let bin = build_workload(&dir);
    let w = Kill(Command::new(&bin).arg("cpu").spawn().unwrap());
    let pid = w.0.id().to_string();

    // pprof
    let pb = dir.join("workload.pb.gz");
    let out = rill(&[
        "profile",
        "--duration",
        "5s",
        "--pid",
        &pid,
        "--output",
        pb.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rill profile failed: {stderr}");
    // The summary: a header line, then hot_leaf first with about 75% self.
    let mut rows = stderr.lines().skip_while(|l| !l.contains("self%"));
    rows.next();
    let top = rows.next().unwrap_or_default();
    assert!(top.ends_with(" hot_leaf"), "summary:\n{stderr}");
    let samples: u64 = stderr
        .lines()
        .find(|l| l.contains(" samples in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // 97 Hz for 5 s of one busy thread: at most about 485 samples (fewer when the machine is
    // busy and the workload gets less than a whole CPU).
    assert!(
        (20..=600).contains(&samples),
        "{samples} samples:\n{stderr}"
    );
    let (name, text) = pprof_top(&pb);
    assert_eq!(name, "hot_leaf", "go tool pprof -top:\n{text}");
    std::fs::copy(&pb, output_dir().join("rill-profile-workload.pb.gz")).unwrap();
    std::fs::write(output_dir().join("rill-profile-top.txt"), &text).unwrap();

    // folded, on standard output
    let out = rill(&[
        "profile",
        "--duration",
        "5s",
        "--pid",
        &pid,
        "--format",
        "folded",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rill profile failed: {stderr}");
    let folded = String::from_utf8(out.stdout).unwrap();
    let mut total = 0u64;
    let mut best = (0u64, String::new());
    for line in folded.lines() {
        let (stack, count) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let count: u64 = count
            .parse()
            .unwrap_or_else(|_| panic!("bad count in {line:?}"));
        assert!(
            !stack.is_empty() && stack.split(';').all(|f| !f.is_empty()),
            "bad stack in {line:?}"
        );
        total += count;
        if count > best.0 {
            best = (count, stack.to_string());
        }
    }
    assert!(total >= 20, "{total} samples:\n{folded}");
    assert!(
        best.1.ends_with("main;outer;middle;hot_leaf"),
        "heaviest stack {best:?}:\n{folded}"
    );
    assert!(
        best.0 * 100 / total >= 55,
        "hot_leaf share {best:?} of {total}"
    );
    std::fs::write(output_dir().join("rill-profile-workload.folded"), &folded).unwrap();
    drop(w);
}

#[test]
#[ignore = "needs root and eBPF, Go toolchain"]
fn profile_off_cpu_of_a_waiting_shell() {
    require_root();
    let dir = tmpdir("offcpu");
    // One thread that is off CPU nearly all the time, waiting for its `sleep` children.
    let w = Kill(
        Command::new("sh")
            .args(["-c", "while :; do sleep 0.05; done"])
            .spawn()
            .unwrap(),
    );
    let pid = w.0.id().to_string();
    let pb = dir.join("offcpu.pb.gz");
    let out = rill(&[
        "profile",
        "--off-cpu",
        "--duration",
        "3s",
        "--pid",
        &pid,
        "--output",
        pb.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "rill profile --off-cpu failed: {stderr}"
    );
    let secs: f64 = stderr
        .lines()
        .find(|l| l.contains(" off CPU in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.trim_end_matches('s').parse().ok())
        .unwrap_or(0.0);
    // The run lasts 3 s (plus the probe's load): the shell waited about that long.
    assert!((2.2..=4.0).contains(&secs), "{secs} s off CPU:\n{stderr}");
    let (_, text) = pprof_top(&pb);
    assert!(text.contains("wait4"), "go tool pprof -top:\n{text}");
    std::fs::copy(&pb, output_dir().join("rill-profile-offcpu.pb.gz")).unwrap();
    let out = rill(&[
        "profile",
        "--off-cpu",
        "--duration",
        "2s",
        "--pid",
        &pid,
        "--format",
        "folded",
    ]);
    assert!(out.status.success());
    let folded = String::from_utf8(out.stdout).unwrap();
    let nanos: u64 = folded
        .lines()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert!(
        (1_400_000_000..=2_800_000_000).contains(&nanos),
        "{nanos} ns:\n{folded}"
    );
    assert!(folded.contains("wait4"), "{folded}");
    let out = rill(&["profile", "--off-cpu-threshold", "0.5"]);
    assert!(!out.status.success(), "the threshold needs --off-cpu");
    let out = rill(&["profile", "--off-cpu", "--off-cpu-threshold", "1.5"]);
    assert!(!out.status.success(), "out of range");
    drop(w);
}

#[test]
fn profile_rejects_bad_targets() {
    let out = rill(&["profile", "--duration", "1s", "--pid", "999999999"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no process with pid 999999999"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = rill(&["profile", "--container", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("container ID"));
    let out = rill(&["profile", "--duration", "0s"]);
    assert!(!out.status.success());
}
