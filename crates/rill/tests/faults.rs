//! Faults around the configuration file of `rill run`: deleted, replaced by something
//! unreadable (a directory; root ignores file modes), or not UTF-8, then reloaded through
//! SIGHUP and `/-/reload`: the reload fails with a clear error, the old graph keeps running
//! unchanged, and once the file is back a reload applies it.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common_rel.rs"]
mod common_rel;

use common_rel::{free_addr, get, raw, rill_cmd, tmpdir, wait_until, Rill};
use std::path::Path;
use std::time::Duration;

const V1: &str =
    "pyroscope.write \"a\" {\n  endpoint {\n    url = \"http://127.0.0.1:9\"\n  }\n}\n";

fn components(addr: std::net::SocketAddr) -> String {
    let (status, _, body) = get(addr, "/api/v0/web/components").unwrap();
    assert_eq!(status, 200);
    // Health timestamps of components without a health of their own are the request time.
    let mut out = String::new();
    let mut rest = body.as_str();
    while let Some(i) = rest.find("\"updatedTime\":\"") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 15..];
        rest = tail.find('"').map_or("", |j| &tail[j + 1..]);
    }
    out.push_str(rest);
    out
}

fn post_reload(addr: std::net::SocketAddr) -> String {
    raw(
        addr,
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap()
}

#[test]
fn broken_config_file_keeps_the_old_graph_running() {
    let dir = tmpdir("cfgfault");
    let cfg = dir.join("config.river");
    std::fs::write(&cfg, V1).unwrap();
    let addr = free_addr();
    let mut rill = Rill::spawn(rill_cmd(Path::new(env!("CARGO_BIN_EXE_rill")), &cfg, addr));
    wait_until("ready", 20, || {
        get(addr, "/-/ready").is_some_and(|(s, _, _)| s == 200)
    });
    let before = components(addr);
    assert!(before.contains("pyroscope.write.a"), "{before}");

    // 1. Deleted.
    std::fs::remove_file(&cfg).unwrap();
    let resp = post_reload(addr);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.contains("config.river"),
        "error does not name the file: {resp}"
    );
    rill.signal("-HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        components(addr),
        before,
        "graph changed after a failed reload"
    );
    assert_eq!(get(addr, "/-/ready").unwrap().0, 200);

    // 2. Unreadable (a directory in its place).
    std::fs::create_dir(&cfg).unwrap();
    let resp = post_reload(addr);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    rill.signal("-HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(components(addr), before);
    std::fs::remove_dir(&cfg).unwrap();

    // 3. Not UTF-8.
    std::fs::write(&cfg, b"pyroscope.write \"a\" {\xff\xfe}\n").unwrap();
    let resp = post_reload(addr);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(components(addr), before);

    // 4. Back, with a change: the reload applies it.
    std::fs::write(
        &cfg,
        format!("{V1}\npyroscope.write \"b\" {{\n  endpoint {{\n    url = \"http://127.0.0.1:9\"\n  }}\n}}\n"),
    )
    .unwrap();
    rill.signal("-HUP");
    wait_until("the new component", 20, || {
        components(addr).contains("pyroscope.write.b")
    });
    assert!(rill.child.try_wait().unwrap().is_none(), "rill exited");
    let logs = rill.logs();
    assert!(
        logs.to_ascii_lowercase().contains("reload"),
        "failed reloads not logged:\n{logs}"
    );
    rill.signal("-TERM");
    assert!(rill.wait_exit(30).success());
}
