//! Symbolization beyond ELF files, of live processes: the vdso, perf maps for JIT code, kallsyms
//! (a fixture file, its refresh and rate limit, and the real one), the caches and their metrics,
//! and processes that die, exec, are preloaded, replaced on disk or live in a container root.
#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "support/ready.rs"]
mod ready;

use ebpf_probe::symbolize::elf::load_elf;
use ebpf_probe::symbolize::{Symbolizer, SymbolizerConfig};
#[path = "support/live_fixture.rs"]
mod live_fixture;
use live_fixture::*;

#[test]
fn vdso_frames() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let vdso = ebpf_probe::symbolize::procmaps::parse_maps(&maps)
        .into_iter()
        .find(|m| m.path == "[vdso]")
        .expect("this process has a vdso");
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    let ips: Vec<u64> = (vdso.start..vdso.end).step_by(4).collect();
    let frames = sym.symbolize_user(std::process::id(), &ips);
    assert_eq!(frames.len(), ips.len());
    assert!(frames
        .iter()
        .all(|f| f.mapping.as_ref().is_some_and(|m| m.file == "[vdso]")));
    let named: Vec<_> = frames.iter().filter_map(|f| f.name.clone()).collect();
    assert!(
        named.iter().any(|n| n.contains("clock_gettime")),
        "vdso names: {named:?}"
    );
    assert!(frames[0].mapping.as_ref().unwrap().build_id.is_some());
}

#[test]
fn perf_map_for_jit_code() {
    let mut child = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    let path = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    // an address that is in no file mapping of `sleep`
    let jit = 0x0000_1000_0000_0000u64;
    std::fs::write(
        &path,
        format!("{jit:x} 100 LazyCompile:~work /app/index.js:10\n"),
    )
    .unwrap();
    let (mut sym, _) = symbolizer(SymbolizerConfig {
        maps_refresh_interval: Duration::ZERO,
        ..Default::default()
    });
    let frames = sym.symbolize_user(pid, &[jit + 0x10, jit + 0x200]);
    assert_eq!(
        frames[0].name.as_deref(),
        Some("LazyCompile:~work /app/index.js:10")
    );
    assert_eq!(frames[1].display_name(), "[unknown]");
    // the JIT appends: a changed file is re-read
    std::fs::write(
        &path,
        format!("{jit:x} 100 LazyCompile:~work /app/index.js:10\n{:x} 40 LazyCompile:~later /app/index.js:20\n", jit + 0x200),
    )
    .unwrap();
    let frames = sym.symbolize_user(pid, &[jit + 0x210]);
    assert_eq!(
        frames[0].name.as_deref(),
        Some("LazyCompile:~later /app/index.js:20")
    );
    let _ = std::fs::remove_file(&path);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kallsyms_fixture_and_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("kallsyms");
    let mods = dir.path().join("modules");
    std::fs::write(
        &ks,
        "ffffffff81000000 T _stext\nffffffff81000100 T do_syscall_64\nffffffff81000200 t helper\n\
         ffffffff82000000 D some_data\nffffffffc0000000 t mod_fn\t[mymod]\n",
    )
    .unwrap();
    std::fs::write(&mods, "mymod 16384 0 - Live 0xffffffffc0000000\n").unwrap();
    let config = SymbolizerConfig {
        kallsyms_path: ks.clone(),
        modules_path: mods.clone(),
        kallsyms_refresh_interval: Duration::ZERO,
        ..Default::default()
    };
    let (mut sym, _) = symbolizer(config);
    let f = sym.symbolize_kernel(&[
        0xffffffff81000150,
        0xffffffff81000201,
        0xffffffffc0000010,
        0xffffffffd0000000,
    ]);
    assert_eq!(
        names(&f),
        ["do_syscall_64", "helper", "mod_fn", "[unknown]"]
    );
    assert!(f.iter().all(|f| f.mapping.is_none()));
    // a return address at a function's first byte belongs to the previous function
    let f = sym.symbolize_kernel(&[0xffffffff81000150, 0xffffffff81000200]);
    assert_eq!(names(&f), ["do_syscall_64", "do_syscall_64"]);
    let loads = sym.kernel_symbols().loads();
    // a BPF program appears: the unresolvable address triggers a reload
    std::fs::write(
        &ks,
        "ffffffff81000000 T _stext\nffffffff81000100 T do_syscall_64\nffffffffc0000000 t mod_fn\t[mymod]\n\
         ffffffffd0000000 t bpf_prog_6deef7357e7b4530_profile\t[bpf]\n",
    )
    .unwrap();
    let f = sym.symbolize_kernel(&[0xffffffffd0000010]);
    assert_eq!(names(&f), ["bpf_prog_6deef7357e7b4530_profile"]);
    assert!(sym.kernel_symbols().loads() > loads);
    // a module change triggers a reload too
    std::fs::write(
        &ks,
        "ffffffff81000000 T _stext\nffffffffc0001000 t new_mod_fn\t[newmod]\n",
    )
    .unwrap();
    std::fs::write(&mods, "newmod 16384 0 - Live 0xffffffffc0001000\n").unwrap();
    let f = sym.symbolize_kernel(&[0xffffffffc0001004]);
    assert_eq!(names(&f), ["new_mod_fn"]);
}

/// A symbolizer whose kernel table is a one-symbol fixture, reloaded at most every `refresh`.
fn one_symbol_kallsyms(dir: &Path, refresh: Duration) -> Symbolizer {
    let ks = dir.join("kallsyms");
    std::fs::write(&ks, "ffffffff81000000 T _stext\n").unwrap();
    symbolizer(SymbolizerConfig {
        kallsyms_path: ks,
        modules_path: dir.join("modules"),
        kallsyms_refresh_interval: refresh,
        ..Default::default()
    })
    .0
}

#[test]
fn kallsyms_rate_limit_prevents_reload_storms() {
    let dir = tempfile::tempdir().unwrap();
    let mut sym = one_symbol_kallsyms(dir.path(), Duration::from_secs(3600));
    for _ in 0..100 {
        sym.symbolize_kernel(&[0xffffffffd0000000]);
    }
    assert_eq!(sym.kernel_symbols().loads(), 1);

    // Without a rate limit, an address that stays unresolvable reloads once, not per lookup;
    // a new unresolvable address may reload again.
    let mut sym = one_symbol_kallsyms(dir.path(), Duration::ZERO);
    for _ in 0..100 {
        sym.symbolize_kernel(&[0xffffffffd0000000, 0xffffffff81000010]);
    }
    assert_eq!(
        sym.kernel_symbols().loads(),
        2,
        "first load + one for the new address"
    );
    sym.symbolize_kernel(&[0xffffffffd0001000]);
    assert_eq!(sym.kernel_symbols().loads(), 3);
}

#[test]
#[ignore = "needs root (kptr_restrict hides kernel addresses)"]
fn real_kallsyms() {
    let content = std::fs::read_to_string("/proc/kallsyms").expect("read /proc/kallsyms");
    let (table, restricted) = ebpf_probe::symbolize::kallsyms::parse_kallsyms(&content);
    assert!(
        !restricted,
        "kernel addresses are hidden: run as root (kptr_restrict)"
    );
    assert!(
        table.len() > 10_000,
        "only {} kernel text symbols",
        table.len()
    );
    let line = content
        .lines()
        .find(|l| l.ends_with(" T schedule") || l.ends_with(" T do_syscall_64"))
        .expect("schedule or do_syscall_64 in kallsyms");
    let mut it = line.split_whitespace();
    let addr = u64::from_str_radix(it.next().unwrap(), 16).unwrap();
    let name = it.nth(1).unwrap();
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    let f = sym.symbolize_kernel(&[addr + 1]);
    assert_eq!(f[0].name.as_deref(), Some(name));
    assert!(sym.stats().kernel_symbols > 10_000);
}

#[test]
fn caches_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let bin = gcc(
        dir.path(),
        "hot_cache",
        &[fixture("hot.c").to_str().unwrap()],
    );
    // Copied by a `cp` child: an in-process copy keeps a write descriptor that another test
    // thread's fork can carry into its child until that child execs, and running the copy in
    // that window fails with ETXTBSY.
    let copy = dir.path().join("hot_copy");
    let st = std::process::Command::new("cp")
        .arg(&bin)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let a = Live::start(&bin);
    let b = Live::start(&bin);
    let c = Live::start(&copy);
    let (mut sym, m) = symbolizer(SymbolizerConfig {
        pid_cache_size: 2,
        ..Default::default()
    });
    let mut registry = prometheus_client::registry::Registry::default();
    m.register(&mut registry);

    let leaf = |l: &Live| l.addr("hot_leaf");
    assert_eq!(
        sym.symbolize_user(a.pid(), &[leaf(&a)])[0].display_name(),
        "hot_leaf"
    );
    assert_eq!(
        (
            m.pid_cache_miss.get(),
            m.elf_cache_stat_miss.get(),
            m.elf_cache_build_id_miss.get()
        ),
        (1, 1, 1)
    );
    sym.symbolize_user(a.pid(), &[leaf(&a)]);
    assert_eq!(m.pid_cache_hit.get(), 1);
    // same file, other process: hit by device+inode
    assert_eq!(
        sym.symbolize_user(b.pid(), &[leaf(&b)])[0].display_name(),
        "hot_leaf"
    );
    assert_eq!(m.elf_cache_stat_hit.get(), 1);
    // a copy (other inode, same build ID): hit by build ID
    assert_eq!(
        sym.symbolize_user(c.pid(), &[leaf(&c)])[0].display_name(),
        "hot_leaf"
    );
    assert_eq!(
        (m.elf_cache_stat_miss.get(), m.elf_cache_build_id_hit.get()),
        (2, 1)
    );
    // pid cache holds 2: `a` was evicted by `c`
    assert_eq!(sym.stats().pids, 2);
    sym.symbolize_user(a.pid(), &[leaf(&a)]);
    assert_eq!(m.pid_cache_miss.get(), 4);
    sym.forget_pid(a.pid());
    assert_eq!(sym.stats().pids, 1);
    sym.symbolize_user(a.pid(), &[leaf(&a)]);
    assert_eq!(m.pid_cache_miss.get(), 5);
    assert_eq!(sym.stats().elfs, 2);
    assert_eq!(sym.stats().build_ids, 1);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "pyroscope_ebpf_pid_cache_hit_total 1",
        "pyroscope_ebpf_pid_cache_miss_total 5",
        "pyroscope_ebpf_elf_cache_build_id_hit_total 1",
        "pyroscope_ebpf_elf_cache_build_id_miss_total 1",
        "pyroscope_ebpf_elf_cache_stat_hit_total",
        "pyroscope_ebpf_elf_cache_stat_miss_total 2",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
}

#[test]
fn dead_pid_gives_unknown_frames() {
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    let frames = sym.symbolize_user(u32::MAX - 7, &[0x1234, 0x5678]);
    assert_eq!(names(&frames), ["[unknown]", "[unknown]"]);
}

#[test]
fn container_root_is_not_escaped_by_absolute_symlinks() {
    use ebpf_probe::symbolize::elf::resolve_in_root;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("usr/lib/libc.so"), b"inside").unwrap();
    std::os::unix::fs::symlink("/usr/lib/libc.so", root.join("usr/lib/link.so")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/passwd", root.join("usr/lib/up")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("etc/abs")).unwrap();
    let r = resolve_in_root(&root, Path::new("/usr/lib/link.so")).unwrap();
    assert_eq!(r, root.join("usr/lib/libc.so"));
    assert_eq!(std::fs::read(&r).unwrap(), b"inside");
    assert_eq!(
        resolve_in_root(&root, Path::new("/usr/lib/up")).ok(),
        None,
        "host /etc/passwd must not be reachable"
    );
    assert!(resolve_in_root(&root, Path::new("/etc/abs")).is_err());
}

#[test]
#[ignore = "needs root (reads /proc/PID/map_files)"]
fn deleted_and_replaced_binary_is_read_through_map_files() {
    let dir = tempfile::tempdir().unwrap();
    let bin = gcc(dir.path(), "hot_del", &[fixture("hot.c").to_str().unwrap()]);
    let live = Live::start(&bin);
    // upgrade in place: the running image is deleted and another file takes its path
    std::fs::remove_file(&bin).unwrap();
    std::fs::write(&bin, b"not an elf any more").unwrap();
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    let frames = expect_names(&mut sym, &live, C_CHAIN);
    assert_eq!(
        frames[0].mapping.as_ref().unwrap().file,
        bin.to_str().unwrap()
    );
}

#[test]
fn symbolizer_and_caches_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<Symbolizer>();
    send::<ebpf_probe::cgroup::ContainerIdCache>();
    send::<ebpf_probe::pprof::ProfileBuilder>();
}

#[test]
fn preloaded_process_still_symbolizes_after_exit() {
    let dir = tempfile::tempdir().unwrap();
    let bin = gcc(
        dir.path(),
        "hot_exit",
        &[fixture("hot.c").to_str().unwrap()],
    );
    let live = Live::start(&bin);
    let (pid, leaf, outer) = (live.pid(), live.addr("hot_leaf"), live.addr("outer"));
    let (mut sym, m) = symbolizer(SymbolizerConfig::default());
    let (mut lazy, _) = symbolizer(SymbolizerConfig::default());
    assert!(sym.preload(pid));
    // `lazy` read the maps but resolved no file before the exit
    assert_eq!(lazy.symbolize_user(pid, &[0x10]).len(), 1);
    drop(live); // the process exits and is reaped
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let frames = sym.symbolize_user(pid, &[leaf, outer + 1]);
    assert_eq!(names(&frames), ["hot_leaf", "outer"]);
    assert_eq!((m.pid_cache_miss.get(), m.pid_cache_hit.get()), (1, 1));
    let frames = lazy.symbolize_user(pid, &[leaf]);
    assert_eq!(
        frames[0].name, None,
        "without preload the exited binary cannot be read"
    );
    assert!(
        frames[0].mapping.is_some(),
        "but the frame keeps its mapping"
    );
    assert!(!sym.preload(u32::MAX - 3));
}

#[test]
fn maps_read_during_exec_are_read_again() {
    // Right after spawn, /proc/PID/maps can show an exec in progress (only the stack).
    // Whatever was cached then, the binary's addresses must resolve at once (no 1 s wait).
    let dir = tempfile::tempdir().unwrap();
    let bin = gcc(
        dir.path(),
        "hot_exec",
        &[fixture("hot.c").to_str().unwrap()],
    );
    for _ in 0..20 {
        let mut child = Command::new(&bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (mut sym, _) = symbolizer(SymbolizerConfig {
            maps_refresh_interval: Duration::from_secs(3600),
            ..Default::default()
        });
        sym.preload(child.id());
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let leaf = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("hot_leaf=0x"))
            .unwrap();
        let leaf = u64::from_str_radix(leaf, 16).unwrap();
        assert_eq!(
            sym.symbolize_user(child.id(), &[leaf])[0].display_name(),
            "hot_leaf"
        );
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

#[inline(never)]
fn a_rust_function_in_this_test_binary(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_mul(31).rotate_left(7))
}

#[test]
fn large_binary_names_stay_in_the_file() {
    // This test binary: tens of thousands of Rust symbols. The table keeps 16 bytes per
    // function and reads names from the file only when looked up.
    let exe = std::env::current_exe().unwrap();
    let elf = load_elf(Path::new("/"), exe.to_str().unwrap(), &[]).unwrap();
    let n = elf.table.len();
    assert!(n > 5_000, "{n} symbols");
    assert_eq!(elf.table.lazy_names(), n, "every name is lazy");
    assert!(
        elf.table.heap_bytes() <= 16 * n + 4096,
        "{} bytes for {n} symbols",
        elf.table.heap_bytes()
    );
    // Names come out right (read from the file, then demangled) for a live address.
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    let f = a_rust_function_in_this_test_binary as fn(u64) -> u64;
    assert_eq!(a_rust_function_in_this_test_binary(1), 31u64.rotate_left(7));
    let frames = sym.symbolize_user(std::process::id(), &[f as usize as u64 + 1]);
    let name = frames[0].display_name();
    assert!(
        name.ends_with("a_rust_function_in_this_test_binary"),
        "{name}"
    );
}
