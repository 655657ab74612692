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
