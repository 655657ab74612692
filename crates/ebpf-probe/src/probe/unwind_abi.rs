//! The structures and constants of the in-kernel table walk shared with `bpf/profile.bpf.c`
//! (`unwind_procs`, `unwind_mappings`, `unwind_tables`, the page index, `ustacks0/1`, the
//! walk-end reasons); a test reads the C program and checks every constant and size.

use crate::unwind::abi::UnwindRow;

/// Frames of one table-walked user stack (`MAX_USER_FRAMES`).
pub const MAX_USER_FRAMES: usize = 512;
/// Mappings per process the kernel searches (`MAX_PROC_MAPPINGS`); more are dropped (the
/// highest addresses first) and counted.
pub const MAX_PROC_MAPPINGS: usize = 1024;
/// Rows of one table the kernel searches (`MAX_TABLE_ROWS`).
pub const MAX_TABLE_ROWS: usize = 1 << 24;
/// Rows one page's search may compare (the kernel gives up on a page with more; rows at
/// distinct pcs make at most 257 in a 256-byte page).
pub const MAX_PAGE_ROWS: u32 = 511;
/// The page index has one entry per `1 << UNWIND_PAGE_SHIFT` bytes of file addresses.
pub const UNWIND_PAGE_SHIFT: u32 = 8;
/// `unwind_mapping.table` of a mapping without a table: the kernel follows frame pointers.
pub const TABLE_FRAME_POINTER: u32 = u32::MAX;
/// `user_stack.flags`: at least one frame came from a frame-pointer step.
pub const UNWIND_FLAG_FP_USED: u8 = 1;

/// How a table walk ended (`user_stack.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WalkEnd {
    /// The bottom of the stack: an END row, a zero return address or frame pointer.
    Complete = 1,
    /// `MAX_USER_FRAMES` frames and more to go.
    Truncated = 2,
    /// A pc outside every known mapping of the process (its maps are re-read).
    NoMapping = 3,
    /// A pc without unwind information.
    NoInfo = 4,
    /// A rule the walker cannot follow.
    Unsupported = 5,
    /// Reading the user stack failed.
    ReadFailed = 6,
    /// The computed caller was impossible (stack not growing, bad pc).
    BadFrame = 7,
}

impl WalkEnd {
    /// Every reason, in code order.
    pub const ALL: [WalkEnd; 7] = [
        WalkEnd::Complete,
        WalkEnd::Truncated,
        WalkEnd::NoMapping,
        WalkEnd::NoInfo,
        WalkEnd::Unsupported,
        WalkEnd::ReadFailed,
        WalkEnd::BadFrame,
    ];

    /// The reason for a kernel code.
    pub fn from_code(code: u8) -> Option<WalkEnd> {
        WalkEnd::ALL.into_iter().find(|r| *r as u8 == code)
    }

    /// A short name for metrics labels and debug info.
    pub fn name(self) -> &'static str {
        match self {
            WalkEnd::Complete => "complete",
            WalkEnd::Truncated => "truncated",
            WalkEnd::NoMapping => "no_mapping",
            WalkEnd::NoInfo => "no_unwind_info",
            WalkEnd::Unsupported => "unsupported_rule",
            WalkEnd::ReadFailed => "read_failed",
            WalkEnd::BadFrame => "bad_frame",
        }
    }

    /// The marker frame that ends an incomplete stack (`None` for a complete one).
    pub fn marker(self) -> Option<&'static str> {
        match self {
            WalkEnd::Complete => None,
            WalkEnd::Truncated => Some("[truncated: frame limit]"),
            WalkEnd::NoMapping => Some("[truncated: no mapping]"),
            WalkEnd::NoInfo => Some("[truncated: no unwind info]"),
            WalkEnd::Unsupported => Some("[truncated: unsupported unwind rule]"),
            WalkEnd::ReadFailed => Some("[truncated: stack read failed]"),
            WalkEnd::BadFrame => Some("[truncated: bad frame]"),
        }
    }
}

/// `struct unwind_proc`: a process's range of `unwind_mappings`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindProc {
    /// Index of the first mapping.
    pub first: u32,
    /// Number of mappings.
    pub count: u32,
    /// Written by the kernel: when it last asked for a re-read (`bpf_ktime_get_ns`).
    pub reread_ns: u64,
}

/// `struct unwind_mapping`: one executable mapping.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindMapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// The file's virtual address of a pc is `pc - bias`.
    pub bias: u64,
    /// Index in `unwind_tables`, or [`TABLE_FRAME_POINTER`].
    pub table: u32,
    /// Zero.
    pub pad: u32,
}

/// `struct unwind_table`: a table's range of `unwind_rows`: its page index, then its rows.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindTable {
    /// Index of the page index's first entry; the rows follow the index.
    pub first: u32,
    /// Number of rows.
    pub count: u32,
    /// `file address >> UNWIND_PAGE_SHIFT` of the first page in the index.
    pub page_base: u32,
    /// Entries in the page index.
    pub pages: u32,
    /// Never the same for two writes of a table entry (never 0): the kernel's cache of rows
    /// found (`row_cache`) is keyed by it, so a table id or row range used again for another
    /// file never gives that file the rows of the one before.
    pub generation: u32,
    /// Zero.
    pub pad: u32,
}

/// `struct unwind_page`: for the pcs of one page, the rows `first..first + count` (relative
/// to the table's first row) are the only ones the kernel's search compares with the pc.
/// Stored in `unwind_rows` (it has a row's size).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindPage {
    /// First row to compare.
    pub first: u32,
    /// Rows to compare.
    pub count: u32,
}

const _: () = assert!(std::mem::size_of::<UnwindPage>() == std::mem::size_of::<UnwindRow>());

/// The page index of `rows` (sorted by pc): the first page's number and one entry per page
/// from the first row's page to the last row's. For a pc in page `p`, every row before
/// `first` starts at or below the page's first address and every row from `first + count`
/// on starts beyond its last, so the last row at or below the pc is found among the
/// `count` rows between them (or is the row just before them).
pub fn page_index(rows: &[UnwindRow]) -> (u32, Vec<UnwindPage>) {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return (0, Vec::new());
    };
    let base = first.pc >> UNWIND_PAGE_SHIFT;
    let end = last.pc >> UNWIND_PAGE_SHIFT;
    let mut pages = Vec::with_capacity((end - base) as usize + 1);
    // Rows at or below the current page's first address, then at or below its last.
    let (mut below, mut within) = (0usize, 0usize);
    for page in base..=end {
        let start = page << UNWIND_PAGE_SHIFT;
        let last_address = start | ((1 << UNWIND_PAGE_SHIFT) - 1);
        while below < rows.len() && rows[below].pc <= start {
            below += 1;
        }
        within = within.max(below);
        while within < rows.len() && rows[within].pc <= last_address {
            within += 1;
        }
        pages.push(UnwindPage {
            first: below as u32,
            count: (within - below) as u32,
        });
    }
    (base, pages)
}

/// The kernel's `find_row` in Rust (for tests): the index of the last row at or below `pc`
/// found through the page index, as the BPF program searches it.
pub fn find_row_indexed(
    rows: &[UnwindRow],
    page_base: u32,
    pages: &[UnwindPage],
    pc: u32,
) -> Option<usize> {
    let page = (pc >> UNWIND_PAGE_SHIFT).checked_sub(page_base)? as usize;
    let (mut lo, mut hi) = match pages.get(page) {
        Some(entry) => {
            let lo = entry.first as usize;
            let hi = lo + entry.count as usize;
            if hi > rows.len() || entry.count > MAX_PAGE_ROWS {
                return None;
            }
            (lo, hi)
        }
        None => (rows.len(), rows.len()),
    };
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if rows[mid].pc <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
}

/// `struct user_stack`: one table-walked user stack (value of `ustacks0/1`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserStack {
    /// Frames used in `frames`.
    pub len: u32,
    /// A [`WalkEnd`] code.
    pub reason: u8,
    /// `UNWIND_FLAG_*`.
    pub flags: u8,
    /// Zero.
    pub pad: u16,
    /// The process walked (part of the entry's key).
    pub tgid: u32,
    /// Zero.
    pub pad2: u32,
    /// In `ustacks0/1`: the samples of this stack that asked for no kernel stack, counted in
    /// the entry rather than in `counts0/1`. 0 elsewhere.
    pub samples: u64,
    /// Instruction pointers, leaf first.
    pub frames: [u64; MAX_USER_FRAMES],
}

impl UserStack {
    /// The frames in use.
    pub fn ips(&self) -> &[u64] {
        &self.frames[..(self.len as usize).min(MAX_USER_FRAMES)]
    }
}

/// A walked stack as user space keeps it: only the frames in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedStack {
    /// Instruction pointers, leaf first.
    pub ips: Box<[u64]>,
    /// How the walk ended (a [`WalkEnd`] code).
    pub reason: u8,
}

impl From<&UserStack> for WalkedStack {
    fn from(stack: &UserStack) -> Self {
        WalkedStack {
            ips: stack.ips().into(),
            reason: stack.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `#define NAME VALUE` of the C program.
    fn c_define(name: &str) -> u64 {
        let source = concat!(
            include_str!("../../bpf/profile.bpf.c"),
            include_str!("../../bpf/walk.h")
        );
        let line = source
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["#define", name]))
            .unwrap_or_else(|| panic!("#define {name} missing"));
        let value = line.split_whitespace().nth(2).unwrap();
        let value = value.trim_start_matches('(');
        if let Some(hex) = value.strip_prefix("0x") {
            return u64::from_str_radix(hex, 16).unwrap();
        }
        let base: u64 = value.parse().unwrap();
        match line.split_whitespace().nth(3) {
            Some("<<") => {
                let shift: u64 = line
                    .split_whitespace()
                    .nth(4)
                    .unwrap()
                    .trim_end_matches(')')
                    .parse()
                    .unwrap();
                base << shift
            }
            _ => base,
        }
    }

    #[test]
    fn constants_and_layouts_match_the_c_program() {
        assert_eq!(c_define("MAX_USER_FRAMES"), MAX_USER_FRAMES as u64);
        assert_eq!(c_define("MAX_PROC_MAPPINGS"), MAX_PROC_MAPPINGS as u64);
        assert_eq!(c_define("MAX_TABLE_ROWS"), MAX_TABLE_ROWS as u64);
        assert_eq!(c_define("UNWIND_PAGE_SHIFT"), u64::from(UNWIND_PAGE_SHIFT));
        assert_eq!(c_define("MAX_PAGE_ROWS"), u64::from(MAX_PAGE_ROWS));
        // Every page's rows fit the kernel's search.
        let steps = c_define("ROW_SEARCH_STEPS");
        assert!((1u64 << steps) > u64::from(MAX_PAGE_ROWS), "{steps} steps");
        assert!(u64::from(MAX_PAGE_ROWS) > (1 << UNWIND_PAGE_SHIFT));
        assert_eq!(
            c_define("TABLE_FRAME_POINTER"),
            u64::from(TABLE_FRAME_POINTER)
        );
        assert_eq!(
            c_define("UNWIND_FLAG_FP_USED"),
            u64::from(UNWIND_FLAG_FP_USED)
        );
        let names = [
            "UNWIND_COMPLETE",
            "UNWIND_TRUNCATED",
            "UNWIND_NO_MAPPING",
            "UNWIND_NO_INFO",
            "UNWIND_UNSUPPORTED",
            "UNWIND_READ_FAILED",
            "UNWIND_BAD_FRAME",
        ];
        for (name, reason) in names.into_iter().zip(WalkEnd::ALL) {
            assert_eq!(c_define(name), reason as u64, "{name}");
            assert_eq!(WalkEnd::from_code(reason as u8), Some(reason));
        }
        assert_eq!(WalkEnd::from_code(0), None);
        assert_eq!(WalkEnd::from_code(8), None);
        // 2^steps must exceed the largest count the kernel searches.
        assert!(1u64 << c_define("MAPPING_SEARCH_STEPS") > MAX_PROC_MAPPINGS as u64);
        assert_eq!(std::mem::size_of::<UnwindProc>(), 16);
        assert_eq!(std::mem::size_of::<UnwindMapping>(), 32);
        assert_eq!(std::mem::size_of::<UnwindTable>(), 24);
        assert_eq!(std::mem::size_of::<UnwindPage>(), 8);
        assert_eq!(std::mem::size_of::<UserStack>(), 24 + 8 * MAX_USER_FRAMES);
        assert_eq!(std::mem::offset_of!(UserStack, tgid), 8);
        assert_eq!(std::mem::offset_of!(UserStack, samples), 16);
        assert_eq!(std::mem::offset_of!(UserStack, frames), 24);
    }

    #[test]
    fn signal_frame_offsets_match_the_ucontext_layout() {
        // glibc's ucontext_t starts like the kernel's struct ucontext; gregs[] follow the
        // sigcontext field order (REG_RBP = 10, REG_RSP = 15, REG_RIP = 16).
        let mcontext = std::mem::offset_of!(libc::ucontext_t, uc_mcontext) as u64;
        assert_eq!(c_define("UC_MCONTEXT"), mcontext);
        assert_eq!((libc::REG_RBP, libc::REG_RSP, libc::REG_RIP), (10, 15, 16));
    }

    fn row(pc: u32) -> UnwindRow {
        UnwindRow {
            pc,
            kind: 1,
            rbp_offset: 0,
            cfa_offset: 8,
        }
    }

    /// The last row at or below `pc`, by a linear scan.
    fn find_row_linear(rows: &[UnwindRow], pc: u32) -> Option<usize> {
        rows.iter().rposition(|r| r.pc <= pc)
    }

    #[test]
    fn the_page_index_finds_the_row_a_whole_search_finds() {
        // Rows on page boundaries, several in one page, pages without rows, and a long gap.
        let pcs = [
            0x1000u32, 0x1004, 0x1ff0, 0x2000, 0x2001, 0x3fff, 0x4000, 0x9000, 0x9100, 0x20_0000,
        ];
        let rows: Vec<UnwindRow> = pcs.iter().map(|&pc| row(pc)).collect();
        let (base, pages) = page_index(&rows);
        assert_eq!(base, 0x1000 >> UNWIND_PAGE_SHIFT);
        assert_eq!(
            pages.len() as u32,
            (0x20_0000 >> UNWIND_PAGE_SHIFT) - (0x1000 >> UNWIND_PAGE_SHIFT) + 1
        );
        for pc in (0..0x21_0000u32)
            .step_by(7)
            .chain(pcs.iter().flat_map(|&p| [p - 1, p, p + 1]))
        {
            assert_eq!(
                find_row_indexed(&rows, base, &pages, pc),
                find_row_linear(&rows, pc),
                "pc {pc:#x}"
            );
        }
        // A pc far above the last row's page: the last row.
        assert_eq!(find_row_indexed(&rows, base, &pages, u32::MAX), Some(9));
        assert_eq!(page_index(&[]), (0, Vec::new()));
    }

    #[test]
    fn the_page_index_of_this_machines_libc_matches_a_whole_search() {
        let table = crate::unwind::table::build_from_file(std::path::Path::new(
            "/lib/x86_64-linux-gnu/libc.so.6",
        ))
        .unwrap();
        let rows = &table.rows;
        let (base, pages) = page_index(rows);
        assert!(pages.len() > 100, "{} pages", pages.len());
        let widest = pages.iter().map(|p| p.count).max().unwrap();
        let lo = rows.first().unwrap().pc;
        let hi = rows.last().unwrap().pc;
        let mut pc = lo.saturating_sub(100);
        while pc < hi + 100 {
            // The table's own binary search over all rows is the oracle.
            assert_eq!(
                find_row_indexed(rows, base, &pages, pc).map(|i| rows[i]),
                table.lookup(u64::from(pc)).copied(),
                "pc {pc:#x}"
            );
            pc += 13;
        }
        eprintln!(
            "{} rows, {} pages, at most {widest} rows per page",
            rows.len(),
            pages.len()
        );
    }

    #[test]
    fn marker_names() {
        assert_eq!(WalkEnd::Complete.marker(), None);
        assert_eq!(
            WalkEnd::NoInfo.marker(),
            Some("[truncated: no unwind info]")
        );
        for reason in WalkEnd::ALL.into_iter().skip(1) {
            assert!(reason
                .marker()
                .is_some_and(|m| m.starts_with("[truncated: ")));
        }
    }
}
