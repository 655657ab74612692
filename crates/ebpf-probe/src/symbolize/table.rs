//! Compact symbol table: one sorted array of (address, size, name reference) entries. Names
//! live either in one in-memory buffer of NUL-terminated strings (kallsyms, perf maps, the
//! vdso, MiniDebugInfo, Go function tables) or stay in the ELF file they came from and are
//! read with `pread` only when a lookup needs them ("lazy" names): a large binary then costs
//! 16 bytes per function symbol, not the size of its string table. Names are kept mangled
//! (demangled by the caller).

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Symbol table of one object, addresses in that object's address space.
#[derive(Debug, Default, Clone)]
pub struct SymbolTable {
    entries: Vec<Entry>,
    names: Vec<u8>,
    /// Files holding lazy names; an entry's source `n > 0` is `files[n - 1]`.
    files: Vec<Arc<File>>,
}

/// Function sizes are kept in 24 bits (larger sizes are clamped: no real function spans
/// 16 MiB), the top 8 bits of the word say where the name is.
const SIZE_BITS: u32 = 24;
const SIZE_MASK: u32 = (1 << SIZE_BITS) - 1;
/// At most this many files per table (one source byte, 0 = memory).
const MAX_FILES: usize = 255;
/// Longest name read from a file.
const MAX_NAME: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    /// Bits 0..24: size, 0 = unknown (extends to the next symbol). Bits 24..32: name source.
    size_src: u32,
    /// Offset of the name in the memory buffer or in the source file.
    name: u32,
}

impl Entry {
    fn size(self) -> u64 {
        u64::from(self.size_src & SIZE_MASK)
    }

    fn source(self) -> usize {
        (self.size_src >> SIZE_BITS) as usize
    }
}

/// Collects symbols, then [`SymbolTableBuilder::build`] sorts and deduplicates them.
#[derive(Debug, Default)]
pub struct SymbolTableBuilder {
    entries: Vec<Entry>,
    names: Vec<u8>,
    files: Vec<Arc<File>>,
}

impl SymbolTableBuilder {
    /// Adds a symbol whose name is copied into memory; empty names and names with NUL are
    /// ignored.
    pub fn push(&mut self, addr: u64, size: u64, name: &str) {
        if name.is_empty()
            || name.contains('\0')
            || self.names.len() > u32::MAX as usize - name.len() - 1
        {
            return;
        }
        let off = self.names.len() as u32;
        self.names.extend_from_slice(name.as_bytes());
        self.names.push(0);
        self.entries.push(Entry {
            addr,
            size_src: size.min(u64::from(SIZE_MASK)) as u32,
            name: off,
        });
    }

    /// Registers a file that lazy names are read from; `None` when the table already has
    /// [`MAX_FILES`] files.
    pub fn add_file(&mut self, file: Arc<File>) -> Option<FileSource> {
        if let Some(i) = self.files.iter().position(|f| Arc::ptr_eq(f, &file)) {
            return Some(FileSource(i as u8 + 1));
        }
        if self.files.len() >= MAX_FILES {
            return None;
        }
        self.files.push(file);
        Some(FileSource(self.files.len() as u8))
    }

    /// Adds a symbol whose NUL-terminated name is at `offset` in the file of `source`.
    pub fn push_lazy(&mut self, addr: u64, size: u64, source: FileSource, offset: u32) {
        self.entries.push(Entry {
            addr,
            size_src: (size.min(u64::from(SIZE_MASK)) as u32) | (u32::from(source.0) << SIZE_BITS),
            name: offset,
        });
    }

    /// Moves all symbols of `other` into `self`.
    pub fn append(&mut self, other: SymbolTableBuilder) {
        let base = self.names.len();
        if base + other.names.len() > u32::MAX as usize {
            return;
        }
        let mut remap = Vec::with_capacity(other.files.len());
        for f in other.files {
            remap.push(self.add_file(f));
        }
        self.names.extend_from_slice(&other.names);
        for mut e in other.entries {
            match e.source() {
                0 => e.name += base as u32,
                n => match remap[n - 1] {
                    Some(FileSource(s)) => {
                        e.size_src = (e.size_src & SIZE_MASK) | (u32::from(s) << SIZE_BITS)
                    }
                    None => continue,
                },
            }
            self.entries.push(e);
        }
    }

    /// Number of symbols pushed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sorts by address; of symbols at one address the one with a size (then the first
    /// pushed) wins.
    pub fn build(mut self) -> SymbolTable {
        self.entries
            .sort_by(|a, b| a.addr.cmp(&b.addr).then(b.size().cmp(&a.size())));
        self.entries.dedup_by_key(|e| e.addr);
        self.entries.shrink_to_fit();
        self.names.shrink_to_fit();
        SymbolTable {
            entries: self.entries,
            names: self.names,
            files: self.files,
        }
    }
}

/// Which registered file a lazy name is read from (see [`SymbolTableBuilder::add_file`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSource(u8);

impl SymbolTable {
    /// Index of the entry covering `addr`: the last symbol at or below it, if `addr` is within
    /// its size (or, for sizeless symbols, below the next symbol).
    pub fn lookup_index(&self, addr: u64) -> Option<usize> {
        let i = self
            .entries
            .partition_point(|e| e.addr <= addr)
            .checked_sub(1)?;
        let e = self.entries[i];
        if e.size() != 0 && addr - e.addr >= e.size() {
            return None;
        }
        Some(i)
    }

    /// The name of the symbol covering `addr` (see [`Self::lookup_index`]).
    pub fn lookup(&self, addr: u64) -> Option<Cow<'_, str>> {
        self.name(self.lookup_index(addr)?)
    }

    /// Like [`lookup`](Self::lookup) but sizeless symbols may not extend further than
    /// `max_gap` bytes (used for the last kallsyms entries).
    pub fn lookup_bounded(&self, addr: u64, max_gap: u64) -> Option<Cow<'_, str>> {
        let i = self.lookup_index(addr)?;
        let e = self.entries[i];
        if e.size() == 0 && i + 1 == self.entries.len() && addr - e.addr > max_gap {
            return None;
        }
        self.name(i)
    }

    /// The name of entry `index`; `None` when it is empty or its file cannot be read.
    pub fn name(&self, index: usize) -> Option<Cow<'_, str>> {
        let e = *self.entries.get(index)?;
        let name = match e.source() {
            0 => {
                let bytes = self.names.get(e.name as usize..)?;
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                Cow::Borrowed(std::str::from_utf8(&bytes[..end]).ok()?)
            }
            n => Cow::Owned(read_name(self.files.get(n - 1)?, u64::from(e.name))?),
        };
        (!name.is_empty()).then_some(name)
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Lowest and highest symbol address.
    pub fn range(&self) -> Option<(u64, u64)> {
        Some((self.entries.first()?.addr, self.entries.last()?.addr))
    }

    /// Approximate heap bytes used (lazy names cost nothing here).
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>() + self.names.capacity()
    }

    /// Number of symbols whose names stay in files.
    pub fn lazy_names(&self) -> usize {
        self.entries.iter().filter(|e| e.source() != 0).count()
    }

    /// Address of the first symbol with this exact (mangled) name (reads every lazy name:
    /// for tests and tools).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        (0..self.entries.len())
            .find(|&i| self.name(i).as_deref() == Some(name))
            .map(|i| self.entries[i].addr)
    }
}

/// Reads a NUL-terminated UTF-8 name at `offset` (at most [`MAX_NAME`] bytes).
fn read_name(file: &File, offset: u64) -> Option<String> {
    let mut buf = vec![0u8; 128];
    let mut len = 0;
    loop {
        let n = file.read_at(&mut buf[len..], offset + len as u64).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[len..len + n].iter().position(|&b| b == 0) {
            buf.truncate(len + end);
            return String::from_utf8(buf).ok();
        }
        len += n;
        if len >= MAX_NAME {
            return None;
        }
        if len == buf.len() {
            buf.resize((buf.len() * 2).min(MAX_NAME), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lookup_sizes_and_gaps() {
        let mut b = SymbolTableBuilder::default();
        b.push(0x2000, 0x10, "b");
        b.push(0x1000, 0x100, "a");
        b.push(0x1000, 0, "a_alias");
        b.push(0x3000, 0, "c");
        b.push(0x4000, 0, "");
        let t = b.build();
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(0xfff), None);
        assert_eq!(t.lookup(0x1000).as_deref(), Some("a"));
        assert_eq!(t.lookup(0x10ff).as_deref(), Some("a"));
        assert_eq!(t.lookup(0x1100), None);
        assert_eq!(t.lookup(0x200f).as_deref(), Some("b"));
        assert_eq!(t.lookup(0x2010), None);
        assert_eq!(t.lookup(0x9999).as_deref(), Some("c"));
        assert_eq!(t.lookup_bounded(0x9999, 0x100), None);
        assert_eq!(t.lookup_bounded(0x3050, 0x100).as_deref(), Some("c"));
        assert_eq!(t.address_of("b"), Some(0x2000));
        assert_eq!(t.range(), Some((0x1000, 0x3000)));
    }

    #[test]
    fn lazy_names_are_read_from_files_and_mix_with_memory_names() {
        let mut f = tempfile::tempfile().unwrap();
        let long = "x".repeat(300);
        let mut strtab = b"\0first\0".to_vec();
        let long_off = strtab.len() as u32;
        strtab.extend_from_slice(long.as_bytes());
        strtab.push(0);
        let bad_off = strtab.len() as u32;
        strtab.extend_from_slice(b"\xff\xfe\0unterminated");
        f.write_all(&strtab).unwrap();
        let file = Arc::new(f);

        let mut b = SymbolTableBuilder::default();
        let src = b.add_file(file.clone()).unwrap();
        assert_eq!(b.add_file(file), Some(src), "one file is registered once");
        b.push_lazy(0x1000, 0x10, src, 1);
        b.push_lazy(0x2000, 0x10, src, long_off);
        b.push_lazy(0x3000, 0x10, src, bad_off);
        b.push_lazy(0x4000, 0x10, src, bad_off + 3);
        b.push_lazy(0x5000, 0x10, src, 0);
        let mut mem = SymbolTableBuilder::default();
        mem.push(0x800, 0x10, "in_memory");
        let other = tempfile::tempfile().unwrap();
        let other_src = mem.add_file(Arc::new(other)).unwrap();
        mem.push_lazy(0x6000, 0x10, other_src, 0);
        b.append(mem);
        let t = b.build();
        assert_eq!(t.len(), 7);
        assert_eq!(t.lazy_names(), 6);
        assert_eq!(t.lookup(0x805).as_deref(), Some("in_memory"));
        assert_eq!(t.lookup(0x1004).as_deref(), Some("first"));
        assert_eq!(t.lookup(0x2000).as_deref(), Some(long.as_str()));
        assert_eq!(t.lookup(0x3000), None, "not UTF-8");
        assert_eq!(t.lookup(0x4000), None, "no NUL before the end");
        assert_eq!(t.lookup(0x5000), None, "empty name");
        assert_eq!(t.lookup(0x6000), None, "empty file");
        assert_eq!(t.address_of("first"), Some(0x1000));
        assert!(t.heap_bytes() < 7 * 16 + 64);
    }
}
