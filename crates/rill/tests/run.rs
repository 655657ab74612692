//! `rill run` end to end: a failed first load exits non-zero with diagnostics; SIGHUP and
//! `--config.watch` reload the file; SIGTERM stops cleanly.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common_rel.rs"]
mod common_rel;

use common_rel::{free_addr, get, rill_cmd, tmpdir, wait_until, Rill};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

/// `rill run CONFIG` with the test components and `extra` flags; its stderr is drained into
/// `Rill::logs` (an unread pipe fills with the debug logs and stalls rill).
fn spawn(config: &Path, addr: SocketAddr, extra: &[&str]) -> Rill {
    let mut cmd = rill_cmd(Path::new(env!("CARGO_BIN_EXE_rill")), config, addr);
    cmd.arg("--feature.test-components").args(extra);
    Rill::spawn(cmd)
}

const CONFIG: &str =
    "logging {\n  level = \"debug\"\n  format = \"json\"\n}\n\ntest.pulse \"p\" { }\n";

#[test]
fn failed_first_load_exits_non_zero_with_diagnostics() {
    let dir = tmpdir("bad");
    let cfg = dir.join("bad.river");
    std::fs::write(
        &cfg,
        "test.pulse \"p\" { }\ntest.passthrough \"a\" { input = test.pulse.q.count }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rill"))
        .arg("run")
        .arg(&cfg)
        .arg(format!("--server.http.listen-addr={}", free_addr()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg("--feature.test-components")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "bad.river:2:32: component \"test.pulse.q.count\" does not exist or is out of scope"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("2 | test.passthrough"), "{stderr}");
}

#[test]
fn sighup_reloads_and_sigterm_stops() {
    let dir = tmpdir("hup");
    let cfg = dir.join("config.river");
    std::fs::write(&cfg, CONFIG).unwrap();
    let addr = free_addr();
    let mut p = spawn(&cfg, addr, &[]);
    wait_until("ready", 20, || {
        get(addr, "/-/ready").is_some_and(|(s, _, _)| s == 200)
    });
    std::fs::write(
        &cfg,
        format!("{CONFIG}test.sum \"s\" {{ inputs = [1, 2] }}\n"),
    )
    .unwrap();
    p.signal("-HUP");
    wait_until("new component", 20, || {
        get(addr, "/api/v0/web/components/test.sum.s").is_some_and(|(s, _, _)| s == 200)
    });
    p.signal("-TERM");
    let status = p.wait_exit(20);
    assert!(status.success(), "{status}");
    // The logging block switched to JSON lines.
    let stderr = p.logs();
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with('{') && l.contains("\"level\"")),
        "{stderr}"
    );
}

#[test]
fn config_watch_reloads_on_change() {
    let dir = tmpdir("watch");
    let cfg = dir.join("config.river");
    std::fs::write(&cfg, CONFIG).unwrap();
    let addr = free_addr();
    let _p = spawn(
        &cfg,
        addr,
        &["--config.watch", "--config.watch-interval=100ms"],
    );
    wait_until("ready", 20, || {
        get(addr, "/-/ready").is_some_and(|(s, _, _)| s == 200)
    });
    std::fs::write(&cfg, format!("{CONFIG}test.sum \"w\" {{ inputs = [4] }}\n")).unwrap();
    wait_until("watched change applied", 20, || {
        get(addr, "/api/v0/web/components/test.sum.w").is_some_and(|(s, _, _)| s == 200)
    });
    // A broken edit is rejected and the running graph stays.
    std::fs::write(&cfg, format!("{CONFIG}test.sum \"w\" {{ inputs = [4\n")).unwrap();
    wait_until("failed reload recorded", 20, || {
        get(addr, "/metrics")
            .is_some_and(|(_, _, b)| b.contains("rill_config_last_load_successful 0"))
    });
    assert_eq!(
        get(addr, "/api/v0/web/components/test.sum.w").unwrap().0,
        200
    );
}
