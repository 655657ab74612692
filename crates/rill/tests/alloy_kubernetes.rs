//! Current Alloy configurations for Kubernetes, run end to end by the `rill` binary as root,
//! with the in-cluster settings a DaemonSet pod has (`KUBERNETES_SERVICE_HOST`/`_PORT`, a
//! service-account directory, `HOSTNAME` = the node name) pointing at the Kubernetes API fixture
//! of the components' tests (`k8s_fixture.rs`, proven with kubectl). The fixture's pods carry the
//! container ID of a real Docker container running the C++ workload, so the real eBPF probe
//! profiles it; a fake Pyroscope receiver decodes the pushes. Three configurations:
//!
//! * `examples/river/kubernetes.alloy`: the reference page's Kubernetes example as of today
//!   (`sys.env`, the field selector, the newer relabel rules, `demangle`, `comm`,
//!   `kernel_frames`);
//! * `fixtures/alloy-current/helm-profiling.alloy`: the `declare "profiling"` module Grafana's
//!   Kubernetes monitoring Helm chart generates, verbatim but for the URL;
//! * `fixtures/alloy-current/process-join.alloy`: `discovery.process` joined with
//!   `discovery.kubernetes`, profiling the pod's processes by PID.
//!
//! FAILS (does not skip) without root, Docker or g++.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common_rel.rs"]
mod common_rel;

#[path = "support/alloy_e2e.rs"]
mod alloy_e2e;

#[path = "../../components/tests/support/k8s_fixture.rs"]
mod k8s_fixture;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use alloy_e2e::*;
use common_rel::{free_addr, tmpdir, Recorder, Rill};
use k8s_fixture::Fixture;
use serde_json::json;

/// A pod of this workload as the kubelet reports it, its one container running as
/// `container_id` (a Docker container ID).
fn shop_pod(
    ns: &str,
    name: &str,
    node: &str,
    phase: &str,
    container_id: &str,
) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                     "labels": {"app": "checkout", "team": "payments"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": "checkout-7d9f", "uid": "rs", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "checkout", "image": IMAGE}]},
        "status": {"phase": phase, "podIP": "10.9.0.7", "hostIP": "10.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "checkout", "containerID": format!("containerd://{container_id}"),
                                          "image": IMAGE, "imageID": "", "ready": true, "restartCount": 0}]}
    })
}

/// A cluster of one node (`node`) where a real container runs: the API fixture (served by
/// `rt`), the container, a pod for it, a finished pod on the same node and a pod on another
/// node (both must be left out).
struct Cluster {
    fx: Fixture,
    container: Container,
    node: String,
    /// Serves the fixture while the test runs.
    _rt: tokio::runtime::Runtime,
    dir: std::path::PathBuf,
}

impl Cluster {
    fn start(tag: &str, namespace: &str, pod: &str) -> Cluster {
        require(true);
        shop_image();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let fx = rt.block_on(Fixture::start());
        let container = Container::start(&format!("rill-e2e-{tag}-{}", std::process::id()), &[]);
        let node = format!("node-{tag}");
        fx.apply(
            "pods",
            shop_pod(namespace, pod, &node, "Running", &container.id),
        );
        fx.apply(
            "pods",
            shop_pod(namespace, "done-job-1", &node, "Succeeded", &"e".repeat(64)),
        );
        fx.apply(
            "pods",
            shop_pod(
                namespace,
                "elsewhere-1",
                "node-other",
                "Running",
                &"f".repeat(64),
            ),
        );
        let dir = tmpdir(tag);
        Cluster {
            fx,
            container,
            node,
            _rt: rt,
            dir,
        }
    }

    /// The environment of a DaemonSet pod on this node.
    fn env(&self) -> Vec<(&'static str, String)> {
        let sa = self.dir.join("serviceaccount");
        self.fx.write_service_account(&sa, "monitoring");
        vec![
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_string()),
            ("KUBERNETES_SERVICE_PORT", self.fx.addr.port().to_string()),
            (
                components::discovery::kubernetes::SERVICE_ACCOUNT_DIR_ENV,
                sa.display().to_string(),
            ),
            ("HOSTNAME", self.node.clone()),
        ]
    }

    /// Writes `config` (the file `source`, with `replacements`) and runs it.
    fn run(&self, source: &Path, replacements: &[(&str, &str)]) -> (Rill, SocketAddr) {
        let config = self.dir.join("config.alloy");
        std::fs::write(&config, rewrite(source, replacements)).unwrap();
        let addr = free_addr();
        (rill_run(&config, addr, &self.env()), addr)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check_pod_labels(labels: &BTreeMap<String, String>, ns: &str, pod: &str, node: &str) {
    assert_eq!(labels["namespace"], ns, "{labels:?}");
    assert_eq!(labels["pod"], pod, "{labels:?}");
    assert_eq!(labels["node"], node, "{labels:?}");
    assert_eq!(labels["container"], "checkout", "{labels:?}");
    assert_eq!(labels["__name__"], "process_cpu");
}

/// The services the receiver got profiles of.
fn services(receiver: &Recorder) -> Vec<String> {
    let mut s: Vec<String> = series(receiver)
        .into_iter()
        .filter_map(|s| s.labels.get("service_name").cloned())
        .collect();
    s.sort();
    s.dedup();
    s
}

#[test]
#[ignore = "needs root, eBPF and Docker"]
fn kubernetes_example_of_current_alloy_profiles_the_pods_of_this_node() {
    let cluster = Cluster::start("k8s", "shop", "checkout-7d9f-abc");
    let receiver = Recorder::start(200);
    let url = format!("url = \"http://{}\"", receiver.addr);
    let (rill, addr) = cluster.run(
        &example("kubernetes.alloy"),
        &[
            ("url = \"http://pyroscope:4040\"", &url),
            ("collect_interval = \"15s\"", "collect_interval = \"3s\""),
        ],
    );
    let got = wait_for_service(
        &receiver,
        "ebpf/shop/checkout",
        50,
        30,
        &rill,
        (addr, "pyroscope.ebpf.local_pods"),
    );
    let labels = &got[0].labels;
    check_pod_labels(labels, "shop", "checkout-7d9f-abc", &cluster.node);
    // The labelmap rule: the pod's labels.
    assert_eq!(labels["app"], "checkout");
    assert_eq!(labels["team"], "payments");
    assert_eq!(services(&receiver), ["ebpf/shop/checkout"]);

    // comm = "both": the label and the root frame; demangle = "templates".
    let (both, all) = count_samples(&got, |p, s| {
        let st = stack(p, s);
        sample_labels(p, s).get("comm").map(String::as_str) == Some("shop")
            && st.first().map(String::as_str) == Some("shop")
    });
    assert_eq!(both, all, "every sample has comm and its root frame");
    let templates = [
        "main",
        "shop::Checkout::run",
        "shop::price<double>",
        "shop::tax::apply",
    ];
    let (chain, all) = count_samples(&got, |p, s| contains_run(&stack(p, s), &templates));
    eprintln!("ebpf/shop/checkout: {all} samples, {chain} with {templates:?}");
    assert!(chain * 10 >= all * 8, "{chain} of {all}");

    // Discovery: the field selector keeps this node's pods, the relabel drops the finished one.
    let k8s = component(addr, "discovery.kubernetes.local_pods");
    assert_eq!(k8s["health"]["state"], "healthy", "{k8s}");
    let found = k8s["exports"].to_string();
    assert!(found.contains("checkout-7d9f-abc") && found.contains("done-job-1"));
    assert!(
        !found.contains("elsewhere-1"),
        "the field selector: {found}"
    );
    let kept = component(addr, "discovery.relabel.local_pods")["exports"].to_string();
    assert!(kept.contains("checkout-7d9f-abc") && !kept.contains("done-job-1"));
    assert!(
        cluster
            .fx
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/pods?")
                && r.contains(&format!("spec.nodeName%3D{}", cluster.node))),
        "the selector is sent to the API server: {:?}",
        cluster.fx.requests()
    );
    let ebpf = component(addr, "pyroscope.ebpf.local_pods");
    assert_eq!(
        attr(&ebpf["debugInfo"], "kernel_frames").unwrap()["value"],
        true
    );
    drop(rill);
}

#[test]
#[ignore = "needs root, eBPF and Docker"]
fn helm_chart_profiling_module_runs() {
    // The chart's module lists pods of namespace "default" only.
    let cluster = Cluster::start("helm", "default", "checkout-5c6b-xyz");
    let receiver = Recorder::start(200);
    let url = format!("url = \"http://{}\"", receiver.addr);
    // Verbatim but for the URL: the default 15 s collect interval.
    let (rill, addr) = cluster.run(
        &fixture("helm-profiling.alloy"),
        &[("url = \"http://pyroscope.monitoring.svc:4040\"", &url)],
    );
    let ebpf_id = "profiling.feature/pyroscope.ebpf.ebpf_pods";
    let got = wait_for_service(
        &receiver,
        "ebpf/default/checkout",
        50,
        40,
        &rill,
        (addr, ebpf_id),
    );
    let labels = &got[0].labels;
    check_pod_labels(labels, "default", "checkout-5c6b-xyz", &cluster.node);
    assert_eq!(services(&receiver), ["ebpf/default/checkout"]);
    // demangle = "none": the symbol table's names.
    let mangled = [
        "main",
        "_ZN4shop8Checkout3runEi",
        "_ZN4shop5priceIdEET_S1_i",
        "_ZN4shop3tax5applyEmi",
    ];
    let (chain, all) = count_samples(&got, |p, s| contains_run(&stack(p, s), &mangled));
    eprintln!("ebpf/default/checkout: {all} samples, {chain} with the mangled chain");
    assert!(chain * 10 >= all * 8, "{chain} of {all}");

    // The module's components, with their module ID, healthy.
    for id in [
        ebpf_id,
        "profiling.feature/discovery.kubernetes.ebpf_pods",
        "profiling.feature/discovery.relabel.ebpf_pods",
    ] {
        let c = component(addr, id);
        assert_eq!(c["moduleID"], "profiling.feature", "{c}");
        assert_eq!(c["health"]["state"], "healthy", "{id}: {c}");
    }
    let instance = component(addr, "profiling.feature");
    assert_eq!(instance["createdModuleIDs"], json!(["profiling.feature"]));
    drop(rill);
}

#[test]
#[ignore = "needs root, eBPF and Docker"]
fn processes_joined_with_their_pods_are_profiled_by_pid() {
    let cluster = Cluster::start("join", "shop", "checkout-9a8b-def");
    let pid = cluster.container.pid().to_string();
    let receiver = Recorder::start(200);
    let url = format!("url = \"http://{}\"", receiver.addr);
    let (rill, addr) = cluster.run(
        &fixture("process-join.alloy"),
        &[
            ("url = \"http://pyroscope:4040\"", &url),
            ("collect_interval = \"15s\"", "collect_interval = \"3s\""),
        ],
    );
    let got = wait_for_service(
        &receiver,
        "ebpf/shop/checkout",
        50,
        30,
        &rill,
        (addr, "pyroscope.ebpf.pod_processes"),
    );
    // The process's labels (exe and command line inside the container) next to its pod's.
    let labels = &got[0].labels;
    assert_eq!(labels["pod"], "checkout-9a8b-def", "{labels:?}");
    assert_eq!(labels["exe"], "/shop", "{labels:?}");
    assert_eq!(labels["commandline"], "/shop", "{labels:?}");
    assert_eq!(services(&receiver), ["ebpf/shop/checkout"]);
    let (by_pid, all) = count_samples(&got, |p, s| sample_labels(p, s).get("pid") == Some(&pid));
    assert_eq!(by_pid, all, "pid = {pid}");
    let (chain, all) = count_samples(&got, |p, s| contains_run(&stack(p, s), &CHAIN));
    assert!(chain * 10 >= all * 8, "{chain} of {all}");

    // The join: the process target has both label sets; only processes of pods are kept.
    let kept = component(addr, "discovery.relabel.pod_processes")["exports"].to_string();
    assert!(kept.contains(&format!("\"{pid}\"")), "{kept}");
    assert!(kept.contains("__meta_kubernetes_pod_uid") && kept.contains("__meta_process_uid"));
    assert!(
        !kept.contains("done-job-1"),
        "pods alone are dropped: {kept}"
    );
    drop(rill);
}
