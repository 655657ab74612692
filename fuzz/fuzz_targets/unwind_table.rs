//! Arbitrary bytes as an ELF image and as raw `.eh_frame` bytes: the unwind-table builder returns
//! a table or an error, never panics (the same property runs in `cargo test` as
//! `crates/ebpf-probe/tests/unwind_table_fuzz.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ebpf_probe::unwind::table::build_from_bytes(data);
    let vaddr = data.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let _ = ebpf_probe::unwind::table::build_from_eh_frame(data, u64::from(vaddr));
});
