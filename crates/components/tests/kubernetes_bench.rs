//! Scale check for `discovery.kubernetes` (run with `--nocapture` to see the numbers): 5,000
//! realistic pods (two containers, an init container, two ports: 20,000 targets) across 100
//! nodes served by the fixture. Measures the time to the first complete target list, the
//! process RSS growth, and how long a pod added later takes to appear in the targets.

#[path = "support/k8s_fixture.rs"]
mod k8s_fixture;

use std::sync::Arc;
use std::time::{Duration, Instant};

use components::discovery::kubernetes::{Arguments, KubernetesDiscovery, TlsConfig};
use k8s_fixture::{pod, Fixture};
use river_parser::decode::Secret;

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

#[test]
fn five_thousand_pods_across_a_hundred_nodes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fx = Fixture::start().await;
        for i in 0..5000u32 {
            let ip = format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256);
            fx.apply(
                "pods",
                pod(&format!("ns-{}", i % 20), &format!("pod-{i}"), &format!("node-{}", i % 100), &ip),
            );
        }
        let rss_before = rss_kib();
        let args = Arguments {
            role: "pod".into(),
            api_server: Some(fx.url()),
            bearer_token: Some(Secret::new(fx.token.clone())),
            tls_config: Some(TlsConfig {
                ca_pem: Some(fx.ca_pem.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = KubernetesDiscovery::new(args).unwrap();
        let mut rx = d.subscribe();
        let started = Instant::now();
        tokio::spawn(Arc::clone(&d).run(std::future::pending()));
        tokio::time::timeout(Duration::from_secs(120), async {
            while rx.borrow_and_update().len() != 20_000 {
                rx.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no full target list; status {:?}", d.status()));
        let first = started.elapsed();
        let rss_after = rss_kib();

        // Wait for the watch, then add a pod and time its appearance.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fx.active_watches() == 0 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut latencies = Vec::new();
        for k in 0..5 {
            let name = format!("late-{k}");
            let t0 = Instant::now();
            fx.apply("pods", pod("ns-late", &name, "node-7", &format!("10.200.0.{k}")));
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if rx
                        .borrow_and_update()
                        .iter()
                        .any(|t| t.get("__meta_kubernetes_pod_name") == Some(&name))
                    {
                        break;
                    }
                    rx.changed().await.unwrap();
                }
            })
            .await
            .expect("late pod appears");
            latencies.push(t0.elapsed());
        }
        latencies.sort();
        println!(
            "5000 pods / 100 nodes / 20000 targets: first targets after {:.0} ms; RSS {} MiB -> {} MiB (+{} MiB, fixture included); pod added later visible after {:.1} ms (median of 5, max {:.1} ms)",
            first.as_secs_f64() * 1e3,
            rss_before / 1024,
            rss_after / 1024,
            rss_after.saturating_sub(rss_before) / 1024,
            latencies[2].as_secs_f64() * 1e3,
            latencies[4].as_secs_f64() * 1e3,
        );
        assert!(first < Duration::from_secs(60), "first targets took {first:?}");
        // Debug builds on a loaded 2-core machine are an order of magnitude slower.
        let bound = if cfg!(debug_assertions) { 15 } else { 2 };
        assert!(latencies[2] < Duration::from_secs(bound), "{latencies:?}");
    });
}
