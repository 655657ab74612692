//! `discovery.kubernetes` against the fixture API server (`k8s_fixture`): the fixture's
//! faithfulness proven with the installed `kubectl`, label sets for every role, server-side
//! selectors and namespaces, the three ways to configure the client, and watch resilience
//! (dropped connections, expired resource versions, a revoked and restored token).

mod k8s_fixture;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use components::discovery::kubernetes::{
    in_cluster_config, Arguments, AttachMetadata, KubernetesDiscovery, Namespaces, Selector,
    TlsConfig,
};
use components::discovery::relabel::Labels;
use k8s_fixture::{pod, Fixture};
use river_parser::decode::Secret;
use serde_json::json;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rill-k8s-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn args_for(fx: &Fixture, role: &str) -> Arguments {
    Arguments {
        role: role.to_owned(),
        api_server: Some(fx.url()),
        bearer_token: Some(Secret::new(fx.token.clone())),
        tls_config: Some(TlsConfig {
            ca_pem: Some(fx.ca_pem.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Starts a discovery loop and returns it (stopped when the runtime shuts down).
fn start(args: Arguments) -> Arc<KubernetesDiscovery> {
    let d = KubernetesDiscovery::new(args).expect("valid arguments");
    tokio::spawn(Arc::clone(&d).run(std::future::pending()));
    d
}

/// Waits until the targets satisfy `pred`; panics with the last targets and status otherwise.
async fn wait_for(
    d: &KubernetesDiscovery,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&[Labels]) -> bool,
) -> Vec<Labels> {
    let deadline = Instant::now() + timeout;
    let mut rx = d.subscribe();
    loop {
        let t = rx.borrow_and_update().clone();
        if pred(&t) {
            return t;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "timed out waiting for {what}; status {:?}; {} targets: {:#?}",
                d.status(),
                t.len(),
                t.iter().take(5).collect::<Vec<_>>()
            );
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rx.changed()).await;
    }
}

async fn wait_status(d: &KubernetesDiscovery, healthy: bool, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let st = d.status();
        if st.healthy == healthy && st.message != "starting" {
            return st.message;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for healthy={healthy}; status {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(targets: &[Labels], label: &str) -> Vec<String> {
    let mut v: Vec<String> = targets
        .iter()
        .filter_map(|t| t.get(label).cloned())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The fixture is faithful: kubectl can use it

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl must be installed")
}

#[test]
fn kubectl_lists_and_watches_the_fixture() {
    let rt = rt();
    let fx = rt.block_on(Fixture::start());
    fx.apply("pods", pod("default", "web-1", "node-a", "10.1.0.5"));
    fx.apply("pods", pod("kube-system", "dns-1", "node-b", "10.1.0.6"));
    fx.apply("nodes", node_obj("node-a", "10.0.0.1"));
    let dir = tmpdir("kubectl");
    let kc = fx.write_kubeconfig(&dir);
    let _guard = rt.enter();

    // `get pods -A` lists the pods of every namespace.
    let out = kubectl(&kc, &["get", "pods", "-A"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl failed: {stderr}");
    assert!(
        stdout.contains("web-1") && stdout.contains("dns-1"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("kube-system") && stdout.contains("default"),
        "{stdout}"
    );

    // Namespaced get, label selector and field selector are honoured by the server.
    let out = kubectl(&kc, &["get", "pods", "-n", "kube-system", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod/dns-1");
    let out = kubectl(
        &kc,
        &[
            "get",
            "pods",
            "-A",
            "-l",
            "app.kubernetes.io/name=web-1",
            "-o",
            "name",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod/web-1");
    let out = kubectl(
        &kc,
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=node-b",
            "-o",
            "name",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod/dns-1");
    let out = kubectl(
        &kc,
        &["get", "pod", "web-1", "-o", "jsonpath={.status.podIP}"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10.1.0.5");
    let out = kubectl(&kc, &["get", "nodes", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "node/node-a");

    // A wrong token is refused the way a real server refuses it.
    let bad = dir.join("bad-kubeconfig");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&kc)
            .unwrap()
            .replace(&fx.token, "nope"),
    )
    .unwrap();
    let out = kubectl(&bad, &["get", "pods"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized")
            || String::from_utf8_lossy(&out.stderr).contains("provide credentials"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `get pods -w` sees a pod added after it started watching.
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "pods", "-w", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The initial list comes first.
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("initial list line");
    assert_eq!(first, "pod/web-1");
    // Wait until the watch is open, then add a pod.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fx.active_watches() == 0 {
        assert!(
            Instant::now() < deadline,
            "kubectl never opened a watch: {:?}",
            fx.requests()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    fx.apply("pods", pod("default", "web-2", "node-a", "10.1.0.7"));
    let got = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        got.ok().as_deref(),
        Some("pod/web-2"),
        "requests: {:?}",
        fx.requests()
    );
    assert!(
        fx.requests()
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("resourceVersion=")),
        "{:?}",
        fx.requests()
    );
}

// ---------------------------------------------------------------------------------------------
// Label sets

fn node_obj(name: &str, ip: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": "z1"},
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"providerID": format!("aws:///z1/{name}")},
        "status": {
            "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip},
                          {"type": "ExternalIP", "address": "203.0.113.9"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}
        }
    })
}

fn pod_common(name: &str, ns: &str, node: &str, ip: &str) -> Labels {
    l(&[
        ("__meta_kubernetes_namespace", ns),
        ("__meta_kubernetes_pod_name", name),
        ("__meta_kubernetes_pod_ip", ip),
        ("__meta_kubernetes_pod_ready", "true"),
        ("__meta_kubernetes_pod_phase", "Running"),
        ("__meta_kubernetes_pod_node_name", node),
        ("__meta_kubernetes_pod_host_ip", "10.0.0.1"),
        ("__meta_kubernetes_pod_uid", &format!("uid-{ns}-{name}")),
        ("__meta_kubernetes_pod_controller_kind", "ReplicaSet"),
        (
            "__meta_kubernetes_pod_controller_name",
            &format!("{name}-rs"),
        ),
        ("__meta_kubernetes_pod_label_app_kubernetes_io_name", name),
        (
            "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name",
            "true",
        ),
        ("__meta_kubernetes_pod_label_pod_template_hash", "5d4f8c7b9"),
        (
            "__meta_kubernetes_pod_labelpresent_pod_template_hash",
            "true",
        ),
        (
            "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
            "true",
        ),
        (
            "__meta_kubernetes_pod_annotationpresent_prometheus_io_scrape",
            "true",
        ),
        (
            "__meta_kubernetes_pod_annotation_kubectl_kubernetes_io_default_container",
            "app",
        ),
        (
            "__meta_kubernetes_pod_annotationpresent_kubectl_kubernetes_io_default_container",
            "true",
        ),
    ])
}

fn with(base: &Labels, extra: &[(&str, &str)]) -> Labels {
    let mut t = base.clone();
    t.extend(l(extra));
    t
}

#[test]
fn pod_role_labels_match_prometheus() {
    let rt = rt();
    rt.block_on(async {
        let fx = Fixture::start().await;
        fx.apply("pods", pod("default", "web-1", "node-a", "10.1.0.5"));
        // A pending pod without an IP gives no targets.
        let mut pending = pod("default", "pending", "node-a", "");
        pending["status"] = json!({"phase": "Pending"});
        fx.apply("pods", pending);
        let d = start(args_for(&fx, "pod"));
        let got = wait_for(&d, "pod targets", Duration::from_secs(20), |t| {
            !t.is_empty()
        })
        .await;
        let c = pod_common("web-1", "default", "node-a", "10.1.0.5");
        let mut want = vec![
            with(
                &c,
                &[
                    ("__address__", "10.1.0.5:8080"),
                    ("__meta_kubernetes_pod_container_name", "app"),
                    (
                        "__meta_kubernetes_pod_container_id",
                        "containerd://app-web-1",
                    ),
                    ("__meta_kubernetes_pod_container_image", "example/app:1.0"),
                    ("__meta_kubernetes_pod_container_init", "false"),
                    ("__meta_kubernetes_pod_container_port_name", "http"),
                    ("__meta_kubernetes_pod_container_port_number", "8080"),
                    ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
                ],
            ),
            with(
                &c,
                &[
                    ("__address__", "10.1.0.5:9090"),
                    ("__meta_kubernetes_pod_container_name", "app"),
                    (
                        "__meta_kubernetes_pod_container_id",
                        "containerd://app-web-1",
                    ),
                    ("__meta_kubernetes_pod_container_image", "example/app:1.0"),
                    ("__meta_kubernetes_pod_container_init", "false"),
                    ("__meta_kubernetes_pod_container_port_name", "metrics"),
                    ("__meta_kubernetes_pod_container_port_number", "9090"),
                    ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
                ],
            ),
            with(
                &c,
                &[
                    ("__address__", "10.1.0.5"),
                    ("__meta_kubernetes_pod_container_name", "sidecar"),
                    (
                        "__meta_kubernetes_pod_container_id",
                        "containerd://sidecar-web-1",
                    ),
                    (
                        "__meta_kubernetes_pod_container_image",
                        "example/sidecar:2.1",
                    ),
                    ("__meta_kubernetes_pod_container_init", "false"),
                ],
            ),
            with(
                &c,
                &[
                    ("__address__", "10.1.0.5"),
                    ("__meta_kubernetes_pod_container_name", "init"),
                    (
                        "__meta_kubernetes_pod_container_id",
                        "containerd://init-web-1",
                    ),
                    ("__meta_kubernetes_pod_container_image", "busybox:1.36"),
                    ("__meta_kubernetes_pod_container_init", "true"),
                ],
            ),
        ];
        want.sort();
        assert_eq!(got, want);
        assert!(d.status().healthy, "{:?}", d.status());
    });
}

#[test]
fn pod_role_attaches_node_and_namespace_metadata() {
    let rt = rt();
    rt.block_on(async {
        let fx = Fixture::start().await;
        fx.apply("pods", pod("default", "web-1", "node-a", "10.1.0.5"));
        fx.apply("nodes", node_obj("node-a", "10.0.0.1"));
        fx.apply(
            "namespaces",
            json!({"metadata": {"name": "default", "labels": {"team": "core"}, "annotations": {"owner/email": "a@b"}}}),
        );
        let mut args = args_for(&fx, "pod");
        args.attach_metadata = Some(AttachMetadata { node: true, namespace: true });
        let d = start(args);
        let got = wait_for(&d, "pod targets", Duration::from_secs(20), |t| !t.is_empty()).await;
        for t in &got {
            assert_eq!(t["__meta_kubernetes_node_name"], "node-a");
            assert_eq!(t["__meta_kubernetes_node_label_topology_kubernetes_io_zone"], "z1");
            assert_eq!(t["__meta_kubernetes_node_labelpresent_kubernetes_io_hostname"], "true");
            assert_eq!(t["__meta_kubernetes_node_annotation_node_alpha_kubernetes_io_ttl"], "0");
            assert_eq!(t["__meta_kubernetes_namespace_label_team"], "core");
            assert_eq!(t["__meta_kubernetes_namespace_annotation_owner_email"], "a@b");
        }
        // Node label changes reach the pod targets.
        let mut n = node_obj("node-a", "10.0.0.1");
        n["metadata"]["labels"]["topology.kubernetes.io/zone"] = json!("z2");
        fx.apply("nodes", n);
        wait_for(&d, "node label change", Duration::from_secs(10), |t| {
            !t.is_empty() && t.iter().all(|t| t["__meta_kubernetes_node_label_topology_kubernetes_io_zone"] == "z2")
        })
        .await;
    });
}

#[test]
fn node_role_labels_match_prometheus() {
    let rt = rt();
    rt.block_on(async {
        let fx = Fixture::start().await;
        fx.apply("nodes", node_obj("node-a", "10.0.0.1"));
        let d = start(args_for(&fx, "node"));
        let got = wait_for(&d, "node targets", Duration::from_secs(20), |t| {
            !t.is_empty()
        })
        .await;
        let want = vec![l(&[
            ("__address__", "10.0.0.1:10250"),
            ("instance", "node-a"),
            ("__meta_kubernetes_node_name", "node-a"),
            ("__meta_kubernetes_node_provider_id", "aws:///z1/node-a"),
            ("__meta_kubernetes_node_address_Hostname", "node-a"),
            ("__meta_kubernetes_node_address_InternalIP", "10.0.0.1"),
            ("__meta_kubernetes_node_address_ExternalIP", "203.0.113.9"),
            (
                "__meta_kubernetes_node_label_kubernetes_io_hostname",
                "node-a",
            ),
            (
                "__meta_kubernetes_node_labelpresent_kubernetes_io_hostname",
                "true",
            ),
            (
                "__meta_kubernetes_node_label_topology_kubernetes_io_zone",
                "z1",
            ),
            (
                "__meta_kubernetes_node_labelpresent_topology_kubernetes_io_zone",
                "true",
            ),
            (
                "__meta_kubernetes_node_annotation_node_alpha_kubernetes_io_ttl",
                "0",
            ),
            (
                "__meta_kubernetes_node_annotationpresent_node_alpha_kubernetes_io_ttl",
                "true",
            ),
        ])];
        assert_eq!(got, want);
    });
}

fn service_obj() -> serde_json::Value {
    json!({
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                     "annotations": {"prometheus.io/port": "9090"}},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                           {"name": "metrics", "port": 9090, "protocol": "TCP"}]}
    })
}

#[test]
fn service_role_labels_match_prometheus() {
    let rt = rt();
    rt.block_on(async {
        let fx = Fixture::start().await;
        fx.apply("services", service_obj());
        fx.apply(
            "services",
            json!({"metadata": {"name": "ext", "namespace": "default"},
                   "spec": {"type": "ExternalName", "externalName": "db.example.com",
                            "ports": [{"port": 5432, "protocol": "TCP"}]}}),
        );
        let d = start(args_for(&fx, "service"));
        let got = wait_for(&d, "service targets", Duration::from_secs(20), |t| {
            t.len() == 3
        })
        .await;
        let common = l(&[
            ("__meta_kubernetes_namespace", "default"),
            ("__meta_kubernetes_service_name", "web"),
            ("__meta_kubernetes_service_label_app", "web"),
            ("__meta_kubernetes_service_labelpresent_app", "true"),
            (
                "__meta_kubernetes_service_annotation_prometheus_io_port",
                "9090",
            ),
            (
                "__meta_kubernetes_service_annotationpresent_prometheus_io_port",
                "true",
            ),
            ("__meta_kubernetes_service_type", "ClusterIP"),
            ("__meta_kubernetes_service_cluster_ip", "10.96.0.10"),
            ("__meta_kubernetes_service_port_protocol", "TCP"),
        ]);
        let mut want = vec![
            with(
                &common,
                &[
                    ("__address__", "web.default.svc:80"),
                    ("__meta_kubernetes_service_port_name", "http"),
                    ("__meta_kubernetes_service_port_number", "80"),
                ],
            ),
            with(
                &common,
                &[
                    ("__address__", "web.default.svc:9090"),
                    ("__meta_kubernetes_service_port_name", "metrics"),
                    ("__meta_kubernetes_service_port_number", "9090"),
                ],
            ),
            l(&[
                ("__address__", "ext.default.svc:5432"),
                ("__meta_kubernetes_namespace", "default"),
                ("__meta_kubernetes_service_name", "ext"),
                ("__meta_kubernetes_service_type", "ExternalName"),
                ("__meta_kubernetes_service_external_name", "db.example.com"),
                ("__meta_kubernetes_service_port_name", ""),
                ("__meta_kubernetes_service_port_number", "5432"),
                ("__meta_kubernetes_service_port_protocol", "TCP"),
            ]),
        ];
        want.sort();
        assert_eq!(got, want);
    });
}

#[test]
fn endpoints_and_endpointslice_roles_label_pods_and_services() {
    let rt = rt();
    rt.block_on(async {
        let fx = Fixture::start().await;
        fx.apply("pods", pod("default", "web-1", "node-a", "10.1.0.5"));
        fx.apply("services", service_obj());
        fx.apply(
            "endpoints",
            json!({"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                   "subsets": [{
                       "addresses": [{"ip": "10.1.0.5", "nodeName": "node-a",
                                      "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}}],
                       "notReadyAddresses": [{"ip": "10.1.0.9", "hostname": "web-9"}],
                       "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
                   }]}),
        );
        fx.apply(
            "endpointslices",
            json!({"metadata": {"name": "web-abc", "namespace": "default",
                                "labels": {"kubernetes.io/service-name": "web"}},
                   "addressType": "IPv4",
                   "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": true, "serving": true, "terminating": false},
                                  "nodeName": "node-a", "zone": "z1",
                                  "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}}],
                   "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]}),
        );

        let d = start(args_for(&fx, "endpoints"));
        let got = wait_for(&d, "endpoints targets", Duration::from_secs(20), |t| !t.is_empty()).await;
        let by_addr: BTreeMap<&str, &Labels> = got.iter().map(|t| (t["__address__"].as_str(), t)).collect();
        // Ready address backed by a pod: endpoint, service, pod and matching container labels.
        let ready = by_addr["10.1.0.5:8080"];
        assert_eq!(ready["__meta_kubernetes_endpoints_name"], "web");
        assert_eq!(ready["__meta_kubernetes_endpoints_label_app"], "web");
        assert_eq!(ready["__meta_kubernetes_endpoint_ready"], "true");
        assert_eq!(ready["__meta_kubernetes_endpoint_port_name"], "http");
        assert_eq!(ready["__meta_kubernetes_endpoint_port_protocol"], "TCP");
        assert_eq!(ready["__meta_kubernetes_endpoint_node_name"], "node-a");
        assert_eq!(ready["__meta_kubernetes_endpoint_address_target_kind"], "Pod");
        assert_eq!(ready["__meta_kubernetes_endpoint_address_target_name"], "web-1");
        assert_eq!(ready["__meta_kubernetes_service_name"], "web");
        assert_eq!(ready["__meta_kubernetes_service_annotation_prometheus_io_port"], "9090");
        assert_eq!(ready["__meta_kubernetes_pod_name"], "web-1");
        assert_eq!(ready["__meta_kubernetes_pod_container_name"], "app");
        assert_eq!(ready["__meta_kubernetes_pod_container_port_name"], "http");
        assert_eq!(ready["__meta_kubernetes_pod_controller_kind"], "ReplicaSet");
        let not_ready = by_addr["10.1.0.9:8080"];
        assert_eq!(not_ready["__meta_kubernetes_endpoint_ready"], "false");
        assert_eq!(not_ready["__meta_kubernetes_endpoint_hostname"], "web-9");
        // The pod's other container port (9090) gets a target of its own.
        let extra = by_addr["10.1.0.5:9090"];
        assert_eq!(extra["__meta_kubernetes_pod_container_port_name"], "metrics");
        assert!(!extra.contains_key("__meta_kubernetes_endpoint_port_name"));
        assert_eq!(got.len(), 3, "{got:#?}");

        let d = start(args_for(&fx, "endpointslice"));
        let got = wait_for(&d, "endpointslice targets", Duration::from_secs(20), |t| !t.is_empty()).await;
        let t = got.iter().find(|t| t["__address__"] == "10.1.0.5:8080").expect("slice target");
        for (k, v) in [
            ("__meta_kubernetes_endpointslice_name", "web-abc"),
            ("__meta_kubernetes_endpointslice_address_type", "IPv4"),
            ("__meta_kubernetes_endpointslice_port", "8080"),
            ("__meta_kubernetes_endpointslice_port_name", "http"),
            ("__meta_kubernetes_endpointslice_port_protocol", "TCP"),
            ("__meta_kubernetes_endpointslice_port_app_protocol", "http"),
            ("__meta_kubernetes_endpointslice_endpoint_conditions_ready", "true"),
            ("__meta_kubernetes_endpointslice_endpoint_conditions_serving", "true"),
            ("__meta_kubernetes_endpointslice_endpoint_conditions_terminating", "false"),
            ("__meta_kubernetes_endpointslice_endpoint_node_name", "node-a"),
            ("__meta_kubernetes_endpointslice_endpoint_zone", "z1"),
            ("__meta_kubernetes_endpointslice_address_target_kind", "Pod"),
            ("__meta_kubernetes_endpointslice_address_target_name", "web-1"),
            ("__meta_kubernetes_endpointslice_label_kubernetes_io_service_name", "web"),
            ("__meta_kubernetes_service_name", "web"),
            ("__meta_kubernetes_pod_name", "web-1"),
            ("__meta_kubernetes_pod_container_port_number", "8080"),
        ] {
            assert_eq!(t.get(k).map(String::as_str), Some(v), "{k} in {t:#?}");
        }
    });
}

#[test]
fn ingress_role_labels_match_prometheus() {
    let rt = rt();
    rt.block_on(async {
        let fx = Fixture::start().await;
        fx.apply(
            "ingresses",
            json!({"metadata": {"name": "site", "namespace": "web", "labels": {"app": "site"}},
                   "spec": {"ingressClassName": "nginx",
                            "tls": [{"hosts": ["*.example.com"]}],
                            "rules": [
                                {"host": "www.example.com", "http": {"paths": [
                                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "site", "port": {"number": 80}}}},
                                    {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"number": 80}}}}]}},
                                {"host": "plain.test", "http": {"paths": [
                                    {"pathType": "Prefix", "backend": {"service": {"name": "site", "port": {"number": 80}}}}]}}
                            ]}}),
        );
        let d = start(args_for(&fx, "ingress"));
        let got = wait_for(&d, "ingress targets", Duration::from_secs(20), |t| t.len() == 3).await;
        let common = l(&[
            ("__meta_kubernetes_namespace", "web"),
            ("__meta_kubernetes_ingress_name", "site"),
            ("__meta_kubernetes_ingress_label_app", "site"),
            ("__meta_kubernetes_ingress_labelpresent_app", "true"),
            ("__meta_kubernetes_ingress_class_name", "nginx"),
        ]);
        let mut want = vec![
            with(&common, &[("__address__", "www.example.com"), ("__meta_kubernetes_ingress_scheme", "https"),
                ("__meta_kubernetes_ingress_host", "www.example.com"), ("__meta_kubernetes_ingress_path", "/")]),
            with(&common, &[("__address__", "www.example.com"), ("__meta_kubernetes_ingress_scheme", "https"),
                ("__meta_kubernetes_ingress_host", "www.example.com"), ("__meta_kubernetes_ingress_path", "/api")]),
            with(&common, &[("__address__", "plain.test"), ("__meta_kubernetes_ingress_scheme", "http"),
                ("__meta_kubernetes_ingress_host", "plain.test"), ("__meta_kubernetes_ingress_path", "/")]),
        ];
        want.sort();
        assert_eq!(got, want);
    });
}

// ---------------------------------------------------------------------------------------------
// Selectors and namespaces

#[test]
fn selectors_and_namespaces_are_applied_server_side() {
    let rt = rt();
    rt.block_on(async {
        let fx = Fixture::start().await;
        fx.apply("pods", pod("a", "p1", "node-a", "10.1.0.1"));
        fx.apply("pods", pod("b", "p2", "node-b", "10.1.0.2"));
        fx.apply("pods", pod("c", "p3", "node-a", "10.1.0.3"));
        let mut args = args_for(&fx, "pod");
        args.namespaces = vec![Namespaces {
            own_namespace: false,
            names: vec!["a".into(), "b".into()],
        }];
        args.selectors = vec![Selector {
            role: "pod".into(),
            label: String::new(),
            field: "spec.nodeName=node-a".into(),
        }];
        let d = start(args);
        let got = wait_for(&d, "filtered pods", Duration::from_secs(20), |t| {
            !t.is_empty()
        })
        .await;
        assert_eq!(names(&got, "__meta_kubernetes_pod_name"), vec!["p1"]);
        let reqs = fx.requests();
        assert!(
            reqs.iter()
                .any(|r| r.starts_with("GET /api/v1/namespaces/a/pods?")
                    && r.contains("fieldSelector=spec.nodeName%3Dnode-a")),
            "{reqs:?}"
        );
        assert!(
            reqs.iter()
                .any(|r| r.starts_with("GET /api/v1/namespaces/b/pods?")),
            "{reqs:?}"
        );
        assert!(
            !reqs
                .iter()
                .any(|r| r.contains("/namespaces/c/") || r.starts_with("GET /api/v1/pods")),
            "{reqs:?}"
        );

        // Label selectors too, and a watch event for a newly matching pod arrives.
        let mut args = args_for(&fx, "pod");
        args.selectors = vec![Selector {
            role: "pod".into(),
            label: "app.kubernetes.io/name in (p2,p4)".into(),
            field: String::new(),
        }];
        let d = start(args);
        let got = wait_for(&d, "label-selected pods", Duration::from_secs(20), |t| {
            !t.is_empty()
        })
        .await;
        assert_eq!(names(&got, "__meta_kubernetes_pod_name"), vec!["p2"]);
        fx.apply("pods", pod("c", "p4", "node-a", "10.1.0.4"));
        fx.apply("pods", pod("c", "p5", "node-a", "10.1.0.5"));
        wait_for(&d, "p4 added", Duration::from_secs(10), |t| {
            names(t, "__meta_kubernetes_pod_name") == ["p2", "p4"]
        })
        .await;
    });
}

#[test]
fn invalid_arguments_are_rejected() {
    let base = Arguments {
        role: "pod".into(),
        ..Default::default()
    };
    assert!(KubernetesDiscovery::new(Arguments {
        role: "pods".into(),
        ..base.clone()
    })
    .is_err());
    assert!(KubernetesDiscovery::new(Arguments {
        role: String::new(),
        ..base.clone()
    })
    .is_err());
    let both = Arguments {
        api_server: Some("https://x".into()),
        kubeconfig_file: Some("/k".into()),
        ..base.clone()
    };
    assert!(KubernetesDiscovery::new(both).is_err());
    let http_without_server = Arguments {
        bearer_token: Some(Secret::new("t")),
        ..base.clone()
    };
    assert!(KubernetesDiscovery::new(http_without_server).is_err());
    let bad_sel = Arguments {
        selectors: vec![Selector {
            role: "service".into(),
            ..Default::default()
        }],
        ..base.clone()
    };
    let e = KubernetesDiscovery::new(bad_sel).unwrap_err().to_string();
    assert!(e.contains("not valid for role"), "{e}");
    let ok = KubernetesDiscovery::new(base);
    assert!(ok.is_ok());
}

// ---------------------------------------------------------------------------------------------
// Client configuration: kubeconfig file and in-cluster

#[test]
fn kubeconfig_file_and_in_cluster_configuration() {
    let rt = rt();
    rt.block_on(async {
        let fx = Fixture::start().await;
        fx.apply("pods", pod("default", "web-1", "node-a", "10.1.0.5"));
        let dir = tmpdir("config");
        let kc = fx.write_kubeconfig(&dir);
        let d = start(Arguments {
            role: "pod".into(),
            kubeconfig_file: Some(kc.display().to_string()),
            ..Default::default()
        });
        wait_for(&d, "targets via kubeconfig", Duration::from_secs(20), |t| {
            t.len() == 4
        })
        .await;

        // In-cluster: KUBERNETES_SERVICE_HOST/PORT plus the service-account token and CA.
        let sa = dir.join("sa");
        fx.write_service_account(&sa, "default");
        let port = fx.addr.port().to_string();
        let env = |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => Some("127.0.0.1".to_owned()),
            "KUBERNETES_SERVICE_PORT" => Some(port.clone()),
            _ => None,
        };
        let cfg = in_cluster_config(env, &sa).expect("in-cluster config");
        assert_eq!(
            cfg.cluster_url.to_string(),
            format!("https://127.0.0.1:{port}/")
        );
        let client = kube::Client::try_from(cfg).unwrap();
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(client);
        let list = pods
            .list(&Default::default())
            .await
            .expect("list through in-cluster config");
        assert_eq!(list.items.len(), 1);
        let missing = in_cluster_config(|_| None, &sa).unwrap_err().to_string();
        assert!(missing.contains("KUBERNETES_SERVICE_HOST"), "{missing}");
    });
}

// ---------------------------------------------------------------------------------------------
// Watch resilience

#[test]
fn watches_recover_from_drops_expiry_and_revoked_tokens() {
    let rt = rt();
    rt.block_on(async {
        let fx = Fixture::start_with_bookmarks(Duration::from_secs(3600)).await;
        fx.apply("pods", pod("default", "p1", "node-a", "10.1.0.1"));
        let d = start(args_for(&fx, "pod"));
        wait_for(&d, "initial", Duration::from_secs(20), |t| {
            names(t, "__meta_kubernetes_pod_name") == ["p1"]
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while fx.active_watches() == 0 {
            assert!(Instant::now() < deadline, "no watch opened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A watch event.
        fx.apply("pods", pod("default", "p2", "node-a", "10.1.0.2"));
        wait_for(&d, "p2 via watch", Duration::from_secs(10), |t| {
            names(t, "__meta_kubernetes_pod_name") == ["p1", "p2"]
        })
        .await;
        let lists_before = fx
            .requests()
            .iter()
            .filter(|r| !r.contains("watch="))
            .count();

        // 1. The connection drops; a change made meanwhile still arrives.
        fx.drop_watches();
        fx.apply("pods", pod("default", "p3", "node-a", "10.1.0.3"));
        wait_for(&d, "p3 after drop", Duration::from_secs(15), |t| {
            names(t, "__meta_kubernetes_pod_name") == ["p1", "p2", "p3"]
        })
        .await;

        // 2. The resource version expires while disconnected: changes made then arrive via a re-list.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fx.active_watches() == 0 {
            assert!(Instant::now() < deadline, "no watch reopened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fx.revoke_token();
        fx.drop_watches();
        fx.delete("pods", Some("default"), "p1");
        fx.apply("pods", pod("default", "p4", "node-a", "10.1.0.4"));
        fx.compact();
        // 3. Meanwhile the token is revoked: unhealthy with the cause, last good targets kept.
        let msg = wait_status(&d, false, Duration::from_secs(15)).await;
        assert!(msg.contains("401") || msg.contains("Unauthorized"), "{msg}");
        assert_eq!(
            names(&d.targets(), "__meta_kubernetes_pod_name"),
            vec!["p1", "p2", "p3"]
        );
        fx.restore_token();
        wait_for(
            &d,
            "converged after expiry and restored token",
            Duration::from_secs(20),
            |t| names(t, "__meta_kubernetes_pod_name") == ["p2", "p3", "p4"],
        )
        .await;
        wait_status(&d, true, Duration::from_secs(10)).await;
        let reqs = fx.requests();
        let lists_after = reqs.iter().filter(|r| !r.contains("watch=")).count();
        assert!(lists_after > lists_before, "expected a re-list: {reqs:?}");

        // 4. An expired version hit by a live watch (410 as an ERROR event) also re-lists.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fx.active_watches() == 0 {
            assert!(Instant::now() < deadline, "no watch reopened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lists_before = fx
            .requests()
            .iter()
            .filter(|r| !r.contains("watch="))
            .count();
        fx.delete("pods", Some("default"), "p2");
        // Advance the store past what the pod watch has seen (no bookmark tells it), compact,
        // and end the watch: resuming from its version gets 410 Gone.
        fx.apply("nodes", node_obj("node-z", "10.0.0.9"));
        fx.compact();
        fx.end_watches();
        wait_for(&d, "converged after 410", Duration::from_secs(20), |t| {
            names(t, "__meta_kubernetes_pod_name") == ["p3", "p4"]
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while fx
            .requests()
            .iter()
            .filter(|r| !r.contains("watch="))
            .count()
            == lists_before
        {
            assert!(
                Instant::now() < deadline,
                "expected a re-list after 410: {:?}",
                fx.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The re-list was caused by 410 Gone, not by a failure: still healthy.
        assert!(d.status().healthy, "{:?}", d.status());
        wait_for(
            &d,
            "converged after re-list",
            Duration::from_secs(10),
            |t| names(t, "__meta_kubernetes_pod_name") == ["p3", "p4"],
        )
        .await;
    });
}

#[test]
fn tls_errors_make_the_component_unhealthy_with_the_cause() {
    let rt = rt();
    rt.block_on(async {
        let fx = Fixture::start().await;
        let other = Fixture::start().await;
        let mut args = args_for(&fx, "pod");
        // Trust the wrong CA.
        args.tls_config = Some(TlsConfig {
            ca_pem: Some(other.ca_pem.clone()),
            ..Default::default()
        });
        let d = start(args);
        let msg = wait_status(&d, false, Duration::from_secs(15)).await;
        assert!(msg.to_lowercase().contains("certificate"), "{msg}");
        // Fixing the arguments clears it.
        d.update(args_for(&fx, "pod")).unwrap();
        wait_status(&d, true, Duration::from_secs(15)).await;
    });
}
