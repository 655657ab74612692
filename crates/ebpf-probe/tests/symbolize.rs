//! Symbolization of live processes built by the test from `tests/fixtures`: C (PIE, non-PIE,
//! static, stripped with a debug file found by build ID or by debuglink, MiniDebugInfo), a
//! shared library, C++ and Rust names in every demangle mode, stripped Go binaries (the vdso, perf
//! maps, kallsyms, the caches and process lifetimes are in `symbolize_process.rs`).
//!
//! The fixtures print the runtime addresses of their functions and wait on stdin, so the
//! symbolizer reads their real `/proc/PID/maps` and files. gcc, g++, objcopy, strip, xz,
//! rustc and go must be installed: a missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/ready.rs"]
mod ready;

use ebpf_probe::symbolize::elf::{hex, load_elf, read_build_id, SymbolSource};
use ebpf_probe::symbolize::{Demangle, SymbolizerConfig};
#[path = "support/live_fixture.rs"]
mod live_fixture;
use live_fixture::*;

#[test]
fn c_pie_binary() {
    let dir = tempfile::tempdir().unwrap();
    let bin = gcc(
        dir.path(),
        "hot_pie",
        &["-fPIE", "-pie", fixture("hot.c").to_str().unwrap()],
    );
    let live = Live::start(&bin);
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    let frames = expect_names(&mut sym, &live, C_CHAIN);
    let m = frames[0].mapping.as_ref().unwrap();
    assert_eq!(m.file, bin.to_str().unwrap());
    assert!(m.start <= live.addr("hot_leaf") && live.addr("hot_leaf") < m.limit);
    assert!(
        m.start > 0x10_0000_0000,
        "PIE should load high, got {:#x}",
        m.start
    );
    let want_id = read_build_id(&bin).unwrap().map(|b| hex(&b));
    assert!(want_id.is_some(), "gcc should emit a build ID");
    assert_eq!(m.build_id, want_id);
    let elf = load_elf(Path::new("/"), bin.to_str().unwrap(), &[]).unwrap();
    assert!(elf.is_dyn);
    assert!(elf.sources.contains(&SymbolSource::Symtab));
}

#[test]
fn c_non_pie_binary() {
    let dir = tempfile::tempdir().unwrap();
    let bin = gcc(
        dir.path(),
        "hot_nopie",
        &["-fno-pie", "-no-pie", fixture("hot.c").to_str().unwrap()],
    );
    let live = Live::start(&bin);
    assert!(
        live.addr("hot_leaf") < 0x1000_0000,
        "non-PIE loads at its link address"
    );
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    expect_names(&mut sym, &live, C_CHAIN);
    let elf = load_elf(Path::new("/"), bin.to_str().unwrap(), &[]).unwrap();
    assert!(!elf.is_dyn);
}

#[test]
fn c_static_binary() {
    let dir = tempfile::tempdir().unwrap();
    let bin = gcc(
        dir.path(),
        "hot_static",
        &["-static", fixture("hot.c").to_str().unwrap()],
    );
    let live = Live::start(&bin);
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    expect_names(&mut sym, &live, C_CHAIN);
}

#[test]
fn stripped_without_any_debug_info_keeps_module_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let bin = gcc(
        dir.path(),
        "hot_bare",
        &[fixture("hot.c").to_str().unwrap()],
    );
    sh("strip --strip-all hot_bare", dir.path());
    let live = Live::start(&bin);
    let (mut sym, _) = symbolizer(SymbolizerConfig {
        debug_dirs: vec![],
        ..Default::default()
    });
    let a = live.addr("hot_leaf");
    let frames = sym.symbolize_user(live.pid(), &[a, 0x10]);
    let m = frames[0].mapping.as_ref().expect("mapping kept");
    assert_eq!(frames[0].name, None);
    assert_eq!(
        frames[0].display_name(),
        format!("hot_bare+0x{:x}", a - m.start + m.offset)
    );
    // an address in no mapping is kept too
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1].display_name(), "[unknown]");
}

#[test]
fn stripped_with_debug_file_by_build_id() {
    let dir = tempfile::tempdir().unwrap();
    let bin = gcc(
        dir.path(),
        "hot_bid",
        &["-Wl,--build-id", fixture("hot.c").to_str().unwrap()],
    );
    let id = hex(&read_build_id(&bin).unwrap().expect("build id"));
    let debug_root = dir.path().join("debug");
    let sub = debug_root.join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&sub).unwrap();
    sh(
        &format!(
            "objcopy --only-keep-debug hot_bid {}/{}.debug && strip --strip-all hot_bid",
            sub.display(),
            &id[2..]
        ),
        dir.path(),
    );
    let live = Live::start(&bin);
    // without the debug dir: nothing
    let (mut bare, _) = symbolizer(SymbolizerConfig {
        debug_dirs: vec![],
        ..Default::default()
    });
    assert_eq!(
        bare.symbolize_user(live.pid(), &[live.addr("hot_leaf")])[0].name,
        None
    );
    let (mut sym, _) = symbolizer(SymbolizerConfig {
        debug_dirs: vec![debug_root.clone()],
        ..Default::default()
    });
    expect_names(&mut sym, &live, C_CHAIN);
    let elf = load_elf(Path::new("/"), bin.to_str().unwrap(), &[debug_root]).unwrap();
    assert!(
        matches!(elf.sources.last(), Some(SymbolSource::BuildIdDebugFile(_))),
        "{:?}",
        elf.sources
    );
}

#[test]
fn stripped_with_debuglink() {
    let dir = tempfile::tempdir().unwrap();
    // next to the binary
    let a = gcc(dir.path(), "hot_dl", &[fixture("hot.c").to_str().unwrap()]);
    sh(
        "objcopy --only-keep-debug hot_dl hot_dl.debug && strip --strip-all hot_dl && objcopy --add-gnu-debuglink=hot_dl.debug hot_dl",
        dir.path(),
    );
    // in .debug/
    let b = gcc(dir.path(), "hot_dl2", &[fixture("hot.c").to_str().unwrap()]);
    sh(
        "mkdir -p .debug && objcopy --only-keep-debug hot_dl2 hot_dl2.dbg && strip --strip-all hot_dl2 && objcopy --add-gnu-debuglink=hot_dl2.dbg hot_dl2 && mv hot_dl2.dbg .debug/",
        dir.path(),
    );
    for bin in [a, b] {
        let live = Live::start(&bin);
        let (mut sym, _) = symbolizer(SymbolizerConfig {
            debug_dirs: vec![],
            ..Default::default()
        });
        expect_names(&mut sym, &live, C_CHAIN);
        let elf = load_elf(Path::new("/"), bin.to_str().unwrap(), &[]).unwrap();
        assert!(
            matches!(elf.sources.last(), Some(SymbolSource::DebugLink(_))),
            "{:?}",
            elf.sources
        );
    }
    // a debug file with the wrong CRC is refused
    let c = gcc(dir.path(), "hot_dl3", &[fixture("hot.c").to_str().unwrap()]);
    sh(
        "objcopy --only-keep-debug hot_dl3 hot_dl3.debug && strip --strip-all hot_dl3 && objcopy --add-gnu-debuglink=hot_dl3.debug hot_dl3 && printf x >> hot_dl3.debug",
        dir.path(),
    );
    let elf = load_elf(Path::new("/"), c.to_str().unwrap(), &[]).unwrap();
    assert!(!elf
        .sources
        .iter()
        .any(|s| matches!(s, SymbolSource::DebugLink(_))));
}

#[test]
fn stripped_with_minidebuginfo() {
    let dir = tempfile::tempdir().unwrap();
    let bin = gcc(
        dir.path(),
        "hot_mini",
        &[fixture("hot.c").to_str().unwrap()],
    );
    sh(
        "cp hot_mini mini && strip --strip-debug mini && xz -k mini && strip --strip-all hot_mini \
         && objcopy --add-section .gnu_debugdata=mini.xz hot_mini",
        dir.path(),
    );
    let live = Live::start(&bin);
    let (mut sym, _) = symbolizer(SymbolizerConfig {
        debug_dirs: vec![],
        ..Default::default()
    });
    expect_names(&mut sym, &live, C_CHAIN);
    let elf = load_elf(Path::new("/"), bin.to_str().unwrap(), &[]).unwrap();
    assert!(
        elf.sources.contains(&SymbolSource::MiniDebugInfo),
        "{:?}",
        elf.sources
    );
}

#[test]
fn shared_library() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    gcc(
        dir.path(),
        "libhot.so",
        &["-shared", "-fPIC", fixture("hotlib.c").to_str().unwrap()],
    );
    let bin = gcc(
        dir.path(),
        "uselib",
        &[
            fixture("uselib.c").to_str().unwrap(),
            "-L",
            &d,
            "-lhot",
            &format!("-Wl,-rpath,{d}"),
        ],
    );
    let live = Live::start(&bin);
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    let frames = expect_names(
        &mut sym,
        &live,
        &[("lib_leaf", "lib_leaf"), ("lib_hidden", "lib_hidden")],
    );
    assert!(frames[0]
        .mapping
        .as_ref()
        .unwrap()
        .file
        .ends_with("/libhot.so"));
    // dynsym alone (stripped library) still names the exported function
    let dir2 = tempfile::tempdir().unwrap();
    let lib2 = gcc(
        dir2.path(),
        "libhot2.so",
        &["-shared", "-fPIC", fixture("hotlib.c").to_str().unwrap()],
    );
    sh("strip --strip-all libhot2.so", dir2.path());
    let elf = load_elf(Path::new("/"), lib2.to_str().unwrap(), &[]).unwrap();
    assert_eq!(elf.sources, vec![SymbolSource::Dynsym]);
    assert!(elf.table.address_of("lib_leaf").is_some());
    assert!(elf.table.address_of("lib_hidden").is_none());
}

#[test]
fn cpp_names_in_every_demangle_mode() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("hot_cpp");
    run(Command::new("g++")
        .args(["-O1", "-o"])
        .arg(&bin)
        .arg(fixture("hot.cpp")));
    let live = Live::start(&bin);
    for (mode, run_name, area) in [
        (
            Demangle::None,
            "_ZN6shapes6WorkerIiE3runEi",
            "_ZN6shapes4areaEii",
        ),
        (Demangle::Simplified, "shapes::Worker::run", "shapes::area"),
        (
            Demangle::Templates,
            "shapes::Worker<int>::run",
            "shapes::area",
        ),
        (
            Demangle::Full,
            "shapes::Worker<int>::run(int)",
            "shapes::area(int, int)",
        ),
    ] {
        let (mut sym, _) = symbolizer(SymbolizerConfig {
            demangle: mode,
            ..Default::default()
        });
        expect_names(&mut sym, &live, &[("run", run_name), ("area", area)]);
    }
}

#[test]
fn rust_names_demangled() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("hot_rs");
    run(Command::new("rustc")
        .args(["-O", "-o"]) // legacy mangling is the default
        .arg(&bin)
        .arg(fixture("hot.rs")));
    let live = Live::start(&bin);
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    expect_names(&mut sym, &live, &[("hot_leaf", "hot::inner::hot_leaf")]);
    let (mut full, _) = symbolizer(SymbolizerConfig {
        demangle: Demangle::Full,
        ..Default::default()
    });
    let f = full.symbolize_user(live.pid(), &[live.addr("hot_leaf")]);
    let n = f[0].name.as_deref().unwrap();
    assert!(
        n.starts_with("hot::inner::hot_leaf::h") && n.len() == "hot::inner::hot_leaf::h".len() + 16,
        "{n}"
    );
    let (mut none, _) = symbolizer(SymbolizerConfig {
        demangle: Demangle::None,
        ..Default::default()
    });
    let f = none.symbolize_user(live.pid(), &[live.addr("hot_leaf")]);
    assert!(f[0]
        .name
        .as_deref()
        .unwrap()
        .starts_with("_ZN3hot5inner8hot_leaf17h"));
}

#[test]
fn rust_v0_names_demangled() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("hot_rs_v0");
    run(Command::new("rustc")
        .args(["-O", "-C", "symbol-mangling-version=v0", "-o"])
        .arg(&bin)
        .arg(fixture("hot.rs")));
    let live = Live::start(&bin);
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    expect_names(&mut sym, &live, &[("hot_leaf", "hot::inner::hot_leaf")]);
}

fn go_build(dir: &Path, out: &str, extra: &[&str]) -> PathBuf {
    go_build_source(dir, "hot.go", out, extra, "-s -w")
}

fn go_build_source(dir: &Path, source: &str, out: &str, extra: &[&str], ldflags: &str) -> PathBuf {
    let bin = dir.join(out);
    std::fs::copy(fixture(source), dir.join("main.go")).unwrap();
    let go = if Path::new("/usr/lib/go-1.19/bin/go").exists() {
        "/usr/lib/go-1.19/bin/go"
    } else {
        "go"
    };
    run(Command::new(go)
        .arg("build")
        .args(extra)
        .arg(format!("-ldflags={ldflags}"))
        .arg("-o")
        .arg(&bin)
        .arg("main.go")
        .current_dir(dir)
        .env("GO111MODULE", "off")
        // shared build cache: the standard library is compiled once, not per test
        .env(
            "GOCACHE",
            std::env::temp_dir().join("rill-ebpf-probe-test-gocache"),
        )
        .env("GOPATH", dir.join("gopath")));
    bin
}

const GO_CHAIN: &[(&str, &str)] = &[
    ("hot_leaf", "main.hotLeaf"),
    ("middle", "main.middle"),
    ("main", "main.main"),
];

#[test]
#[ignore = "needs Go toolchain"]
fn go_stripped_binary_symbolizes_from_pclntab() {
    let dir = tempfile::tempdir().unwrap();
    let bin = go_build(dir.path(), "hot_go", &[]);
    let elf = load_elf(Path::new("/"), bin.to_str().unwrap(), &[]).unwrap();
    assert_eq!(
        elf.sources,
        vec![SymbolSource::GoPclntab],
        "stripped Go binary must have only pclntab"
    );
    assert!(
        elf.table.len() > 1000,
        "pclntab has the runtime's functions too: {}",
        elf.table.len()
    );
    let live = Live::start(&bin);
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    expect_names(&mut sym, &live, GO_CHAIN);
}

#[test]
#[ignore = "needs Go toolchain"]
fn go_stripped_pie_binary() {
    let dir = tempfile::tempdir().unwrap();
    let bin = go_build(dir.path(), "hot_go_pie", &["-buildmode=pie"]);
    let live = Live::start(&bin);
    assert!(
        live.addr("main") > 0x10_0000_0000,
        "PIE Go binary should load high: {:#x}",
        live.addr("main")
    );
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    expect_names(&mut sym, &live, GO_CHAIN);
}

#[test]
#[ignore = "needs Go toolchain"]
fn go_cgo_pie_externally_linked() {
    // The external linker merges the pclntab into .data.rel.ro: found by its header.
    let dir = tempfile::tempdir().unwrap();
    let bin = go_build_source(
        dir.path(),
        "hot_cgo.go",
        "hot_cgo",
        &["-buildmode=pie"],
        "-s -w -linkmode=external",
    );
    let elf = load_elf(Path::new("/"), bin.to_str().unwrap(), &[]).unwrap();
    assert!(
        elf.sources.contains(&SymbolSource::GoPclntab),
        "{:?}",
        elf.sources
    );
    let live = Live::start(&bin);
    let (mut sym, _) = symbolizer(SymbolizerConfig::default());
    expect_names(&mut sym, &live, GO_CHAIN);
}
