//! Shutdown of `rill run` end to end (root, real eBPF): with a long `collect_interval`,
//! SIGTERM after a few seconds must flush the partial collection of `pyroscope.ebpf` through
//! `pyroscope.write` to the receiver before the process exits, to every endpoint.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common_rel.rs"]
mod common_rel;

use common_rel::{free_addr, get, rill_cmd, tmpdir, wait_until, Recorder, Rill};
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
#[ignore = "needs root and eBPF"]
fn sigterm_flushes_last_collection_to_every_writer() {
    let dir = tmpdir("shutdown");
    let a = Recorder::start(200);
    let b = Recorder::start(200);
    // A CPU burner without forks (shell arithmetic), profiled alone: symbolizing the whole
    // host in a debug build takes longer than the test should.
    let mut burner = std::process::Command::new("sh")
        .args(["-c", "i=0; while [ $i -lt 100000000 ]; do i=$((i+1)); done"])
        .spawn()
        .unwrap();
    let burner_pid = burner.id();
    let cfg = dir.join("config.river");
    std::fs::write(
        &cfg,
        format!(
            r#"logging {{
  level = "debug"
}}

pyroscope.write "a" {{
  endpoint {{
    url = "http://{a}"
  }}
}}

pyroscope.write "b" {{
  endpoint {{
    url = "http://{b}"
  }}
}}

pyroscope.ebpf "cpu" {{
  targets          = [{{ "__process_pid__" = "{pid}", "service_name" = "shutdown-test" }}]
  collect_interval = "10m"
  forward_to       = [pyroscope.write.a.receiver, pyroscope.write.b.receiver]
}}
"#,
            a = a.addr,
            b = b.addr,
            pid = burner_pid
        ),
    )
    .unwrap();
    let addr = free_addr();
    let mut rill = Rill::spawn(rill_cmd(Path::new(env!("CARGO_BIN_EXE_rill")), &cfg, addr));
    wait_until("ebpf profiling", 30, || {
        get(addr, "/api/v0/web/components/pyroscope.ebpf.cpu")
            .is_some_and(|(_, _, b)| b.contains("profiling"))
    });
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        a.requests().is_empty() && b.requests().is_empty(),
        "a push before SIGTERM: the interval is 10m"
    );
    let term = Instant::now();
    rill.signal("-TERM");
    let st = rill.wait_exit(30);
    let _ = burner.kill();
    let _ = burner.wait();
    let logs = rill.logs();
    assert!(st.success(), "exit {st}\n{logs}");
    for (name, r) in [("a", &a), ("b", &b)] {
        let got = r.requests();
        let push: Vec<_> = got
            .iter()
            .filter(|q| q.method == "POST" && q.path == "/push.v1.PusherService/Push")
            .collect();
        assert!(
            !push.is_empty(),
            "writer {name} received nothing after SIGTERM ({} requests)\n{logs}",
            got.len()
        );
        for p in &push {
            assert!(p.at >= term, "push before SIGTERM");
            assert!(p.body.len() > 50, "tiny push body ({} bytes)", p.body.len());
            // The gzipped pprof travels inside the request.
            assert!(
                p.body.windows(2).any(|w| w == [0x1f, 0x8b]),
                "no gzip profile in the push"
            );
        }
    }
}

/// Starts `rill run` with the test components and `extra` arguments on a config holding one
/// `test.slow_stop` that needs `stop_delay` to stop; returns it once ready.
fn start_slow_stop(tag: &str, stop_delay: &str, extra: &[&str]) -> Rill {
    let dir = tmpdir(tag);
    let cfg = dir.join("config.river");
    std::fs::write(
        &cfg,
        format!("test.slow_stop \"flush\" {{\n  stop_delay = \"{stop_delay}\"\n}}\n"),
    )
    .unwrap();
    let addr = free_addr();
    let mut cmd = rill_cmd(Path::new(env!("CARGO_BIN_EXE_rill")), &cfg, addr);
    cmd.arg("--feature.test-components").args(extra);
    let rill = Rill::spawn(cmd);
    wait_until("rill ready", 30, || {
        get(addr, "/-/ready").is_some_and(|(status, _, _)| status == 200)
    });
    rill
}

#[test]
fn sigterm_exits_within_the_shutdown_timeout_when_a_component_never_stops() {
    // The component's stop takes an hour of blocking work (like a final collect stuck in
    // symbolization): rill must give up on it after --shutdown.timeout, say which component it
    // abandoned, and exit; the tokio runtime must not wait for the blocking thread.
    let mut rill = start_slow_stop("shutdown-stuck", "1h", &["--shutdown.timeout=3s"]);
    let term = Instant::now();
    rill.signal("-TERM");
    let st = rill.wait_exit(20);
    let took = term.elapsed();
    let logs = rill.logs();
    assert!(st.success(), "exit {st}\n{logs}");
    assert!(
        took >= Duration::from_secs(3),
        "the component got its 3 s: exited after {took:?}\n{logs}"
    );
    // 3 s budget + 2 s grace + 1 s for the runtime, and some slack for a loaded machine.
    assert!(
        took < Duration::from_secs(9),
        "exited {took:?} after SIGTERM\n{logs}"
    );
    let warn = logs
        .lines()
        .find(|l| l.contains("did not stop within the shutdown budget"))
        .unwrap_or_else(|| panic!("no warning naming the component\n{logs}"));
    assert!(
        warn.contains("level=warn") && warn.contains("test.slow_stop.flush"),
        "{warn}"
    );
    assert!(
        logs.contains("exiting without waiting for components that did not stop"),
        "{logs}"
    );
    assert!(!logs.contains("test.slow_stop: stopped"), "{logs}");
}

#[test]
fn sigterm_waits_for_a_component_that_stops_within_the_timeout() {
    // The default budget (30 s) is not cut short: a 2 s flush completes before the exit.
    let mut rill = start_slow_stop("shutdown-slow", "2s", &[]);
    let term = Instant::now();
    rill.signal("-TERM");
    let st = rill.wait_exit(30);
    let took = term.elapsed();
    let logs = rill.logs();
    assert!(st.success(), "exit {st}\n{logs}");
    assert!(
        took >= Duration::from_secs(2),
        "exited after {took:?}, before the component stopped\n{logs}"
    );
    assert!(logs.contains("test.slow_stop: stopped"), "{logs}");
    assert!(!logs.contains("did not stop"), "{logs}");
    assert!(logs.contains("msg=stopped"), "{logs}");
}
