//! `rill profile` shows Python functions: Debian's python3 running a known chain, profiled for
//! 3 s in folded format; nearly every sample holds `<module>;outer;middle;leaf` (the leaf
//! allocates: native frames may follow it), and with
//! `--python false` none has a Python function (the eval loop's native frames instead).
#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use std::process::{Command, Stdio};

const CHAIN: &str = "
def leaf():
    n = 0
    while True: n += 1
def middle():
    leaf()
def outer():
    middle()
outer()
";

/// (samples whose stack holds `tail`, all samples) of a folded profile of `pid`.
fn folded_share(pid: u32, python: &str, tail: &str) -> (u64, u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_rill"))
        .args([
            "profile",
            "--duration",
            "3s",
            "--format",
            "folded",
            "-o",
            "-",
        ])
        .args(["--sample-rate", "499", "--python", python, "--pid"])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rill profile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut hit, mut all) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let count: u64 = count.parse().unwrap();
        all += count;
        if stack.contains(tail) {
            hit += count;
        }
    }
    (hit, all)
}

#[test]
#[ignore = "needs root, eBPF and /usr/bin/python3"]
fn rill_profile_shows_python_functions() {
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", CHAIN])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id();
    let (hit, all) = folded_share(pid, "true", "<module>;outer;middle;leaf");
    let (native_hit, native_all) = folded_share(pid, "false", "outer;middle;leaf");
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("python frames: {hit} of {all}; --python false: {native_hit} of {native_all}");
    assert!(all > 500 && hit * 100 >= all * 95, "{hit} of {all}");
    assert!(
        native_all > 500 && native_hit == 0,
        "{native_hit} of {native_all}"
    );
}
