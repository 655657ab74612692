//! Python frames recorded by the in-kernel walk, against real interpreters: Debian's
//! /usr/bin/python3 (3.11, interpreter in the executable) and pyenv's 3.6–3.13 (shared
//! libpython). `tests/python/workload.py` runs four threads with known chains; the probe samples
//! it and the symbolizer names the frames. For each interpreter: at least 95% of its samples show
//! one of the chains exactly (qualified names in order, files, and the marked line of every frame
//! of the script), with the native walk complete below; every thread appears; the key function
//! called back from `sorted` has native frames (the C `sorted`) between it and its caller.
//!
//! Needs root, eBPF and the interpreters (a missing one FAILS):
//! `cargo test -p ebpf-probe --test python_probe -- --include-ignored --nocapture`.
#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/python_workload.rs"]
mod workload;

use ebpf_probe::probe::python_bpf::{user_words, UserWord};
use ebpf_probe::probe::{PidConfig, Probe, ProbeConfig, WalkEnd};
use ebpf_probe::python::PySymbolizer;
use ebpf_probe::symbolize::{Frame, Symbolizer, SymbolizerConfig, SymbolizerMetrics};
use std::path::{Path, PathBuf};
use std::time::Duration;
use workload::*;

const RATE: u64 = 499;

/// What the samples of one interpreter gave.
#[derive(Debug, Default)]
struct Outcome {
    samples: u64,
    /// Samples whose Python frames are exactly one thread's chain, walk complete.
    exact: u64,
    /// Samples per thread chain (main, walker, key, generator).
    per_thread: [u64; 4],
    /// Samples of the key thread with a native frame between `key_of` and `sorter`.
    key_interleaved: u64,
    /// A few stacks that matched no chain.
    misses: Vec<String>,
    /// User-space naming of the interval's Python frames alone (`PySymbolizer`): distinct code
    /// objects, time of a first pass (detection and every code object read), of a second
    /// (cached), and the Python frames named per pass.
    code_objects: usize,
    first_pass: Duration,
    second_pass: Duration,
    python_frames: usize,
}

fn python_frames(frames: &[Frame]) -> Vec<&Frame> {
    frames
        .iter()
        .filter(|f| {
            f.source.is_some() || f.name.as_deref().is_some_and(|n| n.starts_with("[python"))
        })
        .collect()
}

fn same_chain(py: &[&Frame], want: &Want) -> bool {
    py.len() == want.len()
        && py.iter().zip(want).all(|(f, (name, file, line))| {
            let Some(src) = &f.source else { return false };
            f.name.as_deref() == Some(name.as_str())
                && src.file.ends_with(file)
                && line.is_none_or(|l| src.line == i64::from(l))
        })
}

fn describe(frames: &[Frame]) -> String {
    frames
        .iter()
        .map(|f| match &f.source {
            Some(s) => format!("{}@{}", f.display_name(), s.line),
            None => f.display_name(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

async fn profile(python: &Path, minor: u32) -> Outcome {
    let w = Workload::start(python);
    let pid = w.pid();
    // Let every thread reach its loop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut probe = Probe::load(ProbeConfig {
        sample_rate: RATE,
        ..ProbeConfig::default()
    })
    .expect("loading the probe (root needed)");
    assert!(probe.unwinding(), "this kernel runs profile_cpu_unwind");
    let config = PidConfig {
        profile: true,
        user: true,
        kernel: true,
    };
    probe.set_pid_config(pid, config).unwrap();
    probe.collect().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let collection = probe.collect().unwrap();
    let mut symbolizer = Symbolizer::new(SymbolizerConfig::default(), SymbolizerMetrics::default());
    let chains = expected(minor);
    let mut out = Outcome::default();
    let mine: Vec<_> = collection.samples.iter().filter(|s| s.pid == pid).collect();
    let words: Vec<(u64, u32)> = mine
        .iter()
        .flat_map(|s| user_words(&s.user))
        .filter_map(|w| match w {
            UserWord::Python { code, instr } => Some((code, instr)),
            _ => None,
        })
        .collect();
    let mut py = PySymbolizer::new(Path::new("/proc"), ebpf_probe::python::DEFAULT_CACHE);
    let mut pass = || {
        let t = std::time::Instant::now();
        for &(code, instr) in &words {
            py.symbolize_recorded(pid, code, instr).unwrap();
        }
        t.elapsed()
    };
    out.first_pass = pass();
    out.second_pass = pass();
    out.python_frames = words.len();
    out.code_objects = words
        .iter()
        .map(|w| w.0)
        .collect::<std::collections::HashSet<_>>()
        .len();
    for s in mine {
        let frames = symbolizer.symbolize_sample(s);
        // User frames only (kernel frames come first).
        let user = &frames[s.kernel.len()..];
        let py = python_frames(user);
        out.samples += s.count;
        let hit = chains.iter().position(|(_, want)| same_chain(&py, want));
        match hit {
            Some(i) if s.user_end == Some(WalkEnd::Complete) => {
                out.exact += s.count;
                out.per_thread[i] += s.count;
                if chains[i].0 == "key" {
                    let at = |n: &str| user.iter().position(|f| f.name.as_deref() == Some(n));
                    if let (Some(k), Some(c)) = (at("key_of"), at("sorter")) {
                        if user[k + 1..c].iter().any(|f| f.source.is_none()) {
                            out.key_interleaved += s.count;
                        }
                    }
                }
            }
            _ => {
                if out.misses.len() < 4 {
                    out.misses
                        .push(format!("{:?} x{}: {}", s.user_end, s.count, describe(user)));
                }
            }
        }
    }
    drop(w);
    out
}

fn check(label: &str, out: &Outcome) -> Result<(), String> {
    let share = out.exact as f64 / out.samples.max(1) as f64;
    eprintln!(
        "{label}: {} samples, {:.1}% exact chains (main, walker, key, generator: {:?}), key under sorted's C frames {}, misses {:#?}",
        out.samples,
        share * 100.0,
        out.per_thread,
        out.key_interleaved,
        out.misses
    );
    eprintln!(
        "{label}: naming the interval's {} Python frames ({} code objects): {:?} the first time (detection, every code object read), {:?} cached",
        out.python_frames, out.code_objects, out.first_pass, out.second_pass
    );
    if out.samples < 100 {
        return Err(format!("{label}: only {} samples", out.samples));
    }
    if share < 0.95 {
        return Err(format!("{label}: {:.1}% exact chains", share * 100.0));
    }
    if out.per_thread.contains(&0) {
        return Err(format!(
            "{label}: a thread is missing: {:?}",
            out.per_thread
        ));
    }
    if out.key_interleaved * 10 < out.per_thread[2] * 9 {
        return Err(format!(
            "{label}: key_of under native sorted in {} of {}",
            out.key_interleaved, out.per_thread[2]
        ));
    }
    Ok(())
}

async fn run(python: PathBuf, minor: u32, label: &str) {
    let out = profile(&python, minor).await;
    if let Err(e) = check(label, &out) {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, eBPF and /usr/bin/python3"]
async fn kernel_python_frames_debian_python3() {
    let python = PathBuf::from("/usr/bin/python3");
    let minor = debian_minor(&python);
    run(python, minor, "Debian python3").await;
}

macro_rules! pyenv_tests {
    ($($name:ident, $minor:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs root, eBPF and the pyenv interpreters"]
        async fn $name() {
            run(pyenv_python($minor), $minor, concat!("pyenv 3.", $minor)).await;
        }
    )*};
}

pyenv_tests! {
    kernel_python_frames_pyenv_36, 6;
    kernel_python_frames_pyenv_37, 7;
    kernel_python_frames_pyenv_38, 8;
    kernel_python_frames_pyenv_39, 9;
    kernel_python_frames_pyenv_310, 10;
    kernel_python_frames_pyenv_311, 11;
    kernel_python_frames_pyenv_312, 12;
    kernel_python_frames_pyenv_313, 13;
}

/// A CPython busy loop 30 Python frames deep.
const DEEP: &str = "
def f(n):
    if n == 0:
        while True: pass
    f(n - 1)
f(29)
";

/// One measuring phase: the deep busy loop under a fresh probe for `seconds`, its pid
/// profiled or ignored; returns (run time ns, runs, samples of the pid, Python frames).
async fn phase(python: bool, profile_it: bool, pid: u32, seconds: u64) -> (u64, u64, u64, u64) {
    let mut probe = Probe::load(ProbeConfig {
        sample_rate: RATE,
        python,
        ..ProbeConfig::default()
    })
    .expect("loading the probe (root needed)");
    let config = PidConfig {
        profile: profile_it,
        user: true,
        kernel: true,
    };
    probe.set_pid_config(pid, config).unwrap();
    probe.collect().unwrap();
    let (_, t0, n0) = probe.program_stats().unwrap();
    let (mut counted, mut frames) = (0, 0);
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c = probe.collect().unwrap();
        counted += c
            .samples
            .iter()
            .filter(|s| s.pid == pid)
            .map(|s| s.count)
            .sum::<u64>();
        frames += c.unwind.python_frames;
    }
    let (_, t1, n1) = probe.program_stats().unwrap();
    ((t1 - t0).as_nanos() as u64, n1 - n0, counted, frames)
}

/// In-kernel cost per sample of a 30-deep Python stack, with and without Python frames, three
/// rounds each (`bpf_stats`; the cost of other processes' samples, measured with the pid
/// ignored, is subtracted). A measurement, run by hand:
/// `cargo test -p ebpf-probe --test python_probe -- --ignored --nocapture cost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check (about 70 s)"]
async fn cost_per_sample_of_a_30_deep_python_stack() {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", DEEP])
        .spawn()
        .expect("python3");
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut per = [Vec::new(), Vec::new()];
    for _round in 0..3 {
        for (i, python) in [false, true].into_iter().enumerate() {
            let (rt0, n0, _, _) = phase(python, false, pid, 4).await;
            let (rt1, n1, counted, frames) = phase(python, true, pid, 4).await;
            let other = rt0 as f64 / n0.max(1) as f64;
            let ns = (rt1 as f64 - (n1 - counted) as f64 * other) / counted.max(1) as f64;
            eprintln!(
                "python={python}: {ns:.0} ns per sample ({counted} samples, {:.1} Python frames each, other samples {other:.0} ns)",
                frames as f64 / counted.max(1) as f64
            );
            per[i].push(ns);
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (native, python) = (median(&mut per[0]), median(&mut per[1]));
    eprintln!(
        "median per sample: native frames only {native:.0} ns, with Python frames {python:.0} ns ({:.2}x)",
        python / native
    );
}
