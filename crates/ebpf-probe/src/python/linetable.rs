//! Instruction offset → source line, for the three line-table formats of CPython 3.6–3.13:
//! `co_lnotab` (≤3.9, `Objects/lnotab_notes.txt`), the 3.10 `co_linetable` (byte ranges, same
//! file in 3.10) and the 3.11+ location table (`Objects/locations.md`). Pure functions on bytes
//! read from another process: they never panic and never loop more than once over the table.

use super::offsets::{LINES_310, LINES_LNOTAB, LINES_LOCATIONS};
use thiserror::Error;

/// A table that cannot be decoded up to the instruction asked for.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LineTableError {
    /// A 3.11+ entry is cut short, or a byte that should start an entry lacks bit 7.
    #[error("location table corrupt at byte {0}")]
    Corrupt(usize),
    /// The format code is none of `LINES_*`.
    #[error("unknown line table format {0}")]
    Format(u32),
}

/// The line of the instruction at byte offset `offset` of the bytecode, `Ok(None)` when the
/// table says the instruction has no line (3.10+) or does not cover it.
pub fn line_for_offset(
    format: u32,
    table: &[u8],
    firstlineno: i32,
    offset: i64,
) -> Result<Option<i32>, LineTableError> {
    match format {
        LINES_LNOTAB => Ok(Some(lnotab_line(table, firstlineno, offset))),
        LINES_310 => Ok(linetable310_line(table, firstlineno, offset)),
        LINES_LOCATIONS => locations_line(table, firstlineno, offset),
        other => Err(LineTableError::Format(other)),
    }
}

/// `co_lnotab` (3.6–3.9): pairs (unsigned bytecode increment, signed line increment); the line
/// of `offset` adds every line increment whose pair starts at or before it. A trailing odd
/// byte is ignored, as CPython does (it reads `size / 2` pairs).
pub fn lnotab_line(table: &[u8], firstlineno: i32, offset: i64) -> i32 {
    let mut line = firstlineno;
    let mut addr: i64 = 0;
    for pair in table.chunks_exact(2) {
        addr += i64::from(pair[0]);
        if addr > offset {
            break;
        }
        line = line.wrapping_add(i32::from(pair[1] as i8));
    }
    line
}

/// The 3.10 `co_linetable`: pairs (unsigned length in bytes, signed line delta), each one the
/// range `[end, end + length)` after the previous; a delta of −128 means "no line" for that
/// range without changing the running line.
pub fn linetable310_line(table: &[u8], firstlineno: i32, offset: i64) -> Option<i32> {
    let mut line = firstlineno;
    let mut end: i64 = 0;
    for pair in table.chunks_exact(2) {
        let start = end;
        end += i64::from(pair[0]);
        let delta = pair[1] as i8;
        let this = if delta == -128 {
            None
        } else {
            line = line.wrapping_add(i32::from(delta));
            Some(line)
        };
        if start <= offset && offset < end {
            return this;
        }
    }
    None
}

/// One decoded 3.11+ location entry: the code units it covers and its start line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// First code unit covered.
    pub start_unit: u64,
    /// Code units covered (1–8).
    pub units: u64,
    /// Start line, `None` for code 15 (no location).
    pub line: Option<i32>,
}

/// Iterator over the entries of a 3.11+ location table; it stops (yielding one error) at the
/// first malformed entry.
pub struct Locations<'a> {
    table: &'a [u8],
    pos: usize,
    unit: u64,
    line: i32,
    failed: bool,
}

impl<'a> Locations<'a> {
    /// Starts at `co_firstlineno`.
    pub fn new(table: &'a [u8], firstlineno: i32) -> Self {
        Self {
            table,
            pos: 0,
            unit: 0,
            line: firstlineno,
            failed: false,
        }
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.table.get(self.pos)?;
        // Only the first byte of an entry has bit 7 set.
        if b & 0x80 != 0 {
            return None;
        }
        self.pos += 1;
        Some(b)
    }

    /// Unsigned: 6-bit chunks, least significant first, bit 6 = more follow.
    fn varint(&mut self) -> Option<u64> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift < 64 {
                value |= u64::from(b & 0x3f) << shift;
            }
            shift = shift.saturating_add(6);
            if b & 0x40 == 0 {
                return Some(value);
            }
        }
    }

    /// Signed: the unsigned value with the sign in bit 0.
    fn svarint(&mut self) -> Option<i64> {
        let u = self.varint()?;
        let magnitude = (u >> 1) as i64;
        Some(if u & 1 != 0 { -magnitude } else { magnitude })
    }

    fn entry(&mut self) -> Option<Location> {
        let first = *self.table.get(self.pos)?;
        if first & 0x80 == 0 {
            return None;
        }
        self.pos += 1;
        let code = (first >> 3) & 0x0f;
        let units = u64::from(first & 0x07) + 1;
        let line = match code {
            // Short form: one byte of column data.
            0..=9 => {
                self.byte()?;
                Some(self.line)
            }
            // One-line form: line delta in the code, start and end column bytes.
            10..=12 => {
                self.byte()?;
                self.byte()?;
                self.line = self.line.wrapping_add(i32::from(code) - 10);
                Some(self.line)
            }
            // No column: a signed line delta only.
            13 => {
                let delta = self.svarint()?;
                self.line = self.line.wrapping_add(delta as i32);
                Some(self.line)
            }
            // Long form: line delta, end line delta, start column, end column.
            14 => {
                let delta = self.svarint()?;
                self.varint()?;
                self.varint()?;
                self.varint()?;
                self.line = self.line.wrapping_add(delta as i32);
                Some(self.line)
            }
            _ => None,
        };
        let loc = Location {
            start_unit: self.unit,
            units,
            line,
        };
        self.unit += units;
        Some(loc)
    }
}

impl Iterator for Locations<'_> {
    type Item = Result<Location, LineTableError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.table.len() {
            return None;
        }
        let at = self.pos;
        match self.entry() {
            Some(loc) => Some(Ok(loc)),
            None => {
                self.failed = true;
                Some(Err(LineTableError::Corrupt(at)))
            }
        }
    }
}

/// The 3.11+ location table: the entry covering code unit `offset / 2`.
pub fn locations_line(
    table: &[u8],
    firstlineno: i32,
    offset: i64,
) -> Result<Option<i32>, LineTableError> {
    if offset < 0 {
        return Ok(None);
    }
    let unit = (offset / 2) as u64;
    for loc in Locations::new(table, firstlineno) {
        let loc = loc?;
        if loc.start_unit <= unit && unit < loc.start_unit + loc.units {
            return Ok(loc.line);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    // `def f(a):\n    x = a\n\n    y = 2\n    return x + y` (firstlineno 1): the tables and the
    // lines per even offset were printed by pyenv's 3.9.18, 3.10.13 and 3.11.7
    // (`co_lnotab.hex()` / `co_linetable.hex()` and `ctypes.pythonapi.PyCode_Addr2Line`);
    // tests/python_readers.rs re-checks every code object of a module live. The other tables
    // are built by hand from the format notes, to reach every branch.
    const CAPTURED_LINES: [i32; 8] = [2, 2, 4, 4, 5, 5, 5, 5];

    fn lines_of(format: u32, table: &[u8], units: i64) -> Vec<Option<i32>> {
        (0..units)
            .map(|u| line_for_offset(format, table, 1, u * 2).unwrap())
            .collect()
    }

    #[test]
    fn captured_tables_39_310_311() {
        let want: Vec<Option<i32>> = CAPTURED_LINES.iter().map(|&l| Some(l)).collect();
        let lnotab = [0x00, 0x01, 0x04, 0x02, 0x04, 0x01];
        assert_eq!(lines_of(LINES_LNOTAB, &lnotab, 8), want);
        let t310 = [0x04, 0x01, 0x04, 0x02, 0x08, 0x01];
        assert_eq!(lines_of(LINES_310, &t310, 8), want);
        let t311 = [
            0x80, 0x00, 0xd8, 0x08, 0x09, 0x80, 0x41, 0xe0, 0x08, 0x09, 0x80, 0x41, 0xd8, 0x0b,
            0x0c, 0x88, 0x71, 0x89, 0x35, 0x80, 0x4c,
        ];
        let mut want311 = vec![Some(1)];
        want311.extend(&want);
        want311.push(Some(5));
        assert_eq!(lines_of(LINES_LOCATIONS, &t311, 10), want311);
    }

    #[test]
    fn lnotab_negative_and_odd() {
        // Negative increments (a loop's back edge on an earlier line) and a trailing odd byte.
        let table = [0x02, 0x03, 0x02, 0xfe, 0x07];
        assert_eq!(lnotab_line(&table, 10, 0), 10);
        assert_eq!(lnotab_line(&table, 10, 2), 13);
        assert_eq!(lnotab_line(&table, 10, 4), 11);
        assert_eq!(lnotab_line(&table, 10, 100), 11);
    }

    /// 3.10: ranges, a −128 range without a line, a zero-length range.
    #[test]
    fn linetable_310() {
        let table = [0x04, 0x01, 0x02, 0x80, 0x00, 0x02, 0x06, 0x00];
        assert_eq!(linetable310_line(&table, 1, 0), Some(2));
        assert_eq!(linetable310_line(&table, 1, 2), Some(2));
        assert_eq!(linetable310_line(&table, 1, 4), None);
        // The empty range moves the line by 2, the next range keeps it.
        assert_eq!(linetable310_line(&table, 1, 6), Some(4));
        assert_eq!(linetable310_line(&table, 1, 10), Some(4));
        assert_eq!(linetable310_line(&table, 1, 12), None);
    }

    /// 3.11+: every entry kind, lines from `co_firstlineno` 5.
    #[test]
    fn locations_every_kind() {
        let table = [
            0x80 | (13 << 3), // no column, 1 unit, line delta +0 (svarint 0): RESUME
            0x00,
            0x80 | (11 << 3) | 1, // one-line form, 2 units, +1 -> 6
            0x04,
            0x09,
            0x80 | (2 << 3) | 2, // short form, 3 units, same line 6
            0x25,
            0x80 | (14 << 3), // long form, 1 unit, +200 -> 206 (svarint 400 = 0x50,0x06)
            0x50,
            0x06,
            0x01,
            0x02,
            0x03,
            0x80 | (15 << 3) | 1, // no location, 2 units
            0x80 | (13 << 3),     // no column, -201 -> 5 (svarint 403 = 0x53,0x06)
            0x53,
            0x06,
        ];
        let at = |unit: i64| locations_line(&table, 5, unit * 2).unwrap();
        assert_eq!(at(0), Some(5));
        assert_eq!(at(1), Some(6));
        assert_eq!(at(2), Some(6));
        assert_eq!(at(3), Some(6));
        assert_eq!(at(5), Some(6));
        assert_eq!(at(6), Some(206));
        assert_eq!(at(7), None);
        assert_eq!(at(8), None);
        assert_eq!(at(9), Some(5));
        assert_eq!(at(10), None);
        assert_eq!(locations_line(&table, 5, -2), Ok(None));
    }

    #[test]
    fn locations_reports_corruption() {
        // Continuation byte where an entry should start.
        assert_eq!(
            locations_line(&[0x01], 1, 0),
            Err(LineTableError::Corrupt(0))
        );
        // Long form cut short.
        assert_eq!(
            locations_line(&[0x80 | (14 << 3), 0x02], 1, 0),
            Err(LineTableError::Corrupt(0))
        );
        // An entry before the corruption still answers.
        assert_eq!(
            locations_line(&[0x80 | (13 << 3), 0x02, 0x01], 1, 0),
            Ok(Some(2))
        );
        assert_eq!(
            line_for_offset(7, &[], 1, 0),
            Err(LineTableError::Format(7))
        );
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(table in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                                first in proptest::num::i32::ANY, off in proptest::num::i64::ANY) {
            for format in [LINES_LNOTAB, LINES_310, LINES_LOCATIONS] {
                let _ = line_for_offset(format, &table, first, off);
            }
            let n = Locations::new(&table, first).count();
            proptest::prop_assert!(n <= table.len());
        }
    }
}
