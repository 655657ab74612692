//! The compact unwind table row shared with the BPF program: the Rust mirror of
//! `bpf/unwind.h` (a test reads the header and checks every constant and the row size).

/// CFA = rsp + cfa_offset.
pub const UNW_CFA_RSP: u8 = 1;
/// CFA = rbp + cfa_offset.
pub const UNW_CFA_RBP: u8 = 2;
/// A PLT stub: CFA = rsp + cfa_offset + ((rip & 15) >= T ? 8 : 0), T in `rbp_offset`.
pub const UNW_CFA_PLT: u8 = 3;
/// CFA = *(rsp + cfa_offset).
pub const UNW_CFA_DEREF_RSP: u8 = 4;
/// CFA = *(rbp + cfa_offset) (stack realignment).
pub const UNW_CFA_DEREF_RBP: u8 = 5;
/// Return address undefined: the bottom of the stack.
pub const UNW_END: u8 = 6;
/// Signal trampoline: registers come back from the ucontext at rsp.
pub const UNW_SIGNAL: u8 = 7;
/// No CFI for this range: follow the frame pointer.
pub const UNW_FRAME_POINTER: u8 = 8;
/// A rule rill cannot follow.
pub const UNW_UNSUPPORTED: u8 = 9;
/// A gap between FDEs: no unwind information.
pub const UNW_NO_INFO: u8 = 10;

/// `rbp_offset` value: the caller's rbp cannot be recovered.
pub const UNW_RBP_UNDEFINED: i8 = -128;

/// Size of one row in bytes, in the kernel and in user space.
pub const UNW_ROW_SIZE: usize = 8;

/// One row: the rule that holds from `pc` (the file's virtual address) up to the next row's `pc`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UnwindRow {
    /// Start of the range, in the file's virtual address space (before the load bias).
    pub pc: u32,
    /// One of the `UNW_*` kinds.
    pub kind: u8,
    /// 0 = rbp unchanged, [`UNW_RBP_UNDEFINED`], else the caller's rbp is at CFA + 8 * rbp_offset;
    /// for [`UNW_CFA_PLT`] the threshold T.
    pub rbp_offset: i8,
    /// Offset added to the CFA's base register (or read through, for the DEREF kinds).
    pub cfa_offset: i16,
}

const _: () = assert!(std::mem::size_of::<UnwindRow>() == UNW_ROW_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/unwind.h"));

    /// The value of `#define NAME VALUE` in the header.
    fn define(name: &str) -> i64 {
        let line = HEADER
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["#define", name]))
            .unwrap_or_else(|| panic!("{name} not in unwind.h"));
        let value = line.split_whitespace().nth(2).unwrap();
        value
            .trim_matches(|c| c == '(' || c == ')')
            .parse()
            .unwrap()
    }

    #[test]
    fn constants_match_the_bpf_header() {
        let kinds = [
            ("UNW_CFA_RSP", UNW_CFA_RSP),
            ("UNW_CFA_RBP", UNW_CFA_RBP),
            ("UNW_CFA_PLT", UNW_CFA_PLT),
            ("UNW_CFA_DEREF_RSP", UNW_CFA_DEREF_RSP),
            ("UNW_CFA_DEREF_RBP", UNW_CFA_DEREF_RBP),
            ("UNW_END", UNW_END),
            ("UNW_SIGNAL", UNW_SIGNAL),
            ("UNW_FRAME_POINTER", UNW_FRAME_POINTER),
            ("UNW_UNSUPPORTED", UNW_UNSUPPORTED),
            ("UNW_NO_INFO", UNW_NO_INFO),
        ];
        for (name, value) in kinds {
            assert_eq!(define(name), i64::from(value), "{name}");
        }
        assert_eq!(define("UNW_RBP_UNDEFINED"), i64::from(UNW_RBP_UNDEFINED));
        assert_eq!(define("UNW_ROW_SIZE"), UNW_ROW_SIZE as i64);
        // Field order and types of struct unwind_row.
        let body: Vec<&str> = HEADER
            .split("struct unwind_row {")
            .nth(1)
            .and_then(|s| s.split('}').next())
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            body,
            [
                "__u32 pc;",
                "__u8 kind;",
                "__s8 rbp_offset;",
                "__s16 cfa_offset;"
            ]
        );
        assert_eq!(std::mem::offset_of!(UnwindRow, kind), 4);
        assert_eq!(std::mem::offset_of!(UnwindRow, rbp_offset), 5);
        assert_eq!(std::mem::offset_of!(UnwindRow, cfa_offset), 6);
    }
}
