//! Fuzzes what the kernel's `%pS` printed (`symbolize::ksym::parse_ps`) and the cache built
//! from it (`ResolvedKernel`, fed by a resolver that answers with the input's lines): no
//! panic; a parsed symbol's name is non-empty, in the input, and its offset inside its size;
//! every name the cache gives back is one the resolver printed.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use ebpf_probe::symbolize::ksym::{parse_ps, KernelResolver, ResolvedKernel};
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct Lines(Vec<String>);

impl KernelResolver for Lines {
    fn resolve(&mut self, addrs: &[u64]) -> std::io::Result<Vec<String>> {
        Ok((0..addrs.len())
            .map(|i| self.0.get(i % self.0.len().max(1)).cloned().unwrap_or_default())
            .collect())
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    for line in &lines {
        if let Some(sym) = parse_ps(line) {
            assert!(!sym.name.is_empty());
            assert!(line.contains(sym.name));
            assert!(sym.size == 0 || sym.offset < sym.size, "{sym:?}");
        }
    }
    // Addresses from the input's bytes, asked in batches of up to 16.
    let addrs: Vec<u64> = data
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    let mut cache = ResolvedKernel::new(Box::new(Lines(lines.clone())), Duration::from_secs(60));
    for batch in addrs.chunks(16) {
        let names = cache.lookup_many(batch).expect("the resolver does not fail");
        assert_eq!(names.len(), batch.len());
        for name in names.iter().flatten() {
            let name: &Arc<str> = name;
            assert!(lines.iter().any(|l| l.contains(&**name)), "{name} not printed");
        }
    }
});
