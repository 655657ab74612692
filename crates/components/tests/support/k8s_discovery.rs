//! Helpers of the `discovery.kubernetes` tests (`kubernetes.rs`, `kubernetes_labels.rs`): a
//! runtime, arguments pointing at the fixture API server, a started discovery loop, and waits on
//! its targets and health.
#![allow(
    dead_code,
    reason = "each test file that includes this module uses a part of it"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use components::discovery::kubernetes::{Arguments, KubernetesDiscovery, TlsConfig};
use components::discovery::relabel::Labels;
use river_parser::decode::Secret;
use serde_json::json;

use crate::k8s_fixture::Fixture;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rill-k8s-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn args_for(fx: &Fixture, role: &str) -> Arguments {
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
pub fn start(args: Arguments) -> Arc<KubernetesDiscovery> {
    let d = KubernetesDiscovery::new(args).expect("valid arguments");
    tokio::spawn(Arc::clone(&d).run(std::future::pending()));
    d
}

/// Waits until the targets satisfy `pred`; panics with the last targets and status otherwise.
pub async fn wait_for(
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

pub async fn wait_status(d: &KubernetesDiscovery, healthy: bool, timeout: Duration) -> String {
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

pub fn names(targets: &[Labels], label: &str) -> Vec<String> {
    let mut v: Vec<String> = targets
        .iter()
        .filter_map(|t| t.get(label).cloned())
        .collect();
    v.sort();
    v.dedup();
    v
}

pub fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A Node object named `name` with internal IP `ip`.
pub fn node_obj(name: &str, ip: &str) -> serde_json::Value {
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
