//! `discovery.kubernetes` label sets for every role (pod, node, service, endpoints,
//! endpointslice, ingress) against the fixture API server, compared with what Prometheus sets.

#[path = "support/k8s_discovery.rs"]
mod k8s_discovery;
#[path = "support/k8s_fixture.rs"]
mod k8s_fixture;

use std::collections::BTreeMap;
use std::time::Duration;

use components::discovery::kubernetes::AttachMetadata;
use components::discovery::relabel::Labels;
use k8s_discovery::*;
use k8s_fixture::{pod, Fixture};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Label sets

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
