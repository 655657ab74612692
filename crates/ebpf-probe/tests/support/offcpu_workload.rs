//! The off-CPU tests' workload (`tests/fixtures/offcpu_work.c`, built with gcc at test time),
//! the chains its functions name, and a runner for libbpf-tools' `offcputime` (bcc's tool
//! rebuilt on CO-RE: the Python `offcputime-bpfcc` needs kernel headers this kernel lacks)
//! with a parser of its output.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failed step fails the test"
)]
#![allow(
    dead_code,
    reason = "each test file that includes this module uses a part of it"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// libbpf-tools' offcputime (Debian `libbpf-tools`, installed by scripts/setup.sh).
pub const OFFCPUTIME: &str = "/usr/sbin/offcputime";

/// The workload's chains: the name of a function that only that chain's stacks hold.
pub const CHAINS: [(&str, &str); 5] = [
    ("compute", "compute_outer"),
    ("sleep", "sleep_outer"),
    ("read", "read_outer"),
    ("feed", "feed_outer"),
    ("main", "mix"),
];

pub struct Built {
    _dir: tempfile::TempDir,
    pub binary: PathBuf,
}

pub fn build() -> Built {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("offcpu_work");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/offcpu_work.c");
    let out = Command::new("gcc")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("gcc must be installed to build the test workload");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Built { _dir: dir, binary }
}

/// A running workload, waiting for `go`.
pub struct Workload {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Workload {
    pub fn start(built: &Built, mode: &str, seconds: f64) -> Workload {
        let mut child = Command::new(&built.binary)
            .args([mode, &seconds.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        Workload {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The measurements it prints when the run is over (`key=value` nanoseconds).
    pub fn results(&mut self) -> HashMap<String, u64> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let out: HashMap<String, u64> = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect();
        assert!(!out.is_empty(), "workload printed {line:?}");
        out
    }

    /// Lets it exit (EOF on stdin) and waits for it.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which chain a stack (function names, any order) belongs to.
pub fn chain_of(names: &[String]) -> Option<&'static str> {
    CHAINS
        .iter()
        .find(|(_, f)| names.iter().any(|n| n == f))
        .map(|(c, _)| *c)
}

/// A running `offcputime -p PID`.
pub struct OffCpuTime {
    child: Child,
}

/// Whether a BPF program with this name is loaded (`bpftool prog show name`).
fn bpf_program_loaded(name: &str) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "name", name])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

impl OffCpuTime {
    /// Starts tracing `pid` and returns once its program is attached.
    pub fn start(pid: u32) -> OffCpuTime {
        assert!(
            Path::new(OFFCPUTIME).exists(),
            "{OFFCPUTIME} missing: apt-get install libbpf-tools (scripts/setup.sh)"
        );
        let child = Command::new(OFFCPUTIME)
            // Room for every stack (the default 1024 drops the rarer ones on a busy run).
            .args(["-p", &pid.to_string(), "--stack-storage-size=65536"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !bpf_program_loaded("sched_switch") {
            assert!(Instant::now() < deadline, "offcputime did not attach");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Attached right after it loaded.
        std::thread::sleep(Duration::from_millis(200));
        OffCpuTime { child }
    }

    /// Stops it (SIGINT: it prints what it summed) and returns nanoseconds per chain.
    pub fn stop(mut self) -> HashMap<&'static str, u64> {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut text = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        let _ = self.child.wait();
        parse_offcputime(&text)
    }
}

/// Sums offcputime's blocks (frames, a `-  comm (pid)` line, microseconds) per chain, in
/// nanoseconds; every block's time under `"all"`.
pub fn parse_offcputime(text: &str) -> HashMap<&'static str, u64> {
    let mut out = HashMap::new();
    for block in text.split("\n\n") {
        let lines: Vec<&str> = block
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let Some((last, rest)) = lines.split_last() else {
            continue;
        };
        let Ok(us) = last.parse::<u64>() else {
            continue;
        };
        *out.entry("all").or_default() += us * 1000;
        let frames: Vec<String> = rest
            .iter()
            .take_while(|l| !l.starts_with('-'))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect();
        if let Some(chain) = chain_of(&frames) {
            *out.entry(chain).or_default() += us * 1000;
        }
    }
    out
}

#[test]
fn offcputime_output_parses() {
    let text =
        "\n    bpf_prog_1_sched_switch\n    __schedule\n    nanosleep\n    sleep_outer\n    \
                worker_main\n    -                offcpu_work (12)\n        1500\n\n    x\n    \
                read_outer\n    -   offcpu_work (13)\n        20\n\n    other\n    -  a (1)\n  7\n";
    let chains = parse_offcputime(text);
    assert_eq!(chains.get("sleep"), Some(&1_500_000));
    assert_eq!(chains.get("read"), Some(&20_000));
    assert_eq!(chains.get("all"), Some(&1_527_000));
    assert_eq!(chains.len(), 3);
}
