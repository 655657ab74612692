//! Benchmarks of `pyroscope.store` (run by `scripts/bench-store.sh`; prints its figures).
//!
//! * `STORE_BENCH=synth` (default): 24 hours of one series, 5,760 intervals of 15 s whose
//!   profiles hold `STORE_BENCH_STACKS` (default 3,500) distinct stacks of a 10,000-stack
//!   whole-host pool (64 distinct intervals, replayed with the writer's clock moved 15 s each
//!   time). Prints the store's CPU per appended profile (the writer's `write`, decode
//!   included), the CPU that building and encoding the same profile took (`ProfileBuilder` +
//!   gzip, a lower bound of what the profiler spends on it), the database size, and the
//!   24-hour merge time (first query on a fresh reader, then the median of warm runs).
//! * `STORE_BENCH=replay STORE_BENCH_PPROF_DIR=DIR STORE_BENCH_HOURS=H`: replays the `.pb.gz`
//!   files of DIR (real profiles captured with `rill profile`) in a loop as one series for H
//!   hours of 15-second intervals and prints the database size per hour and per day.

#![allow(
    clippy::unwrap_used,
    reason = "benchmark code: a failed setup step aborts the run"
)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use components::pyroscope::appendable::RawProfile;
use components::pyroscope::store::db::Writer;
use components::pyroscope::store::query::{Reader, TimeRange};
use components::pyroscope::store::retention::Limits;
use components::pyroscope::store::synth::{Rng, StackPool};

/// CPU time of the calling thread (`/proc/thread-self/schedstat`, in nanoseconds: finer than
/// the clock ticks of `/proc/self/stat`).
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns: u64 = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn labels() -> std::collections::BTreeMap<String, String> {
    [
        ("service_name".to_string(), "host".to_string()),
        ("__name__".to_string(), "process_cpu".to_string()),
    ]
    .into()
}

fn file_size(dir: &Path) -> u64 {
    ["profiles.db", "profiles.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
        .sum()
}

const INTERVAL_MS: i64 = 15_000;
const DAY_INTERVALS: i64 = 5_760;

/// Writes `intervals` profiles cycling through `profiles` (time 0: stamped by the writer's
/// clock, moved one interval per write) starting at `t0`. Returns per-write CPU seconds.
fn fill(w: &mut Writer, profiles: &[Vec<u8>], t0: i64, intervals: i64) -> Vec<f64> {
    let mut cpu = Vec::with_capacity(intervals as usize);
    let limits = Limits {
        retention: Duration::from_secs(48 * 3600),
        max_size: 64 << 30,
    };
    for i in 0..intervals {
        let p = profiles[i as usize % profiles.len()].clone();
        let at = UNIX_EPOCH + Duration::from_millis((t0 + i * INTERVAL_MS) as u64);
        let c0 = thread_cpu();
        w.write(
            &[(
                labels(),
                vec![RawProfile {
                    raw: p,
                    id: String::new(),
                }],
            )],
            at,
        )
        .unwrap();
        cpu.push((thread_cpu() - c0).as_secs_f64());
        // The component's maintenance pass runs every 10 s of wall time: here one per
        // simulated 10 minutes is plenty (and counted in the write cost).
        if i % 40 == 39 {
            let c0 = thread_cpu();
            w.enforce(&limits, at).unwrap();
            let per = (thread_cpu() - c0).as_secs_f64();
            if let Some(last) = cpu.last_mut() {
                *last += per;
            }
        }
    }
    cpu
}

fn merge_times(dir: &Path, t0: i64, intervals: i64, runs: usize) -> (f64, f64, i64) {
    let range = TimeRange::new(t0, t0 + intervals * INTERVAL_MS).unwrap();
    let mut cold = 0.0;
    let mut warm = Vec::new();
    let mut total = 0;
    let mut r = Reader::open(dir).unwrap();
    for run in 0..=runs {
        let s = r.series().unwrap();
        let start = Instant::now();
        let tree = r.merge(&s, range).unwrap();
        let fg = tree.flamegraph(8192);
        let secs = start.elapsed().as_secs_f64();
        total = fg.total;
        if run == 0 {
            cold = secs;
        } else {
            warm.push(secs);
        }
    }
    (cold, median(&mut warm), total)
}

fn synth() {
    let stacks: usize = std::env::var("STORE_BENCH_STACKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3500);
    let intervals: i64 = std::env::var("STORE_BENCH_INTERVALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DAY_INTERVALS);
    let pool = StackPool::new(11, 10_000, 40, 4000);
    let mut rng = Rng::new(12);
    let mut encode = Vec::new();
    let profiles: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            let picks = pool.interval(&mut rng, stacks);
            let c0 = thread_cpu();
            let p = pool.pprof(&picks, 97, 0, 15_000_000_000);
            encode.push((thread_cpu() - c0).as_secs_f64());
            p
        })
        .collect();
    let distinct = {
        let p = ebpf_probe::pprof::decode(&profiles[0]).unwrap();
        p.sample.len()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - intervals * INTERVAL_MS;
    let started = Instant::now();
    let mut cpu = fill(&mut w, &profiles, t0, intervals);
    let fill_secs = started.elapsed().as_secs_f64();
    drop(w);
    let size = file_size(dir.path());
    let (cold, warm, total) = merge_times(dir.path(), t0, intervals, 5);
    let store_cpu = median(&mut cpu);
    let encode_cpu = median(&mut encode);
    println!("synthetic whole-host series: {intervals} intervals of 15 s, {distinct} distinct stacks per profile (pool of 10000, 40 programs)");
    println!(
        "  pprof size per profile (gzip):     {} bytes",
        profiles[0].len()
    );
    println!("  store CPU per appended profile:    {:.2} ms (median; decode + write + commit + maintenance)", store_cpu * 1e3);
    println!(
        "  build+encode CPU of that profile:  {:.2} ms (median; ProfileBuilder + gzip)",
        encode_cpu * 1e3
    );
    println!(
        "  store / encode CPU:                {:.1}%",
        100.0 * store_cpu / encode_cpu.max(1e-9)
    );
    println!("  filling took {fill_secs:.1} s wall");
    println!(
        "  database size:                     {:.1} MiB ({:.0} bytes per interval)",
        size as f64 / 1048576.0,
        size as f64 / intervals as f64
    );
    println!("  merge of all {intervals} intervals:  first {:.3} s (fresh reader), warm median {:.3} s (5 runs); total {total}", cold, warm);
}

fn replay() {
    let dir_in = std::env::var("STORE_BENCH_PPROF_DIR").expect("STORE_BENCH_PPROF_DIR");
    let hours: i64 = std::env::var("STORE_BENCH_HOURS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut files: Vec<_> = std::fs::read_dir(&dir_in)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".pb.gz"))
        .collect();
    files.sort();
    let mut samples = Vec::new();
    let profiles: Vec<Vec<u8>> = files
        .iter()
        .map(|f| {
            let raw = std::fs::read(f).unwrap();
            // Time 0: the writer's clock stamps them.
            let mut p = ebpf_probe::pprof::decode(&raw).unwrap();
            samples.push(p.sample.len() as f64);
            p.time_nanos = 0;
            ebpf_probe::pprof::encode_gzip(&p)
        })
        .collect();
    assert!(!profiles.is_empty(), "no .pb.gz files in {dir_in}");
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let intervals = hours * 240;
    let t0 = now - intervals * INTERVAL_MS;
    let mut cpu = fill(&mut w, &profiles, t0, intervals);
    drop(w);
    let size = file_size(dir.path());
    let per_hour = size as f64 / hours as f64;
    println!(
        "replay of {} real profiles ({} distinct stacks per profile, median) as one series, {hours} h of 15 s intervals",
        profiles.len(),
        median(&mut samples)
    );
    println!(
        "  store CPU per appended profile: {:.2} ms (median)",
        median(&mut cpu) * 1e3
    );
    println!(
        "  database size: {:.2} MiB, {:.2} MiB per hour, {:.1} MiB per day",
        size as f64 / 1048576.0,
        per_hour / 1048576.0,
        per_hour * 24.0 / 1048576.0
    );
    if hours >= 24 {
        let (cold, warm, _) = merge_times(dir.path(), t0, intervals, 5);
        println!("  24 h merge: first {cold:.3} s, warm median {warm:.3} s");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; the mode comes from the environment.
    match std::env::var("STORE_BENCH").as_deref() {
        Ok("replay") => replay(),
        _ => synth(),
    }
}
