//! The reference semantics of one unwind step with a compact table: what the BPF walk does, in
//! plain Rust, so both sides can be checked against each other.
//!
//! One step, for the frame with registers `rip`, `rsp`, `rbp` in a file loaded at `bias`:
//!
//! 1. Lookup pc: `rip - bias` for the leaf frame and for the frame a signal interrupted
//!    ([`Frame::exact_pc`]); `rip - bias - 1` for every other frame, whose `rip` is a return
//!    address that points just *after* its call (the call may be the function's last
//!    instruction, so `rip` itself can belong to the next function's row).
//! 2. Row: the last row with `row.pc <= lookup pc`; none → [`Stop::NoInfo`].
//! 3. By kind:
//!    - `UNW_CFA_RSP`: CFA = rsp + cfa_offset. `UNW_CFA_RBP`: CFA = rbp + cfa_offset.
//!    - `UNW_CFA_PLT`: CFA = rsp + cfa_offset + ((rip & 15) >= rbp_offset ? 8 : 0) (the real
//!      rip, not the lookup pc); rbp is unchanged.
//!    - `UNW_CFA_DEREF_RSP` / `UNW_CFA_DEREF_RBP`: CFA = *(u64 *)(rsp|rbp + cfa_offset).
//!    - then: return address = *(u64 *)(CFA - 8), caller rsp = CFA, caller rbp = rbp when
//!      rbp_offset == 0, *(u64 *)(CFA + 8 * rbp_offset) otherwise, or *undefined* for
//!      `UNW_RBP_UNDEFINED` (a later step whose rule reads rbp stops with
//!      [`Stop::RbpUndefined`]).
//!    - `UNW_FRAME_POINTER`: caller rbp = *(rbp), return address = *(rbp + 8), caller rsp =
//!      rbp + 16 (rbp undefined → [`Stop::RbpUndefined`]).
//!    - `UNW_SIGNAL`: the kernel's `struct ucontext` is at rsp (the handler's `ret` popped
//!      `pretcode`); its `mcontext.gregs` start at rsp + 40: caller rbp = *(rsp + 40 + 8*10),
//!      rsp = *(rsp + 40 + 8*15), rip = *(rsp + 40 + 8*16); the next lookup uses that rip exactly.
//!    - `UNW_END` → [`Stop::End`]; `UNW_UNSUPPORTED` → [`Stop::Unsupported`]; `UNW_NO_INFO`
//!      → [`Stop::NoInfo`]; any other kind → [`Stop::Unsupported`].
//! 4. A return address of 0 ends the stack ([`Stop::End`]); a failed read is
//!    [`Stop::ReadFailed`] with the address.

use super::abi::{
    UNW_CFA_DEREF_RBP, UNW_CFA_DEREF_RSP, UNW_CFA_PLT, UNW_CFA_RBP, UNW_CFA_RSP, UNW_END,
    UNW_FRAME_POINTER, UNW_NO_INFO, UNW_RBP_UNDEFINED, UNW_SIGNAL,
};
use super::table::UnwindTable;

/// Offset of `uc_mcontext.gregs` in the x86-64 `struct ucontext` (uc_flags, uc_link, uc_stack).
pub const UCONTEXT_GREGS_OFFSET: u64 = 40;
/// Index of rbp in `gregs` (`REG_RBP`).
pub const GREG_RBP: u64 = 10;
/// Index of rsp in `gregs` (`REG_RSP`).
pub const GREG_RSP: u64 = 15;
/// Index of rip in `gregs` (`REG_RIP`).
pub const GREG_RIP: u64 = 16;

/// The registers of one frame; `rbp: None` = not recoverable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Instruction pointer (absolute: the process's address).
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Frame pointer, or `None` when a previous step could not recover it.
    pub rbp: Option<u64>,
    /// `rip` is the exact instruction (the leaf, or a frame interrupted by a signal), not a
    /// return address: look it up without the `-1`.
    pub exact_pc: bool,
}

impl Frame {
    /// The leaf frame of a sample.
    pub fn leaf(rip: u64, rsp: u64, rbp: u64) -> Self {
        Frame {
            rip,
            rsp,
            rbp: Some(rbp),
            exact_pc: true,
        }
    }

    /// The pc to look up in the table of a file loaded at `bias`.
    pub fn lookup_pc(&self, bias: u64) -> Option<u64> {
        let pc = self.rip.checked_sub(bias)?;
        if self.exact_pc {
            Some(pc)
        } else {
            pc.checked_sub(1)
        }
    }
}

/// Why a walk stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The bottom of the stack (`UNW_END`, or a return address of 0): a complete stack.
    End,
    /// No row for the pc (`UNW_NO_INFO`, before the first row, or not in the file).
    NoInfo,
    /// `UNW_UNSUPPORTED` or an unknown kind.
    Unsupported,
    /// The rule needs rbp, which an earlier step could not recover.
    RbpUndefined,
    /// Reading the stack at this address failed.
    ReadFailed(u64),
}

/// Steps from `frame` (in the file whose table is `table`, loaded at `bias`) to its caller.
/// `read` reads one u64 of the target's memory.
pub fn step(
    table: &UnwindTable,
    bias: u64,
    frame: &Frame,
    read: &mut dyn FnMut(u64) -> Option<u64>,
) -> Result<Frame, Stop> {
    let pc = frame.lookup_pc(bias).ok_or(Stop::NoInfo)?;
    let row = table.lookup(pc).ok_or(Stop::NoInfo)?;
    let mut load = |addr: u64| read(addr).ok_or(Stop::ReadFailed(addr));
    let rbp = || frame.rbp.ok_or(Stop::RbpUndefined);
    let off = i64::from(row.cfa_offset);
    let cfa = match row.kind {
        UNW_CFA_RSP => frame.rsp.wrapping_add_signed(off),
        UNW_CFA_RBP => rbp()?.wrapping_add_signed(off),
        UNW_CFA_PLT => {
            let extra = if (frame.rip & 15) >= row.rbp_offset as u64 {
                8
            } else {
                0
            };
            frame.rsp.wrapping_add_signed(off).wrapping_add(extra)
        }
        UNW_CFA_DEREF_RSP => load(frame.rsp.wrapping_add_signed(off))?,
        UNW_CFA_DEREF_RBP => load(rbp()?.wrapping_add_signed(off))?,
        UNW_FRAME_POINTER => {
            let fp = rbp()?;
            let caller_rbp = load(fp)?;
            let ra = load(fp.wrapping_add(8))?;
            return caller(ra, fp.wrapping_add(16), Some(caller_rbp), false);
        }
        UNW_SIGNAL => {
            let gregs = frame.rsp.wrapping_add(UCONTEXT_GREGS_OFFSET);
            let caller_rbp = load(gregs.wrapping_add(8 * GREG_RBP))?;
            let caller_rsp = load(gregs.wrapping_add(8 * GREG_RSP))?;
            let ra = load(gregs.wrapping_add(8 * GREG_RIP))?;
            return caller(ra, caller_rsp, Some(caller_rbp), true);
        }
        UNW_END => return Err(Stop::End),
        UNW_NO_INFO => return Err(Stop::NoInfo),
        _ => return Err(Stop::Unsupported),
    };
    let ra = load(cfa.wrapping_sub(8))?;
    let caller_rbp = if row.kind == UNW_CFA_PLT || row.rbp_offset == 0 {
        frame.rbp
    } else if row.rbp_offset == UNW_RBP_UNDEFINED {
        None
    } else {
        Some(load(
            cfa.wrapping_add_signed(8 * i64::from(row.rbp_offset)),
        )?)
    };
    caller(ra, cfa, caller_rbp, false)
}

fn caller(rip: u64, rsp: u64, rbp: Option<u64>, exact_pc: bool) -> Result<Frame, Stop> {
    if rip == 0 {
        return Err(Stop::End);
    }
    Ok(Frame {
        rip,
        rsp,
        rbp,
        exact_pc,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::unwind::abi::{UnwindRow, UNW_UNSUPPORTED};

    fn row(pc: u32, kind: u8, rbp_offset: i8, cfa_offset: i16) -> UnwindRow {
        UnwindRow {
            pc,
            kind,
            rbp_offset,
            cfa_offset,
        }
    }

    fn table(rows: Vec<UnwindRow>) -> UnwindTable {
        UnwindTable {
            rows,
            ..UnwindTable::default()
        }
    }

    fn memory(words: &[(u64, u64)]) -> impl FnMut(u64) -> Option<u64> {
        let map: HashMap<u64, u64> = words.iter().copied().collect();
        move |addr| map.get(&addr).copied()
    }

    const BIAS: u64 = 0x5555_0000_0000;

    #[test]
    fn rsp_rule_with_saved_rbp_and_return_address() {
        // A function after `push rbp`: CFA = rsp+16, caller rbp at CFA-16.
        let t = table(vec![
            row(0x1000, UNW_CFA_RSP, -2, 16),
            row(0x1100, UNW_NO_INFO, 0, 0),
        ]);
        let mut mem = memory(&[(0x7000 + 8, 0xdead), (0x7000, 0xbeef)]);
        let leaf = Frame::leaf(BIAS + 0x1010, 0x7000, 1);
        let next = step(&t, BIAS, &leaf, &mut mem).unwrap();
        assert_eq!(
            next,
            Frame {
                rip: 0xdead,
                rsp: 0x7010,
                rbp: Some(0xbeef),
                exact_pc: false
            }
        );
    }

    #[test]
    fn return_addresses_look_up_pc_minus_one() {
        // 0x1100 starts another function's row; a return address 0x1100 still belongs to 0x10ff.
        let t = table(vec![
            row(0x1000, UNW_CFA_RSP, 0, 8),
            row(0x1100, UNW_END, 0, 0),
        ]);
        let mut mem = memory(&[(0x7000, 0x42)]);
        let frame = Frame {
            rip: BIAS + 0x1100,
            rsp: 0x7000,
            rbp: Some(5),
            exact_pc: false,
        };
        let next = step(&t, BIAS, &frame, &mut mem).unwrap();
        assert_eq!((next.rip, next.rsp, next.rbp), (0x42, 0x7008, Some(5)));
        let leaf = Frame::leaf(BIAS + 0x1100, 0x7000, 5);
        assert_eq!(step(&t, BIAS, &leaf, &mut mem), Err(Stop::End));
    }

    #[test]
    fn rbp_rule_and_undefined_rbp() {
        let t = table(vec![
            row(0x10, UNW_CFA_RBP, -2, 16),
            row(0x20, UNW_CFA_RSP, UNW_RBP_UNDEFINED, 8),
        ]);
        let mut mem = memory(&[(0x9008, 0x25), (0x9000, 0x1234), (0x7ff8, 0x15)]);
        let leaf = Frame::leaf(BIAS + 0x10, 0x100, 0x9000);
        let next = step(&t, BIAS, &leaf, &mut mem).unwrap();
        assert_eq!((next.rip, next.rsp, next.rbp), (0x25, 0x9010, Some(0x1234)));
        let f = Frame::leaf(BIAS + 0x21, 0x7ff8, 0x1);
        let next = step(&t, BIAS, &f, &mut mem).unwrap();
        assert_eq!((next.rip, next.rbp), (0x15, None));
        // The caller's rule needs rbp.
        let again = Frame {
            rip: BIAS + 0x11,
            ..next
        };
        assert_eq!(step(&t, BIAS, &again, &mut mem), Err(Stop::RbpUndefined));
    }

    #[test]
    fn plt_threshold() {
        let t = table(vec![row(0x1020, UNW_CFA_PLT, 11, 8)]);
        let mut mem = memory(&[(0x7000, 0xa), (0x7008, 0xb)]);
        // rip & 15 = 10 < 11: CFA = rsp + 8, RA at rsp.
        let f = Frame::leaf(BIAS + 0x102a, 0x7000, 3);
        assert_eq!(step(&t, BIAS, &f, &mut mem).unwrap().rip, 0xa);
        // rip & 15 = 11: the stub pushed its index: CFA = rsp + 16.
        let f = Frame::leaf(BIAS + 0x102b, 0x7000, 3);
        let next = step(&t, BIAS, &f, &mut mem).unwrap();
        assert_eq!((next.rip, next.rsp, next.rbp), (0xb, 0x7010, Some(3)));
    }

    #[test]
    fn deref_rules() {
        let t = table(vec![
            row(0x10, UNW_CFA_DEREF_RBP, 0, -8),
            row(0x20, UNW_CFA_DEREF_RSP, 0, 24),
        ]);
        let mut mem = memory(&[(0x8ff8, 0x6000), (0x5ff8, 0x77), (0x7018, 0x6000)]);
        let f = Frame::leaf(BIAS + 0x10, 0x100, 0x9000);
        let next = step(&t, BIAS, &f, &mut mem).unwrap();
        assert_eq!((next.rip, next.rsp), (0x77, 0x6000));
        let f = Frame::leaf(BIAS + 0x20, 0x7000, 0x9000);
        assert_eq!(step(&t, BIAS, &f, &mut mem).unwrap().rsp, 0x6000);
        // A missing word is a read failure with its address.
        let f = Frame::leaf(BIAS + 0x20, 0x6000, 0x9000);
        assert_eq!(step(&t, BIAS, &f, &mut mem), Err(Stop::ReadFailed(0x6018)));
    }

    #[test]
    fn frame_pointer_and_signal_frames() {
        let t = table(vec![
            row(0x10, UNW_FRAME_POINTER, 0, 0),
            row(0x40, UNW_SIGNAL, 0, 0),
        ]);
        let mut mem = memory(&[(0x9000, 0x9100), (0x9008, 0x33)]);
        let f = Frame::leaf(BIAS + 0x15, 0x8000, 0x9000);
        let next = step(&t, BIAS, &f, &mut mem).unwrap();
        assert_eq!((next.rip, next.rsp, next.rbp), (0x33, 0x9010, Some(0x9100)));

        let uc = 0x5000;
        let g = uc + UCONTEXT_GREGS_OFFSET;
        let mut mem = memory(&[(g + 80, 0x111), (g + 120, 0x222), (g + 128, BIAS + 0x77)]);
        // A handler returned into __restore_rt: rip is a return address (pc-1 lookup).
        let f = Frame {
            rip: BIAS + 0x41,
            rsp: uc,
            rbp: None,
            exact_pc: false,
        };
        let next = step(&t, BIAS, &f, &mut mem).unwrap();
        assert_eq!(
            next,
            Frame {
                rip: BIAS + 0x77,
                rsp: 0x222,
                rbp: Some(0x111),
                exact_pc: true
            }
        );
    }

    #[test]
    fn stops() {
        let t = table(vec![
            row(0x10, UNW_END, 0, 0),
            row(0x20, UNW_UNSUPPORTED, 0, 0),
            row(0x30, UNW_NO_INFO, 0, 0),
            row(0x40, 99, 0, 0),
            row(0x50, UNW_CFA_RSP, 0, 8),
        ]);
        let mut mem = memory(&[(0x7000, 0)]);
        let at = |pc: u64| Frame::leaf(BIAS + pc, 0x7000, 0);
        assert_eq!(step(&t, BIAS, &at(0x10), &mut mem), Err(Stop::End));
        assert_eq!(step(&t, BIAS, &at(0x20), &mut mem), Err(Stop::Unsupported));
        assert_eq!(step(&t, BIAS, &at(0x30), &mut mem), Err(Stop::NoInfo));
        assert_eq!(step(&t, BIAS, &at(0x40), &mut mem), Err(Stop::Unsupported));
        assert_eq!(step(&t, BIAS, &at(0x5), &mut mem), Err(Stop::NoInfo));
        // Below the bias: not this file.
        assert_eq!(
            step(&t, BIAS, &Frame::leaf(5, 0, 0), &mut mem),
            Err(Stop::NoInfo)
        );
        // A zero return address ends the stack.
        assert_eq!(step(&t, BIAS, &at(0x50), &mut mem), Err(Stop::End));
    }
}
