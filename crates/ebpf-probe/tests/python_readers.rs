//! The Python readers against real interpreters: Debian's /usr/bin/python3 (3.11, interpreter in
//! the executable) and pyenv's 3.6–3.13 (shared libpython). Each test spawns
//! `tests/python/workload.py`, stops it, walks every thread's Python stack from `_PyRuntime` with
//! `python::stack` and asserts the known chains (qualified names in order, files, and every
//! frame's line equal to the line the script marks). The line-table tests compare the decoders
//! with the interpreter's own `PyCode_Addr2Line` on every instruction of many code objects.
//!
//! They need the interpreters (a missing one FAILS) and, for the stacks, root (reading another
//! process's memory): `cargo test -p ebpf-probe --test python_readers -- --include-ignored
//! --test-threads=1`.
#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use ebpf_probe::python::linetable::line_for_offset;
use ebpf_probe::python::memory::Memory;
use ebpf_probe::python::memory::ProcMemory;
use ebpf_probe::python::offsets::{
    parse_debug_offsets, table_offsets, DEBUG_OFFSETS_LEN, LINES_310, LINES_LNOTAB, LINES_LOCATIONS,
};
use ebpf_probe::python::stack::{FrameStats, NamedFrame, ThreadStack};
use ebpf_probe::python::tsd::{getspecific, GLIBC_X86_64};
use ebpf_probe::python::{detect::OffsetsSource, PySymbolizer, PythonProcess};
use ebpf_probe::symbolize::procmaps::parse_maps;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const LINES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/lines.py");

#[path = "support/python_workload.rs"]
mod workload;
use workload::*;

/// Whether `frames` are exactly `want` (lines of threading.py frames are not asserted).
fn matches(frames: &[NamedFrame], want: &Want) -> Result<(), String> {
    let got: Vec<String> = frames
        .iter()
        .map(|f| match f {
            NamedFrame::Frame(p) => format!("{} {}:{:?}", p.qualname, p.filename, p.line),
            NamedFrame::Unknown(r) => format!("[{r}]"),
        })
        .collect();
    if frames.len() != want.len() {
        return Err(format!(
            "{} frames, want {}: {got:#?}",
            frames.len(),
            want.len()
        ));
    }
    for (i, (f, (name, file, line))) in frames.iter().zip(want).enumerate() {
        let NamedFrame::Frame(p) = f else {
            return Err(format!("frame {i} unnamed: {got:#?}"));
        };
        let line_ok = line.is_none() || p.line == *line;
        if &p.qualname != name || !p.filename.ends_with(file) || !line_ok {
            return Err(format!(
                "frame {i}: want {name} {file}:{line:?}, stack {got:#?}"
            ));
        }
    }
    Ok(())
}

/// Walks `python`'s workload until every chain is as expected (a thread may still be on its
/// way to its loop at the first stop), then checks what detection found.
fn check_stacks(python: &Path, minor: u32, library: bool) {
    let w = Workload::start(python);
    let pid = w.pid();
    let mut sym = PySymbolizer::new(Path::new("/proc"), 1024);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        w.stop();
        let mut stats = FrameStats::default();
        let stacks = sym.stacks(pid, 128, &mut stats).unwrap();
        let result = check_chains(minor, &stacks, &stats);
        if result.is_ok() {
            let p = sym.process(pid).unwrap().clone();
            check_process(&p, minor, library, &stacks);
            if p.image_is_library && minor >= 12 {
                check_tls(&w, &p, &stacks);
            }
            // Every frame again through `symbolize`, now from the cache.
            let hits = sym.cache.hits;
            for (s, named) in &stacks {
                for (raw, want) in s.frames.iter().zip(named) {
                    let again = sym.symbolize(pid, raw.code, raw.instr).unwrap();
                    assert_eq!(&NamedFrame::Frame(again), want);
                }
            }
            assert!(sym.cache.hits > hits);
            w.signal("-CONT");
            return;
        }
        let last = result.unwrap_err();
        w.signal("-CONT");
        assert!(
            Instant::now() < deadline,
            "3.{minor} ({}): {last}",
            python.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn check_chains(
    minor: u32,
    stacks: &[(ThreadStack, Vec<NamedFrame>)],
    stats: &FrameStats,
) -> Result<(), String> {
    if !stats.failed.is_empty() {
        return Err(format!("unnamed frames: {:?}", stats.failed));
    }
    if stacks.len() != 4 {
        return Err(format!("{} thread states, want 4", stacks.len()));
    }
    for (what, want) in expected(minor) {
        let errors: Vec<String> = stacks
            .iter()
            .filter_map(|(s, named)| {
                if let Some(e) = &s.error {
                    return Some(format!("walk error {e}"));
                }
                matches(named, &want).err()
            })
            .collect();
        if errors.len() == stacks.len() {
            return Err(format!("no {what} thread: {errors:?}"));
        }
    }
    Ok(())
}

fn check_process(
    p: &PythonProcess,
    minor: u32,
    library: bool,
    stacks: &[(ThreadStack, Vec<NamedFrame>)],
) {
    assert_eq!((p.version.major, p.version.minor), (3, minor), "{p:?}");
    assert_eq!(p.image_is_library, library, "{}", p.image);
    assert!(p.code_type.is_some() && p.none_struct.is_some());
    assert!(!p.eval_frame.is_empty() && p.eval_frame[0].start < p.eval_frame[0].end);
    // pyenv's 3.12 build names the eval loop's cold part in .symtab (GCC's hot/cold split).
    if library && minor == 12 {
        assert_eq!(p.eval_frame.len(), 2, "{:x?}", p.eval_frame);
    }
    let key = p.tss_key.expect("GIL-state pthread key initialized");
    assert!(key < 1024, "pthread key {key}");
    // pthread_getspecific(key) from outside: each thread's own state (pthread_t = struct
    // pthread = thread pointer with glibc on x86-64).
    let mem = ProcMemory::open(Path::new("/proc"), p.pid).unwrap();
    for (s, _) in stacks {
        let got = getspecific(&mem, &GLIBC_X86_64, s.thread_id, key).unwrap();
        assert_eq!(got, s.tstate, "key {key} of thread {:#x}", s.thread_id);
    }
    if minor >= 11 {
        for (s, _) in stacks {
            let tid = s.native_thread_id.expect("native_thread_id");
            assert!(
                Path::new(&format!("/proc/{}/task/{tid}", p.pid)).exists(),
                "native_thread_id {tid} is not a thread of {}",
                p.pid
            );
        }
    }
    // pthread_t values are addresses of distinct struct pthreads.
    let mut ids: Vec<u64> = stacks.iter().map(|(s, _)| s.thread_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), stacks.len(), "thread ids {ids:?}");
    if minor >= 13 {
        assert_eq!(p.offsets_source, OffsetsSource::DebugOffsets);
        assert_eq!(
            Some(p.offsets),
            table_offsets(13),
            "_Py_DebugOffsets differ from the table"
        );
        let mem = ProcMemory::open(Path::new("/proc"), p.pid).unwrap();
        let blob = mem.read_vec(p.runtime.unwrap(), DEBUG_OFFSETS_LEN).unwrap();
        assert!(parse_debug_offsets(&blob).is_ok());
    } else {
        assert_eq!(p.offsets_source, OffsetsSource::Table);
    }
    if p.image_is_library && minor >= 12 {
        let tls = p.tls_tstate.expect("_Py_tss_tstate in .symtab");
        assert!(tls.offset < tls.block_size, "{tls:?}");
    }
    // The GIL holder (3.6–3.11) is one of the thread states, or nobody while stopped.
    if let Some(at) = p.gil_holder {
        let mem = ProcMemory::open(Path::new("/proc"), p.pid).unwrap();
        let holder = mem.read_u64(at).unwrap();
        assert!(
            holder == 0 || stacks.iter().any(|(s, _)| s.tstate == holder),
            "gil holder {holder:#x}"
        );
    }
    let maps = parse_maps(&std::fs::read_to_string(format!("/proc/{}/maps", p.pid)).unwrap());
    assert!(maps
        .iter()
        .any(|m| m.is_exec() && m.contains(p.eval_frame[0].start)));
}

/// `_Py_tss_tstate` (3.12+) is the *attached* thread state: set in the thread holding the GIL,
/// NULL in the others. pyenv's python3.1X has no TLS of its own, so libpython's block is the
/// first of the static TLS. Stops the workload until one thread is seen holding the GIL.
fn check_tls(w: &Workload, p: &PythonProcess, stacks: &[(ThreadStack, Vec<NamedFrame>)]) {
    let tls = p.tls_tstate.unwrap();
    let mem = ProcMemory::open(Path::new("/proc"), p.pid).unwrap();
    for _ in 0..50 {
        let mut holders = 0;
        for (s, _) in stacks {
            let value = mem.read_u64(tls.first_module_address(s.thread_id)).unwrap();
            assert!(
                value == 0 || value == s.tstate,
                "_Py_tss_tstate of {:#x} = {value:#x}",
                s.thread_id
            );
            holders += usize::from(value != 0);
        }
        assert!(holders <= 1, "{holders} threads attached at once");
        if holders == 1 {
            return;
        }
        w.signal("-CONT");
        std::thread::sleep(Duration::from_millis(20));
        w.stop();
    }
    panic!("no thread ever had _Py_tss_tstate set");
}

/// Every code object of the generated source, the workload and threading.py: the decoders give
/// the line `PyCode_Addr2Line` gives, at every instruction.
fn check_lines(python: &Path, minor: u32) {
    let threading = Command::new(python)
        .args(["-c", "import threading; print(threading.__file__)"])
        .output()
        .unwrap();
    let threading = String::from_utf8(threading.stdout).unwrap();
    let out = Command::new(python)
        .arg(LINES)
        .arg(WORKLOAD)
        .arg(threading.trim())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let format = match minor {
        6..=9 => LINES_LNOTAB,
        10 => LINES_310,
        _ => LINES_LOCATIONS,
    };
    let text = String::from_utf8(out.stdout).unwrap();
    let mut checked = 0;
    for row in text.lines() {
        let mut fields = row.split(' ');
        let first: i32 = fields.next().unwrap().parse().unwrap();
        let hex = fields.next().unwrap();
        let table: Vec<u8> = if hex == "-" {
            Vec::new()
        } else {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        };
        for (i, want) in fields.enumerate() {
            let want: i32 = want.parse().unwrap();
            let got = line_for_offset(format, &table, first, 2 * i as i64)
                .unwrap()
                .unwrap_or(-1);
            assert_eq!(
                got,
                want,
                "3.{minor} offset {} of table {hex} (first line {first})",
                2 * i
            );
            checked += 1;
        }
    }
    assert!(checked > 2000, "only {checked} instructions checked");
}

macro_rules! interpreter_tests {
    ($($stacks:ident, $lines:ident, $minor:expr;)*) => {$(
        #[test]
        #[ignore = "needs root and the pyenv interpreters"]
        fn $stacks() {
            check_stacks(&pyenv_python($minor), $minor, true);
        }

        #[test]
        #[ignore = "needs the pyenv interpreters"]
        fn $lines() {
            check_lines(&pyenv_python($minor), $minor);
        }
    )*};
}

interpreter_tests! {
    stacks_pyenv_36, lines_pyenv_36, 6;
    stacks_pyenv_37, lines_pyenv_37, 7;
    stacks_pyenv_38, lines_pyenv_38, 8;
    stacks_pyenv_39, lines_pyenv_39, 9;
    stacks_pyenv_310, lines_pyenv_310, 10;
    stacks_pyenv_311, lines_pyenv_311, 11;
    stacks_pyenv_312, lines_pyenv_312, 12;
    stacks_pyenv_313, lines_pyenv_313, 13;
}

#[test]
#[ignore = "needs root and /usr/bin/python3"]
fn stacks_debian_python3() {
    let python = debian_python();
    let minor = debian_minor(&python);
    check_stacks(&python, minor, false);
}

#[test]
#[ignore = "needs /usr/bin/python3"]
fn lines_debian_python3() {
    let python = debian_python();
    check_lines(&python, debian_minor(&python));
}
