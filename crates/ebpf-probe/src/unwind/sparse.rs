//! Reading a large executable file for its unwind table without reading all of it: a buffer of
//! the file's length that is zero except for what the table is built from (the ELF headers, the
//! sections `cfi` reads, and the first bytes of each small FDE's code, where a signal trampoline
//! is recognized). The buffer is an anonymous mapping of its own (memmap2), so the pages never
//! written stay untouched and cost no memory: a 100 MB binary costs its CFI, not 100 MB of
//! resident memory. (A zeroed heap allocation does not promise that: once glibc has raised its
//! mmap threshold, a 23 MB `calloc` comes from the heap and is cleared page by page, which was
//! the 20 MB jump of resident memory at some collects.) The same reader gives a CPython image
//! with only its symbol tables (`read_for_symbols`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use gimli::{CieOrFde, EhFrame, LittleEndian, UnwindSection};
use object::elf::{FileHeader64, SHT_NOTE};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::Endianness;

use super::cfi::ElfCfi;
use super::UnwindError;

/// Files up to this size are simply read whole.
pub(crate) const SPARSE_ABOVE: u64 = 8 << 20;

/// The sections `ElfCfi::parse` reads the contents of (others are found by name only).
const SECTIONS: [&str; 4] = [
    ".eh_frame",
    ".eh_frame_hdr",
    ".debug_frame",
    ".gnu_debuglink",
];

/// FDEs longer than this are not signal trampolines (`__restore_rt` is 9 bytes of code, 10
/// after glibc's `nop`): their code is not read.
pub(crate) const TRAMPOLINE_FDE_MAX: u64 = 64;

/// Bytes read at the start of a small FDE's code.
const CODE_PREFIX: u64 = 16;

/// The symbol tables and their strings (what [`read_for_symbols`] reads).
const SYMBOL_SECTIONS: [&str; 4] = [".symtab", ".strtab", ".dynsym", ".dynstr"];

/// A file's bytes: read whole, or sparsely into a mapping of its length.
#[derive(Debug)]
pub(crate) enum Image {
    /// The whole file.
    Whole(Vec<u8>),
    /// Zero except for the ranges read.
    Sparse(memmap2::MmapMut),
}

impl std::ops::Deref for Image {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Image::Whole(bytes) => bytes,
            Image::Sparse(map) => map,
        }
    }
}

/// The file at `path` as the table builder reads it (see the module documentation).
pub(crate) fn read_for_unwind(path: &Path) -> Result<Image, UnwindError> {
    read_sections(path, SPARSE_ABOVE, &SECTIONS, true)
}

/// The file at `path` with only its headers, program headers and symbol tables read (the rest
/// zero and never resident): enough to look up symbols and segments. An interpreter's shared
/// library is 23 MB with its debug information; its symbol tables are a tenth of that.
pub(crate) fn read_for_symbols(path: &Path) -> Result<Image, UnwindError> {
    read_sections(path, 0, &SYMBOL_SECTIONS, false)
}

/// A buffer of the file's length holding the ELF headers, the section name table, every note
/// and the sections named in `names` (the whole file when it is at most `above` bytes); with
/// `fde_code`, also the first bytes of each small FDE's code.
fn read_sections(
    path: &Path,
    above: u64,
    names: &[&str],
    fde_code: bool,
) -> Result<Image, UnwindError> {
    let io = |source| UnwindError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len <= above || len == 0 {
        return std::fs::read(path).map(Image::Whole).map_err(io);
    }
    let size = usize::try_from(len).map_err(|_| UnwindError::AddressTooLarge(len))?;
    let mut image = memmap2::MmapMut::map_anon(size).map_err(io)?;
    let fill = |image: &mut memmap2::MmapMut, offset: u64, size: u64| -> Result<(), UnwindError> {
        let end = offset.saturating_add(size).min(len);
        if offset >= end {
            return Ok(());
        }
        // Both ends are within the file's length, which is the buffer's.
        let (start, end) = (offset as usize, end as usize);
        file.read_exact_at(&mut image[start..end], offset)
            .map_err(io)
    };

    // The ELF header, then the program and section header tables and the section names.
    fill(&mut image, 0, 64)?;
    let (endian, tables) = {
        let header = FileHeader64::<Endianness>::parse(&image[..])?;
        let endian = header.endian()?;
        let phsize = u64::from(header.e_phentsize(endian)) * u64::from(header.e_phnum(endian));
        let shsize = u64::from(header.e_shentsize(endian)) * u64::from(header.e_shnum(endian));
        (
            endian,
            [
                (header.e_phoff(endian), phsize),
                (header.e_shoff(endian), shsize),
            ],
        )
    };
    for (offset, size) in tables {
        fill(&mut image, offset, size)?;
    }
    let mut wanted = Vec::new();
    {
        let header = FileHeader64::<Endianness>::parse(&image[..])?;
        if let Ok(sections) = header.sections(endian, &image[..]) {
            let index = header.shstrndx(endian, &image[..]).unwrap_or(0);
            let strtab = sections.section(object::SectionIndex(index as usize));
            if let Ok(strtab) = strtab {
                wanted.push((strtab.sh_offset(endian), strtab.sh_size(endian)));
            }
        }
        // Section-less files (and the `.eh_frame_hdr` fallback): the segments that hold no code
        // are small and hold the CFI.
        for ph in header.program_headers(endian, &image[..])? {
            if ph.p_type(endian) == object::elf::PT_LOAD
                && ph.p_flags(endian) & object::elf::PF_X == 0
                && header.e_shnum(endian) == 0
            {
                wanted.push((ph.p_offset(endian), ph.p_filesz(endian)));
            }
        }
    }
    for (offset, size) in wanted.drain(..) {
        fill(&mut image, offset, size)?;
    }
    {
        let header = FileHeader64::<Endianness>::parse(&image[..])?;
        if let Ok(sections) = header.sections(endian, &image[..]) {
            for section in sections.iter() {
                let name = sections.section_name(endian, section).unwrap_or_default();
                let is_note = section.sh_type(endian) == SHT_NOTE;
                if is_note || names.iter().any(|s| s.as_bytes() == name) {
                    wanted.push((section.sh_offset(endian), section.sh_size(endian)));
                }
            }
        }
    }
    for (offset, size) in wanted.drain(..) {
        fill(&mut image, offset, size)?;
    }

    // The first bytes of each small FDE's code, for the signal-trampoline check.
    if fde_code {
        let starts = small_fde_offsets(&image)?;
        for offset in starts {
            fill(&mut image, offset, CODE_PREFIX)?;
        }
    }
    Ok(Image::Sparse(image))
}

/// File offsets of the code of FDEs no longer than [`TRAMPOLINE_FDE_MAX`].
fn small_fde_offsets(image: &[u8]) -> Result<Vec<u64>, UnwindError> {
    let cfi = ElfCfi::parse(image)?;
    let Some(eh) = &cfi.eh_frame else {
        return Ok(Vec::new());
    };
    let section = EhFrame::new(eh.data, LittleEndian);
    let bases = eh.bases();
    let mut entries = section.entries(&bases);
    let mut out = Vec::new();
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
            continue;
        };
        if fde.len() > TRAMPOLINE_FDE_MAX {
            continue;
        }
        let vaddr = fde.initial_address();
        if let Some(offset) = cfi.segments.iter().find_map(|s| s.file_offset_of(vaddr)) {
            out.push(offset);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::cfi::DebugSearch;
    use crate::unwind::table::build_from_data_at;

    /// Most of the file was never read: fewer than half its nonzero bytes are in `sparse`.
    fn assert_mostly_unread(path: &Path, whole: &[u8], sparse: &[u8]) {
        let read = sparse.iter().filter(|&&b| b != 0).count();
        let nonzero = whole.iter().filter(|&&b| b != 0).count();
        assert!(
            read * 2 < nonzero,
            "{path:?}: {read} of {nonzero} bytes read"
        );
    }

    /// Symbols and segments read from the symbol-only image are those of the whole file, for
    /// libc (`.dynsym` only) and this test binary (`.symtab`), and most of it was not read.
    #[test]
    fn symbol_reads_give_the_same_symbols() {
        use object::{Object, ObjectSegment, ObjectSymbol};
        let me = std::env::current_exe().unwrap();
        for path in [Path::new("/lib/x86_64-linux-gnu/libc.so.6"), me.as_path()] {
            let whole = std::fs::read(path).unwrap();
            let sparse = read_for_symbols(path).unwrap();
            assert_eq!(sparse.len(), whole.len());
            let list = |data: &[u8]| {
                let file = object::File::parse(data).unwrap();
                let symbols: Vec<(String, u64, u64)> = file
                    .symbols()
                    .chain(file.dynamic_symbols())
                    .map(|s| (s.name().unwrap_or("?").to_string(), s.address(), s.size()))
                    .collect();
                let segments: Vec<(u64, u64)> =
                    file.segments().map(|s| (s.address(), s.size())).collect();
                (symbols, segments)
            };
            let (a, b) = (list(&whole), list(&sparse));
            assert!(a.0.len() > 1000, "{path:?}: {} symbols", a.0.len());
            assert_eq!(a, b, "{path:?}");
            assert_mostly_unread(path, &whole, &sparse);
        }
    }

    /// Resident bytes of this process's memory in `[addr, addr + len)`, from the present bits
    /// of /proc/self/pagemap (smaps would not do: the kernel may merge the range's mapping with
    /// an adjacent anonymous one of another test thread, which then counts too).
    fn resident_in(addr: usize, len: usize) -> u64 {
        use std::io::{Read, Seek, SeekFrom};
        let page = 4096;
        let mut pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
        pagemap
            .seek(SeekFrom::Start((addr / page * 8) as u64))
            .unwrap();
        let mut entries = vec![0u8; len.div_ceil(page) * 8];
        pagemap.read_exact(&mut entries).unwrap();
        let present = entries
            .chunks_exact(8)
            .filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) >> 63 == 1)
            .count();
        (present * page) as u64
    }

    /// A sparse image costs the pages it read, whatever the allocator did before: a 24 MiB file
    /// (libc, then zeros) read for its symbols after a 40 MiB buffer was used and freed (which
    /// makes glibc serve later large requests from its heap, cleared page by page).
    #[test]
    fn sparse_images_are_resident_only_where_read() {
        let mut big = vec![0u8; 40 << 20];
        big.iter_mut().step_by(4096).for_each(|b| *b = 1);
        drop(std::hint::black_box(big));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("padded.so");
        let mut bytes = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let libc_len = bytes.len();
        bytes.resize(24 << 20, 0);
        std::fs::write(&path, &bytes).unwrap();
        let image = read_for_symbols(&path).unwrap();
        let Image::Sparse(map) = &image else {
            panic!("a 24 MiB file is read sparsely");
        };
        assert_eq!(map.len(), 24 << 20);
        let resident = resident_in(map.as_ptr() as usize, map.len());
        assert!(
            resident < libc_len as u64,
            "{resident} bytes resident of a 24 MiB image whose ELF part is {libc_len}"
        );
        // And what was read is there: the symbols of libc.
        use object::{Object, ObjectSymbol};
        let file = object::File::parse(&*image).unwrap();
        assert!(file.dynamic_symbols().any(|s| s.name() == Ok("qsort")));
    }

    /// The table from the sparse image is the table from the whole file, for libc (a signal
    /// trampoline, PLT rows) and for this test binary (large, Rust).
    #[test]
    fn sparse_reads_give_the_same_table() {
        let me = std::env::current_exe().unwrap();
        for path in [Path::new("/lib/x86_64-linux-gnu/libc.so.6"), me.as_path()] {
            let whole = std::fs::read(path).unwrap();
            let sparse = read_sections(path, 0, &SECTIONS, true).unwrap();
            assert_eq!(sparse.len(), whole.len());
            let search = DebugSearch::none();
            let a = build_from_data_at(&whole, path, &search).unwrap();
            let b = build_from_data_at(&sparse, path, &search).unwrap();
            assert!(a.rows.len() > 1000, "{path:?}: {} rows", a.rows.len());
            assert_eq!(a.rows, b.rows, "{path:?}");
            assert_eq!(a.stats.signal_frames, b.stats.signal_frames, "{path:?}");
            assert_mostly_unread(path, &whole, &sparse);
        }
        let libc = read_sections(
            Path::new("/lib/x86_64-linux-gnu/libc.so.6"),
            0,
            &SECTIONS,
            true,
        )
        .unwrap();
        let table = build_from_data_at(
            &libc,
            Path::new("/lib/x86_64-linux-gnu/libc.so.6"),
            &DebugSearch::none(),
        )
        .unwrap();
        assert!(table.stats.signal_frames >= 1, "__restore_rt found");
    }
}
