//! The kernel side of Python frames (`bpf/python.h`): the `python_procs` value built from a
//! detected [`PythonProcess`], which processes are worth detecting, and the two tagged words a
//! Python frame takes in a walked user stack. A test reads the C header and checks every
//! constant and the struct's size.

use crate::python::offsets::{PyOffsets, ABSENT, INSTR_LASTI_BYTES, INSTR_LASTI_UNITS};
use crate::python::PythonProcess;
use crate::symbolize::procmaps::MapEntry;

/// First word of a Python frame: `PY_TAG_CODE | code object address`.
pub const PY_TAG_CODE: u64 = 0x8000_0000_0000_0000;
/// Second word: `PY_TAG_INSTR | instruction` (see [`PythonProc::instr_kind`]).
pub const PY_TAG_INSTR: u64 = 0xc000_0000_0000_0000;
/// The bits of both tags.
pub const PY_TAG_MASK: u64 = 0xc000_0000_0000_0000;

/// `entry_kind`: one Python frame per eval call (≤ 3.10).
pub const PY_ENTRY_ONE: u8 = 0;
/// `entry_kind`: the eval call's first frame has `is_entry` (3.11).
pub const PY_ENTRY_FLAG: u8 = 1;
/// `entry_kind`: a shim frame owned by the C stack starts each eval call (3.12+).
pub const PY_ENTRY_OWNER: u8 = 2;
/// `instr_kind`: `f_lasti`, recorded as is.
pub const PY_INSTR_INT: u8 = 0;
/// `instr_kind`: a pointer into the code object, recorded as its offset from the object.
pub const PY_INSTR_PTR: u8 = 1;
/// Bytes of a frame the kernel reads at most.
pub const PY_FRAME_READ: u16 = 128;
/// Bytes of a thread state the kernel reads at most (one read up to the last of its
/// `next`, `thread_id` and frame fields).
pub const PY_TSTATE_READ: u16 = 256;

/// Why the kernel recorded an unreadable Python frame (code address 0, this instruction).
pub const PY_ERR_NO_THREAD: u32 = 1;
/// A read of the interpreter, a thread state or a frame failed.
pub const PY_ERR_READ: u32 = 2;
/// The stack was full.
pub const PY_ERR_TRUNCATED: u32 = 3;

/// `struct python_proc` of `bpf/python.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PythonProc {
    /// `_PyEval_EvalFrameDefault`, absolute addresses.
    pub eval_start: u64,
    /// End of the eval loop.
    pub eval_end: u64,
    /// Its `.cold` part, or 0, 0.
    pub cold_start: u64,
    /// End of the `.cold` part.
    pub cold_end: u64,
    /// Address of the main interpreter's `PyInterpreterState *`.
    pub interp_head: u64,
    /// `PyInterpreterState`: the first thread state.
    pub interp_threads: u16,
    /// `PyThreadState.next`.
    pub tstate_next: u16,
    /// `PyThreadState.thread_id`.
    pub tstate_thread_id: u16,
    /// `PyThreadState.frame` / `.cframe` / `.current_frame`.
    pub tstate_frame: u16,
    /// `_PyCFrame.current_frame` (with `cframe`).
    pub cframe_frame: u16,
    /// Frame: the calling frame.
    pub frame_back: u16,
    /// Frame: the code object.
    pub frame_code: u16,
    /// Frame: the instruction.
    pub frame_instr: u16,
    /// Frame: `is_entry` (3.11) or `owner` (3.12+).
    pub frame_owner: u16,
    /// `PY_ENTRY_*`.
    pub entry_kind: u8,
    /// `FRAME_OWNED_BY_CSTACK`.
    pub owner_cstack: u8,
    /// `PY_INSTR_*`.
    pub instr_kind: u8,
    /// 1: `tstate_frame` points at a `_PyCFrame`.
    pub cframe: u8,
    /// Bytes of a frame to read (every `frame_*` offset plus its size).
    pub frame_read: u16,
    /// Zero.
    pub pad: u16,
}

/// Whether the kernel's one read of a thread state (up to the end of the last of these three
/// 8-byte fields) fits in [`PY_TSTATE_READ`].
fn tstate_fits(next: u16, thread_id: u16, frame: u16) -> bool {
    u32::from(next.max(thread_id).max(frame)) + 8 <= u32::from(PY_TSTATE_READ)
}

fn offset(value: u32) -> Option<u16> {
    (value != ABSENT)
        .then_some(value)
        .and_then(|v| u16::try_from(v).ok())
}

impl PythonProc {
    /// The kernel's description of `process`; `None` when an offset the walk needs is missing
    /// or out of the kernel's range (the process's stacks then stay native).
    pub fn of(process: &PythonProcess) -> Option<PythonProc> {
        let o: &PyOffsets = &process.offsets;
        let eval = process.eval_frame.first()?;
        let cold = process.eval_frame.get(1);
        let (entry_kind, owner_field, owner_cstack) =
            if offset(o.owner_cstack).is_some() && offset(o.frame_owner).is_some() {
                (
                    PY_ENTRY_OWNER,
                    o.frame_owner,
                    u8::try_from(o.owner_cstack).ok()?,
                )
            } else if let Some(flag) = offset(o.frame_is_entry) {
                (PY_ENTRY_FLAG, u32::from(flag), 0)
            } else {
                (PY_ENTRY_ONE, 0, 0)
            };
        let instr_kind = match o.frame_instr_kind {
            INSTR_LASTI_BYTES | INSTR_LASTI_UNITS => PY_INSTR_INT,
            _ => PY_INSTR_PTR,
        };
        let cframe = offset(o.cframe_current_frame);
        let frame_back = offset(o.frame_back)?;
        let frame_code = offset(o.frame_code)?;
        let frame_instr = offset(o.frame_instr)?;
        let frame_owner = if entry_kind == PY_ENTRY_ONE {
            0
        } else {
            offset(owner_field)?
        };
        let instr_size = if instr_kind == PY_INSTR_INT { 4 } else { 8 };
        let frame_read = [
            frame_back + 8,
            frame_code + 8,
            frame_instr + instr_size,
            frame_owner + 1,
        ]
        .into_iter()
        .max()?;
        if frame_read > PY_FRAME_READ {
            return None;
        }
        let tstate_next = offset(o.tstate_next)?;
        let tstate_thread_id = offset(o.tstate_thread_id)?;
        let tstate_frame = offset(o.tstate_frame)?;
        if !tstate_fits(tstate_next, tstate_thread_id, tstate_frame) {
            return None;
        }
        Some(PythonProc {
            eval_start: eval.start,
            eval_end: eval.end,
            cold_start: cold.map_or(0, |r| r.start),
            cold_end: cold.map_or(0, |r| r.end),
            interp_head: process.interp_head,
            interp_threads: offset(o.interp_threads_head)?,
            tstate_next,
            tstate_thread_id,
            tstate_frame,
            cframe_frame: cframe.unwrap_or(0),
            frame_back,
            frame_code,
            frame_instr,
            frame_owner,
            entry_kind,
            owner_cstack,
            instr_kind,
            cframe: u8::from(cframe.is_some()),
            frame_read,
            pad: 0,
        })
    }
}

/// Whether `pid`'s mappings may hold CPython: a `libpython3.X` library, or an executable whose
/// name starts with `python` (detection reads the image's symbols, so other processes are not
/// looked at: an interpreter linked statically into another program stays native).
pub fn python_candidate(maps: &[MapEntry], exe: Option<&str>) -> bool {
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    maps.iter()
        .any(|m| m.is_file() && base(&m.path).starts_with("libpython3."))
        || exe.is_some_and(|e| base(e).starts_with("python"))
}

/// One word of a walked user stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserWord {
    /// A native instruction pointer.
    Native(u64),
    /// A Python frame: code object address and instruction (as recorded).
    Python {
        /// Code object address.
        code: u64,
        /// `f_lasti`, or the pointer's offset from the code object.
        instr: u32,
    },
    /// A Python frame the kernel could not read (`PY_ERR_*`).
    PythonError(u32),
}

/// Splits a walked user stack into native and Python frames (a lone tag word, which the
/// kernel never writes, is kept as a native frame).
pub fn user_words(ips: &[u64]) -> Vec<UserWord> {
    let mut out = Vec::with_capacity(ips.len());
    let mut i = 0;
    while i < ips.len() {
        let word = ips[i];
        let next = ips.get(i + 1).copied();
        if word & PY_TAG_MASK == PY_TAG_CODE {
            if let Some(instr) = next.filter(|n| n & PY_TAG_MASK == PY_TAG_INSTR) {
                let code = word & !PY_TAG_MASK;
                let instr = (instr & 0xffff_ffff) as u32;
                out.push(if code == 0 {
                    UserWord::PythonError(instr)
                } else {
                    UserWord::Python { code, instr }
                });
                i += 2;
                continue;
            }
        }
        out.push(UserWord::Native(word));
        i += 1;
    }
    out
}

/// The marker of an unreadable Python frame.
pub fn error_marker(reason: u32) -> &'static str {
    match reason {
        PY_ERR_NO_THREAD => "[python: thread state not found]",
        PY_ERR_READ => "[python: frame unreadable]",
        PY_ERR_TRUNCATED => "[python: truncated]",
        _ => "[python: unknown error]",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c_define(name: &str) -> u64 {
        let source = include_str!("../../bpf/python.h");
        let line = source
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["#define", name]))
            .unwrap_or_else(|| panic!("#define {name} missing"));
        let value = line.split_whitespace().nth(2).unwrap();
        let value = value.trim_end_matches("ULL");
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
            None => value.parse().unwrap(),
        }
    }

    #[test]
    fn constants_and_layout_match_python_h() {
        assert_eq!(c_define("PY_TAG_CODE"), PY_TAG_CODE);
        assert_eq!(c_define("PY_TAG_INSTR"), PY_TAG_INSTR);
        assert_eq!(c_define("PY_TAG_MASK"), PY_TAG_MASK);
        assert_eq!(c_define("PY_ENTRY_ONE"), u64::from(PY_ENTRY_ONE));
        assert_eq!(c_define("PY_ENTRY_FLAG"), u64::from(PY_ENTRY_FLAG));
        assert_eq!(c_define("PY_ENTRY_OWNER"), u64::from(PY_ENTRY_OWNER));
        assert_eq!(c_define("PY_INSTR_INT"), u64::from(PY_INSTR_INT));
        assert_eq!(c_define("PY_INSTR_PTR"), u64::from(PY_INSTR_PTR));
        assert_eq!(c_define("PY_FRAME_READ"), u64::from(PY_FRAME_READ));
        assert_eq!(c_define("PY_TSTATE_READ"), u64::from(PY_TSTATE_READ));
        assert_eq!(c_define("PY_ERR_NO_THREAD"), u64::from(PY_ERR_NO_THREAD));
        assert_eq!(c_define("PY_ERR_READ"), u64::from(PY_ERR_READ));
        assert_eq!(c_define("PY_ERR_TRUNCATED"), u64::from(PY_ERR_TRUNCATED));
        // 5 addresses, 9 offsets, 4 bytes, frame_read and padding.
        assert_eq!(std::mem::size_of::<PythonProc>(), 40 + 18 + 4 + 4 + 6);
        assert_eq!(std::mem::offset_of!(PythonProc, entry_kind), 58);
        assert_eq!(std::mem::offset_of!(PythonProc, frame_read), 62);
    }

    #[test]
    fn thread_states_of_every_built_in_version_fit_one_read() {
        for minor in 6..=13 {
            let o = crate::python::offsets::table_offsets(minor)
                .unwrap_or_else(|| panic!("no offsets for 3.{minor}"));
            let f = |v: u32| u16::try_from(v).unwrap();
            assert!(
                tstate_fits(f(o.tstate_next), f(o.tstate_thread_id), f(o.tstate_frame)),
                "3.{minor}: thread_id at {}",
                o.tstate_thread_id
            );
        }
        assert!(tstate_fits(8, 248, 56));
        assert!(!tstate_fits(8, 249, 56));
        assert!(!tstate_fits(300, 0, 0));
    }

    #[test]
    fn words_split_into_native_and_python_frames() {
        let ips = [
            0x5555_0000_1000,
            PY_TAG_CODE | 0x7f00_1234_5670,
            PY_TAG_INSTR | 42,
            PY_TAG_CODE,
            PY_TAG_INSTR | u64::from(PY_ERR_READ),
            0x5555_0000_2000,
            PY_TAG_CODE | 0x10, // a lone code word stays native
        ];
        assert_eq!(
            user_words(&ips),
            vec![
                UserWord::Native(0x5555_0000_1000),
                UserWord::Python {
                    code: 0x7f00_1234_5670,
                    instr: 42
                },
                UserWord::PythonError(PY_ERR_READ),
                UserWord::Native(0x5555_0000_2000),
                UserWord::Native(PY_TAG_CODE | 0x10),
            ]
        );
        assert_eq!(
            error_marker(PY_ERR_NO_THREAD),
            "[python: thread state not found]"
        );
    }

    #[test]
    fn candidates_are_libpython_or_an_executable_named_python() {
        let maps = |path: &str| {
            crate::symbolize::procmaps::parse_maps(&format!(
                "7f0000000000-7f0000100000 r-xp 00000000 08:01 5 {path}\n"
            ))
        };
        assert!(python_candidate(
            &maps("/usr/lib/libpython3.12.so.1.0"),
            Some("/usr/bin/x")
        ));
        assert!(python_candidate(
            &maps("/usr/bin/python3.11"),
            Some("/usr/bin/python3.11")
        ));
        assert!(!python_candidate(
            &maps("/usr/bin/dockerd"),
            Some("/usr/bin/dockerd")
        ));
        assert!(!python_candidate(&maps("/usr/lib/libc.so.6"), None));
    }
}
