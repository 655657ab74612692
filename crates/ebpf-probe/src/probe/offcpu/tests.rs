//! Unit tests of the off-CPU user half: the mirrors of `bpf/offcpu.h`, the threshold's
//! conversion and scaling, and the record layout read by user space.

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
        ("OC_RECORDED", OC_RECORDED),
        ("OC_COUNTED", OC_COUNTED),
        ("OC_START_FULL", OC_START_FULL),
        ("OC_OVERWRITTEN", OC_OVERWRITTEN),
        ("OC_STACK_LOST", OC_STACK_LOST),
        ("OC_STALE", OC_STALE),
        ("OC_NOT_PROFILED", OC_NOT_PROFILED),
        ("OC_COUNTS_FULL", OC_COUNTS_FULL),
        ("OC_LOST_NS", OC_LOST_NS),
        ("OC_DROPPED_NS", OC_DROPPED_NS),
        ("OC_USER_STACK_ERROR", OC_USER_STACK_ERROR),
        ("OC_KERNEL_STACK_ERROR", OC_KERNEL_STACK_ERROR),
        ("OC_NUM_COUNTERS", OC_NUM_COUNTERS),
    ] {
        assert_eq!(define(name), value as u64, "{name}");
    }
    // Every OC_ counter the C side defines fits the map read here.
    for line in C_SOURCE.lines() {
        if let Some(name) = line
            .strip_prefix("#define OC_")
            .and_then(|r| r.split_whitespace().next())
        {
            if name != "NUM_COUNTERS" {
                assert!(
                    define(&format!("OC_{name}")) < OC_NUM_COUNTERS as u64,
                    "OC_{name}"
                );
            }
        }
    }
}

#[test]
fn record_layout() {
    // struct offcpu_record: ts, start_time, tgid, _pad, then struct sample_key; read as six
    // u64 (Record) whose last three are the key.
    let body = C_SOURCE
        .split("struct offcpu_record {")
        .nth(1)
        .and_then(|r| r.split("};").next())
        .unwrap();
    let fields: Vec<&str> = body
        .lines()
        .map(|l| l.split("//").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        fields,
        [
            "__u64 ts;",
            "__u64 start_time;",
            "__u32 tgid;",
            "__u32 _pad;",
            "struct sample_key key;"
        ]
    );
    assert_eq!(std::mem::size_of::<SampleKey>(), 24);
    let key = SampleKey {
        pid: 7,
        user_stack: -1,
        kernel_stack: 12,
        user_store: STORE_USTACKS,
        leaf_caller: 0xabc,
    };
    let record: Record = [
        1,
        2,
        7,
        u64::from(key.pid) | (u64::from(key.user_stack as u32) << 32),
        u64::from(key.kernel_stack as u32) | (u64::from(key.user_store) << 32),
        key.leaf_caller,
    ];
    assert_eq!(record_key(&record), key);
    let mut used = HashSet::new();
    store_keys(&key, &mut used);
    assert_eq!(
        used,
        HashSet::from([StoreKey::Walked(0xabc), StoreKey::Stack(12)])
    );
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
