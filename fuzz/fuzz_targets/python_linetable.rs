//! Fuzzes the CPython line-table decoders (`co_lnotab`, the 3.10 `co_linetable`, the 3.11+
//! location table) on arbitrary bytes: no panic, and the location iterator yields at most one
//! entry per byte and ends after its first error.
#![no_main]

use ebpf_probe::python::linetable::{line_for_offset, Locations};
use ebpf_probe::python::offsets::{LINES_310, LINES_LNOTAB, LINES_LOCATIONS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (i32, i64, &[u8])| {
    let (firstlineno, offset, table) = input;
    for format in [LINES_LNOTAB, LINES_310, LINES_LOCATIONS] {
        let _ = line_for_offset(format, table, firstlineno, offset);
    }
    let mut entries = 0usize;
    let mut failed = false;
    for loc in Locations::new(table, firstlineno) {
        assert!(!failed, "an entry after an error");
        entries += 1;
        match loc {
            Ok(l) => assert!((1..=8).contains(&l.units)),
            Err(_) => failed = true,
        }
    }
    assert!(entries <= table.len());
});
