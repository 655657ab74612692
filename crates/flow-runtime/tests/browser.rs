//! Browser test: headless Debian `chromium` loads the embedded UI from the real server, finds
//! every component of the config in the list, opens one, and writes screenshots to
//! `test-output/` at the repository root. A value `<script>alert(1)</script>` must appear as text.
//! Fails (does not skip) when chromium is missing.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common.rs"]
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CHROMIUM: &str = "/usr/bin/chromium";

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

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

/// Runs headless chromium on `url`; returns the DOM after scripts ran. With `screenshot`, also
/// writes a PNG there.
async fn chromium(url: &str, screenshot: Option<&Path>) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
    );
    let profile = storage().join("chromium-profile");
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    cmd.arg(url).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium timed out")
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium"]
async fn ui_lists_components_and_escapes_values() {
    let dir = storage();
    let config = dir.join("config.river");
    std::fs::write(&config, CONFIG).unwrap();
    let rt = runtime_with(dir.join("data"), Some(config.clone()));
    rt.reload().await.unwrap();
    let cancel = CancellationToken::new();
    let (addr, _task) =
        flow_runtime::http::serve(rt.clone(), "127.0.0.1:0".parse().unwrap(), cancel.clone())
            .await
            .unwrap();
    let base = format!("http://{addr}/");
    let out = output_dir();

    // The list: every component of the config is a row linking to its page.
    let dom = chromium(&base, None).await;
    for id in [
        "test.pulse.p",
        "test.passthrough.a",
        "test.passthrough.xss",
        "test.sum.total",
    ] {
        assert!(
            dom.contains(&format!("<tr data-id=\"{id}\">")),
            "{id} missing from the list:\n{dom}"
        );
        assert!(dom.contains(&format!("href=\"#/component/{id}\"")), "{dom}");
    }
    assert!(dom.contains("Components (4)"), "{dom}");
    assert!(dom.contains("class=\"badge healthy\""), "{dom}");
    chromium(&base, Some(&out.join("ui-components.png"))).await;

    // One component's page: the hostile value is shown as text, not as markup.
    let page = format!("{base}#/component/test.passthrough.xss");
    let dom = chromium(&page, None).await;
    assert!(
        dom.contains("id=\"component-id\">test.passthrough.xss<"),
        "{dom}"
    );
    assert!(
        dom.contains("input = \"&lt;script&gt;alert(1)&lt;/script&gt;\""),
        "value not shown as text:\n{dom}"
    );
    assert!(!dom.contains("<script>alert(1)</script>"), "{dom}");
    assert!(dom.contains("id=\"exports\""), "{dom}");
    chromium(&page, Some(&out.join("ui-component.png"))).await;

    // The graph view is an SVG with one node per component.
    let dom = chromium(&format!("{base}#/graph"), None).await;
    assert!(dom.contains("<svg class=\"graph\""), "{dom}");
    assert_eq!(dom.matches("<rect class=\"node ").count(), 4, "{dom}");
    chromium(&format!("{base}#/graph"), Some(&out.join("ui-graph.png"))).await;

    // A failed reload: the page shows its diagnostics (as text) and the graph keeps running.
    std::fs::write(&config, format!("{CONFIG}test.nope \"<b>x</b>\" {{ }}\n")).unwrap();
    assert!(rt.reload().await.is_err());
    let dom = chromium(&base, None).await;
    assert!(dom.contains("id=\"reload-output\""), "{dom}");
    assert!(dom.contains("The last configuration load failed:"), "{dom}");
    assert!(dom.contains("test.nope \"&lt;b&gt;x&lt;/b&gt;\""), "{dom}");
    assert!(dom.contains("Components (4)"), "{dom}");
    chromium(&base, Some(&out.join("ui-failed-reload.png"))).await;

    for f in [
        "ui-components.png",
        "ui-component.png",
        "ui-graph.png",
        "ui-failed-reload.png",
    ] {
        let len = std::fs::metadata(out.join(f)).unwrap().len();
        assert!(len > 5_000, "{f} is only {len} bytes");
    }
    cancel.cancel();
}
