//! `pthread_getspecific` done from outside the thread, as the kernel walk will have to: glibc
//! keeps a thread's key values in its `struct pthread` (whose address is the `pthread_t`, and
//! on x86-64 also the thread pointer, `fs` base): keys 0–31 in an inline first block, the
//! others behind a second-level table of 32-entry blocks. Entries are `{seq, data}` (16 bytes).
//!
//! The layout below was read from the disassembly of glibc 2.36's `pthread_getspecific` on
//! x86-64 (Debian 12): `(key + 0x31) << 4` from `fs:0x10` (the first block at 0x310),
//! `fs:0x510 + (key >> 5) * 8` for the second level, the value 8 bytes into the entry, keys
//! above 1023 invalid. `tests/python_readers.rs` checks it against every thread of the
//! interpreters (the value of CPython's GIL-state key is the thread's `PyThreadState`).

use super::memory::{Memory, Unreadable};

/// Where a C library keeps thread-specific data, relative to `struct pthread`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsdLayout {
    /// Offset of the inline block of the first `block_keys` keys.
    pub first_block: u64,
    /// Offset of the array of pointers to the other blocks.
    pub second_level: u64,
    /// Keys per block.
    pub block_keys: u32,
    /// Size of one entry.
    pub entry_size: u64,
    /// Offset of the value in an entry.
    pub data: u64,
    /// Highest valid key + 1.
    pub max_keys: u32,
}

/// glibc 2.34+ (2.36 checked) on x86-64.
pub const GLIBC_X86_64: TsdLayout = TsdLayout {
    first_block: 0x310,
    second_level: 0x510,
    block_keys: 32,
    entry_size: 16,
    data: 8,
    max_keys: 1024,
};

/// The value of `key` in the thread whose `struct pthread` is at `pthread` (0: unset or
/// invalid key).
pub fn getspecific(
    mem: &dyn Memory,
    layout: &TsdLayout,
    pthread: u64,
    key: u32,
) -> Result<u64, Unreadable> {
    if key >= layout.max_keys || layout.block_keys == 0 {
        return Ok(0);
    }
    let (block, index) = (key / layout.block_keys, key % layout.block_keys);
    let base = if block == 0 {
        pthread.wrapping_add(layout.first_block)
    } else {
        let at = pthread.wrapping_add(layout.second_level + u64::from(block) * 8);
        let p = mem.read_u64(at)?;
        if p == 0 {
            return Ok(0);
        }
        p
    };
    let entry = base.wrapping_add(u64::from(index) * layout.entry_size);
    mem.read_u64(entry.wrapping_add(layout.data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::memory::SliceMemory;

    #[test]
    fn first_block_and_second_level() {
        let pthread = 0x10_0000u64;
        let mut desc = vec![0u8; 0x600];
        // key 3 in the first block.
        desc[0x310 + 3 * 16 + 8..][..8].copy_from_slice(&0xaaaau64.to_le_bytes());
        // key 70 = block 2, index 6, behind the second level.
        desc[0x510 + 2 * 8..][..8].copy_from_slice(&0x20_0000u64.to_le_bytes());
        let mut block = vec![0u8; 32 * 16];
        block[6 * 16 + 8..][..8].copy_from_slice(&0xbbbbu64.to_le_bytes());
        let mut mem = SliceMemory::new();
        mem.add(pthread, desc).add(0x20_0000, block);
        let get = |k| getspecific(&mem, &GLIBC_X86_64, pthread, k).unwrap();
        assert_eq!(get(3), 0xaaaa);
        assert_eq!(get(4), 0);
        assert_eq!(get(70), 0xbbbb);
        // Block 1 is not allocated; key 1024 is invalid.
        assert_eq!(get(40), 0);
        assert_eq!(get(1024), 0);
    }
}
