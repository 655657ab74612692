//! Function table of Go binaries from `.gopclntab`, which stays in stripped (`-s -w`) Go
//! binaries. Handles the header layouts of Go 1.2–1.15 (magic `0xfffffffb`), 1.16–1.17
//! (`0xfffffffa`), 1.18–1.19 (`0xfffffff0`) and 1.20+ (`0xfffffff1`), little endian.

use std::fs::File;
use std::os::unix::fs::FileExt;

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

/// Bytes of a pclntab at their offsets from its start: the whole table, or (read from a file)
/// only the header, the function table and the function records.
struct Reader<'a> {
    segments: Vec<(usize, &'a [u8])>,
    /// Length of the whole table (offsets are checked against it).
    len: usize,
    ptr: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self, off: usize, n: usize) -> Result<&'a [u8], PclntabError> {
        let end = off.checked_add(n).ok_or(PclntabError::Truncated)?;
        self.segments
            .iter()
            .find(|(start, b)| *start <= off && end <= start + b.len())
            .map(|(start, b)| &b[off - start..end - start])
            .ok_or(PclntabError::Truncated)
    }
    fn u32(&self, off: usize) -> Result<u32, PclntabError> {
        let b = self.bytes(off, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn uptr(&self, off: usize) -> Result<u64, PclntabError> {
        if self.ptr == 4 {
            return self.u32(off).map(u64::from);
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(off, 8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// The i-th pointer-sized header word after the 8-byte preamble.
    fn word(&self, i: usize) -> Result<usize, PclntabError> {
        self.offset(self.uptr(8 + i * self.ptr)?)
    }
    /// An offset read from the table; never beyond the table (keeps sums from overflowing).
    fn offset(&self, v: u64) -> Result<usize, PclntabError> {
        usize::try_from(v)
            .ok()
            .filter(|&v| v <= self.len)
            .ok_or(PclntabError::Truncated)
    }
    fn cstr(&self, off: usize) -> Result<&'a str, PclntabError> {
        let rest = self
            .segments
            .iter()
            .find(|(start, b)| *start <= off && off < start + b.len())
            .map(|(start, b)| &b[off - start..])
            .ok_or(PclntabError::Truncated)?;
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

/// Adds every function of the pclntab `data` to `out` (entry address, size up to the next
/// function, name). `text_start` replaces a zero `textStart` in 1.18+ headers (relocated PIE
/// binaries). With `names_in` (the file holding `data` and the offset of `data` in it), names
/// are left in the file and read on lookup; otherwise they are copied. Returns the number of
/// functions.
pub fn read_functions(
    data: &[u8],
    text_start: u64,
    names_in: Option<(FileSource, u64)>,
    out: &mut SymbolTableBuilder,
) -> Result<usize, PclntabError> {
    let ver = version(data)?;
    let r = Reader {
        segments: vec![(0, data)],
        len: data.len(),
        ptr: usize::from(data[7]),
    };
    add_functions(&r, ver, text_start, names_in, out)
}

/// Like [`read_functions`] for a pclntab of at most `len` bytes at offset `base` of `file`,
/// without reading it whole: for Go 1.16+ only the header, the function table and the
/// function records are read (the PC-value tables, most of a pclntab, are not), and names
/// stay in the file. Go 1.2–1.15 tables are read whole (at most [`MAX_WHOLE_TABLE`]).
pub fn read_functions_from_file(
    file: &File,
    base: u64,
    len: u64,
    text_start: u64,
    names: FileSource,
    out: &mut SymbolTableBuilder,
) -> Result<usize, PclntabError> {
    let len = usize::try_from(len).map_err(|_| PclntabError::Truncated)?;
    let read = |off: usize, n: usize| -> Result<Vec<u8>, PclntabError> {
        if off.checked_add(n).is_none_or(|end| end > len) {
            return Err(PclntabError::Truncated);
        }
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, base + off as u64)
            .map_err(|_| PclntabError::Truncated)?;
        Ok(buf)
    };
    let header = read(0, len.min(8 + 8 * 8))?;
    let ver = version(&header)?;
    let ptr = usize::from(header[7]);
    if ver == GoVersion::Go12 {
        if len > MAX_WHOLE_TABLE {
            return Err(PclntabError::Truncated);
        }
        let whole = read(0, len)?;
        return read_functions(&whole, text_start, Some((names, base)), out);
    }
    let head = Reader {
        segments: vec![(0, &header)],
        len,
        ptr,
    };
    let nfunc = head.word(0)?;
    let (functab, entry_size, record_at) = match ver {
        GoVersion::Go116 => (head.word(6)?, 2 * ptr, ptr),
        _ => (head.word(7)?, 8, 4),
    };
    if nfunc > len / entry_size {
        return Err(PclntabError::Truncated);
    }
    let table = read(functab, (nfunc + 1) * entry_size)?;
    // The records the table points at: one range from the first to the last.
    let tab = Reader {
        segments: vec![(functab, &table)],
        len,
        ptr,
    };
    let (mut lo, mut hi) = (usize::MAX, 0usize);
    for i in 0..nfunc {
        let off = match ver {
            GoVersion::Go116 => tab.offset(tab.uptr(functab + i * entry_size + ptr)?)?,
            _ => tab.u32(functab + i * entry_size + 4)? as usize,
        };
        lo = lo.min(off);
        hi = hi.max(off);
    }
    let records = if nfunc == 0 {
        Vec::new()
    } else {
        read(functab + lo, hi - lo + record_at + 4)?
    };
    let r = Reader {
        segments: vec![(0, &header), (functab, &table), (functab + lo, &records)],
        len,
        ptr,
    };
    add_functions(&r, ver, text_start, Some((names, base)), out)
}

/// Largest Go 1.2–1.15 pclntab read whole from a file.
pub const MAX_WHOLE_TABLE: usize = 256 << 20;

fn add_functions(
    r: &Reader<'_>,
    ver: GoVersion,
    text_start: u64,
    names_in: Option<(FileSource, u64)>,
    out: &mut SymbolTableBuilder,
) -> Result<usize, PclntabError> {
    let ptr = r.ptr;
    let nfunc = r.word(0)?;
    let entry_size = match ver {
        GoVersion::Go118 | GoVersion::Go120 => 8,
        _ => 2 * ptr,
    };
    if nfunc > r.len / entry_size {
        return Err(PclntabError::Truncated);
    }
    // (entry, offset of the name in the table) per function, then the end address.
    let mut funcs: Vec<(u64, usize)> = Vec::with_capacity(nfunc + 1);
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
                    funcname + r.u32(functab + func_off + 4)? as usize
                } else {
                    0
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
                    funcname + r.u32(functab + func_off + ptr)? as usize
                } else {
                    0
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
                    r.u32(func_off + ptr)? as usize
                } else {
                    0
                };
                funcs.push((entry, name));
            }
        }
    }
    for w in funcs.windows(2) {
        let (entry, name) = w[0];
        let size = w[1].0.saturating_sub(entry);
        if name >= r.len {
            return Err(PclntabError::Truncated);
        }
        match names_in {
            Some((src, base)) => match u32::try_from(base + name as u64) {
                Ok(at) => out.push_lazy(entry, size, src, at),
                Err(_) => return Err(PclntabError::Truncated),
            },
            None => out.push(entry, size, r.cstr(name)?),
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

    fn go116() -> Vec<u8> {
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
        v
    }

    #[test]
    fn synthetic_go116() {
        let v = go116();
        let mut b = SymbolTableBuilder::default();
        assert_eq!(read_functions(&v, 0, None, &mut b), Ok(2));
        let t = b.build();
        assert_eq!(t.lookup(0x4010ff).as_deref(), Some("main.main"));
        assert_eq!(t.lookup(0x401170).as_deref(), Some("runtime.goexit"));
        assert_eq!(t.lookup(0x401180), None);
    }

    fn go12() -> Vec<u8> {
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
        v
    }

    #[test]
    fn synthetic_go12() {
        let v = go12();
        let mut b = SymbolTableBuilder::default();
        assert_eq!(read_functions(&v, 0, None, &mut b), Ok(2));
        let t = b.build();
        assert_eq!(t.lookup(0x100f).as_deref(), Some("a"));
        assert_eq!(t.lookup(0x1010).as_deref(), Some("b"));
    }

    #[test]
    fn read_from_a_file_piecewise_with_lazy_names() {
        use std::io::Write;
        for (data, probes) in [
            (
                go118(0xffff_fff0, 0x401000),
                [(0x401000, "main.main"), (0x401050, "main.hotLeaf")],
            ),
            (
                go118(0xffff_fff1, 0x401000),
                [(0x40103f, "main.main"), (0x401050, "main.hotLeaf")],
            ),
            (
                go116(),
                [(0x4010ff, "main.main"), (0x401170, "runtime.goexit")],
            ),
            (go12(), [(0x100f, "a"), (0x1010, "b")]),
        ] {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&[0xee; 100]).unwrap();
            f.write_all(&data).unwrap();
            f.write_all(&[0xee; 50]).unwrap();
            let file = std::sync::Arc::new(f);
            let mut b = SymbolTableBuilder::default();
            let src = b.add_file(file.clone()).unwrap();
            let n = read_functions_from_file(&file, 100, data.len() as u64, 0, src, &mut b);
            assert_eq!(n, Ok(2));
            let t = b.build();
            assert_eq!(t.lazy_names(), 2);
            for (addr, name) in probes {
                assert_eq!(t.lookup(addr).as_deref(), Some(name), "{addr:x}");
            }
            // A length that cuts the table short is an error, never a read past it.
            let mut b = SymbolTableBuilder::default();
            let src = b.add_file(file.clone()).unwrap();
            let short = read_functions_from_file(&file, 100, data.len() as u64 / 2, 0, src, &mut b);
            assert_eq!(short, Err(PclntabError::Truncated));
        }
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
