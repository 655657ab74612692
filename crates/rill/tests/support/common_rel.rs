//! Helpers shared by the reliability tests (security, shutdown): a `rill run` child with its
//! stderr captured, a tiny HTTP/1.1 client, and a recording HTTP server that plays a
//! Pyroscope receiver (answers every request with a fixed status and keeps what it got).
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step panics the test, as in the test itself"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rill-rel-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies an executable that a test then runs. The copy is made by a `cp` child, not by
/// `std::fs::copy`: a file this process has open for writing cannot be executed (`ETXTBSY`), and
/// another test thread forking at that moment carries the open descriptor into its child until
/// that child execs, so an in-process copy fails the `spawn` that follows now and then (it did in
/// CI). A child's descriptor never reaches this process's other children.
pub fn copy_executable(from: &Path, to: &Path) {
    let st = Command::new("cp").arg(from).arg(to).status().unwrap();
    assert!(st.success(), "cp {} {}", from.display(), to.display());
}

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Sends raw bytes and returns the whole response as text (lossy).
pub fn raw(addr: SocketAddr, req: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    // A server may answer and close before the whole body is sent; ignore write errors.
    let _ = s.write_all(req);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `GET path` → (status, head, body).
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let resp = raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    Some((
        head.split(' ').nth(1)?.parse().ok()?,
        head.to_string(),
        body.to_string(),
    ))
}

pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `rill run`; stderr is collected by a thread into `logs`.
pub struct Rill {
    pub child: Child,
    pub logs: Arc<Mutex<String>>,
}

impl Rill {
    pub fn spawn(cmd: Command) -> Rill {
        let mut cmd = cmd;
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rill");
        let logs = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let l = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut g = l.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        Rill { child, logs }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits for the exit (at most `secs`), returning the exit status.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Give the stderr thread a moment to drain.
                std::thread::sleep(Duration::from_millis(200));
                return st;
            }
            if Instant::now() >= deadline {
                let logs = self.logs();
                let tail: Vec<&str> = logs.lines().filter(|l| !l.contains("target=log")).collect();
                let from = tail.len().saturating_sub(40);
                panic!(
                    "rill did not exit in {secs}s; last logs:\n{}",
                    tail[from..].join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rill {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rill run CONFIG` with listen address and storage path set.
pub fn rill_cmd(bin: &Path, config: &Path, addr: SocketAddr) -> Command {
    let mut c = Command::new(bin);
    c.arg("run")
        .arg(config)
        .arg(format!("--server.http.listen-addr={addr}"))
        .arg(format!(
            "--storage.path={}",
            config.parent().unwrap().join("data").display()
        ));
    c
}

/// One request the recording server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

/// A recording HTTP/1.1 server answering every request with `status`.
pub struct Recorder {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    pub fn start(status: u16) -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for s in l.incoming().map_while(Result::ok) {
                let g = g.clone();
                std::thread::spawn(move || serve_conn(s, status, &g));
            }
        });
        Recorder { addr, got }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

fn serve_conn(s: TcpStream, status: u16, got: &Mutex<Vec<Received>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        got.lock().unwrap().push(Received {
            method,
            path,
            headers,
            body,
            at: Instant::now(),
        });
        let reason = if status == 200 { "OK" } else { "Error" };
        let msg = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n\r\n");
        if w.write_all(msg.as_bytes()).is_err() {
            return;
        }
    }
}
