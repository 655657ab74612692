//! Code objects read from another process: the head of a `PyCodeObject` (parsed from bytes, so
//! it is fuzzed), its `str` fields (compact ASCII, latin-1, UCS-2, UCS-4) and line table, and a
//! cache keyed by (pid, address) that re-checks a fingerprint of the head on every hit, so a code
//! object freed and replaced at the same address is read again instead of named wrongly.

use super::linetable::{line_for_offset, LineTableError};
use super::memory::{Memory, Unreadable};
use super::offsets::{PyOffsets, ABSENT};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Arc;
use thiserror::Error;

/// Longest name or file name read (characters).
pub const MAX_STRING_CHARS: u64 = 4096;
/// Largest line table read (bytes).
pub const MAX_LINETABLE_BYTES: u64 = 1 << 20;

/// Why a Python frame could not be named. Every variant is a reason the caller counts; none is
/// fatal to the walk.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PyFrameError {
    /// The memory is not mapped (or the process is gone).
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
    /// The object's type is not `PyCode_Type`.
    #[error("object at {addr:#x} has type {type_addr:#x}, not code")]
    NotCode {
        /// Object address.
        addr: u64,
        /// Its `ob_type`.
        type_addr: u64,
    },
    /// A field out of any sane range (negative length, huge table, null pointer…).
    #[error("corrupt object: {0}")]
    Corrupt(&'static str),
    /// A string representation this reader does not decode (legacy, non-compact strings).
    #[error("unsupported str representation (state {0:#x})")]
    StringKind(u32),
    /// The line table could not be decoded.
    #[error(transparent)]
    LineTable(#[from] LineTableError),
    /// The process is not a CPython this module knows.
    #[error("not a supported CPython process: {0}")]
    Process(String),
}

impl PyFrameError {
    /// A short stable label, for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreadable(_) => "unreadable",
            Self::NotCode { .. } => "not_code",
            Self::Corrupt(_) => "corrupt",
            Self::StringKind(_) => "string_kind",
            Self::LineTable(_) => "line_table",
            Self::Process(_) => "process",
        }
    }
}

/// The fields of a code object's head, parsed from its first
/// [`PyOffsets::code_header_len`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeHeader {
    /// `ob_type`.
    pub type_addr: u64,
    /// `co_argcount`.
    pub argcount: i32,
    /// `co_kwonlyargcount`.
    pub kwonlyargcount: i32,
    /// `co_flags`.
    pub flags: i32,
    /// `co_firstlineno`.
    pub firstlineno: i32,
    /// `co_filename`.
    pub filename: u64,
    /// `co_name`.
    pub name: u64,
    /// `co_qualname`, 0 before 3.11.
    pub qualname: u64,
    /// `co_lnotab` / `co_linetable`.
    pub linetable: u64,
}

fn le_u64(buf: &[u8], at: u32) -> Option<u64> {
    let at = at as usize;
    let b: [u8; 8] = buf.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

fn le_i32(buf: &[u8], at: u32) -> Option<i32> {
    let at = at as usize;
    let b: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(i32::from_le_bytes(b))
}

impl CodeHeader {
    /// Parses the head; `None` when `buf` is shorter than the offsets need.
    pub fn parse(buf: &[u8], off: &PyOffsets) -> Option<Self> {
        let ptr = |o: u32| if o == ABSENT { Some(0) } else { le_u64(buf, o) };
        Some(Self {
            type_addr: le_u64(buf, 8)?,
            argcount: le_i32(buf, off.code_argcount)?,
            kwonlyargcount: le_i32(buf, off.code_kwonlyargcount)?,
            flags: le_i32(buf, off.code_flags)?,
            firstlineno: le_i32(buf, off.code_firstlineno)?,
            filename: ptr(off.code_filename)?,
            name: ptr(off.code_name)?,
            qualname: ptr(off.code_qualname)?,
            linetable: ptr(off.code_linetable)?,
        })
    }

    /// A 32-bit id of the four `int`s, cheap enough for the kernel walk to push beside the
    /// address (argcount, kwonly count and flags in the high bits, the first line in the low).
    pub fn kernel_id(&self) -> u32 {
        let a = (self.argcount as u32) << 25;
        let k = (self.kwonlyargcount as u32) << 18;
        let f = (self.flags as u32) << 10;
        a.wrapping_add(k)
            .wrapping_add(f)
            .wrapping_add(self.firstlineno as u32)
    }

    /// A fingerprint of the whole head (the id and the pointers to name, file and table): the
    /// cache's check that the object at an address is still the one it read.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for v in [
            u64::from(self.kernel_id()),
            self.filename,
            self.name,
            self.qualname,
            self.linetable,
            self.type_addr,
        ] {
            h = (h ^ v).wrapping_mul(0x0000_0100_0000_01b3);
            h ^= h >> 29;
        }
        h
    }
}

/// A code object as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeObject {
    /// `co_name`.
    pub name: String,
    /// `co_qualname` (3.11+), else `co_name`.
    pub qualname: String,
    /// `co_filename`.
    pub filename: String,
    /// `co_firstlineno`.
    pub firstlineno: i32,
    /// The raw line table.
    pub linetable: Vec<u8>,
    /// Its head.
    pub header: CodeHeader,
}

impl CodeObject {
    /// The line of byte offset `instr` in the bytecode (`None`: no line for it).
    pub fn line(&self, format: u32, instr: i64) -> Result<Option<i32>, LineTableError> {
        line_for_offset(format, &self.linetable, self.firstlineno, instr)
    }
}

/// Reads the head of the code object at `addr`; `code_type` (the address of `PyCode_Type`), when
/// known, must equal its `ob_type`.
pub fn read_header(
    mem: &dyn Memory,
    off: &PyOffsets,
    code_type: Option<u64>,
    addr: u64,
) -> Result<CodeHeader, PyFrameError> {
    if addr == 0 {
        return Err(PyFrameError::Corrupt("null code object"));
    }
    let buf = mem.read_vec(addr, off.code_header_len())?;
    let header = CodeHeader::parse(&buf, off).ok_or(PyFrameError::Corrupt("short code head"))?;
    if let Some(t) = code_type {
        if header.type_addr != t {
            return Err(PyFrameError::NotCode {
                addr,
                type_addr: header.type_addr,
            });
        }
    }
    Ok(header)
}

/// Reads the whole code object at `addr`.
pub fn read_code(
    mem: &dyn Memory,
    off: &PyOffsets,
    code_type: Option<u64>,
    addr: u64,
) -> Result<CodeObject, PyFrameError> {
    let header = read_header(mem, off, code_type, addr)?;
    read_code_fields(mem, off, header)
}

fn read_code_fields(
    mem: &dyn Memory,
    off: &PyOffsets,
    header: CodeHeader,
) -> Result<CodeObject, PyFrameError> {
    let name = read_str(mem, off, header.name)?;
    let qualname = if header.qualname != 0 {
        read_str(mem, off, header.qualname)?
    } else {
        name.clone()
    };
    Ok(CodeObject {
        filename: read_str(mem, off, header.filename)?,
        linetable: read_bytes(mem, off, header.linetable, MAX_LINETABLE_BYTES)?,
        firstlineno: header.firstlineno,
        name,
        qualname,
        header,
    })
}

/// Reads a `bytes` object's contents (at most `max` bytes).
pub fn read_bytes(
    mem: &dyn Memory,
    off: &PyOffsets,
    addr: u64,
    max: u64,
) -> Result<Vec<u8>, PyFrameError> {
    if addr == 0 {
        return Err(PyFrameError::Corrupt("null bytes object"));
    }
    let size = mem.read_u64(addr.wrapping_add(u64::from(off.bytes_size)))?;
    if size > max {
        return Err(PyFrameError::Corrupt("bytes object too large"));
    }
    Ok(mem.read_vec(addr.wrapping_add(u64::from(off.bytes_data)), size as usize)?)
}

/// Decodes a compact `str` at `addr` (ASCII, latin-1, UCS-2 or UCS-4 storage).
pub fn read_str(mem: &dyn Memory, off: &PyOffsets, addr: u64) -> Result<String, PyFrameError> {
    if addr == 0 {
        return Err(PyFrameError::Corrupt("null str"));
    }
    let head_len = (off.unicode_length + 8).max(off.unicode_state + 4) as usize;
    let head = mem.read_vec(addr, head_len)?;
    let length = le_u64(&head, off.unicode_length).ok_or(PyFrameError::Corrupt("short str"))?;
    let state = le_i32(&head, off.unicode_state).ok_or(PyFrameError::Corrupt("short str"))? as u32;
    if length > MAX_STRING_CHARS {
        return Err(PyFrameError::Corrupt("str too long"));
    }
    let (kind, compact, ascii) = (
        (state >> 2) & 7,
        (state >> 5) & 1 == 1,
        (state >> 6) & 1 == 1,
    );
    if !compact {
        return Err(PyFrameError::StringKind(state));
    }
    let n = length as usize;
    if ascii {
        if kind != 1 {
            return Err(PyFrameError::Corrupt("ascii str with a wide kind"));
        }
        let data = mem.read_vec(addr.wrapping_add(u64::from(off.unicode_ascii_size)), n)?;
        if !data.is_ascii() {
            return Err(PyFrameError::Corrupt("non-ascii byte in an ascii str"));
        }
        return String::from_utf8(data).map_err(|_| PyFrameError::Corrupt("ascii str"));
    }
    let data_at = addr.wrapping_add(u64::from(off.unicode_compact_size));
    let units: Vec<u32> = match kind {
        1 => mem
            .read_vec(data_at, n)?
            .into_iter()
            .map(u32::from)
            .collect(),
        2 => mem
            .read_vec(data_at, n * 2)?
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        4 => mem
            .read_vec(data_at, n * 4)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => return Err(PyFrameError::StringKind(state)),
    };
    units
        .into_iter()
        .map(|u| char::from_u32(u).ok_or(PyFrameError::Corrupt("invalid code point")))
        .collect()
}

/// A named Python frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyFrame {
    /// `co_qualname` (3.11+) or `co_name`, e.g. `Walker.step`.
    pub qualname: String,
    /// `co_filename`.
    pub filename: String,
    /// The line of the instruction, `None` when the table gives none.
    pub line: Option<i32>,
    /// `co_firstlineno`.
    pub firstlineno: i32,
}

/// Code objects read so far, per (pid, address), with the fingerprint they had.
pub struct CodeCache {
    entries: LruCache<(u32, u64), Arc<CodeObject>>,
    /// Hits whose fingerprint still matched.
    pub hits: u64,
    /// Objects read (first time or after a change).
    pub reads: u64,
    /// Hits whose fingerprint had changed (address reuse), read again.
    pub replaced: u64,
}

impl CodeCache {
    /// At most `capacity` code objects (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
            hits: 0,
            reads: 0,
            replaced: 0,
        }
    }

    /// The code object at `addr` in `pid`: one read of its head to check the fingerprint, the
    /// whole object only when it is new or changed.
    pub fn get(
        &mut self,
        mem: &dyn Memory,
        off: &PyOffsets,
        code_type: Option<u64>,
        pid: u32,
        addr: u64,
    ) -> Result<Arc<CodeObject>, PyFrameError> {
        let header = read_header(mem, off, code_type, addr)?;
        if let Some(hit) = self.entries.get(&(pid, addr)) {
            if hit.header.fingerprint() == header.fingerprint() {
                self.hits += 1;
                return Ok(Arc::clone(hit));
            }
            self.replaced += 1;
        }
        let code = Arc::new(read_code_fields(mem, off, header)?);
        self.reads += 1;
        self.entries.put((pid, addr), Arc::clone(&code));
        Ok(code)
    }

    /// Like [`get`](Self::get) when the kernel already read the head: a cached object whose
    /// [`CodeHeader::kernel_id`] equals `kernel_id` is returned without reading memory.
    pub fn get_with_id(
        &mut self,
        mem: &dyn Memory,
        off: &PyOffsets,
        code_type: Option<u64>,
        pid: u32,
        addr: u64,
        kernel_id: u32,
    ) -> Result<Arc<CodeObject>, PyFrameError> {
        if let Some(hit) = self.entries.get(&(pid, addr)) {
            if hit.header.kernel_id() == kernel_id {
                self.hits += 1;
                return Ok(Arc::clone(hit));
            }
        }
        self.get(mem, off, code_type, pid, addr)
    }

    /// Drops every entry of `pid` (the process exited or exec'd).
    pub fn forget_pid(&mut self, pid: u32) {
        let keys: Vec<_> = self
            .entries
            .iter()
            .filter(|((p, _), _)| *p == pid)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.entries.pop(&k);
        }
    }

    /// Names the frame running byte offset `instr` of the code object at `addr`.
    pub fn symbolize(
        &mut self,
        mem: &dyn Memory,
        off: &PyOffsets,
        code_type: Option<u64>,
        pid: u32,
        addr: u64,
        instr: i64,
    ) -> Result<PyFrame, PyFrameError> {
        let code = self.get(mem, off, code_type, pid, addr)?;
        Ok(PyFrame {
            qualname: code.qualname.clone(),
            filename: code.filename.clone(),
            line: code.line(off.linetable_format, instr)?,
            firstlineno: code.firstlineno,
        })
    }
}

#[cfg(test)]
mod tests;
