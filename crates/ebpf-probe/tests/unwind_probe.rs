//! The in-kernel table walk on real programs built `-O2 -fomit-frame-pointer` (root needed,
//! like tests/probe.rs). Tables come from a small test-only provider that reads
//! `readelf --debug-dump=frames-interp` (independent of the crate's own CFI reader): rsp/rbp
//! CFA rules, the saved rbp, an undefined return address as the end of the stack. The checks:
//! samples reach `main` in call order through glibc's `qsort` calling back into the program,
//! and a 300-deep recursion is walked whole (deeper than a STACK_TRACE map's 127 frames).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failed setup step fails the test"
)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ebpf_probe::probe::unwind_maps::{load_bias, read_load_segments};
use ebpf_probe::probe::{FileTables, PidConfig, Probe, ProbeConfig, StackSample, WalkEnd};
use ebpf_probe::symbolize::procmaps::parse_maps;
use ebpf_probe::unwind::abi::{
    UnwindRow, UNW_CFA_RBP, UNW_CFA_RSP, UNW_END, UNW_NO_INFO, UNW_RBP_UNDEFINED, UNW_UNSUPPORTED,
};

const RATE: u64 = 997;
const CPU_SECONDS: f64 = 1.5;

const PROGRAM_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile unsigned long sink;

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static int compare(const void *a, const void *b) {
    unsigned long acc = 0;
    for (int i = 0; i < 300; i++) acc += (unsigned long)i * i ^ acc >> 3;
    sink += acc;
    return *(const int *)a - *(const int *)b;
}

__attribute__((noinline)) void sort_work(void) {
    static int values[2048];
    for (int i = 0; i < 2048; i++) values[i] = (i * 7919) % 2048;
    qsort(values, 2048, sizeof(int), compare);
}

__attribute__((noinline, noclone)) int recurse(int depth) {
    volatile char pad[16];
    pad[0] = (char)depth;
    if (depth == 0) {
        for (unsigned long i = 0; i < 200000; i++) sink += i;
        return 0;
    }
    int r = recurse(depth - 1);
    return r + pad[0];
}

__attribute__((noinline)) void spin(void) {
    for (unsigned long i = 0; i < 200000; i++) sink += i;
}

/* usage: prog MODE (qsort|deep|shallow) SECONDS: waits for a line on stdin, burns SECONDS of
   CPU, then waits for EOF. */
int main(int argc, char **argv) {
    int deep = strcmp(argv[1], "deep") == 0, shallow = strcmp(argv[1], "shallow") == 0;
    double end;
    char c;
    if (read(0, &c, 1) != 1) return 1;
    end = cpu_seconds() + atof(argv[2]);
    while (cpu_seconds() < end) {
        if (deep) sink += recurse(300); else if (shallow) spin(); else sort_work();
    }
    while (read(0, &c, 1) > 0) {}
    return 0;
}
"#;

fn parse_cfa(text: &str) -> Option<(u8, i16)> {
    let (kind, offset) = if let Some(off) = text.strip_prefix("rsp+") {
        (UNW_CFA_RSP, off)
    } else if let Some(off) = text.strip_prefix("rbp+") {
        (UNW_CFA_RBP, off)
    } else {
        return None;
    };
    Some((kind, offset.parse().ok()?))
}

fn rbp_offset(text: Option<&&str>) -> i8 {
    match text {
        None | Some(&"u") => 0,
        Some(t) => t
            .strip_prefix("c-")
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| n % 8 == 0)
            .map_or(UNW_RBP_UNDEFINED, |n| (-n / 8) as i8),
    }
}

/// One interpreted CFI row: (kind, rbp_offset, cfa_offset).
fn parse_row(columns: &[String], words: &[&str]) -> (u8, i8, i16) {
    let get = |name: &str| columns.iter().position(|c| c == name).map(|i| &words[i]);
    if get("ra") == Some(&"u") {
        return (UNW_END, 0, 0);
    }
    match parse_cfa(words[1]) {
        Some((kind, cfa)) => (kind, rbp_offset(get("rbp")), cfa),
        None => (UNW_UNSUPPORTED, 0, 0),
    }
}

/// Rows of one file from readelf's interpreted CFI (an FDE without rows keeps its CIE's
/// initial rule).
fn readelf_rows(path: &Path) -> Result<Vec<UnwindRow>, String> {
    let out = Command::new("readelf")
        .arg("--debug-dump=frames-interp")
        .arg(path)
        .output()
        .map_err(|e| format!("readelf: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows: BTreeMap<u32, UnwindRow> = BTreeMap::new();
    let mut cie_rule: HashMap<String, (u8, i8, i16)> = HashMap::new();
    let mut ends: Vec<u32> = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    // The CIE whose initial rule is being read, or None inside an FDE.
    let mut in_cie: Option<String> = None;
    let mut in_fde = false;
    let row = |pc: u32, (kind, rbp, cfa): (u8, i8, i16)| UnwindRow {
        pc,
        kind,
        rbp_offset: rbp,
        cfa_offset: cfa,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            (in_cie, in_fde) = (None, false);
        } else if words.get(3) == Some(&"CIE") {
            (in_cie, in_fde) = (Some(words[0].to_string()), false);
            columns.clear();
        } else if words.get(3) == Some(&"FDE") {
            let Some(range) = words.iter().find_map(|w| w.strip_prefix("pc=")) else {
                continue;
            };
            let cie = words
                .iter()
                .find_map(|w| w.strip_prefix("cie="))
                .unwrap_or("");
            let (lo, hi) = range.split_once("..").ok_or("bad FDE range")?;
            let lo = u32::from_str_radix(lo, 16).map_err(|e| e.to_string())?;
            let hi = u32::from_str_radix(hi, 16).map_err(|e| e.to_string())?;
            let initial = cie_rule.get(cie).copied().unwrap_or((UNW_CFA_RSP, 0, 8));
            rows.insert(lo, row(lo, initial));
            ends.push(hi);
            (in_cie, in_fde) = (None, true);
            columns.clear();
        } else if words[0] == "LOC" {
            columns = words.iter().map(|w| w.to_string()).collect();
        } else if !columns.is_empty() && words.len() == columns.len() {
            let Ok(pc) = u64::from_str_radix(words[0], 16) else {
                continue;
            };
            let rule = parse_row(&columns, &words);
            if let Some(cie) = &in_cie {
                cie_rule.entry(cie.clone()).or_insert(rule);
            } else if in_fde {
                let pc = u32::try_from(pc).map_err(|e| e.to_string())?;
                rows.insert(pc, row(pc, rule));
            }
        }
    }
    for end in ends {
        rows.entry(end).or_insert(row(end, (UNW_NO_INFO, 0, 0)));
    }
    Ok(rows.into_values().collect())
}

/// Symbol name → (start, end) as file virtual addresses.
fn symbols(binary: &Path) -> HashMap<String, (u64, u64)> {
    let out = Command::new("nm")
        .arg("-S")
        .arg(binary)
        .output()
        .expect("nm");
    let mut map = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() == 4 {
            let start = u64::from_str_radix(parts[0], 16).unwrap();
            let size = u64::from_str_radix(parts[1], 16).unwrap();
            map.insert(parts[3].to_string(), (start, start + size));
        }
    }
    map
}

/// Runs the program in `mode` under the probe and returns its samples and the binary's
/// symbol lookup (`ip → name` for the program's own functions).
/// `readelf`: tables from the test's readelf provider, else the probe's default (the crate's
/// gimli-based CFI tables).
/// The program's samples, a symbol lookup for its addresses, and the walked stacks found under
/// a stored stack's hash but different from it (`ustack_collisions`).
async fn profile(
    mode: &str,
    readelf: bool,
) -> (Vec<StackSample>, impl Fn(u64) -> Option<String>, u64) {
    let (samples, lookup, collisions, _) = profile_in(mode, readelf, false).await;
    (samples, lookup, collisions)
}

/// `profile`, with the program started in an empty environment and without address
/// randomization when `clear_env` (the main thread's stack then ends a few hundred bytes above
/// `main`), also returning how many stack windows were cut at a page's end.
async fn profile_in(
    mode: &str,
    readelf: bool,
    clear_env: bool,
) -> (Vec<StackSample>, impl Fn(u64) -> Option<String>, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("prog.c");
    std::fs::write(&source, PROGRAM_C).unwrap();
    let binary = dir.path().join("prog");
    let out = Command::new("gcc")
        .args([
            "-O2",
            "-fomit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-o",
        ])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("gcc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut probe = Probe::load(ProbeConfig {
        sample_rate: RATE,
        ..ProbeConfig::default()
    })
    .expect("loading the probe (root needed)");
    assert!(probe.unwinding(), "this kernel runs profile_cpu_unwind");
    if readelf {
        probe.set_table_provider(Box::new(FileTables::new(|path: &Path| {
            readelf_rows(path).map(Some)
        })));
    }

    // Without address randomization the kernel leaves no random gap between the strings at
    // the top of the stack and the initial stack pointer.
    let mut cmd = if clear_env {
        let mut c = Command::new("setarch");
        c.args(["x86_64", "--addr-no-randomize"])
            .arg(&binary)
            .env_clear();
        c
    } else {
        Command::new(&binary)
    };
    let mut child = cmd
        .args([mode, &CPU_SECONDS.to_string()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    // The dynamic loader has mapped libc once the program waits on stdin.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config = PidConfig {
        profile: true,
        user: true,
        kernel: false,
    };
    probe.set_pid_config(pid, config).unwrap();
    probe.collect().unwrap();
    stdin.write_all(b"g").unwrap();
    stdin.flush().unwrap();
    let mut samples = Vec::new();
    let mut collisions = 0;
    let mut short_windows = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let collection = probe.collect().unwrap();
        collisions += collection.unwind.ustack_collisions;
        short_windows += collection.unwind.stack_window_short;
        eprintln!(
            "{mode}: unwind {:?} maps {:?} lost {:?}",
            collection.unwind, collection.unwind_maps, collection.lost
        );
        samples.extend(collection.samples.into_iter().filter(|s| s.pid == pid));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        let cpu = (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0;
        if cpu >= CPU_SECONDS - 0.02 && fields[0] == "S" {
            break;
        }
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    drop(stdin);
    child.wait().unwrap();

    let text = parse_maps(&maps)
        .into_iter()
        .find(|e| e.is_exec() && Path::new(&e.path) == binary)
        .expect("the program's text mapping");
    let bias = load_bias(&text, &read_load_segments(&binary).unwrap()).unwrap();
    let syms = symbols(&binary);
    let lookup = move |ip: u64| {
        let vaddr = ip.checked_sub(bias)?;
        syms.iter()
            .find(|(_, &(lo, hi))| lo <= vaddr && vaddr < hi)
            .map(|(name, _)| name.clone())
    };
    (samples, lookup, collisions, short_windows)
}

fn names(sample: &StackSample, lookup: &impl Fn(u64) -> Option<String>) -> Vec<String> {
    sample
        .user
        .iter()
        .map(|&ip| lookup(ip).unwrap_or_else(|| "?".into()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn qsort_callbacks_reach_main_without_frame_pointers() {
    check_qsort(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn qsort_callbacks_reach_main_with_the_crate_tables() {
    check_qsort(false).await;
}

async fn check_qsort(readelf: bool) {
    let (samples, lookup, _) = profile("qsort", readelf).await;
    let total: u64 = samples.iter().map(|s| s.count).sum();
    assert!(
        total as f64 >= CPU_SECONDS * RATE as f64 * 0.5,
        "{total} samples"
    );
    let mut complete = 0;
    for s in &samples {
        let n = names(s, &lookup);
        assert!(s.user_end.is_some(), "table-walked: {n:?}");
        let main = n.iter().position(|f| f == "main");
        if s.user_end == Some(WalkEnd::Complete) && main.is_some() {
            complete += s.count;
        }
        // Call order: compare is called by qsort (glibc, "?"), called by sort_work, by main.
        if let (Some(cmp), Some(sort), Some(main)) = (
            n.iter().position(|f| f == "compare"),
            n.iter().position(|f| f == "sort_work"),
            main,
        ) {
            assert!(cmp < sort && sort < main, "order: {n:?}");
            assert!(
                n[cmp + 1..sort].iter().all(|f| f == "?"),
                "qsort frames: {n:?}"
            );
        }
    }
    eprintln!("{complete} of {total} samples complete through main");
    for s in samples.iter().take(5) {
        eprintln!("{:?} {:x?} {:?}", s.user_end, s.user, names(s, &lookup));
    }
    assert!(
        complete * 100 >= total * 95,
        "{complete} of {total} reach main, complete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn deep_recursion_is_walked_whole() {
    let (samples, lookup, collisions) = profile("deep", false).await;
    let total: u64 = samples.iter().map(|s| s.count).sum();
    let mut whole = 0;
    for s in &samples {
        let n = names(s, &lookup);
        let depth = n.iter().filter(|f| f.starts_with("recurse")).count();
        if depth == 301 && n.contains(&"main".to_string()) && s.user_end == Some(WalkEnd::Complete)
        {
            whole += s.count;
        }
    }
    eprintln!(
        "{whole} of {total} samples hold all 301 recurse frames and main ({} stacks, {collisions} collisions)",
        samples.len()
    );
    for s in samples.iter().take(3) {
        let n = names(s, &lookup);
        eprintln!(
            "{:?} {} frames: {:?}",
            s.user_end,
            n.len(),
            &n[n.len().saturating_sub(6)..]
        );
    }
    assert!(whole * 100 >= total * 95, "{whole} of {total}");
    // The same 306-frame stack again and again: each time found equal to the stored one,
    // frame by frame (same_stack); a false difference would count as a collision.
    assert_eq!(collisions, 0, "walked stacks taken for hash collisions");
    assert!(
        samples.len() * 10 < total as usize,
        "{} distinct stacks for {total} samples: equal stacks were not merged",
        samples.len()
    );
}

/// The walk copies the user stack a window (1 KiB) at a time. With no environment and no
/// randomization the main thread's stack ends within the window that holds `main`: that copy
/// must stop at the end of the page and the walk still reach the bottom.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn a_stack_ending_inside_the_window_is_walked_to_the_bottom() {
    let (samples, lookup, collisions, short_windows) = profile_in("shallow", false, true).await;
    let total: u64 = samples.iter().map(|s| s.count).sum();
    // spin, main, then glibc's start and _start (no symbols of the program: "?").
    let whole: u64 = samples
        .iter()
        .filter(|s| {
            let n = names(s, &lookup);
            s.user_end == Some(WalkEnd::Complete)
                && n.len() >= 3
                && n[n.len() - 1] == "_start"
                && n.iter().position(|f| f == "main").is_some_and(|m| {
                    n[..m].iter().all(|f| f == "spin" || f == "?") && n[0] != "main"
                })
        })
        .map(|s| s.count)
        .sum();
    for s in samples.iter().take(3) {
        eprintln!("{:?} {:?}", s.user_end, names(s, &lookup));
    }
    eprintln!("{whole} of {total} whole, {short_windows} windows cut at a page end");
    assert!(
        total as f64 >= CPU_SECONDS * RATE as f64 * 0.5,
        "{total} samples"
    );
    assert!(whole * 100 >= total * 95, "{whole} of {total}");
    assert_eq!(collisions, 0);
    assert!(
        short_windows * 2 >= total,
        "{short_windows} windows cut at a page end for {total} samples: the case was not met"
    );
}

/// One measuring phase: `python3 -c 'while True: pass'` under a fresh probe for `seconds`;
/// returns (run time ns, runs, counted samples of the python process, walk ends).
async fn phase(
    unwind: bool,
    profile_python: bool,
    python: u32,
    seconds: u64,
) -> (u64, u64, u64, ebpf_probe::probe::UnwindCounters) {
    let mut probe = Probe::load(ProbeConfig {
        sample_rate: RATE,
        unwind,
        ..ProbeConfig::default()
    })
    .expect("loading the probe (root needed)");
    // With `unwind`, the probe's default tables (crate::unwind).
    let config = PidConfig {
        profile: profile_python,
        user: true,
        kernel: true,
    };
    probe.set_pid_config(python, config).unwrap();
    probe.collect().unwrap();
    let (_, t0, n0) = probe.program_stats().unwrap();
    let mut counted = 0;
    let mut ends = ebpf_probe::probe::UnwindCounters::default();
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c = probe.collect().unwrap();
        counted += c
            .samples
            .iter()
            .filter(|s| s.pid == python)
            .map(|s| s.count)
            .sum::<u64>();
        for (i, n) in c.unwind.ends.iter().enumerate() {
            ends.ends[i] += n;
        }
        ends.frame_pointer_used += c.unwind.frame_pointer_used;
    }
    let (name, t1, n1) = probe.program_stats().unwrap();
    let (rt, runs) = ((t1 - t0).as_nanos() as u64, n1 - n0);
    eprintln!("{name} profile_python={profile_python}: {rt} ns / {runs} runs, {counted} python samples, ends {:?}", ends.ends);
    (rt, runs, counted, ends)
}

/// In-kernel cost per sample of the frame-pointer program and of the table walk on Debian's
/// `python3` busy loop (`bpf_stats`; other processes' samples are subtracted at the cost
/// measured with python ignored). Run by hand: `cargo test --test unwind_probe -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check (about 40 s)"]
async fn cost_per_sample_on_python() {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let mut python = Command::new("python3")
        .args(["-c", "while True: pass"])
        .spawn()
        .expect("python3");
    let pid = python.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut report = Vec::new();
    for unwind in [false, true] {
        let (rt0, n0, _, _) = phase(unwind, false, pid, 8).await;
        let (rt1, n1, counted, ends) = phase(unwind, true, pid, 8).await;
        let other = rt0 as f64 / n0.max(1) as f64;
        let per_python = (rt1 as f64 - (n1 - counted) as f64 * other) / counted.max(1) as f64;
        report.push((
            unwind,
            other,
            rt1 as f64 / n1.max(1) as f64,
            per_python,
            counted,
            ends,
        ));
    }
    python.kill().unwrap();
    python.wait().unwrap();
    for (unwind, other, mean, per_python, counted, ends) in &report {
        eprintln!(
            "{}: other samples {other:.0} ns, all samples {mean:.0} ns, python samples {per_python:.0} ns ({counted} samples), walk ends {:?}",
            if *unwind { "profile_cpu_unwind (tables)" } else { "profile_cpu (frame pointers)" },
            ends.ends
        );
    }
    let (_, _, _, _, counted, ends) = report[1];
    assert!(
        ends.ended(WalkEnd::Complete) * 100 >= counted * 95,
        "{:?}",
        ends.ends
    );
}
