//! Fuzzes the ELF symbolizer on arbitrary (mostly mutated real) ELF images: parsing symbols,
//! load segments and the build ID must not panic, and lookups of any file offset must stay
//! in bounds. Seed corpus: small gcc-built binaries (see docs/reliability.md).
#![no_main]

use ebpf_probe::symbolize::elf::load_elf_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(syms) = load_elf_bytes(data) else {
        return;
    };
    let _ = syms.build_id_hex();
    // Probe offsets around every load segment and a spread over the file.
    let len = data.len() as u64;
    for off in [
        0,
        1,
        len / 3,
        len / 2,
        len.saturating_sub(1),
        len,
        u64::MAX,
        u64::MAX / 2,
    ] {
        let _ = syms.file_offset_to_vaddr(off);
        let _ = syms.lookup_file_offset(off);
    }
    for seg in &syms.loads {
        for off in [
            seg.offset,
            seg.offset.wrapping_add(1),
            seg.offset.wrapping_sub(1),
        ] {
            let _ = syms.file_offset_to_vaddr(off);
            let _ = syms.lookup_file_offset(off);
        }
    }
});
