//! Reading another process's memory behind a small trait: `/proc/PID/mem` with positioned reads
//! (no `unsafe`, no ptrace attach: the caller needs `PTRACE_MODE_ATTACH` rights, root or the
//! parent), and an in-memory implementation for tests and fuzzing.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// An address range that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {len} bytes at {addr:#x}")]
pub struct Unreadable {
    /// First address.
    pub addr: u64,
    /// Bytes asked for.
    pub len: usize,
}

/// Reads bytes of one address space.
pub trait Memory {
    /// Fills `buf` from `addr`, all or nothing.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Unreadable>;

    /// A little-endian `u64` at `addr`.
    fn read_u64(&self, addr: u64) -> Result<u64, Unreadable> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A little-endian `u32` at `addr`.
    fn read_u32(&self, addr: u64) -> Result<u32, Unreadable> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// One byte at `addr`.
    fn read_u8(&self, addr: u64) -> Result<u8, Unreadable> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }

    /// `len` bytes at `addr`.
    fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>, Unreadable> {
        let mut v = vec![0u8; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }
}

/// `/proc/PID/mem` of a live process.
#[derive(Debug)]
pub struct ProcMemory {
    file: File,
}

impl ProcMemory {
    /// Opens `/proc/PID/mem` under `proc_root` (normally `/proc`).
    pub fn open(proc_root: &Path, pid: u32) -> std::io::Result<Self> {
        Ok(Self {
            file: File::open(proc_root.join(pid.to_string()).join("mem"))?,
        })
    }
}

impl Memory for ProcMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Unreadable> {
        let err = Unreadable {
            addr,
            len: buf.len(),
        };
        // Addresses above i64::MAX are rejected by the kernel's lseek on mem files.
        if addr > i64::MAX as u64 {
            return Err(err);
        }
        self.file.read_exact_at(buf, addr).map_err(|_| err)
    }
}

/// Memory made of byte regions at given addresses (tests, fuzzing, core-dump-like replays).
#[derive(Debug, Clone, Default)]
pub struct SliceMemory {
    regions: Vec<(u64, Vec<u8>)>,
}

impl SliceMemory {
    /// No regions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` at `addr` (a later region wins where they overlap).
    pub fn add(&mut self, addr: u64, bytes: Vec<u8>) -> &mut Self {
        self.regions.push((addr, bytes));
        self
    }
}

impl Memory for SliceMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Unreadable> {
        let err = Unreadable {
            addr,
            len: buf.len(),
        };
        let end = addr.checked_add(buf.len() as u64).ok_or(err)?;
        for (base, bytes) in self.regions.iter().rev() {
            let limit = base.saturating_add(bytes.len() as u64);
            if *base <= addr && end <= limit {
                let from = (addr - base) as usize;
                buf.copy_from_slice(&bytes[from..from + buf.len()]);
                return Ok(());
            }
        }
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_memory_reads_inside_regions_only() {
        let mut m = SliceMemory::new();
        m.add(0x1000, (0u8..16).collect());
        assert_eq!(
            m.read_u32(0x1004).unwrap(),
            u32::from_le_bytes([4, 5, 6, 7])
        );
        assert_eq!(m.read_u8(0x100f).unwrap(), 15);
        assert!(m.read_u32(0x100e).is_err());
        assert!(m.read_u8(0xfff).is_err());
        assert!(m.read_u64(u64::MAX - 2).is_err());
    }

    #[test]
    fn proc_memory_reads_own_process() {
        let value: u64 = 0x1122_3344_5566_7788;
        let addr = std::ptr::addr_of!(value) as u64;
        let m = ProcMemory::open(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(m.read_u64(addr).unwrap(), value);
        assert!(m.read_u64(8).is_err());
    }
}
