//! Faults around symbolization, with real processes built by the test (gcc, nm):
//!
//! * a process that exits between `preload` and `symbolize_user`, one that exits after its maps
//!   were read but before its binary was, and one that is gone before anything was read: names
//!   stay right, or frames are kept as `module+0xoffset` / `[unknown]` — never dropped, never
//!   another binary's names;
//! * a binary replaced on disk (same path, new inode) while it runs: the running process keeps
//!   the names of the inode it runs (read through `/proc/PID/map_files`), also when its maps
//!   were read before the replacement and when the ELF cache already holds the new file;
//! * `/proc/PID/root` is never escaped: absolute symlinks, `..` and symlinked directories in a
//!   process's root (a fake root, a fake `/proc`, and a real `FROM scratch` container) never make
//!   the symbolizer read a host file.
//!
//! Needs root (map_files), gcc, nm and a running Docker engine: fails, never skips, without them.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failed step fails the test"
)]

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

#[path = "support/docker_cleanup.rs"]
mod docker_cleanup;
#[path = "support/ready.rs"]
mod ready;

use docker_cleanup::DockerCleanup;
use ready::spawn_first_line;

use ebpf_probe::symbolize::elf::{load_elf, read_build_id, resolve_in_root, ElfSymbols};
use ebpf_probe::symbolize::procmaps::{parse_maps, MapEntry};
use ebpf_probe::symbolize::{Frame, Symbolizer, SymbolizerConfig, SymbolizerMetrics};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is the tool installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A program with three functions `<prefix>_one/two/three` calling each other; it prints
/// "ready" and waits for its stdin to close. Programs built from different prefixes have the
/// same code at the same addresses (non-PIE), so reading the wrong file gives wrong names, not
/// missing ones.
fn program(prefix: &str) -> String {
    format!(
        r#"#include <stdio.h>
#include <unistd.h>
__attribute__((noinline)) int {p}_one(int x) {{ return x * 3 + 1; }}
__attribute__((noinline)) int {p}_two(int x) {{ return {p}_one(x) * 5 + 2; }}
__attribute__((noinline)) int {p}_three(int x) {{ return {p}_two(x) * 7 + 3; }}
int main(void) {{
    char c;
    printf("ready %d\n", {p}_three(1));
    fflush(stdout);
    while (read(0, &c, 1) > 0) {{}}
    return 0;
}}
"#,
        p = prefix
    )
}

/// Builds `program(prefix)` into `dir/out` with extra gcc flags.
fn build(dir: &Path, prefix: &str, out: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("{out}.c"));
    std::fs::write(&src, program(prefix)).unwrap();
    run(Command::new("gcc")
        .args(["-O1", "-fno-omit-frame-pointer", "-no-pie", "-o"])
        .arg(dir.join(out))
        .arg(&src)
        .args(flags));
    dir.join(out)
}

/// Function addresses from `nm` (link-time; the runtime ones for a non-PIE binary).
fn nm(bin: &Path) -> HashMap<String, u64> {
    run(Command::new("nm").arg(bin))
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (addr, kind, name) = (f.next()?, f.next()?, f.next()?);
            matches!(kind, "T" | "t")
                .then(|| Some((name.to_string(), u64::from_str_radix(addr, 16).ok()?)))?
        })
        .collect()
}

/// The three functions' addresses as a stack: leaf first, the callers as return addresses
/// (one byte in, looked up one byte earlier).
fn stack(addrs: &HashMap<String, u64>, prefix: &str) -> Vec<u64> {
    vec![
        addrs[&format!("{prefix}_one")],
        addrs[&format!("{prefix}_two")] + 1,
        addrs[&format!("{prefix}_three")] + 1,
    ]
}

/// The function an ELF file names at link-time address `vaddr` (through its file offset, as
/// the symbolizer looks it up).
fn name_at(e: &ElfSymbols, vaddr: u64) -> Option<String> {
    let seg = e
        .loads
        .iter()
        .find(|l| l.vaddr <= vaddr && vaddr < l.vaddr + l.filesz)?;
    e.lookup_file_offset(vaddr - seg.vaddr + seg.offset)
        .map(|n| n.into_owned())
}

fn names(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(Frame::display_name).collect()
}

fn expected(prefix: &str) -> Vec<String> {
    ["one", "two", "three"]
        .iter()
        .map(|f| format!("{prefix}_{f}"))
        .collect()
}

fn symbolizer() -> Symbolizer {
    Symbolizer::new(SymbolizerConfig::default(), SymbolizerMetrics::default())
}

/// A started program that has printed "ready".
struct Running(Child);

impl Running {
    fn start(bin: &Path) -> Running {
        let (child, line) = spawn_first_line(bin);
        assert!(line.starts_with("ready"), "{line:?}");
        Running(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Its executable mappings now.
    fn exec_maps(&self) -> Vec<MapEntry> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid())).unwrap();
        parse_maps(&maps)
            .into_iter()
            .filter(MapEntry::is_exec)
            .collect()
    }

    /// Kills it and reaps it: its pid is gone from /proc afterwards.
    fn kill(mut self) -> u32 {
        let pid = self.pid();
        self.0.kill().unwrap();
        self.0.wait().unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        pid
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.0.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---- processes exiting around symbolization ----

#[test]
fn process_exiting_between_preload_and_symbolize_keeps_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), "alpha", "alpha", &[]);
    let addrs = nm(&bin);
    let mut sym = symbolizer();
    // Several processes preloaded; half of them exit before the collect symbolizes them.
    let procs: Vec<Running> = (0..4).map(|_| Running::start(&bin)).collect();
    for p in &procs {
        assert!(sym.preload(p.pid()));
    }
    let mut pids = Vec::new();
    let mut alive = Vec::new();
    for (i, p) in procs.into_iter().enumerate() {
        pids.push(p.pid());
        if i % 2 == 0 {
            p.kill();
        } else {
            alive.push(p);
        }
    }
    for pid in &pids {
        let frames = sym.symbolize(*pid, &stack(&addrs, "alpha"), &[]);
        assert_eq!(names(&frames), expected("alpha"), "pid {pid}");
        assert_eq!(
            frames[0].mapping.as_ref().unwrap().file,
            bin.to_str().unwrap()
        );
    }
    assert_eq!(
        sym.stats().pids,
        4,
        "the exited ones are kept until forgotten"
    );
    for pid in &pids {
        sym.forget_pid(*pid);
    }
    drop(alive);
    assert_eq!(sym.stats().pids, 0);
}

#[test]
fn process_exiting_after_its_maps_were_read_keeps_module_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), "alpha", "alpha_maps", &[]);
    let addrs = nm(&bin);
    let p = Running::start(&bin);
    let pid = p.pid();
    let maps = p.exec_maps();
    let libc = maps
        .iter()
        .find(|m| m.path.contains("libc"))
        .expect("a dynamic binary maps libc");
    let own = maps
        .iter()
        .find(|m| m.path == bin.to_str().unwrap())
        .expect("the binary's text mapping")
        .clone();
    let mut sym = symbolizer();
    // The first stack only touches libc: the maps are read, the binary is not.
    let frames = sym.symbolize_user(pid, &[libc.start + 16]);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].mapping.as_ref().unwrap().file, libc.path);
    p.kill();
    // Now the binary cannot be read any more (neither map_files nor PID/root exist): the
    // frames keep their mapping and show as module+offset, in order, none dropped.
    let ips = stack(&addrs, "alpha");
    let frames = sym.symbolize_user(pid, &ips);
    assert_eq!(frames.len(), 3);
    let base = bin.file_name().unwrap().to_str().unwrap();
    let want: Vec<String> = ips
        .iter()
        .map(|&ip| format!("{base}+0x{:x}", ip - own.start + own.offset))
        .collect();
    assert_eq!(names(&frames), want);
    for (f, ip) in frames.iter().zip(&ips) {
        assert_eq!(f.address, *ip);
        assert_eq!(f.name, None, "never another file's name");
        let m = f.mapping.as_ref().unwrap();
        assert_eq!(
            (m.start, m.limit, m.offset),
            (own.start, own.end, own.offset)
        );
    }
}

#[test]
fn process_gone_before_anything_was_read_keeps_unknown_frames() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), "alpha", "alpha_gone", &[]);
    let addrs = nm(&bin);
    let pid = Running::start(&bin).kill();
    let mut sym = symbolizer();
    assert!(!sym.preload(pid), "nothing to preload");
    let ips = stack(&addrs, "alpha");
    let frames = sym.symbolize_user(pid, &ips);
    assert_eq!(names(&frames), ["[unknown]"; 3]);
    assert_eq!(
        frames.iter().map(|f| f.address).collect::<Vec<_>>(),
        ips,
        "addresses kept, in order"
    );
    // With kernel frames: all of them kept, kernel first.
    let frames = sym.symbolize(pid, &ips, &[0xffff_ffff_8100_0000, 0xffff_ffff_8100_0100]);
    assert_eq!(frames.len(), 5);
    assert_eq!(frames[2].address, ips[0]);
}

// ---- a binary replaced on disk while it runs ----

/// `dir/app` runs the alpha program; then the beta program is renamed over `dir/app`.
struct Replaced {
    _dir: tempfile::TempDir,
    app: PathBuf,
    addrs: HashMap<String, u64>,
    old: Running,
}

fn start_then_replace(before_rename: impl FnOnce(&Running)) -> Replaced {
    let dir = tempfile::tempdir().unwrap();
    let app = build(dir.path(), "alpha", "app", &[]);
    let new = build(dir.path(), "beta", "app.new", &[]);
    let addrs = nm(&app);
    let beta = nm(&new);
    for f in ["one", "two", "three"] {
        assert_eq!(
            addrs[&format!("alpha_{f}")],
            beta[&format!("beta_{f}")],
            "same layout: reading the new file would give beta names"
        );
    }
    assert_ne!(read_build_id(&app).unwrap(), read_build_id(&new).unwrap());
    let old = Running::start(&app);
    before_rename(&old);
    let ino_before = std::fs::metadata(&app).unwrap();
    std::fs::rename(&new, &app).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(std::fs::metadata(&app).unwrap().ino(), ino_before.ino());
    let mut addrs = addrs;
    addrs.extend(beta);
    Replaced {
        _dir: dir,
        app,
        addrs,
        old,
    }
}

#[test]
#[ignore = "needs root (reads /proc/PID/map_files)"]
fn replaced_binary_keeps_the_running_inodes_names() {
    let r = start_then_replace(|_| {});
    // The old process's maps now say "(deleted)"; its names come from map_files.
    assert!(r.old.exec_maps().iter().any(|m| m.deleted));
    let mut sym = symbolizer();
    let frames = sym.symbolize_user(r.old.pid(), &stack(&r.addrs, "alpha"));
    assert_eq!(names(&frames), expected("alpha"));
    assert_eq!(
        frames[0].mapping.as_ref().unwrap().file,
        r.app.to_str().unwrap(),
        "the mapping keeps the path the process sees"
    );
    // A process started from the new file gets the new names, the old one keeps its own,
    // from the same caches.
    let new = Running::start(&r.app);
    let frames = sym.symbolize_user(new.pid(), &stack(&r.addrs, "beta"));
    assert_eq!(names(&frames), expected("beta"));
    let frames = sym.symbolize_user(r.old.pid(), &stack(&r.addrs, "alpha"));
    assert_eq!(names(&frames), expected("alpha"));
    assert!(sym.stats().elfs >= 2, "two inodes, two ELF cache entries");
}

#[test]
#[ignore = "needs root (reads /proc/PID/map_files)"]
fn elf_cache_holding_the_new_file_does_not_name_the_old_process() {
    let r = start_then_replace(|_| {});
    let new = Running::start(&r.app);
    let mut sym = symbolizer();
    // The new file is cached first (by path, inode and build ID)...
    assert!(sym.preload(new.pid()));
    let frames = sym.symbolize_user(new.pid(), &stack(&r.addrs, "beta"));
    assert_eq!(names(&frames), expected("beta"));
    // ...then the old process, same path: its own inode.
    let frames = sym.symbolize_user(r.old.pid(), &stack(&r.addrs, "alpha"));
    assert_eq!(names(&frames), expected("alpha"));
    // And after it exits, preloaded: still its own names.
    assert!(sym.preload(r.old.pid()));
    let Replaced { old, addrs, .. } = r;
    let pid = old.kill();
    let frames = sym.symbolize_user(pid, &stack(&addrs, "alpha"));
    assert_eq!(names(&frames), expected("alpha"));
}

#[test]
#[ignore = "needs root (reads /proc/PID/map_files)"]
fn replaced_after_the_maps_were_read_still_reads_the_running_inode() {
    // The maps are read (and cached, not "(deleted)" yet) before the replacement; the binary's
    // symbols are loaded only after it: the path now names the new file.
    let mut sym = symbolizer();
    let r = start_then_replace(|old| {
        let libc = old
            .exec_maps()
            .into_iter()
            .find(|m| m.path.contains("libc"))
            .expect("libc mapping");
        let frames = sym.symbolize_user(old.pid(), &[libc.start + 16]);
        assert_eq!(frames.len(), 1);
    });
    let frames = sym.symbolize_user(r.old.pid(), &stack(&r.addrs, "alpha"));
    assert_eq!(names(&frames), expected("alpha"));
}

#[test]
fn preloaded_then_replaced_then_exited_keeps_its_names() {
    let mut sym = symbolizer();
    let r = start_then_replace(|old| assert!(sym.preload(old.pid())));
    let Replaced {
        old, addrs, app, ..
    } = r;
    let pid = old.kill();
    // Another process reuses the path (new file) meanwhile.
    let new = Running::start(&app);
    assert!(sym.preload(new.pid()));
    assert_eq!(
        names(&sym.symbolize_user(pid, &stack(&addrs, "alpha"))),
        expected("alpha")
    );
    assert_eq!(
        names(&sym.symbolize_user(new.pid(), &stack(&addrs, "beta"))),
        expected("beta")
    );
}

// ---- /proc/PID/root is never escaped ----

/// A fake container root holding symlinks that point at a host-only ELF file (whose absolute
/// path does not exist inside the root) in every way a container could try.
struct EscapeFixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// An ELF file on the host only (`host_one`...), absolute.
    host: PathBuf,
    /// A different ELF file (`inside_one`...) with the same layout.
    inside: PathBuf,
}

impl EscapeFixture {
    fn new() -> EscapeFixture {
        let dir = tempfile::tempdir().unwrap();
        let host = build(dir.path(), "host", "host-only.bin", &[]);
        let inside = build(dir.path(), "inside", "inside.bin", &[]);
        let root = dir.path().join("root");
        for d in ["usr/bin", "usr/lib/debug/.build-id", "opt", "etc"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let host_rel = host.strip_prefix("/").unwrap();
        // An absolute symlink to the host file.
        symlink(&host, root.join("usr/bin/abs")).unwrap();
        // A relative one climbing far above the root.
        symlink(
            Path::new("../../../../../../../../../../").join(host_rel),
            root.join("usr/bin/rel"),
        )
        .unwrap();
        // A symlinked directory to the host file's directory.
        symlink(host.parent().unwrap(), root.join("opt/hostdir")).unwrap();
        // A chain ending in an absolute link.
        symlink("chain2", root.join("usr/bin/chain1")).unwrap();
        symlink("/usr/bin/chain3", root.join("usr/bin/chain2")).unwrap();
        symlink(&host, root.join("usr/bin/chain3")).unwrap();
        // A loop.
        symlink("loop2", root.join("usr/bin/loop1")).unwrap();
        symlink("loop1", root.join("usr/bin/loop2")).unwrap();
        // A host-only plain file.
        std::fs::write(dir.path().join("host-secret"), b"host only").unwrap();
        symlink(dir.path().join("host-secret"), root.join("etc/secret")).unwrap();
        EscapeFixture {
            _dir: dir,
            root,
            host,
            inside,
        }
    }

    /// The paths a process in the root could name, all aiming at the host file.
    fn escapes(&self) -> Vec<String> {
        let host = self.host.to_str().unwrap();
        let name = self.host.file_name().unwrap().to_str().unwrap();
        vec![
            "/usr/bin/abs".into(),
            "/usr/bin/rel".into(),
            "/usr/bin/chain1".into(),
            format!("/opt/hostdir/{name}"),
            format!("/../../../../..{host}"),
            format!("/usr/bin/../../../../../../..{host}"),
            host.to_string(),
        ]
    }

    /// Puts the "inside" binary at the host file's path inside the root.
    fn shadow_inside(&self) {
        let at = self.root.join(self.host.strip_prefix("/").unwrap());
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::copy(&self.inside, &at).unwrap();
    }
}

#[test]
fn resolve_in_root_and_load_elf_never_leave_the_root() {
    let fx = EscapeFixture::new();
    // The host file is a perfectly loadable ELF from the host's point of view.
    let host_syms = load_elf(Path::new("/"), fx.host.to_str().unwrap(), &[]).unwrap();
    assert!(!host_syms.table.is_empty());
    // Naive path joining would follow the absolute symlink out of the root.
    assert_eq!(
        std::fs::read(fx.root.join("usr/bin/abs")).unwrap(),
        std::fs::read(&fx.host).unwrap(),
        "the fixture really points at the host file"
    );

    for path in fx.escapes() {
        match resolve_in_root(&fx.root, Path::new(&path)) {
            Ok(p) => assert!(
                p.starts_with(&fx.root),
                "{path} resolved outside the root: {}",
                p.display()
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{path}: {e}"),
        }
        assert!(
            load_elf(&fx.root, &path, &[]).is_err(),
            "{path}: the host file was loaded"
        );
    }
    assert!(resolve_in_root(&fx.root, Path::new("/usr/bin/loop1")).is_err());
    assert!(load_elf(&fx.root, "/usr/bin/loop1", &[]).is_err());
    assert!(resolve_in_root(&fx.root, Path::new("/etc/secret")).is_err());

    // With a file of its own at that path, the root's file is what every escape reaches.
    fx.shadow_inside();
    let want = fx.root.join(fx.host.strip_prefix("/").unwrap());
    for path in fx.escapes() {
        assert_eq!(
            resolve_in_root(&fx.root, Path::new(&path)).unwrap(),
            want,
            "{path}"
        );
        let e = load_elf(&fx.root, &path, &[]).unwrap();
        let at = nm(&fx.inside)["inside_one"];
        assert_eq!(name_at(&e, at).as_deref(), Some("inside_one"), "{path}");
    }
}

#[test]
fn debug_files_are_looked_up_inside_the_root_only() {
    // A stripped binary in the root whose full-symbol twin (same build ID) is on the host: a
    // build-ID debug link in the root pointing at the host file must not be followed.
    let fx = EscapeFixture::new();
    let dir = fx.root.parent().unwrap();
    let full = build(dir, "debugged", "debugged.full", &["-Wl,--build-id=sha1"]);
    let stripped = fx.root.join("usr/bin/debugged");
    std::fs::copy(&full, &stripped).unwrap();
    run(Command::new("strip").arg("-s").arg(&stripped));
    let id = read_build_id(&stripped).unwrap().expect("build ID");
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let link_dir = fx.root.join("usr/lib/debug/.build-id").join(&hex[..2]);
    std::fs::create_dir_all(&link_dir).unwrap();
    let debug_link = link_dir.join(format!("{}.debug", &hex[2..]));
    symlink(&full, &debug_link).unwrap();
    let debug_dirs = [PathBuf::from("/usr/lib/debug")];
    let addrs = nm(&full);
    let at = addrs["debugged_one"];

    let e = load_elf(&fx.root, "/usr/bin/debugged", &debug_dirs).unwrap();
    assert_eq!(
        name_at(&e, at),
        None,
        "the host's debug file was read: {:?}",
        e.sources
    );

    // The same debug file inside the root is used.
    std::fs::remove_file(&debug_link).unwrap();
    std::fs::copy(&full, &debug_link).unwrap();
    let e = load_elf(&fx.root, "/usr/bin/debugged", &debug_dirs).unwrap();
    assert_eq!(
        name_at(&e, at).as_deref(),
        Some("debugged_one"),
        "{:?}",
        e.sources
    );
}

#[test]
fn symbolizer_with_a_fake_proc_never_reads_host_files() {
    // A fake /proc: PID/maps names /usr/bin/abs (the absolute symlink to the host file) with
    // the host file's real layout, PID/root is the fake root, there are no map_files.
    let fx = EscapeFixture::new();
    let host_run = Running::start(&fx.host);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", host_run.pid())).unwrap();
    drop(host_run);
    let host_path = fx.host.to_str().unwrap();
    let proc_root = fx.root.parent().unwrap().join("proc");
    let pid = 4_000_000u32;
    let pdir = proc_root.join(pid.to_string());
    std::fs::create_dir_all(&pdir).unwrap();
    symlink(&fx.root, pdir.join("root")).unwrap();
    let addrs = nm(&fx.host);
    let ips = stack(&addrs, "host");

    for (n, path) in ["/usr/bin/abs", "/usr/bin/rel", "/usr/bin/chain1"]
        .iter()
        .enumerate()
    {
        std::fs::write(pdir.join("maps"), maps.replace(host_path, path)).unwrap();
        let mut sym = Symbolizer::new(
            SymbolizerConfig {
                proc_root: proc_root.clone(),
                ..SymbolizerConfig::default()
            },
            SymbolizerMetrics::default(),
        );
        assert!(sym.preload(pid));
        let frames = sym.symbolize_user(pid, &ips);
        let got = names(&frames);
        assert!(
            got.iter().all(|n| !n.starts_with("host_")),
            "{path}: host names {got:?}"
        );
        let base = path.rsplit('/').next().unwrap();
        assert!(
            got.iter().all(|n| n.starts_with(&format!("{base}+0x"))),
            "{path}: frames kept as module+offset: {got:?}"
        );
        if n == 0 {
            // The same process seeing its own file at that path gets the inside names.
            fx.shadow_inside();
            std::fs::remove_file(fx.root.join("usr/bin/abs")).unwrap();
            std::fs::copy(&fx.inside, fx.root.join("usr/bin/abs")).unwrap();
            let mut sym = Symbolizer::new(
                SymbolizerConfig {
                    proc_root: proc_root.clone(),
                    ..SymbolizerConfig::default()
                },
                SymbolizerMetrics::default(),
            );
            assert_eq!(names(&sym.symbolize_user(pid, &ips)), expected("inside"));
            // Back to the escape for the next paths (the shadow copy stays: the other links
            // must still not reach the host file).
            std::fs::remove_file(fx.root.join("usr/bin/abs")).unwrap();
            symlink(&fx.host, fx.root.join("usr/bin/abs")).unwrap();
            std::fs::remove_file(fx.root.join(fx.host.strip_prefix("/").unwrap())).unwrap();
        }
    }
}

// ---- a real container ----

#[test]
#[ignore = "needs root and Docker"]
fn real_container_symlinks_to_host_files_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let host = build(dir.path(), "host", "host-only.bin", &[]);
    let ctx = dir.path().join("ctx");
    let img = ctx.join("fs");
    std::fs::create_dir_all(img.join("usr/bin")).unwrap();
    // The container's own program: static, prints its function addresses' names via nm later.
    let src = dir.path().join("inside.c");
    std::fs::write(&src, program("inside")).unwrap();
    run(Command::new("gcc")
        .args(["-static", "-O1", "-fno-omit-frame-pointer", "-o"])
        .arg(img.join("usr/bin/app"))
        .arg(&src));
    let host_rel = host.strip_prefix("/").unwrap();
    symlink(&host, img.join("usr/bin/abs")).unwrap();
    symlink(
        Path::new("../../../../../../../../").join(host_rel),
        img.join("usr/bin/rel"),
    )
    .unwrap();
    symlink(host.parent().unwrap(), img.join("hostdir")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY fs/ /\nENTRYPOINT [\"/usr/bin/app\"]\n",
    )
    .unwrap();
    let tag = format!("rill-symbolize-faults:{}", std::process::id());
    run(Command::new("docker")
        .args(["build", "-q", "-t", &tag, "."])
        .current_dir(&ctx));
    // -i keeps stdin open: the program waits on it.
    let id = run(Command::new("docker").args(["run", "-d", "-i", "--rm", &tag]));
    let _cleanup = DockerCleanup(id.clone(), tag.clone());
    let pid: u32 = run(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &id]))
        .parse()
        .unwrap();
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    assert!(root.join("usr/bin/app").exists());
    // The symlinks made it into the container as symlinks, and a naive open follows the
    // absolute one to the host (the kernel resolves it against the reader's root).
    assert_eq!(
        std::fs::read_link(root.join("usr/bin/abs")).unwrap(),
        host,
        "image keeps the symlink"
    );
    assert_eq!(
        std::fs::read(root.join("usr/bin/abs")).unwrap(),
        std::fs::read(&host).unwrap(),
        "naive open escapes"
    );

    let name = host.file_name().unwrap().to_str().unwrap();
    for path in [
        "/usr/bin/abs".to_string(),
        "/usr/bin/rel".to_string(),
        format!("/hostdir/{name}"),
        format!("/../../../..{}", host.display()),
    ] {
        if let Ok(p) = resolve_in_root(&root, Path::new(&path)) {
            panic!("{path} resolved to {} (not in the container)", p.display());
        }
        assert!(load_elf(&root, &path, &[]).is_err(), "{path}");
    }

    // The container's own binary is named through /proc/PID/root (it is not on the host).
    assert!(
        !Path::new("/usr/bin/app").exists() || {
            let h = std::fs::read("/usr/bin/app").unwrap();
            h != std::fs::read(img.join("usr/bin/app")).unwrap()
        }
    );
    let addrs = nm(&img.join("usr/bin/app"));
    let mut sym = symbolizer();
    assert!(sym.preload(pid));
    assert_eq!(
        names(&sym.symbolize_user(pid, &stack(&addrs, "inside"))),
        expected("inside")
    );
}
