//! The fuzz target's property (`fuzz/fuzz_targets/unwind_table.rs`) checked in `cargo test`:
//! arbitrary bytes, as an ELF image or as raw `.eh_frame` bytes, give a table or an error and
//! never a panic; so do real files and sections with bytes flipped.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test]: a failed unwrap fails the test"
)]

use ebpf_probe::unwind::table::{build_from_bytes, build_from_eh_frame};
use object::{Object, ObjectSection};
use proptest::prelude::*;

const SMALL_LIB: &str = "/lib/x86_64-linux-gnu/libz.so.1";

fn real_elf() -> Vec<u8> {
    std::fs::read(SMALL_LIB).unwrap_or_default()
}

/// The first 16 KiB of libz's `.eh_frame` and its address.
fn real_eh_frame() -> (Vec<u8>, u64) {
    let data = real_elf();
    let Ok(file) = object::File::parse(&*data) else {
        return (Vec::new(), 0);
    };
    let Some(s) = file.section_by_name(".eh_frame") else {
        return (Vec::new(), 0);
    };
    let bytes = s.data().unwrap_or_default();
    (bytes[..bytes.len().min(16 << 10)].to_vec(), s.address())
}

fn flip(mut data: Vec<u8>, flips: &[(usize, u8)]) -> Vec<u8> {
    if !data.is_empty() {
        for &(at, x) in flips {
            let i = at % data.len();
            data[i] ^= x;
        }
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096), vaddr in any::<u32>()) {
        let _ = build_from_bytes(&data);
        let _ = build_from_eh_frame(&data, u64::from(vaddr));
    }

    #[test]
    fn eh_frame_shaped_bytes_never_panic(
        words in proptest::collection::vec((1u32..64, proptest::collection::vec(any::<u8>(), 0..64)), 0..32),
    ) {
        // Length-prefixed records, CIE id 0 or a back pointer: deeper into gimli's parser.
        let mut data = Vec::new();
        for (i, (len, body)) in words.iter().enumerate() {
            data.extend_from_slice(&len.to_le_bytes());
            let id: u32 = if i % 2 == 0 { 0 } else { data.len() as u32 };
            data.extend_from_slice(&id.to_le_bytes());
            data.extend_from_slice(body);
        }
        let _ = build_from_eh_frame(&data, 0x1000);
    }

    #[test]
    fn flipped_real_files_never_panic(flips in proptest::collection::vec((any::<usize>(), 1u8..), 1..8)) {
        let (eh, vaddr) = real_eh_frame();
        let _ = build_from_eh_frame(&flip(eh, &flips), vaddr);
        let elf = real_elf();
        // Flips in the headers (first 4 KiB) and anywhere.
        let head: Vec<(usize, u8)> = flips.iter().map(|&(at, x)| (at % 4096, x)).collect();
        let _ = build_from_bytes(&flip(elf.clone(), &head));
        let _ = build_from_bytes(&flip(elf, &flips));
    }
}

#[test]
fn the_unflipped_inputs_do_build() {
    // Otherwise the properties above would only ever see errors.
    let (eh, vaddr) = real_eh_frame();
    assert!(!eh.is_empty());
    assert!(!build_from_eh_frame(&eh, vaddr).unwrap().rows.is_empty());
    assert!(!build_from_bytes(&real_elf()).unwrap().rows.is_empty());
}
