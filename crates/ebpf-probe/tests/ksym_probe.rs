//! Kernel frames named by the kernel (the probe's `ksym_resolve`, `%pS`) against
//! `/proc/kallsyms` as the oracle: for functions spread over the whole kernel text, its modules
//! and the BPF programs loaded, the resolver gives a name `/proc/kallsyms` lists at that
//! function's start, and the symbolizer that uses it never reads `/proc/kallsyms`. Needs root
//! (loads the probe): fails, never skips, without it.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failed step fails the test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use ebpf_probe::probe::{Probe, ProbeConfig, SampleSource};
use ebpf_probe::symbolize::ksym::parse_ps;
use ebpf_probe::symbolize::{Symbolizer, SymbolizerConfig, SymbolizerMetrics};

/// Text symbols of /proc/kallsyms by address: every name listed there, and whether it is a
/// module's or a BPF program's.
fn kallsyms() -> BTreeMap<u64, (BTreeSet<String>, Option<String>)> {
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let mut by_addr: BTreeMap<u64, (BTreeSet<String>, Option<String>)> = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        let addr = u64::from_str_radix(addr, 16).unwrap();
        assert_ne!(addr, 0, "the test runs as root: addresses are not hidden");
        let module = f.next().map(|m| m.trim_matches(['[', ']']).to_string());
        let entry = by_addr.entry(addr).or_default();
        entry.0.insert(name.to_string());
        entry.1 = entry.1.take().or(module);
    }
    by_addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and eBPF"]
async fn the_kernel_names_its_functions_as_kallsyms_lists_them() {
    let mut probe = Probe::load(ProbeConfig::default())
        .unwrap_or_else(|e| panic!("loading the probe needs root and eBPF: {e}"));
    // The probe's own programs are in kallsyms once loaded.
    let symbols = kallsyms();
    let starts: Vec<u64> = symbols.keys().copied().collect();
    // Every 97th function, and every module and BPF function.
    let mut picked: Vec<usize> = (0..starts.len() - 1).step_by(97).collect();
    picked.extend((0..starts.len() - 1).filter(|&i| symbols[&starts[i]].1.is_some()));
    picked.sort_unstable();
    picked.dedup();
    let modules = picked
        .iter()
        .filter(|&&i| symbols[&starts[i]].1.as_deref().is_some_and(|m| m != "bpf"))
        .count();
    let bpf = picked
        .iter()
        .filter(|&&i| symbols[&starts[i]].1.as_deref() == Some("bpf"))
        .count();
    assert!(bpf >= 6, "rill's own programs are listed as [bpf]: {bpf}");

    let mut resolver = probe
        .kernel_resolver()
        .expect("the probe names kernel addresses in the kernel (bpf_snprintf %pS)");
    // An address inside each function: its start, and the byte before the next symbol.
    let mut addrs = Vec::new();
    for &i in &picked {
        addrs.push(starts[i]);
        if starts[i + 1] - starts[i] > 1 {
            addrs.push(starts[i + 1] - 1);
        }
    }
    let t = Instant::now();
    let texts = resolver.resolve(&addrs).unwrap();
    let elapsed = t.elapsed();
    assert_eq!(texts.len(), addrs.len());
    let mut named = 0;
    let mut wrong = Vec::new();
    for (&addr, text) in addrs.iter().zip(&texts) {
        let start = *symbols.range(..=addr).next_back().unwrap().0;
        let (names, module) = &symbols[&start];
        let Some(ps) = parse_ps(text) else {
            // Only the last byte before a symbol may fall outside every function (padding
            // between functions, __pfx_ symbols, which kallsyms.rs skips): never a start.
            if addr == start {
                wrong.push(format!("{addr:#x}: {text:?}, kallsyms {names:?}"));
            }
            continue;
        };
        if addr - ps.offset == start && names.contains(ps.name) {
            named += 1;
            let m = ps.module.map(str::to_string);
            if module.as_deref() != Some("bpf") && m != *module {
                wrong.push(format!("{addr:#x}: module {m:?}, kallsyms {module:?}"));
            }
        } else if ps.name.starts_with("__pfx_") || ps.name.starts_with("__cfi_") || addr != start {
            // The byte before the next symbol may be in the next function's padding, or in a
            // function kallsyms lists only under an alias at another address.
        } else {
            wrong.push(format!(
                "{addr:#x}: {text:?}, kallsyms {start:#x} {names:?}"
            ));
        }
    }
    eprintln!(
        "{} addresses ({} functions, {modules} in modules, {bpf} BPF) named in {elapsed:?}; \
         {named} match kallsyms",
        addrs.len(),
        picked.len()
    );
    assert!(
        wrong.is_empty(),
        "{} wrong: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
    assert!(
        named * 100 >= addrs.len() * 95,
        "{named} of {} named",
        addrs.len()
    );
    // Not a kernel address: not named.
    let texts = resolver.resolve(&[0x1000, u64::MAX - 4095]).unwrap();
    assert!(texts.iter().all(|t| parse_ps(t).is_none()), "{texts:?}");

    // The symbolizer with the probe's resolver names the same functions and never reads
    // /proc/kallsyms.
    let mut sym = Symbolizer::new(SymbolizerConfig::default(), SymbolizerMetrics::default());
    sym.set_kernel_resolver(probe.kernel_resolver());
    let leafs: Vec<u64> = picked.iter().map(|&i| starts[i]).collect();
    for chunk in leafs.chunks(64) {
        // One stack of leaf addresses: the first is looked up as is, the others one byte
        // earlier, so ask for start + 1 past the first.
        let ips: Vec<u64> = chunk
            .iter()
            .enumerate()
            .map(|(k, &a)| if k == 0 { a } else { a + 1 })
            .collect();
        for (frame, &start) in sym.symbolize_kernel(&ips).iter().zip(chunk) {
            let name = frame.name.as_deref().unwrap_or("<none>");
            assert!(
                symbols[&start].0.contains(name),
                "{start:#x}: {name}, kallsyms {:?}",
                symbols[&start].0
            );
        }
    }
    assert_eq!(sym.kernel_symbols().loads(), 0, "/proc/kallsyms was read");
    assert!(sym.kernel_symbols().uses_resolver());
    assert!(sym.stats().kernel_symbols >= picked.len() * 9 / 10);
    drop(probe);
}
