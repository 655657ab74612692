//! One gimli CFI row → one compact [`UnwindRow`] rule: the patterns rill's BPF walk can follow
//! (CFA = rsp/rbp + offset, the GCC PLT expressions, `*(rsp|rbp + offset)`) and, for the rest,
//! `UNW_UNSUPPORTED` counted by reason in [`UnsupportedCounts`].

use gimli::{
    CfaRule, Encoding, Format, Operation, RegisterRule, UnwindSection, UnwindTableRow, X86_64,
};

use super::abi::{
    UNW_CFA_DEREF_RBP, UNW_CFA_DEREF_RSP, UNW_CFA_PLT, UNW_CFA_RBP, UNW_CFA_RSP, UNW_END,
    UNW_RBP_UNDEFINED, UNW_UNSUPPORTED,
};
use super::cfi::Slice;

/// Why rows were `UNW_UNSUPPORTED`, one counter per reason (counted per CFI row, before merging).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsupportedCounts {
    /// The CFA is based on a register other than rsp/rbp (e.g. r10 during a DRAP prologue).
    pub cfa_register: u64,
    /// A `DW_CFA_def_cfa_expression` that is neither a PLT pattern nor `breg(rsp|rbp); deref`.
    pub cfa_expression: u64,
    /// The CFA offset does not fit the row's i16.
    pub cfa_offset_range: u64,
    /// The return address is not saved at CFA-8.
    pub return_address: u64,
}

impl UnsupportedCounts {
    /// All reasons together.
    pub fn total(&self) -> u64 {
        self.cfa_register + self.cfa_expression + self.cfa_offset_range + self.return_address
    }
}

/// The rule of one row, without its pc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub kind: u8,
    pub rbp_offset: i8,
    pub cfa_offset: i16,
}

impl Rule {
    pub(crate) const fn new(kind: u8) -> Self {
        Rule {
            kind,
            rbp_offset: 0,
            cfa_offset: 0,
        }
    }
}

/// Per-row counters filled while converting.
#[derive(Debug, Default)]
pub(crate) struct ConvertStats {
    pub unsupported: UnsupportedCounts,
    pub rbp_undefined: u64,
    pub end_rows: u64,
}

const RSP: u16 = X86_64::RSP.0;
const RBP: u16 = X86_64::RBP.0;

/// The two GCC/binutils `.plt`/`.plt.sec` CFA expressions, byte for byte:
/// `DW_OP_breg7 (rsp) N; DW_OP_breg16 (rip) 0; DW_OP_lit15; DW_OP_and; DW_OP_lit11|lit10;
/// DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus` → (N, threshold).
pub(crate) fn match_plt_expression(bytes: &[u8]) -> Option<(i16, i8)> {
    match bytes {
        [0x77, n, 0x80, 0x00, 0x3f, 0x1a, lit, 0x2a, 0x33, 0x24, 0x22]
            if *n < 0x40 && (*lit == 0x3b || *lit == 0x3a) =>
        {
            // A one-byte SLEB128 below 0x40 is the value itself.
            Some((i16::from(*n), if *lit == 0x3b { 11 } else { 10 }))
        }
        _ => None,
    }
}

/// `DW_OP_breg7|breg6 N; DW_OP_deref` → (kind, N).
fn match_deref_expression(bytes: &[u8]) -> Option<(u8, i64)> {
    let encoding = Encoding {
        format: Format::Dwarf32,
        version: 4,
        address_size: 8,
    };
    let mut ops = gimli::Expression(Slice::new(bytes, gimli::LittleEndian)).operations(encoding);
    let first = ops.next().ok()??;
    let second = ops.next().ok()??;
    if ops.next().ok()?.is_some() {
        return None;
    }
    let (register, offset) = match first {
        Operation::RegisterOffset {
            register, offset, ..
        } => (register.0, offset),
        _ => return None,
    };
    match second {
        Operation::Deref {
            size: 8,
            space: false,
            ..
        } => {}
        _ => return None,
    }
    match register {
        RSP => Some((UNW_CFA_DEREF_RSP, offset)),
        RBP => Some((UNW_CFA_DEREF_RBP, offset)),
        _ => None,
    }
}

/// Converts one gimli row. `section` resolves the row's expressions.
pub(crate) fn convert_row<'a, S>(
    row: &UnwindTableRow<usize>,
    section: &S,
    stats: &mut ConvertStats,
) -> Rule
where
    S: UnwindSection<Slice<'a>>,
{
    let unsupported = Rule::new(UNW_UNSUPPORTED);
    // The return address: undefined (DW_CFA_undefined rip) marks the outermost frame.
    match row.register(X86_64::RA) {
        None | Some(RegisterRule::Undefined) => {
            stats.end_rows += 1;
            return Rule::new(UNW_END);
        }
        Some(RegisterRule::Offset(-8)) => {}
        Some(_) => {
            stats.unsupported.return_address += 1;
            return unsupported;
        }
    }
    let (kind, offset, plt_threshold) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => match register.0 {
            RSP => (UNW_CFA_RSP, *offset, None),
            RBP => (UNW_CFA_RBP, *offset, None),
            _ => {
                stats.unsupported.cfa_register += 1;
                return unsupported;
            }
        },
        CfaRule::Expression(expr) => {
            let bytes = expr.get(section).map(|e| e.0.slice()).unwrap_or(&[]);
            if let Some((n, threshold)) = match_plt_expression(bytes) {
                (UNW_CFA_PLT, i64::from(n), Some(threshold))
            } else if let Some((kind, n)) = match_deref_expression(bytes) {
                (kind, n, None)
            } else {
                stats.unsupported.cfa_expression += 1;
                return unsupported;
            }
        }
    };
    let Ok(cfa_offset) = i16::try_from(offset) else {
        stats.unsupported.cfa_offset_range += 1;
        return unsupported;
    };
    let rbp_offset = match plt_threshold {
        Some(threshold) => threshold,
        None => rbp_rule(row.register(X86_64::RBP), stats),
    };
    Rule {
        kind,
        rbp_offset,
        cfa_offset,
    }
}

/// Where the caller's rbp is: unchanged (0), at CFA + 8k, or not recoverable.
fn rbp_rule<T: gimli::ReaderOffset>(rule: Option<RegisterRule<T>>, stats: &mut ConvertStats) -> i8 {
    match rule {
        // No rule: rbp is callee-saved and untouched so far (gimli cannot tell an explicit
        // DW_CFA_undefined rbp from no rule at all).
        None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => 0,
        Some(RegisterRule::Offset(off)) if off % 8 == 0 && off != 0 => {
            match i8::try_from(off / 8) {
                Ok(k) if k != UNW_RBP_UNDEFINED => k,
                _ => {
                    stats.rbp_undefined += 1;
                    UNW_RBP_UNDEFINED
                }
            }
        }
        Some(_) => {
            stats.rbp_undefined += 1;
            UNW_RBP_UNDEFINED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plt_patterns() {
        let plt = [0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];
        assert_eq!(match_plt_expression(&plt), Some((8, 11)));
        let mut sec = plt;
        sec[6] = 0x3a;
        assert_eq!(match_plt_expression(&sec), Some((8, 10)));
        let mut other = plt;
        other[6] = 0x39;
        assert_eq!(match_plt_expression(&other), None);
        assert_eq!(match_plt_expression(&plt[..10]), None);
    }

    #[test]
    fn deref_patterns() {
        // DW_OP_breg6 -8; DW_OP_deref
        assert_eq!(
            match_deref_expression(&[0x76, 0x78, 0x06]),
            Some((UNW_CFA_DEREF_RBP, -8))
        );
        // DW_OP_breg7 160 (SLEB 0xa0 0x01); DW_OP_deref
        assert_eq!(
            match_deref_expression(&[0x77, 0xa0, 0x01, 0x06]),
            Some((UNW_CFA_DEREF_RSP, 160))
        );
        // + DW_OP_plus_uconst 8: not expressible
        assert_eq!(
            match_deref_expression(&[0x77, 0x08, 0x06, 0x23, 0x08]),
            None
        );
        // breg10 (r10)
        assert_eq!(match_deref_expression(&[0x7a, 0x00, 0x06]), None);
        assert_eq!(match_deref_expression(&[]), None);
    }

    #[test]
    fn rbp_rules() {
        let mut stats = ConvertStats::default();
        assert_eq!(rbp_rule::<usize>(None, &mut stats), 0);
        assert_eq!(
            rbp_rule::<usize>(Some(RegisterRule::Offset(-16)), &mut stats),
            -2
        );
        assert_eq!(
            rbp_rule::<usize>(Some(RegisterRule::Offset(-1016)), &mut stats),
            -127
        );
        assert_eq!(stats.rbp_undefined, 0);
        assert_eq!(
            rbp_rule::<usize>(Some(RegisterRule::Offset(-1024)), &mut stats),
            UNW_RBP_UNDEFINED
        );
        assert_eq!(
            rbp_rule::<usize>(Some(RegisterRule::Offset(-12)), &mut stats),
            UNW_RBP_UNDEFINED
        );
        assert_eq!(
            rbp_rule::<usize>(Some(RegisterRule::Register(gimli::Register(3))), &mut stats),
            UNW_RBP_UNDEFINED
        );
        assert_eq!(stats.rbp_undefined, 3);
    }
}
