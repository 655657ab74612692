//! Kernel-side tests of the pyroscope.ebpf probe: they load the real BPF program, so they need
//! root (or CAP_BPF+CAP_PERFMON) and FAIL without it. A small C program with a known call chain
//! (main → outer → middle → hot_leaf, frame pointers kept) is compiled with gcc by the test,
//! profiled at 97 Hz for a fixed amount of CPU time, and its stacks are checked against its
//! own symbols and /proc/PID/maps.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failed step fails the test"
)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use ebpf_probe::probe::{
    Collection, PidConfig, Probe, ProbeConfig, ProbeEvent, StackSample, PERMISSION_MESSAGE_PREFIX,
};
use tokio::sync::mpsc::UnboundedReceiver;

const RATE: u64 = 97;
/// CPU seconds the busy program burns once told to start.
const CPU_SECONDS: f64 = 2.0;

/// The probes of different tests would compete for the same CPUs; run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BUSY_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

volatile unsigned long sink;

/* The volatile local makes gcc set up a frame: at -O1 it omits the frame pointer of leaf
   functions that use no stack even with -fno-omit-frame-pointer, and a frame-pointer walk
   then skips the leaf's caller. */
__attribute__((noinline)) void hot_leaf(void) {
    volatile unsigned long acc = 0;
    for (unsigned long i = 0; i < 2000000; i++)
        acc += i * i;
    sink = acc;
}

__attribute__((noinline)) void middle(void) {
    hot_leaf();
    __asm__ volatile("" ::: "memory"); /* no tail call */
}

__attribute__((noinline)) void outer(void) {
    middle();
    __asm__ volatile("" ::: "memory");
}

/* The same chain with a leaf that gets no frame: the frame-pointer walk alone would go from
   flat_leaf straight to flat_outer. */
__attribute__((noinline)) void flat_leaf(void) {
    for (unsigned long i = 0; i < 2000000; i++)
        sink += i * i;
}

__attribute__((noinline)) void flat_middle(void) {
    flat_leaf();
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void flat_outer(void) {
    flat_middle();
    __asm__ volatile("" ::: "memory");
}

static char buffer[1 << 20];

__attribute__((noinline)) void syscalls(int zero, int null) {
    if (read(zero, buffer, sizeof(buffer)) < 0) exit(3);
    if (write(null, buffer, sizeof(buffer)) < 0) exit(4);
    getppid();
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* usage: busy SECONDS MODE WAIT; MODE is "user", "flat" or "sys"; WAIT=1 waits for a line on stdin
   before burning SECONDS of CPU, then waits for EOF on stdin before exiting. */
int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    int sys = argc > 2 && strcmp(argv[2], "sys") == 0;
    int flat = argc > 2 && strcmp(argv[2], "flat") == 0;
    int wait = argc > 3 && strcmp(argv[3], "1") == 0;
    char c;
    int zero = open("/dev/zero", O_RDONLY), null = open("/dev/null", O_WRONLY);
    if (zero < 0 || null < 0) return 2;
    if (wait && read(0, &c, 1) != 1) return 1;
    double end = cpu_seconds() + seconds;
    while (cpu_seconds() < end) {
        if (sys) syscalls(zero, null); else if (flat) flat_outer(); else outer();
    }
    if (wait) while (read(0, &c, 1) > 0) {}
    return 0;
}
"#;

struct Busy {
    _dir: tempfile::TempDir,
    binary: PathBuf,
}

fn build_busy() -> Busy {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("busy.c");
    std::fs::write(&source, BUSY_C).expect("write busy.c");
    let binary = dir.path().join("busy");
    let out = Command::new("gcc")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("gcc must be installed to build the test program");
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Busy { _dir: dir, binary }
}

fn spawn(busy: &Busy, seconds: f64, mode: &str, wait: bool) -> (Child, Option<ChildStdin>) {
    let mut child = Command::new(&busy.binary)
        .args([
            seconds.to_string().as_str(),
            mode,
            if wait { "1" } else { "0" },
        ])
        .stdin(if wait { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .expect("spawn busy program");
    let stdin = child.stdin.take();
    (child, stdin)
}

fn load_probe() -> Probe {
    match Probe::load(ProbeConfig {
        sample_rate: RATE,
        ..ProbeConfig::default()
    }) {
        Ok(probe) => probe,
        Err(e) => {
            panic!("loading the probe failed (these tests need root or CAP_BPF+CAP_PERFMON): {e}")
        }
    }
}

/// Symbol name → (start, end) as virtual addresses in the ELF file.
fn symbols(binary: &Path) -> HashMap<String, (u64, u64)> {
    let out = Command::new("nm")
        .arg("-S")
        .arg(binary)
        .output()
        .expect("nm");
    assert!(out.status.success());
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

/// The executable mapping of `binary` in `pid`: (start, end, file offset).
fn text_mapping(pid: u32, binary: &Path) -> (u64, u64, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    let path = binary.to_str().unwrap();
    for line in maps.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() >= 6 && parts[1].contains('x') && parts[5] == path {
            let (start, end) = parts[0].split_once('-').unwrap();
            return (
                u64::from_str_radix(start, 16).unwrap(),
                u64::from_str_radix(end, 16).unwrap(),
                u64::from_str_radix(parts[2], 16).unwrap(),
            );
        }
    }
    panic!("no executable mapping of {path} in /proc/{pid}/maps:\n{maps}");
}

/// The file virtual address of a runtime address in the text mapping (PIE: the executable
/// segment's p_vaddr equals its file offset for gcc's default layout).
fn file_address(ip: u64, mapping: (u64, u64, u64)) -> u64 {
    ip - mapping.0 + mapping.2
}

fn samples_of(collection: &Collection, pid: u32) -> Vec<&StackSample> {
    collection.samples.iter().filter(|s| s.pid == pid).collect()
}

async fn wait_for_event(
    events: &mut UnboundedReceiver<ProbeEvent>,
    wanted: ProbeEvent,
    timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if event == wanted => return true,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return false,
        }
    }
}

fn start(stdin: &mut ChildStdin) {
    stdin.write_all(b"g").expect("start busy program");
    stdin.flush().unwrap();
}

/// Waits until the child has burnt its CPU seconds (it then blocks on stdin).
/// The CPU time of `pid` in clock ticks (USER_HZ, 100 a second on Linux) and its state letter,
/// from /proc/PID/stat.
fn cpu_ticks_and_state(pid: u32) -> (u64, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the command.
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (ticks, fields[0].to_string())
}

async fn wait_cpu_burnt(pid: u32) {
    for _ in 0..300 {
        let (ticks, state) = cpu_ticks_and_state(pid);
        if ticks as f64 / 100.0 >= CPU_SECONDS - 0.02 && state == "S" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("busy program {pid} did not finish its CPU burn within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn user_stacks_of_a_busy_program() {
    let _serial = SERIAL.lock().await;
    let busy = build_busy();
    let syms = symbols(&busy.binary);
    let mut probe = load_probe();
    let mut events = probe.take_events().expect("event receiver");
    assert!(
        probe.take_events().is_none(),
        "the receiver is handed out once"
    );

    let (mut child, stdin) = spawn(&busy, CPU_SECONDS, "user", true);
    let mut stdin = stdin.unwrap();
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
    probe.collect().unwrap(); // start from empty maps

    start(&mut stdin);
    wait_cpu_burnt(pid).await;
    let collection = probe.collect().unwrap();
    let mine = samples_of(&collection, pid);
    let total: u64 = mine.iter().map(|s| s.count).sum();
    let expected = CPU_SECONDS * RATE as f64;
    eprintln!(
        "pid {pid}: {total} samples (expected ≈ {expected}), {} stacks, lost {:?}, counters {:?}",
        mine.len(),
        collection.lost,
        collection.counters
    );
    assert!(
        (expected * 0.7..=expected * 1.3).contains(&(total as f64)),
        "{total} samples for {CPU_SECONDS} CPU seconds at {RATE} Hz"
    );
    assert_eq!(collection.lost.samples(), 0, "{:?}", collection.lost);
    assert_eq!(collection.lost.missing_stacks, 0);
    assert!(collection.counters.counted >= total - collection.counters.collisions_recovered);

    // User stacks: leaf first, inside the program's text mapping, in call order.
    let mapping = text_mapping(pid, &busy.binary);
    let within = |ip: u64| ip >= mapping.0 && ip < mapping.1;
    let in_fn = |ip: u64, name: &str| {
        let (lo, hi) = syms[name];
        let addr = file_address(ip, mapping);
        addr >= lo && addr < hi
    };
    let in_text: u64 = mine
        .iter()
        .filter(|s| s.user.first().is_some_and(|&ip| within(ip)))
        .map(|s| s.count)
        .sum();
    assert!(
        in_text * 10 >= total * 9,
        "{in_text} of {total} samples have a leaf in the text mapping"
    );
    let chain: u64 = mine
        .iter()
        .filter(|s| {
            s.user.len() >= 4
                && in_fn(s.user[0], "hot_leaf")
                && in_fn(s.user[1], "middle")
                && in_fn(s.user[2], "outer")
                && in_fn(s.user[3], "main")
        })
        .map(|s| s.count)
        .sum();
    assert!(
        chain * 10 >= total * 8,
        "only {chain} of {total} samples have hot_leaf ← middle ← outer ← main; stacks: {:x?}",
        mine.iter().take(5).map(|s| &s.user).collect::<Vec<_>>()
    );
    // A pure user-space loop: kernel stacks, if any, are kernel addresses.
    for s in &mine {
        assert!(
            s.kernel.iter().all(|&ip| ip >= 0xffff_8000_0000_0000),
            "{:x?}",
            s.kernel
        );
    }

    // The child is now blocked on stdin: nothing new to count, and the maps were cleared.
    let second = probe.collect().unwrap();
    let again: u64 = samples_of(&second, pid).iter().map(|s| s.count).sum();
    assert!(
        again <= 2,
        "second collect still has {again} samples of {pid}"
    );
    assert!(second.samples.is_empty(), "{:?}", second.samples);

    // Exit is reported.
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        wait_for_event(
            &mut events,
            ProbeEvent::PidExit(pid),
            Duration::from_secs(3)
        )
        .await,
        "no exit event for {pid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn kernel_stacks_of_a_syscall_heavy_program() {
    let _serial = SERIAL.lock().await;
    let busy = build_busy();
    let mut probe = load_probe();
    let (mut child, stdin) = spawn(&busy, CPU_SECONDS, "sys", true);
    let mut stdin = stdin.unwrap();
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
    probe.collect().unwrap();
    start(&mut stdin);
    wait_cpu_burnt(pid).await;
    let collection = probe.collect().unwrap();
    drop(stdin);
    child.wait().unwrap();

    let mine = samples_of(&collection, pid);
    let total: u64 = mine.iter().map(|s| s.count).sum();
    let with_kernel: u64 = mine
        .iter()
        .filter(|s| !s.kernel.is_empty())
        .map(|s| s.count)
        .sum();
    eprintln!(
        "pid {pid}: {total} samples, {with_kernel} with kernel stacks, {} stacks",
        mine.len()
    );
    assert!(
        total as f64 >= CPU_SECONDS * RATE as f64 * 0.7,
        "{total} samples"
    );
    assert!(
        with_kernel * 2 >= total,
        "{with_kernel} of {total} samples have kernel stacks"
    );
    for s in &mine {
        for &ip in &s.kernel {
            assert!(
                ip >= 0xffff_8000_0000_0000,
                "kernel frame {ip:#x} is not a kernel address"
            );
        }
    }
    // Samples taken in the kernel still carry the user stack of the syscall.
    let both: u64 = mine
        .iter()
        .filter(|s| !s.kernel.is_empty() && !s.user.is_empty())
        .map(|s| s.count)
        .sum();
    assert!(
        both * 10 >= with_kernel * 9,
        "{both} of {with_kernel} kernel samples have a user stack"
    );

    // Kernel-only configuration: no user stacks.
    let (mut child, stdin) = spawn(&busy, CPU_SECONDS, "sys", true);
    let mut stdin = stdin.unwrap();
    let pid = child.id();
    probe
        .set_pid_config(
            pid,
            PidConfig {
                profile: true,
                user: false,
                kernel: true,
            },
        )
        .unwrap();
    probe.collect().unwrap();
    start(&mut stdin);
    wait_cpu_burnt(pid).await;
    let collection = probe.collect().unwrap();
    drop(stdin);
    child.wait().unwrap();
    let mine = samples_of(&collection, pid);
    assert!(!mine.is_empty());
    assert!(
        mine.iter().all(|s| s.user.is_empty()),
        "user stacks collected although disabled"
    );
    assert!(mine.iter().any(|s| !s.kernel.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn unknown_pids_are_reported_once_and_ignored_pids_cost_nothing() {
    let _serial = SERIAL.lock().await;
    let busy = build_busy();
    let mut probe = load_probe();
    let mut events = probe.take_events().unwrap();

    // Not configured: reported as unknown once, its samples are not counted.
    let (mut child, _) = spawn(&busy, 30.0, "user", false);
    let pid = child.id();
    assert!(
        wait_for_event(
            &mut events,
            ProbeEvent::UnknownPid(pid),
            Duration::from_secs(5)
        )
        .await,
        "no unknown-pid event for {pid}"
    );
    assert!(probe.pending_pids().unwrap().contains(&pid));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut repeats = 0;
    while let Ok(event) = events.try_recv() {
        if event == ProbeEvent::UnknownPid(pid) {
            repeats += 1;
        }
    }
    assert_eq!(repeats, 0, "pid {pid} reported again while pending");
    let collection = probe.collect().unwrap();
    assert!(
        samples_of(&collection, pid).is_empty(),
        "pending pid was counted"
    );
    assert!(collection.counters.pending > 0, "{:?}", collection.counters);

    // Configured as not profiled: still nothing counted, no new reports.
    probe
        .set_pid_config(
            pid,
            PidConfig {
                profile: false,
                user: true,
                kernel: true,
            },
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let collection = probe.collect().unwrap();
    assert!(samples_of(&collection, pid).is_empty());
    assert!(collection.counters.ignored > 0, "{:?}", collection.counters);

    // Removed: reported again.
    probe.remove_pid(pid).unwrap();
    assert!(
        wait_for_event(
            &mut events,
            ProbeEvent::UnknownPid(pid),
            Duration::from_secs(5)
        )
        .await,
        "no second unknown-pid event after remove_pid({pid})"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_for_event(
            &mut events,
            ProbeEvent::PidExit(pid),
            Duration::from_secs(3)
        )
        .await,
        "no exit event for pending pid {pid}"
    );
    assert!(
        !probe.pending_pids().unwrap().contains(&pid),
        "exited pid left in the pid map"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn configuring_a_dead_pid_reports_its_exit() {
    let _serial = SERIAL.lock().await;
    let mut probe = load_probe();
    let mut events = probe.take_events().unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    probe
        .set_pid_config(
            pid,
            PidConfig {
                profile: true,
                user: true,
                kernel: false,
            },
        )
        .unwrap();
    assert!(
        wait_for_event(
            &mut events,
            ProbeEvent::PidExit(pid),
            Duration::from_secs(1)
        )
        .await,
        "no exit event for dead pid {pid}"
    );
}

#[test]
fn permission_message_prefix_is_stable() {
    assert_eq!(
        PERMISSION_MESSAGE_PREFIX,
        "pyroscope.ebpf needs root or CAP_BPF+CAP_PERFMON"
    );
}

/// Runs the syscall-heavy program (many distinct kernel stacks) under a probe with the given
/// configuration and returns its collection.
async fn profile_syscalls(config: ProbeConfig) -> (u32, Collection) {
    let busy = build_busy();
    let mut probe = Probe::load(config).expect("loading the probe (needs root)");
    let (mut child, stdin) = spawn(&busy, CPU_SECONDS, "sys", true);
    let mut stdin = stdin.unwrap();
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
    probe.collect().unwrap();
    start(&mut stdin);
    wait_cpu_burnt(pid).await;
    let collection = probe.collect().unwrap();
    drop(stdin);
    child.wait().unwrap();
    (pid, collection)
}

/// The sampler keeps a per-CPU copy of each busy process's configuration and mappings
/// (`proc_cache`): a change must reach the very next samples on every CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn a_changed_configuration_applies_to_the_next_samples() {
    let _serial = SERIAL.lock().await;
    let busy = build_busy();
    let mut probe = load_probe();
    assert!(probe.unwinding(), "this kernel runs profile_cpu_unwind");
    let (mut child, _) = spawn(&busy, 30.0, "user", false);
    let pid = child.id();
    let set = |probe: &mut Probe, profile: bool, kernel: bool| {
        probe
            .set_pid_config(
                pid,
                PidConfig {
                    profile,
                    user: true,
                    kernel,
                },
            )
            .unwrap();
        // What was counted before the change.
        probe.collect().unwrap();
    };
    // Samples expected for the CPU time the process gets while `interval` sleeps (other
    // work on the machine takes its share).
    let cpu_ticks = || cpu_ticks_and_state(pid).0;
    let expected = |ticks: u64| ticks as f64 / 100.0 * RATE as f64;
    let interval = || tokio::time::sleep(Duration::from_millis(1000));

    set(&mut probe, true, true);
    let t0 = cpu_ticks();
    interval().await;
    let profiled = probe.collect().unwrap();
    let want = expected(cpu_ticks() - t0);
    let before = samples_of(&profiled, pid)
        .iter()
        .map(|s| s.count)
        .sum::<u64>();
    assert!(
        want >= 10.0 && before as f64 >= want * 0.6,
        "{before} samples while profiled, {want:.0} expected"
    );

    set(&mut probe, false, true);
    interval().await;
    let ignored = probe.collect().unwrap();
    assert!(
        samples_of(&ignored, pid).is_empty(),
        "samples counted after the process was set not to be profiled: {:?}",
        samples_of(&ignored, pid)
    );
    assert!(ignored.counters.ignored > 0, "{:?}", ignored.counters);

    set(&mut probe, true, false);
    let t0 = cpu_ticks();
    interval().await;
    let again = probe.collect().unwrap();
    let want = expected(cpu_ticks() - t0);
    let mine = samples_of(&again, pid);
    let after = mine.iter().map(|s| s.count).sum::<u64>();
    assert!(
        want >= 10.0 && after as f64 >= want * 0.6,
        "{after} samples once profiled again, {want:.0} expected"
    );
    assert!(
        mine.iter().all(|s| s.kernel.is_empty()),
        "kernel stacks after they were turned off"
    );
    assert!(
        mine.iter().all(|s| s.user.len() > 1),
        "walked user stacks: {mine:x?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn stack_map_collisions_do_not_lose_samples() {
    let _serial = SERIAL.lock().await;
    // Two buckets for dozens of distinct stacks: most stacks collide.
    let config = ProbeConfig {
        sample_rate: RATE,
        stack_map_size: 2,
        ..ProbeConfig::default()
    };
    let (pid, collection) = profile_syscalls(config).await;
    let mine = samples_of(&collection, pid);
    let total: u64 = mine.iter().map(|s| s.count).sum();
    let with_kernel: u64 = mine
        .iter()
        .filter(|s| !s.kernel.is_empty())
        .map(|s| s.count)
        .sum();
    eprintln!(
        "collisions: {total} samples, {with_kernel} with kernel stacks, {:?}, {:?}",
        collection.counters, collection.lost
    );
    assert!(
        collection.counters.collisions_recovered > 0,
        "{:?}",
        collection.counters
    );
    assert_eq!(collection.lost.samples(), 0, "{:?}", collection.lost);
    assert_eq!(collection.lost.missing_stacks, 0);
    assert!(
        total as f64 >= CPU_SECONDS * RATE as f64 * 0.7,
        "{total} samples"
    );
    assert!(
        with_kernel * 2 >= total,
        "{with_kernel} of {total} have kernel stacks"
    );
    for s in &mine {
        assert!(s.kernel.iter().all(|&ip| ip >= 0xffff_8000_0000_0000));
        assert!(!s.user.is_empty(), "a sample lost its user stack: {s:x?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn a_full_counts_map_is_reported_as_lost() {
    let _serial = SERIAL.lock().await;
    let config = ProbeConfig {
        sample_rate: RATE,
        counts_map_size: 1,
        ..ProbeConfig::default()
    };
    let (pid, collection) = profile_syscalls(config).await;
    let counted: u64 = samples_of(&collection, pid).iter().map(|s| s.count).sum();
    let lost = collection.lost.counts_map_full;
    eprintln!(
        "full counts map: {counted} counted, {lost} lost, {:?}",
        collection.counters
    );
    assert!(lost > 0, "{:?}", collection.lost);
    // The counts map holds the samples with a kernel stack: one entry of them (and those sent
    // whole). Table-walked samples that asked for no kernel stack (in user mode) are counted
    // in their stack's own entry and are not lost to it.
    let mine = samples_of(&collection, pid);
    let with_kernel = mine.iter().filter(|s| !s.kernel.is_empty()).count();
    assert!(
        with_kernel <= 1 + collection.counters.collisions_recovered as usize,
        "{with_kernel} entries with a kernel stack"
    );
    // The syscall loop is rarely sampled in user mode (none in about one run in four): check
    // those samples whenever the kernel saw some (`kernel_stack_empty` counts samples taken in
    // user mode of a process profiled with kernel stacks).
    if collection.counters.kernel_stack_empty > 0 {
        assert!(
            mine.iter().any(|s| s.kernel.is_empty()),
            "samples in user mode are counted outside the full counts map: {:?}",
            collection.counters
        );
    }
    let all = (counted + lost) as f64;
    assert!(
        all >= CPU_SECONDS * RATE as f64 * 0.7,
        "{counted} + {lost} samples"
    );
    assert_eq!(
        collection.lost.samples(),
        lost + collection.lost.stack_collisions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn exec_of_a_known_pid_is_reported() {
    let _serial = SERIAL.lock().await;
    let mut probe = load_probe();
    let mut events = probe.take_events().unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "read line; exec sleep 5"])
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
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    let seen = wait_for_event(
        &mut events,
        ProbeEvent::PidExec(pid),
        Duration::from_secs(3),
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen, "no exec event for {pid}");
    assert!(
        wait_for_event(
            &mut events,
            ProbeEvent::PidExit(pid),
            Duration::from_secs(3)
        )
        .await,
        "no exit event after the exec'd program of {pid} was killed"
    );
}

/// Re-runs `unprivileged_helper` of this test binary as user nobody (no capabilities) and
/// checks the error the component would show.
#[test]
#[ignore = "needs root (drops to user nobody with setpriv)"]
fn unprivileged_load_fails_with_the_permission_message() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["--exact", "unprivileged_helper", "--ignored", "--nocapture"])
        .output()
        .expect("setpriv (util-linux) runs the helper as an unprivileged user");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let wanted = format!("PROBE_ERROR: {PERMISSION_MESSAGE_PREFIX}: ");
    assert!(text.contains(&wanted), "expected {wanted:?} in:\n{text}");
}

#[tokio::test]
#[ignore = "run by unprivileged_load_fails_with_the_permission_message as user nobody"]
async fn unprivileged_helper() {
    match Probe::load(ProbeConfig::default()) {
        Ok(_) => println!("PROBE_LOADED"),
        Err(e) => println!("PROBE_ERROR: {e}"),
    }
}

/// Fraction (by count) of `samples` whose user stack starts with frames inside `chain`
/// (leaf first).
fn chain_share(
    samples: &[&StackSample],
    syms: &HashMap<String, (u64, u64)>,
    mapping: (u64, u64, u64),
    chain: &[&str],
) -> f64 {
    let in_fn = |ip: u64, name: &str| {
        let (lo, hi) = syms[name];
        ip >= mapping.0 && ip < mapping.1 && {
            let addr = file_address(ip, mapping);
            addr >= lo && addr < hi
        }
    };
    let total: u64 = samples.iter().map(|s| s.count).sum();
    let matching: u64 = samples
        .iter()
        .filter(|s| {
            s.user.len() >= chain.len()
                && chain.iter().enumerate().all(|(i, f)| in_fn(s.user[i], f))
        })
        .map(|s| s.count)
        .sum();
    matching as f64 / total.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn callers_of_frameless_leaves_are_recovered() {
    let _serial = SERIAL.lock().await;
    let busy = build_busy();
    let syms = symbols(&busy.binary);
    let mut probe = load_probe();

    let (mut child, stdin) = spawn(&busy, CPU_SECONDS, "flat", true);
    let mut stdin = stdin.unwrap();
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
    probe.collect().unwrap();
    start(&mut stdin);
    wait_cpu_burnt(pid).await;
    let collection = probe.collect().unwrap();
    let mapping = text_mapping(pid, &busy.binary);
    drop(stdin);
    child.wait().unwrap();
    let mine = samples_of(&collection, pid);
    let share = chain_share(
        &mine,
        &syms,
        mapping,
        &["flat_leaf", "flat_middle", "flat_outer", "main"],
    );
    eprintln!(
        "frameless leaf: {:.1}% of samples have the whole chain; stacks {:x?}",
        share * 100.0,
        mine.iter().take(4).map(|s| &s.user).collect::<Vec<_>>()
    );
    assert!(
        share >= 0.8,
        "only {:.1}% of samples have flat_leaf ← flat_middle ← flat_outer ← main",
        share * 100.0
    );

    // Syscall wrappers in libc (called through the PLT) are frameless too: the caller of the
    // wrapper, `syscalls`, must follow it.
    let (mut child, stdin) = spawn(&busy, CPU_SECONDS, "sys", true);
    let mut stdin = stdin.unwrap();
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
    probe.collect().unwrap();
    start(&mut stdin);
    wait_cpu_burnt(pid).await;
    let collection = probe.collect().unwrap();
    let mapping = text_mapping(pid, &busy.binary);
    drop(stdin);
    child.wait().unwrap();
    let in_kernel: Vec<&StackSample> = samples_of(&collection, pid)
        .into_iter()
        .filter(|s| !s.kernel.is_empty())
        .collect();
    let (lo, hi) = syms["syscalls"];
    let total: u64 = in_kernel.iter().map(|s| s.count).sum();
    let with_caller: u64 = in_kernel
        .iter()
        .filter(|s| {
            s.user.get(1).is_some_and(|&ip| {
                ip >= mapping.0 && ip < mapping.1 && (lo..hi).contains(&file_address(ip, mapping))
            })
        })
        .map(|s| s.count)
        .sum();
    eprintln!(
        "syscall wrappers: {with_caller} of {total} kernel samples have `syscalls` as the wrapper's caller; stacks {:x?}",
        in_kernel.iter().take(4).map(|s| (&s.user, s.user_end)).collect::<Vec<_>>()
    );
    assert!(with_caller * 10 >= total * 8, "{with_caller} of {total}");
}
