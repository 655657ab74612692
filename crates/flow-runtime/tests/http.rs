//! HTTP tests against the real server on 127.0.0.1:0.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common.rs"]
mod common;

use common::*;
use flow_runtime::testing::stats;
use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use tokio_util::sync::CancellationToken;

struct Server {
    rt: flow_runtime::Runtime,
    addr: std::net::SocketAddr,
    config: PathBuf,
    dir: PathBuf,
    cancel: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start(src: &str) -> Server {
    let dir = storage();
    let config = dir.join("config.river");
    std::fs::write(&config, src).unwrap();
    let rt = runtime_with(dir.join("data"), Some(config.clone()));
    let cancel = CancellationToken::new();
    let (addr, _task) =
        flow_runtime::http::serve(rt.clone(), "127.0.0.1:0".parse().unwrap(), cancel.clone())
            .await
            .unwrap();
    Server {
        rt,
        addr,
        config,
        dir: dir.join("data"),
        cancel,
    }
}

const CONFIG: &str = r#"
test.pulse "p" { }

test.passthrough "a" {
  input = test.pulse.p.count
}

test.passthrough "xss" {
  input = "<script>alert(1)</script>"
}

test.sum "total" {
  inputs = [test.passthrough.a.output, 2]
}
"#;

#[tokio::test]
async fn ready_only_after_first_load() {
    let s = start(CONFIG).await;
    let (status, body) = http(s.addr, "GET", "/-/ready").await;
    assert_eq!((status, body.as_str()), (503, "rill is not ready.\n"));
    let (status, _) = http(s.addr, "POST", "/-/reload").await;
    assert_eq!(status, 200);
    assert_eq!(http(s.addr, "GET", "/-/ready").await.0, 200);
    assert_eq!(http(s.addr, "GET", "/-/healthy").await.0, 200);
}

#[tokio::test]
async fn failed_first_load_stays_unready() {
    let s = start("test.nope \"x\" { }\n").await;
    let (status, body) = http(s.addr, "GET", "/-/reload").await;
    assert_eq!(status, 400);
    assert!(
        body.contains("config.river:1:1: unknown component \"test.nope\""),
        "{body}"
    );
    assert!(body.contains("1 | test.nope \"x\" { }"), "{body}");
    assert_eq!(http(s.addr, "GET", "/-/ready").await.0, 503);
}

#[tokio::test]
async fn components_api() {
    let s = start(CONFIG).await;
    s.rt.reload().await.unwrap();
    let (status, body) = http(s.addr, "GET", "/api/v0/web/components").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "test.pulse.p",
            "test.passthrough.a",
            "test.passthrough.xss",
            "test.sum.total"
        ]
    );
    assert_eq!(list[1]["name"], "test.passthrough");
    assert_eq!(list[1]["label"], "a");
    assert_eq!(list[1]["health"]["state"], "healthy");

    let (status, body) = http(s.addr, "GET", "/api/v0/web/components/test.passthrough.a").await;
    assert_eq!(status, 200);
    let c: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["referencesTo"], serde_json::json!(["test.pulse.p"]));
    assert_eq!(c["referencedBy"], serde_json::json!(["test.sum.total"]));
    assert_eq!(
        c["arguments"],
        serde_json::json!([{"name": "input", "type": "attr", "value": {"type": "number", "value": 0}}])
    );
    assert_eq!(
        c["exports"],
        serde_json::json!([{"name": "output", "type": "attr", "value": {"type": "number", "value": 0}}])
    );
    let (_, body) = http(s.addr, "GET", "/api/v0/web/components/test.pulse.p").await;
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["debugInfo"][0]["name"], "count");

    let (status, _) = http(s.addr, "GET", "/api/v0/web/components/test.pulse.nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_reload_leaves_api_output_unchanged() {
    let s = start(CONFIG).await;
    s.rt.reload().await.unwrap();
    let before_list = http(s.addr, "GET", "/api/v0/web/components").await;
    let before_a = http(s.addr, "GET", "/api/v0/web/components/test.passthrough.a").await;
    std::fs::write(
        &s.config,
        CONFIG
            .replace(
                "inputs = [test.passthrough.a.output, 2]",
                "inputs = [test.passthrough.zz.output, 3]",
            )
            .replace("input = test.pulse.p.count", "input = 99"),
    )
    .unwrap();
    let (status, body) = http(s.addr, "POST", "/-/reload").await;
    assert_eq!(status, 400);
    assert!(
        body.contains("component \"test.passthrough.zz.output\" does not exist or is out of scope"),
        "{body}"
    );
    assert_eq!(
        http(s.addr, "GET", "/api/v0/web/components").await,
        before_list
    );
    assert_eq!(
        http(s.addr, "GET", "/api/v0/web/components/test.passthrough.a").await,
        before_a
    );
    let metrics = http(s.addr, "GET", "/metrics").await.1;
    assert!(
        metrics.contains("rill_config_last_load_successful 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rill_config_load_failures_total 1\n"),
        "{metrics}"
    );
    // A good reload afterwards applies, without restarting kept components.
    std::fs::write(
        &s.config,
        CONFIG.replace(
            "inputs = [test.passthrough.a.output, 2]",
            "inputs = [test.passthrough.a.output, 3]",
        ),
    )
    .unwrap();
    assert_eq!(http(s.addr, "GET", "/-/reload").await.0, 200);
    assert_eq!(export(&s.rt, "test.sum.total", "sum").await, Some(int(3)));
    assert_eq!(stats(&s.dir.join("test.sum.total")).builds.load(SeqCst), 1);
}

#[tokio::test]
async fn healthy_lists_unhealthy_components() {
    let s = start(CONFIG).await;
    s.rt.reload().await.unwrap();
    std::fs::write(
        &s.config,
        CONFIG.replace(
            "inputs = [test.passthrough.a.output, 2]",
            "inputs = [\"x\"]",
        ),
    )
    .unwrap();
    let (status, body) = http(s.addr, "POST", "/-/reload").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(s.addr, "GET", "/-/healthy").await;
    assert_eq!(status, 500);
    assert!(body.contains("test.sum.total"), "{body}");
    assert!(!body.contains("test.passthrough.a"), "{body}");
}

#[tokio::test]
async fn metrics_exposition() {
    let s = start(CONFIG).await;
    s.rt.reload().await.unwrap();
    let (status, body) = http(s.addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "rill_config_last_load_successful 1\n",
        "rill_config_load_failures_total 0\n",
        "rill_config_hash{sha256=\"",
        "rill_component_evaluation_seconds_count 4\n",
        "rill_component_controller_running_components{health_type=\"healthy\"} 4\n",
        "test_pulse_ticks_total{component_id=\"test.pulse.p\"} 0\n",
        "# EOF\n",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in\n{body}");
    }
    flow_runtime::testing::fire(&s.dir.join("test.pulse.p"));
    wait_for("tick counted", || async {
        http(s.addr, "GET", "/metrics")
            .await
            .1
            .contains("test_pulse_ticks_total{component_id=\"test.pulse.p\"} 1\n")
    })
    .await;
    // A removed component's series go away with it.
    std::fs::write(&s.config, "test.sum \"only\" { inputs = [1] }\n").unwrap();
    assert_eq!(http(s.addr, "POST", "/-/reload").await.0, 200);
    let body = http(s.addr, "GET", "/metrics").await.1;
    assert!(!body.contains("test_pulse_ticks"), "{body}");
    assert!(
        body.contains("rill_component_controller_running_components{health_type=\"healthy\"} 1\n"),
        "{body}"
    );
}

#[tokio::test]
async fn ui_is_served_with_csp() {
    let s = start(CONFIG).await;
    let raw = http_raw(
        s.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let lower = raw.to_ascii_lowercase();
    assert!(
        lower.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{raw}"
    );
    assert!(raw.contains("<script src=\"/ui/app.js\""));
    assert_eq!(http(s.addr, "GET", "/ui/app.js").await.0, 200);
    assert_eq!(http(s.addr, "GET", "/nope").await.0, 404);
    assert_eq!(http(s.addr, "DELETE", "/-/reload").await.0, 405);
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let s = start(CONFIG).await;
    // A body over the limit.
    let body = vec![b'x'; 200 * 1024];
    let mut req = format!(
        "POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let raw = http_raw(s.addr, &req).await;
    assert!(
        raw.starts_with("HTTP/1.1 413"),
        "{}",
        &raw[..raw.len().min(200)]
    );
    // Headers over the limit: hyper answers 431 or closes the connection.
    let big = format!(
        "GET /-/ready HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let raw = http_raw(s.addr, big.as_bytes()).await;
    assert!(
        raw.is_empty() || raw.starts_with("HTTP/1.1 431"),
        "{}",
        &raw[..raw.len().min(200)]
    );
    // The server still works.
    assert_eq!(http(s.addr, "GET", "/-/ready").await.0, 503);
}
