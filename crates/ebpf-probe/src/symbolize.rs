//! Symbolization of user and kernel stacks.
//!
//! Inputs are a pid and instruction pointers (leaf first) from the kernel side; outputs are
//! [`Frame`]s with function names and the executable mapping they fall in. User addresses
//! are resolved through `<proc_root>/PID/maps` and the mapped ELF files read through
//! `<proc_root>/PID/root` (see [`elf`] for the symbol sources), the `[vdso]` image read from
//! `<proc_root>/PID/mem`, and `/tmp/perf-<nspid>.map` for JIT code; kernel addresses through
//! `/proc/kallsyms` ([`kallsyms`]). Per-process tables live in an LRU of `pid_cache_size`,
//! ELF symbol tables in an LRU of `elf_cache_size` keyed by build ID and by
//! device+inode(+size+mtime). Frames that cannot be named keep their mapping (shown as
//! `module+0xoffset`) or stay `[unknown]`; they are never dropped.

pub mod demangle;
pub mod elf;
pub mod gopclntab;
pub mod kallsyms;
pub mod ksym;
pub mod perfmap;
pub mod procmaps;
pub mod table;

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::probe::python_bpf::{error_marker, user_words, UserWord, PY_ERR_NO_THREAD, PY_ERR_READ};
use crate::python::PySymbolizer;

/// The counting name of a kernel-side Python frame error.
fn kernel_reason(reason: u32) -> &'static str {
    match reason {
        PY_ERR_NO_THREAD => "kernel_no_thread",
        PY_ERR_READ => "kernel_read_failed",
        _ => "kernel_truncated",
    }
}
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

pub use demangle::{demangle, Demangle};
use elf::ElfSymbols;
use kallsyms::KernelSymbols;
use table::SymbolTable;

/// One executable mapping a user frame belongs to, as pprof wants it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MappingInfo {
    /// First address of the mapping in the process.
    pub start: u64,
    /// One past the last address.
    pub limit: u64,
    /// File offset the mapping starts at.
    pub offset: u64,
    /// Path of the mapped file as the process sees it (`[vdso]` for the vdso).
    pub file: String,
    /// GNU build ID in lowercase hex, when the file has one.
    pub build_id: Option<String>,
}

/// Where an interpreted frame is in its source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourcePos {
    /// The source file (`co_filename`).
    pub file: String,
    /// The line running (0 when the line table gives none).
    pub line: i64,
}

/// One symbolized frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Instruction pointer (absolute address in the process or kernel; the code object's for
    /// a Python frame).
    pub address: u64,
    /// Function name (demangled per the `demangle` option), if known; a Python frame's
    /// qualified name.
    pub name: Option<String>,
    /// The mapping holding `address` (native user frames only).
    pub mapping: Option<Arc<MappingInfo>>,
    /// File and line of an interpreted (Python) frame.
    pub source: Option<SourcePos>,
}

impl Frame {
    /// The name to show: the function name, else `module+0xoffset` (file offset), else
    /// `[unknown]`.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.mapping {
            Some(m) => {
                let base = m.file.rsplit('/').next().unwrap_or(&m.file);
                let off = self.address.wrapping_sub(m.start).wrapping_add(m.offset);
                format!("{base}+0x{off:x}")
            }
            None => "[unknown]".to_string(),
        }
    }
}

/// Settings of the [`Symbolizer`].
#[derive(Debug, Clone)]
pub struct SymbolizerConfig {
    /// Where `PID/maps`, `PID/root`, `PID/mem` are read (`/proc`).
    pub proc_root: PathBuf,
    /// Directories searched for separate debug files, inside each process's root
    /// (`/usr/lib/debug`).
    pub debug_dirs: Vec<PathBuf>,
    /// Kernel symbols (`/proc/kallsyms`).
    pub kallsyms_path: PathBuf,
    /// Loaded modules, watched for changes (`/proc/modules`).
    pub modules_path: PathBuf,
    /// Minimum time between two kallsyms reloads (10 s).
    pub kallsyms_refresh_interval: Duration,
    /// Minimum time between two re-reads of one process's maps or perf map (1 s).
    pub maps_refresh_interval: Duration,
    /// `pid_cache_size` (32).
    pub pid_cache_size: usize,
    /// `elf_cache_size` (128).
    pub elf_cache_size: usize,
    /// `demangle` (`simplified`).
    pub demangle: Demangle,
    /// Name the Python frames the kernel walk records (`python_enabled`).
    pub python: bool,
}

impl Default for SymbolizerConfig {
    fn default() -> Self {
        Self {
            proc_root: "/proc".into(),
            debug_dirs: vec!["/usr/lib/debug".into()],
            kallsyms_path: "/proc/kallsyms".into(),
            modules_path: "/proc/modules".into(),
            kallsyms_refresh_interval: Duration::from_secs(10),
            maps_refresh_interval: Duration::from_secs(1),
            pid_cache_size: 32,
            elf_cache_size: 128,
            demangle: Demangle::Simplified,
            python: true,
        }
    }
}

/// Cache counters; register them into the component's registry with [`Self::register`].
#[derive(Debug, Clone, Default)]
pub struct SymbolizerMetrics {
    /// `pyroscope_ebpf_pid_cache_hit_total`.
    pub pid_cache_hit: Counter,
    /// `pyroscope_ebpf_pid_cache_miss_total`.
    pub pid_cache_miss: Counter,
    /// `pyroscope_ebpf_elf_cache_build_id_hit_total`.
    pub elf_cache_build_id_hit: Counter,
    /// `pyroscope_ebpf_elf_cache_build_id_miss_total`.
    pub elf_cache_build_id_miss: Counter,
    /// `pyroscope_ebpf_elf_cache_stat_hit_total`.
    pub elf_cache_stat_hit: Counter,
    /// `pyroscope_ebpf_elf_cache_stat_miss_total`.
    pub elf_cache_stat_miss: Counter,
}

impl SymbolizerMetrics {
    /// Registers the counters (prometheus-client appends `_total`).
    pub fn register(&self, registry: &mut Registry) {
        let all = [
            (
                "pyroscope_ebpf_pid_cache_hit",
                "Process symbol table cache hits",
                &self.pid_cache_hit,
            ),
            (
                "pyroscope_ebpf_pid_cache_miss",
                "Process symbol table cache misses",
                &self.pid_cache_miss,
            ),
            (
                "pyroscope_ebpf_elf_cache_build_id_hit",
                "ELF cache hits by build ID",
                &self.elf_cache_build_id_hit,
            ),
            (
                "pyroscope_ebpf_elf_cache_build_id_miss",
                "ELF cache misses by build ID",
                &self.elf_cache_build_id_miss,
            ),
            (
                "pyroscope_ebpf_elf_cache_stat_hit",
                "ELF cache hits by device and inode",
                &self.elf_cache_stat_hit,
            ),
            (
                "pyroscope_ebpf_elf_cache_stat_miss",
                "ELF cache misses by device and inode",
                &self.elf_cache_stat_miss,
            ),
        ];
        for (name, help, c) in all {
            registry.register(name, help, c.clone());
        }
    }
}

/// Sizes for the UI's debug info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SymbolizerStats {
    /// Processes in the pid cache.
    pub pids: usize,
    /// ELF files cached by device+inode.
    pub elfs: usize,
    /// ELF files cached by build ID.
    pub build_ids: usize,
    /// Kernel symbols loaded.
    pub kernel_symbols: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
}

/// ELF symbol tables shared by all processes.
#[derive(Debug)]
struct ElfCache {
    by_stat: LruCache<StatKey, Option<Arc<ElfSymbols>>>,
    by_build_id: LruCache<Vec<u8>, Arc<ElfSymbols>>,
}

impl ElfCache {
    /// `map_file` is `/proc/PID/map_files/START-END` of the mapping; `path` (resolved in
    /// `root`) is used when it cannot be read.
    fn get(
        &mut self,
        root: &Path,
        path: &str,
        fallback: &Path,
        deleted: bool,
        config: &SymbolizerConfig,
        m: &SymbolizerMetrics,
    ) -> Option<Arc<ElfSymbols>> {
        // The mapped file itself (one stat of `/proc/PID/map_files/START-END`): right even
        // when the path was since replaced or deleted, and never outside the process's view.
        // Where that link is unreadable (no CAP_SYS_ADMIN, a copied /proc), the path is
        // resolved inside the process's root instead.
        let (real, md) = match std::fs::metadata(fallback) {
            Ok(md) if md.is_file() => (fallback.to_path_buf(), md),
            _ => {
                let real = elf::resolve_in_root(root, Path::new(path))
                    .ok()
                    .filter(|r| !deleted && r.is_file())?;
                let md = std::fs::metadata(&real).ok()?;
                (real, md)
            }
        };
        let key = StatKey {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: md.mtime(),
        };
        if let Some(hit) = self.by_stat.get(&key) {
            m.elf_cache_stat_hit.inc();
            return hit.clone();
        }
        m.elf_cache_stat_miss.inc();
        let build_id = elf::read_build_id(&real).ok().flatten();
        if let Some(id) = &build_id {
            if let Some(hit) = self.by_build_id.get(id) {
                m.elf_cache_build_id_hit.inc();
                let hit = hit.clone();
                self.by_stat.put(key, Some(hit.clone()));
                return Some(hit);
            }
            m.elf_cache_build_id_miss.inc();
        }
        let loaded = match elf::load_elf_at(&real, root, path, &config.debug_dirs) {
            Ok(e) => Some(Arc::new(e)),
            Err(err) => {
                tracing::debug!(%err, "cannot load ELF symbols");
                None
            }
        };
        if let (Some(e), Some(id)) = (&loaded, build_id) {
            self.by_build_id.put(id, e.clone());
        }
        self.by_stat.put(key, loaded.clone());
        loaded
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MappingKind {
    File,
    Vdso,
    Other,
}

#[derive(Debug)]
struct ProcMapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
    kind: MappingKind,
    /// The mapped file was deleted (or replaced) since it was mapped.
    deleted: bool,
    /// Filled on first use: the ELF symbols and the pprof mapping.
    resolved: Option<(Option<Arc<ElfSymbols>>, Arc<MappingInfo>)>,
}

#[derive(Debug)]
struct PerfMap {
    path: PathBuf,
    table: SymbolTable,
    stamp: Option<(u64, SystemTime)>,
    checked: Option<Instant>,
}

/// Symbols of one process.
#[derive(Debug)]
struct Process {
    mappings: Vec<ProcMapping>,
    maps_read: Instant,
    /// The first re-read of maps read mid-exec is immediate; later ones are rate limited.
    quick_reread: bool,
    perf_map: PerfMap,
}

fn read_process(proc_root: &Path, pid: u32) -> Option<Process> {
    let dir = proc_root.join(pid.to_string());
    let content = std::fs::read_to_string(dir.join("maps")).ok()?;
    let mut mappings: Vec<ProcMapping> = procmaps::parse_maps(&content)
        .into_iter()
        .filter(|m| m.is_exec())
        .map(|m| ProcMapping {
            start: m.start,
            end: m.end,
            offset: m.offset,
            kind: if m.is_file() {
                MappingKind::File
            } else if m.path == "[vdso]" {
                MappingKind::Vdso
            } else {
                MappingKind::Other
            },
            deleted: m.deleted,
            path: m.path,
            resolved: None,
        })
        .collect();
    mappings.sort_by_key(|m| m.start);
    // The JIT writes the map with its own (namespaced) pid, in its own /tmp.
    let nspid = std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| {
                    l.split_ascii_whitespace()
                        .last()
                        .and_then(|p| p.parse::<u32>().ok())
                })
        })
        .unwrap_or(pid);
    Some(Process {
        mappings,
        maps_read: Instant::now(),
        quick_reread: true,
        perf_map: PerfMap {
            path: PathBuf::from(format!("/tmp/perf-{nspid}.map")),
            table: SymbolTable::default(),
            stamp: None,
            checked: None,
        },
    })
}

impl Process {
    fn mapping_index(&self, addr: u64) -> Option<usize> {
        let i = self
            .mappings
            .partition_point(|m| m.start <= addr)
            .checked_sub(1)?;
        (addr < self.mappings[i].end).then_some(i)
    }
}

/// Turns instruction pointers into [`Frame`]s. Not thread safe by itself: the component owns
/// one and calls it from its collect loop.
#[derive(Debug)]
pub struct Symbolizer {
    config: SymbolizerConfig,
    metrics: SymbolizerMetrics,
    pids: LruCache<u32, Process>,
    elfs: ElfCache,
    kernel: KernelSymbols,
    vdso: Option<Arc<ElfSymbols>>,
    /// (ELF object id, symbol index) → demangled name, so the names of hot frames are read
    /// from their file and demangled once.
    names: LruCache<(u64, usize), Arc<str>>,
    /// Names Python frames (code objects read from the process), when enabled.
    python: Option<PySymbolizer>,
    /// Python frames named and not named, by reason, since start.
    python_stats: PythonFrameStats,
}

/// Python frames the symbolizer named or could not name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PythonFrameStats {
    /// Frames named (qualified name, file, line).
    pub named: u64,
    /// Frames not named, by reason (`PyFrameError::reason`, or the kernel's `kernel_*`).
    pub failed: std::collections::BTreeMap<&'static str, u64>,
}

/// Minimum time between two reads of the maps of a process that had no file mapping (read in
/// the middle of an exec).
const MID_EXEC_REREAD: Duration = Duration::from_millis(50);

/// Entries of the frame-name cache.
const NAME_CACHE_SIZE: usize = 8192;

/// The demangled name of symbol `index` of `elf`, through the cache.
fn function_name(
    cache: &mut LruCache<(u64, usize), Arc<str>>,
    elf: &ElfSymbols,
    index: usize,
    mode: Demangle,
) -> Option<String> {
    if let Some(hit) = cache.get(&(elf.id, index)) {
        return Some(hit.to_string());
    }
    let raw = elf.table.name(index)?;
    let name = if mode == Demangle::None || !(raw.starts_with("_Z") || raw.starts_with("_R")) {
        raw.into_owned()
    } else {
        demangle(&raw, mode)
    };
    cache.put((elf.id, index), Arc::from(name.as_str()));
    Some(name)
}

fn cap(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN)
}

impl Symbolizer {
    /// A symbolizer with empty caches.
    pub fn new(config: SymbolizerConfig, metrics: SymbolizerMetrics) -> Self {
        let kernel = KernelSymbols::new(
            config.kallsyms_path.clone(),
            config.modules_path.clone(),
            config.kallsyms_refresh_interval,
        );
        Self {
            pids: LruCache::new(cap(config.pid_cache_size)),
            elfs: ElfCache {
                by_stat: LruCache::new(cap(config.elf_cache_size)),
                by_build_id: LruCache::new(cap(config.elf_cache_size)),
            },
            kernel,
            vdso: None,
            names: LruCache::new(cap(NAME_CACHE_SIZE)),
            python: config
                .python
                .then(|| PySymbolizer::new(&config.proc_root, crate::python::DEFAULT_CACHE)),
            python_stats: PythonFrameStats::default(),
            config,
            metrics,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SymbolizerConfig {
        &self.config
    }

    /// Drops a dead process's table.
    pub fn forget_pid(&mut self, pid: u32) {
        self.pids.pop(&pid);
        if let Some(python) = self.python.as_mut() {
            python.forget(pid);
        }
    }

    /// Python frames named and not named since start.
    pub fn python_stats(&self) -> &PythonFrameStats {
        &self.python_stats
    }

    /// Cache sizes.
    pub fn stats(&self) -> SymbolizerStats {
        SymbolizerStats {
            pids: self.pids.len(),
            elfs: self.elfs.by_stat.len(),
            build_ids: self.elfs.by_build_id.len(),
            kernel_symbols: self.kernel.len(),
        }
    }

    /// The frames of one collected sample: kernel then user frames, leaf first, and when the
    /// in-kernel walk of the user stack stopped early, one last (outermost) frame naming why
    /// (`[truncated: no unwind info]`), so an incomplete stack never looks complete.
    pub fn symbolize_sample(&mut self, sample: &crate::probe::StackSample) -> Vec<Frame> {
        let mut frames = self.symbolize(sample.pid, &sample.user, &sample.kernel);
        if let Some(marker) = sample.user_end.and_then(crate::probe::WalkEnd::marker) {
            frames.push(Frame {
                address: 0,
                name: Some(marker.to_string()),
                mapping: None,
                source: None,
            });
        }
        frames
    }

    /// Kernel frames then user frames, leaf first, as pprof wants them.
    pub fn symbolize(&mut self, pid: u32, user: &[u64], kernel: &[u64]) -> Vec<Frame> {
        let mut frames = self.symbolize_kernel(kernel);
        frames.extend(self.symbolize_user(pid, user));
        frames
    }

    /// Kernel instruction pointers (leaf first) to frames.
    pub fn symbolize_kernel(&mut self, ips: &[u64]) -> Vec<Frame> {
        // Return addresses are looked up one byte earlier, in the call instruction.
        let lookups: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| if i == 0 { ip } else { ip.wrapping_sub(1) })
            .collect();
        let names = self.kernel.lookup_many(&lookups);
        ips.iter()
            .zip(names)
            .map(|(&ip, name)| Frame {
                address: ip,
                name,
                mapping: None,
                source: None,
            })
            .collect()
    }

    /// Names kernel addresses through `resolver` (the probe's, see
    /// [`crate::probe::SampleSource::kernel_resolver`]) instead of `/proc/kallsyms`.
    pub fn set_kernel_resolver(&mut self, resolver: Option<Box<dyn ksym::KernelResolver>>) {
        self.kernel.set_resolver(resolver);
    }

    /// The kernel symbol table, for inspection.
    pub fn kernel_symbols(&mut self) -> &mut KernelSymbols {
        &mut self.kernel
    }

    /// User instruction pointers of `pid` (leaf first) to frames. The first address is the
    /// sampled instruction; the others are return addresses and are looked up one byte
    /// earlier so that a call at the very end of a function resolves to that function.
    pub fn symbolize_user(&mut self, pid: u32, ips: &[u64]) -> Vec<Frame> {
        if ips.is_empty() {
            return Vec::new();
        }
        if !self.ensure_process(pid) {
            return ips
                .iter()
                .map(|&address| Frame {
                    address,
                    name: None,
                    mapping: None,
                    source: None,
                })
                .collect();
        }
        let root = self.config.proc_root.join(pid.to_string()).join("root");
        let mut frames = Vec::with_capacity(ips.len());
        for (i, word) in user_words(ips).into_iter().enumerate() {
            match word {
                UserWord::Native(ip) => {
                    let lookup = if i == 0 { ip } else { ip.wrapping_sub(1) };
                    frames.push(self.symbolize_one(pid, &root, ip, lookup));
                }
                UserWord::Python { code, instr } => {
                    frames.push(self.python_frame(pid, code, instr))
                }
                UserWord::PythonError(reason) => {
                    *self
                        .python_stats
                        .failed
                        .entry(kernel_reason(reason))
                        .or_default() += 1;
                    frames.push(Frame {
                        address: 0,
                        name: Some(error_marker(reason).to_string()),
                        mapping: None,
                        source: None,
                    });
                }
            }
        }
        frames
    }

    /// A Python frame recorded by the kernel walk, named from the code object; a frame that
    /// cannot be named is `[python: reason]`, never a guess.
    fn python_frame(&mut self, pid: u32, code: u64, instr: u32) -> Frame {
        let named = match self.python.as_mut() {
            Some(python) => python.symbolize_recorded(pid, code, instr),
            None => Err(crate::python::PyFrameError::Process(
                "Python frames are off".into(),
            )),
        };
        match named {
            Ok(frame) => {
                self.python_stats.named += 1;
                Frame {
                    address: code,
                    name: Some(frame.qualname),
                    mapping: None,
                    source: Some(SourcePos {
                        file: frame.filename,
                        line: frame.line.map_or(0, i64::from),
                    }),
                }
            }
            Err(e) => {
                *self.python_stats.failed.entry(e.reason()).or_default() += 1;
                Frame {
                    address: code,
                    name: Some(format!("[python: {}]", e.reason())),
                    mapping: None,
                    source: None,
                }
            }
        }
    }

    /// Finds (and marks as recently used) or reads the process; counts the pid cache
    /// hit or miss. False when the process cannot be read.
    fn ensure_process(&mut self, pid: u32) -> bool {
        if self.pids.get(&pid).is_some() {
            self.metrics.pid_cache_hit.inc();
            return true;
        }
        self.metrics.pid_cache_miss.inc();
        match read_process(&self.config.proc_root, pid) {
            Some(p) => {
                self.pids.put(pid, p);
                true
            }
            None => false,
        }
    }

    /// Reads `pid`'s maps and loads the symbols of all its executable mappings now, so that
    /// its stacks can still be named after it has exited. Call it when a pid is first seen
    /// (the kernel side reports exits before the last samples are collected). False when the
    /// process cannot be read.
    pub fn preload(&mut self, pid: u32) -> bool {
        if !self.ensure_process(pid) {
            return false;
        }
        let root = self.config.proc_root.join(pid.to_string()).join("root");
        let count = self.pids.peek(&pid).map_or(0, |p| p.mappings.len());
        for idx in 0..count {
            let pending = self
                .pids
                .peek(&pid)
                .and_then(|p| p.mappings.get(idx))
                .filter(|m| m.resolved.is_none())
                .map(|m| m.kind);
            if let Some(kind) = pending {
                let r = self.resolve_mapping(pid, idx, &root, Some(kind));
                if let Some(p) = self.pids.peek_mut(&pid) {
                    p.mappings[idx].resolved = Some(r);
                }
            }
        }
        true
    }

    fn symbolize_one(&mut self, pid: u32, root: &Path, ip: u64, lookup: u64) -> Frame {
        let refresh = self.config.maps_refresh_interval;
        let Some(mut idx) = self.pids.peek(&pid).map(|p| p.mapping_index(ip)) else {
            return Frame {
                address: ip,
                name: None,
                mapping: None,
                source: None,
            };
        };
        if idx.is_none() {
            // New mapping (dlopen, JIT) since the maps were read: re-read, rate limited. Maps
            // read in the middle of an exec (only the stack is mapped yet) are re-read sooner,
            // but also rate limited: a process that is gone or has no file mapping would
            // otherwise cost one read per frame.
            let stale = self.pids.peek(&pid).is_some_and(|p| {
                let age = p.maps_read.elapsed();
                age >= refresh
                    || ((p.quick_reread || age >= MID_EXEC_REREAD)
                        && !p.mappings.iter().any(|m| m.kind == MappingKind::File))
            });
            if stale {
                match read_process(&self.config.proc_root, pid) {
                    Some(mut fresh) => {
                        if let Some(old) = self.pids.pop(&pid) {
                            fresh.perf_map = old.perf_map;
                        }
                        fresh.quick_reread = false;
                        idx = fresh.mapping_index(ip);
                        self.pids.put(pid, fresh);
                    }
                    None => {
                        if let Some(p) = self.pids.peek_mut(&pid) {
                            p.maps_read = Instant::now();
                            p.quick_reread = false;
                        }
                    }
                }
            }
        }
        let Some(idx) = idx else {
            return self.perf_map_frame(pid, ip, root);
        };
        let demangle_mode = self.config.demangle;
        let kind = self.pids.peek(&pid).map(|p| p.mappings[idx].kind);
        let resolved = match self
            .pids
            .peek(&pid)
            .and_then(|p| p.mappings[idx].resolved.clone())
        {
            Some(r) => r,
            None => {
                let r = self.resolve_mapping(pid, idx, root, kind);
                if let Some(p) = self.pids.peek_mut(&pid) {
                    p.mappings[idx].resolved = Some(r.clone());
                }
                r
            }
        };
        let (elf, info) = resolved;
        let off = lookup.wrapping_sub(info.start).wrapping_add(info.offset);
        let names = &mut self.names;
        let name = elf.as_ref().and_then(|e| {
            let index = e.lookup_index_file_offset(off)?;
            function_name(names, e, index, demangle_mode)
        });
        let name = match (name, kind) {
            (None, Some(MappingKind::Other)) => self.perf_map_frame(pid, ip, root).name,
            (n, _) => n,
        };
        // Anonymous executable memory (JIT code) has no file to point pprof at.
        let anonymous = kind == Some(MappingKind::Other) && info.file.is_empty();
        Frame {
            address: ip,
            name,
            mapping: (!anonymous).then_some(info),
            source: None,
        }
    }

    fn resolve_mapping(
        &mut self,
        pid: u32,
        idx: usize,
        root: &Path,
        kind: Option<MappingKind>,
    ) -> (Option<Arc<ElfSymbols>>, Arc<MappingInfo>) {
        let Some(p) = self.pids.peek(&pid) else {
            return (
                None,
                Arc::new(MappingInfo {
                    start: 0,
                    limit: 0,
                    offset: 0,
                    file: String::new(),
                    build_id: None,
                }),
            );
        };
        let m = &p.mappings[idx];
        let (start, end, offset, path, deleted) =
            (m.start, m.end, m.offset, m.path.clone(), m.deleted);
        let elf = match kind {
            Some(MappingKind::File) => {
                let map_file = self
                    .config
                    .proc_root
                    .join(pid.to_string())
                    .join("map_files")
                    .join(format!("{start:x}-{end:x}"));
                self.elfs
                    .get(root, &path, &map_file, deleted, &self.config, &self.metrics)
            }
            Some(MappingKind::Vdso) => self.vdso(pid, start, end),
            _ => None,
        };
        let build_id = elf.as_ref().and_then(|e| e.build_id_hex());
        let info = Arc::new(MappingInfo {
            start,
            limit: end,
            offset,
            file: path,
            build_id,
        });
        (elf, info)
    }

    /// The vdso image is the same for every process of one kernel (and ABI): read it once
    /// from the first readable process's memory. If `/proc/PID/mem` is unreadable, vdso
    /// frames keep the `[vdso]` mapping and show as `[vdso]+0xoffset`.
    fn vdso(&mut self, pid: u32, start: u64, end: u64) -> Option<Arc<ElfSymbols>> {
        if self.vdso.is_none() {
            let mem = self.config.proc_root.join(pid.to_string()).join("mem");
            let len = usize::try_from(end.saturating_sub(start))
                .unwrap_or(0)
                .min(1 << 20);
            let mut buf = vec![0u8; len];
            let loaded = std::fs::File::open(&mem)
                .and_then(|f| f.read_exact_at(&mut buf, start))
                .map_err(|e| e.to_string())
                .and_then(|()| elf::load_elf_bytes(&buf).map_err(|e| e.to_string()));
            match loaded {
                Ok(e) => self.vdso = Some(Arc::new(e)),
                Err(err) => tracing::debug!(pid, %err, "cannot read the vdso image"),
            }
        }
        self.vdso.clone()
    }

    fn perf_map_frame(&mut self, pid: u32, ip: u64, root: &Path) -> Frame {
        let refresh = self.config.maps_refresh_interval;
        let mut name = None;
        if let Some(p) = self.pids.peek_mut(&pid) {
            let pm = &mut p.perf_map;
            let due = pm.checked.is_none_or(|t| t.elapsed() >= refresh);
            if due && pm.table.lookup(ip).is_none() {
                pm.checked = Some(Instant::now());
                if let Ok(real) = elf::resolve_in_root(root, &pm.path) {
                    if let Ok(md) = std::fs::metadata(&real) {
                        let stamp =
                            Some((md.len(), md.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
                        if stamp != pm.stamp {
                            if let Ok(content) = std::fs::read_to_string(&real) {
                                pm.table = perfmap::parse_perf_map(&content);
                                pm.stamp = stamp;
                            }
                        }
                    }
                }
            }
            name = pm.table.lookup(ip).map(Cow::into_owned);
        }
        Frame {
            address: ip,
            name,
            mapping: None,
            source: None,
        }
    }
}
