//! End to end, as root: the Kubernetes example `examples/river/kubernetes.river`, verbatim except
//! the write URL, run by the flow runtime in process with `components::registry()` (what
//! `rill run` uses) and the in-cluster settings a DaemonSet pod has (`KUBERNETES_SERVICE_HOST`/
//! `_PORT`, a service-account directory, `HOSTNAME` = the node name) pointing at the fixture API
//! server. The fixture's pod on this node carries the container ID of a real Docker container
//! running the static test workload (`fixtures/ebpf/workload.c`); a pod on another node must be
//! dropped by the example's relabel rule. The receiver must get the container's CPU profile with
//! `service_name` built from `<namespace>` and `<container>` by the example's rule. FAILS (does not skip) without root, Docker or gcc.

#[path = "support/k8s_fixture.rs"]
mod k8s_fixture;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use components::pyroscope::push_proto::{PushRequest, PUSH_PATH};
use ebpf_probe::pprof::decode;
use flow_runtime::{HealthState, Runtime, RuntimeOptions};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_fixture::Fixture;
use river_parser::Value;
use serde_json::json;

const IMAGE: &str = "rill-k8s-workload:test";
const EXAMPLE_URL: &str = "url = \"http://pyroscope:4100\"";
const NODE: &str = "node-e2e";
/// `service_name` as the example's relabel rule builds it for namespace `profiling`, container
/// `workload`.
const SERVICE: &str = "profiling/workload/";

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

// dockerd is started for the rest of the session, never waited for.
#[allow(
    clippy::zombie_processes,
    reason = "the engine outlives the test process"
)]
fn require_prerequisites() {
    assert_eq!(run("id", &["-u"]), "0", "this end-to-end test needs root");
    for tool in ["gcc", "docker"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} is required"
        );
    }
    let docker_up = || {
        Command::new("docker")
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !docker_up() {
        let log = std::fs::File::create("/tmp/dockerd-k8s.log").expect("dockerd log");
        Command::new("dockerd")
            .stdout(log.try_clone().expect("test setup"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !docker_up() {
            assert!(Instant::now() < deadline, "dockerd did not start");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

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
            bin.to_str().expect("test setup"),
            src.to_str().expect("test setup"),
        ],
    );
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY workload /workload\nENTRYPOINT [\"/workload\"]\n",
    )
    .expect("test setup");
    run(
        "docker",
        &[
            "build",
            "-q",
            "-t",
            IMAGE,
            dir.to_str().expect("test setup"),
        ],
    );
}

struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

async fn start_receiver(received: Received) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test setup");
    let addr = listener.local_addr().expect("test setup");
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
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .expect("test setup")
                            .to_bytes();
                        if path == PUSH_PATH {
                            let push = PushRequest::from_bytes(&body).expect("push request");
                            for s in push.series {
                                let labels: BTreeMap<String, String> =
                                    s.labels.into_iter().map(|l| (l.name, l.value)).collect();
                                for sample in s.samples {
                                    received
                                        .lock()
                                        .expect("test setup")
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

/// A pod as the kubelet reports it, its one container running as `container_id`.
fn workload_pod(
    ns: &str,
    name: &str,
    node: &str,
    ip: &str,
    container_id: &str,
) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                     "labels": {"app": "workload"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "workload-5d4f8",
                                          "uid": "rs", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "workload", "image": IMAGE}]},
        "status": {"phase": "Running", "podIP": ip, "hostIP": "10.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "workload", "containerID": container_id, "image": IMAGE,
                                          "imageID": "", "ready": true, "restartCount": 0}]}
    })
}

fn targets(exports: &Option<Value>, field: &str) -> Vec<BTreeMap<String, String>> {
    let Some(Value::Object(m)) = exports else {
        return Vec::new();
    };
    let Some(Value::Array(items)) = m.get(field) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|t| match t {
            Value::Object(o) => Some(
                o.iter()
                    .filter_map(|(k, v)| match v {
                        Value::String(s) => Some((k.clone(), s.clone())),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[test]
#[ignore = "needs root and eBPF, Docker"]
fn kubernetes_example_profiles_the_pods_of_this_node() {
    require_prerequisites();
    let dir = std::env::temp_dir().join(format!("rill-k8s-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test setup");
    build_image(&dir);
    let name = format!("rill-k8s-cpu-{}", std::process::id());
    let _container = Container(name.clone());
    let id = run("docker", &["run", "-d", "--name", &name, IMAGE, "cpu"]);
    assert_eq!(id.len(), 64, "docker run printed the container ID: {id}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test setup");
    let received: Received = Arc::default();
    rt.block_on(async {
        let fx = Fixture::start().await;
        fx.apply("pods", workload_pod("profiling", "workload-abc", NODE, "10.9.0.1", &format!("containerd://{id}")));
        fx.apply(
            "pods",
            workload_pod("profiling", "elsewhere-xyz", "node-other", "10.9.0.2", &format!("containerd://{}", "f".repeat(64))),
        );
        // The environment of a DaemonSet pod: in-cluster API settings and HOSTNAME = node name.
        let sa = dir.join("serviceaccount");
        fx.write_service_account(&sa, "rill");
        std::env::set_var("KUBERNETES_SERVICE_HOST", "127.0.0.1");
        std::env::set_var("KUBERNETES_SERVICE_PORT", fx.addr.port().to_string());
        std::env::set_var(components::discovery::kubernetes::SERVICE_ACCOUNT_DIR_ENV, &sa);
        std::env::set_var("HOSTNAME", NODE);

        let addr = start_receiver(Arc::clone(&received)).await;
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/river/kubernetes.river"),
        )
        .expect("example file");
        assert_eq!(example.matches(EXAMPLE_URL).count(), 1);
        let config = example.replace(EXAMPLE_URL, &format!("url = \"http://{addr}\""));
        let runtime = Runtime::new(
            components::registry(),
            RuntimeOptions {
                storage_path: dir.join("data"),
                file_name: "kubernetes.river".into(),
                config_path: None,
            },
        );
        runtime.load(&config).await.expect("the example loads");

        // The relabel output: only this node's pod, with service_name namespace/container.
        let deadline = Instant::now() + Duration::from_secs(30);
        let local = loop {
            let info = runtime.component("discovery.relabel.local_pods").await.expect("relabel");
            let t = targets(&info.exports, "output");
            if !t.is_empty() {
                break t;
            }
            assert!(Instant::now() < deadline, "no relabel output; kubernetes: {:?}",
                runtime.component("discovery.kubernetes.all_pods").await.map(|i| i.health));
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(local.len(), 1, "{local:#?}");
        // The example's rule joins namespace and container with separator "/" under the default
        // regex `(.*)`, so `${1}` is "profiling/workload" and `${2}` (no such group) expands to
        // nothing, as Go's regexp.Expand does in Prometheus/Alloy: a trailing slash.
        assert_eq!(local[0]["service_name"], SERVICE);
        assert_eq!(local[0]["__meta_kubernetes_pod_name"], "workload-abc");
        assert_eq!(local[0]["__meta_kubernetes_pod_container_id"], format!("containerd://{id}"));
        let all = runtime.component("discovery.kubernetes.all_pods").await.expect("test setup");
        assert_eq!(all.health.state, HealthState::Healthy, "{:?}", all.health);
        assert_eq!(targets(&all.exports, "targets").len(), 2);
        assert!(
            fx.requests().iter().any(|r| r.starts_with("GET /api/v1/pods?") && r.contains("watch=true")),
            "discovery watches: {:?}",
            fx.requests()
        );

        // The receiver gets the container's profile.
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let got: Vec<(BTreeMap<String, String>, Vec<u8>)> = received
                .lock()
                .expect("test setup")
                .iter()
                .filter(|(l, _)| l.get("service_name").map(String::as_str) == Some(SERVICE))
                .cloned()
                .collect();
            let samples: i64 = got
                .iter()
                .map(|(_, raw)| {
                    let p = decode(raw).expect("valid pprof");
                    p.sample.iter().map(|s| s.value[0] / p.period.max(1)).sum::<i64>()
                })
                .sum();
            if samples >= 100 {
                let p = decode(&got[0].1).expect("test setup");
                let funcs: Vec<String> = p.sample.iter().flat_map(|s| p.stack_names(s)).collect();
                assert!(funcs.iter().any(|f| f == "hot_leaf"), "the workload's frames: {funcs:?}");
                eprintln!("{SERVICE}: {samples} samples in {} profiles", got.len());
                break;
            }
            if Instant::now() > deadline {
                let services: Vec<Option<String>> = received
                    .lock()
                    .expect("test setup")
                    .iter()
                    .map(|(l, _)| l.get("service_name").cloned())
                    .collect();
                panic!(
                    "no profile for {SERVICE} within 240 s ({samples} samples); services seen {services:?}; ebpf {:?}",
                    runtime.component("pyroscope.ebpf.local_pods").await.map(|i| (i.health, i.debug_info))
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Nothing from the other node's pod.
        assert!(received
            .lock()
            .expect("test setup")
            .iter()
            .all(|(l, _)| l.get("__meta_kubernetes_pod_name").map(String::as_str) != Some("elsewhere-xyz")));
        runtime.shutdown().await;
    });
}
