//! Helpers of `unwind_stacks.rs`: build the workloads of
//! `crates/ebpf-probe/tests/fixtures/unwind` without frame pointers, run them, record them with
//! `rill profile` (pprof, decoded with `ebpf_probe::pprof`) and with the oracle `perf record
//! --call-graph dwarf` (`perf script` parsed), and judge the stacks: share reaching the bottom,
//! the known chain in order, callers outside each function's allowed set, inclusive shares.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed step is a failed test, with its message"
)]
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Frames that end a complete user stack (process or thread start).
pub const BOTTOM: &[&str] = &[
    "_start",
    "main",
    "__libc_start_call_main",
    "__libc_start_main",
    "__libc_start_main_impl",
    "clone",
    "clone3",
    "start_thread",
];

/// One user frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Normalized function name (see [`normalize`]), `file+0xoff` or `[unknown]`.
    pub name: String,
    /// True when the frame lies in the workload's own executable.
    pub own: bool,
}

impl Frame {
    /// `[unknown]`, `[truncated: ...]` and the like: no function, the walk ended or failed.
    fn is_marker(&self) -> bool {
        self.name.starts_with('[')
    }
}

/// A user stack, root first, and how many samples had it.
#[derive(Debug, Clone)]
pub struct Stack {
    pub frames: Vec<Frame>,
    pub count: u64,
}

/// `f(int)` → `f`, `f.cold`/`f.part.0` → `f`, `f@@GLIBC_2.34` → `f`,
/// `a::b::h0123456789abcdef` → `a::b`.
pub fn normalize(name: &str) -> String {
    let mut n = name.trim();
    if let Some(i) = n.find('(').filter(|&i| i > 0) {
        n = &n[..i];
    }
    if let Some(i) = n.find('@').filter(|&i| i > 0) {
        n = &n[..i];
    }
    if let Some(i) = n.find('.').filter(|&i| i > 0 && !n.contains('+')) {
        n = &n[..i];
    }
    if let Some((head, hash)) = n.rsplit_once("::h") {
        if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) {
            n = head;
        }
    }
    n.to_string()
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rill-unwind-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn output_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-output/unwind");
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn require(tool: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {tool} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success()),
        "{tool} is required"
    );
}

pub fn require_root() {
    let out = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "the unwinding tests need root (eBPF, perf)"
    );
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ebpf-probe/tests/fixtures/unwind")
        .join(name)
}

/// Builds fixture `src` into `dir/out`: C with `cc`, C++ with `c++` (both `-O2
/// -fomit-frame-pointer`), Rust with `rustc -C opt-level=2 -C force-frame-pointers=no`.
pub fn build(dir: &Path, src: &str, out: &str, extra: &[&str]) -> PathBuf {
    let bin = dir.join(out);
    let mut cmd = if src.ends_with(".rs") {
        require("rustc");
        let mut c = Command::new("rustc");
        c.args([
            "-C",
            "opt-level=2",
            "-C",
            "force-frame-pointers=no",
            "--edition",
            "2021",
        ]);
        c
    } else {
        let cc = if src.ends_with(".cpp") { "c++" } else { "cc" };
        require(cc);
        let mut c = Command::new(cc);
        c.args(["-O2", "-fomit-frame-pointer"]);
        c
    };
    let st = cmd
        .args(extra)
        .arg("-o")
        .arg(&bin)
        .arg(fixture(src))
        .status()
        .unwrap();
    assert!(st.success(), "building {src} failed");
    bin
}

/// A running workload, killed on drop.
pub struct Workload {
    pub child: Child,
    pub pid: u32,
    /// Basename of the executable as `/proc/PID/maps` names it.
    pub exe: String,
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exe_of(pid: u32) -> String {
    let p = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Starts `cmd` and waits for its `ready PID` line (the workloads of the fixtures and the
/// python busy loop print one).
pub fn start_ready(mut cmd: Command) -> Workload {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ready line: {line:?}"));
    assert_eq!(pid, child.id());
    // let the dynamic loader and the first calls settle
    std::thread::sleep(Duration::from_millis(300));
    Workload {
        child,
        pid,
        exe: exe_of(pid),
    }
}

/// Starts a process that prints nothing (xz): its pid is the child's.
pub fn start_plain(mut cmd: Command) -> Workload {
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(300));
    Workload {
        child,
        pid,
        exe: exe_of(pid),
    }
}

/// `perf record --call-graph dwarf -F 499 -p PID` for `secs` seconds, started now; finish it
/// with [`perf_stacks`].
pub fn perf_start(pid: u32, secs: u64, data: &Path) -> Child {
    require("perf");
    Command::new("perf")
        .args(["record", "--call-graph", "dwarf", "-F", "499", "-q", "-o"])
        .arg(data)
        .args(["-p", &pid.to_string(), "--", "sleep", &secs.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for perf, then parses `perf script` (no inlined frames) into user stacks.
pub fn perf_stacks(perf: Child, data: &Path, exe: &str) -> Vec<Stack> {
    let out = perf.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "perf record failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("perf")
        .args(["script", "--no-inline", "-F", "tid,ip,sym,dso", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "perf script failed");
    parse_perf_script(&String::from_utf8_lossy(&out.stdout), exe)
}

/// `perf script -F tid,ip,sym,dso`: a header line, then tab-indented `ip sym (dso)` lines
/// leaf first, then a blank line.
pub fn parse_perf_script(text: &str, exe: &str) -> Vec<Stack> {
    let mut stacks = Vec::new();
    let mut leaf_first: Vec<Frame> = Vec::new();
    let mut in_sample = false;
    let flush = |frames: &mut Vec<Frame>, stacks: &mut Vec<Stack>| {
        frames.reverse();
        stacks.push(Stack {
            frames: std::mem::take(frames),
            count: 1,
        });
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            if in_sample {
                flush(&mut leaf_first, &mut stacks);
            }
            in_sample = false;
            continue;
        }
        // Frames start with a tab; the header (the tid, padded with spaces) does not.
        if !line.starts_with('\t') {
            if in_sample {
                flush(&mut leaf_first, &mut stacks);
            }
            in_sample = true;
            continue;
        }
        let rest = line.trim();
        let (ip, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let (sym, dso) = match rest.rfind(" (") {
            Some(i) => (&rest[..i], rest[i + 2..].trim_end_matches(')')),
            None => (rest, ""),
        };
        let kernel = dso.contains("kernel.kallsyms")
            || u64::from_str_radix(ip, 16).is_ok_and(|a| a >= 0xffff_8000_0000_0000);
        if kernel {
            continue;
        }
        let base = dso.rsplit('/').next().unwrap_or(dso);
        let name = if sym == "[unknown]" && !dso.starts_with('[') && !dso.is_empty() {
            format!("{base}+0x{ip}")
        } else {
            normalize(sym)
        };
        leaf_first.push(Frame {
            name,
            own: base == exe,
        });
    }
    if in_sample {
        flush(&mut leaf_first, &mut stacks);
    }
    stacks
}

/// `rill profile --duration SECSs --pid PID --sample-rate 499 --python false` to a pprof file,
/// decoded into user stacks (kernel frames dropped). Native frames only: perf, the oracle here,
/// shows the interpreter's eval loop where rill would show Python functions (those are checked
/// by ebpf-probe's tests/python_probe.rs).
pub fn rill_stacks(pid: u32, secs: u64, out: &Path, exe: &str) -> (Vec<Stack>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(["profile", "--duration", &format!("{secs}s"), "--pid"])
        .arg(pid.to_string())
        .args(["--python", "false"])
        .args(["--sample-rate", "499", "--output"])
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "rill profile failed: {stderr}");
    let data = std::fs::read(out).unwrap();
    let p = ebpf_probe::pprof::decode(&data).unwrap();
    let period = p.period.max(1);
    let mut stacks = Vec::new();
    for s in &p.sample {
        let mut frames = Vec::new();
        for &id in s.location_id.iter().rev() {
            let loc = &p.location[id as usize - 1];
            let mapping = loc
                .mapping_id
                .checked_sub(1)
                .map(|i| &p.mapping[i as usize]);
            if mapping.is_none() && loc.address >= 0xffff_8000_0000_0000 {
                continue; // kernel frame
            }
            let file = mapping.map(|m| p.string_table[m.filename as usize].clone());
            let base = file
                .as_deref()
                .map(|f| f.rsplit('/').next().unwrap_or(f).to_string());
            let name = match (loc.line.first(), mapping, &base) {
                (Some(l), _, _) => {
                    let f = &p.function[l.function_id as usize - 1];
                    normalize(&p.string_table[f.name as usize])
                }
                (None, Some(m), Some(b)) => {
                    let off = loc.address.wrapping_sub(m.memory_start) + m.file_offset;
                    format!("{b}+0x{off:x}")
                }
                _ => "[unknown]".to_string(),
            };
            frames.push(Frame {
                name,
                own: base.as_deref() == Some(exe),
            });
        }
        let count = s.value.first().copied().unwrap_or(0) / period;
        if count > 0 {
            stacks.push(Stack {
                frames,
                count: count as u64,
            });
        }
    }
    (stacks, stderr)
}

/// The callers a function may have. `callers` holds names (`prefix*` matches a prefix) and
/// `[lib]` (a frame outside the executable); when the caller is a library frame, the first
/// frame of the executable under that run of library frames must be in `through` (`<root>`:
/// the run may end the stack, as for a thread start).
pub struct Rule {
    pub callee: &'static str,
    pub callers: &'static [&'static str],
    pub through: &'static [&'static str],
}

/// What is known of a workload.
pub struct Spec {
    pub name: &'static str,
    /// Functions from the bottom to the leaf, that every sample holding the last one must hold
    /// in this order (other frames may sit between them).
    pub chains: Vec<Vec<&'static str>>,
    /// Each chain's last function must be in at least this share of the samples.
    pub min_leaf_share: f64,
    pub rules: Vec<Rule>,
    /// (function, n): a sample holding the chain's leaf holds exactly n frames of function.
    pub exact_depth: Option<(&'static str, usize)>,
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The judgement of one source's stacks.
#[derive(Debug, Default)]
pub struct Verdict {
    pub samples: u64,
    pub bottom: u64,
    pub wrong: u64,
    pub wrong_examples: Vec<String>,
    /// Per chain: samples holding its leaf, of which holding the whole chain in order.
    pub chain: Vec<(u64, u64)>,
    pub depth_ok: u64,
    pub depth_of: u64,
    pub max_frames: usize,
}

fn pct(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

impl Verdict {
    pub fn bottom_pct(&self) -> f64 {
        pct(self.bottom, self.samples)
    }
    pub fn wrong_pct(&self) -> f64 {
        pct(self.wrong, self.samples)
    }
    pub fn line(&self, source: &str, spec: &Spec) -> String {
        let chains: Vec<String> = self
            .chain
            .iter()
            .map(|&(of, ok)| format!("{:.1}% of {of}", pct(ok, of)))
            .collect();
        let mut s = format!(
            "UNWIND {} {source}: samples={} reach_bottom={:.1}% wrong_caller={:.1}% chain_in_order=[{}] max_frames={}",
            spec.name,
            self.samples,
            self.bottom_pct(),
            self.wrong_pct(),
            chains.join(", "),
            self.max_frames
        );
        if spec.exact_depth.is_some() {
            s.push_str(&format!(
                " exact_depth={:.1}% of {}",
                pct(self.depth_ok, self.depth_of),
                self.depth_of
            ));
        }
        s
    }
}

fn reaches_bottom(frames: &[Frame]) -> bool {
    frames
        .iter()
        .take(3)
        .any(|f| BOTTOM.contains(&f.name.as_str()))
}

/// The first wrong caller of a stack, as `callee <- caller`.
fn wrong_caller(frames: &[Frame], rules: &[Rule]) -> Option<String> {
    for (i, f) in frames.iter().enumerate().skip(1) {
        let Some(rule) = rules.iter().find(|r| r.callee == f.name) else {
            continue;
        };
        let caller = &frames[i - 1];
        if caller.is_marker() {
            continue; // an incomplete stack: counted by reach_bottom
        }
        if caller.own {
            if !rule.callers.iter().any(|p| matches(p, &caller.name)) {
                return Some(format!("{} <- {}", f.name, caller.name));
            }
            continue;
        }
        if !rule.callers.contains(&"[lib]") {
            return Some(format!("{} <- {} (library)", f.name, caller.name));
        }
        let below = frames[..i].iter().rev().find(|g| g.own || g.is_marker());
        match below {
            Some(g) if g.is_marker() => {}
            Some(g) => {
                if !rule.through.iter().any(|p| matches(p, &g.name)) {
                    return Some(format!(
                        "{} <- {} <- ... <- {}",
                        f.name, caller.name, g.name
                    ));
                }
            }
            None => {
                if !rule.through.contains(&"<root>") && reaches_bottom(frames) {
                    return Some(format!("{} <- {} (stack ends)", f.name, caller.name));
                }
            }
        }
    }
    None
}

fn in_order(frames: &[Frame], chain: &[&str]) -> bool {
    let mut want = chain.iter().peekable();
    for f in frames {
        if want.peek().is_some_and(|w| **w == f.name) {
            want.next();
        }
    }
    want.peek().is_none()
}

/// Judges `stacks` against `spec`.
pub fn judge(stacks: &[Stack], spec: &Spec) -> Verdict {
    let mut v = Verdict {
        chain: vec![(0, 0); spec.chains.len()],
        ..Verdict::default()
    };
    for s in stacks {
        v.samples += s.count;
        v.max_frames = v.max_frames.max(s.frames.len());
        if reaches_bottom(&s.frames) {
            v.bottom += s.count;
        }
        if let Some(w) = wrong_caller(&s.frames, &spec.rules) {
            v.wrong += s.count;
            if v.wrong_examples.len() < 5 && !v.wrong_examples.contains(&w) {
                v.wrong_examples.push(w);
            }
        }
        for (i, chain) in spec.chains.iter().enumerate() {
            let Some(leaf) = chain.last() else { continue };
            if s.frames.iter().any(|f| f.name == *leaf) {
                v.chain[i].0 += s.count;
                if in_order(&s.frames, chain) {
                    v.chain[i].1 += s.count;
                }
                if let (Some((func, n)), 0) = (spec.exact_depth, i) {
                    v.depth_of += s.count;
                    if s.frames.iter().filter(|f| f.name == func).count() == n {
                        v.depth_ok += s.count;
                    }
                }
            }
        }
    }
    v
}

/// Inclusive share (%) of each function: samples whose stack holds it at least once.
pub fn inclusive(stacks: &[Stack], names: &[&str]) -> HashMap<String, f64> {
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    names
        .iter()
        .map(|n| {
            let hit: u64 = stacks
                .iter()
                .filter(|s| s.frames.iter().any(|f| f.name == *n))
                .map(|s| s.count)
                .sum();
            (n.to_string(), pct(hit, total))
        })
        .collect()
}

/// The failures of `v` against the targets (empty when it passes).
pub fn failures(v: &Verdict, spec: &Spec) -> Vec<String> {
    let mut f = Vec::new();
    if v.samples < 100 {
        f.push(format!("only {} samples", v.samples));
    }
    if v.bottom_pct() < 99.0 {
        f.push(format!("{:.1}% reach the bottom (< 99%)", v.bottom_pct()));
    }
    if v.wrong > 0 {
        f.push(format!(
            "{} samples ({:.1}%) with a wrong caller, e.g. {:?}",
            v.wrong,
            v.wrong_pct(),
            v.wrong_examples
        ));
    }
    for (chain, &(of, ok)) in spec.chains.iter().zip(&v.chain) {
        let leaf_share = pct(of, v.samples);
        if leaf_share < spec.min_leaf_share {
            f.push(format!(
                "{:?} in {leaf_share:.1}% of samples (< {})",
                chain.last(),
                spec.min_leaf_share
            ));
        }
        if pct(ok, of) < 99.0 {
            f.push(format!(
                "chain {chain:?} in order in {:.1}% of the samples holding its leaf (< 99%)",
                pct(ok, of)
            ));
        }
    }
    if let Some((func, n)) = spec.exact_depth {
        if pct(v.depth_ok, v.depth_of) < 99.0 {
            f.push(format!(
                "exactly {n} frames of {func} in {:.1}% (< 99%)",
                pct(v.depth_ok, v.depth_of)
            ));
        }
    }
    f
}

/// Writes stacks as folded lines (for a look with flamegraph tools).
pub fn save_folded(stacks: &[Stack], path: &Path) {
    let mut merged: HashMap<String, u64> = HashMap::new();
    for s in stacks {
        let key: Vec<&str> = s.frames.iter().map(|f| f.name.as_str()).collect();
        *merged.entry(key.join(";")).or_default() += s.count;
    }
    let mut lines: Vec<_> = merged.into_iter().collect();
    lines.sort();
    let text: String = lines.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    std::fs::write(path, text).unwrap();
}
