//! Unwind-table generation time for real files (`cargo bench -p ebpf-probe --bench
//! unwind_table`): glibc, libpython3.11 and a ≥100 MB library, median of several runs, with the
//! rows and bytes of each table. Files missing on this machine are skipped; extra paths can be
//! given as arguments.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ebpf_probe::unwind::cfi::DebugSearch;
use ebpf_probe::unwind::table::{build_from_bytes, build_from_file_with};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn python311() -> Option<PathBuf> {
    let out = std::process::Command::new("pyenv")
        .args(["prefix", "3.11"])
        .output()
        .ok()?;
    let prefix = String::from_utf8(out.stdout).ok()?;
    Some(Path::new(prefix.trim()).join("lib/libpython3.11.so.1.0"))
}

fn main() {
    let mut files: Vec<(PathBuf, usize)> =
        vec![(PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"), 11)];
    if let Some(p) = python311() {
        files.push((p, 11));
    }
    for big in [
        "/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1",
        "/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1",
    ] {
        files.push((PathBuf::from(big), 5));
    }
    // `cargo bench` passes `--bench`; anything else is a path.
    files.extend(
        std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .map(|a| (PathBuf::from(a), 5)),
    );
    println!(
        "{:<48} {:>10} {:>9} {:>9} {:>10} {:>10} {:>11} {:>11}",
        "file", "file MB", "FDEs", "CFI rows", "rows", "KiB", "build (ms)", "+read (ms)"
    );
    for (path, runs) in files {
        let Ok(data) = std::fs::read(&path) else {
            println!("{:<48} (missing)", path.display());
            continue;
        };
        let mut parse = Vec::new();
        let mut whole = Vec::new();
        let mut last = None;
        for _ in 0..runs {
            let t = Instant::now();
            let table = build_from_bytes(&data);
            parse.push(t.elapsed());
            let t = Instant::now();
            let from_file = build_from_file_with(&path, &DebugSearch::none());
            whole.push(t.elapsed());
            assert_eq!(table.as_ref().ok(), from_file.as_ref().ok());
            last = Some(table);
        }
        match last {
            Some(Ok(t)) => println!(
                "{:<48} {:>10.1} {:>9} {:>9} {:>10} {:>10.1} {:>11.2} {:>11.2}   unsupported {:?}, rbp undefined {}",
                path.display(),
                data.len() as f64 / 1e6,
                t.stats.fdes,
                t.stats.cfi_rows,
                t.rows.len(),
                t.size_bytes() as f64 / 1024.0,
                median(parse).as_secs_f64() * 1e3,
                median(whole).as_secs_f64() * 1e3,
                t.stats.unsupported,
                t.stats.rbp_undefined,
            ),
            Some(Err(e)) => println!("{:<48} error: {e}", path.display()),
            None => {}
        }
    }
}
