//! The flame graph in the web UI, end to end as root: `rill run` on `examples/river/local.river`
//! (with a 2 s interval and one extra target naming the workload's pid) profiles the host while
//! the static workload (`main → outer → middle → hot_leaf`) runs; headless Debian `chromium`,
//! driven over the DevTools protocol (`--remote-debugging-pipe`, through two FIFOs), opens the
//! `pyroscope.ebpf.local` page, finds `hot_leaf` in the flame graph, hovers it (tooltip), searches
//! it (highlight), clicks it (zoom) and saves screenshots into `test-output/`. The download link
//! serves a `.pb.gz` that `go tool pprof -top` reads with `hot_leaf` on top. The example's
//! off-CPU profiles (`off_cpu_threshold`) are behind the panel's type selector: picking
//! Off-CPU draws one, with its values as time. FAILS (does not skip) without root, chromium,
//! gcc or go.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const ID: &str = "pyroscope.ebpf.local";

fn tmpdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("rill-flame-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn output_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-output");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..at]).into_owned();
    Some((
        head.split(' ').nth(1)?.parse().ok()?,
        buf[at + 4..].to_vec(),
    ))
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn check(cmd: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success()),
        "{cmd} is required"
    );
}

/// A DevTools protocol client over chromium's `--remote-debugging-pipe` (NUL-separated JSON).
struct Cdp {
    _chromium: Kill,
    tx: std::fs::File,
    rx: BufReader<std::fs::File>,
    next: u64,
    session: Option<String>,
}

impl Cdp {
    fn launch(dir: &Path) -> Cdp {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: apt-get install chromium"
        );
        let to = dir.join("cdp-in");
        let from = dir.join("cdp-out");
        for f in [&to, &from] {
            assert!(Command::new("mkfifo").arg(f).status().unwrap().success());
        }
        let profile = dir.join("chromium-profile");
        let script = format!(
            "exec {CHROMIUM} --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
             --disable-background-networking --disable-component-update --disable-sync \
             --disable-dev-shm-usage --hide-scrollbars --window-size=1400,1000 \
             --user-data-dir={} --remote-debugging-pipe about:blank 3<{} 4>{}",
            profile.display(),
            to.display(),
            from.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let tx = std::fs::OpenOptions::new().write(true).open(&to).unwrap();
        let rx = BufReader::new(std::fs::File::open(&from).unwrap());
        Cdp {
            _chromium: Kill(child),
            tx,
            rx,
            next: 0,
            session: None,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.tx.write_all(&bytes).unwrap();
        loop {
            let mut buf = Vec::new();
            let n = self.rx.read_until(0, &mut buf).unwrap();
            assert!(n > 0, "chromium closed the pipe");
            buf.pop();
            let v: Value = serde_json::from_slice(&buf).unwrap();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    fn wait_for(&mut self, what: &str, expr: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.eval(expr);
            if !v.is_null() && v != json!(false) {
                return v;
            }
            // The page may not have rendered yet: never let the diagnostic dump itself throw.
            let page = self.eval(
                "(() => { const m = document.getElementById('main') || document.body; \
                 return m ? m.innerText.slice(0, 2000) : '(page not loaded yet)'; })()",
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; page:\n{page}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn mouse(&mut self, kind: &str, x: f64, y: f64) {
        let mut p = json!({"type": kind, "x": x, "y": y});
        if kind != "mouseMoved" {
            p["button"] = json!("left");
            p["clickCount"] = json!(1);
        }
        self.call("Input.dispatchMouseEvent", p);
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, &png).unwrap();
        assert!(
            png.len() > 10_000,
            "{} is only {} bytes",
            path.display(),
            png.len()
        );
    }
}

/// Center of the `hot_leaf` frame, scrolled into view, with its width and the graph's.
const FIND_HOT: &str = r#"(() => {
  const f = [...document.querySelectorAll('#flamegraph g.frame')].find(g => g.dataset.name === 'hot_leaf');
  if (!f) return null;
  f.scrollIntoView({block: 'center'});
  const r = f.querySelector('rect').getBoundingClientRect();
  const svg = document.getElementById('flamegraph').getBoundingClientRect();
  return {x: r.x + Math.min(r.width / 2, 20), y: r.y + r.height / 2, w: r.width, svgw: svg.width};
})()"#;

#[test]
#[ignore = "needs root and eBPF, Chromium, Go toolchain"]
fn flame_graph_in_the_ui() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "needs root (eBPF)"
    );
    for tool in ["gcc", "go", "mkfifo"] {
        check(tool);
    }
    let dir = tmpdir();
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../components/tests/fixtures/ebpf/workload.c");
    let bin = dir.join("workload");
    assert!(Command::new("gcc")
        .args(["-static", "-O1", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap()
        .success());
    let workload = Kill(Command::new(&bin).arg("cpu").spawn().unwrap());
    let pid = workload.0.id();
    // A process that is off CPU nearly all the time, for the off-CPU flame graph.
    let waiter = Kill(
        Command::new("sh")
            .args(["-c", "while :; do sleep 0.05; done"])
            .spawn()
            .unwrap(),
    );
    let waiter_pid = waiter.0.id();

    // The example, with a short interval, the workload and the waiter as its only targets (the
    // whole host's processes would all be decided and given unwind tables: slow in a debug
    // build) and every off-CPU event recorded.
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/river/local.river"),
    )
    .unwrap();
    assert!(example.contains("collect_interval = \"10s\""));
    assert!(example.contains("targets_only     = false"));
    assert!(example.contains("off_cpu_threshold = 0.02"));
    let config = example
        .replace("collect_interval = \"10s\"", "collect_interval = \"2s\"")
        .replace("off_cpu_threshold = 0.02", "off_cpu_threshold = 1")
        .replace(
            "targets_only     = false",
            &format!(
                "targets_only     = true\n  targets          = [{{\"__process_pid__\" = \"{pid}\", \
                 \"service_name\" = \"workload\"}}, {{\"__process_pid__\" = \"{waiter_pid}\", \
                 \"service_name\" = \"waiter\"}}]"
            ),
        );
    let config_path = dir.join("local.river");
    std::fs::write(&config_path, config).unwrap();
    let addr = free_addr();
    let _rill = Kill(
        Command::new(env!("CARGO_BIN_EXE_rill"))
            .arg("run")
            .arg(&config_path)
            .arg(format!("--server.http.listen-addr={addr}"))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rill.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    // Wait for the workload's first profile.
    let list_path = format!("/api/v0/web/components/{ID}/profile");
    let deadline = Instant::now() + Duration::from_secs(60);
    let key = loop {
        if let Some((200, body)) = get(addr, &list_path) {
            let v: Value = serde_json::from_slice(&body).unwrap();
            if let Some(t) = v["targets"].as_array().and_then(|ts| {
                ts.iter().find(|t| {
                    t["labels"]["service_name"] == "workload"
                        && t["labels"]["__name__"] == "process_cpu"
                })
            }) {
                break t["key"].as_str().unwrap().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no workload profile; log:\n{}",
            std::fs::read_to_string(dir.join("rill.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    let mut cdp = Cdp::launch(&dir);
    let targets = cdp.call(
        "Target.createTarget",
        json!({"url": format!("http://{addr}/#/component/{ID}")}),
    );
    let target_id = targets["targetId"].as_str().unwrap().to_string();
    let s = cdp.call(
        "Target.attachToTarget",
        json!({"targetId": target_id, "flatten": true}),
    );
    cdp.session = Some(s["sessionId"].as_str().unwrap().to_string());
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
    );
    // Select the workload's target.
    cdp.wait_for(
        "the target list",
        &format!(
            "(() => {{ const s = document.getElementById('fg-target'); if (!s) return null; \
             const o = [...s.options].find(o => o.value === {k}); if (!o) return null; \
             if (s.value !== o.value) {{ s.value = o.value; s.dispatchEvent(new Event('change')); }} \
             return true; }})()",
            k = json!(key)
        ),
        60,
    );
    let hot = cdp.wait_for("hot_leaf in the flame graph", FIND_HOT, 60);
    // The top-functions table lists hot_leaf first.
    let first = cdp.wait_for(
        "the top-functions table",
        "(() => { const r = document.querySelector('#fg-top tbody tr'); return r ? r.dataset.name : null; })()",
        20,
    );
    assert_eq!(first, json!("hot_leaf"));

    // Hover: the tooltip names the function with samples and share.
    let (x, y) = (hot["x"].as_f64().unwrap(), hot["y"].as_f64().unwrap());
    cdp.mouse("mouseMoved", x, y);
    let tip = cdp.wait_for(
        "the tooltip",
        "(() => { const t = document.getElementById('fg-tip'); return t && !t.hidden ? t.textContent : null; })()",
        10,
    );
    let tip = tip.as_str().unwrap();
    assert!(
        tip.starts_with("hot_leaf") && tip.contains("samples") && tip.contains('%'),
        "{tip}"
    );

    // Search: matching frames are highlighted and their share is shown.
    let matched = cdp.eval(
        "(() => { const i = document.getElementById('fg-search'); i.value = 'hot_l'; \
         i.dispatchEvent(new Event('input')); \
         return [document.querySelectorAll('#flamegraph g.frame.match').length, \
                 Number(document.getElementById('flamegraph').dataset.matched), \
                 document.getElementById('fg-matched').textContent]; })()",
    );
    assert!(matched[0].as_u64().unwrap() >= 1, "{matched}");
    assert!(matched[1].as_u64().unwrap() > 0, "{matched}");
    assert!(
        matched[2].as_str().unwrap().starts_with("Matched: "),
        "{matched}"
    );
    cdp.screenshot(&output_dir().join("flamegraph.png"));

    // Click hot_leaf: the graph zooms to it (full width). The page refreshes itself every few
    // seconds and a refresh can move the frame between finding it and clicking it, so a click
    // that did not zoom is retried on the frame's new position (a few times at most).
    const ZOOMED: &str = "(() => { const z = document.getElementById('flamegraph').dataset.zoom; \
                          return z && z.endsWith('hot_leaf') ? z : null; })()";
    let mut zoom = Value::Null;
    for _attempt in 0..5 {
        let hot = cdp.eval(FIND_HOT);
        let (x, y) = (hot["x"].as_f64().unwrap(), hot["y"].as_f64().unwrap());
        cdp.mouse("mouseMoved", x, y);
        cdp.mouse("mousePressed", x, y);
        cdp.mouse("mouseReleased", x, y);
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            zoom = cdp.eval(ZOOMED);
            if !zoom.is_null() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !zoom.is_null() {
            break;
        }
    }
    assert!(
        !zoom.is_null(),
        "clicking hot_leaf never zoomed the flame graph"
    );
    assert!(
        zoom.as_str()
            .unwrap()
            .ends_with("main;outer;middle;hot_leaf"),
        "{zoom}"
    );
    let after = cdp.eval(FIND_HOT);
    let (w, svgw) = (
        after["w"].as_f64().unwrap(),
        after["svgw"].as_f64().unwrap(),
    );
    assert!(
        w > svgw * 0.95,
        "hot_leaf is {w} of {svgw} px after the zoom"
    );
    cdp.screenshot(&output_dir().join("flamegraph-zoomed.png"));

    // The download link: a .pb.gz go tool pprof reads, hot_leaf on top.
    let href = cdp.eval("document.getElementById('fg-download').getAttribute('href')");
    let href = href.as_str().unwrap();
    assert!(href.contains("format=pprof"), "{href}");
    let (status, body) = get(addr, href).unwrap();
    assert_eq!(status, 200);
    let pb = output_dir().join("flamegraph-download.pb.gz");
    std::fs::write(&pb, &body).unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&pb)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let mut lines = text.lines().skip_while(|l| !l.contains("flat%"));
    lines.next();
    assert!(
        lines.next().unwrap_or_default().ends_with(" hot_leaf"),
        "go tool pprof -top:\n{text}"
    );
    // The aggregate over the kept intervals has at least as many samples as the last one.
    let q = |range: &str| {
        let (st, b) = get(
            addr,
            &format!("{list_path}?target={}&range={range}", urlencode(&key)),
        )
        .unwrap();
        assert_eq!(st, 200);
        serde_json::from_slice::<Value>(&b).unwrap()
    };
    let (last, all) = (q("last"), q("all"));
    assert!(
        all["samples"].as_u64() >= last["samples"].as_u64(),
        "{all} {last}"
    );
    assert!(all["intervals"].as_u64().unwrap() >= 1);

    // Off-CPU: the type selector lists it, and picking it draws an off-CPU flame graph.
    cdp.wait_for(
        "the off-CPU profile type",
        "(() => { const s = document.getElementById('fg-type'); if (!s) return null; \
         const o = [...s.options].find(o => o.value === 'offcpu'); if (!o) return null; \
         if (s.value !== 'offcpu') { s.value = 'offcpu'; s.dispatchEvent(new Event('change')); } \
         return o.textContent; })()",
        60,
    );
    let info = cdp.wait_for(
        "an off-CPU flame graph",
        "(() => { const i = document.getElementById('fg-info').textContent; \
         const f = document.querySelectorAll('#flamegraph g.frame').length; \
         return i.includes('off CPU') && f > 1 ? i : null; })()",
        60,
    );
    assert!(info.as_str().unwrap().contains(" over "), "{info}");
    cdp.screenshot(&output_dir().join("flamegraph-offcpu.png"));
    drop(workload);
    drop(waiter);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
