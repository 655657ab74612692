//! Whole stacks walked with `unwind::eval::step` over real tables: a C program built with
//! `-O2 -fomit-frame-pointer` saves its registers, its stack and its maps from deep inside a call
//! chain (once directly, once from a signal handler), and the walk must find every function of
//! the chain in order, through libc, down to `_start` (`Stop::End`).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test]: a failed unwrap fails the test"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ebpf_probe::unwind::eval::{step, Frame, Stop};
use ebpf_probe::unwind::table::{build_from_file, UnwindTable};
use object::{Object, ObjectSymbol};

const PROGRAM: &str = r#"
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *dir;
static int which;

__attribute__((noinline)) void dump(void) {
    uint64_t rip, rsp, rbp;
    __asm__ volatile("lea (%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2" : "=r"(rip), "=r"(rsp), "=r"(rbp));
    char path[4096];
    snprintf(path, sizeof path, "%s/regs%d", dir, which);
    FILE *f = fopen(path, "w");
    fprintf(f, "%lx %lx %lx\n", (unsigned long)rip, (unsigned long)rsp, (unsigned long)rbp);
    fclose(f);
    FILE *maps = fopen("/proc/self/maps", "r");
    snprintf(path, sizeof path, "%s/maps%d", dir, which);
    FILE *out = fopen(path, "w");
    char line[8192];
    unsigned long stack_end = 0;
    while (fgets(line, sizeof line, maps)) {
        fputs(line, out);
        unsigned long lo, hi;
        if (strstr(line, "[stack]") && sscanf(line, "%lx-%lx", &lo, &hi) == 2) stack_end = hi;
    }
    fclose(maps);
    fclose(out);
    snprintf(path, sizeof path, "%s/stack%d", dir, which);
    f = fopen(path, "w");
    fwrite((void *)rsp, 1, stack_end - rsp, f);
    fclose(f);
}

__attribute__((noinline)) void level_a(int n) { dump(); __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void level_b(int n) { level_a(n + 1); __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void use(char *p) { __asm__ volatile("" :: "r"(p) : "memory"); }
__attribute__((noinline)) int realigned(int n) {
    _Alignas(64) char buf[64];
    char vla[n];
    memset(buf, n, sizeof buf);
    memset(vla, n, n);
    use(buf);
    use(vla);
    level_b(n);
    return buf[3] + vla[1];
}
__attribute__((noinline)) void handler(int sig) { level_a(sig); __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void raiser(void) { raise(SIGUSR1); __asm__ volatile("" ::: "memory"); }

int main(int argc, char **argv) {
    dir = argv[1];
    which = 0;
    int r = realigned(argc + 16);
    which = 1;
    signal(SIGUSR1, handler);
    raiser();
    return r == 12345;
}
"#;

struct Snapshot {
    regs: (u64, u64, u64),
    maps: Vec<(u64, u64, PathBuf)>,
    stack_lo: u64,
    stack: Vec<u8>,
}

fn load(dir: &Path, which: u32) -> Snapshot {
    let regs = std::fs::read_to_string(dir.join(format!("regs{which}"))).unwrap();
    let r: Vec<u64> = regs
        .split_whitespace()
        .map(|w| u64::from_str_radix(w, 16).unwrap())
        .collect();
    let maps = std::fs::read_to_string(dir.join(format!("maps{which}"))).unwrap();
    let maps = maps
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let path = w.get(5).filter(|p| p.starts_with('/'))?;
            let (lo, hi) = w[0].split_once('-')?;
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
                PathBuf::from(path),
            ))
        })
        .collect();
    Snapshot {
        regs: (r[0], r[1], r[2]),
        maps,
        stack_lo: r[1],
        stack: std::fs::read(dir.join(format!("stack{which}"))).unwrap(),
    }
}

/// Walks the snapshot; returns (file, file pc) per frame and why it stopped.
fn walk(snap: &Snapshot) -> (Vec<(PathBuf, u64)>, Stop) {
    let mut tables: HashMap<PathBuf, UnwindTable> = HashMap::new();
    let mut read = |addr: u64| {
        let off = usize::try_from(addr.checked_sub(snap.stack_lo)?).ok()?;
        let bytes = snap.stack.get(off..off + 8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    };
    let mut frame = Frame::leaf(snap.regs.0, snap.regs.1, snap.regs.2);
    let mut frames = Vec::new();
    for _ in 0..64 {
        let Some((_, _, path)) = snap
            .maps
            .iter()
            .find(|(lo, hi, _)| (*lo..*hi).contains(&frame.rip))
        else {
            return (frames, Stop::NoInfo);
        };
        // PIE executables and libraries: the first mapping is vaddr 0.
        let bias = snap
            .maps
            .iter()
            .filter(|m| &m.2 == path)
            .map(|m| m.0)
            .min()
            .unwrap();
        let table = tables
            .entry(path.clone())
            .or_insert_with(|| build_from_file(path).unwrap());
        frames.push((path.clone(), frame.lookup_pc(bias).unwrap()));
        match step(table, bias, &frame, &mut read) {
            Ok(next) => frame = next,
            Err(stop) => return (frames, stop),
        }
    }
    panic!("no end after 64 frames: {frames:x?}");
}

fn function_names(exe: &Path, frames: &[(PathBuf, u64)]) -> Vec<String> {
    let data = std::fs::read(exe).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let syms: Vec<_> = file.symbols().filter(|s| s.size() > 0).collect();
    frames
        .iter()
        .map(|(path, pc)| {
            if path != exe {
                return format!("<{}>", path.file_name().unwrap().to_string_lossy());
            }
            let s = syms
                .iter()
                .find(|s| (s.address()..s.address() + s.size()).contains(pc));
            s.map_or_else(|| format!("?{pc:#x}"), |s| s.name().unwrap().to_string())
        })
        .collect()
}

#[test]
fn walks_through_realigned_frames_and_signal_handlers_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("w.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = dir.path().join("w");
    let out = Command::new("cc")
        .args([
            "-O2",
            "-fomit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-o",
        ])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = Command::new(&exe).arg(dir.path()).status().unwrap();
    assert!(status.success());

    let direct = load(dir.path(), 0);
    let (frames, stop) = walk(&direct);
    let names = function_names(&exe, &frames);
    let exe_names: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.starts_with('<'))
        .collect();
    assert_eq!(
        exe_names,
        ["dump", "level_a", "level_b", "realigned", "main", "_start"],
        "{names:?}"
    );
    assert_eq!(stop, Stop::End, "{names:?}");

    let signal = load(dir.path(), 1);
    let (frames, stop) = walk(&signal);
    let names = function_names(&exe, &frames);
    let exe_names: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.starts_with('<'))
        .collect();
    assert_eq!(
        exe_names,
        ["dump", "level_a", "handler", "raiser", "main", "_start"],
        "{names:?}"
    );
    // handler → libc (__restore_rt, then raise/pthread_kill) → raiser.
    let h = names.iter().position(|n| n == "handler").unwrap();
    assert!(names[h + 1].starts_with("<libc"), "{names:?}");
    assert_eq!(stop, Stop::End, "{names:?}");
}
