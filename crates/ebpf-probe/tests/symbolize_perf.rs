//! Cost of symbolization on a warm cache and size of the tables: a C++ fixture's and libc's
//! addresses, symbolized repeatedly, and the kernel table's footprint. Prints the numbers and
//! checks generous bounds (debug builds on a busy 2-core machine).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use ebpf_probe::symbolize::{Symbolizer, SymbolizerConfig, SymbolizerMetrics};

#[test]
fn warm_cache_throughput_and_table_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("hot_cpp");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hot.cpp");
    let out = Command::new("g++")
        .args(["-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("g++ installed");
    assert!(out.status.success());
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let run = u64::from_str_radix(
        line.split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches("run=0x"),
        16,
    )
    .unwrap();
    let pid = child.id();
    // every executable page of the process, every 64 bytes: the binary, libc, libstdc++, ld.so
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut ips = vec![run];
    for m in ebpf_probe::symbolize::procmaps::parse_maps(&maps) {
        if m.is_exec() && m.is_file() {
            ips.extend((m.start..m.end).step_by(64).take(2000));
        }
    }
    let mut sym = Symbolizer::new(SymbolizerConfig::default(), SymbolizerMetrics::default());
    let t = Instant::now();
    let cold = sym.symbolize_user(pid, &ips);
    let cold_time = t.elapsed();
    let named = cold.iter().filter(|f| f.name.is_some()).count();
    let rounds = 5;
    let t = Instant::now();
    for _ in 0..rounds {
        let frames = sym.symbolize_user(pid, &ips);
        assert_eq!(frames.len(), ips.len());
    }
    let per_frame = t.elapsed() / (rounds * ips.len() as u32);
    let t = Instant::now();
    let k = sym.symbolize_kernel(&[0xffff_ffff_8100_0000]);
    let kernel_load = t.elapsed();
    println!(
        "frames {} (named {named}), cold {:?}, warm {:?}/frame, kernel load {:?} ({} symbols, {} KiB), stats {:?}",
        ips.len(),
        cold_time,
        per_frame,
        kernel_load,
        sym.stats().kernel_symbols,
        sym.kernel_symbols().table().heap_bytes() / 1024,
        sym.stats()
    );
    assert_eq!(k.len(), 1);
    assert!(
        named * 2 > ips.len(),
        "most addresses in code should be named: {named}/{}",
        ips.len()
    );
    assert!(
        per_frame.as_micros() < 200,
        "warm symbolization too slow: {per_frame:?}"
    );
    let _ = child.stdin.take().unwrap().write_all(b"\n");
    let _ = child.wait();
}
