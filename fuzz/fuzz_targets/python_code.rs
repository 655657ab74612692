//! Fuzzes the CPython code-object and `str` readers on arbitrary memory: the input is one
//! region holding a code object, its pointer fields aimed back into the region by the first
//! bytes; every version's offsets are tried. No panic; names stay within the limits.
#![no_main]

use ebpf_probe::python::code::{read_code, read_str, CodeCache, MAX_STRING_CHARS};
use ebpf_probe::python::memory::SliceMemory;
use ebpf_probe::python::offsets::{table_offsets, ABSENT};
use libfuzzer_sys::fuzz_target;

const BASE: u64 = 0x40_000;

fuzz_target!(|input: ([u16; 4], &[u8])| {
    let (aim, bytes) = input;
    for minor in 6..=13 {
        let Some(off) = table_offsets(minor) else {
            continue;
        };
        let mut region = bytes.to_vec();
        let ptrs = [
            off.code_filename,
            off.code_name,
            off.code_qualname,
            off.code_linetable,
        ];
        for (&o, &a) in ptrs.iter().zip(&aim) {
            if o != ABSENT && (o as usize + 8) <= region.len() {
                let target = BASE + u64::from(a) % region.len() as u64;
                region[o as usize..][..8].copy_from_slice(&target.to_le_bytes());
            }
        }
        let mut mem = SliceMemory::new();
        mem.add(BASE, region);
        if let Ok(code) = read_code(&mem, &off, None, BASE) {
            assert!(code.qualname.chars().count() as u64 <= MAX_STRING_CHARS);
            assert!(code.linetable.len() <= bytes.len());
            let _ = code.line(off.linetable_format, i64::from(aim[0]));
        }
        let mut cache = CodeCache::new(2);
        let _ = cache.symbolize(&mem, &off, None, 1, BASE, i64::from(aim[1]));
        let _ = cache.symbolize(&mem, &off, None, 1, BASE, 0);
        for a in aim {
            let _ = read_str(&mem, &off, BASE + u64::from(a));
        }
    }
});
