//! Unit tests of the off-CPU user half: the mirrors of `bpf/offcpu.h`, the threshold's
//! conversion and scaling, record decoding and the kprobe symbol lookup.

use super::*;

const C_SOURCE: &str = include_str!("../../../bpf/offcpu.h");

fn define(name: &str) -> u64 {
    C_SOURCE
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("#define ")?;
            let mut w = rest.split_whitespace();
            (w.next()? == name).then(|| w.next())?
        })
        .and_then(|v| match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        })
        .unwrap_or_else(|| panic!("#define {name} not found in offcpu.h"))
}

#[test]
fn constants_match_offcpu_h() {
    for (name, value) in [
        ("EVENT_OFFCPU_SAMPLE", EVENT_OFFCPU_SAMPLE as u64),
        ("OC_RECORDED", OC_RECORDED as u64),
        ("OC_COUNTED", OC_COUNTED as u64),
        ("OC_RECOVERED", OC_RECOVERED as u64),
        ("OC_START_FULL", OC_START_FULL as u64),
        ("OC_OVERWRITTEN", OC_OVERWRITTEN as u64),
        ("OC_STALE", OC_STALE as u64),
        ("OC_NOT_PROFILED", OC_NOT_PROFILED as u64),
        ("OC_COUNTS_FULL", OC_COUNTS_FULL as u64),
        ("OC_SEND_LOST", OC_SEND_LOST as u64),
        ("OC_LOST_NS", OC_LOST_NS as u64),
        ("OC_DROPPED_NS", OC_DROPPED_NS as u64),
        ("OC_USER_STACK_ERROR", OC_USER_STACK_ERROR as u64),
        ("OC_KERNEL_STACK_ERROR", OC_KERNEL_STACK_ERROR as u64),
        ("OC_NUM_COUNTERS", OC_NUM_COUNTERS as u64),
    ] {
        assert_eq!(define(name), value, "{name}");
    }
    // Every OC_ counter the C side defines fits the map read here.
    for line in C_SOURCE.lines() {
        if let Some(name) = line
            .strip_prefix("#define OC_")
            .and_then(|r| r.split_whitespace().next())
        {
            assert!(define(&format!("OC_{name}")) < OC_NUM_COUNTERS as u64 + 1);
        }
    }
    // The record kind must not collide with the sampler's kinds (1..=6 in profile.bpf.c).
    let sampler = include_str!("../../../bpf/profile.bpf.c");
    assert!(!sampler.contains(&format!("EVENT_UNWOUND_SAMPLE {EVENT_OFFCPU_SAMPLE}")));
}

#[test]
fn offcpu_sample_layout() {
    // Field order and sizes as written in the header; offsets as the C ABI lays them out.
    let body = C_SOURCE
        .split("struct offcpu_sample {")
        .nth(1)
        .and_then(|r| r.split("};").next())
        .unwrap();
    let mut offset = 0usize;
    let mut offsets = Vec::new();
    for line in body.lines() {
        let decl = line.split("//").next().unwrap_or("").trim();
        let Some(decl) = decl.strip_suffix(';') else {
            continue;
        };
        let (ty, field) = decl.split_once(' ').unwrap();
        let size = match ty {
            "__u8" => 1,
            "__u16" => 2,
            "__u32" => 4,
            "__u64" => 8,
            other => panic!("type {other}"),
        };
        let (field, n) = match field.split_once('[') {
            Some((f, len)) => (f, define(len.trim_end_matches(']').trim()) as usize),
            None => (field, 1),
        };
        offset = offset.next_multiple_of(size);
        offsets.push((field.to_string(), offset));
        offset += size * n;
    }
    let at = |f: &str| offsets.iter().find(|(n, _)| n == f).unwrap().1;
    assert_eq!(at("user_len"), SAMPLE_USER_LEN_OFFSET);
    assert_eq!(at("kernel_len"), SAMPLE_KERNEL_LEN_OFFSET);
    assert_eq!(at("reason"), SAMPLE_REASON_OFFSET);
    assert_eq!(at("value"), SAMPLE_VALUE_OFFSET);
    assert_eq!(at("leaf_caller"), SAMPLE_LEAF_CALLER_OFFSET);
    assert_eq!(at("user"), SAMPLE_USER_OFFSET);
    assert_eq!(at("kernel"), SAMPLE_KERNEL_OFFSET);
    assert_eq!(offset.next_multiple_of(8), SAMPLE_SIZE);
    // struct offcpu_start is read as three u64 by `sleeping`.
    assert!(C_SOURCE.contains("struct offcpu_start {\n\t__u64 ts;"));
}

#[test]
fn threshold_conversion_and_estimates() {
    assert!(OffCpuThreshold::from_probability(0.0).unwrap().is_off());
    assert_eq!(
        OffCpuThreshold::from_probability(1.0).unwrap(),
        OffCpuThreshold::ALL
    );
    assert_eq!(OffCpuThreshold::ALL.kernel_bound(), 1 << 32);
    for bad in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
        let err = OffCpuThreshold::from_probability(bad).unwrap_err();
        assert!(err.to_string().contains("off_cpu_threshold"), "{err}");
    }
    let tenth = OffCpuThreshold::from_probability(0.1).unwrap();
    assert!((tenth.probability() - 0.1).abs() < 1e-9);
    // 1 s recorded at 10 % estimates 10 s; at 100 %, itself; off, nothing.
    let est = tenth.estimate(1_000_000_000);
    assert!((est as f64 - 1e10).abs() < 10.0, "{est}");
    assert_eq!(OffCpuThreshold::ALL.estimate(12345), 12345);
    assert_eq!(OffCpuThreshold::OFF.estimate(12345), 0);
    // The smallest probability still records something and scales without overflow.
    let tiny = OffCpuThreshold::from_probability(1e-12).unwrap();
    assert_eq!(tiny.kernel_bound(), 1);
    assert_eq!(tiny.estimate(u64::MAX), u64::MAX);
}

fn record(reason: u8, user: &[u64], kernel: &[u64], nanos: u64, leaf_caller: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(EVENT_OFFCPU_SAMPLE.to_ne_bytes());
    b.extend(42u32.to_ne_bytes());
    b.extend((user.len() as u32).to_ne_bytes());
    b.extend((kernel.len() as u32).to_ne_bytes());
    b.extend([reason, 0, 0, 0, 0, 0, 0, 0]);
    b.extend(nanos.to_ne_bytes());
    b.extend(leaf_caller.to_ne_bytes());
    let mut frames = vec![0u64; MAX_USER_FRAMES + MAX_STACK_DEPTH];
    frames[..user.len()].copy_from_slice(user);
    frames[MAX_USER_FRAMES..MAX_USER_FRAMES + kernel.len()].copy_from_slice(kernel);
    for f in frames {
        b.extend(f.to_ne_bytes());
    }
    assert_eq!(b.len(), SAMPLE_SIZE);
    b
}

#[test]
fn records_decode() {
    let walked = record(WalkEnd::Complete as u8, &[0x10, 0x20], &[0xffff_ffff_8100_0000], 5_000, 0);
    assert_eq!(
        parse_record(&walked),
        Some(RawOffCpu {
            pid: 42,
            user: vec![0x10, 0x20],
            kernel: vec![0xffff_ffff_8100_0000],
            user_end: Some(WalkEnd::Complete),
            nanos: 5_000,
        })
    );
    // The frame-pointer walk's record carries the recovered caller of a frameless leaf.
    let fp = record(0, &[0x10, 0x30], &[], 7, 0x20);
    let r = parse_record(&fp).unwrap();
    assert_eq!((r.user, r.user_end, r.nanos), (vec![0x10, 0x20, 0x30], None, 7));
    assert_eq!(parse_record(&fp[..64]), None, "truncated");
    let mut other = fp.clone();
    other[..4].copy_from_slice(&6u32.to_ne_bytes());
    assert_eq!(parse_record(&other), None, "another kind");
}

#[test]
fn finish_task_switch_symbol_lookup() {
    let renamed = "ffffffff813ae230 t __pfx_finish_task_switch.isra.0\n\
                   ffffffff813ae240 t finish_task_switch.isra.0\n";
    assert_eq!(symbol_in(renamed).as_deref(), Some("finish_task_switch.isra.0"));
    let plain = "ffffffff8100 t finish_task_switch.part.0\nffffffff8200 T finish_task_switch\n";
    assert_eq!(symbol_in(plain).as_deref(), Some("finish_task_switch"));
    assert_eq!(symbol_in("ffffffff8100 t schedule\n"), None);
}
