//! The compact unwind table of one executable file: gimli's CFI rows turned into sorted
//! [`UnwindRow`]s (see `bpf/unwind.h`), with `UNW_NO_INFO` at gaps between FDEs and after the
//! last, `UNW_SIGNAL` for signal trampolines, `UNW_FRAME_POINTER` for code without CFI (Go,
//! binaries built without unwind tables) and adjacent equal rules merged (gaps below
//! [`MIN_GAP`] bytes, function alignment padding, are not rows of their own).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gimli::{
    CieOrFde, CommonInformationEntry, DebugFrame, EhFrame, LittleEndian, UnwindContext,
    UnwindSection,
};

use super::abi::{UnwindRow, UNW_FRAME_POINTER, UNW_NO_INFO, UNW_ROW_SIZE, UNW_SIGNAL};
use super::cfi::{debug_file_matches, DebugSearch, EhFrameSource, ElfCfi, Slice};
use super::convert::{convert_row, ConvertStats, Rule, UnsupportedCounts};
use super::UnwindError;

/// `mov $0xf,%rax; syscall`: the x86-64 `rt_sigreturn` trampoline (`__restore_rt`).
pub const RT_SIGRETURN_BYTES: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

/// Gaps between FDEs shorter than this are alignment padding between functions (no instruction
/// there ever runs, and a return address never points into it, since the walk looks up `pc - 1`):
/// they get no row of their own, the previous FDE's last rule covers them, and it then often
/// merges with the next function's first rule (`CFA = rsp + 8`). Longer gaps are `UNW_NO_INFO`.
pub const MIN_GAP: u64 = 16;

/// Where a table's rules came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableSource {
    /// The file's own `.eh_frame` and/or `.debug_frame`.
    #[default]
    Cfi,
    /// The separate debug file (`TableStats::debug_file`).
    DebugFile,
    /// No CFI anywhere: frame-pointer rows over the executable segments.
    FramePointer,
}

/// What went into a table, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableStats {
    /// FDEs used (after dropping empty and overlapping ones).
    pub fdes: u64,
    /// gimli CFI rows converted (before merging).
    pub cfi_rows: u64,
    /// FDEs whose CIE or instructions gimli rejected (their range is `UNW_NO_INFO`), plus one
    /// when a section's entry list breaks off (the entries before it are kept).
    pub fde_errors: u64,
    /// FDEs dropped because they overlap an earlier one.
    pub fde_overlaps: u64,
    /// FDEs turned into `UNW_SIGNAL` (CIE augmentation `S` or the `__restore_rt` bytes).
    pub signal_frames: u64,
    /// CFI rows with an undefined return address (`UNW_END`).
    pub end_rows: u64,
    /// CFI rows whose caller-rbp rule cannot be encoded (`UNW_RBP_UNDEFINED`).
    pub rbp_undefined: u64,
    /// `UNW_UNSUPPORTED` CFI rows, by reason.
    pub unsupported: UnsupportedCounts,
    /// Where the rules came from.
    pub source: TableSource,
    /// The debug file used, for [`TableSource::DebugFile`].
    pub debug_file: Option<PathBuf>,
    /// The file is a Go binary (`.gopclntab`): gaps are frame-pointer rows.
    pub go: bool,
}

/// The sorted rows of one file plus how they were made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnwindTable {
    /// Sorted by `pc`, no two adjacent rows with the same rule.
    pub rows: Vec<UnwindRow>,
    /// Counters.
    pub stats: TableStats,
}

impl UnwindTable {
    /// The row whose range holds `pc` (a file virtual address): the last row with `row.pc <= pc`.
    /// `None` before the first row or at/after 4 GiB: no unwind information.
    pub fn lookup(&self, pc: u64) -> Option<&UnwindRow> {
        let pc = u32::try_from(pc).ok()?;
        let idx = self.rows.partition_point(|row| row.pc <= pc);
        idx.checked_sub(1).and_then(|i| self.rows.get(i))
    }

    /// Bytes of the rows as shipped to the kernel.
    pub fn size_bytes(&self) -> usize {
        self.rows.len() * UNW_ROW_SIZE
    }
}

/// Builds the table of an ELF image in memory (a file's bytes, or the vDSO read from a process).
/// No separate debug file is searched.
pub fn build_from_bytes(data: &[u8]) -> Result<UnwindTable, UnwindError> {
    let cfi = ElfCfi::parse(data)?;
    build(&cfi, None)
}

/// Builds the table of the ELF file at `path`, falling back to its separate debug file (searched
/// in the default `/usr/lib/debug`) when the file itself has no CFI.
pub fn build_from_file(path: &Path) -> Result<UnwindTable, UnwindError> {
    build_from_file_with(path, &DebugSearch::default())
}

/// [`build_from_file`] with the debug-file search roots given.
pub fn build_from_file_with(path: &Path, search: &DebugSearch) -> Result<UnwindTable, UnwindError> {
    let data = read(path)?;
    build_from_data_at(&data, path, search)
}

/// The table of `data`, the bytes of the file at `path` (for its debug-file search).
pub(crate) fn build_from_data_at(
    data: &[u8],
    path: &Path,
    search: &DebugSearch,
) -> Result<UnwindTable, UnwindError> {
    let cfi = ElfCfi::parse(data)?;
    build(&cfi, Some((path, search)))
}

/// Builds rows from raw `.eh_frame` section bytes loaded at `vaddr` (no ELF around them; used by
/// the fuzz target and tests).
pub fn build_from_eh_frame(data: &[u8], vaddr: u64) -> Result<UnwindTable, UnwindError> {
    let cfi = ElfCfi {
        eh_frame: Some(EhFrameSource {
            data,
            vaddr,
            hdr_vaddr: None,
            text_vaddr: None,
            got_vaddr: None,
        }),
        ..ElfCfi::default()
    };
    build(&cfi, None)
}

fn read(path: &Path) -> Result<super::sparse::Image, UnwindError> {
    super::sparse::read_for_unwind(path)
}

/// One FDE: `[start, end)`, its rules at ascending pcs in `Builder::rules[rows]`.
struct Block {
    start: u64,
    end: u64,
    rows: std::ops::Range<usize>,
}

#[derive(Default)]
struct Builder {
    blocks: Vec<Block>,
    /// The rules of every block, one allocation for the whole file.
    rules: Vec<(u64, Rule)>,
    convert: ConvertStats,
    stats: TableStats,
}

fn build(
    cfi: &ElfCfi<'_>,
    file: Option<(&Path, &DebugSearch)>,
) -> Result<UnwindTable, UnwindError> {
    let mut builder = Builder {
        stats: TableStats {
            go: cfi.is_go,
            ..TableStats::default()
        },
        ..Builder::default()
    };
    builder.add_cfi(cfi)?;
    if builder.blocks.is_empty() && !cfi.is_go {
        if let Some((path, search)) = file {
            builder.add_debug_file(cfi, path, search)?;
        }
    }
    if builder.blocks.is_empty() {
        builder.stats.source = TableSource::FramePointer;
    }
    builder.finish(cfi)
}

impl Builder {
    fn add_cfi(&mut self, cfi: &ElfCfi<'_>) -> Result<(), UnwindError> {
        if let Some(eh) = &cfi.eh_frame {
            let section = EhFrame::new(eh.data, LittleEndian);
            self.add_section(&section, &eh.bases(), cfi)?;
        }
        if let Some(bytes) = cfi.debug_frame {
            let mut section = DebugFrame::new(bytes, LittleEndian);
            section.set_address_size(8);
            self.add_section(&section, &gimli::BaseAddresses::default(), cfi)?;
        }
        Ok(())
    }

    fn add_debug_file(
        &mut self,
        cfi: &ElfCfi<'_>,
        path: &Path,
        search: &DebugSearch,
    ) -> Result<(), UnwindError> {
        let (link, crc) = cfi.debuglink.unzip();
        for (candidate, how) in search.candidates(path, cfi.build_id, link) {
            let Ok(bytes) = std::fs::read(&candidate) else {
                continue;
            };
            if !debug_file_matches(&bytes, how, cfi.build_id, crc.unwrap_or(0)) {
                tracing::debug!(path = %candidate.display(), "debug file does not match");
                continue;
            }
            let debug = ElfCfi::parse(&bytes)?;
            // Code bytes (signal trampolines) still come from the binary's own segments.
            let debug = ElfCfi {
                segments: cfi.segments.clone(),
                ..debug
            };
            self.add_cfi(&debug)?;
            if !self.blocks.is_empty() {
                self.stats.source = TableSource::DebugFile;
                self.stats.debug_file = Some(candidate);
                return Ok(());
            }
        }
        Ok(())
    }

    fn add_section<'a, S>(
        &mut self,
        section: &S,
        bases: &gimli::BaseAddresses,
        cfi: &ElfCfi<'a>,
    ) -> Result<(), UnwindError>
    where
        S: UnwindSection<Slice<'a>>,
        S::Offset: std::hash::Hash + Eq,
    {
        let mut cies: HashMap<S::Offset, CommonInformationEntry<Slice<'a>>> = HashMap::new();
        let mut ctx = UnwindContext::new();
        let mut entries = section.entries(bases);
        loop {
            let entry = match entries.next() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => {
                    // The section's structure is broken from here on: keep what was read.
                    tracing::debug!(error = %e, "call frame information ends early");
                    self.stats.fde_errors += 1;
                    break;
                }
            };
            let CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let fde = partial.parse(|section, bases, offset| {
                if let Some(cie) = cies.get(&offset) {
                    return Ok(cie.clone());
                }
                let cie = section.cie_from_offset(bases, offset)?;
                cies.insert(offset, cie.clone());
                Ok(cie)
            });
            let Ok(fde) = fde else {
                self.stats.fde_errors += 1;
                continue;
            };
            let start = fde.initial_address();
            let Some(end) = start.checked_add(fde.len()).filter(|&end| end > start) else {
                continue;
            };
            if end > u64::from(u32::MAX) + 1 {
                return Err(UnwindError::AddressTooLarge(end));
            }
            // Only a small FDE can be a signal trampoline (the sparse reader reads no other
            // code, and looking at every function's first bytes was a sixth of a build).
            if fde.is_signal_trampoline()
                || (fde.len() <= super::sparse::TRAMPOLINE_FDE_MAX && is_sigreturn_code(cfi, start))
            {
                self.stats.signal_frames += 1;
                self.rules.push((start, Rule::new(UNW_SIGNAL)));
                self.blocks.push(Block {
                    start,
                    end,
                    rows: self.rules.len() - 1..self.rules.len(),
                });
                continue;
            }
            let first = self.rules.len();
            let rules = &mut self.rules;
            let convert = &mut self.convert;
            let result = (|| -> gimli::Result<()> {
                let mut table = fde.rows(section, bases, &mut ctx)?;
                while let Some(row) = table.next_row()? {
                    if row.start_address() >= row.end_address() {
                        continue;
                    }
                    rules.push((row.start_address(), convert_row(row, section, convert)));
                }
                Ok(())
            })();
            if result.is_err() {
                self.rules.truncate(first);
                self.stats.fde_errors += 1;
                continue;
            }
            self.stats.cfi_rows += (self.rules.len() - first) as u64;
            self.blocks.push(Block {
                start,
                end,
                rows: first..self.rules.len(),
            });
        }
        Ok(())
    }

    fn finish(mut self, cfi: &ElfCfi<'_>) -> Result<UnwindTable, UnwindError> {
        // eh_frame blocks were pushed first: a stable sort keeps them ahead of debug_frame ones
        // at equal starts, and an overlapping later block is dropped.
        self.blocks.sort_by_key(|b| b.start);
        let gap = Rule::new(if cfi.is_go {
            UNW_FRAME_POINTER
        } else {
            UNW_NO_INFO
        });
        let mut rows: Vec<(u64, Rule)> =
            Vec::with_capacity(self.rules.len() + self.blocks.len() + 2);
        let mut cursor: Option<u64> = None;
        let exec = cfi.executable_ranges();
        if self.blocks.is_empty() {
            for &(start, end) in &exec {
                rows.push((start, Rule::new(UNW_FRAME_POINTER)));
                rows.push((end, Rule::new(UNW_NO_INFO)));
            }
        } else if cfi.is_go {
            if let Some(&(first, _)) = exec.iter().min_by_key(|r| r.0) {
                rows.push((first, gap));
            }
        }
        for block in &self.blocks {
            if let Some(end) = cursor {
                if block.start < end {
                    self.stats.fde_overlaps += 1;
                    continue;
                }
                if block.start - end >= MIN_GAP {
                    rows.push((end, gap));
                }
            }
            self.stats.fdes += 1;
            rows.extend_from_slice(&self.rules[block.rows.clone()]);
            cursor = Some(block.end);
        }
        if let Some(end) = cursor {
            let exec_end = exec.iter().map(|r| r.1).max().unwrap_or(0);
            if cfi.is_go && exec_end > end {
                rows.push((end, gap));
                rows.push((exec_end, Rule::new(UNW_NO_INFO)));
            } else {
                rows.push((end, Rule::new(UNW_NO_INFO)));
            }
        }
        let mut out: Vec<UnwindRow> = Vec::with_capacity(rows.len());
        for (pc, rule) in rows {
            let pc = u32::try_from(pc).map_err(|_| UnwindError::AddressTooLarge(pc))?;
            let row = UnwindRow {
                pc,
                kind: rule.kind,
                rbp_offset: rule.rbp_offset,
                cfa_offset: rule.cfa_offset,
            };
            if let Some(last) = out.last_mut() {
                if last.pc == pc {
                    *last = row;
                    // The replaced row may now equal its predecessor.
                    if out.len() >= 2 && same_rule(&out[out.len() - 2], &row) {
                        out.pop();
                    }
                    continue;
                }
                if same_rule(last, &row) {
                    continue;
                }
            }
            out.push(row);
        }
        self.stats.unsupported = self.convert.unsupported;
        self.stats.rbp_undefined = self.convert.rbp_undefined;
        self.stats.end_rows = self.convert.end_rows;
        Ok(UnwindTable {
            rows: out,
            stats: self.stats,
        })
    }
}

fn same_rule(a: &UnwindRow, b: &UnwindRow) -> bool {
    a.kind == b.kind && a.rbp_offset == b.rbp_offset && a.cfa_offset == b.cfa_offset
}

/// The FDE at `start` covers `__restore_rt` (possibly after glibc's one-byte `nop` in front).
fn is_sigreturn_code(cfi: &ElfCfi<'_>, start: u64) -> bool {
    let Some(code) = cfi.bytes_at(start) else {
        return false;
    };
    code.starts_with(&RT_SIGRETURN_BYTES)
        || (code.first() == Some(&0x90)
            && code
                .get(1..)
                .is_some_and(|c| c.starts_with(&RT_SIGRETURN_BYTES)))
}
