//! pprof builder round trip through the decoder, folded export, and `go tool pprof -top`
//! reading a written profile (go must be installed: CI installs golang-go).

use std::sync::Arc;

use ebpf_probe::pprof::{decode, encode_gzip, folded, is_off_cpu, ProfileBuilder};
use ebpf_probe::symbolize::{Frame, MappingInfo};

fn app_mapping() -> Arc<MappingInfo> {
    Arc::new(MappingInfo {
        start: 0x5555_0000_0000,
        limit: 0x5555_0001_0000,
        offset: 0x1000,
        file: "/usr/bin/app".into(),
        build_id: Some("0123abcd".into()),
    })
}

fn frame(address: u64, name: Option<&str>, mapping: Option<Arc<MappingInfo>>) -> Frame {
    Frame {
        address,
        name: name.map(str::to_string),
        mapping,
        source: None,
    }
}

/// Leaf-first stacks: two of main→outer→middle→hot_leaf (3 and 1 samples, same stack twice),
/// one of main→outer→cold with an unnamed frame, one with a kernel frame on top.
fn build() -> ebpf_probe::pprof::Profile {
    let m = app_mapping();
    let main = frame(0x5555_0000_1100, Some("main"), Some(m.clone()));
    let outer = frame(0x5555_0000_1200, Some("outer"), Some(m.clone()));
    let middle = frame(0x5555_0000_1300, Some("middle"), Some(m.clone()));
    let leaf = frame(0x5555_0000_1400, Some("hot_leaf"), Some(m.clone()));
    let unnamed = frame(0x5555_0000_2010, None, Some(m.clone()));
    let kernel = frame(0xffff_ffff_8100_0000, Some("do_syscall_64"), None);
    let mut b = ProfileBuilder::new(97, 1_700_000_000_000_000_000, 15_000_000_000);
    b.add_stack(
        &[leaf.clone(), middle.clone(), outer.clone(), main.clone()],
        3,
    );
    b.add_stack(&[leaf, middle, outer.clone(), main.clone()], 1);
    b.add_stack(&[unnamed, outer.clone(), main.clone()], 2);
    b.add_stack(&[kernel, outer, main], 5);
    b.add_stack(&[], 0);
    assert_eq!(b.sample_count(), 3);
    b.build()
}

#[test]
fn round_trip_through_decoder() {
    let bytes = encode_gzip(&build());
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
    let p = decode(&bytes).expect("decode");
    let period = 1_000_000_000 / 97;
    assert_eq!(p.period, period);
    assert_eq!(p.string_table[0], "");
    assert_eq!(p.str(p.sample_type[0].r#type), "cpu");
    assert_eq!(p.str(p.sample_type[0].unit), "nanoseconds");
    let pt = p.period_type.as_ref().expect("period type");
    assert_eq!((p.str(pt.r#type), p.str(pt.unit)), ("cpu", "nanoseconds"));
    assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
    assert_eq!(p.duration_nanos, 15_000_000_000);
    // one mapping with its real fields
    assert_eq!(p.mapping.len(), 1);
    let m = &p.mapping[0];
    assert_eq!(
        (m.memory_start, m.memory_limit, m.file_offset),
        (0x5555_0000_0000, 0x5555_0001_0000, 0x1000)
    );
    assert_eq!(p.str(m.filename), "/usr/bin/app");
    assert_eq!(p.str(m.build_id), "0123abcd");
    assert!(m.has_functions);
    // deduplicated strings, functions, locations
    let mut sorted = p.string_table.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        p.string_table.len(),
        "string table has duplicates"
    );
    assert_eq!(p.location.len(), 6);
    let names: Vec<_> = p.function.iter().map(|f| p.str(f.name)).collect();
    for want in [
        "main",
        "outer",
        "middle",
        "hot_leaf",
        "do_syscall_64",
        "app+0x3010",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let leaf_loc = p
        .location
        .iter()
        .find(|l| l.address == 0x5555_0000_1400)
        .expect("leaf location");
    assert_eq!(leaf_loc.mapping_id, 1);
    let kernel_loc = p
        .location
        .iter()
        .find(|l| l.address == 0xffff_ffff_8100_0000)
        .expect("kernel loc");
    assert_eq!(kernel_loc.mapping_id, 0);
    // values = count × period, merged per stack
    let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(total, 11 * period);
    let hot = p
        .sample
        .iter()
        .find(|s| p.stack_names(s).last().map(String::as_str) == Some("hot_leaf"))
        .unwrap();
    assert_eq!(hot.value, vec![4 * period]);
    assert_eq!(p.stack_names(hot), ["main", "outer", "middle", "hot_leaf"]);
}

#[test]
fn folded_export() {
    let text = folded(&build());
    assert_eq!(
        text,
        "main;outer;app+0x3010 2\nmain;outer;do_syscall_64 5\nmain;outer;middle;hot_leaf 4\n"
    );
}

#[test]
fn unnamed_frames_can_be_left_for_server_side_symbolization() {
    let m = app_mapping();
    let mut b = ProfileBuilder::new(100, 0, 0).name_unknown_frames(false);
    b.add_stack(&[frame(0x5555_0000_2010, None, Some(m))], 1);
    let p = decode(&encode_gzip(&b.build())).unwrap();
    assert!(p.function.is_empty());
    assert!(p.location[0].line.is_empty());
    assert!(!p.mapping[0].has_functions);
    assert_eq!(folded(&p), "0x555500002010 1\n");
}

/// The off-CPU profile: sample type `offcpu`/`nanoseconds`, period 1, no period type, values
/// in nanoseconds; `go tool pprof` shows it as time (`Type: offcpu`).
#[test]
#[ignore = "needs Go toolchain"]
fn off_cpu_profile_round_trips_and_go_tool_pprof_reads_it() {
    let map = app_mapping();
    let mut b = ProfileBuilder::off_cpu(1_000, 15_000_000_000);
    let leaf = frame(0x3010, Some("nanosleep"), Some(map.clone()));
    let main = frame(0x2010, Some("main"), Some(map));
    b.add_stack(&[leaf.clone(), main.clone()], 1_250_000_000);
    b.add_stack(&[leaf, main], 250_000_000);
    let p = decode(&encode_gzip(&b.build())).unwrap();
    assert!(is_off_cpu(&p));
    assert_eq!(p.str(p.sample_type[0].r#type), "offcpu");
    assert_eq!(p.str(p.sample_type[0].unit), "nanoseconds");
    assert_eq!(p.period, 1);
    assert!(p.period_type.is_none());
    assert_eq!(folded(&p), "main;nanosleep 1500000000\n");
    assert!(!is_off_cpu(&build()));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offcpu.pb.gz");
    std::fs::write(&path, encode_gzip(&p)).unwrap();
    let out = std::process::Command::new("go")
        .args(["tool", "pprof", "-top", "-symbolize=none"])
        .arg(&path)
        .env("HOME", dir.path())
        .env("PPROF_TMPDIR", dir.path())
        .output()
        .expect("`go` must be installed (golang-go)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Type: offcpu"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.trim_end().ends_with("nanosleep"))
        .unwrap();
    assert!(line.trim_start().starts_with("1.50s"), "{line}");
}

#[test]
fn decoder_rejects_garbage() {
    assert!(decode(&[0x1f, 0x8b, 0, 1, 2]).is_err());
    assert!(decode(&[0xff, 0xff, 0xff]).is_err());
}

#[test]
#[ignore = "needs Go toolchain"]
fn go_tool_pprof_reads_profile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpu.pb.gz");
    std::fs::write(&path, encode_gzip(&build())).unwrap();
    let out = std::process::Command::new("go")
        .args(["tool", "pprof", "-top", "-symbolize=none"])
        .arg(&path)
        .env("HOME", dir.path())
        .env("PPROF_TMPDIR", dir.path())
        .output()
        .expect("`go` must be installed (golang-go) to check the profile with go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "go tool pprof failed: {stderr}");
    for want in ["hot_leaf", "do_syscall_64", "app+0x3010", "Type: cpu"] {
        assert!(
            stdout.contains(want) || stderr.contains(want),
            "{want} not in:\n{stdout}\n{stderr}"
        );
    }
    // flat of hot_leaf: 4 samples × 10.309ms ≈ 41.24ms
    let line = stdout
        .lines()
        .find(|l| l.trim_end().ends_with("hot_leaf"))
        .unwrap();
    assert!(line.trim_start().starts_with("41.24ms"), "{line}");
}

/// A live process's stack (sampled ip + real return addresses printed by the fixture),
/// symbolized and written as pprof: `go tool pprof -traces` shows the chain in order with the
/// binary's mapping and build ID.
#[test]
#[ignore = "needs Go toolchain"]
fn symbolized_live_stack_through_go_tool_pprof() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    use ebpf_probe::symbolize::{Symbolizer, SymbolizerConfig, SymbolizerMetrics};

    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("hot");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hot.c");
    let out = Command::new("gcc")
        .args(["-O1", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = |key: &str| {
        let v = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=0x")))
            .unwrap_or_else(|| panic!("{key} not printed: {line}"));
        u64::from_str_radix(v, 16).unwrap()
    };
    let user = [
        addr("hot_leaf") + 2,
        addr("ret_middle"),
        addr("ret_outer"),
        addr("ret_main"),
    ];
    let mut sym = Symbolizer::new(SymbolizerConfig::default(), SymbolizerMetrics::default());
    let frames = sym.symbolize(child.id(), &user, &[]);
    let _ = child.stdin.take().unwrap().write_all(b"\n");
    let _ = child.wait();

    let mut b = ProfileBuilder::new(100, 0, 10_000_000_000);
    b.add_stack(&frames, 7);
    let profile = b.build();
    let build_id = frames[0]
        .mapping
        .as_ref()
        .unwrap()
        .build_id
        .clone()
        .expect("build id");
    let path = dir.path().join("cpu.pb.gz");
    std::fs::write(&path, encode_gzip(&profile)).unwrap();
    assert_eq!(
        folded(&decode(&std::fs::read(&path).unwrap()).unwrap()),
        "main;outer;middle;hot_leaf 7\n"
    );

    let out = Command::new("go")
        .args(["tool", "pprof", "-traces", "-symbolize=none"])
        .arg(&path)
        .env("HOME", dir.path())
        .env("PPROF_TMPDIR", dir.path())
        .output()
        .expect("`go` must be installed (golang-go)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("Build ID: {build_id}")), "{text}");
    let order: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            ["hot_leaf", "middle", "outer", "main"]
                .iter()
                .any(|n| l.ends_with(n))
        })
        .collect();
    assert_eq!(order.len(), 4, "{text}");
    assert!(
        order[0].ends_with("hot_leaf") && order[3].ends_with("main"),
        "{text}"
    );
    assert!(order[0].starts_with("70ms"), "7 samples at 100 Hz: {text}");
}

#[test]
fn empty_stacks_are_kept_as_unknown() {
    let mut b = ProfileBuilder::new(100, 0, 0);
    b.add_stack(&[], 2);
    b.add_stack(&[], 3);
    b.add_stack(&[frame(0x10, None, None)], 1);
    let p = decode(&encode_gzip(&b.build())).unwrap();
    assert_eq!(folded(&p), "[unknown] 6\n");
    assert_eq!(
        p.sample.iter().map(|s| s.value[0]).sum::<i64>(),
        6 * 10_000_000
    );
}

/// A user stack whose in-kernel walk stopped early ends with a marker frame naming the reason
/// (outermost, after the frames it has); a complete walk and the frame-pointer path add none.
#[test]
fn incomplete_walks_end_with_a_marker_frame() {
    use ebpf_probe::probe::{StackSample, WalkEnd};
    use ebpf_probe::symbolize::{Symbolizer, SymbolizerConfig, SymbolizerMetrics};
    let mut sym = Symbolizer::new(SymbolizerConfig::default(), SymbolizerMetrics::default());
    let pid = std::process::id();
    let here = incomplete_walks_end_with_a_marker_frame as *const () as usize as u64;
    let sample = |end| StackSample {
        pid,
        user: vec![here, here],
        kernel: Vec::new(),
        count: 1,
        user_end: end,
    };
    for end in WalkEnd::ALL {
        let frames = sym.symbolize_sample(&sample(Some(end)));
        match end.marker() {
            None => assert_eq!(frames.len(), 2, "{end:?}"),
            Some(marker) => {
                assert_eq!(frames.len(), 3, "{end:?}");
                assert_eq!(frames[2].display_name(), marker);
                assert_ne!(frames[0].display_name(), marker);
            }
        }
    }
    assert_eq!(sym.symbolize_sample(&sample(None)).len(), 2);
    assert_eq!(
        sym.symbolize_sample(&sample(Some(WalkEnd::NoInfo)))[2].display_name(),
        "[truncated: no unwind info]"
    );
}

/// Two Python frames of one function at two lines, under a native frame.
fn python_profile() -> ebpf_probe::pprof::Profile {
    let py = |line: i64, name: &str| Frame {
        address: 0x7f00_0000_1000,
        name: Some(name.to_string()),
        mapping: None,
        source: Some(ebpf_probe::symbolize::SourcePos {
            file: "/srv/app/walker.py".into(),
            line,
        }),
    };
    let native = frame(0x3010, Some("_PyEval_Vector"), Some(app_mapping()));
    let mut b = ProfileBuilder::new(100, 1_700_000_000_000_000_000, 10_000_000_000);
    b.add_stack(&[py(12, "Walker.step"), native.clone()], 3);
    b.add_stack(&[py(14, "Walker.step"), native], 1);
    b.build()
}

#[test]
fn python_frames_carry_file_and_line() {
    let p = decode(&encode_gzip(&python_profile())).unwrap();
    let step: Vec<_> = p
        .function
        .iter()
        .filter(|f| p.str(f.name) == "Walker.step")
        .collect();
    assert_eq!(step.len(), 1, "one function for both lines");
    assert_eq!(p.str(step[0].filename), "/srv/app/walker.py");
    let mut lines: Vec<i64> = p
        .location
        .iter()
        .flat_map(|l| &l.line)
        .filter(|ln| ln.function_id == step[0].id)
        .map(|ln| ln.line)
        .collect();
    lines.sort();
    assert_eq!(lines, vec![12, 14], "a location per line");
}

#[test]
#[ignore = "needs Go toolchain"]
fn go_tool_pprof_shows_python_files_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.pb.gz");
    std::fs::write(&path, encode_gzip(&python_profile())).unwrap();
    let out = std::process::Command::new("go")
        .args(["tool", "pprof", "-top", "-lines", "-symbolize=none"])
        .arg(&path)
        .env("HOME", dir.path())
        .env("PPROF_TMPDIR", dir.path())
        .output()
        .expect("`go` must be installed (golang-go) to check the profile with go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "Walker.step /srv/app/walker.py:12",
        "Walker.step /srv/app/walker.py:14",
    ] {
        assert!(stdout.contains(want), "{want} not in:\n{stdout}");
    }
}

/// Sample labels (`comm`, `pid`): one stack with different labels stays apart, the same labels
/// aggregate, no labels is `add_stack`; the labels survive encoding.
#[test]
fn labeled_samples_stay_apart_and_round_trip() {
    let m = app_mapping();
    let main = frame(0x5555_0000_1100, Some("main"), Some(m.clone()));
    let leaf = frame(0x5555_0000_1400, Some("hot_leaf"), Some(m));
    let stack = [leaf, main];
    let mut b = ProfileBuilder::new(100, 0, 0);
    b.add_stack_labeled(&stack, 2, &[("comm", "a"), ("pid", "1")]);
    b.add_stack_labeled(&stack, 3, &[("comm", "a"), ("pid", "1")]);
    b.add_stack_labeled(&stack, 4, &[("comm", "b"), ("pid", "2")]);
    b.add_stack_labeled(&stack, 1, &[]);
    b.add_stack(&stack, 1);
    b.add_stack_labeled(&stack, 0, &[("comm", "c")]);
    assert_eq!(b.sample_count(), 3);
    let p = decode(&encode_gzip(&b.build())).expect("decode");
    let mut got: Vec<(Vec<(String, String)>, i64)> = p
        .sample
        .iter()
        .map(|s| {
            let labels = s
                .label
                .iter()
                .map(|l| (p.str(l.key).to_string(), p.str(l.str).to_string()))
                .collect();
            (labels, s.value[0] / p.period)
        })
        .collect();
    got.sort();
    let kv = |c: &str, pid: &str| {
        vec![
            ("comm".to_string(), c.to_string()),
            ("pid".to_string(), pid.to_string()),
        ]
    };
    assert_eq!(got, vec![(vec![], 2), (kv("a", "1"), 5), (kv("b", "2"), 4)]);
    assert_eq!(folded(&p), "main;hot_leaf 11\n");
}
