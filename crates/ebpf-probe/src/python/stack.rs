//! A user-space walker of CPython stacks: every thread state reachable from `_PyRuntime`
//! (interpreters → threads), each thread's frame chain as (code object, instruction offset)
//! pairs — what the kernel walk will push — and their names. It is the oracle the kernel walk is
//! tested against and the proof of the offsets on real interpreters.

use super::code::{CodeCache, PyFrame, PyFrameError};
use super::detect::PythonProcess;
use super::memory::Memory;
use super::offsets::{ABSENT, INSTR_LASTI_BYTES, INSTR_LASTI_UNITS, INSTR_POINTER};
use std::collections::{BTreeMap, HashSet};

/// Most interpreters or threads followed before the list is taken as corrupt.
pub const MAX_LIST: usize = 4096;

/// One frame as the kernel walk records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame {
    /// The frame's code object.
    pub code: u64,
    /// Byte offset of the current instruction in the bytecode (−1 or less: not started).
    pub instr: i64,
    /// An eval-loop invocation started at this frame (3.11 `is_entry`; 3.12+ the next frame
    /// is a C-stack shim); native frames interleave here.
    pub is_entry: bool,
}

/// One thread's Python stack, innermost frame first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadStack {
    /// The `PyThreadState`.
    pub tstate: u64,
    /// `thread_id` (`pthread_t`).
    pub thread_id: u64,
    /// `native_thread_id` (TID), 3.11+.
    pub native_thread_id: Option<u64>,
    /// Frames read.
    pub frames: Vec<RawFrame>,
    /// Why the chain ended early (unreadable or looping frame), if it did.
    pub error: Option<PyFrameError>,
    /// The chain was longer than the limit.
    pub truncated: bool,
}

/// Every thread state of every interpreter.
pub fn thread_states(proc: &PythonProcess, mem: &dyn Memory) -> Result<Vec<u64>, PyFrameError> {
    let off = &proc.offsets;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut interp = mem.read_u64(proc.interp_head)?;
    while interp != 0 {
        if !seen.insert(interp) || seen.len() > MAX_LIST {
            return Err(PyFrameError::Corrupt("interpreter list loops"));
        }
        let mut ts = mem.read_u64(interp + u64::from(off.interp_threads_head))?;
        while ts != 0 {
            if !seen.insert(ts) || seen.len() > MAX_LIST {
                return Err(PyFrameError::Corrupt("thread list loops"));
            }
            out.push(ts);
            ts = mem.read_u64(ts + u64::from(off.tstate_next))?;
        }
        interp = mem.read_u64(interp + u64::from(off.interp_next))?;
    }
    Ok(out)
}

/// The innermost frame of a thread state (0: none).
fn current_frame(proc: &PythonProcess, mem: &dyn Memory, tstate: u64) -> Result<u64, PyFrameError> {
    let off = &proc.offsets;
    let frame = mem.read_u64(tstate + u64::from(off.tstate_frame))?;
    if off.cframe_current_frame == ABSENT || frame == 0 {
        return Ok(frame);
    }
    Ok(mem.read_u64(frame + u64::from(off.cframe_current_frame))?)
}

enum Step {
    /// A function's frame.
    Frame(RawFrame),
    /// A C-stack shim (3.12+ `FRAME_OWNED_BY_CSTACK`, 3.13 `f_executable == None`).
    Shim,
}

fn read_frame(proc: &PythonProcess, mem: &dyn Memory, f: u64) -> Result<Step, PyFrameError> {
    let off = &proc.offsets;
    if off.frame_owner != ABSENT && off.owner_cstack != ABSENT {
        let owner = mem.read_u8(f + u64::from(off.frame_owner))?;
        if u32::from(owner) == off.owner_cstack {
            return Ok(Step::Shim);
        }
    }
    let code = mem.read_u64(f + u64::from(off.frame_code))?;
    if code == 0 || Some(code) == proc.none_struct {
        return Ok(Step::Shim);
    }
    let at = f + u64::from(off.frame_instr);
    let instr = match off.frame_instr_kind {
        INSTR_LASTI_BYTES => i64::from(mem.read_u32(at)? as i32),
        INSTR_LASTI_UNITS => i64::from(mem.read_u32(at)? as i32) * 2,
        INSTR_POINTER => {
            let ptr = mem.read_u64(at)?;
            let start = code.wrapping_add(u64::from(off.code_adaptive));
            ptr.wrapping_sub(start) as i64
        }
        _ => return Err(PyFrameError::Corrupt("unknown instruction kind")),
    };
    let is_entry =
        off.frame_is_entry != ABSENT && mem.read_u8(f + u64::from(off.frame_is_entry))? != 0;
    Ok(Step::Frame(RawFrame {
        code,
        instr,
        is_entry,
    }))
}

/// Reads the frame chain of `tstate`, at most `limit` frames.
pub fn read_thread(
    proc: &PythonProcess,
    mem: &dyn Memory,
    tstate: u64,
    limit: usize,
) -> ThreadStack {
    let off = &proc.offsets;
    let mut stack = ThreadStack {
        tstate,
        thread_id: 0,
        native_thread_id: None,
        frames: Vec::new(),
        error: None,
        truncated: false,
    };
    let result = (|| -> Result<(), PyFrameError> {
        stack.thread_id = mem.read_u64(tstate + u64::from(off.tstate_thread_id))?;
        if off.tstate_native_thread_id != ABSENT {
            stack.native_thread_id =
                Some(mem.read_u64(tstate + u64::from(off.tstate_native_thread_id))?);
        }
        let mut f = current_frame(proc, mem, tstate)?;
        let mut seen = HashSet::new();
        while f != 0 {
            if stack.frames.len() >= limit {
                stack.truncated = true;
                break;
            }
            if !seen.insert(f) || seen.len() > limit.saturating_mul(4).max(64) {
                return Err(PyFrameError::Corrupt("frame chain loops"));
            }
            match read_frame(proc, mem, f)? {
                Step::Frame(frame) => stack.frames.push(frame),
                Step::Shim => {
                    if let Some(last) = stack.frames.last_mut() {
                        last.is_entry = true;
                    }
                }
            }
            f = mem.read_u64(f + u64::from(off.frame_back))?;
        }
        Ok(())
    })();
    stack.error = result.err();
    stack
}

/// Every thread's stack.
pub fn read_all(
    proc: &PythonProcess,
    mem: &dyn Memory,
    limit: usize,
) -> Result<Vec<ThreadStack>, PyFrameError> {
    Ok(thread_states(proc, mem)?
        .into_iter()
        .map(|ts| read_thread(proc, mem, ts, limit))
        .collect())
}

/// Counts of frames that could not be named, by [`PyFrameError::reason`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames named.
    pub named: u64,
    /// Frames replaced by a marker, per reason.
    pub failed: BTreeMap<&'static str, u64>,
}

/// A named frame, or the marker of one that could not be named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedFrame {
    /// Named.
    Frame(PyFrame),
    /// `[python: reason]`: the frame exists but could not be named.
    Unknown(&'static str),
}

impl NamedFrame {
    /// The qualified name, or the marker text.
    pub fn label(&self) -> String {
        match self {
            Self::Frame(f) => f.qualname.clone(),
            Self::Unknown(reason) => format!("[python: {reason}]"),
        }
    }
}

/// Names the frames of `stack` (errors become markers and are counted in `stats`).
pub fn symbolize_stack(
    proc: &PythonProcess,
    mem: &dyn Memory,
    cache: &mut CodeCache,
    stack: &ThreadStack,
    stats: &mut FrameStats,
) -> Vec<NamedFrame> {
    stack
        .frames
        .iter()
        .map(|f| {
            match cache.symbolize(
                mem,
                &proc.offsets,
                proc.code_type,
                proc.pid,
                f.code,
                f.instr,
            ) {
                Ok(frame) => {
                    stats.named += 1;
                    NamedFrame::Frame(frame)
                }
                Err(e) => {
                    *stats.failed.entry(e.reason()).or_default() += 1;
                    NamedFrame::Unknown(e.reason())
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
