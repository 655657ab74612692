//! Complete native stacks without frame pointers (issue 14), judged on real programs as root.
//!
//! Each test builds a workload of `crates/ebpf-probe/tests/fixtures/unwind` with `-O2
//! -fomit-frame-pointer` (or a Rust release build without frame pointers), or runs a stock
//! Debian binary (`/usr/bin/python3`, `xz`), and records it at the same time with `rill profile
//! --pid` (pprof) and with the oracle `perf record --call-graph dwarf -F 499 -p PID`. For rill it
//! asserts: ≥ 99% of samples reach the bottom (`_start`, `main`, `__libc_start_call_main`, or a
//! thread start), the known chain is in order, and no sample shows a function under a caller
//! outside its allowed set. The qsort test also checks that rill's inclusive share of each chain
//! function is within 5 points of perf's. Every test prints one `UNWIND` line per source (grep
//! them) and writes both sources' folded stacks to `test-output/unwind/`.
//!
//! They fail with the frame-pointer walk and pass once the `.eh_frame` unwinder lands. Ignored
//! by a plain `cargo test` (root, eBPF, perf): `cargo test -p rill --release --test
//! unwind_stacks -- --ignored --test-threads=1`.

#[path = "support/unwind.rs"]
mod unwind;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use unwind::{Rule, Spec, Stack, Verdict, Workload};

/// Seconds each source records.
const SECS: u64 = 6;

/// One workload at a time: each one wants a whole CPU.
static SERIAL: Mutex<()> = Mutex::new(());

const MAIN: Rule = Rule {
    callee: "main",
    callers: &["[lib]"],
    through: &["_start"],
};

struct Run {
    rill: Verdict,
    perf: Verdict,
    rill_stacks: Vec<Stack>,
    perf_stacks: Vec<Stack>,
}

/// Records `w` with rill and perf over the same `SECS` seconds, judges both, prints and saves.
fn record(spec: &Spec, w: &Workload, dir: &Path) -> Run {
    let data = dir.join(format!("{}.perf.data", spec.name));
    let perf = unwind::perf_start(w.pid, SECS, &data);
    let pb = dir.join(format!("{}.pb.gz", spec.name));
    let (rill_stacks, stderr) = unwind::rill_stacks(w.pid, SECS, &pb, &w.exe);
    let perf_stacks = unwind::perf_stacks(perf, &data, &w.exe);
    let rill = unwind::judge(&rill_stacks, spec);
    let perf = unwind::judge(&perf_stacks, spec);
    let out = unwind::output_dir();
    unwind::save_folded(
        &rill_stacks,
        &out.join(format!("{}.rill.folded", spec.name)),
    );
    unwind::save_folded(
        &perf_stacks,
        &out.join(format!("{}.perf.folded", spec.name)),
    );
    let _ = std::fs::remove_file(&data);
    println!("{}", rill.line("rill", spec));
    println!("{}", perf.line("perf", spec));
    if !rill.wrong_examples.is_empty() {
        println!(
            "UNWIND {} rill wrong callers: {:?}",
            spec.name, rill.wrong_examples
        );
    }
    if !perf.wrong_examples.is_empty() {
        println!(
            "UNWIND {} perf wrong callers: {:?}",
            spec.name, perf.wrong_examples
        );
    }
    if stderr.contains("lost") {
        println!("UNWIND {} rill: {}", spec.name, stderr.trim());
    }
    Run {
        rill,
        perf,
        rill_stacks,
        perf_stacks,
    }
}

fn assert_rill(spec: &Spec, run: &Run) {
    let f = unwind::failures(&run.rill, spec);
    assert!(
        f.is_empty(),
        "rill's stacks of {} (perf: {}):\n  {}",
        spec.name,
        run.perf.line("perf", spec),
        f.join("\n  ")
    );
}

/// Builds fixture `src`, runs it for a little longer than the recording, records and asserts.
fn fixture_test(spec: &Spec, src: &str, extra: &[&str]) -> Run {
    unwind::require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = unwind::tmpdir(spec.name);
    let bin = unwind::build(&dir, src, spec.name, extra);
    let mut cmd = Command::new(&bin);
    cmd.arg((SECS + 4).to_string());
    let w = unwind::start_ready(cmd);
    let run = record(spec, &w, &dir);
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

fn qsort_spec() -> Spec {
    Spec {
        name: "unwind_qsort",
        chains: vec![vec![
            "main",
            "sort_outer",
            "sort_inner",
            "compare_keys",
            "key_hash",
        ]],
        min_leaf_share: 30.0,
        rules: vec![
            MAIN,
            Rule {
                callee: "sort_outer",
                callers: &["main"],
                through: &[],
            },
            Rule {
                callee: "sort_inner",
                callers: &["sort_outer"],
                through: &[],
            },
            Rule {
                callee: "compare_keys",
                callers: &["[lib]"],
                through: &["sort_inner"],
            },
            Rule {
                callee: "key_hash",
                callers: &["compare_keys", "sort_inner"],
                through: &[],
            },
        ],
        exact_depth: None,
    }
}

#[test]
#[ignore = "needs root and eBPF, perf"]
fn unwind_qsort_callback_through_libc() {
    let spec = qsort_spec();
    let run = fixture_test(&spec, "qsort.c", &[]);
    // The oracle itself must see the chain, or the comparison means nothing.
    let perf_failures = unwind::failures(&run.perf, &spec);
    assert!(perf_failures.is_empty(), "perf's stacks: {perf_failures:?}");
    let names = [
        "main",
        "sort_outer",
        "sort_inner",
        "compare_keys",
        "key_hash",
    ];
    let r = unwind::inclusive(&run.rill_stacks, &names);
    let p = unwind::inclusive(&run.perf_stacks, &names);
    let mut far = Vec::new();
    for n in names {
        let line = format!("{n}: rill {:.1}% perf {:.1}%", r[n], p[n]);
        println!("UNWIND unwind_qsort inclusive {line}");
        if (r[n] - p[n]).abs() > 5.0 {
            far.push(line);
        }
    }
    assert_rill(&spec, &run);
    assert!(
        far.is_empty(),
        "inclusive shares more than 5 points from perf's: {far:?}"
    );
}

#[test]
#[ignore = "needs root and eBPF, perf"]
fn unwind_recursion_300_deep() {
    let mut chain = vec!["main", "rec_start"];
    chain.extend(std::iter::repeat_n("recurse", 300));
    chain.push("rec_spin");
    let spec = Spec {
        name: "unwind_recursion",
        chains: vec![chain],
        min_leaf_share: 60.0,
        rules: vec![
            MAIN,
            Rule {
                callee: "rec_start",
                callers: &["main"],
                through: &[],
            },
            Rule {
                callee: "recurse",
                callers: &["recurse", "rec_start"],
                through: &[],
            },
            Rule {
                callee: "rec_spin",
                callers: &["recurse"],
                through: &[],
            },
        ],
        exact_depth: Some(("recurse", 300)),
    };
    let run = fixture_test(&spec, "recursion.c", &[]);
    assert_rill(&spec, &run);
}

#[test]
#[ignore = "needs root and eBPF, perf"]
fn unwind_through_signal_frame() {
    let spec = Spec {
        name: "unwind_signal",
        chains: vec![
            vec!["main", "sig_loop", "on_timer", "handler_work"],
            vec!["main", "sig_loop", "interrupted_work"],
        ],
        min_leaf_share: 15.0,
        rules: vec![
            MAIN,
            Rule {
                callee: "sig_loop",
                callers: &["main"],
                through: &[],
            },
            Rule {
                callee: "interrupted_work",
                callers: &["sig_loop"],
                through: &[],
            },
            // on_timer is entered from the kernel's signal frame (`__restore_rt`, libc): the
            // function under it is whatever the timer interrupted.
            Rule {
                callee: "on_timer",
                callers: &["[lib]"],
                through: &["interrupted_work", "sig_loop", "main"],
            },
            Rule {
                callee: "handler_work",
                callers: &["on_timer"],
                through: &[],
            },
        ],
        exact_depth: None,
    };
    let run = fixture_test(&spec, "signal.c", &[]);
    assert_rill(&spec, &run);
}

#[test]
#[ignore = "needs root and eBPF, perf"]
fn unwind_second_thread() {
    let spec = Spec {
        name: "unwind_thread",
        chains: vec![
            vec!["main", "main_outer", "main_leaf"],
            vec!["worker_entry", "worker_mid", "worker_leaf"],
        ],
        min_leaf_share: 25.0,
        rules: vec![
            MAIN,
            Rule {
                callee: "main_outer",
                callers: &["main"],
                through: &[],
            },
            Rule {
                callee: "main_leaf",
                callers: &["main_outer"],
                through: &[],
            },
            Rule {
                callee: "worker_entry",
                callers: &["[lib]"],
                through: &["<root>"],
            },
            Rule {
                callee: "worker_mid",
                callers: &["worker_entry"],
                through: &[],
            },
            Rule {
                callee: "worker_leaf",
                callers: &["worker_mid"],
                through: &[],
            },
        ],
        exact_depth: None,
    };
    let run = fixture_test(&spec, "thread.c", &["-pthread"]);
    assert_rill(&spec, &run);
}

#[test]
#[ignore = "needs root and eBPF, perf"]
fn unwind_cxx_exceptions() {
    let spec = Spec {
        name: "unwind_cxx",
        chains: vec![
            vec!["main", "run_exceptions", "throw_level1", "throw_level2"],
            vec!["main", "run_exceptions", "catch_work"],
        ],
        min_leaf_share: 5.0,
        rules: vec![
            MAIN,
            // `run_exceptions` over itself: samples while libgcc installs the catch context
            // (the landing pad lives in `run_exceptions.cold`); perf shows them too.
            Rule {
                callee: "run_exceptions",
                callers: &["main", "run_exceptions"],
                through: &[],
            },
            Rule {
                callee: "throw_level1",
                callers: &["run_exceptions"],
                through: &[],
            },
            Rule {
                callee: "throw_level2",
                callers: &["throw_level1"],
                through: &[],
            },
            Rule {
                callee: "throw_work",
                callers: &["throw_level2"],
                through: &[],
            },
            Rule {
                callee: "catch_work",
                callers: &["run_exceptions"],
                through: &[],
            },
        ],
        exact_depth: None,
    };
    let run = fixture_test(&spec, "exceptions.cpp", &[]);
    assert_rill(&spec, &run);
}

#[test]
#[ignore = "needs root and eBPF, perf"]
fn unwind_rust_release() {
    let spec = Spec {
        name: "unwind_rust",
        chains: vec![vec![
            "main",
            "unwind_rust::main",
            "unwind_rust::stage_outer",
            "unwind_rust::stage_inner",
            "unwind_rust::leaf_mix",
        ]],
        min_leaf_share: 50.0,
        rules: vec![
            MAIN,
            Rule {
                callee: "unwind_rust::main",
                callers: &["std::*", "core::*"],
                through: &[],
            },
            Rule {
                callee: "unwind_rust::stage_outer",
                callers: &["unwind_rust::main"],
                through: &[],
            },
            Rule {
                callee: "unwind_rust::stage_inner",
                callers: &["unwind_rust::stage_outer"],
                through: &[],
            },
            Rule {
                callee: "unwind_rust::leaf_mix",
                callers: &["unwind_rust::stage_inner"],
                through: &[],
            },
        ],
        exact_depth: None,
    };
    let run = fixture_test(&spec, "unwind_rust.rs", &[]);
    assert_rill(&spec, &run);
}

/// A stock Debian binary, started by `cmd`.
fn stock_test(spec: &Spec, cmd: Command, prints_ready: bool) -> Run {
    unwind::require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = unwind::tmpdir(spec.name);
    let w = if prints_ready {
        unwind::start_ready(cmd)
    } else {
        unwind::start_plain(cmd)
    };
    let run = record(spec, &w, &dir);
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

#[test]
#[ignore = "needs root and eBPF, perf"]
fn unwind_debian_python3() {
    let spec = Spec {
        name: "unwind_python3",
        chains: vec![vec![
            "__libc_start_call_main",
            "Py_BytesMain",
            "Py_RunMain",
            "PyRun_SimpleStringFlags",
            "PyEval_EvalCode",
            "_PyEval_EvalFrameDefault",
        ]],
        min_leaf_share: 50.0,
        // Functions exported by python3.11 (its static ones are `python3.11+0x...`): Debian's
        // `main` tail-calls Py_BytesMain, so libc calls it directly.
        rules: vec![
            Rule {
                callee: "Py_BytesMain",
                callers: &["[lib]"],
                through: &["_start", "python3.11+0x*"],
            },
            Rule {
                callee: "Py_RunMain",
                callers: &["Py_BytesMain"],
                through: &[],
            },
            Rule {
                callee: "PyRun_SimpleStringFlags",
                callers: &["Py_RunMain", "python3.11+0x*"],
                through: &[],
            },
            Rule {
                callee: "PyRun_StringFlags",
                callers: &["PyRun_SimpleStringFlags"],
                through: &[],
            },
            Rule {
                callee: "PyEval_EvalCode",
                callers: &["python3.11+0x*"],
                through: &[],
            },
        ],
        exact_depth: None,
    };
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args([
        "-c",
        &format!(
            "import os, time\n\
             print('ready', os.getpid(), flush=True)\n\
             end = time.monotonic() + {}\n\
             x = 1\n\
             while time.monotonic() < end:\n    \
                 for i in range(10000):\n        \
                     x = (x * 31 + i) % 1000003\n",
            SECS + 4
        ),
    ]);
    let run = stock_test(&spec, cmd, true);
    assert_rill(&spec, &run);
}

#[test]
#[ignore = "needs root and eBPF, perf"]
fn unwind_debian_xz() {
    let spec = Spec {
        name: "unwind_xz",
        chains: vec![vec!["__libc_start_call_main", "lzma_code"]],
        min_leaf_share: 50.0,
        rules: vec![Rule {
            callee: "lzma_code",
            callers: &["xz+0x*"],
            through: &[],
        }],
        exact_depth: None,
    };
    unwind::require("xz");
    let mut cmd = Command::new("xz");
    cmd.args(["-9", "-T1", "-c"])
        .stdin(std::fs::File::open("/dev/urandom").unwrap())
        .stdout(Stdio::null());
    let run = stock_test(&spec, cmd, false);
    assert_rill(&spec, &run);
}

/// The judge itself, without root: a correct perf-script stack passes, a stack cut short, one
/// with a function under the wrong caller and one whose callback sits on the wrong function
/// under the library run are each caught.
#[test]
fn unwind_judge_catches_bad_stacks() {
    let text = "\
\x20 123 \n\
\t 128e key_hash (/tmp/x/unwind_qsort)\n\
\t 12b2 compare_keys (/tmp/x/unwind_qsort)\n\
\t 3fd35 msort_with_tmp.part.0 (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
\t 3fd35 __GI___qsort_r (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
\t 131b sort_inner (/tmp/x/unwind_qsort)\n\
\t 1348 sort_outer (/tmp/x/unwind_qsort)\n\
\t 113b main (/tmp/x/unwind_qsort)\n\
\t 27249 __libc_start_call_main (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
\t 27304 __libc_start_main@@GLIBC_2.34 (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
\t ffffffff81000000 asm_sysvec_apic_timer_interrupt ([kernel.kallsyms])\n\
\t 11a0 _start (/tmp/x/unwind_qsort)\n\
\n\
1 \n\
\t 128e key_hash (/tmp/x/unwind_qsort)\n\
\t 12b2 compare_keys (/tmp/x/unwind_qsort)\n\
\t 3fd35 [unknown] (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
\n\
1 \n\
\t 128e key_hash (/tmp/x/unwind_qsort)\n\
\t 1348 sort_outer (/tmp/x/unwind_qsort)\n\
\t 113b main (/tmp/x/unwind_qsort)\n\
\t 27249 __libc_start_call_main (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
\t 11a0 _start (/tmp/x/unwind_qsort)\n\
\n\
1 \n\
\t 12b2 compare_keys (/tmp/x/unwind_qsort)\n\
\t 3fd35 __GI___qsort_r (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
\t 1348 sort_outer (/tmp/x/unwind_qsort)\n\
\t 113b main (/tmp/x/unwind_qsort)\n\
\t 27249 __libc_start_call_main (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
\t 11a0 _start (/tmp/x/unwind_qsort)\n";
    let stacks = unwind::parse_perf_script(text, "unwind_qsort");
    assert_eq!(stacks.len(), 4);
    let names: Vec<&str> = stacks[0].frames.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "_start",
            "__libc_start_main",
            "__libc_start_call_main",
            "main",
            "sort_outer",
            "sort_inner",
            "__GI___qsort_r",
            "msort_with_tmp",
            "compare_keys",
            "key_hash"
        ]
    );
    assert_eq!(stacks[1].frames[0].name, "libc.so.6+0x3fd35");
    let spec = qsort_spec();
    let one = unwind::judge(&stacks[..1], &spec);
    assert_eq!(unwind::failures(&one, &spec), ["only 1 samples"]);
    let all = unwind::judge(&stacks, &spec);
    assert_eq!((all.samples, all.bottom, all.wrong), (4, 3, 2), "{all:?}");
    assert_eq!(all.chain, vec![(3, 1)]);
    assert_eq!(
        all.wrong_examples,
        [
            "key_hash <- sort_outer",
            "compare_keys <- __GI___qsort_r <- ... <- sort_outer"
        ]
    );
    let f = unwind::failures(&all, &spec);
    assert_eq!(f.len(), 4, "{f:?}");
}
