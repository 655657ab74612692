//! `rill run` end to end: a failed first load exits non-zero with diagnostics; SIGHUP and
//! `--config.watch` reload the file; SIGTERM stops cleanly.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rill-run-test-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_string()))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &PathBuf, addr: SocketAddr, extra: &[&str]) -> Proc {
    let dir = config.parent().unwrap().join("data");
    Proc(
        Command::new(env!("CARGO_BIN_EXE_rill"))
            .arg("run")
            .arg(config)
            .arg(format!("--server.http.listen-addr={addr}"))
            .arg(format!("--storage.path={}", dir.display()))
            .arg("--feature.test-components")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
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
    wait_until("ready", || {
        get(addr, "/-/ready").is_some_and(|(s, _)| s == 200)
    });
    std::fs::write(
        &cfg,
        format!("{CONFIG}test.sum \"s\" {{ inputs = [1, 2] }}\n"),
    )
    .unwrap();
    signal(&p, "-HUP");
    wait_until("new component", || {
        get(addr, "/api/v0/web/components/test.sum.s").is_some_and(|(s, _)| s == 200)
    });
    signal(&p, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "rill did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // The logging block switched to JSON lines.
    let mut stderr = String::new();
    p.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
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
    wait_until("ready", || {
        get(addr, "/-/ready").is_some_and(|(s, _)| s == 200)
    });
    std::fs::write(&cfg, format!("{CONFIG}test.sum \"w\" {{ inputs = [4] }}\n")).unwrap();
    wait_until("watched change applied", || {
        get(addr, "/api/v0/web/components/test.sum.w").is_some_and(|(s, _)| s == 200)
    });
    // A broken edit is rejected and the running graph stays.
    std::fs::write(&cfg, format!("{CONFIG}test.sum \"w\" {{ inputs = [4\n")).unwrap();
    wait_until("failed reload recorded", || {
        get(addr, "/metrics").is_some_and(|(_, b)| b.contains("rill_config_last_load_successful 0"))
    });
    assert_eq!(
        get(addr, "/api/v0/web/components/test.sum.w").unwrap().0,
        200
    );
}
