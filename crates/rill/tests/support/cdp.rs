//! A small Chrome DevTools protocol client for the browser tests: headless `/usr/bin/chromium`
//! with `--remote-debugging-pipe` (NUL-separated JSON on file descriptors 3 and 4, given as two
//! FIFOs), one page target attached in flat mode; evaluate, wait for a condition, mouse input,
//! screenshots.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step panics the test, as in the test itself"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    child: Child,
    tx: std::fs::File,
    rx: BufReader<std::fs::File>,
    next: u64,
    session: Option<String>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts chromium (profile and FIFOs in `dir`) and opens `url` in a 1400×1000 page.
    pub fn open(dir: &Path, url: &str) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: apt-get install chromium"
        );
        let (to, from) = (dir.join("cdp-to"), dir.join("cdp-from"));
        for f in [&to, &from] {
            let _ = std::fs::remove_file(f);
            assert!(Command::new("mkfifo").arg(f).status().unwrap().success());
        }
        let script = format!(
            "exec {CHROMIUM} --headless --no-sandbox --disable-gpu --no-first-run \
             --disable-background-networking --disable-component-update --disable-sync \
             --disable-dev-shm-usage --hide-scrollbars --window-size=1400,1000 \
             --user-data-dir={} --remote-debugging-pipe about:blank 3<{} 4>{}",
            dir.join("chromium-profile").display(),
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
        let mut b = Browser {
            child,
            tx,
            rx,
            next: 0,
            session: None,
        };
        let t = b.call("Target.createTarget", json!({ "url": url }));
        let s = b.call(
            "Target.attachToTarget",
            json!({"targetId": t["targetId"], "flatten": true}),
        );
        b.session = Some(s["sessionId"].as_str().unwrap().to_string());
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    pub fn call(&mut self, method: &str, params: Value) -> Value {
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
            assert!(
                self.rx.read_until(0, &mut buf).unwrap() > 0,
                "chromium closed the pipe"
            );
            buf.pop();
            let v: Value = serde_json::from_slice(&buf).unwrap();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (promises awaited) and returns its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is neither null nor false; fails with the page's text after `secs`.
    pub fn wait_for(&mut self, what: &str, expr: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.eval(expr);
            if !v.is_null() && v != json!(false) {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.eval("document.body ? document.body.innerText.slice(0, 3000) : ''");
                panic!("timed out waiting for {what}; page:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn mouse(&mut self, kind: &str, x: f64, y: f64) {
        let mut p = json!({"type": kind, "x": x, "y": y, "button": "left"});
        if kind == "mouseMoved" {
            p["buttons"] = json!(0);
        } else {
            p["clickCount"] = json!(1);
        }
        self.call("Input.dispatchMouseEvent", p);
    }

    /// Presses at `(x0, y)`, moves in steps to `(x1, y)` with the button held, releases.
    pub fn drag(&mut self, x0: f64, x1: f64, y: f64) {
        self.mouse("mouseMoved", x0, y);
        self.mouse("mousePressed", x0, y);
        for k in 1..=5 {
            let x = x0 + (x1 - x0) * f64::from(k) / 5.0;
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": "mouseMoved", "x": x, "y": y, "button": "left", "buttons": 1}),
            );
        }
        self.mouse("mouseReleased", x1, y);
    }

    pub fn click(&mut self, x: f64, y: f64) {
        self.mouse("mouseMoved", x, y);
        self.mouse("mousePressed", x, y);
        self.mouse("mouseReleased", x, y);
    }

    /// A PNG screenshot of the viewport into `path` (at least 10 kB, so not blank).
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(
            png.len() > 10_000,
            "{} is only {} bytes",
            path.display(),
            png.len()
        );
        std::fs::write(path, &png).unwrap();
    }
}
