//! Where an x86-64 ELF file keeps its call frame information: the `.eh_frame` section (or, for
//! section-less images such as a stripped vDSO copy, the one `PT_GNU_EH_FRAME` points at through
//! `.eh_frame_hdr`), `.debug_frame`, and the separate debug file found by build ID or
//! `.gnu_debuglink`. Parsing the CFI itself is gimli's job (`table`); this module only locates it.

use std::path::{Path, PathBuf};

use gimli::{BaseAddresses, EhFrameHdr, EndianSlice, LittleEndian, Pointer};
use object::elf::{FileHeader64, PF_X, PT_GNU_EH_FRAME, PT_LOAD, SHT_NOBITS};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Object, ObjectSection};

use super::UnwindError;

/// The `.eh_frame` data of a file with the addresses gimli needs to decode its pointers.
#[derive(Debug, Clone, Copy)]
pub struct EhFrameSource<'a> {
    /// Section bytes (for a section-less file: from the section's start to its segment's end).
    pub data: &'a [u8],
    /// Virtual address of the first byte of `data`.
    pub vaddr: u64,
    /// Virtual address of `.eh_frame_hdr`, if known (for `DW_EH_PE_datarel` pointers).
    pub hdr_vaddr: Option<u64>,
    /// Virtual address of `.text`, if known.
    pub text_vaddr: Option<u64>,
    /// Virtual address of `.got`, if known.
    pub got_vaddr: Option<u64>,
}

impl EhFrameSource<'_> {
    /// The base addresses gimli resolves `pcrel`/`datarel`/`textrel` pointers against.
    pub fn bases(&self) -> BaseAddresses {
        let mut bases = BaseAddresses::default().set_eh_frame(self.vaddr);
        if let Some(hdr) = self.hdr_vaddr {
            bases = bases.set_eh_frame_hdr(hdr);
        }
        if let Some(text) = self.text_vaddr {
            bases = bases.set_text(text);
        }
        if let Some(got) = self.got_vaddr {
            bases = bases.set_got(got);
        }
        bases
    }
}

/// One `PT_LOAD` segment: where its file bytes are, for reading code (signal trampolines).
#[derive(Debug, Clone, Copy)]
pub struct LoadSegment<'a> {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// The bytes backed by the file (`p_filesz` of them).
    /// `p_offset`: where the segment's bytes start in the file.
    pub offset: u64,
    pub data: &'a [u8],
    /// `PF_X` is set.
    pub executable: bool,
}

impl LoadSegment<'_> {
    /// The file offset of `vaddr`, if the segment's file bytes hold it.
    pub fn file_offset_of(&self, vaddr: u64) -> Option<u64> {
        let off = vaddr.checked_sub(self.vaddr)?;
        (off < self.data.len() as u64).then(|| self.offset + off)
    }
}

/// Everything `table` needs from one ELF image, borrowed from its bytes.
#[derive(Debug, Clone, Default)]
pub struct ElfCfi<'a> {
    /// `.eh_frame`, if the file has one with contents.
    pub eh_frame: Option<EhFrameSource<'a>>,
    /// `.debug_frame` bytes (uncompressed), if present.
    pub debug_frame: Option<&'a [u8]>,
    /// The `PT_LOAD` segments.
    pub segments: Vec<LoadSegment<'a>>,
    /// A `.gopclntab` section is present: a Go binary, which keeps frame pointers.
    pub is_go: bool,
    /// `NT_GNU_BUILD_ID`.
    pub build_id: Option<&'a [u8]>,
    /// `.gnu_debuglink`: the debug file's name and its CRC-32.
    pub debuglink: Option<(&'a [u8], u32)>,
}

impl<'a> ElfCfi<'a> {
    /// Locates the CFI of an x86-64 ELF image held in `data` (a file, or the vDSO copied from
    /// memory: both are in file layout).
    pub fn parse(data: &'a [u8]) -> Result<Self, UnwindError> {
        let header = FileHeader64::<object::Endianness>::parse(data)?;
        let endian = header.endian()?;
        if header.e_machine(endian) != object::elf::EM_X86_64 {
            return Err(UnwindError::NotX86_64);
        }
        let file = object::read::elf::ElfFile64::<object::Endianness>::parse(data)?;
        let mut segments = Vec::new();
        let mut eh_frame_hdr_segment = None;
        for ph in header.program_headers(endian, data)? {
            let p_type = ph.p_type(endian);
            if p_type == PT_LOAD {
                segments.push(LoadSegment {
                    offset: ph.p_offset(endian),
                    vaddr: ph.p_vaddr(endian),
                    memsz: ph.p_memsz(endian),
                    data: ph.data(endian, data).unwrap_or(&[]),
                    executable: ph.p_flags(endian) & PF_X != 0,
                });
            } else if p_type == PT_GNU_EH_FRAME {
                eh_frame_hdr_segment = Some(ph.p_vaddr(endian));
            }
        }
        let section_vaddr = |name: &str| file.section_by_name(name).map(|s| s.address());
        let mut cfi = ElfCfi {
            segments,
            is_go: file.section_by_name(".gopclntab").is_some(),
            build_id: file.build_id().ok().flatten(),
            debuglink: file.gnu_debuglink().ok().flatten(),
            ..ElfCfi::default()
        };
        let text_vaddr = section_vaddr(".text");
        let got_vaddr = section_vaddr(".got");
        if let Some(section) = file.section_by_name(".eh_frame") {
            let nobits = section.elf_section_header().sh_type(endian) == SHT_NOBITS;
            let bytes = section.data()?;
            if !nobits && !bytes.is_empty() {
                cfi.eh_frame = Some(EhFrameSource {
                    data: bytes,
                    vaddr: section.address(),
                    hdr_vaddr: section_vaddr(".eh_frame_hdr"),
                    text_vaddr,
                    got_vaddr,
                });
            }
        } else if let Some(hdr_vaddr) = eh_frame_hdr_segment {
            cfi.eh_frame = cfi.eh_frame_from_hdr(hdr_vaddr)?;
        }
        if let Some(section) = file.section_by_name(".debug_frame") {
            // A compressed section needs object's `compression` feature: treated as absent.
            if let Ok(std::borrow::Cow::Borrowed(bytes)) = section.uncompressed_data() {
                if !bytes.is_empty() {
                    cfi.debug_frame = Some(bytes);
                }
            }
        }
        Ok(cfi)
    }

    /// The file bytes at `vaddr` up to the end of their segment's file image.
    pub fn bytes_at(&self, vaddr: u64) -> Option<&'a [u8]> {
        self.segments.iter().find_map(|seg| {
            let off = vaddr.checked_sub(seg.vaddr)?;
            let off = usize::try_from(off).ok()?;
            seg.data.get(off..)
        })
    }

    /// `.eh_frame` through `PT_GNU_EH_FRAME` → `.eh_frame_hdr` → `eh_frame_ptr`.
    fn eh_frame_from_hdr(&self, hdr_vaddr: u64) -> Result<Option<EhFrameSource<'a>>, UnwindError> {
        let Some(hdr_bytes) = self.bytes_at(hdr_vaddr) else {
            return Ok(None);
        };
        let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_vaddr);
        let hdr = EhFrameHdr::new(hdr_bytes, LittleEndian).parse(&bases, 8)?;
        let eh_vaddr = match hdr.eh_frame_ptr() {
            Pointer::Direct(addr) => addr,
            Pointer::Indirect(_) => return Ok(None),
        };
        Ok(self.bytes_at(eh_vaddr).map(|data| EhFrameSource {
            data,
            vaddr: eh_vaddr,
            hdr_vaddr: Some(hdr_vaddr),
            text_vaddr: None,
            got_vaddr: None,
        }))
    }

    /// The ranges `[start, end)` of the executable segments.
    pub fn executable_ranges(&self) -> Vec<(u64, u64)> {
        self.segments
            .iter()
            .filter(|s| s.executable && s.memsz > 0)
            .map(|s| (s.vaddr, s.vaddr.saturating_add(s.memsz)))
            .collect()
    }
}

/// An `EndianSlice` over `.eh_frame`/`.debug_frame` bytes.
pub(crate) type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// Where separate debug files are looked for. The default is the system's `/usr/lib/debug`;
/// tests point it at a temporary directory.
#[derive(Debug, Clone)]
pub struct DebugSearch {
    /// Global debug roots (`/usr/lib/debug`): `ROOT/.build-id/xx/rest.debug` and
    /// `ROOT/<binary's dir>/<debuglink>`.
    pub roots: Vec<PathBuf>,
    /// Also look next to the binary and in its `.debug/` directory (for `.gnu_debuglink`).
    pub beside_binary: bool,
}

impl Default for DebugSearch {
    fn default() -> Self {
        DebugSearch {
            roots: vec![PathBuf::from("/usr/lib/debug")],
            beside_binary: true,
        }
    }
}

impl DebugSearch {
    /// No search at all.
    pub fn none() -> Self {
        DebugSearch {
            roots: Vec::new(),
            beside_binary: false,
        }
    }

    /// The candidate paths for the debug file of `binary`, in search order: by build ID first,
    /// then by debuglink (whose CRC the caller checks with [`debug_file_matches`]).
    pub fn candidates(
        &self,
        binary: &Path,
        build_id: Option<&[u8]>,
        debuglink: Option<&[u8]>,
    ) -> Vec<(PathBuf, DebugMatch)> {
        let mut out = Vec::new();
        if let Some(id) = build_id.filter(|id| id.len() >= 2) {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            for root in &self.roots {
                let path = root
                    .join(".build-id")
                    .join(&hex[..2])
                    .join(format!("{}.debug", &hex[2..]));
                out.push((path, DebugMatch::BuildId));
            }
        }
        let name = debuglink.and_then(|n| std::str::from_utf8(n).ok());
        if let Some(name) = name.filter(|n| !n.is_empty() && !n.contains('/')) {
            let dir = binary.parent().unwrap_or(Path::new("/"));
            if self.beside_binary {
                out.push((dir.join(name), DebugMatch::Crc));
                out.push((dir.join(".debug").join(name), DebugMatch::Crc));
            }
            let relative = dir.strip_prefix("/").unwrap_or(dir);
            for root in &self.roots {
                out.push((root.join(relative).join(name), DebugMatch::Crc));
            }
        }
        out
    }
}

/// How a debug-file candidate is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugMatch {
    /// Found under `.build-id/`: its build ID must equal the binary's.
    BuildId,
    /// Found by `.gnu_debuglink`: its CRC-32 must equal the link's.
    Crc,
}

/// Whether a debug-file candidate's bytes belong to the binary.
pub fn debug_file_matches(
    candidate: &[u8],
    how: DebugMatch,
    build_id: Option<&[u8]>,
    crc: u32,
) -> bool {
    match how {
        DebugMatch::BuildId => {
            let Ok(file) = object::File::parse(candidate) else {
                return false;
            };
            matches!((file.build_id(), build_id), (Ok(Some(a)), Some(b)) if a == b)
        }
        DebugMatch::Crc => crc32fast::hash(candidate) == crc,
    }
}

impl From<object::Error> for UnwindError {
    fn from(e: object::Error) -> Self {
        UnwindError::Elf(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_file_candidates_in_search_order() {
        let search = DebugSearch {
            roots: vec![PathBuf::from("/dbg")],
            beside_binary: true,
        };
        let got = search.candidates(
            Path::new("/usr/lib/libx.so.1"),
            Some(&[0xab, 0xcd, 0x01]),
            Some(b"libx.so.1.debug"),
        );
        let paths: Vec<_> = got
            .iter()
            .map(|(p, how)| (p.to_str().unwrap(), *how))
            .collect();
        assert_eq!(
            paths,
            [
                ("/dbg/.build-id/ab/cd01.debug", DebugMatch::BuildId),
                ("/usr/lib/libx.so.1.debug", DebugMatch::Crc),
                ("/usr/lib/.debug/libx.so.1.debug", DebugMatch::Crc),
                ("/dbg/usr/lib/libx.so.1.debug", DebugMatch::Crc),
            ]
        );
        // A debuglink with a slash or an empty one is ignored; a 1-byte build ID too.
        assert!(search
            .candidates(Path::new("/a/b"), Some(&[1]), Some(b"../x"))
            .is_empty());
        assert!(DebugSearch::none()
            .candidates(Path::new("/a/b"), Some(&[1, 2]), Some(b"x"))
            .is_empty());
    }

    #[test]
    fn rejects_non_x86_64_and_garbage() {
        assert!(ElfCfi::parse(b"not an elf").is_err());
        let mut elf = std::fs::read("/proc/self/exe").unwrap();
        elf[0x12] = 0xb7; // e_machine = EM_AARCH64
        elf[0x13] = 0x00;
        assert!(matches!(ElfCfi::parse(&elf), Err(UnwindError::NotX86_64)));
    }
}
