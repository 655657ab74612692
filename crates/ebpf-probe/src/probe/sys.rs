//! The probe's only unsafe code, each piece behind a safe function: the `aya::Pod` promises for
//! the structs shared with the C program, `sysconf`/`setrlimit`, registering the ring buffer's
//! descriptor with tokio, the bpf(2) `BPF_MAP_LOOKUP_AND_DELETE_BATCH`,
//! `BPF_MAP_UPDATE_BATCH` and `BPF_PROG_TEST_RUN` commands (one `bpf` call; aya has no wrapper
//! for them without its objects), writes through a memory mapping of a `BPF_F_MMAPABLE`
//! array, and a counter shared with the kernel through such a mapping.

#![allow(
    unsafe_code,
    reason = "aya::Pod impls, setrlimit(2), sysconf(3), AsyncFd registration, the bpf(2) batch commands and mmap(2) of a map have no safe wrapper; every unsafe block carries its own SAFETY note"
)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use tokio::io::unix::{AsyncFd, AsyncFdRegisterError};
use tokio::io::Interest;
use tracing::debug;

use super::abi::{PidConfigValue, SampleKey};
use super::unwind_abi::{UnwindMapping, UnwindProc, UnwindTable, UserStack};
use crate::unwind::abi::UnwindRow;

// SAFETY: repr(C), four 4-byte integers then one 8-byte integer, no implicit padding, every
// bit pattern valid.
unsafe impl aya::Pod for SampleKey {}

// SAFETY: repr(C), four bytes, no padding, every bit pattern valid.
unsafe impl aya::Pod for PidConfigValue {}

// SAFETY: repr(C), two u32 then one u64 (16 bytes), no padding, every bit pattern valid.
unsafe impl aya::Pod for UnwindProc {}

// SAFETY: repr(C), three u64 then two u32 (32 bytes), no padding, every bit pattern valid.
unsafe impl aya::Pod for UnwindMapping {}

// SAFETY: repr(C), six u32 (24 bytes), no padding, every bit pattern valid.
unsafe impl aya::Pod for UnwindTable {}

// SAFETY: repr(C), u32, u8, u8, u16, u32, u32, u64 (24 bytes) then an array of u64, no padding, every bit
// pattern valid.
unsafe impl aya::Pod for UserStack {}

// SAFETY: repr(C), u32, u8, i8, i16 (8 bytes, size asserted in unwind::abi), no padding,
// every bit pattern valid.
unsafe impl aya::Pod for UnwindRow {}
// SAFETY: `PythonProc` is `#[repr(C)]`, made of integers only, with explicit padding fields
// (`pad` and the tail the test of its size accounts for), valid for any bit pattern.
unsafe impl aya::Pod for super::python_bpf::PythonProc {}

/// The system's page size (4096 if it cannot be read).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Lifts RLIMIT_MEMLOCK (kernels before 5.11 charge BPF maps to it). Failure is only logged:
/// newer kernels account BPF memory to the cgroup instead.
pub(crate) fn raise_memlock_rlimit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `limit` is a valid, initialised rlimit that outlives the call.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if ret != 0 {
        debug!(error = %io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK");
    }
}

/// Registers `fd` with the current tokio reactor for readability.
pub(crate) fn poll_readable(
    fd: OwnedFd,
) -> Result<AsyncFd<OwnedFd>, AsyncFdRegisterError<OwnedFd>> {
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so the descriptor stays open and
    // refers to the same file for the AsyncFd's whole lifetime.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
}

/// `union bpf_attr` as used by the BPF_MAP_*_BATCH commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// The kernel-internal ENOTSUPP some map types return for batch commands.
const ENOTSUPP: i32 = 524;

/// Why a batch command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchError {
    /// The kernel or map type does not support the command (fall back to one by one).
    #[error("the batch map command is not supported")]
    Unsupported(#[source] io::Error),
    /// Another error.
    #[error("the batch map command failed")]
    Io(#[source] io::Error),
}

/// bpf(2) with command `cmd` on `attr` (a member of `union bpf_attr`); the error of a nonzero
/// return.
///
/// # Safety
/// Every pointer in `attr` must be valid, for the sizes `attr` gives, for what the command
/// reads and writes, for the whole call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: `attr` is a live, exclusively borrowed `T` of `size_of::<T>()` bytes; the
    // pointers inside it are the caller's promise.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads and deletes every entry of a `counts` map with BPF_MAP_LOOKUP_AND_DELETE_BATCH.
pub(crate) fn lookup_and_delete_batch(
    fd: RawFd,
    batch: usize,
) -> Result<Vec<(SampleKey, u64)>, BatchError> {
    let mut capacity = batch.max(1);
    let mut keys = vec![SampleKey::default(); capacity];
    let mut values = vec![0u64; capacity];
    let mut entries = Vec::new();
    // The hash map's batch token is a bucket index (u32); 8 bytes leave room.
    let mut in_token: u64 = 0;
    let mut out_token: u64 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut in_token as *mut u64 as u64
            },
            out_batch: &mut out_token as *mut u64 as u64,
            map_fd: fd as u32,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: capacity as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` describes buffers that are valid for `capacity` keys (the map's key
        // size, `SampleKey`) and values (8 bytes each) and two 8-byte tokens, all of which
        // outlive the call; the kernel writes at most `count` entries.
        let error = unsafe { bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &mut attr) }.err();
        let n = (attr.count as usize).min(capacity);
        entries.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match error {
            None => {
                in_token = out_token;
                first = false;
            }
            Some(e) => match e.raw_os_error() {
                Some(libc::ENOENT) => return Ok(entries),
                Some(libc::ENOSPC) if n == 0 => {
                    // One bucket holds more entries than fit: retry with more room.
                    capacity *= 2;
                    keys.resize(capacity, SampleKey::default());
                    values.resize(capacity, 0);
                }
                Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) if first && n == 0 => {
                    return Err(BatchError::Unsupported(e))
                }
                _ => return Err(BatchError::Io(e)),
            },
        }
    }
}

/// Entries per `BPF_MAP_UPDATE_BATCH` call (bounds the key buffer).
const UPDATE_BATCH: usize = 8192;

/// Writes `values` (each `value_size` bytes) at the consecutive keys `first..` of an array map
/// with BPF_MAP_UPDATE_BATCH: one system call per [`UPDATE_BATCH`] entries instead of one per
/// entry (a table of a large library has hundreds of thousands of rows).
pub(crate) fn update_array_batch(
    fd: RawFd,
    first: u32,
    values: &[u8],
    value_size: usize,
) -> Result<(), BatchError> {
    if value_size == 0 || !values.len().is_multiple_of(value_size) {
        return Err(BatchError::Io(io::Error::from(io::ErrorKind::InvalidInput)));
    }
    let total = values.len() / value_size;
    let mut done = 0usize;
    let mut keys: Vec<u32> = Vec::with_capacity(UPDATE_BATCH.min(total));
    while done < total {
        let n = UPDATE_BATCH.min(total - done);
        keys.clear();
        let start = first
            .checked_add(done as u32)
            .ok_or_else(|| BatchError::Io(io::Error::from(io::ErrorKind::InvalidInput)))?;
        keys.extend((0..n as u32).map(|i| start.wrapping_add(i)));
        let chunk = &values[done * value_size..(done + n) * value_size];
        let mut attr = BatchAttr {
            map_fd: fd as u32,
            keys: keys.as_ptr() as u64,
            values: chunk.as_ptr() as u64,
            count: n as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at `n` u32 keys and `n * value_size` bytes of values, both
        // alive for the call; the kernel only reads them (and writes `attr.count`).
        if let Err(e) = unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) } {
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) if done == 0 => {
                    BatchError::Unsupported(e)
                }
                _ => BatchError::Io(e),
            });
        }
        done += n;
    }
    Ok(())
}

/// A new shared mapping of `len` bytes of `fd` from byte `offset`, with protection `prot`, at
/// an address the kernel chooses. The kernel refuses it (EINVAL) if the map is not mmapable or
/// the range is beyond its values. The caller unmaps it.
fn map_shared(
    fd: RawFd,
    len: usize,
    offset: libc::off_t,
    prot: libc::c_int,
) -> io::Result<std::ptr::NonNull<libc::c_void>> {
    // SAFETY: no address hint and no MAP_FIXED: the kernel places the mapping where nothing is
    // mapped, so no memory of the process changes; it checks `fd`, `len` and `offset` itself.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd,
            offset,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    std::ptr::NonNull::new(base).ok_or_else(|| io::Error::from(io::ErrorKind::Other))
}

/// The first u64 of a `BPF_F_MMAPABLE` array map, mapped shared for as long as this lives, for
/// atomic increments that the BPF programs' own `__sync_fetch_and_add` on the same word cannot
/// lose (both are locked read-modify-writes of one memory word).
#[derive(Debug)]
pub(crate) struct SharedCounter {
    base: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    len: usize,
}

// SAFETY: the mapping belongs to this value alone and is only used through an AtomicU64,
// which any thread may access.
unsafe impl Send for SharedCounter {}
// SAFETY: as above; every access is atomic.
unsafe impl Sync for SharedCounter {}

impl SharedCounter {
    /// Maps the first page of the map behind `fd` (EINVAL if it is not mmapable).
    pub(crate) fn map(fd: RawFd) -> io::Result<SharedCounter> {
        let len = page_size();
        // The map stays alive while it is mapped.
        let base = map_shared(fd, len, 0, libc::PROT_READ | libc::PROT_WRITE)?;
        Ok(SharedCounter {
            base: base.cast(),
            len,
        })
    }

    fn word(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: `base` is the start of a live, page-aligned (so 8-byte aligned), writable
        // mapping of at least a page; the map's first value is a u64 there.
        unsafe { self.base.as_ref() }
    }

    /// Adds one; returns the new value.
    pub(crate) fn raise(&self) -> u64 {
        self.word()
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .wrapping_add(1)
    }

    /// The current value.
    #[cfg(test)]
    pub(crate) fn get(&self) -> u64 {
        self.word().load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for SharedCounter {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, which only this value refers to.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// Writes `values` at byte offset `offset` of the values of a `BPF_F_MMAPABLE` array map,
/// through a shared mapping of just the pages they cover (unmapped again before returning, so
/// that the pages do not stay in the process's resident set). The kernel's copy of each value
/// on `BPF_MAP_UPDATE_BATCH` (a `copy_from_user` with its checks per 8-byte row) was a third of
/// a whole-host start-up; this is one `memcpy`. An error (the map is not mmapable, or the range
/// is beyond it) leaves the map unchanged.
pub(crate) fn write_mmapable_array(fd: RawFd, offset: usize, values: &[u8]) -> io::Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    let page = page_size();
    let start = offset - offset % page;
    let end = offset
        .checked_add(values.len())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let len = end.div_ceil(page) * page - start;
    let file_offset =
        libc::off_t::try_from(start).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let base = map_shared(fd, len, file_offset, libc::PROT_READ | libc::PROT_WRITE)?.as_ptr();
    // SAFETY: `base..base + len` is the mapping made above, writable, and `offset - start +
    // values.len() <= len`; `values` is a separate allocation of the process (no overlap).
    unsafe {
        std::ptr::copy_nonoverlapping(
            values.as_ptr(),
            base.cast::<u8>().add(offset - start),
            values.len(),
        );
    }
    // SAFETY: unmaps exactly the mapping made above, which nothing else refers to.
    if unsafe { libc::munmap(base, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `test` member of `union bpf_attr`, up to `batch_size`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs a raw tracepoint program once with `args` as its context (`BPF_PROG_TEST_RUN`, Linux
/// 5.10); returns the program's return value. aya's own wrapper needs the program object, which
/// the resolver that calls this does not keep.
pub(crate) fn test_run_raw_tp(prog: BorrowedFd<'_>, args: &[u64; 12]) -> io::Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        ctx_size_in: std::mem::size_of_val(args) as u32,
        ctx_in: args.as_ptr() as u64,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` points at `args`, valid for `ctx_size_in` bytes for the whole call, which
    // the kernel only reads; no output buffer is given.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    Ok(attr.retval)
}

/// A read-only shared mapping of the values of a `BPF_F_MMAPABLE` array, kept for its owner's
/// life; read by copying out (the kernel writes the pages between reads).
#[derive(Debug)]
pub(crate) struct MappedArray {
    base: std::ptr::NonNull<libc::c_void>,
    len: usize,
    /// The map stays alive as long as its mapping; the descriptor is kept for clarity.
    _fd: OwnedFd,
}

// SAFETY: the mapping is owned by this value alone and only read through `copy_out`, which
// needs `&self`; the pointer is never handed out.
unsafe impl Send for MappedArray {}

impl MappedArray {
    /// Maps the first `len` bytes of the values of the map `fd` read-only.
    pub(crate) fn new(fd: OwnedFd, len: usize) -> io::Result<MappedArray> {
        let page = page_size();
        let len = len.div_ceil(page).max(1) * page;
        // Read-only; the kernel refuses it if the map is shorter than `len`.
        let base = map_shared(fd.as_raw_fd(), len, 0, libc::PROT_READ)?;
        Ok(MappedArray { base, len, _fd: fd })
    }

    /// Copies `out.len()` bytes from byte `offset` of the mapping into `out`.
    pub(crate) fn copy_out(&self, offset: usize, out: &mut [u8]) -> io::Result<()> {
        if offset
            .checked_add(out.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: `offset + out.len() <= len`, so the source lies inside the live mapping made
        // in `new`; `out` is separate memory of the process. Nothing writes the pages while
        // this runs: only the program run by the same owner (`&self`, not concurrent) does.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().cast::<u8>().add(offset),
                out.as_mut_ptr(),
                out.len(),
            );
        }
        Ok(())
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, never used after this.
        unsafe {
            libc::munmap(self.base.as_ptr(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_counter_loses_no_increment_and_is_shared_between_mappings() {
        // A memfd stands in for the map: both are files whose pages a shared mapping shares.
        let file = tempfile::tempfile().unwrap();
        file.set_len(page_size() as u64).unwrap();
        let a = std::sync::Arc::new(SharedCounter::map(file.as_raw_fd()).unwrap());
        let b = SharedCounter::map(file.as_raw_fd()).unwrap();
        assert_eq!(a.get(), 0);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let a = std::sync::Arc::clone(&a);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        a.raise();
                    }
                })
            })
            .collect();
        for _ in 0..10_000 {
            b.raise();
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(a.get(), 30_000);
        assert_eq!(b.get(), 30_000);
        assert_eq!(b.raise(), 30_001);
        drop(a);
        assert_eq!(b.get(), 30_001, "one mapping outlives the other");
        // A descriptor that cannot be mapped is an error, not a crash.
        assert!(SharedCounter::map(-1).is_err());
    }

    #[test]
    fn batch_attr_matches_the_kernel_layout() {
        // The batch member of `union bpf_attr` (include/uapi/linux/bpf.h).
        assert_eq!(std::mem::size_of::<BatchAttr>(), 56);
        assert_eq!(std::mem::offset_of!(BatchAttr, count), 32);
        assert_eq!(std::mem::offset_of!(BatchAttr, map_fd), 36);
        assert_eq!(std::mem::offset_of!(BatchAttr, elem_flags), 40);
    }

    #[test]
    fn test_run_attr_matches_the_kernel_layout() {
        // The test member of `union bpf_attr`, through batch_size (include/uapi/linux/bpf.h).
        assert_eq!(std::mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_size_in), 40);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, flags), 64);
        assert_eq!(std::mem::offset_of!(TestRunAttr, batch_size), 72);
    }

    #[test]
    fn page_size_is_a_power_of_two() {
        let page = page_size();
        assert!(page >= 4096 && page.is_power_of_two(), "{page}");
    }
}
