//! Unwind tables of small ELF files built here with `cc`: one per row kind (hand-written CFI in
//! assembly for the odd rules; C for the PLT, DRAP, signal and frame-pointer cases), section-less
//! images, the vDSO, `.debug_frame` and separate debug files found by build ID and debuglink.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test]: a failed unwrap fails the test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ebpf_probe::unwind::abi::*;
use ebpf_probe::unwind::cfi::DebugSearch;
use ebpf_probe::unwind::table::{
    build_from_bytes, build_from_file, build_from_file_with, TableSource, UnwindTable,
};
use object::{Object, ObjectSection, ObjectSymbol};

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cc ARGS -o DIR/OUT SRC` with the source written to DIR.
fn cc(dir: &Path, src_name: &str, src: &str, out: &str, args: &[&str]) -> PathBuf {
    let src_path = dir.join(src_name);
    std::fs::write(&src_path, src).unwrap();
    let out_path = dir.join(out);
    run(Command::new("cc")
        .args(args)
        .arg("-o")
        .arg(&out_path)
        .arg(&src_path));
    out_path
}

fn symbol(path: &Path, name: &str) -> u64 {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file
        .symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.name() == Ok(name));
    sym.unwrap_or_else(|| panic!("no symbol {name}")).address()
}

fn section_range(path: &Path, name: &str) -> Option<(u64, u64)> {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let s = file.section_by_name(name)?;
    Some((s.address(), s.address() + s.size()))
}

fn rule(t: &UnwindTable, pc: u64) -> (u8, i8, i16) {
    let r = t.lookup(pc).unwrap_or_else(|| panic!("no row at {pc:#x}"));
    (r.kind, r.rbp_offset, r.cfa_offset)
}

fn assert_sorted_and_merged(t: &UnwindTable) {
    for w in t.rows.windows(2) {
        assert!(w[0].pc < w[1].pc, "unsorted {w:?}");
        let same = (w[0].kind, w[0].rbp_offset, w[0].cfa_offset)
            == (w[1].kind, w[1].rbp_offset, w[1].cfa_offset);
        assert!(!same, "unmerged {w:?}");
    }
    assert_eq!(
        t.rows.last().map(|r| r.kind),
        Some(UNW_NO_INFO),
        "ends with NO_INFO"
    );
}

const ODD_CFI: &str = r#"
	.text
	.globl f_rsp
	.type f_rsp,@function
f_rsp:
	.cfi_startproc
	push %rbp
	.cfi_def_cfa_offset 16
	.cfi_offset %rbp, -16
	mov %rsp,%rbp
	.cfi_def_cfa_register %rbp
	nop
	pop %rbp
	.cfi_def_cfa %rsp, 8
	ret
	.cfi_endproc
	.size f_rsp, .-f_rsp
	.p2align 5
	.globl f_odd
	.type f_odd,@function
f_odd:
	.cfi_startproc
	nop
	.cfi_escape 0x0f,0x03,0x77,0x08,0x06
	nop
	.cfi_escape 0x0f,0x05,0x77,0x08,0x06,0x23,0x08
	nop
	.cfi_def_cfa %r12, 8
	nop
	.cfi_def_cfa %rsp, 40008
	nop
	.cfi_def_cfa %rsp, 8
	.cfi_offset 16, -16
	nop
	.cfi_offset 16, -8
	.cfi_register %rbp, %rbx
	nop
	.cfi_offset %rbp, -1600
	nop
	.cfi_offset %rbp, -24
	.cfi_escape 0x0f,0x0b,0x77,0x08,0x80,0x00,0x3f,0x1a,0x3a,0x2a,0x33,0x24,0x22
	nop
	ret
	.cfi_endproc
	.size f_odd, .-f_odd
	.p2align 4
	.globl f_end
	.type f_end,@function
f_end:
	.cfi_startproc
	.cfi_undefined 16
	nop
	ret
	.cfi_endproc
	.size f_end, .-f_end
	.globl f_sig
	.type f_sig,@function
f_sig:
	.cfi_startproc
	.cfi_signal_frame
	nop
	ret
	.cfi_endproc
	.size f_sig, .-f_sig
	.p2align 4
	.globl f_tramp
	.type f_tramp,@function
f_tramp:
	.cfi_startproc
	mov $15,%rax
	syscall
	.cfi_endproc
	.size f_tramp, .-f_tramp
"#;

#[test]
fn every_rule_of_hand_written_cfi() {
    let dir = tempfile::tempdir().unwrap();
    let so = cc(
        dir.path(),
        "odd.S",
        ODD_CFI,
        "odd.so",
        &["-shared", "-nostdlib"],
    );
    let t = build_from_file_with(&so, &DebugSearch::none()).unwrap();
    assert_sorted_and_merged(&t);
    let f = symbol(&so, "f_rsp");
    assert_eq!(rule(&t, f), (UNW_CFA_RSP, 0, 8));
    assert_eq!(rule(&t, f + 1), (UNW_CFA_RSP, -2, 16));
    assert_eq!(rule(&t, f + 4), (UNW_CFA_RBP, -2, 16));
    assert_eq!(rule(&t, f + 5), (UNW_CFA_RBP, -2, 16));
    assert_eq!(rule(&t, f + 6), (UNW_CFA_RSP, -2, 8));
    // The 25 bytes of padding after f_rsp (7 bytes long) have no FDE.
    assert_eq!(rule(&t, f + 7).0, UNW_NO_INFO);
    assert_eq!(rule(&t, f + 31).0, UNW_NO_INFO);

    let o = symbol(&so, "f_odd");
    assert_eq!(rule(&t, o), (UNW_CFA_RSP, 0, 8));
    assert_eq!(rule(&t, o + 1), (UNW_CFA_DEREF_RSP, 0, 8));
    assert_eq!(rule(&t, o + 2).0, UNW_UNSUPPORTED); // deref; plus_uconst
    assert_eq!(rule(&t, o + 3).0, UNW_UNSUPPORTED); // CFA = r12 + 8
    assert_eq!(rule(&t, o + 4).0, UNW_UNSUPPORTED); // offset 40008 > i16
    assert_eq!(rule(&t, o + 5).0, UNW_UNSUPPORTED); // RA at CFA-16
    assert_eq!(rule(&t, o + 6), (UNW_CFA_RSP, UNW_RBP_UNDEFINED, 8)); // rbp in rbx
    assert_eq!(rule(&t, o + 7), (UNW_CFA_RSP, UNW_RBP_UNDEFINED, 8)); // CFA-1600
    assert_eq!(rule(&t, o + 8), (UNW_CFA_PLT, 10, 8)); // .plt.sec pattern (lit10)
    let u = t.stats.unsupported;
    assert_eq!(
        (
            u.cfa_expression,
            u.cfa_register,
            u.cfa_offset_range,
            u.return_address
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(t.stats.rbp_undefined, 2);

    let e = symbol(&so, "f_end");
    assert_eq!(rule(&t, e).0, UNW_END);
    assert_eq!(rule(&t, e + 1).0, UNW_END);
    assert_eq!(t.stats.end_rows, 1);
    let s = symbol(&so, "f_sig");
    assert_eq!(rule(&t, s).0, UNW_SIGNAL);
    let tr = symbol(&so, "f_tramp");
    assert_eq!(
        rule(&t, tr).0,
        UNW_SIGNAL,
        "rt_sigreturn bytes without augmentation S"
    );
    assert_eq!(t.stats.signal_frames, 2);
    assert_eq!(rule(&t, tr + 9).0, UNW_NO_INFO);
    assert!(t.lookup(f - 1).is_none(), "nothing before the first FDE");
    assert_eq!(t.stats.source, TableSource::Cfi);
}

const C_PROGRAM: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <string.h>
__attribute__((noinline)) void use(char *p) { __asm__ volatile("" :: "r"(p) : "memory"); }
__attribute__((noinline)) int drap(int n) {
    _Alignas(64) char buf[64];
    char vla[n];
    memset(buf, n, sizeof buf);
    memset(vla, n, n);
    use(buf);
    use(vla);
    return buf[3] + vla[1];
}
static volatile int hits;
static void handler(int sig) { hits += sig; }
int main(int argc, char **argv) {
    signal(SIGUSR1, handler);
    raise(SIGUSR1);
    puts(argv[0]);
    return drap(argc + 16) + hits;
}
"#;

#[test]
fn plt_and_drap_from_gcc() {
    let dir = tempfile::tempdir().unwrap();
    let exe = cc(
        dir.path(),
        "p.c",
        C_PROGRAM,
        "p",
        &["-O2", "-fomit-frame-pointer"],
    );
    let t = build_from_file_with(&exe, &DebugSearch::none()).unwrap();
    assert_sorted_and_merged(&t);
    let (plt, plt_end) = section_range(&exe, ".plt").unwrap();
    // PLT0 pushes twice (CFA rsp+16, rsp+24); every entry after it uses the expression.
    assert_eq!(rule(&t, plt), (UNW_CFA_RSP, 0, 16));
    for pc in plt + 16..plt_end {
        assert_eq!(rule(&t, pc), (UNW_CFA_PLT, 11, 8), "pc {pc:#x}");
    }
    // DRAP: CFA = r10 in the prologue (unsupported), then *(rbp-8).
    let d = symbol(&exe, "drap");
    let rows: Vec<_> = t
        .rows
        .iter()
        .filter(|r| u64::from(r.pc) >= d && u64::from(r.pc) < d + 0x80)
        .collect();
    assert!(rows.iter().any(|r| r.kind == UNW_UNSUPPORTED), "{rows:?}");
    let deref = rows
        .iter()
        .find(|r| r.kind == UNW_CFA_DEREF_RBP)
        .expect("DEREF_RBP row");
    assert_eq!(deref.cfa_offset, -8);
    // The caller's rbp is saved at *(rbp + 0): relative to rbp, not the CFA, which the row cannot
    // encode.
    assert_eq!(deref.rbp_offset, UNW_RBP_UNDEFINED);
    assert!(t.stats.unsupported.cfa_register >= 1);
}

#[test]
fn no_cfi_is_frame_pointer_and_go_gaps_are_frame_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let src = "void _start(void) { for (;;) __asm__ volatile(\"\"); }\n";
    let args = [
        "-O2",
        "-static",
        "-nostdlib",
        "-fno-asynchronous-unwind-tables",
        "-fno-unwind-tables",
        "-Wl,--no-ld-generated-unwind-info,--build-id=none",
    ];
    let exe = cc(dir.path(), "n.c", src, "n", &args);
    let t = build_from_file_with(&exe, &DebugSearch::none()).unwrap();
    assert_eq!(t.stats.source, TableSource::FramePointer);
    let start = symbol(&exe, "_start");
    assert_eq!(rule(&t, start).0, UNW_FRAME_POINTER);
    assert!(t
        .rows
        .iter()
        .all(|r| r.kind == UNW_FRAME_POINTER || r.kind == UNW_NO_INFO));
    assert_sorted_and_merged(&t);

    // A "Go" binary: has .gopclntab; its C parts have CFI, the rest is frame-pointer code.
    let go_src = r#"
__attribute__((section(".gopclntab"), used)) static const char pcln[16] = "go";
__attribute__((noinline)) int leaf(int x) { return x * 3; }
__asm__(".text\n.globl gofunc\n.type gofunc,@function\ngofunc: push %rbp; mov %rsp,%rbp; pop %rbp; ret\n.size gofunc,.-gofunc\n");
void gofunc(void);
void _start(void) { for (;;) { leaf(1); gofunc(); } }
"#;
    let exe = cc(
        dir.path(),
        "g.c",
        go_src,
        "g",
        &["-O2", "-static", "-nostdlib"],
    );
    let t = build_from_file_with(&exe, &DebugSearch::none()).unwrap();
    assert!(t.stats.go);
    assert_eq!(rule(&t, symbol(&exe, "leaf")).0, UNW_CFA_RSP);
    assert_eq!(rule(&t, symbol(&exe, "gofunc")).0, UNW_FRAME_POINTER);
}

#[test]
fn section_less_image_uses_pt_gnu_eh_frame() {
    let dir = tempfile::tempdir().unwrap();
    let so = cc(
        dir.path(),
        "odd.S",
        ODD_CFI,
        "odd.so",
        &["-shared", "-nostdlib"],
    );
    let mut bytes = std::fs::read(&so).unwrap();
    let full = build_from_bytes(&bytes).unwrap();
    // e_shoff (0x28, 8 bytes), e_shnum (0x3c), e_shstrndx (0x3e): no section headers.
    bytes[0x28..0x30].fill(0);
    bytes[0x3c..0x40].fill(0);
    assert!(object::File::parse(&*bytes)
        .unwrap()
        .section_by_name(".eh_frame")
        .is_none());
    let bare = build_from_bytes(&bytes).unwrap();
    assert_eq!(bare.rows, full.rows);
    assert!(full.rows.len() > 10);
}

#[test]
fn vdso_from_memory() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let Some(line) = maps.lines().find(|l| l.ends_with("[vdso]")) else {
        return; // no vDSO (vdso=0): nothing to read
    };
    let range = line.split_whitespace().next().unwrap();
    let (lo, hi) = range.split_once('-').unwrap();
    let lo = u64::from_str_radix(lo, 16).unwrap();
    let hi = u64::from_str_radix(hi, 16).unwrap();
    use std::io::{Read, Seek, SeekFrom};
    let mut mem = std::fs::File::open("/proc/self/mem").unwrap();
    mem.seek(SeekFrom::Start(lo)).unwrap();
    let mut image = vec![0; (hi - lo) as usize];
    mem.read_exact(&mut image).unwrap();
    let t = build_from_bytes(&image).unwrap();
    assert_sorted_and_merged(&t);
    assert!(t.stats.fdes >= 2, "{:?}", t.stats);
    let file = object::File::parse(&*image).unwrap();
    let gettime = file
        .dynamic_symbols()
        .find(|s| s.name() == Ok("__vdso_clock_gettime"))
        .unwrap();
    let kind = rule(&t, gettime.address()).0;
    assert!(kind == UNW_CFA_RSP || kind == UNW_CFA_RBP, "kind {kind}");
}

const DEBUG_SRC: &str = r#"
__attribute__((noinline)) int work(int x) { volatile int a[40]; a[x & 31] = x; return a[3] + x; }
void _start(void) { for (;;) work(3); }
"#;

/// A binary whose only CFI is `.debug_frame` (no unwind tables), and its debug-stripped copy.
fn debug_pair(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let args = [
        "-O2",
        "-g",
        "-static",
        "-nostdlib",
        "-fno-asynchronous-unwind-tables",
        "-fno-unwind-tables",
        "-Wl,--no-ld-generated-unwind-info,--build-id",
    ];
    let exe = cc(dir, "d.c", DEBUG_SRC, "d", &args);
    let dbg = dir.join("d.debug");
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&exe)
        .arg(&dbg));
    let stripped = dir.join("bin").join("d");
    std::fs::create_dir_all(stripped.parent().unwrap()).unwrap();
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&exe)
        .arg(&stripped));
    (exe, dbg, stripped)
}

#[test]
fn debug_frame_and_separate_debug_files() {
    let dir = tempfile::tempdir().unwrap();
    let (exe, dbg, stripped) = debug_pair(dir.path());
    let work = symbol(&exe, "work");
    let own = build_from_file(&exe).unwrap();
    assert_eq!(own.stats.source, TableSource::Cfi);
    assert!(section_range(&exe, ".eh_frame").is_none());
    assert_eq!(rule(&own, work).0, UNW_CFA_RSP);
    assert!(own
        .rows
        .iter()
        .any(|r| r.kind == UNW_CFA_RSP && r.cfa_offset > 8));

    // Stripped, nothing to find: frame pointers.
    let none = build_from_file_with(&stripped, &DebugSearch::none()).unwrap();
    assert_eq!(none.stats.source, TableSource::FramePointer);

    // By build ID under ROOT/.build-id/xx/rest.debug.
    let data = std::fs::read(&exe).unwrap();
    let id = object::File::parse(&*data)
        .unwrap()
        .build_id()
        .unwrap()
        .unwrap()
        .to_vec();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let root = dir.path().join("root");
    let by_id = root
        .join(".build-id")
        .join(&hex[..2])
        .join(format!("{}.debug", &hex[2..]));
    std::fs::create_dir_all(by_id.parent().unwrap()).unwrap();
    std::fs::copy(&dbg, &by_id).unwrap();
    let search = DebugSearch {
        roots: vec![root.clone()],
        beside_binary: false,
    };
    let found = build_from_file_with(&stripped, &search).unwrap();
    assert_eq!(found.stats.source, TableSource::DebugFile);
    assert_eq!(found.stats.debug_file.as_deref(), Some(by_id.as_path()));
    assert_eq!(found.rows, own.rows);
    std::fs::remove_file(&by_id).unwrap();

    // By .gnu_debuglink in the binary's .debug/ directory, with its CRC checked.
    let linked = dir.path().join("bin").join("linked");
    run(Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", dbg.display()))
        .arg(&stripped)
        .arg(&linked));
    let dot_debug = dir.path().join("bin").join(".debug");
    std::fs::create_dir_all(&dot_debug).unwrap();
    std::fs::copy(&dbg, dot_debug.join("d.debug")).unwrap();
    let beside = DebugSearch {
        roots: vec![],
        beside_binary: true,
    };
    let found = build_from_file_with(&linked, &beside).unwrap();
    assert_eq!(found.stats.source, TableSource::DebugFile);
    assert_eq!(found.rows, own.rows);
    // A debug file whose CRC does not match is ignored.
    let mut corrupt = std::fs::read(&dbg).unwrap();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    std::fs::write(dot_debug.join("d.debug"), &corrupt).unwrap();
    let refused = build_from_file_with(&linked, &beside).unwrap();
    assert_eq!(refused.stats.source, TableSource::FramePointer);
    // ... and under ROOT/<dir of the binary>/ it is found again.
    let under_root = root.join(dir.path().strip_prefix("/").unwrap()).join("bin");
    std::fs::create_dir_all(&under_root).unwrap();
    std::fs::copy(&dbg, under_root.join("d.debug")).unwrap();
    let search = DebugSearch {
        roots: vec![root],
        beside_binary: true,
    };
    let found = build_from_file_with(&linked, &search).unwrap();
    assert_eq!(found.stats.source, TableSource::DebugFile);
}

#[test]
fn addresses_at_4_gib_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = "int f(int x) { return x + 1; }\n";
    let so = cc(
        dir.path(),
        "h.c",
        src,
        "h.so",
        &[
            "-O2",
            "-shared",
            "-nostdlib",
            "-Wl,-Ttext-segment=0x100000000",
        ],
    );
    let err = build_from_file_with(&so, &DebugSearch::none()).unwrap_err();
    assert!(err.to_string().contains("32-bit"), "{err}");
}
