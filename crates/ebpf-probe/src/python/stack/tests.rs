//! The walker over thread and frame lists laid out by hand in a [`SliceMemory`]: the 3.11
//! `_PyCFrame` indirection and `is_entry`, 3.12 C-stack shims, 3.10 `f_lasti` in code units,
//! loops and unreadable frames.

use super::*;
use crate::python::detect::{OffsetsSource, PyVersion};
use crate::python::memory::SliceMemory;
use crate::python::offsets::{table_offsets, PyOffsets};

const HEAD: u64 = 0x1000;
const INTERP: u64 = 0x2000;
const TS: u64 = 0x3000;
const CFRAME: u64 = 0x4000;
const CODE: u64 = 0x9000;

fn process(minor: u32) -> PythonProcess {
    PythonProcess {
        pid: 1,
        version: PyVersion {
            major: 3,
            minor,
            micro: None,
        },
        image: "libpython".into(),
        image_is_library: true,
        bias: 0,
        offsets: table_offsets(minor).unwrap(),
        offsets_source: OffsetsSource::Table,
        runtime: None,
        interp_head: HEAD,
        gil_holder: None,
        eval_frame: std::iter::once(0x100..0x200).collect(),
        none_struct: Some(0xdead),
        code_type: None,
        tss_key: None,
        tls_tstate: None,
    }
}

/// A zeroed object of `len` bytes with `u64`s and bytes put at offsets.
fn obj(len: usize, words: &[(u32, u64)], bytes: &[(u32, u8)]) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for &(o, w) in words {
        v[o as usize..][..8].copy_from_slice(&w.to_le_bytes());
    }
    for &(o, b) in bytes {
        v[o as usize] = b;
    }
    v
}

/// Interpreter list with one thread state whose first frame (or cframe) is `first`.
fn lists(off: &PyOffsets, first: u64) -> SliceMemory {
    let mut m = SliceMemory::new();
    m.add(HEAD, obj(8, &[(0, INTERP)], &[]));
    m.add(
        INTERP,
        obj(
            8000,
            &[(off.interp_threads_head, TS), (off.interp_next, 0)],
            &[],
        ),
    );
    let mut ts_words = vec![
        (off.tstate_frame, first),
        (off.tstate_next, 0),
        (off.tstate_thread_id, 77),
    ];
    if off.tstate_native_thread_id != ABSENT {
        ts_words.push((off.tstate_native_thread_id, 4242));
    }
    m.add(TS, obj(400, &ts_words, &[]));
    m
}

/// A 3.11+ interpreter frame at `at` running code unit `unit` of `code`.
fn iframe(off: &PyOffsets, code: u64, back: u64, unit: u64, owner: u8, entry: bool) -> Vec<u8> {
    let ip = code + u64::from(off.code_adaptive) + unit * 2;
    let mut bytes = vec![(off.frame_owner, owner)];
    if off.frame_is_entry != ABSENT {
        bytes.push((off.frame_is_entry, u8::from(entry)));
    }
    obj(
        80,
        &[
            (off.frame_code, code),
            (off.frame_back, back),
            (off.frame_instr, ip),
        ],
        &bytes,
    )
}

#[test]
fn walks_311_through_the_cframe() {
    let p = process(11);
    let off = p.offsets;
    let mut m = lists(&off, CFRAME);
    m.add(CFRAME, obj(16, &[(off.cframe_current_frame, 0x5000)], &[]));
    m.add(0x5000, iframe(&off, CODE, 0x5100, 3, 0, false));
    m.add(0x5100, iframe(&off, CODE + 0x100, 0, 0, 0, true));
    let stacks = read_all(&p, &m, 10).unwrap();
    assert_eq!(stacks.len(), 1);
    let s = &stacks[0];
    assert_eq!(
        (s.thread_id, s.native_thread_id, s.error.clone()),
        (77, Some(4242), None)
    );
    assert_eq!(
        s.frames,
        [
            RawFrame {
                code: CODE,
                instr: 6,
                is_entry: false
            },
            RawFrame {
                code: CODE + 0x100,
                instr: 0,
                is_entry: true
            },
        ]
    );
}

#[test]
fn skips_312_shims_and_marks_entries() {
    let p = process(12);
    let off = p.offsets;
    let mut m = lists(&off, CFRAME);
    m.add(CFRAME, obj(16, &[(off.cframe_current_frame, 0x5000)], &[]));
    m.add(0x5000, iframe(&off, CODE, 0x5100, 1, 0, false));
    // FRAME_OWNED_BY_CSTACK shim between two eval-loop calls.
    m.add(0x5100, iframe(&off, 0x7777, 0x5200, 0, 3, false));
    m.add(0x5200, iframe(&off, CODE + 0x40, 0, 2, 1, false));
    let s = read_thread(&p, &m, TS, 10);
    assert_eq!(s.error, None);
    let codes: Vec<(u64, i64, bool)> = s
        .frames
        .iter()
        .map(|f| (f.code, f.instr, f.is_entry))
        .collect();
    assert_eq!(codes, [(CODE, 2, true), (CODE + 0x40, 4, false)]);
}

#[test]
fn frame_objects_310_count_code_units_and_39_bytes() {
    for (minor, lasti, want) in [(10, 7u64, 14i64), (9, 7, 7), (6, 0xffff_ffff, -1)] {
        let p = process(minor);
        let off = p.offsets;
        let mut m = lists(&off, 0x5000);
        m.add(
            0x5000,
            obj(
                200,
                &[
                    (off.frame_code, CODE),
                    (off.frame_back, 0),
                    (off.frame_instr, lasti),
                ],
                &[],
            ),
        );
        let s = read_thread(&p, &m, TS, 10);
        assert_eq!(s.native_thread_id, None);
        assert_eq!(
            s.frames,
            [RawFrame {
                code: CODE,
                instr: want,
                is_entry: false
            }],
            "3.{minor}"
        );
    }
}

#[test]
fn loops_limits_and_holes_end_the_chain_with_a_reason() {
    let p = process(9);
    let off = p.offsets;
    let frame =
        |code: u64, back: u64| obj(200, &[(off.frame_code, code), (off.frame_back, back)], &[]);
    // A loop of two frames.
    let mut m = lists(&off, 0x5000);
    m.add(0x5000, frame(CODE, 0x5100))
        .add(0x5100, frame(CODE, 0x5000));
    let s = read_thread(&p, &m, TS, 100);
    assert_eq!(s.error, Some(PyFrameError::Corrupt("frame chain loops")));
    assert_eq!(s.frames.len(), 2);
    // The limit truncates without an error.
    let s = read_thread(&p, &m, TS, 1);
    assert!(s.truncated && s.error.is_none() && s.frames.len() == 1);
    // An unmapped caller.
    let mut m = lists(&off, 0x5000);
    m.add(0x5000, frame(CODE, 0x6666_0000));
    let s = read_thread(&p, &m, TS, 100);
    assert_eq!(s.frames.len(), 1);
    assert_eq!(s.error.map(|e| e.reason()), Some("unreadable"));
    // A thread list that loops.
    let mut m = lists(&off, 0);
    m.add(TS, obj(400, &[(off.tstate_next, TS)], &[]));
    assert_eq!(
        thread_states(&p, &m),
        Err(PyFrameError::Corrupt("thread list loops"))
    );
}

#[test]
fn unnamed_frames_become_counted_markers() {
    let p = process(9);
    let mut stats = FrameStats::default();
    let mut cache = CodeCache::new(4);
    let stack = ThreadStack {
        tstate: TS,
        thread_id: 1,
        native_thread_id: None,
        frames: vec![
            RawFrame {
                code: CODE,
                instr: 0,
                is_entry: false
            };
            2
        ],
        error: None,
        truncated: false,
    };
    let named = symbolize_stack(&p, &SliceMemory::new(), &mut cache, &stack, &mut stats);
    assert_eq!(
        named,
        [
            NamedFrame::Unknown("unreadable"),
            NamedFrame::Unknown("unreadable")
        ]
    );
    assert_eq!(named[0].label(), "[python: unreadable]");
    assert_eq!((stats.named, stats.failed.get("unreadable")), (0, Some(&2)));
}
