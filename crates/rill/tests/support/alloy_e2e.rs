//! Helpers of the end-to-end runs of current Alloy configurations through the `rill` binary
//! (`alloy_docker.rs`, `alloy_kubernetes.rs`, `alloy_host.rs`): prerequisites that fail (never
//! skip), the C++ test workload (`shop.cpp` of the components' `alloy-current` fixtures) as a
//! static binary and a `FROM scratch` image, configuration files written from the examples and
//! fixtures with the receiver's URL, `rill run` itself, and the pushes a fake Pyroscope receiver
//! got, decoded (series labels, pprof, sample labels).
//!
//! Include after `support/common_rel.rs` as `mod common_rel`.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step panics the test, as in the test itself"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use components::pyroscope::push_proto::{PushRequest, PUSH_PATH};
use ebpf_probe::pprof::{decode, Profile, Sample};

use crate::common_rel::{get, rill_cmd, Recorder, Rill};

/// The image holding the workload as `/shop` (its entrypoint).
pub const IMAGE: &str = "rill-e2e-shop:test";

/// The workload's call chain, root first, as `demangle = "simplified"` names it.
pub const CHAIN: [&str; 4] = [
    "main",
    "shop::Checkout::run",
    "shop::price",
    "shop::tax::apply",
];

/// `examples/river/NAME` of the repository.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/river")
        .join(name)
}

/// `crates/components/tests/fixtures/alloy-current/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../components/tests/fixtures/alloy-current")
        .join(name)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn docker_up() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Root, `g++` and, when `docker` is true, a running Docker engine (`dockerd` is started when
/// `docker info` fails; it is left running for the rest of the session). Fails when one is
/// missing.
pub fn require(docker: bool) {
    assert_eq!(
        run("id", &["-u"]),
        "0",
        "this end-to-end test needs root (eBPF)"
    );
    assert!(
        Command::new("g++")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "g++ is required (with static libstdc++) to build the test workload"
    );
    if !docker {
        return;
    }
    static ENGINE: OnceLock<()> = OnceLock::new();
    ENGINE.get_or_init(|| {
        if docker_up() {
            return;
        }
        let log = std::fs::File::create("/tmp/rill-e2e-dockerd.log").expect("dockerd log");
        // The engine is meant to outlive the test process: it is never waited for.
        #[allow(
            clippy::zombie_processes,
            reason = "the engine outlives the test process"
        )]
        let _engine = Command::new("dockerd")
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("starting dockerd (is docker.io installed?)");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !docker_up() {
            assert!(Instant::now() < deadline, "dockerd did not start in 60 s");
            std::thread::sleep(Duration::from_millis(300));
        }
    });
}

/// Builds the workload as the static executable `path` (its file name is its process name).
pub fn build_shop(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    run(
        "g++",
        &[
            "-static",
            "-O1",
            "-fno-omit-frame-pointer",
            "-o",
            path.to_str().unwrap(),
            fixture("shop.cpp").to_str().unwrap(),
        ],
    );
}

/// Builds [`IMAGE`] once per test process.
pub fn shop_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rill-e2e-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        build_shop(&dir.join("shop"));
        std::fs::write(
            dir.join("Dockerfile"),
            "FROM scratch\nCOPY shop /shop\nENTRYPOINT [\"/shop\"]\n",
        )
        .unwrap();
        run(
            "docker",
            &["build", "-q", "-t", IMAGE, dir.to_str().unwrap()],
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A container of [`IMAGE`], removed on drop.
pub struct Container {
    pub name: String,
    pub id: String,
}

impl Container {
    /// `docker run -d --name NAME [extra...] IMAGE`.
    pub fn start(name: &str, extra: &[&str]) -> Container {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        let id = run("docker", &args);
        assert_eq!(id.len(), 64, "docker run printed the container ID: {id}");
        Container {
            name: name.to_string(),
            id,
        }
    }

    /// The host PID of the container's process.
    pub fn pid(&self) -> u32 {
        run("docker", &["inspect", "-f", "{{.State.Pid}}", &self.id])
            .parse()
            .unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// A child process killed on drop.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The text of `path` with each `(from, to)` replaced; `from` must occur exactly once.
pub fn rewrite(path: &Path, replacements: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in replacements {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} must occur once in {}",
            path.display()
        );
        text = text.replace(from, to);
    }
    text
}

/// Copies directory `from` to `to` (recursively), replacing in every file each `(old, new)`
/// wherever it occurs.
pub fn copy_tree(from: &Path, to: &Path, replacements: &[(&str, &str)]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, replacements);
        } else {
            let mut text = std::fs::read_to_string(entry.path()).unwrap();
            for (old, new) in replacements {
                text = text.replace(old, new);
            }
            std::fs::write(target, text).unwrap();
        }
    }
}

/// `rill run CONFIG` (a file or a directory) with `env` added to its environment.
pub fn rill_run(config: &Path, addr: SocketAddr, env: &[(&str, String)]) -> Rill {
    let mut cmd = rill_cmd(Path::new(env!("CARGO_BIN_EXE_rill")), config, addr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Rill::spawn(cmd)
}

/// One series of one push: its labels and its profile.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub profile: Profile,
}

impl Series {
    /// Samples (counts, not nanoseconds) of the profile.
    pub fn samples(&self) -> i64 {
        self.profile
            .sample
            .iter()
            .map(|s| s.value[0] / self.profile.period.max(1))
            .sum()
    }
}

/// Every series the receiver got, in order.
pub fn series(receiver: &Recorder) -> Vec<Series> {
    let mut out = Vec::new();
    for req in receiver.requests() {
        if req.path != PUSH_PATH {
            continue;
        }
        let push = PushRequest::from_bytes(&req.body).expect("a push.v1 request");
        for s in push.series {
            let labels: BTreeMap<String, String> =
                s.labels.into_iter().map(|l| (l.name, l.value)).collect();
            for sample in s.samples {
                out.push(Series {
                    labels: labels.clone(),
                    profile: decode(&sample.raw_profile).expect("valid pprof"),
                });
            }
        }
    }
    out
}

/// Waits (at most `secs`) until the receiver has series of service `service` holding at least
/// `min_samples` samples in all, and returns them. On timeout, panics with what was received,
/// rill's last log lines and what `GET /api/v0/web/components/{component}` shows.
pub fn wait_for_service(
    receiver: &Recorder,
    service: &str,
    min_samples: i64,
    secs: u64,
    rill: &Rill,
    api: (SocketAddr, &str),
) -> Vec<Series> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mine: Vec<Series> = series(receiver)
            .into_iter()
            .filter(|s| s.labels.get("service_name").map(String::as_str) == Some(service))
            .collect();
        if mine.iter().map(Series::samples).sum::<i64>() >= min_samples {
            return mine;
        }
        if Instant::now() > deadline {
            let seen: Vec<BTreeMap<String, String>> =
                series(receiver).into_iter().map(|s| s.labels).collect();
            let logs = rill.logs();
            let tail: Vec<&str> = logs.lines().rev().take(30).collect();
            panic!(
                "no {min_samples} samples of service {service:?} within {secs} s; series seen: \
                 {seen:#?}\ncomponent {}: {:?}\nrill's last log lines (newest first):\n{}",
                api.1,
                get(api.0, &format!("/api/v0/web/components/{}", api.1)).map(|r| r.2),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A sample's stack, root first.
pub fn stack(p: &Profile, s: &Sample) -> Vec<String> {
    p.stack_names(s)
}

/// A sample's pprof labels.
pub fn sample_labels(p: &Profile, s: &Sample) -> BTreeMap<String, String> {
    s.label
        .iter()
        .map(|l| (p.str(l.key).to_string(), p.str(l.str).to_string()))
        .collect()
}

/// Whether `needle` occurs as consecutive frames of `stack`.
pub fn contains_run(stack: &[String], needle: &[&str]) -> bool {
    stack
        .windows(needle.len())
        .any(|w| w.iter().zip(needle).all(|(a, b)| a == b))
}

/// Samples of `series` whose stack satisfies `pred`, and all samples.
pub fn count_samples(series: &[Series], pred: impl Fn(&Profile, &Sample) -> bool) -> (i64, i64) {
    let (mut hit, mut all) = (0, 0);
    for s in series {
        let p = &s.profile;
        for sample in &p.sample {
            let n = sample.value[0] / p.period.max(1);
            all += n;
            if pred(p, sample) {
                hit += n;
            }
        }
    }
    (hit, all)
}

/// `GET /api/v0/web/components/{id}` as JSON (panics unless 200).
pub fn component(addr: SocketAddr, id: &str) -> serde_json::Value {
    let (status, _, body) = get(addr, &format!("/api/v0/web/components/{id}"))
        .unwrap_or_else(|| panic!("no answer for component {id}"));
    assert_eq!(status, 200, "component {id}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The value of attribute `name` in a body of Alloy's JSON encoding (`debugInfo`, `exports`),
/// as `{"type", "value"}`.
pub fn attr<'a>(body: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    body.as_array()?
        .iter()
        .find(|item| item["name"] == name)
        .map(|item| &item["value"])
}

/// This host's name as `constants.hostname` reads it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}
