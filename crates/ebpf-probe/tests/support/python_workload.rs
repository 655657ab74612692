//! The Python workload shared by the Python tests: `tests/python/workload.py` under Debian's
//! /usr/bin/python3 or one of pyenv's interpreters (a missing one fails the test with the
//! command that installs it), its `# MARK:` lines, and the chains each of its threads runs.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure panics the test"
)]
#![allow(dead_code, reason = "each test binary uses a part of the helpers")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const WORKLOAD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/workload.py");

/// pyenv: on PATH, else `~/.pyenv/bin/pyenv`.
pub fn pyenv() -> PathBuf {
    if Command::new("pyenv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return PathBuf::from("pyenv");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".pyenv/bin/pyenv")
}

/// The interpreter of pyenv's newest installed 3.`minor`, or a panic saying how to install it.
pub fn pyenv_python(minor: u32) -> PathBuf {
    let want = format!("3.{minor}");
    let out = Command::new(pyenv())
        .args(["prefix", &want])
        .output()
        .unwrap_or_else(|e| {
            panic!("pyenv not runnable ({e}); install pyenv and `pyenv install {want}`")
        });
    assert!(
        out.status.success(),
        "pyenv has no {want}: `pyenv install {want}` ({})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let prefix = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let python = prefix.join("bin").join(format!("python{want}"));
    assert!(python.exists(), "{} missing", python.display());
    python
}

pub fn debian_python() -> PathBuf {
    let p = PathBuf::from("/usr/bin/python3");
    assert!(
        p.exists(),
        "/usr/bin/python3 missing: apt-get install python3"
    );
    p
}

/// `# MARK:name` → line number in the workload.
pub fn mark(name: &str) -> i32 {
    let text = std::fs::read_to_string(WORKLOAD).unwrap();
    let tag = format!("# MARK:{name}");
    let idx = text
        .lines()
        .position(|l| l.trim_end().ends_with(&tag))
        .unwrap_or_else(|| panic!("no {tag} in the workload"));
    idx as i32 + 1
}

/// The workload process; killed on drop.
pub struct Workload {
    pub child: Child,
}

impl Workload {
    pub fn start(python: &Path) -> Self {
        let mut child = Command::new(python)
            .arg("-u")
            .arg(WORKLOAD)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let ready = lines
                .next()
                .and_then(Result::ok)
                .is_some_and(|l| l == "ready");
            let _ = tx.send(ready);
            for _ in lines {}
        });
        let ready = rx.recv_timeout(Duration::from_secs(30)).unwrap_or(false);
        let w = Self { child };
        assert!(ready, "{} never printed ready", python.display());
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig}");
    }

    /// SIGSTOP and wait until every thread is stopped.
    pub fn stop(&self) {
        self.signal("-STOP");
        let deadline = Instant::now() + Duration::from_secs(5);
        let task_dir = format!("/proc/{}/task", self.pid());
        loop {
            let all_stopped = std::fs::read_dir(&task_dir).unwrap().all(|t| {
                let stat =
                    std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
                stat.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('T'))
            });
            if all_stopped {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "threads of {} did not stop",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (qualname, file suffix, line) expected, innermost first.
pub type Want = Vec<(String, &'static str, Option<i32>)>;

pub fn ours(name: &str, line: &str) -> (String, &'static str, Option<i32>) {
    (
        name.to_string(),
        "/tests/python/workload.py",
        Some(mark(line)),
    )
}

/// The frames of threading.py under a thread's target.
pub fn thread_tail(minor: u32) -> Want {
    let q = |n: &str| {
        if minor >= 11 {
            format!("Thread.{n}")
        } else {
            n.to_string()
        }
    };
    ["run", "_bootstrap_inner", "_bootstrap"]
        .iter()
        .map(|n| (q(n), "/threading.py", None))
        .collect()
}

pub fn expected(minor: u32) -> Vec<(&'static str, Want)> {
    let step = if minor >= 11 { "Walker.step" } else { "step" };
    let mut main = vec![
        ours("leaf", "leaf"),
        ours("middle", "middle"),
        ours("outer", "outer"),
    ];
    main.push(ours("<module>", "main"));
    let mut walker = vec![ours(step, "step")];
    walker.extend((0..30).map(|_| ours(step, "step_call")));
    walker.push(ours("walk", "walk"));
    walker.extend(thread_tail(minor));
    let mut key = vec![ours("key_of", "key"), ours("sorter", "sorter")];
    key.extend(thread_tail(minor));
    let mut gen = vec![ours("counting", "gen"), ours("consume", "consume")];
    gen.extend(thread_tail(minor));
    vec![
        ("main", main),
        ("walker", walker),
        ("key", key),
        ("generator", gen),
    ]
}

pub fn debian_minor(python: &Path) -> u32 {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.version_info[1])"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
