//! Finding CPython in a process: the image (`libpython3.X*.so*` among the mappings, else the
//! executable when it defines `_PyEval_EvalFrameDefault`), its load bias, the version
//! (`Py_Version` read from memory, 3.11+, else the file name), the symbols the walks need
//! (`_PyRuntime`, the eval loop and its `.cold` part, `_Py_NoneStruct`, `PyCode_Type`, 3.6's
//! `interp_head`/`autoTLSkey`, 3.12+'s `_Py_tss_tstate`) and how a thread finds its state.

use super::memory::Memory;
use super::offsets::{parse_debug_offsets, table_offsets, PyOffsets, ABSENT, DEBUG_OFFSETS_LEN};
use crate::symbolize::procmaps::MapEntry;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Object, ObjectSymbol};
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// Why a process is not walkable as CPython.
#[derive(Debug, Error)]
pub enum DetectError {
    /// No libpython mapping and the executable has no eval loop.
    #[error("no CPython image among the mappings")]
    NotPython,
    /// The image could not be read or parsed.
    #[error("reading {path}: {message}")]
    Image {
        /// File.
        path: String,
        /// What failed.
        message: String,
    },
    /// The image lacks a symbol the walk needs.
    #[error("{path} has no symbol {symbol}")]
    Symbol {
        /// File.
        path: String,
        /// Symbol name.
        symbol: &'static str,
    },
    /// A version without offsets (outside 3.6–3.13), or none could be found.
    #[error("unsupported CPython version {0}")]
    Version(String),
    /// Process memory could not be read.
    #[error(transparent)]
    Memory(#[from] super::memory::Unreadable),
}

/// A CPython version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PyVersion {
    /// 3.
    pub major: u32,
    /// X of 3.X.
    pub minor: u32,
    /// Patch release, `None` when only the file name told the version.
    pub micro: Option<u32>,
}

impl std::fmt::Display for PyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.micro {
            Some(m) => write!(f, "{}.{}.{}", self.major, self.minor, m),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

/// Where the offsets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetsSource {
    /// The table of `offsets.rs`.
    Table,
    /// `_Py_DebugOffsets` read from the process (3.13+).
    DebugOffsets,
}

/// A static thread-local variable of the image (`_Py_tss_tstate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsSlot {
    /// Offset of the variable in the image's TLS block (the symbol's value).
    pub offset: u64,
    /// `PT_TLS` `p_memsz` (size of the image's TLS block).
    pub block_size: u64,
    /// `PT_TLS` `p_align`.
    pub block_align: u64,
}

impl TlsSlot {
    /// The variable's address in the thread whose thread pointer is `tp`, when the image's
    /// block is the first of the static TLS (x86-64 variant II: blocks lie below the thread
    /// pointer, the first one `roundup(block_size, block_align)` below it). That holds when the
    /// executable has no `PT_TLS` and libpython is the first needed library with one, as with
    /// pyenv's `python3.12`/`python3.13`; otherwise the offset is the image's `l_tls_offset`
    /// in ld.so's `link_map`.
    pub fn first_module_address(&self, tp: u64) -> u64 {
        let align = self.block_align.max(1);
        let block = self.block_size.div_ceil(align) * align;
        tp.wrapping_sub(block).wrapping_add(self.offset)
    }
}

/// How a thread finds its `PyThreadState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadStateLookup {
    /// `pthread_getspecific(key)`: the GIL-state TSS key (3.6–3.12; 3.13 keeps it too).
    PthreadKey {
        /// The `pthread_key_t`.
        key: u32,
    },
    /// The `_Py_tss_tstate` thread-local (3.12+; preferred from 3.13). Its address is the
    /// image's TLS block (found from the thread pointer and the image's `l_tls_offset` at run
    /// time) + `offset`.
    ThreadLocal(TlsSlot),
}

/// Symbols of a CPython image (link-time addresses).
#[derive(Debug, Clone, Default)]
pub struct PySymbols {
    /// name → (address, size) of the symbols the walks look for.
    pub found: HashMap<&'static str, (u64, u64)>,
    /// `PT_TLS` (memsz, align).
    pub tls_segment: Option<(u64, u64)>,
    /// `PT_LOAD` (file offset, vaddr) pairs.
    pub loads: Vec<(u64, u64)>,
}

/// [`PySymbols`] of image files by identity (device, inode, size, modification time), so that
/// each new process of an interpreter does not read and parse its whole image again.
#[derive(Debug, Default)]
pub struct SymbolCache {
    files: HashMap<(u64, u64, u64, i64, i64), Arc<PySymbols>>,
}

/// Images [`SymbolCache`] keeps (forgotten all at once past this).
const MAX_CACHED_IMAGES: usize = 64;

impl SymbolCache {
    /// The symbols of the file at `path`, read and parsed unless that file was before.
    pub fn get(&mut self, path: &Path) -> Result<Arc<PySymbols>, String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        let key = (
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
        );
        if let Some(syms) = self.files.get(&key) {
            return Ok(Arc::clone(syms));
        }
        let data = crate::unwind::sparse::read_for_symbols(path).map_err(|e| e.to_string())?;
        let syms = Arc::new(PySymbols::parse(&data).map_err(|e| e.to_string())?);
        if self.files.len() >= MAX_CACHED_IMAGES {
            self.files.clear();
        }
        self.files.insert(key, Arc::clone(&syms));
        Ok(syms)
    }

    /// Images cached.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// The names looked up in `.symtab` and `.dynsym`.
pub const WANTED: [&str; 10] = [
    "_PyRuntime",
    "Py_Version",
    "_PyEval_EvalFrameDefault",
    "_PyEval_EvalFrameDefault.cold",
    "_Py_NoneStruct",
    "PyCode_Type",
    "_Py_tss_tstate",
    "interp_head",
    "autoTLSkey",
    "_PyThreadState_Current",
];

impl PySymbols {
    /// Reads the symbols of the ELF image `data`.
    pub fn parse(data: &[u8]) -> Result<Self, object::Error> {
        let file = object::File::parse(data)?;
        let mut found = HashMap::new();
        for sym in file.symbols().chain(file.dynamic_symbols()) {
            let Ok(name) = sym.name() else { continue };
            if let Some(&w) = WANTED.iter().find(|&&w| w == name) {
                if sym.address() != 0 || w == "_Py_tss_tstate" {
                    found.entry(w).or_insert((sym.address(), sym.size()));
                }
            }
        }
        let mut out = Self {
            found,
            ..Self::default()
        };
        let header = object::elf::FileHeader64::<object::Endianness>::parse(data)?;
        let endian = header.endian()?;
        for ph in header.program_headers(endian, data)? {
            match ph.p_type(endian) {
                object::elf::PT_LOAD => out.loads.push((ph.p_offset(endian), ph.p_vaddr(endian))),
                object::elf::PT_TLS => {
                    out.tls_segment = Some((ph.p_memsz(endian), ph.p_align(endian)))
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Link-time address of `name`.
    pub fn addr(&self, name: &str) -> Option<u64> {
        self.found.get(name).map(|&(a, _)| a)
    }

    /// Load bias of the image given its mappings (`maps` of the same file, any order): the
    /// mapping of the lowest file offset is matched with the `PT_LOAD` holding that offset.
    pub fn bias(&self, maps: &[&MapEntry]) -> Option<u64> {
        let first = maps.iter().min_by_key(|m| m.offset)?;
        let &(p_offset, p_vaddr) = self
            .loads
            .iter()
            .filter(|&&(off, _)| off & !0xfff <= first.offset)
            .max_by_key(|&&(off, _)| off)?;
        // vaddr of the mapping's first byte at link time.
        let link = p_vaddr.wrapping_sub(p_offset).wrapping_add(first.offset);
        Some(first.start.wrapping_sub(link))
    }
}

/// The version in a file name: `libpython3.9.so.1.0`, `libpython3.6m.so`, `python3.12`.
pub fn version_from_name(path: &str) -> Option<PyVersion> {
    let base = path.rsplit('/').next()?;
    let rest = base
        .strip_prefix("lib")
        .unwrap_or(base)
        .strip_prefix("python3.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(PyVersion {
        major: 3,
        minor: digits.parse().ok()?,
        micro: None,
    })
}

/// The CPython image of a process: a `libpython3.*` mapping if any, else `exe` when mapped.
pub fn find_image<'a>(maps: &'a [MapEntry], exe: Option<&str>) -> Option<(&'a str, bool)> {
    // `libpython3.X…so…`, not the stable-ABI shim `libpython3.so` (no eval loop of its own).
    let is_lib = |p: &str| {
        p.rsplit('/').next().is_some_and(|b| {
            let minor = b.strip_prefix("libpython3.");
            minor.is_some_and(|m| m.starts_with(|c: char| c.is_ascii_digit())) && b.contains(".so")
        })
    };
    if let Some(m) = maps.iter().find(|m| m.is_file() && is_lib(&m.path)) {
        return Some((m.path.as_str(), true));
    }
    let exe = exe?;
    maps.iter()
        .find(|m| m.is_file() && m.path == exe)
        .map(|m| (m.path.as_str(), false))
}

/// A CPython process, as the kernel walk and the user-space readers need it.
#[derive(Debug, Clone)]
pub struct PythonProcess {
    /// Process ID.
    pub pid: u32,
    /// Version.
    pub version: PyVersion,
    /// The image (path as in the maps).
    pub image: String,
    /// The image is a `libpython` (else the executable).
    pub image_is_library: bool,
    /// Run-time address − link-time address of the image.
    pub bias: u64,
    /// Struct offsets.
    pub offsets: PyOffsets,
    /// Where `offsets` came from.
    pub offsets_source: OffsetsSource,
    /// `_PyRuntime` (3.7+).
    pub runtime: Option<u64>,
    /// Address of the pointer to the first interpreter (`_PyRuntime.interpreters.head`, 3.6's
    /// `interp_head`).
    pub interp_head: u64,
    /// Address of the pointer to the thread holding the GIL (3.6 `_PyThreadState_Current`,
    /// 3.7–3.11 `_PyRuntime.gilstate.tstate_current`).
    pub gil_holder: Option<u64>,
    /// `_PyEval_EvalFrameDefault` and its `.cold` part when `.symtab` names it.
    pub eval_frame: Vec<Range<u64>>,
    /// `_Py_NoneStruct` (3.13's entry frames have `f_executable == None`).
    pub none_struct: Option<u64>,
    /// `PyCode_Type`: every code object's `ob_type`.
    pub code_type: Option<u64>,
    /// The GIL-state pthread key, when initialized.
    pub tss_key: Option<u32>,
    /// `_Py_tss_tstate` when the image has it (3.12+, `.symtab` only).
    pub tls_tstate: Option<TlsSlot>,
}

impl PythonProcess {
    /// The lookup the kernel should use: the thread-local from 3.13 when known, else the key.
    pub fn thread_state_lookup(&self) -> Option<ThreadStateLookup> {
        match (self.version.minor >= 13, self.tls_tstate, self.tss_key) {
            (true, Some(tls), _) => Some(ThreadStateLookup::ThreadLocal(tls)),
            (_, _, Some(key)) => Some(ThreadStateLookup::PthreadKey { key }),
            (_, Some(tls), None) => Some(ThreadStateLookup::ThreadLocal(tls)),
            _ => None,
        }
    }

    /// Whether `pc` is in the eval loop.
    pub fn in_eval_loop(&self, pc: u64) -> bool {
        self.eval_frame.iter().any(|r| r.contains(&pc))
    }

    /// Detects CPython in `pid` from its mappings, reading memory through `mem` and the image
    /// file under `proc_root/PID/root`.
    pub fn detect(
        pid: u32,
        proc_root: &Path,
        maps: &[MapEntry],
        mem: &dyn Memory,
    ) -> Result<Self, DetectError> {
        Self::detect_with(pid, proc_root, maps, mem, &mut SymbolCache::default())
    }

    /// [`detect`](Self::detect), with the image's symbols from `cache` when the same file was
    /// read before (every interpreter of a host is usually one of a few files).
    pub fn detect_with(
        pid: u32,
        proc_root: &Path,
        maps: &[MapEntry],
        mem: &dyn Memory,
        cache: &mut SymbolCache,
    ) -> Result<Self, DetectError> {
        let proc_dir = proc_root.join(pid.to_string());
        let exe = std::fs::read_link(proc_dir.join("exe")).ok();
        let exe = exe.as_ref().and_then(|p| p.to_str());
        let (image, is_lib) = find_image(maps, exe).ok_or(DetectError::NotPython)?;
        let file = proc_dir.join("root").join(image.trim_start_matches('/'));
        let image_err = |message: String| DetectError::Image {
            path: image.to_string(),
            message,
        };
        let syms = cache.get(&file).map_err(image_err)?;
        let own: Vec<&MapEntry> = maps.iter().filter(|m| m.path == image).collect();
        let bias = syms
            .bias(&own)
            .ok_or_else(|| image_err("no load segment".into()))?;
        Self::from_symbols(pid, image, is_lib, bias, &syms, mem)
    }

    /// The rest of [`detect`](Self::detect), once the image's symbols and bias are known.
    pub fn from_symbols(
        pid: u32,
        image: &str,
        image_is_library: bool,
        bias: u64,
        syms: &PySymbols,
        mem: &dyn Memory,
    ) -> Result<Self, DetectError> {
        let need = |symbol: &'static str| {
            syms.addr(symbol)
                .map(|a| a.wrapping_add(bias))
                .ok_or(DetectError::Symbol {
                    path: image.to_string(),
                    symbol,
                })
        };
        // An executable without the eval loop is simply not Python.
        let eval = match need("_PyEval_EvalFrameDefault") {
            Err(_) if !image_is_library => return Err(DetectError::NotPython),
            other => other?,
        };
        let version = match syms.addr("Py_Version") {
            Some(a) => {
                let hex = mem.read_u32(a.wrapping_add(bias))?;
                PyVersion {
                    major: hex >> 24,
                    minor: (hex >> 16) & 0xff,
                    micro: Some((hex >> 8) & 0xff),
                }
            }
            None => version_from_name(image)
                .ok_or_else(|| DetectError::Version(format!("unknown ({image})")))?,
        };
        let mut offsets = match (version.major, table_offsets(version.minor)) {
            (3, Some(t)) => t,
            _ => return Err(DetectError::Version(version.to_string())),
        };
        let runtime = syms.addr("_PyRuntime").map(|a| a.wrapping_add(bias));
        let mut offsets_source = OffsetsSource::Table;
        if let (Some(rt), true) = (runtime, version.minor >= 13) {
            let blob = mem.read_vec(rt, DEBUG_OFFSETS_LEN)?;
            match parse_debug_offsets(&blob) {
                Ok(d) if (d.version >> 16) & 0xff == u64::from(version.minor) => {
                    offsets = d.offsets;
                    offsets_source = OffsetsSource::DebugOffsets;
                }
                Ok(d) => tracing::warn!(
                    pid,
                    version = d.version,
                    "_Py_DebugOffsets of another version; using the table"
                ),
                Err(e) => {
                    tracing::warn!(pid, error = %e, "_Py_DebugOffsets unusable; using the table")
                }
            }
        }
        let interp_head = match runtime {
            Some(rt) if offsets.runtime_interpreters_head != ABSENT => {
                rt + u64::from(offsets.runtime_interpreters_head)
            }
            _ => need("interp_head")?,
        };
        let gil_holder = match (runtime, offsets.runtime_tstate_current) {
            (Some(rt), o) if o != ABSENT => Some(rt + u64::from(o)),
            (None, _) => syms
                .addr("_PyThreadState_Current")
                .map(|a| a.wrapping_add(bias)),
            _ => None,
        };
        let tss_key = match (runtime, offsets.runtime_autotss_key) {
            (Some(rt), o) if o != ABSENT => {
                let tss = rt + u64::from(o);
                // Py_tss_t { int _is_initialized; pthread_key_t _key; }
                (mem.read_u32(tss)? == 1)
                    .then(|| mem.read_u32(tss + 4))
                    .transpose()?
            }
            _ => match syms.addr("autoTLSkey") {
                // 3.6: `static int autoTLSkey = -1`, the pthread key once set.
                Some(a) => Some(mem.read_u32(a.wrapping_add(bias))?).filter(|&k| k as i32 >= 0),
                None => None,
            },
        };
        let tls_tstate = match (syms.found.get("_Py_tss_tstate"), syms.tls_segment) {
            (Some(&(offset, _)), Some((block_size, block_align))) => Some(TlsSlot {
                offset,
                block_size,
                block_align,
            }),
            _ => None,
        };
        let eval_size = syms
            .found
            .get("_PyEval_EvalFrameDefault")
            .map_or(1, |s| s.1.max(1));
        let mut eval_frame = Vec::with_capacity(2);
        eval_frame.push(eval..eval + eval_size);
        if let Some(&(a, size)) = syms.found.get("_PyEval_EvalFrameDefault.cold") {
            eval_frame.push(a + bias..a + bias + size.max(1));
        }
        Ok(Self {
            pid,
            version,
            image: image.to_string(),
            image_is_library,
            bias,
            offsets,
            offsets_source,
            runtime,
            interp_head,
            gil_holder,
            eval_frame,
            none_struct: syms.addr("_Py_NoneStruct").map(|a| a.wrapping_add(bias)),
            code_type: syms.addr("PyCode_Type").map(|a| a.wrapping_add(bias)),
            tss_key,
            tls_tstate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::memory::SliceMemory;
    use crate::symbolize::procmaps::parse_maps;

    #[test]
    fn versions_from_file_names() {
        let v = |p| version_from_name(p).map(|v| v.minor);
        assert_eq!(v("/usr/lib/libpython3.9.so.1.0"), Some(9));
        assert_eq!(v("/opt/lib/libpython3.6m.so"), Some(6));
        assert_eq!(v("/usr/bin/python3.12"), Some(12));
        assert_eq!(v("/usr/bin/python3"), None);
        assert_eq!(v("/usr/bin/python2.7"), None);
    }

    #[test]
    fn finds_libpython_before_the_executable() {
        let maps = parse_maps(
            "00400000-00401000 r-xp 00000000 08:01 10 /usr/bin/python3.11\n\
             7f0000000000-7f0000100000 r--p 00000000 08:01 11 /opt/lib/libpython3.12.so.1.0\n",
        );
        assert_eq!(
            find_image(&maps, Some("/usr/bin/python3.11")),
            Some(("/opt/lib/libpython3.12.so.1.0", true))
        );
        assert_eq!(
            find_image(&maps[..1], Some("/usr/bin/python3.11")),
            Some(("/usr/bin/python3.11", false))
        );
        assert_eq!(find_image(&maps[..1], Some("/bin/sh")), None);
        let shim = parse_maps(
            "7f0000000000-7f0000001000 r--p 00000000 08:01 12 /opt/lib/libpython3.so\n\
             00400000-00401000 r-xp 00000000 08:01 10 /usr/bin/python3.11\n",
        );
        assert_eq!(
            find_image(&shim, Some("/usr/bin/python3.11")),
            Some(("/usr/bin/python3.11", false))
        );
    }

    fn symbols(list: &[(&'static str, u64, u64)]) -> PySymbols {
        PySymbols {
            found: list.iter().map(|&(n, a, sz)| (n, (a, sz))).collect(),
            tls_segment: Some((0x20, 8)),
            loads: vec![(0, 0)],
        }
    }

    const BIAS: u64 = 0x7f00_0000_0000;

    #[test]
    fn from_symbols_313_uses_the_debug_offsets_and_reads_the_key() {
        let blob = include_bytes!("../../tests/fixtures/python/debug_offsets_3.13.0.bin");
        let syms = symbols(&[
            ("_PyEval_EvalFrameDefault", 0x8b8e0, 0x1000),
            ("Py_Version", 0x3937b0, 4),
            ("_PyRuntime", 0x5294c0, 0x3000),
            ("_Py_NoneStruct", 0x5047a0, 16),
            ("PyCode_Type", 0x4f0bc0, 400),
            ("_Py_tss_tstate", 0x18, 8),
        ]);
        let mut runtime = blob.to_vec();
        runtime.resize(2168, 0);
        // Py_tss_t at 2160: initialized, key 5.
        runtime[2160..2164].copy_from_slice(&1u32.to_le_bytes());
        runtime[2164..2168].copy_from_slice(&5u32.to_le_bytes());
        let mut mem = SliceMemory::new();
        mem.add(BIAS + 0x3937b0, 0x030d_00f0u32.to_le_bytes().to_vec())
            .add(BIAS + 0x5294c0, runtime);
        let p = PythonProcess::from_symbols(9, "/l/libpython3.13.so.1.0", true, BIAS, &syms, &mem)
            .unwrap();
        assert_eq!(p.version.to_string(), "3.13.0");
        assert_eq!(p.offsets_source, OffsetsSource::DebugOffsets);
        assert_eq!(Some(p.offsets), table_offsets(13));
        assert_eq!(p.interp_head, BIAS + 0x5294c0 + 632);
        assert_eq!(p.eval_frame.len(), 1);
        assert_eq!(p.eval_frame[0], BIAS + 0x8b8e0..BIAS + 0x8c8e0);
        assert!(p.in_eval_loop(BIAS + 0x8b8e0) && !p.in_eval_loop(BIAS + 0x8c8e0));
        assert_eq!((p.tss_key, p.gil_holder), (Some(5), None));
        let tls = TlsSlot {
            offset: 0x18,
            block_size: 0x20,
            block_align: 8,
        };
        assert_eq!(
            p.thread_state_lookup(),
            Some(ThreadStateLookup::ThreadLocal(tls))
        );
        assert_eq!(tls.first_module_address(0x1000), 0x1000 - 8);
        // A blob of another version falls back to the table; an uninitialized key is none.
        let mut other = blob.to_vec();
        other[8..16].copy_from_slice(&0x030c_0000u64.to_le_bytes());
        other.resize(2168, 0);
        mem.add(BIAS + 0x5294c0, other);
        let p = PythonProcess::from_symbols(9, "/l/libpython3.13.so.1.0", true, BIAS, &syms, &mem)
            .unwrap();
        assert_eq!((p.offsets_source, p.tss_key), (OffsetsSource::Table, None));
    }

    #[test]
    fn from_symbols_36_without_runtime_and_unknown_versions() {
        let syms = symbols(&[
            ("_PyEval_EvalFrameDefault", 0x146220, 0x100),
            ("_PyEval_EvalFrameDefault.cold", 0x10000, 0x20),
            ("interp_head", 0x2feee0, 8),
            ("autoTLSkey", 0x2acf00, 4),
            ("_PyThreadState_Current", 0x2feed0, 8),
        ]);
        let mut mem = SliceMemory::new();
        mem.add(0x2acf00, 2u32.to_le_bytes().to_vec());
        let p = PythonProcess::from_symbols(9, "/l/libpython3.6m.so.1.0", true, 0, &syms, &mem)
            .unwrap();
        assert_eq!(p.version.to_string(), "3.6");
        assert_eq!(
            (p.runtime, p.interp_head, p.tss_key),
            (None, 0x2feee0, Some(2))
        );
        assert_eq!(p.gil_holder, Some(0x2feed0));
        assert_eq!(p.eval_frame.len(), 2);
        assert_eq!(
            p.thread_state_lookup(),
            Some(ThreadStateLookup::PthreadKey { key: 2 })
        );
        let info = p.proc_info();
        assert_eq!((info.eval_cold_start, info.tss_key_plus_one), (0x10000, 3));
        // autoTLSkey still -1: no key.
        mem.add(0x2acf00, (-1i32).to_le_bytes().to_vec());
        let p = PythonProcess::from_symbols(9, "/l/libpython3.6m.so.1.0", true, 0, &syms, &mem)
            .unwrap();
        assert_eq!(p.tss_key, None);
        for name in ["/l/libpython3.14.so", "/l/libpython3.5m.so"] {
            let err = PythonProcess::from_symbols(9, name, true, 0, &syms, &mem).unwrap_err();
            assert!(matches!(err, DetectError::Version(_)), "{err}");
        }
        let bash = symbols(&[]);
        let err = PythonProcess::from_symbols(9, "/bin/bash", false, 0, &bash, &mem).unwrap_err();
        assert!(matches!(err, DetectError::NotPython));
        let err =
            PythonProcess::from_symbols(9, "/l/libpython3.9.so", true, 0, &bash, &mem).unwrap_err();
        assert!(matches!(err, DetectError::Symbol { .. }));
    }

    #[test]
    fn bias_of_a_shared_library_and_of_a_fixed_executable() {
        let syms = PySymbols {
            loads: vec![(0, 0), (0x86000, 0x86000), (0x49d5e0, 0x49e5e0)],
            ..PySymbols::default()
        };
        let maps = parse_maps(
            "7f0000086000-7f0000300000 r-xp 00086000 08:01 11 /l/libpython3.13.so.1.0\n\
             7f0000000000-7f0000086000 r--p 00000000 08:01 11 /l/libpython3.13.so.1.0\n",
        );
        let refs: Vec<&MapEntry> = maps.iter().collect();
        assert_eq!(syms.bias(&refs), Some(0x7f00_0000_0000));
        let exe = PySymbols {
            loads: vec![(0, 0x400000), (0x1000, 0x401000)],
            ..PySymbols::default()
        };
        let maps = parse_maps("00401000-00402000 r-xp 00001000 08:01 10 /usr/bin/python3.11\n");
        let refs: Vec<&MapEntry> = maps.iter().collect();
        assert_eq!(exe.bias(&refs), Some(0));
    }

    #[test]
    fn symbol_cache_reads_a_file_once_until_it_changes() {
        let dir = std::env::temp_dir().join(format!("rill-pysyms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("python3.x");
        std::fs::copy("/proc/self/exe", &path).unwrap();
        let mut cache = SymbolCache::default();
        let first = cache.get(&path).unwrap();
        let again = cache.get(&path).unwrap();
        // The same parse, not a second one.
        let same = Arc::ptr_eq(&first, &again);
        // A new file under the same name (new inode): parsed again.
        std::fs::remove_file(&path).unwrap();
        std::fs::copy("/proc/self/exe", &path).unwrap();
        let replaced = cache.get(&path).unwrap();
        let not_elf = dir.join("not-elf");
        std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        let bad = cache.get(&not_elf);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(same);
        assert!(!Arc::ptr_eq(&first, &replaced));
        assert_eq!(first.loads, replaced.loads);
        assert_eq!(cache.len(), 2);
        assert!(bad.is_err());
    }
}
