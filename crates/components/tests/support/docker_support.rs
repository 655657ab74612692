//! Helpers for `discovery.docker` tests against a real Docker engine: start `dockerd` when it is
//! not running, build a FROM-scratch image around a static C program, run the `docker` CLI, and a
//! serial guard (tests in one binary share the engine and one of them restarts its own engine).

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub const MAIN_HOST: &str = "unix:///var/run/docker.sock";
pub const IMAGE: &str = "rill-test-sleeper:latest";

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the Docker tests of one test binary.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `docker [-H host] args…`, panicking with stderr on failure; returns trimmed stdout.
pub fn dk(host: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap_or_else(|e| panic!("running docker {args:?}: {e} (is docker.io installed?)"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Like [`dk`] but ignores failures (cleanup).
pub fn dk_quiet(host: &str, args: &[&str]) {
    let _ = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn engine_up(host: &str) -> bool {
    Command::new("docker")
        .args(["-H", host, "version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn wait_engine(host: &str, timeout: Duration) {
    let start = Instant::now();
    while !engine_up(host) {
        assert!(
            start.elapsed() < timeout,
            "Docker engine at {host} did not come up within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Makes sure the system engine runs (starts `dockerd` in the background when it does not).
pub fn ensure_dockerd() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        if engine_up(MAIN_HOST) {
            return;
        }
        let log = std::fs::File::create("/tmp/rill-test-dockerd.log").expect("dockerd log file");
        // The engine is meant to outlive the test process; it is never waited for.
        #[allow(
            clippy::zombie_processes,
            reason = "the engine outlives the test process"
        )]
        let _engine = Command::new("dockerd")
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("starting dockerd (is docker.io installed? tests need root)");
        wait_engine(MAIN_HOST, Duration::from_secs(60));
    });
}

/// Compiles the static test program once per test process.
pub fn sleeper_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rill-docker-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("image dir");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docker/sleeper.c");
        let bin = dir.join("sleeper");
        let st = Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&bin)
            .arg(&src)
            .status()
            .expect("running gcc");
        assert!(st.success(), "gcc -static failed");
        std::fs::write(
            dir.join("Dockerfile"),
            "FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT [\"/sleeper\"]\n",
        )
        .expect("Dockerfile");
        dir
    })
    .clone()
}

/// Builds the FROM-scratch image in the engine at `host`.
pub fn build_image(host: &str) {
    let dir = sleeper_binary();
    dk(
        host,
        &[
            "build",
            "-q",
            "-t",
            IMAGE,
            dir.to_str().expect("utf-8 path"),
        ],
    );
}

/// Main engine up and image built (once per process).
pub fn main_engine() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        ensure_dockerd();
        build_image(MAIN_HOST);
    });
}

/// Polls `cond` until true or `timeout`; returns the time it took.
pub async fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Removes the containers and networks labeled `rill.test=<run>` when dropped.
pub struct Cleanup {
    pub host: String,
    pub run: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=rill.test={}", self.run);
        let ids = Command::new("docker")
            .args(["-H", &self.host, "ps", "-aq", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            dk_quiet(&self.host, &args);
        }
        let nets = Command::new("docker")
            .args(["-H", &self.host, "network", "ls", "-q", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for n in nets.split_whitespace() {
            dk_quiet(&self.host, &["network", "rm", n]);
        }
    }
}

/// A private `dockerd` (own socket, data root, containerd namespace and bridge interface) that a
/// test may stop and start without touching the system engine. (`--bridge=none` is not an option:
/// dockerd then deletes the `docker0` interface that the system engine uses.)
pub struct PrivateEngine {
    pub dir: PathBuf,
    pub host: String,
    bridge: String,
    child: Option<Child>,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl PrivateEngine {
    pub fn new(name: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/rill-dockerd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("engine dir");
        let host = format!("unix://{}/docker.sock", dir.display());
        let bridge = format!("rillbr{}", std::process::id() % 100_000);
        ip(&["link", "del", &bridge]);
        assert!(
            ip(&["link", "add", "name", &bridge, "type", "bridge"]),
            "creating bridge {bridge} (needs root and iproute2)"
        );
        // An address is required by dockerd; no traffic is ever sent on this bridge.
        assert!(ip(&["addr", "add", "172.31.254.1/24", "dev", &bridge]));
        assert!(ip(&["link", "set", &bridge, "up"]));
        let mut e = PrivateEngine {
            dir,
            host,
            bridge,
            child: None,
        };
        e.start();
        e
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "engine already running");
        let d = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .expect("log");
        let ns = format!(
            "rill-{}",
            d.file_name().and_then(|n| n.to_str()).unwrap_or("test")
        );
        let child = Command::new("dockerd")
            .arg("-H")
            .arg(&self.host)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg(format!("--bridge={}", self.bridge))
            .args(["--iptables=false", "--ip-masq=false"])
            .arg("--containerd-namespace")
            .arg(&ns)
            .arg("--containerd-plugins-namespace")
            .arg(format!("{ns}-plugins"))
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("starting a private dockerd (needs docker.io and root)");
        self.child = Some(child);
        wait_engine(&self.host, Duration::from_secs(60));
    }

    /// Stops the engine (SIGTERM, then waits for it to exit).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let start = Instant::now();
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if self.child.is_some() {
            let out = Command::new("docker")
                .args(["-H", &self.host, "ps", "-aq"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            for id in out.split_whitespace() {
                dk_quiet(&self.host, &["rm", "-f", id]);
            }
        }
        self.stop();
        ip(&["link", "del", &self.bridge]);
        // dockerd leaves its default network namespace bind-mounted under the exec root.
        let _ = Command::new("umount")
            .arg(self.dir.join("exec/netns/default"))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
