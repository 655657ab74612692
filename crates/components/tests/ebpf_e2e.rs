//! End to end, as root: the Docker example `examples/river/docker.river`, verbatim except the
//! write URL, run by the flow runtime in process (`flow_runtime::Runtime` with
//! `components::registry()`, what `rill run` uses) against the real Docker engine and the real
//! eBPF probe. A static C program (`fixtures/ebpf/workload.c`, main → outer → middle →
//! hot_leaf 75% / cold_leaf 25%) runs in a `FROM scratch` container, a second one spends its
//! time in read(2); a test HTTP server decodes the pushes with the write module's protobuf
//! messages. FAILS (does not skip) without root, Docker, gcc or `go`.
#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use components::pyroscope::push_proto::{PushRequest, PUSH_PATH};
use ebpf_probe::pprof::{decode, Profile};
use flow_runtime::{HealthState, Runtime, RuntimeOptions};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const IMAGE: &str = "rill-ebpf-workload:test";
const EXAMPLE_URL: &str = "url = \"http://pyroscope:4100\"";

type Received = Arc<Mutex<Vec<(BTreeMap<String, String>, Vec<u8>)>>>;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
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

// dockerd, when the test starts it, must outlive the test: it is never waited for.
#[allow(clippy::zombie_processes, reason = "dockerd outlives the test process")]
fn require_prerequisites() {
    assert_eq!(
        run("id", &["-u"]),
        "0",
        "the pyroscope.ebpf end-to-end test needs root"
    );
    for tool in ["gcc", "docker", "go"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} is required (install golang-go for go)"
        );
    }
    if !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let log = std::fs::File::create("/tmp/dockerd.log").expect("dockerd log");
        Command::new("dockerd")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !Command::new("docker")
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(Instant::now() < deadline, "dockerd did not start");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Builds the static workload and a `FROM scratch` image holding it.
fn build_image(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ebpf/workload.c");
    let bin = dir.join("workload");
    run(
        "gcc",
        &[
            "-static",
            "-O1",
            "-fno-omit-frame-pointer",
            "-o",
            bin.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY workload /workload\nENTRYPOINT [\"/workload\"]\n",
    )
    .unwrap();
    run(
        "docker",
        &["build", "-q", "-t", IMAGE, dir.to_str().unwrap()],
    );
}

struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
    }
}

async fn start_server(received: Received) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let received = Arc::clone(&received);
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        if path == PUSH_PATH {
                            let push = PushRequest::from_bytes(&body).expect("push request");
                            for s in push.series {
                                let labels: BTreeMap<String, String> =
                                    s.labels.into_iter().map(|l| (l.name, l.value)).collect();
                                for sample in s.samples {
                                    received
                                        .lock()
                                        .unwrap()
                                        .push((labels.clone(), sample.raw_profile));
                                }
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::new())))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn samples(p: &Profile, s: &ebpf_probe::pprof::Sample) -> i64 {
    s.value[0] / p.period.max(1)
}

fn total_samples(profiles: &[Profile]) -> i64 {
    profiles
        .iter()
        .map(|p| p.sample.iter().map(|s| samples(p, s)).sum::<i64>())
        .sum()
}

fn profiles_of(
    received: &Received,
    service: &str,
) -> Vec<(BTreeMap<String, String>, Profile, Vec<u8>)> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, _)| l.get("service_name").map(String::as_str) == Some(service))
        .map(|(l, raw)| (l.clone(), decode(raw).expect("valid pprof"), raw.clone()))
        .collect()
}

/// Whether `needle` occurs as consecutive frames in `stack`.
fn contains_run(stack: &[String], needle: &[&str]) -> bool {
    stack
        .windows(needle.len())
        .any(|w| w.iter().zip(needle).all(|(a, b)| a == b))
}

#[test]
#[ignore = "needs root and eBPF, Docker, Go toolchain"]
fn docker_example_profiles_a_scratch_container_end_to_end() {
    require_prerequisites();
    let dir = std::env::temp_dir().join(format!("rill-ebpf-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    build_image(&dir);
    let tag = std::process::id();
    let cpu_name = format!("rill-ebpf-cpu-{tag}");
    let sys_name = format!("rill-ebpf-sys-{tag}");
    let _containers = Containers(vec![cpu_name.clone(), sys_name.clone()]);
    run("docker", &["run", "-d", "--name", &cpu_name, IMAGE, "cpu"]);
    run(
        "docker",
        &["run", "-d", "--name", &sys_name, IMAGE, "syscall"],
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let received: Received = Arc::default();
    rt.block_on(async {
        let addr = start_server(Arc::clone(&received)).await;
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/river/docker.river"),
        )
        .expect("example file");
        assert_eq!(example.matches(EXAMPLE_URL).count(), 1);
        let config = example.replace(EXAMPLE_URL, &format!("url = \"http://{addr}\""));

        let runtime = Runtime::new(
            components::registry(),
            RuntimeOptions {
                storage_path: dir.join("data"),
                file_name: "docker.river".into(),
                config_path: None,
            },
        );
        runtime.load(&config).await.expect("the example loads");

        // Wait for enough samples of both containers (default 15 s interval, busy machine).
        let cpu_service = format!("/{cpu_name}");
        let sys_service = format!("/{sys_name}");
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let cpu: Vec<Profile> = profiles_of(&received, &cpu_service)
                .into_iter()
                .map(|(_, p, _)| p)
                .collect();
            let sys: Vec<Profile> = profiles_of(&received, &sys_service)
                .into_iter()
                .map(|(_, p, _)| p)
                .collect();
            if total_samples(&cpu) >= 400 && total_samples(&sys) >= 100 {
                break;
            }
            if Instant::now() > deadline {
                let info = runtime.component("pyroscope.ebpf.default").await;
                panic!(
                    "not enough samples within 240 s: cpu {} sys {}; services seen {:?}; ebpf {:?}",
                    total_samples(&cpu),
                    total_samples(&sys),
                    received
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(l, _)| l.get("service_name").cloned())
                        .collect::<Vec<_>>(),
                    info.map(|i| (i.health, i.debug_info))
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let info = runtime
            .component("pyroscope.ebpf.default")
            .await
            .expect("component");
        assert_eq!(info.health.state, HealthState::Healthy, "{:?}", info.health);
        // The workload is walked with its own .eh_frame table in the kernel (Linux >= 5.17).
        let unwind = match &info.debug_info {
            Some(river_parser::Value::Object(d)) => d.get("unwind").cloned(),
            _ => None,
        };
        let count = |key: &str| match &unwind {
            Some(river_parser::Value::Object(u)) => match u.get(key) {
                Some(river_parser::Value::Number(river_parser::Number::Uint(n))) => *n,
                other => panic!("debug info unwind.{key}: {other:?}"),
            },
            other => panic!("no unwind section in the debug info: {other:?}"),
        };
        assert!(count("processes") >= 1, "{unwind:?}");
        assert!(count("tables") >= 1, "{unwind:?}");
        assert!(count("rows") > 100, "{unwind:?}");
        runtime.shutdown().await;
    });

    // --- the CPU-bound container
    let cpu = profiles_of(&received, &format!("/{cpu_name}"));
    let (labels, first, raw) = &cpu[0];
    assert_eq!(labels["service_name"], format!("/{cpu_name}"));
    assert_eq!(labels["__name__"], "process_cpu");
    assert_eq!(first.period, 1_000_000_000 / 97);
    assert!(first.time_nanos > 0 && first.duration_nanos > 0);
    assert!(
        !first.mapping.is_empty()
            && first
                .mapping
                .iter()
                .any(|m| first.str(m.filename) == "/workload"),
        "the workload's mapping is in the profile"
    );
    let (mut hot, mut cold, mut hot_chain, mut total) = (0i64, 0i64, 0i64, 0i64);
    for (_, p, _) in &cpu {
        for s in &p.sample {
            let n = samples(p, s);
            let stack = p.stack_names(s);
            total += n;
            if stack.iter().any(|f| f == "hot_leaf") {
                hot += n;
                if contains_run(&stack, &["main", "outer", "middle", "hot_leaf"]) {
                    hot_chain += n;
                }
            }
            if stack.iter().any(|f| f == "cold_leaf") {
                cold += n;
            }
        }
    }
    eprintln!(
        "cpu container: {total} samples, hot_leaf {hot} (full chain {hot_chain}), cold_leaf {cold}"
    );
    assert!(
        hot + cold >= total * 9 / 10,
        "leaves hold most samples: {hot}+{cold} of {total}"
    );
    assert!(
        hot_chain * 100 >= hot * 95,
        "main → outer → middle → hot_leaf in order: {hot_chain} of {hot}"
    );
    let share = hot as f64 / (hot + cold) as f64;
    assert!(
        (share - 0.75).abs() <= 0.05,
        "hot_leaf share {share:.3}, expected 0.75 ± 0.05"
    );

    // go tool pprof reads it.
    let file = dir.join("cpu.pb.gz");
    std::fs::write(&file, raw).unwrap();
    let top = run("go", &["tool", "pprof", "-top", file.to_str().unwrap()]);
    eprintln!("{top}");
    assert!(top.contains("hot_leaf"), "go tool pprof -top: {top}");

    // --- the syscall-bound container: kernel frames under the user stack
    let sys = profiles_of(&received, &format!("/{sys_name}"));
    let (mut with_kernel, mut read_path, mut total) = (0i64, 0i64, 0i64);
    for (_, p, _) in &sys {
        for s in &p.sample {
            let n = samples(p, s);
            total += n;
            // Kernel frames are the leaf-side locations without a mapping, named from kallsyms.
            let kernel: Vec<String> = s
                .location_id
                .iter()
                .map(|&id| &p.location[id as usize - 1])
                .take_while(|l| l.mapping_id == 0)
                .filter_map(|l| l.line.first())
                .map(|ln| {
                    p.str(p.function[ln.function_id as usize - 1].name)
                        .to_string()
                })
                .collect();
            if !kernel.is_empty() && !kernel.iter().all(|k| k.starts_with('[')) {
                with_kernel += n;
                let stack = p.stack_names(s);
                if kernel.iter().any(|k| k.contains("read"))
                    && stack.iter().any(|f| f == "syscall_loop")
                {
                    read_path += n;
                }
            }
        }
    }
    eprintln!("syscall container: {total} samples, {with_kernel} with kernel frames, {read_path} in read under syscall_loop");
    assert!(
        with_kernel * 2 >= total,
        "most samples of a read(2) loop have kernel frames: {with_kernel} of {total}"
    );
    assert!(read_path > 0, "a kernel read path under syscall_loop");
    let _ = std::fs::remove_dir_all(&dir);
    let _: Option<PathBuf> = None;
}
