//! Hostile input never panics: random and mutated bytes through the ELF loader, the Go pclntab
//! reader, the maps/kallsyms/perf-map/cgroup parsers and the pprof decoder.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failed step fails the test"
)]

use ebpf_probe::symbolize::table::SymbolTableBuilder;
use ebpf_probe::symbolize::{elf, gopclntab, kallsyms, perfmap, procmaps};
use proptest::prelude::*;

/// A real ELF file (this test binary) to mutate.
fn own_binary_prefix() -> Vec<u8> {
    static PREFIX: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PREFIX
        .get_or_init(|| {
            let exe = std::fs::read("/proc/self/exe").unwrap();
            exe[..exe.len().min(96 * 1024)].to_vec()
        })
        .clone()
}

/// A small but complete ELF image: this process's vdso.
fn vdso_image() -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let m = procmaps::parse_maps(&maps)
                .into_iter()
                .find(|m| m.path == "[vdso]")
                .expect("vdso");
            let mut buf = vec![0u8; (m.end - m.start) as usize];
            std::fs::File::open("/proc/self/mem")
                .unwrap()
                .read_exact_at(&mut buf, m.start)
                .unwrap();
            assert!(elf::load_elf_bytes(&buf).is_ok_and(|e| !e.table.is_empty()));
            buf
        })
        .clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn elf_loader_survives_mutations(flips in prop::collection::vec((0usize..65536, any::<u8>()), 1..32), cut in 64usize..98304) {
        let mut data = own_binary_prefix();
        for (at, b) in flips {
            let n = data.len();
            data[at % n] = b;
        }
        data.truncate(cut);
        let _ = elf::load_elf_bytes(&data);
    }

    #[test]
    fn elf_loader_survives_mutated_complete_images(flips in prop::collection::vec((0usize..16384, any::<u8>()), 1..16), cut in 0usize..16384) {
        let mut data = vdso_image();
        for (at, b) in flips {
            let n = data.len();
            data[at % n] = b;
        }
        data.truncate(cut.max(64));
        if let Ok(e) = elf::load_elf_bytes(&data) {
            for off in (0..data.len() as u64).step_by(16) {
                let _ = e.lookup_file_offset(off);
            }
        }
    }

    #[test]
    fn pclntab_reader_survives_garbage(magic in prop::sample::select(vec![0xffff_fff0u32, 0xffff_fff1, 0xffff_fffa, 0xffff_fffb]), ptr in prop::sample::select(vec![4u8, 8]), words in prop::collection::vec(any::<u64>(), 0..16), tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut data = magic.to_le_bytes().to_vec();
        data.extend_from_slice(&[0, 0, 1, ptr]);
        for w in words {
            // small values are the interesting ones (offsets that land inside the data)
            let w = if w % 2 == 0 { w % 600 } else { w };
            if ptr == 8 { data.extend_from_slice(&w.to_le_bytes()) } else { data.extend_from_slice(&(w as u32).to_le_bytes()) }
        }
        data.extend_from_slice(&tail);
        let _ = gopclntab::read_functions(&data, 0x1000, None, &mut SymbolTableBuilder::default());
    }

    #[test]
    fn text_parsers_survive_garbage(text in "[0-9a-fx: /\\-\\[\\]\\(\\)rwxps\t\n]{0,400}", raw in ".{0,200}") {
        let _ = procmaps::parse_maps(&text);
        let _ = procmaps::parse_maps(&raw);
        let _ = kallsyms::parse_kallsyms(&text);
        let _ = kallsyms::parse_kallsyms(&raw);
        let _ = perfmap::parse_perf_map(&text);
        let _ = ebpf_probe::cgroup::container_id_from_cgroup(&text);
        let _ = ebpf_probe::cgroup::container_id_from_cgroup(&raw);
        let _ = ebpf_probe::cgroup::normalize_container_id(&raw);
    }

    #[test]
    fn pprof_decoder_survives_garbage(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = ebpf_probe::pprof::decode(&bytes);
        let mut gz = vec![0x1f, 0x8b];
        gz.extend_from_slice(&bytes);
        let _ = ebpf_probe::pprof::decode(&gz);
    }
}
