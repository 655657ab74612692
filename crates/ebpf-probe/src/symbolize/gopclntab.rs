//! Function table of Go binaries from `.gopclntab`, which stays in stripped (`-s -w`) Go
//! binaries. Handles the header layouts of Go 1.2–1.15 (magic `0xfffffffb`), 1.16–1.17
//! (`0xfffffffa`), 1.18–1.19 (`0xfffffff0`) and 1.20+ (`0xfffffff1`), little endian.

use super::table::{FileSource, SymbolTableBuilder};

/// pclntab header versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoVersion {
    /// Go 1.2 to 1.15.
    Go12,
    /// Go 1.16 and 1.17.
    Go116,
    /// Go 1.18 and 1.19.
    Go118,
    /// Go 1.20 and later.
    Go120,
}

/// Errors reading a pclntab.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PclntabError {
    /// Magic or header not understood.
    #[error("gopclntab: unknown header")]
    BadHeader,
    /// An offset points outside the section.
    #[error("gopclntab: truncated")]
    Truncated,
}

struct Reader<'a> {
    data: &'a [u8],
    ptr: usize,
}

impl Reader<'_> {
    fn u32(&self, off: usize) -> Result<u32, PclntabError> {
        let b = self.data.get(off..off + 4).ok_or(PclntabError::Truncated)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn uptr(&self, off: usize) -> Result<u64, PclntabError> {
        if self.ptr == 4 {
            return self.u32(off).map(u64::from);
        }
        let b = self.data.get(off..off + 8).ok_or(PclntabError::Truncated)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// The i-th pointer-sized header word after the 8-byte preamble.
    fn word(&self, i: usize) -> Result<usize, PclntabError> {
        self.offset(self.uptr(8 + i * self.ptr)?)
    }
    /// An offset read from the table; never beyond the data (keeps sums from overflowing).
    fn offset(&self, v: u64) -> Result<usize, PclntabError> {
        usize::try_from(v)
            .ok()
            .filter(|&v| v <= self.data.len())
            .ok_or(PclntabError::Truncated)
    }
    fn cstr(&self, off: usize) -> Result<&str, PclntabError> {
        let rest = self.data.get(off..).ok_or(PclntabError::Truncated)?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(PclntabError::Truncated)?;
        Ok(std::str::from_utf8(&rest[..end]).unwrap_or(""))
    }
}

/// Which header layout `data` has.
pub fn version(data: &[u8]) -> Result<GoVersion, PclntabError> {
    if data.len() < 16 || data[4] != 0 || data[5] != 0 || !matches!(data[7], 4 | 8) {
        return Err(PclntabError::BadHeader);
    }
    match u32::from_le_bytes([data[0], data[1], data[2], data[3]]) {
        0xffff_fffb => Ok(GoVersion::Go12),
        0xffff_fffa => Ok(GoVersion::Go116),
        0xffff_fff0 => Ok(GoVersion::Go118),
        0xffff_fff1 => Ok(GoVersion::Go120),
        _ => Err(PclntabError::BadHeader),
    }
}

/// Adds every function of the pclntab to `out` (entry address, size up to the next function,
/// name). `text_start` replaces a zero `textStart` in 1.18+ headers (relocated PIE binaries).
/// With `names_in` (the file holding `data` and the offset of `data` in it), names are left
/// in the file and read on lookup; otherwise they are copied. Returns the number of functions.
pub fn read_functions(
    data: &[u8],
    text_start: u64,
    names_in: Option<(FileSource, u64)>,
    out: &mut SymbolTableBuilder,
) -> Result<usize, PclntabError> {
    let ver = version(data)?;
    let ptr = usize::from(data[7]);
    let r = Reader { data, ptr };
    let nfunc = r.word(0)?;
    if nfunc > data.len() / 8 {
        return Err(PclntabError::Truncated);
    }
    // (entry, name) per function plus the end address of the last one.
    let mut funcs: Vec<(u64, &str)> = Vec::with_capacity(nfunc + 1);
    match ver {
        GoVersion::Go118 | GoVersion::Go120 => {
            let mut text = r.uptr(8 + 2 * ptr)?;
            if text == 0 {
                text = text_start;
            }
            let funcname = r.word(3)?;
            let functab = r.word(7)?;
            for i in 0..=nfunc {
                let entry_off = r.u32(functab + i * 8)?;
                let name = if i < nfunc {
                    let func_off = r.u32(functab + i * 8 + 4)? as usize;
                    let name_off = r.u32(functab + func_off + 4)? as usize;
                    r.cstr(funcname + name_off)?
                } else {
                    ""
                };
                funcs.push((text + u64::from(entry_off), name));
            }
        }
        GoVersion::Go116 => {
            let funcname = r.word(2)?;
            let functab = r.word(6)?;
            for i in 0..=nfunc {
                let entry = r.uptr(functab + i * 2 * ptr)?;
                let name = if i < nfunc {
                    let func_off = r.offset(r.uptr(functab + i * 2 * ptr + ptr)?)?;
                    let name_off = r.u32(functab + func_off + ptr)? as usize;
                    r.cstr(funcname + name_off)?
                } else {
                    ""
                };
                funcs.push((entry, name));
            }
        }
        GoVersion::Go12 => {
            let functab = 8 + ptr;
            for i in 0..=nfunc {
                let entry = r.uptr(functab + i * 2 * ptr)?;
                let name = if i < nfunc {
                    let func_off = r.offset(r.uptr(functab + i * 2 * ptr + ptr)?)?;
                    let name_off = r.u32(func_off + ptr)? as usize;
                    r.cstr(name_off)?
                } else {
                    ""
                };
                funcs.push((entry, name));
            }
        }
    }
    for w in funcs.windows(2) {
        let (entry, name) = w[0];
        let size = w[1].0.saturating_sub(entry);
        // `name` borrows from `data`: its position there is its position in the file.
        let file_offset = names_in.and_then(|(src, base)| {
            let at = base + (name.as_ptr() as usize - data.as_ptr() as usize) as u64;
            Some((src, u32::try_from(at).ok()?))
        });
        match file_offset {
            Some((src, at)) if !name.is_empty() => out.push_lazy(entry, size, src, at),
            _ => out.push(entry, size, name),
        }
    }
    Ok(nfunc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_u32(v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&x.to_le_bytes());
    }
    fn put_u64(v: &mut Vec<u8>, x: u64) {
        v.extend_from_slice(&x.to_le_bytes());
    }

    /// A synthetic Go 1.18/1.20 pclntab with two functions.
    fn go118(magic: u32, text: u64) -> Vec<u8> {
        let names = b"main.main\0main.hotLeaf\0";
        let header = 8 + 8 * 8;
        let funcname = header;
        let functab = funcname + names.len();
        // functab: 3 entries (2 funcs + end), then two _func records (entryOff, nameOff)
        let func_recs = 3 * 8;
        let mut v = Vec::new();
        put_u32(&mut v, magic);
        v.extend_from_slice(&[0, 0, 1, 8]);
        for w in [2u64, 0, text, funcname as u64, 0, 0, 0, functab as u64] {
            put_u64(&mut v, w);
        }
        v.extend_from_slice(names);
        for (entry, func) in [
            (0x0u32, func_recs as u32),
            (0x40, func_recs as u32 + 8),
            (0x90, 0),
        ] {
            put_u32(&mut v, entry);
            put_u32(&mut v, func);
        }
        for (entry, name) in [(0u32, 0u32), (0x40, 10)] {
            put_u32(&mut v, entry);
            put_u32(&mut v, name);
        }
        v
    }

    #[test]
    fn synthetic_go118_and_go120() {
        for magic in [0xffff_fff0, 0xffff_fff1] {
            let data = go118(magic, 0x401000);
            let mut b = SymbolTableBuilder::default();
            assert_eq!(read_functions(&data, 0, None, &mut b), Ok(2));
            let t = b.build();
            assert_eq!(t.lookup(0x401000).as_deref(), Some("main.main"));
            assert_eq!(t.lookup(0x40103f).as_deref(), Some("main.main"));
            assert_eq!(t.lookup(0x401050).as_deref(), Some("main.hotLeaf"));
            assert_eq!(t.lookup(0x401090), None);
        }
        // zero textStart falls back to the .text address given
        let mut b = SymbolTableBuilder::default();
        read_functions(&go118(0xffff_fff0, 0), 0x1000, None, &mut b).unwrap();
        assert_eq!(b.build().lookup(0x1041).as_deref(), Some("main.hotLeaf"));
    }

    #[test]
    fn synthetic_go116() {
        let names = b"main.main\0runtime.goexit\0";
        let header = 8 + 7 * 8;
        let funcname = header;
        let functab = funcname + names.len();
        let mut v = Vec::new();
        put_u32(&mut v, 0xffff_fffa);
        v.extend_from_slice(&[0, 0, 1, 8]);
        for w in [2u64, 0, funcname as u64, 0, 0, 0, functab as u64] {
            put_u64(&mut v, w);
        }
        v.extend_from_slice(names);
        let recs = 3 * 16;
        for (entry, func) in [
            (0x401000u64, recs as u64),
            (0x401100, recs as u64 + 16),
            (0x401180, 0),
        ] {
            put_u64(&mut v, entry);
            put_u64(&mut v, func);
        }
        for (entry, name) in [(0x401000u64, 0u32), (0x401100, 10)] {
            put_u64(&mut v, entry);
            put_u32(&mut v, name);
            put_u32(&mut v, 0);
        }
        let mut b = SymbolTableBuilder::default();
        assert_eq!(read_functions(&v, 0, None, &mut b), Ok(2));
        let t = b.build();
        assert_eq!(t.lookup(0x4010ff).as_deref(), Some("main.main"));
        assert_eq!(t.lookup(0x401170).as_deref(), Some("runtime.goexit"));
        assert_eq!(t.lookup(0x401180), None);
    }

    #[test]
    fn synthetic_go12() {
        // header(8) + nfunc(8) + functab 3×16, then _func records, then names
        let functab = 16;
        let recs = functab + 3 * 16;
        let names_off = recs + 2 * 16;
        let mut v = Vec::new();
        put_u32(&mut v, 0xffff_fffb);
        v.extend_from_slice(&[0, 0, 1, 8]);
        put_u64(&mut v, 2);
        for (entry, func) in [
            (0x1000u64, recs as u64),
            (0x1010, recs as u64 + 16),
            (0x1020, 0),
        ] {
            put_u64(&mut v, entry);
            put_u64(&mut v, func);
        }
        for (entry, name) in [
            (0x1000u64, names_off as u32),
            (0x1010, names_off as u32 + 2),
        ] {
            put_u64(&mut v, entry);
            put_u32(&mut v, name);
            put_u32(&mut v, 0);
        }
        v.extend_from_slice(b"a\0b\0");
        let mut b = SymbolTableBuilder::default();
        assert_eq!(read_functions(&v, 0, None, &mut b), Ok(2));
        let t = b.build();
        assert_eq!(t.lookup(0x100f).as_deref(), Some("a"));
        assert_eq!(t.lookup(0x1010).as_deref(), Some("b"));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(version(&[0; 32]), Err(PclntabError::BadHeader));
        let mut d = go118(0xffff_fff0, 0x1000);
        d.truncate(80);
        assert_eq!(
            read_functions(&d, 0, None, &mut SymbolTableBuilder::default()),
            Err(PclntabError::Truncated)
        );
    }
}
