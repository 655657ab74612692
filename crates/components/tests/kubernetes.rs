//! `discovery.kubernetes` against the fixture API server (`k8s_fixture`): the fixture's
//! faithfulness proven with the installed `kubectl`, server-side
//! selectors and namespaces, the three ways to configure the client, and watch resilience
//! (dropped connections, expired resource versions, a revoked and restored token).

#[path = "support/k8s_discovery.rs"]
mod k8s_discovery;
#[path = "support/k8s_fixture.rs"]
mod k8s_fixture;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use components::discovery::kubernetes::{
    in_cluster_config, Arguments, KubernetesDiscovery, Namespaces, Selector, TlsConfig,
};
use k8s_discovery::*;
use k8s_fixture::{pod, Fixture};
use river_parser::decode::Secret;

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
#[ignore = "needs kubectl"]
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
