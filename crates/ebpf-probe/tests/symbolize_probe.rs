//! The whole user side on real samples: the BPF probe samples a busy fixture, the symbolizer
//! names its user and kernel frames, and the pprof builder turns them into a profile whose
//! stacks hold `main → outer → middle → hot_leaf` in order. Needs root (loads the probe) and
//! gcc: fails, never skips, without them.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failed step fails the test"
)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ebpf_probe::pprof::{decode, encode_gzip, ProfileBuilder};
use ebpf_probe::probe::{PidConfig, Probe, ProbeConfig};
use ebpf_probe::symbolize::{Symbolizer, SymbolizerConfig, SymbolizerMetrics};

const RATE: u64 = 97;

/// Two probes sampling at once would compete for the 2 CPUs of a small CI machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const SECONDS: f64 = 1.5;

/// CPU seconds used by `pid` and whether it is sleeping.
fn cpu(pid: u32) -> (f64, bool) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    (
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0,
        f[0] == "S",
    )
}

/// Runs the fixture in `mode` under the probe and returns its folded profile lines
/// (`stack count`) and total samples.
async fn profile_of(mode: &str) -> (Vec<(String, i64)>, i64) {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("busy");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/busy.c");
    let out = Command::new("gcc")
        .args(["-O1", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut probe = Probe::load(ProbeConfig {
        sample_rate: RATE,
        ..ProbeConfig::default()
    })
    .unwrap_or_else(|e| panic!("the probe needs root or CAP_BPF+CAP_PERFMON: {e}"));
    let mut child = Command::new(&bin)
        .args([&SECONDS.to_string(), mode])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    probe
        .set_pid_config(
            pid,
            PidConfig {
                profile: true,
                user: true,
                kernel: true,
            },
        )
        .unwrap();
    // Right after spawn the maps may be those of an exec in progress (stack only): wait until
    // the program blocks on stdin, as a sampled process would be running its own code.
    for _ in 0..100 {
        if cpu(pid).1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sym = Symbolizer::new(SymbolizerConfig::default(), SymbolizerMetrics::default());
    assert!(sym.preload(pid));
    assert!(
        sym.stats().elfs >= 2,
        "binary and libc loaded: {:?}",
        sym.stats()
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"g").unwrap();
    stdin.flush().unwrap();
    for _ in 0..300 {
        let (used, sleeping) = cpu(pid);
        if used >= SECONDS - 0.02 && sleeping {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let collection = tokio::task::spawn_blocking(move || probe.collect().map(|c| (c, probe)))
        .await
        .unwrap()
        .unwrap()
        .0;
    drop(stdin);
    let _ = child.wait();

    let mut builder = ProfileBuilder::new(RATE as u32, 0, collection.duration.as_nanos() as i64);
    for s in collection.samples.iter().filter(|s| s.pid == pid) {
        builder.add_stack(&sym.symbolize(pid, &s.user, &s.kernel), s.count);
    }
    let profile = decode(&encode_gzip(&builder.build())).unwrap();
    let period = profile.period;
    let mut lines = Vec::new();
    let mut total = 0;
    for s in &profile.sample {
        let n = s.value[0] / period;
        total += n;
        lines.push((profile.stack_names(s).join(";"), n));
    }
    (lines, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn probe_samples_symbolize_into_the_known_chain() {
    let (lines, total) = profile_of("user").await;
    let expected = SECONDS * RATE as f64;
    assert!(
        (total as f64) > expected * 0.6 && (total as f64) < expected * 1.4,
        "{total} samples, expected ~{expected}"
    );
    let chain: i64 = lines
        .iter()
        .filter(|(s, _)| s.contains("main;outer;middle;hot_leaf"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        chain * 10 >= total * 9,
        "only {chain}/{total} samples in main;outer;middle;hot_leaf:\n{lines:#?}"
    );
    // user frames below main (libc start code) are named too
    assert!(
        lines
            .iter()
            .any(|(s, _)| s.contains("__libc_start") || s.starts_with("_start")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn syscall_workload_has_named_kernel_frames() {
    let (lines, total) = profile_of("sys").await;
    assert!(total > 0);
    // kernel frames are leaf-most, after the user chain main;in_syscalls;read/write
    let in_kernel: i64 = lines
        .iter()
        .filter(|(s, _)| {
            s.contains("in_syscalls;")
                && s.split(';').skip_while(|f| *f != "in_syscalls").count() > 2
        })
        .map(|(_, n)| n)
        .sum();
    assert!(
        in_kernel * 2 >= total,
        "{in_kernel}/{total} samples with kernel frames:\n{lines:#?}"
    );
    let named_syscall = lines
        .iter()
        .any(|(s, _)| s.contains("do_syscall_64") || s.contains("entry_SYSCALL_64"));
    assert!(named_syscall, "no syscall entry frame named:\n{lines:#?}");
    assert!(
        !lines.iter().any(|(s, _)| s.contains("[unknown]")),
        "unnamed frames:\n{lines:#?}"
    );
}
