//! Shutdown of `rill run` end to end (root, real eBPF): with a long `collect_interval`,
//! SIGTERM after a few seconds must flush the partial collection of `pyroscope.ebpf` through
//! `pyroscope.write` to the receiver before the process exits, to every endpoint.

mod common_rel;

use common_rel::{free_addr, get, rill_cmd, tmpdir, wait_until, Recorder, Rill};
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
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
