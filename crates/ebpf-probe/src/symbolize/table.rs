//! Compact symbol table: one sorted array of (address, size, name offset) and one buffer of
//! NUL-terminated names, kept mangled (demangled when looked up).

/// Symbol table of one object, addresses in that object's address space.
#[derive(Debug, Default, Clone)]
pub struct SymbolTable {
    entries: Vec<Entry>,
    names: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    /// 0 = unknown: extends to the next symbol.
    size: u32,
    name: u32,
}

/// Collects symbols, then [`SymbolTableBuilder::build`] sorts and deduplicates them.
#[derive(Debug, Default)]
pub struct SymbolTableBuilder {
    entries: Vec<Entry>,
    names: Vec<u8>,
}

impl SymbolTableBuilder {
    /// Adds a symbol; empty names and names with NUL are ignored.
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
            size: size.min(u64::from(u32::MAX)) as u32,
            name: off,
        });
    }

    /// Moves all symbols of `other` into `self`.
    pub fn append(&mut self, other: SymbolTableBuilder) {
        let base = self.names.len();
        if base + other.names.len() > u32::MAX as usize {
            return;
        }
        self.names.extend_from_slice(&other.names);
        self.entries.extend(other.entries.into_iter().map(|mut e| {
            e.name += base as u32;
            e
        }));
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
            .sort_by(|a, b| a.addr.cmp(&b.addr).then(b.size.cmp(&a.size)));
        self.entries.dedup_by_key(|e| e.addr);
        // Drop names no longer referenced only when it is worth it.
        let mut table = SymbolTable {
            entries: self.entries,
            names: self.names,
        };
        table.entries.shrink_to_fit();
        table.names.shrink_to_fit();
        table
    }
}

impl SymbolTable {
    /// The name of the symbol covering `addr`: the last symbol at or below it, if `addr` is
    /// within its size (or, for sizeless symbols, below the next symbol).
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self
            .entries
            .partition_point(|e| e.addr <= addr)
            .checked_sub(1)?;
        let e = self.entries[i];
        if e.size != 0 && addr - e.addr >= u64::from(e.size) {
            return None;
        }
        Some(self.name_at(e.name))
    }

    /// Like [`lookup`](Self::lookup) but sizeless symbols may not extend further than
    /// `max_gap` bytes (used for the last kallsyms entries).
    pub fn lookup_bounded(&self, addr: u64, max_gap: u64) -> Option<&str> {
        let i = self
            .entries
            .partition_point(|e| e.addr <= addr)
            .checked_sub(1)?;
        let e = self.entries[i];
        if e.size == 0 && i + 1 == self.entries.len() && addr - e.addr > max_gap {
            return None;
        }
        self.lookup(addr)
    }

    fn name_at(&self, off: u32) -> &str {
        let bytes = &self.names[off as usize..];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or("")
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

    /// Approximate heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>() + self.names.capacity()
    }

    /// Address of the first symbol with this exact (mangled) name.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| self.name_at(e.name) == name)
            .map(|e| e.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(t.lookup(0x1000), Some("a"));
        assert_eq!(t.lookup(0x10ff), Some("a"));
        assert_eq!(t.lookup(0x1100), None);
        assert_eq!(t.lookup(0x200f), Some("b"));
        assert_eq!(t.lookup(0x2010), None);
        assert_eq!(t.lookup(0x9999), Some("c"));
        assert_eq!(t.lookup_bounded(0x9999, 0x100), None);
        assert_eq!(t.lookup_bounded(0x3050, 0x100), Some("c"));
        assert_eq!(t.address_of("b"), Some(0x2000));
        assert_eq!(t.range(), Some((0x1000, 0x3000)));
    }
}
