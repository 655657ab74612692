//! The aya side of the in-kernel table walk: the unwind maps of the loaded object behind
//! [`UnwindMaps`], [`Unwinder`] (which reads `/proc/PID/maps` into [`UnwindState`] with the
//! tables of a [`TableProvider`]), the re-read worker that republishes a process's mappings
//! as soon as the kernel asks, and the `ustacks0/1` stores the walked stacks go to.

use std::collections::{BTreeSet, HashMap as StdHashMap};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use aya::maps::{Array, HashMap, IterableMap, MapData, MapError};
use aya::Ebpf;

use super::abi::{SampleKey, STORE_USTACKS};
use super::python_bpf::{python_candidate, PythonProc};
use super::sys::{self, BatchError};
use super::unwind_abi::{
    UnwindMapping, UnwindPage, UnwindProc, UnwindTable, UserStack, WalkedStack,
};
use super::unwind_maps::{
    FileTables, TableProvider, UnwindMapError, UnwindMapStats, UnwindMaps, UnwindState,
};
use super::ProbeError;
use crate::python::detect::find_image;
use crate::python::memory::ProcMemory;
use crate::python::{DetectError, PythonProcess};

/// Prefix of a detection error that names an unsupported version.
const UNSUPPORTED: &str = "unsupported CPython ";
use crate::symbolize::procmaps::parse_maps;
use crate::symbolize::procmaps::MapEntry;
use crate::unwind::abi::UnwindRow;
use crate::unwind::cache::UnwindCache;
use crate::unwind::table::TableSource;

/// Bytes of rows the user-space table cache keeps: a table only needs building once per file
/// (the kernel's copy is shared by every later process), so the cache can stay small.
const CACHE_BYTES: usize = 8 << 20;

/// The tables of `crate::unwind` (gimli over `.eh_frame`/`.debug_frame`, the separate debug
/// file), cached by file identity; files without CFI get frame pointers.
pub(crate) fn cfi_tables() -> Box<dyn TableProvider + Send> {
    let mut cache = UnwindCache::new(CACHE_BYTES);
    Box::new(FileTables::new(move |path: &std::path::Path| {
        let table = cache.get_or_build(path).map_err(|e| e.to_string())?;
        Ok((table.stats.source != TableSource::FramePointer).then(|| table.rows.clone()))
    }))
}

// Map names shared with bpf/profile.bpf.c.
pub(crate) const MAP_UNWIND_PROCS: &str = "unwind_procs";
pub(crate) const MAP_UNWIND_MAPPINGS: &str = "unwind_mappings";
pub(crate) const MAP_UNWIND_TABLES: &str = "unwind_tables";
pub(crate) const MAP_UNWIND_ROWS: &str = "unwind_rows";
pub(crate) const MAP_USTACKS: [&str; 2] = ["ustacks0", "ustacks1"];
pub(crate) const MAP_PYTHON_PROCS: &str = "python_procs";

/// The four maps that describe processes and tables to the kernel.
pub(crate) struct BpfUnwindMaps {
    procs: HashMap<MapData, u32, UnwindProc>,
    mappings: Array<MapData, UnwindMapping>,
    tables: Array<MapData, UnwindTable>,
    rows: Array<MapData, UnwindRow>,
    /// Which of the fast ways to write the arrays still work.
    fast: FastWrites,
    /// Raised after every write of `procs` (see `proc_cache` in bpf/walk.h).
    config_gen: Arc<sys::SharedCounter>,
}

/// The ways to write many array entries at once that have not failed yet.
#[derive(Debug, Clone, Copy)]
struct FastWrites {
    /// Through a mapping of the map (else BPF_MAP_UPDATE_BATCH).
    mmap: bool,
    /// BPF_MAP_UPDATE_BATCH (else entries are written one by one).
    batch: bool,
}

/// The bytes of a value as the C program lays it out (native endian, no padding).
trait Bytes {
    const SIZE: usize;
    fn put(&self, out: &mut Vec<u8>);
}

impl Bytes for UnwindRow {
    const SIZE: usize = 8;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend(self.pc.to_ne_bytes());
        out.extend([self.kind, self.rbp_offset as u8]);
        out.extend(self.cfa_offset.to_ne_bytes());
    }
}

impl Bytes for UnwindPage {
    const SIZE: usize = 8;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend(self.first.to_ne_bytes());
        out.extend(self.count.to_ne_bytes());
    }
}

impl Bytes for UnwindMapping {
    const SIZE: usize = 32;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend(self.start.to_ne_bytes());
        out.extend(self.end.to_ne_bytes());
        out.extend(self.bias.to_ne_bytes());
        out.extend(self.table.to_ne_bytes());
        out.extend(self.pad.to_ne_bytes());
    }
}

/// Writes `values` at `first..` of an array map through a mapping of it, else in batches.
/// `Ok(false)` when neither works (the caller writes one by one); a way that fails once is
/// not tried again (`mmap`, `batch`).
fn write_fast<T: Bytes>(
    map: &MapData,
    first: u32,
    values: &[T],
    fast: &mut FastWrites,
) -> Result<bool, MapError> {
    use std::os::fd::{AsFd, AsRawFd};
    let FastWrites { mmap, batch } = fast;
    if !*mmap && !*batch {
        return Ok(false);
    }
    let mut bytes = Vec::with_capacity(values.len() * T::SIZE);
    for value in values {
        value.put(&mut bytes);
    }
    let fd = map.fd().as_fd().as_raw_fd();
    // The maps are BPF_F_MMAPABLE (5.5) with their values T::SIZE apart (a multiple of 8, as
    // the kernel lays an array's values out).
    if *mmap {
        match sys::write_mmapable_array(fd, first as usize * T::SIZE, &bytes) {
            Ok(()) => return Ok(true),
            Err(e) => {
                tracing::warn!(error = %e, "mmap of an unwind map failed, writing with BPF_MAP_UPDATE_BATCH");
                *mmap = false;
            }
        }
    }
    if !*batch {
        return Ok(false);
    }
    match sys::update_array_batch(fd, first, &bytes, T::SIZE) {
        Ok(()) => Ok(true),
        Err(BatchError::Unsupported(e)) => {
            tracing::warn!(error = %e, "BPF_MAP_UPDATE_BATCH unsupported, writing unwind maps one entry at a time");
            *batch = false;
            Ok(false)
        }
        Err(BatchError::Io(e)) => Err(MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_batch",
            io_error: e,
        })),
    }
}

impl UnwindMaps for BpfUnwindMaps {
    type Error = MapError;

    fn write_rows(&mut self, first: u32, rows: &[UnwindRow]) -> Result<(), MapError> {
        if write_fast(self.rows.map(), first, rows, &mut self.fast)? {
            return Ok(());
        }
        for (i, row) in (first..).zip(rows) {
            self.rows.set(i, *row, 0)?;
        }
        Ok(())
    }

    fn write_pages(&mut self, first: u32, pages: &[UnwindPage]) -> Result<(), MapError> {
        if write_fast(self.rows.map(), first, pages, &mut self.fast)? {
            return Ok(());
        }
        // One by one, as the rows they share the map with (same size, same bytes).
        for (i, page) in (first..).zip(pages) {
            let [c0, c1, c2, c3] = page.count.to_ne_bytes();
            let as_row = UnwindRow {
                pc: page.first,
                kind: c0,
                rbp_offset: c1 as i8,
                cfa_offset: i16::from_ne_bytes([c2, c3]),
            };
            self.rows.set(i, as_row, 0)?;
        }
        Ok(())
    }

    fn set_table(&mut self, id: u32, table: UnwindTable) -> Result<(), MapError> {
        self.tables.set(id, table, 0)
    }

    fn write_mappings(&mut self, first: u32, mappings: &[UnwindMapping]) -> Result<(), MapError> {
        if write_fast(self.mappings.map(), first, mappings, &mut self.fast)? {
            return Ok(());
        }
        for (i, mapping) in (first..).zip(mappings) {
            self.mappings.set(i, *mapping, 0)?;
        }
        Ok(())
    }

    fn set_proc(&mut self, pid: u32, proc: UnwindProc) -> Result<(), MapError> {
        let inserted = self.procs.insert(pid, proc, 0);
        self.config_gen.raise();
        inserted
    }

    fn remove_proc(&mut self, pid: u32) -> Result<(), MapError> {
        let removed = self.procs.remove(&pid);
        self.config_gen.raise();
        match removed {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Keeps the kernel's view of processes and tables current.
pub(crate) struct Unwinder {
    maps: BpfUnwindMaps,
    state: UnwindState,
    /// `python_procs` and what was last published per pid, when Python frames are recorded.
    python: Option<PythonProcs>,
    provider: Option<Box<dyn TableProvider + Send>>,
    proc_root: PathBuf,
}

fn take<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, MapError>,
) -> Result<T, ProbeError> {
    let map = ebpf.take_map(name).ok_or_else(|| ProbeError::Load {
        context: format!("map {name} missing from the BPF object"),
        source: None,
    })?;
    convert(map).map_err(|e| ProbeError::Map {
        map: name,
        source: Box::new(e),
    })
}

impl Unwinder {
    /// Takes the unwind maps out of the loaded object; `rows`, `mappings`, `tables` are their
    /// sizes (as loaded).
    pub(crate) fn take(
        ebpf: &mut Ebpf,
        config_gen: Arc<sys::SharedCounter>,
        rows: u32,
        mappings: u32,
        tables: u32,
    ) -> Result<Unwinder, ProbeError> {
        let maps = BpfUnwindMaps {
            procs: take(ebpf, MAP_UNWIND_PROCS, HashMap::try_from)?,
            mappings: take(ebpf, MAP_UNWIND_MAPPINGS, Array::try_from)?,
            tables: take(ebpf, MAP_UNWIND_TABLES, Array::try_from)?,
            rows: take(ebpf, MAP_UNWIND_ROWS, Array::try_from)?,
            fast: FastWrites {
                mmap: true,
                batch: true,
            },
            config_gen,
        };
        Ok(Unwinder {
            maps,
            python: None,
            state: UnwindState::new(rows, mappings, tables),
            provider: None,
            proc_root: PathBuf::from("/proc"),
        })
    }

    /// Records Python frames from now on: takes `python_procs` out of the loaded object.
    pub(crate) fn enable_python(&mut self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        self.python = Some(PythonProcs::new(
            Box::new(take(ebpf, MAP_PYTHON_PROCS, HashMap::try_from)?),
            Arc::clone(&self.maps.config_gen),
        ));
        Ok(())
    }

    /// Where tables come from; until one is set no process is walked with tables.
    pub(crate) fn set_provider(&mut self, provider: Box<dyn TableProvider + Send>) {
        self.provider = Some(provider);
    }

    /// Whether processes are walked with tables (a provider is set).
    pub(crate) fn active(&self) -> bool {
        self.provider.is_some()
    }

    /// Re-reads the executable mappings of `pid` and publishes them (with any new tables).
    pub(crate) fn refresh(&mut self, pid: u32) -> Result<(), UnwindMapError> {
        let Some(provider) = self.provider.as_mut() else {
            return Ok(());
        };
        let path = self.proc_root.join(pid.to_string()).join("maps");
        let Ok(text) = std::fs::read_to_string(&path) else {
            // Gone already: its exit event removes it.
            return self.state.remove_process(pid, &mut self.maps);
        };
        let entries = parse_maps(&text);
        self.state
            .update_process(pid, &entries, provider.as_mut(), &mut self.maps)?;
        if let Some(python) = self.python.as_mut() {
            python.update(&self.proc_root, pid, &entries);
        }
        Ok(())
    }

    /// Whether `pid` is walked with tables.
    pub(crate) fn has_process(&self, pid: u32) -> bool {
        self.state.has_process(pid)
    }

    /// Stops walking `pid` with tables.
    pub(crate) fn forget(&mut self, pid: u32) -> Result<(), UnwindMapError> {
        if let Some(python) = self.python.as_mut() {
            python.forget(pid);
        }
        self.state.remove_process(pid, &mut self.maps)
    }

    /// Counts of the user-space side.
    pub(crate) fn stats(&self) -> UnwindMapStats {
        let mut stats = self.state.stats();
        if let Some(python) = &self.python {
            stats.python_processes = python.published.len() as u64;
            stats.python_unsupported = python.unsupported_seen;
        }
        stats
    }

    /// The CPython versions met that have no offsets (each named once in the log).
    pub(crate) fn python_unsupported(&self) -> Vec<String> {
        self.python
            .as_ref()
            .map(|p| p.unsupported.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// `python_procs` as [`PythonProcs`] uses it (a trait so that its bookkeeping is tested without
/// a kernel).
trait PythonMap: Send {
    fn insert(&mut self, pid: u32, value: PythonProc) -> Result<(), MapError>;
    /// Removes `pid`'s entry; a missing one is not an error.
    fn remove(&mut self, pid: u32);
    /// Whether `pid` has an entry (the exec program deletes them).
    fn contains(&self, pid: u32) -> bool;
}

impl PythonMap for HashMap<MapData, u32, PythonProc> {
    fn insert(&mut self, pid: u32, value: PythonProc) -> Result<(), MapError> {
        HashMap::insert(self, pid, value, 0)
    }

    fn remove(&mut self, pid: u32) {
        let _ = HashMap::remove(self, &pid);
    }

    fn contains(&self, pid: u32) -> bool {
        self.get(&pid, 0).is_ok()
    }
}

/// The CPython processes described to the kernel.
struct PythonProcs {
    map: Box<dyn PythonMap>,
    /// Raised after every change of `map`: the sampler keeps what it found there per CPU
    /// (`py_cache` in `bpf/python.h`) for as long as the generation holds.
    config_gen: Arc<sys::SharedCounter>,
    /// Per pid: the image and load bias last detected (detection reads the image's symbols, so
    /// it runs again only when they change), and what was published.
    published: StdHashMap<u32, (String, u64, PythonProc)>,
    /// Per pid: the candidate image that is not a usable CPython (not detected again).
    not_python: StdHashMap<u32, String>,
    /// Unsupported versions met (named once in the log).
    unsupported: std::collections::BTreeSet<String>,
    /// Processes of an unsupported version, since start.
    unsupported_seen: u64,
    /// The images' symbols, by file.
    symbols: crate::python::detect::SymbolCache,
}

impl PythonProcs {
    /// No process yet; `map` is empty.
    fn new(map: Box<dyn PythonMap>, config_gen: Arc<sys::SharedCounter>) -> PythonProcs {
        PythonProcs {
            map,
            config_gen,
            published: StdHashMap::new(),
            not_python: StdHashMap::new(),
            unsupported: std::collections::BTreeSet::new(),
            unsupported_seen: 0,
            symbols: Default::default(),
        }
    }

    fn update(&mut self, proc_root: &std::path::Path, pid: u32, entries: &[MapEntry]) {
        let exe = std::fs::read_link(proc_root.join(pid.to_string()).join("exe")).ok();
        let exe = exe.as_ref().and_then(|p| p.to_str());
        if !python_candidate(entries, exe) {
            self.forget(pid);
            return;
        }
        let image = find_image(entries, exe).map(|(image, _)| image.to_string());
        let same = |known: &str| image.as_deref() == Some(known);
        if self.not_python.get(&pid).is_some_and(|known| same(known)) {
            return;
        }
        if let Some((known, _, _)) = self.published.get(&pid) {
            // The kernel drops the entry on exec: publish again even if the image is the same.
            if same(known) && self.map.contains(pid) {
                return;
            }
        }
        let detected = ProcMemory::open(proc_root, pid)
            .map_err(|e| e.to_string())
            .and_then(|mem| {
                PythonProcess::detect_with(pid, proc_root, entries, &mem, &mut self.symbols)
                    .map_err(|e| match e {
                        DetectError::Version(v) => format!("{UNSUPPORTED}{v}"),
                        e => e.to_string(),
                    })
            });
        let process = match detected {
            Ok(process) => process,
            Err(e) => {
                if let Some(version) = e.strip_prefix(UNSUPPORTED) {
                    self.unsupported_seen += 1;
                    if self.unsupported.insert(version.to_string()) {
                        tracing::warn!(pid, version, "CPython version without offsets: its stacks are shown as native frames");
                    }
                }
                tracing::debug!(pid, error = %e, "no Python frames for this process");
                self.forget(pid);
                if let Some(image) = image {
                    self.not_python.insert(pid, image);
                }
                return;
            }
        };
        let Some(value) = PythonProc::of(&process) else {
            tracing::warn!(pid, version = %process.version, "CPython offsets out of the kernel's range: no Python frames");
            self.forget(pid);
            return;
        };
        let inserted = self.map.insert(pid, value);
        self.config_gen.raise();
        if let Err(e) = inserted {
            tracing::warn!(pid, error = %e, "publishing a CPython process to the kernel failed");
            return;
        }
        tracing::debug!(pid, version = %process.version, image = %process.image, "recording Python frames");
        self.published
            .insert(pid, (process.image.clone(), process.bias, value));
    }

    fn forget(&mut self, pid: u32) {
        self.not_python.remove(&pid);
        if self.published.remove(&pid).is_some() {
            self.map.remove(pid);
            self.config_gen.raise();
        }
    }
}

/// Locks the unwinder; a panic while it was held cannot leave the maps half-written (every
/// update publishes a new range before the process entry), so a poisoned lock is taken.
pub(crate) fn lock(unwinder: &Mutex<Unwinder>) -> std::sync::MutexGuard<'_, Unwinder> {
    unwinder.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Republishes (again) the mappings of `pid`; an error only loses the table walk for the
/// process (its stacks then come from frame pointers).
pub(crate) fn refresh_or_forget(unwinder: &mut Unwinder, pid: u32) {
    if let Err(e) = unwinder.refresh(pid) {
        tracing::warn!(pid, error = %e, "publishing the mappings for the table walk failed");
        let _ = unwinder.forget(pid);
    }
}

/// Starts the thread that re-reads the mappings of the processes the kernel asks about (an
/// exec, or a walk that met a pc outside every known mapping: a library loaded after the
/// last read), so that their next samples are walked with the new mappings rather than
/// those of the next collect. Pids that arrive together are re-read once. The thread ends
/// when the returned sender is dropped or the unwinder is gone.
pub(crate) fn spawn_rereads(unwinder: Weak<Mutex<Unwinder>>) -> std::io::Result<Sender<u32>> {
    let (tx, rx) = channel::<u32>();
    std::thread::Builder::new()
        .name("unwind-rereads".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut pids = BTreeSet::from([first]);
                pids.extend(rx.try_iter());
                let Some(unwinder) = unwinder.upgrade() else {
                    return;
                };
                for pid in pids {
                    let mut unwinder = lock(&unwinder);
                    if unwinder.has_process(pid) {
                        refresh_or_forget(&mut unwinder, pid);
                    }
                }
            }
        })?;
    Ok(tx)
}

/// The `ustacks0/1` stores the kernel writes table-walked stacks to, one per half.
pub(crate) struct UserStacks {
    ustacks: [HashMap<MapData, u64, UserStack>; 2],
}

impl UserStacks {
    /// Takes both stores out of the loaded object.
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<UserStacks, ProbeError> {
        Ok(UserStacks {
            ustacks: [
                take(ebpf, MAP_USTACKS[0], HashMap::try_from)?,
                take(ebpf, MAP_USTACKS[1], HashMap::try_from)?,
            ],
        })
    }

    /// Reads and clears the walked stacks of one half: each stack's frames in use and how its
    /// walk ended, and the samples counted in the entries themselves (see
    /// [`counted_in_entry`]). (Kept whole, each is 4 KiB whatever its depth: a whole-host
    /// interval with a few thousand distinct stacks made the collect the process's memory
    /// peak.)
    pub(crate) fn drain_ustacks(&mut self, half: usize) -> Result<DrainedUserStacks, ProbeError> {
        let name = MAP_USTACKS[half];
        let map = &mut self.ustacks[half];
        let error = |e: MapError| ProbeError::Map {
            map: name,
            source: Box::new(e),
        };
        let keys: Vec<u64> = map.keys().collect::<Result<_, _>>().map_err(error)?;
        let mut drained = DrainedUserStacks {
            stacks: StdHashMap::with_capacity(keys.len()),
            counts: Vec::new(),
        };
        for key in keys {
            match map.get(&key, 0) {
                Ok(stack) => {
                    drained.counts.extend(counted_in_entry(key, &stack));
                    drained.stacks.insert(key, WalkedStack::from(&stack));
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(error(e)),
            }
            let _ = map.remove(&key);
        }
        Ok(drained)
    }
}

/// One half of `ustacks0/1` as read by [`UserStacks::drain_ustacks`].
#[derive(Debug, Default)]
pub(crate) struct DrainedUserStacks {
    /// The stacks by key (the `leaf_caller` of counts keys with `STORE_USTACKS`).
    pub(crate) stacks: StdHashMap<u64, WalkedStack>,
    /// Samples counted in the entries, as the counts map would have held them.
    pub(crate) counts: Vec<(SampleKey, u64)>,
}

/// The samples the kernel counted in the `ustacks` entry `key` itself (samples that asked for
/// no kernel stack: one map update fewer each), as the counts-map entry they stand for: the
/// entry's process, no kernel stack, the user stack under `key`. `None` when it counted none.
pub(crate) fn counted_in_entry(key: u64, stack: &UserStack) -> Option<(SampleKey, u64)> {
    if stack.samples == 0 {
        return None;
    }
    let key = SampleKey {
        pid: stack.tgid,
        user_stack: -1,
        kernel_stack: -1,
        user_store: STORE_USTACKS,
        leaf_caller: key,
    };
    Some((key, stack.samples))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::fd::AsRawFd;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    /// `python_procs` in memory, shared with the test that inspects it.
    #[derive(Clone, Default)]
    struct MemoryMap(Arc<Mutex<StdHashMap<u32, PythonProc>>>);

    impl PythonMap for MemoryMap {
        fn insert(&mut self, pid: u32, value: PythonProc) -> Result<(), MapError> {
            self.0.lock().unwrap().insert(pid, value);
            Ok(())
        }

        fn remove(&mut self, pid: u32) {
            self.0.lock().unwrap().remove(&pid);
        }

        fn contains(&self, pid: u32) -> bool {
            self.0.lock().unwrap().contains_key(&pid)
        }
    }

    /// A counter on a temporary file (a file's pages are shared like the map's).
    fn counter() -> (std::fs::File, Arc<sys::SharedCounter>) {
        let file = tempfile::tempfile().unwrap();
        file.set_len(sys::page_size() as u64).unwrap();
        let counter = Arc::new(sys::SharedCounter::map(file.as_raw_fd()).unwrap());
        (file, counter)
    }

    /// Starts `program args`, waits for its first line of output.
    fn started(program: &str, args: &[&str]) -> Child {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        child
    }

    fn entries(pid: u32) -> Vec<MapEntry> {
        parse_maps(&std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap())
    }

    /// The sampler keeps what it read of `python_procs` per CPU until `config_gen` moves
    /// (`py_cache`): every change of the map must raise it, and nothing else should (each
    /// raise empties every CPU's caches).
    #[test]
    #[ignore = "needs /usr/bin/python3"]
    fn every_python_procs_change_raises_the_generation_and_nothing_else_does() {
        let (_file, gen) = counter();
        let mut map = MemoryMap::default();
        let mut procs = PythonProcs::new(Box::new(map.clone()), Arc::clone(&gen));
        let root = Path::new("/proc");

        let mut python = started(
            "/usr/bin/python3",
            &[
                "-c",
                "import time; print('ready', flush=True); time.sleep(60)",
            ],
        );
        let pid = python.id();
        let before = gen.get();
        procs.update(root, pid, &entries(pid));
        assert!(map.contains(pid), "python3 {pid} was not published");
        assert_eq!(
            gen.get(),
            before + 1,
            "publishing did not raise the generation"
        );

        // The same mappings again: nothing changes, so the caches stay.
        procs.update(root, pid, &entries(pid));
        assert_eq!(
            gen.get(),
            before + 1,
            "an unchanged process raised the generation"
        );

        // The exec program dropped the entry: it is published again, with a raise.
        map.remove(pid);
        procs.update(root, pid, &entries(pid));
        assert!(map.contains(pid), "a dropped entry was not published again");
        assert_eq!(gen.get(), before + 2);

        procs.forget(pid);
        assert!(!map.contains(pid));
        assert_eq!(
            gen.get(),
            before + 3,
            "removing did not raise the generation"
        );
        procs.forget(pid);
        assert_eq!(
            gen.get(),
            before + 3,
            "forgetting an unknown pid raised the generation"
        );

        // A process that is not Python is never published and raises nothing.
        let mut sleeper = started("/bin/sh", &["-c", "echo ready; exec sleep 60"]);
        let other = sleeper.id();
        procs.update(root, other, &entries(other));
        assert!(!map.contains(other));
        assert_eq!(
            gen.get(),
            before + 3,
            "a non-Python process raised the generation"
        );

        for child in [&mut python, &mut sleeper] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
