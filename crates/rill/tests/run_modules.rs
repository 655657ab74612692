//! `rill run DIR` end to end: every `*.alloy` and `*.river` file of the directory is one
//! configuration (diagnostics name the file), module components appear in the API under their
//! IDs, and `--config.watch` reloads when a file imported with `import.file` changes.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common_rel.rs"]
mod common_rel;

use common_rel::{free_addr, get, tmpdir, wait_until};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rill_run(config: &Path, data: &Path, addr: SocketAddr) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rill"));
    c.arg("run")
        .arg(config)
        .arg(format!("--server.http.listen-addr={addr}"))
        .arg(format!("--storage.path={}", data.display()))
        .arg("--feature.test-components");
    c
}

const LIB: &str = "declare \"double\" {\n  argument \"x\" { }\n  test.passthrough \"inner\" {\n    input = argument.x.value * 2\n  }\n  export \"y\" {\n    value = test.passthrough.inner.output\n  }\n}\n";

#[test]
fn a_directory_with_an_imported_module_runs_and_reloads_on_module_change() {
    let dir = tmpdir("dir");
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let lib = dir.join("lib.alloy");
    std::fs::write(&lib, LIB).unwrap();
    std::fs::write(
        config.join("a.alloy"),
        format!(
            "import.file \"lib\" {{\n  filename = \"{}\"\n}}\n",
            lib.display()
        ),
    )
    .unwrap();
    std::fs::write(
        config.join("b.river"),
        "lib.double \"d\" {\n  x = 21\n}\n\ntest.passthrough \"seen\" {\n  input = lib.double.d.y\n}\n",
    )
    .unwrap();
    let addr = free_addr();
    let mut cmd = rill_run(&config, &dir.join("data"), addr);
    let _p = Proc(
        cmd.args(["--config.watch", "--config.watch-interval=100ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("ready", 20, || {
        get(addr, "/-/ready").is_some_and(|(s, _, _)| s == 200)
    });
    let (status, _, body) = get(
        addr,
        "/api/v0/web/components/lib.double.d/test.passthrough.inner",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"moduleID\":\"lib.double.d\""), "{body}");
    let (_, _, seen) = get(addr, "/api/v0/web/components/test.passthrough.seen").unwrap();
    assert!(seen.contains("42"), "{seen}");

    // The watch notices the imported file's change.
    std::fs::write(&lib, LIB.replace("inner", "renamed")).unwrap();
    wait_until("the renamed module component", 20, || {
        get(
            addr,
            "/api/v0/web/components/lib.double.d/test.passthrough.renamed",
        )
        .is_some_and(|(s, _, _)| s == 200)
    });
}

#[test]
fn diagnostics_of_a_directory_name_their_file() {
    let dir = tmpdir("bad");
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("a.alloy"), "test.pulse \"p\" { }\n").unwrap();
    std::fs::write(
        config.join("b.alloy"),
        "test.passthrough \"a\" {\n  input = test.pulse.q.count\n}\n",
    )
    .unwrap();
    let out = rill_run(&config, &dir.join("data"), free_addr())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:2:11: component \"test.pulse.q.count\" does not exist or is out of scope",
        config.join("b.alloy").display()
    );
    assert!(stderr.contains(&want), "{stderr}");
}
