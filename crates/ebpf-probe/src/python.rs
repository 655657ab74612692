//! Python (CPython 3.6–3.13) frames, user-space half: detecting a CPython process and what the
//! kernel walk needs from it ([`detect::PythonProcess`], [`offsets::PyOffsets`]), reading code
//! objects and line tables from its memory, naming (code object, instruction offset) pairs with a
//! cache ([`PySymbolizer::symbolize`]), and a user-space stack walker ([`stack`]) that is the
//! oracle of the kernel walk. See docs/python.md.

pub mod code;
pub mod detect;
pub mod linetable;
pub mod memory;
pub mod offsets;
pub mod stack;
pub mod tsd;

pub use code::{CodeCache, PyFrame, PyFrameError};
pub use detect::{DetectError, PythonProcess, ThreadStateLookup};
pub use offsets::PyOffsets;

use memory::ProcMemory;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Code objects cached by default.
pub const DEFAULT_CACHE: usize = 16384;

/// What the kernel walk needs of one process, as one plain `#[repr(C)]` value (0 = absent).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PyProcInfo {
    /// Struct offsets.
    pub offsets: PyOffsets,
    /// `_PyEval_EvalFrameDefault` [start, end).
    pub eval_start: u64,
    /// End of the eval loop.
    pub eval_end: u64,
    /// Its `.cold` part [start, end), 0 when unknown.
    pub eval_cold_start: u64,
    /// End of the `.cold` part.
    pub eval_cold_end: u64,
    /// `_Py_NoneStruct`.
    pub none_struct: u64,
    /// `PyCode_Type`.
    pub code_type: u64,
    /// 1 + the pthread key of the thread state (0: none).
    pub tss_key_plus_one: u64,
    /// Offset of `_Py_tss_tstate` in the image's TLS block + 1 (0: none).
    pub tls_offset_plus_one: u64,
}

impl PythonProcess {
    /// The value for the kernel's per-process map.
    pub fn proc_info(&self) -> PyProcInfo {
        let range = |i: usize| self.eval_frame.get(i).map_or((0, 0), |r| (r.start, r.end));
        let ((eval_start, eval_end), (eval_cold_start, eval_cold_end)) = (range(0), range(1));
        PyProcInfo {
            offsets: self.offsets,
            eval_start,
            eval_end,
            eval_cold_start,
            eval_cold_end,
            none_struct: self.none_struct.unwrap_or(0),
            code_type: self.code_type.unwrap_or(0),
            tss_key_plus_one: self.tss_key.map_or(0, |k| u64::from(k) + 1),
            tls_offset_plus_one: self.tls_tstate.map_or(0, |t| t.offset + 1),
        }
    }
}

struct Tracked {
    process: PythonProcess,
    mem: ProcMemory,
}

/// Names Python frames of live processes: detects each pid once, reads code objects through
/// `/proc/PID/mem` and keeps them in a [`CodeCache`].
pub struct PySymbolizer {
    proc_root: PathBuf,
    processes: HashMap<u32, Tracked>,
    /// The code objects read.
    pub cache: CodeCache,
    /// The interpreters' image symbols, by file.
    symbols: detect::SymbolCache,
}

impl std::fmt::Debug for PySymbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PySymbolizer")
            .field("proc_root", &self.proc_root)
            .field("processes", &self.processes.len())
            .finish_non_exhaustive()
    }
}

impl PySymbolizer {
    /// Reads processes under `proc_root` (normally `/proc`).
    pub fn new(proc_root: &Path, capacity: usize) -> Self {
        Self {
            proc_root: proc_root.to_path_buf(),
            processes: HashMap::new(),
            cache: CodeCache::new(capacity),
            symbols: detect::SymbolCache::default(),
        }
    }

    /// Detects (once) and returns the CPython process `pid`.
    pub fn process(&mut self, pid: u32) -> Result<&PythonProcess, PyFrameError> {
        if !self.processes.contains_key(&pid) {
            let tracked = self.track(pid)?;
            self.processes.insert(pid, tracked);
        }
        self.processes
            .get(&pid)
            .map(|t| &t.process)
            .ok_or(PyFrameError::Process("not tracked".into()))
    }

    fn track(&mut self, pid: u32) -> Result<Tracked, PyFrameError> {
        let process_err = |e: String| PyFrameError::Process(e);
        let maps_path = self.proc_root.join(pid.to_string()).join("maps");
        let maps = std::fs::read_to_string(maps_path).map_err(|e| process_err(e.to_string()))?;
        let maps = crate::symbolize::procmaps::parse_maps(&maps);
        let mem = ProcMemory::open(&self.proc_root, pid).map_err(|e| process_err(e.to_string()))?;
        let process =
            PythonProcess::detect_with(pid, &self.proc_root, &maps, &mem, &mut self.symbols)
                .map_err(|e| process_err(e.to_string()))?;
        Ok(Tracked { process, mem })
    }

    /// Forgets `pid` (exited or exec'd) and its cached code objects.
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.cache.forget_pid(pid);
    }

    /// Names byte offset `instr` of the code object at `code_addr` in `pid`.
    pub fn symbolize(
        &mut self,
        pid: u32,
        code_addr: u64,
        instr: i64,
    ) -> Result<PyFrame, PyFrameError> {
        self.process(pid)?;
        let t = self
            .processes
            .get(&pid)
            .ok_or(PyFrameError::Process("not tracked".into()))?;
        let p = &t.process;
        self.cache
            .symbolize(&t.mem, &p.offsets, p.code_type, pid, code_addr, instr)
    }

    /// Names a frame as the kernel walk records it: `recorded` is `f_lasti` (≤ 3.10) or the
    /// instruction pointer's offset from the code object (3.11+), see `bpf/python.h`.
    pub fn symbolize_recorded(
        &mut self,
        pid: u32,
        code_addr: u64,
        recorded: u32,
    ) -> Result<PyFrame, PyFrameError> {
        let off = self.process(pid)?.offsets;
        let instr = match off.frame_instr_kind {
            offsets::INSTR_LASTI_BYTES => i64::from(recorded as i32),
            offsets::INSTR_LASTI_UNITS => i64::from(recorded as i32) * 2,
            _ => i64::from(recorded) - i64::from(off.code_adaptive),
        };
        self.symbolize(pid, code_addr, instr)
    }

    /// Every thread's stack of `pid`, named (the user-space walk).
    pub fn stacks(
        &mut self,
        pid: u32,
        limit: usize,
        stats: &mut stack::FrameStats,
    ) -> Result<Vec<(stack::ThreadStack, Vec<stack::NamedFrame>)>, PyFrameError> {
        self.process(pid)?;
        let t = self
            .processes
            .get(&pid)
            .ok_or(PyFrameError::Process("not tracked".into()))?;
        let raw = stack::read_all(&t.process, &t.mem, limit)?;
        Ok(raw
            .into_iter()
            .map(|s| {
                let named = stack::symbolize_stack(&t.process, &t.mem, &mut self.cache, &s, stats);
                (s, named)
            })
            .collect())
    }
}
