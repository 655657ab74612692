//! The Profiles page in headless Chromium, with no eBPF and no root: profiles of known shape are
//! written into a `pyroscope.store` database (the store's own writer), `rill run` serves it, and
//! the DevTools protocol drives the page: a drag on the timeline narrows the flame graph to the
//! profiles under it (its total is theirs), the top table and search follow, a click zooms; the
//! diff view colours the frame that grew red and the one that shrank green; the pprof download
//! is read by `go tool pprof -top` with the selection's total; the URL restores the view.
//! Screenshots go to docs/img/. A second test renders a 100,000-node tree and prints the times.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use components::pyroscope::appendable::RawProfile;
use components::pyroscope::store::db::Writer;
use components::pyroscope::store::synth::cpu_profile;
use serde_json::{json, Value};

#[path = "support/cdp.rs"]
mod cdp;
#[path = "support/common_rel.rs"]
mod common_rel;
use cdp::Browser;
use common_rel::{copy_executable, free_addr, get, rill_cmd, tmpdir, wait_until, Rill};

const BIN: &str = env!("CARGO_BIN_EXE_rill");
const PERIOD: u64 = 10_000_000; // 100 Hz, in ns
const MINUTE: i64 = 60_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn img_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Samples per interval: before the middle, (steady 10, grows 10, shrinks 20); after it,
/// (steady 10, grows 30, shrinks 5). `app` is the process-name root frame.
fn shape(second_half: bool) -> [(&'static [&'static str], u64); 3] {
    let (g, s) = if second_half { (30, 5) } else { (10, 20) };
    [
        (&["app", "main", "steady"], 10),
        (&["app", "main", "grows"], g),
        (&["app", "main", "shrinks"], s),
    ]
}

/// 30 one-minute intervals of `app` from `t0` (times at the middle of each minute), and one of
/// `db`, written into the store at `dir`.
fn populate(dir: &Path, t0: i64) {
    let mut w = Writer::open(dir).unwrap();
    let labels = |service: &str| {
        BTreeMap::from([
            ("service_name".to_string(), service.to_string()),
            ("__name__".to_string(), "process_cpu".to_string()),
        ])
    };
    let mut batch = Vec::new();
    for i in 0..30i64 {
        let time = t0 + i * MINUTE + 30_000;
        let raw = cpu_profile(&shape(i >= 15), 100, time * 1_000_000);
        batch.push((
            labels("app"),
            vec![RawProfile {
                raw,
                id: String::new(),
            }],
        ));
    }
    let raw = cpu_profile(&[(&["db", "scan"], 7)], 100, (t0 + 60_000) * 1_000_000);
    batch.push((
        labels("db"),
        vec![RawProfile {
            raw,
            id: String::new(),
        }],
    ));
    w.write(&batch, SystemTime::now()).unwrap();
}

fn start(dir: &Path, store: &Path) -> (Rill, std::net::SocketAddr) {
    let cfg = dir.join("config.river");
    std::fs::write(
        &cfg,
        format!(
            "pyroscope.store \"local\" {{\n  path = {:?}\n}}\n",
            store.display()
        ),
    )
    .unwrap();
    let addr = free_addr();
    let rill = Rill::spawn(rill_cmd(Path::new(BIN), &cfg, addr));
    wait_until("ready", 30, || {
        get(addr, "/-/ready").is_some_and(|(s, _, _)| s == 200)
    });
    (rill, addr)
}

/// Waits until the page has finished a load newer than `after` and returns its number.
fn wait_ready(b: &mut Browser, after: u64) -> u64 {
    let v = b.wait_for(
        "the page to load",
        &format!(
            "(() => {{ const p = document.getElementById('profiles-page'); \
             if (!p) return null; if (p.dataset.state === 'error') \
             return 'error: ' + document.getElementById('pf-status').textContent; \
             const s = Number(p.dataset.seq || 0); \
             return p.dataset.state === 'ready' && s > {after} ? s : null; }})()"
        ),
        30,
    );
    assert!(v.is_u64(), "{v}");
    v.as_u64().unwrap()
}

/// Page x of time `t` on the timeline, and the timeline's vertical middle.
fn timeline_x(b: &mut Browser, t: i64) -> (f64, f64) {
    let v = b.eval(&format!(
        "(() => {{ const c = document.querySelector('#pf-timeline canvas'); \
         const r = c.getBoundingClientRect(), d = c.dataset; \
         const span = Number(d.steps) * Number(d.stepMs); \
         return [r.left + ({t} - Number(d.startMs)) / span * r.width, r.top + r.height / 2]; }})()"
    ));
    (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
}

fn flame(b: &mut Browser) -> Value {
    b.eval(
        "(() => { const c = document.querySelector('#pf-flame canvas'); \
         return {d: Object.assign({}, c.dataset), frames: window.rillProfiles.fg.frames(), \
         box: c.getBoundingClientRect().toJSON()}; })()",
    )
}

fn frame<'a>(f: &'a Value, name: &str) -> &'a Value {
    f["frames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no frame {name}: {f}"))
}

fn rgb(c: &Value) -> (i64, i64, i64) {
    let s = c.as_str().unwrap();
    let v: Vec<i64> = s
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    (v[0], v[1], v[2])
}

/// pprof's durations ("6750ms", "6.75s", "1.20mins") in milliseconds.
fn millis(text: &str) -> f64 {
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let n: f64 = text[..at].parse().unwrap();
    n * match &text[at..] {
        "ms" => 1.0,
        "s" => 1000.0,
        "mins" => 60_000.0,
        "us" | "µs" => 0.001,
        u => panic!("unit {u} in {text}"),
    }
}

/// `go tool pprof -top` of a download: (the "of X total" text, the first function).
fn pprof_top(addr: std::net::SocketAddr, href: &str, file: &Path) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!("GET {href} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut buf).unwrap();
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..at]);
    assert!(head.starts_with("HTTP/1.1 200"), "{href}: {head}");
    std::fs::write(file, &buf[at + 4..]).unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(file)
        .output()
        .expect("go is required (go tool pprof)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total = text
        .lines()
        .find_map(|l| {
            l.split(" of ")
                .nth(1)
                .and_then(|r| r.strip_suffix(" total"))
        })
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    let mut lines = text.lines().skip_while(|l| !l.contains("flat%"));
    lines.next();
    let first = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .last()
        .unwrap_or_default();
    (total, first.to_string())
}

#[test]
fn profiles_page_selects_ranges_diffs_and_downloads() {
    let dir = tmpdir("profiles-ui");
    let store = dir.join("store");
    // The last interval ends two minutes ago; the middle is at t0 + 15 min.
    let t0 = now_ms() - 32 * MINUTE;
    populate(&store, t0);
    let (rill, addr) = start(&dir, &store);
    let mut b = Browser::open(&dir, &format!("http://{addr}/#/profiles"));
    let seq = wait_ready(&mut b, 0);

    // The whole last hour: 15 × 40 + 15 × 45 samples of app (the default service: the first).
    let all = flame(&mut b);
    assert_eq!(all["d"]["mode"], "single");
    assert_eq!(
        all["d"]["total"],
        json!(((15 * 40 + 15 * 45) * PERIOD).to_string()),
        "{all}"
    );
    let legend = "getComputedStyle(document.getElementById('pf-legend')).display";
    assert_eq!(
        b.eval(legend),
        json!("none"),
        "no diff legend outside the diff view"
    );
    let services = b.eval("[...document.querySelectorAll('#pf-service option')].map(o => o.value)");
    assert_eq!(services, json!(["", "app", "db"]));
    assert_eq!(
        b.eval("document.getElementById('pf-selector').value"),
        json!("{service_name=\"app\"}")
    );

    // Drag over the second half of the intervals: the flame graph holds only those.
    let (x0, y) = timeline_x(&mut b, t0 + 15 * MINUTE + 1_000);
    let (x1, _) = timeline_x(&mut b, t0 + 29 * MINUTE + 45_000);
    b.drag(x0, x1, y);
    let seq = wait_ready(&mut b, seq);
    let sel = flame(&mut b);
    assert_eq!(
        sel["d"]["total"],
        json!((15 * 45 * PERIOD).to_string()),
        "{sel}"
    );
    assert_eq!(frame(&sel, "grows")["v"], json!(15 * 30 * PERIOD));
    let hash = b.eval("location.hash");
    assert!(hash.as_str().unwrap().contains("sel="), "{hash}");
    // The top table: grows first by self; sorted by name on a click of its header.
    let first = "document.querySelector('#pf-top tbody tr').dataset.name";
    assert_eq!(b.eval(first), json!("grows"));
    b.eval("document.querySelector('#pf-top th[data-key=name]').click()");
    assert_eq!(b.eval(first), json!("app"));
    // Search: matches highlighted, their value shown.
    b.eval(
        "(() => { const i = document.getElementById('pf-search'); i.value = 'grow'; \
         i.dispatchEvent(new Event('input')); })()",
    );
    let searched = flame(&mut b);
    assert_eq!(
        searched["d"]["matched"],
        json!((15 * 30 * PERIOD).to_string())
    );
    assert_eq!(frame(&searched, "grows")["match"], json!(true));
    assert_eq!(frame(&searched, "steady")["match"], json!(false));
    let matched = b.eval("document.getElementById('pf-matched').textContent");
    assert!(
        matched
            .as_str()
            .unwrap()
            .starts_with("Matched: 4.50 s (66.67%)"),
        "{matched}"
    );
    b.screenshot(&img_dir().join("profiles.png"));

    // The download is the selection: go tool pprof reads its total.
    let href = b.eval("document.getElementById('pf-download').getAttribute('href')");
    let (total, top) = pprof_top(addr, href.as_str().unwrap(), &dir.join("sel.pb.gz"));
    assert_eq!(millis(&total), 6750.0, "{total}");
    assert_eq!(top, "grows");

    // Click-to-zoom on shrinks: it then spans the graph.
    let f = frame(&searched, "shrinks").clone();
    let bx = &searched["box"];
    b.click(
        bx["x"].as_f64().unwrap() + f["x"].as_f64().unwrap() + 3.0,
        bx["y"].as_f64().unwrap() + f["y"].as_f64().unwrap() + 9.0,
    );
    let zoomed = flame(&mut b);
    assert_eq!(zoomed["d"]["zoom"], "app;main;shrinks", "{zoomed}");
    assert!(frame(&zoomed, "shrinks")["w"].as_f64().unwrap() > 1000.0);

    // The zoom (by frame names) is kept across reloads of the data; Reset zoom drops it.
    b.eval("document.getElementById('pf-reset').click()");
    assert_eq!(flame(&mut b)["d"]["zoom"], "");

    // Diff: baseline = first half, comparison = second half, each dragged on the timeline.
    b.eval("document.getElementById('pf-mode-diff').click()");
    let seq = wait_ready(&mut b, seq);
    let (a0, y) = timeline_x(&mut b, t0 + 1_000);
    let (a1, _) = timeline_x(&mut b, t0 + 14 * MINUTE + 45_000);
    b.drag(a0, a1, y);
    let seq = wait_ready(&mut b, seq);
    b.drag(x0, x1, y); // the comparison brush is next after the baseline
    wait_ready(&mut b, seq);
    let diff = flame(&mut b);
    assert_eq!(diff["d"]["mode"], "diff");
    assert_eq!(
        diff["d"]["leftTotal"],
        json!((15 * 40 * PERIOD).to_string()),
        "{diff}"
    );
    assert_eq!(
        diff["d"]["rightTotal"],
        json!((15 * 45 * PERIOD).to_string())
    );
    let (grows, shrinks, steady) = (
        frame(&diff, "grows"),
        frame(&diff, "shrinks"),
        frame(&diff, "steady"),
    );
    // grows: 25% → 66.7% of its side; shrinks: 50% → 11.1%; steady: 25% → 22.2%.
    assert!((grows["rel"].as_f64().unwrap() - (30.0 / 45.0 - 0.25) / 0.25).abs() < 1e-9);
    assert!((shrinks["rel"].as_f64().unwrap() - (5.0 / 45.0 - 0.5) / 0.5).abs() < 1e-9);
    let (gr, gg, _) = rgb(&grows["colour"]);
    let (sr, sg, _) = rgb(&shrinks["colour"]);
    let (tr, tg, tb) = rgb(&steady["colour"]);
    assert!(gr > 200 && gg < 100, "grew is red: {grows}");
    assert!(sg > sr + 60, "shrank is green: {shrinks}");
    assert!(
        (tr - tg).abs() < 15 && (tg - tb).abs() < 15,
        "nearly unchanged is grey: {steady}"
    );
    assert_eq!(b.eval(legend), json!("flex"));
    // The diff table: largest change of share first (grows +41.7 pp, shrinks -38.9 pp).
    let rows =
        b.eval("[...document.querySelectorAll('#pf-top tbody tr')].map(r => r.dataset.name)");
    assert_eq!(rows, json!(["grows", "shrinks", "steady"]));
    b.screenshot(&img_dir().join("profiles-diff.png"));
    let base_href = b.eval("document.getElementById('pf-download-base').getAttribute('href')");
    let (total, top) = pprof_top(addr, base_href.as_str().unwrap(), &dir.join("base.pb.gz"));
    assert_eq!(
        (millis(&total), top.as_str()),
        (6000.0, "shrinks"),
        "{total}"
    );

    // The URL is the view: reloading it shows the same diff.
    b.eval("window.beforeReload = true; location.reload()");
    b.wait_for(
        "the reload",
        "!window.beforeReload && document.readyState === 'complete'",
        20,
    );
    wait_ready(&mut b, 0);
    let again = flame(&mut b);
    assert_eq!(again["d"]["mode"], "diff");
    assert_eq!(again["d"]["leftTotal"], diff["d"]["leftTotal"]);
    assert_eq!(again["d"]["rightTotal"], diff["d"]["rightTotal"]);

    // A custom range from a link: the first half only, shown as "Custom…" with its from/until.
    let seq = b.eval("Number(document.getElementById('profiles-page').dataset.seq)");
    b.eval(&format!(
        "location.hash = '#/profiles?from={}&until={}'",
        t0,
        t0 + 15 * MINUTE
    ));
    wait_ready(&mut b, seq.as_u64().unwrap());
    let custom = flame(&mut b);
    assert_eq!(custom["d"]["mode"], "single");
    assert_eq!(
        custom["d"]["total"],
        json!((15 * 40 * PERIOD).to_string()),
        "{custom}"
    );
    assert_eq!(
        b.eval("document.getElementById('pf-range').value"),
        json!("custom")
    );
    assert_eq!(
        b.eval("document.getElementById('pf-custom').hidden"),
        json!(false)
    );
    drop(b);
    drop(rill);
}

#[test]
fn flame_graph_renders_100k_nodes() {
    let dir = tmpdir("profiles-100k");
    let store = dir.join("store");
    let (rill, addr) = start(&dir, &store);
    let mut b = Browser::open(&dir, &format!("http://{addr}/#/profiles"));
    b.wait_for("flame.js", "!!window.RillFlame", 20);
    // A deterministic tree of 100,000 nodes: branching 2 to 9, skewed values, depth up to ~40.
    let r = b.eval(
        r#"(() => {
  let seed = 42;
  const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
  let count = 1;
  const root = { n: "total", v: 0, s: 0, c: [] };
  const queue = [[root, 0]];
  while (queue.length && count < 100000) {
    const [node, depth] = queue.shift();
    const k = depth > 40 ? 0 : 2 + Math.floor(rnd() * 8);
    for (let i = 0; i < k && count < 100000; i++, count++) {
      const c = { n: "module_" + (count % 997) + "::function_" + count, v: 0, s: 0, c: [] };
      node.c.push(c); queue.push([c, depth + 1]);
    }
  }
  const fill = (n) => {
    if (!n.c.length) { n.s = Math.floor(1 + 1000 * Math.pow(rnd(), 4)); n.v = n.s; return n.v; }
    n.s = Math.floor(10 * rnd()); n.v = n.s;
    for (const c of n.c) n.v += fill(c);
    n.c.sort((a, b) => b.v - a.v);
    return n.v;
  };
  fill(root);
  const div = document.createElement("div");
  div.style.width = "1400px"; div.style.position = "relative";
  document.body.appendChild(div);
  const fg = window.RillFlame.create(div, {});
  const t0 = performance.now();
  fg.setData(root, {});
  const first = performance.now() - t0;
  const drawn = fg.stats.drawn, skipped = fg.stats.skipped;
  const times = [];
  for (let i = 0; i < 5; i++) { const t = performance.now(); fg.draw(); times.push(performance.now() - t); }
  const t1 = performance.now(); fg.setSearch("module_7::"); const search = performance.now() - t1;
  const t2 = performance.now(); fg.setZoom([fg.flat.nodes[1].n]); const zoom = performance.now() - t2;
  return { nodes: fg.stats.nodes, flattenMs: fg.stats.flattenMs, firstMs: first,
           redrawMs: times.sort((a, b) => a - b)[2], searchMs: search, zoomMs: zoom,
           drawn, skipped, drawnZoomed: fg.stats.drawn, matched: fg.matched, total: root.v };
})()"#,
    );
    println!("100k-node flame graph in headless chromium: {r}");
    assert_eq!(r["nodes"], json!(100_000));
    let ms = |k: &str| r[k].as_f64().unwrap();
    // Only the visible frames are drawn: far fewer than the tree holds.
    assert!(r["drawn"].as_u64().unwrap() < 20_000, "{r}");
    assert!(r["skipped"].as_u64().unwrap() > 90_000, "{r}");
    assert!(r["matched"].as_u64().unwrap() > 0 && r["matched"].as_u64() < r["total"].as_u64());
    // Generous bounds (a shared 2-core machine): a first render in well under a second.
    assert!(ms("firstMs") < 1000.0, "{r}");
    assert!(ms("redrawMs") < 250.0, "{r}");
    assert!(ms("searchMs") < 1000.0, "{r}");
    drop(b);
    drop(rill);
}

/// Parses a profile tree, which nests one level per frame: the host's deepest stacks (rill
/// unwinds to 256 user frames and more) go past serde_json's default recursion limit of 128.
fn deep_json(text: &str) -> Value {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let v = serde::Deserialize::deserialize(&mut de).unwrap();
    de.end().unwrap();
    v
}

/// The README's first command: `examples/river/local.river` as it is (only the address and the
/// storage path are given on the command line) is healthy within seconds with no server, the
/// store fills with the host's profiles split by program (a busy process's name is a root
/// frame), and the Profiles page shows them (screenshot docs/img/profiles-host.png).
#[test]
#[ignore = "needs root, eBPF and Chromium"]
fn local_example_fills_the_profiles_page() {
    let dir = tmpdir("profiles-local");
    // A busy program with a name of its own: a copy of `yes`.
    let busy = dir.join("rillbusyloop");
    copy_executable(Path::new("/usr/bin/yes"), &busy);
    // Killed on drop, so a failed assertion does not leave it spinning (and holding the test
    // harness's stderr open).
    struct Spin(std::process::Child);
    impl Drop for Spin {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let spin = Spin(
        Command::new(&busy)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/river/local.river");
    let text = std::fs::read_to_string(&example).unwrap();
    assert!(
        !text.contains("pyroscope.write"),
        "local.river needs no server"
    );
    assert!(text.contains("comm             = \"stackframe\""));
    std::fs::copy(&example, dir.join("local.river")).unwrap();
    let addr = free_addr();
    let rill = Rill::spawn(rill_cmd(Path::new(BIN), &dir.join("local.river"), addr));
    let healthy = |id: &str| {
        get(addr, &format!("/api/v0/web/components/{id}")).is_some_and(|(s, _, b)| {
            s == 200 && serde_json::from_str::<Value>(&b).unwrap()["health"]["state"] == "healthy"
        })
    };
    wait_until("both components healthy", 15, || {
        healthy("pyroscope.store.local") && healthy("pyroscope.ebpf.local")
    });
    let tree = |addr| {
        let (s, _, b) = get(
            addr,
            // local.river records off-CPU profiles too: the CPU type is named.
            "/api/v0/component/pyroscope.store.local/v1/profile?selector=%7Bservice_name%3D%22host%22%7D&profile_type=process_cpu:cpu:nanoseconds:cpu:nanoseconds&from=now-10m&max_nodes=2000",
        )?;
        (s == 200).then(|| deep_json(&b))
    };
    let mut programs = Vec::new();
    wait_until("the busy program in the store", 180, || {
        programs = tree(addr).map_or(Vec::new(), |v| {
            v["tree"]["c"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["n"].as_str().unwrap().to_string())
                .collect()
        });
        programs.iter().any(|p| p == "rillbusyloop")
    });
    assert!(programs.len() >= 2, "{programs:?}");
    let mut b = Browser::open(
        &dir,
        &format!(
            "http://{addr}/#/profiles?type=process_cpu:cpu:nanoseconds:cpu:nanoseconds&from=now-15m"
        ),
    );
    wait_ready(&mut b, 0);
    let f = flame(&mut b);
    assert!(f["frames"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == "rillbusyloop" && x["depth"] == 1));
    b.screenshot(&img_dir().join("profiles-host.png"));
    drop(spin);
    drop(b);
    drop(rill);
}
