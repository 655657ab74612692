//! User-space side of the in-kernel table walk: which executable mappings each process has
//! (`unwind_procs`/`unwind_mappings`) and the unwind tables they use (`unwind_tables`/
//! `unwind_rows`, where each table's page index precedes its rows), kept in the BPF maps
//! through [`UnwindMaps`]. Tables are shared by every
//! process that maps the same file; ranges of the big arrays are handed out by [`RangeAlloc`],
//! and freed ranges wait [`FREE_GRACE`] before reuse so that a walk in flight never reads
//! rewritten entries. The structures are in [`super::unwind_abi`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::unwind_abi::{
    page_index, UnwindMapping, UnwindPage, UnwindProc, UnwindTable, MAX_PROC_MAPPINGS,
    MAX_TABLE_ROWS, TABLE_FRAME_POINTER,
};
use crate::symbolize::procmaps::MapEntry;
use crate::unwind::abi::UnwindRow;

/// How long a freed range stays unused (a walk takes microseconds).
pub const FREE_GRACE: Duration = Duration::from_millis(20);

/// Writes into the kernel's unwind maps (the BPF maps, or a fake in tests).
pub trait UnwindMaps {
    /// Error of a map operation.
    type Error: std::fmt::Display;
    /// Writes `rows` at `first..first + rows.len()` of `unwind_rows`.
    fn write_rows(&mut self, first: u32, rows: &[UnwindRow]) -> Result<(), Self::Error>;
    /// Writes a table's page index at `first..first + pages.len()` of `unwind_rows`.
    fn write_pages(&mut self, first: u32, pages: &[UnwindPage]) -> Result<(), Self::Error>;
    /// Sets entry `id` of `unwind_tables`.
    fn set_table(&mut self, id: u32, table: UnwindTable) -> Result<(), Self::Error>;
    /// Writes `mappings` at `first..` of `unwind_mappings`.
    fn write_mappings(&mut self, first: u32, mappings: &[UnwindMapping])
        -> Result<(), Self::Error>;
    /// Publishes a process's mappings in `unwind_procs`.
    fn set_proc(&mut self, pid: u32, proc: UnwindProc) -> Result<(), Self::Error>;
    /// Removes a process from `unwind_procs` (absent is not an error).
    fn remove_proc(&mut self, pid: u32) -> Result<(), Self::Error>;
}

/// The identity of a mapped file, as `/proc/PID/maps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// Device (major, minor).
    pub dev: (u32, u32),
    /// Inode.
    pub inode: u64,
    /// Path in the process's mount namespace (two files on overlay filesystems may share
    /// device and inode numbers across containers only if they are the same file).
    pub path: String,
}

impl FileKey {
    /// The key of a file-backed mapping.
    pub fn of(entry: &MapEntry) -> FileKey {
        FileKey {
            dev: (entry.dev_major, entry.dev_minor),
            inode: entry.inode,
            path: entry.path.clone(),
        }
    }
}

/// An unwind table for one file: the rows and the file's `PT_LOAD` segments (to compute the
/// load bias of each mapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTable {
    /// Rows sorted by pc (file virtual addresses).
    pub rows: Arc<[UnwindRow]>,
    /// `(p_offset, p_vaddr, p_filesz)` of the file's loadable segments.
    pub segments: Vec<(u64, u64, u64)>,
}

/// Builds tables for files (the CFI reader plugs in here).
pub trait TableProvider {
    /// The table of the file `entry` maps in process `pid`; `Ok(None)` when the file has no
    /// usable unwind information (the mapping then uses frame pointers).
    fn table(&mut self, pid: u32, entry: &MapEntry) -> Result<Option<FileTable>, String>;
}

/// A [`TableProvider`] over a function from a file to its rows (`Ok(None)`: no usable CFI,
/// frame pointers): the mapped file is opened as `/proc/PID/map_files/START-END` (the very
/// file mapped, even deleted or in another mount namespace), else `/proc/PID/root/PATH`, and
/// its `PT_LOAD` segments are read for the load bias.
pub struct FileTables<F> {
    build: F,
    proc_root: std::path::PathBuf,
}

impl<F> FileTables<F>
where
    F: FnMut(&std::path::Path) -> Result<Option<Vec<UnwindRow>>, String> + Send,
{
    /// Tables built by `build` from files under `/proc`.
    pub fn new(build: F) -> FileTables<F> {
        FileTables {
            build,
            proc_root: std::path::PathBuf::from("/proc"),
        }
    }
}

/// The name of the vDSO's mapping in `/proc/PID/maps`.
pub const VDSO: &str = "[vdso]";

/// The vDSO is at most a few pages; anything larger is not read.
const MAX_VDSO_BYTES: u64 = 1 << 20;

/// The table of the vDSO mapped at `entry` in the process at `proc`, from its own `.eh_frame`
/// read out of the process's memory (`Ok(None)`: no usable CFI, frame pointers).
fn vdso_table(proc: &std::path::Path, entry: &MapEntry) -> Result<Option<FileTable>, String> {
    use std::os::unix::fs::FileExt;
    let len = entry.end.saturating_sub(entry.start);
    if len == 0 || len > MAX_VDSO_BYTES {
        return Ok(None);
    }
    let mem = std::fs::File::open(proc.join("mem")).map_err(|e| format!("vdso: {e}"))?;
    let mut bytes = vec![0u8; len as usize];
    mem.read_exact_at(&mut bytes, entry.start)
        .map_err(|e| format!("vdso: reading {len} bytes: {e}"))?;
    let table = crate::unwind::table::build_from_bytes(&bytes).map_err(|e| format!("vdso: {e}"))?;
    if table.stats.source == crate::unwind::table::TableSource::FramePointer {
        return Ok(None);
    }
    Ok(Some(FileTable {
        rows: table.rows.into(),
        segments: load_segments(&bytes).map_err(|e| format!("vdso: {e}"))?,
    }))
}

impl<F> TableProvider for FileTables<F>
where
    F: FnMut(&std::path::Path) -> Result<Option<Vec<UnwindRow>>, String> + Send,
{
    fn table(&mut self, pid: u32, entry: &MapEntry) -> Result<Option<FileTable>, String> {
        let proc = self.proc_root.join(pid.to_string());
        if entry.path == VDSO {
            return vdso_table(&proc, entry);
        }
        let mapped = proc.join(format!("map_files/{:x}-{:x}", entry.start, entry.end));
        let path = if mapped.exists() {
            mapped
        } else {
            proc.join("root").join(entry.path.trim_start_matches('/'))
        };
        let Some(rows) = (self.build)(&path)? else {
            return Ok(None);
        };
        Ok(Some(FileTable {
            rows: rows.into(),
            segments: read_load_segments(&path)?,
        }))
    }
}

/// The load bias of a mapping: the address of file vaddr 0 (`pc - bias` is the vaddr).
pub fn load_bias(entry: &MapEntry, segments: &[(u64, u64, u64)]) -> Option<u64> {
    // The segment this mapping was made for: the one whose file bytes overlap it most. A
    // mapping starts at a page boundary, so its first page may also hold the tail of the
    // previous segment (and its last page the head of the next): "the segment containing
    // `entry.offset`" would then be the wrong one, off by the difference of their alignments.
    let map_end = entry
        .offset
        .checked_add(entry.end.checked_sub(entry.start)?)?;
    let overlap = |&(off, _, size): &(u64, u64, u64)| {
        let seg_end = off.saturating_add(size.max(1));
        seg_end.min(map_end).saturating_sub(off.max(entry.offset))
    };
    let segment = segments
        .iter()
        .filter(|s| overlap(s) > 0)
        .max_by_key(|s| overlap(s))?;
    let (offset, vaddr, _) = *segment;
    // A byte at file offset `o` of that segment is at vaddr `vaddr + (o - offset)` and is mapped
    // at `entry.start + (o - entry.offset)`; the difference does not depend on `o`.
    entry
        .start
        .checked_sub(entry.offset)?
        .checked_add(offset)?
        .checked_sub(vaddr)
}

/// `(p_offset, p_vaddr, p_filesz)` of the `PT_LOAD` segments of an ELF64 image; `data` may be
/// just the head of the file as long as it holds the program headers.
pub fn load_segments(data: &[u8]) -> Result<Vec<(u64, u64, u64)>, object::Error> {
    use object::read::elf::FileHeader;
    let header = object::elf::FileHeader64::<object::Endianness>::parse(data)?;
    let endian = header.endian()?;
    Ok(pt_loads(header.program_headers(endian, data)?, endian))
}

/// The `PT_LOAD` entries among `headers`, as [`load_segments`] gives them.
fn pt_loads(headers: &[Phdr], endian: object::Endianness) -> Vec<(u64, u64, u64)> {
    use object::read::elf::ProgramHeader;
    headers
        .iter()
        .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
        .map(|p| (p.p_offset(endian), p.p_vaddr(endian), p.p_filesz(endian)))
        .collect()
}

type Phdr = object::elf::ProgramHeader64<object::Endianness>;

/// [`load_segments`] of the file at `path`, reading only its head and, when the program
/// headers are elsewhere (lld may put them at the end: `librustc_driver` has them 80 MB in),
/// those headers: never the whole file.
pub fn read_load_segments(path: &std::path::Path) -> Result<Vec<(u64, u64, u64)>, String> {
    use object::read::elf::FileHeader;
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    let mut head = Vec::with_capacity(HEAD_BYTES);
    (&file)
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| err(&e))?;
    if let Ok(segments) = load_segments(&head) {
        return Ok(segments);
    }
    // The program headers are past the head: read just them.
    let header = object::elf::FileHeader64::<object::Endianness>::parse(head.as_slice())
        .map_err(|e| err(&e))?;
    let endian = header.endian().map_err(|e| err(&e))?;
    if usize::from(header.e_phentsize(endian)) != std::mem::size_of::<Phdr>() {
        return Err(err(&"unexpected ELF program header size"));
    }
    let count = usize::from(header.e_phnum(endian));
    if count == usize::from(object::elf::PN_XNUM) {
        return Err(err(&"too many ELF program headers"));
    }
    let mut bytes = vec![0u8; count * std::mem::size_of::<Phdr>()];
    file.read_exact_at(&mut bytes, header.e_phoff(endian))
        .map_err(|e| err(&e))?;
    let (headers, _) = object::pod::slice_from_bytes::<Phdr>(&bytes, count)
        .map_err(|()| err(&"misaligned ELF program headers"))?;
    Ok(pt_loads(headers, endian))
}

/// Bytes read to find the program headers (they follow the ELF header in practice).
const HEAD_BYTES: usize = 4096;

/// First-fit allocator of index ranges in a fixed-size array; adjacent free ranges merge.
#[derive(Debug, Clone)]
pub struct RangeAlloc {
    capacity: u32,
    /// Free ranges: start → length.
    free: BTreeMap<u32, u32>,
    /// Freed ranges waiting for the grace period.
    retired: Vec<(Instant, u32, u32)>,
}

impl RangeAlloc {
    /// An allocator over `0..capacity`, all free.
    pub fn new(capacity: u32) -> RangeAlloc {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        RangeAlloc {
            capacity,
            free,
            retired: Vec::new(),
        }
    }

    /// The size of the array.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Entries neither allocated nor waiting.
    pub fn free_len(&self) -> u64 {
        self.free.values().map(|&l| u64::from(l)).sum()
    }

    /// The start of a free range of `len` entries, now allocated.
    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return Some(0);
        }
        let (&start, &have) = self.free.iter().find(|(_, &have)| have >= len)?;
        self.free.remove(&start);
        if have > len {
            self.free.insert(start + len, have - len);
        }
        Some(start)
    }

    /// Frees a range after [`FREE_GRACE`] (walks in flight may still read it).
    pub fn retire(&mut self, start: u32, len: u32, now: Instant) {
        if len > 0 {
            self.retired.push((now, start, len));
        }
    }

    /// Frees the retired ranges whose grace period is over.
    pub fn reclaim(&mut self, now: Instant) {
        let mut keep = Vec::new();
        for (at, start, len) in std::mem::take(&mut self.retired) {
            if now.saturating_duration_since(at) >= FREE_GRACE {
                self.release(start, len);
            } else {
                keep.push((at, start, len));
            }
        }
        self.retired = keep;
    }

    fn release(&mut self, mut start: u32, mut len: u32) {
        if let Some((&prev, &prev_len)) = self.free.range(..start).next_back() {
            if prev + prev_len == start {
                self.free.remove(&prev);
                start = prev;
                len += prev_len;
            }
        }
        if let Some(next_len) = self.free.remove(&(start + len)) {
            len += next_len;
        }
        self.free.insert(start, len);
    }
}

/// Counts of the user-space side of unwinding, for metrics and debug info.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindMapStats {
    /// Processes with mappings in the kernel.
    pub processes: u64,
    /// Tables in the kernel (referenced or cached).
    pub tables: u64,
    /// Entries in use in `unwind_rows` (the tables' rows and page indexes).
    pub rows_used: u64,
    /// Executable mappings (of all processes) walked with a table.
    pub mappings_with_table: u64,
    /// Executable mappings walked with frame pointers (no file, no CFI, no room).
    pub mappings_frame_pointer: u64,
    /// Tables that could not be built, since start (the mappings use frame pointers).
    pub table_errors: u64,
    /// Tables that did not fit in `unwind_rows` even after evicting unused ones, since start.
    pub tables_no_room: u64,
    /// Mappings beyond [`MAX_PROC_MAPPINGS`] left out, since start.
    pub mappings_dropped: u64,
    /// CPython processes whose Python frames the kernel records.
    pub python_processes: u64,
    /// CPython processes whose version has no offsets (their stacks stay native), since start.
    pub python_unsupported: u64,
}

#[derive(Debug)]
struct TableSlot {
    id: u32,
    first: u32,
    count: u32,
    segments: Vec<(u64, u64, u64)>,
    refs: u32,
    last_used: Instant,
}

#[derive(Debug, Default)]
struct ProcSlot {
    first: u32,
    count: u32,
    files: Vec<FileKey>,
    frame_pointer: u32,
}

/// Errors of [`UnwindState`] (a map write failed, or an array is full).
#[derive(Debug, thiserror::Error)]
pub enum UnwindMapError {
    /// A BPF map operation failed.
    #[error("unwind map {map}: {message}")]
    Map {
        /// Which map.
        map: &'static str,
        /// What failed.
        message: String,
    },
    /// `unwind_mappings` has no room for the process's mappings.
    #[error("unwind_mappings is full ({0} mappings needed)")]
    MappingsFull(usize),
}

fn map_err<E: std::fmt::Display>(map: &'static str) -> impl Fn(E) -> UnwindMapError {
    move |e| UnwindMapError::Map {
        map,
        message: e.to_string(),
    }
}

/// What the kernel knows about processes and tables, mirrored in user space.
#[derive(Debug)]
pub struct UnwindState {
    rows: RangeAlloc,
    mappings: RangeAlloc,
    table_ids: RangeAlloc,
    tables: HashMap<FileKey, TableSlot>,
    /// Files that got no table, and when to try again. Every process that maps such a file
    /// would otherwise read and parse it again: each `rustc` of a build maps the 150 MB
    /// `librustc_driver`.
    untabled: HashMap<FileKey, Retry>,
    /// Tables whose last user went away, since start (room may have appeared).
    released: u64,
    procs: HashMap<u32, ProcSlot>,
    stats: UnwindMapStats,
    /// The last `UnwindTable::generation` written.
    generation: u32,
}

/// When a file without a table is tried again.
#[derive(Debug, Clone, Copy)]
enum Retry {
    /// Not while it is the same file (no CFI, too many rows).
    Never,
    /// After this instant (building it failed).
    After(Instant),
    /// Once a table has been released since (`UnwindState::released` was this): no room.
    Released(u64),
}

/// Files remembered in `UnwindState::untabled` (forgotten all at once past this).
const MAX_UNTABLED: usize = 4096;
/// When a file whose table failed to build is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(10);

impl UnwindState {
    /// Empty state for maps of the given sizes (`unwind_rows`, `unwind_mappings`,
    /// `unwind_tables` max_entries).
    pub fn new(rows: u32, mappings: u32, tables: u32) -> UnwindState {
        UnwindState {
            rows: RangeAlloc::new(rows),
            mappings: RangeAlloc::new(mappings),
            // Ids are below `tables` <= u32::MAX, so never TABLE_FRAME_POINTER.
            table_ids: RangeAlloc::new(tables),
            tables: HashMap::new(),
            untabled: HashMap::new(),
            released: 0,
            procs: HashMap::new(),
            stats: UnwindMapStats::default(),
            generation: 0,
        }
    }

    /// Current counts.
    pub fn stats(&self) -> UnwindMapStats {
        let mut stats = self.stats;
        stats.processes = self.procs.len() as u64;
        stats.tables = self.tables.len() as u64;
        stats.rows_used = self.tables.values().map(|t| u64::from(t.count)).sum();
        stats.mappings_frame_pointer = self
            .procs
            .values()
            .map(|p| u64::from(p.frame_pointer))
            .sum();
        stats.mappings_with_table = self.procs.values().map(|p| p.files.len() as u64).sum();
        stats
    }

    /// Whether `pid` has mappings in the kernel.
    pub fn has_process(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// (Re)publishes the executable mappings of `pid` from its `/proc/PID/maps` entries,
    /// uploading the tables of files not in the kernel yet. Replaces the previous mappings
    /// atomically (new range first, then the process entry).
    pub fn update_process<M: UnwindMaps>(
        &mut self,
        pid: u32,
        entries: &[MapEntry],
        source: &mut dyn TableProvider,
        maps: &mut M,
    ) -> Result<(), UnwindMapError> {
        let now = Instant::now();
        self.reclaim(now);
        let mut exec: Vec<&MapEntry> = entries
            .iter()
            .filter(|e| e.is_exec() && e.end > e.start)
            .collect();
        exec.sort_by_key(|e| e.start);
        exec.dedup_by_key(|e| e.start);
        if exec.len() > MAX_PROC_MAPPINGS {
            self.stats.mappings_dropped += (exec.len() - MAX_PROC_MAPPINGS) as u64;
            exec.truncate(MAX_PROC_MAPPINGS);
        }

        let mut files = Vec::new();
        let mut kernel = Vec::with_capacity(exec.len());
        for entry in exec {
            let mut mapping = UnwindMapping {
                start: entry.start,
                end: entry.end,
                bias: 0,
                table: TABLE_FRAME_POINTER,
                pad: 0,
            };
            // The vDSO has no file but carries its own `.eh_frame`: its table is built from
            // memory (see `FileTables`) and shared like a file's (one image per kernel).
            if entry.is_file() || entry.path == VDSO {
                let key = FileKey::of(entry);
                if let Some((id, bias)) = self.table_for(pid, entry, &key, source, maps, now)? {
                    mapping.table = id;
                    mapping.bias = bias;
                    files.push(key);
                }
            }
            kernel.push(mapping);
        }

        let count = kernel.len() as u32;
        let first = self
            .mappings
            .alloc(count)
            .ok_or(UnwindMapError::MappingsFull(kernel.len()))?;
        if let Err(e) = maps.write_mappings(first, &kernel) {
            self.mappings.retire(first, count, now);
            self.release_files(&files, now);
            return Err(map_err("unwind_mappings")(e));
        }
        let published = maps.set_proc(
            pid,
            UnwindProc {
                first,
                count,
                reread_ns: 0,
            },
        );
        if let Err(e) = published {
            self.mappings.retire(first, count, now);
            self.release_files(&files, now);
            return Err(map_err("unwind_procs")(e));
        }
        if let Some(old) = self.procs.insert(
            pid,
            ProcSlot {
                first,
                count,
                frame_pointer: count - files.len() as u32,
                files,
            },
        ) {
            self.mappings.retire(old.first, old.count, now);
            self.release_files(&old.files, now);
        }
        Ok(())
    }

    /// Forgets `pid` (exit, or no longer profiled); its tables stay cached while unused.
    pub fn remove_process<M: UnwindMaps>(
        &mut self,
        pid: u32,
        maps: &mut M,
    ) -> Result<(), UnwindMapError> {
        let now = Instant::now();
        let Some(old) = self.procs.remove(&pid) else {
            return Ok(());
        };
        maps.remove_proc(pid).map_err(map_err("unwind_procs"))?;
        self.mappings.retire(old.first, old.count, now);
        self.release_files(&old.files, now);
        Ok(())
    }

    fn reclaim(&mut self, now: Instant) {
        self.rows.reclaim(now);
        self.mappings.reclaim(now);
        self.table_ids.reclaim(now);
    }

    fn release_files(&mut self, files: &[FileKey], now: Instant) {
        for key in files {
            if let Some(slot) = self.tables.get_mut(key) {
                slot.refs = slot.refs.saturating_sub(1);
                slot.last_used = now;
                if slot.refs == 0 {
                    self.released += 1;
                }
            }
        }
    }

    /// Remembers that `key` got no table (see `untabled`).
    fn remember_untabled(&mut self, key: &FileKey, retry: Retry) {
        if self.untabled.len() >= MAX_UNTABLED {
            self.untabled.clear();
        }
        self.untabled.insert(key.clone(), retry);
    }

    /// The table id and load bias for a file mapping, uploading the table if needed; `None`
    /// for frame pointers. Takes a reference on the table.
    fn table_for<M: UnwindMaps>(
        &mut self,
        pid: u32,
        entry: &MapEntry,
        key: &FileKey,
        source: &mut dyn TableProvider,
        maps: &mut M,
        now: Instant,
    ) -> Result<Option<(u32, u64)>, UnwindMapError> {
        if let Some(slot) = self.tables.get_mut(key) {
            let Some(bias) = load_bias(entry, &slot.segments) else {
                return Ok(None);
            };
            slot.refs += 1;
            slot.last_used = now;
            return Ok(Some((slot.id, bias)));
        }
        match self.untabled.get(key) {
            Some(Retry::Never) => return Ok(None),
            Some(Retry::After(at)) if now < *at => return Ok(None),
            Some(Retry::Released(n)) if *n == self.released => return Ok(None),
            _ => {}
        }
        let table = match source.table(pid, entry) {
            Ok(Some(table)) => table,
            Ok(None) => {
                self.remember_untabled(key, Retry::Never);
                return Ok(None);
            }
            Err(e) => {
                tracing::debug!(pid, path = %entry.path, error = %e, "no unwind table, using frame pointers");
                self.stats.table_errors += 1;
                self.remember_untabled(key, Retry::After(now + RETRY_FAILED));
                return Ok(None);
            }
        };
        if table.rows.is_empty() || table.rows.len() > MAX_TABLE_ROWS {
            self.remember_untabled(key, Retry::Never);
            return Ok(None);
        }
        let Some(bias) = load_bias(entry, &table.segments) else {
            return Ok(None);
        };
        let (page_base, pages) = page_index(&table.rows);
        let rows = table.rows.len() as u32;
        // The page index and the rows take one range: the index first.
        let count = rows + pages.len() as u32;
        let Some((id, first)) = self.alloc_table(count, now) else {
            self.stats.tables_no_room += 1;
            self.remember_untabled(key, Retry::Released(self.released));
            return Ok(None);
        };
        self.untabled.remove(key);
        self.generation = self.generation.wrapping_add(1).max(1);
        let described = UnwindTable {
            first,
            count: rows,
            page_base,
            pages: pages.len() as u32,
            generation: self.generation,
            pad: 0,
        };
        let written = maps
            .write_pages(first, &pages)
            .and_then(|()| maps.write_rows(first + described.pages, &table.rows))
            .map_err(map_err("unwind_rows"))
            .and_then(|()| {
                maps.set_table(id, described)
                    .map_err(map_err("unwind_tables"))
            });
        if let Err(e) = written {
            self.rows.retire(first, count, now);
            self.table_ids.retire(id, 1, now);
            return Err(e);
        }
        self.tables.insert(
            key.clone(),
            TableSlot {
                id,
                first,
                count,
                segments: table.segments,
                refs: 1,
                last_used: now,
            },
        );
        Ok(Some((id, bias)))
    }

    /// A table id and a range of rows, evicting unused tables (least recently used first)
    /// until both fit. Only tables unused for [`FREE_GRACE`] are evicted, so no walk in
    /// flight reads their rows.
    fn alloc_table(&mut self, count: u32, now: Instant) -> Option<(u32, u32)> {
        loop {
            if let Some(first) = self.rows.alloc(count) {
                if let Some(id) = self.table_ids.alloc(1) {
                    return Some((id, first));
                }
                self.rows.release(first, count);
            }
            let victim = self
                .tables
                .iter()
                .filter(|(_, slot)| {
                    slot.refs == 0 && now.saturating_duration_since(slot.last_used) >= FREE_GRACE
                })
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(key, _)| key.clone())?;
            let slot = self.tables.remove(&victim)?;
            self.rows.release(slot.first, slot.count);
            self.table_ids.release(slot.id, 1);
        }
    }
}

#[cfg(test)]
mod tests;
