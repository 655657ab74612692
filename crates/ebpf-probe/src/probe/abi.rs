//! What the probe shares with `bpf/profile.bpf.c`: the `#define`d constants (pid states, event
//! kinds, counter indices, stack depth), the `#[repr(C)]` map key and value structs, the byte
//! layout of the ring-buffer records and their decoding, and the mapping of the per-CPU counters
//! to [`LostCounters`]/[`SampleCounters`]. A unit test reads the C source and checks every
//! constant mirrored here and the struct sizes and offsets, so none of it is copied blind.

use super::unwind_abi::{WalkEnd, MAX_USER_FRAMES};
use super::{LostCounters, PidConfig, ProbeEvent, SampleCounters, UnwindCounters};

/// Maximum number of frames per stack (the kernel's `PERF_MAX_STACK_DEPTH`, `MAX_STACK_DEPTH`
/// in the C program).
pub const MAX_STACK_DEPTH: usize = 127;

// `pid_config.state`.
pub(crate) const PID_PENDING: u8 = 0;
pub(crate) const PID_PROFILE: u8 = 1;
pub(crate) const PID_IGNORE: u8 = 2;

// Kinds of ring-buffer records.
pub(crate) const EVENT_UNKNOWN_PID: u32 = 1;
pub(crate) const EVENT_PID_EXIT: u32 = 2;
pub(crate) const EVENT_RAW_SAMPLE: u32 = 3;
pub(crate) const EVENT_PID_EXEC: u32 = 4;
pub(crate) const EVENT_REREAD_MAPS: u32 = 5;
pub(crate) const EVENT_UNWOUND_SAMPLE: u32 = 6;

// `sample_key.user_store`: what `user_stack`/`leaf_caller` hold.
#[cfg(test)] // the zero default, never compared against
pub(crate) const STORE_STACK_MAP: u32 = 0;
pub(crate) const STORE_USTACKS: u32 = 1;

// Indices into the per-CPU `counters` map.
pub(crate) const C_SAMPLES: u32 = 0;
pub(crate) const C_IDLE: u32 = 1;
pub(crate) const C_KTHREAD: u32 = 2;
pub(crate) const C_PENDING: u32 = 3;
pub(crate) const C_IGNORED: u32 = 4;
pub(crate) const C_USER_STACK_EMPTY: u32 = 5;
pub(crate) const C_KERNEL_STACK_EMPTY: u32 = 6;
pub(crate) const C_USER_STACK_ERROR: u32 = 7;
pub(crate) const C_KERNEL_STACK_ERROR: u32 = 8;
pub(crate) const C_COLLISIONS: u32 = 9;
pub(crate) const C_COLLISIONS_LOST: u32 = 10;
pub(crate) const C_COUNTS_FULL: u32 = 11;
pub(crate) const C_EVENTS_LOST: u32 = 12;
pub(crate) const C_PID_MAP_FULL: u32 = 13;
/// First of the seven walk-end counters (`C_UNWIND_BASE + WalkEnd - 1`).
pub(crate) const C_UNWIND_BASE: u32 = 14;
pub(crate) const C_UNWIND_FP_USED: u32 = 21;
pub(crate) const C_USTACK_COLLISIONS: u32 = 22;
pub(crate) const C_USTACK_FULL: u32 = 23;
pub(crate) const C_REREAD_REQUESTS: u32 = 24;
pub(crate) const C_PY_FRAMES: u32 = 25;
pub(crate) const C_PY_NO_THREAD: u32 = 26;
pub(crate) const C_PY_READ_FAILED: u32 = 27;
pub(crate) const C_STACK_WINDOW_SHORT: u32 = 28;
/// Entries of the `counters` map (some are spare).
pub(crate) const C_NUM_COUNTERS: usize = 32;

/// Snapshot of every per-CPU counter, summed over the CPUs.
pub(crate) type Counters = [u64; C_NUM_COUNTERS];

// Byte offsets in `struct pid_event` and `struct raw_sample` (both start with kind and pid).
const KIND_OFFSET: usize = 0;
const PID_OFFSET: usize = 4;
const RAW_USER_LEN_OFFSET: usize = 8;
const RAW_KERNEL_LEN_OFFSET: usize = 12;
const RAW_LEAF_CALLER_OFFSET: usize = 16;
/// Offset of the user stack in `struct raw_sample`.
const RAW_USER_OFFSET: usize = 24;
/// Offset of the kernel stack in `struct raw_sample`.
const RAW_KERNEL_OFFSET: usize = RAW_USER_OFFSET + MAX_STACK_DEPTH * 8;
/// Size of `struct pid_event`.
#[cfg(test)]
const PID_EVENT_SIZE: usize = 8;
/// Size of `struct raw_sample`.
#[cfg(test)]
const RAW_SAMPLE_SIZE: usize = RAW_KERNEL_OFFSET + MAX_STACK_DEPTH * 8;
// `struct unwound_sample` (a table-walked sample sent whole): kind, pid, lengths as in
// `raw_sample`, then the walk's end reason and flags, the user then the kernel frames.
const UNWOUND_REASON_OFFSET: usize = 16;
const UNWOUND_USER_OFFSET: usize = 24;
const UNWOUND_KERNEL_OFFSET: usize = UNWOUND_USER_OFFSET + MAX_USER_FRAMES * 8;
#[cfg(test)]
const UNWOUND_FLAGS_OFFSET: usize = 17;
#[cfg(test)]
const UNWOUND_SAMPLE_SIZE: usize = UNWOUND_KERNEL_OFFSET + MAX_STACK_DEPTH * 8;

/// Key of the `counts` maps (`struct sample_key`). Stack ids are -1 when absent.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct SampleKey {
    pub(crate) pid: u32,
    pub(crate) user_stack: i32,
    pub(crate) kernel_stack: i32,
    /// [`STORE_STACK_MAP`] or [`STORE_USTACKS`].
    pub(crate) user_store: u32,
    /// [`STORE_STACK_MAP`]: return address into the caller of a frameless user leaf function
    /// that the frame-pointer walk skipped, 0 if none (see `find_leaf_caller` in the C
    /// program). [`STORE_USTACKS`]: the key of the user stack in `ustacks0/1`.
    pub(crate) leaf_caller: u64,
}

/// Value of the `pid_config` map (`struct pid_config`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PidConfigValue {
    pub(crate) state: u8,
    pub(crate) user: u8,
    pub(crate) kernel: u8,
    pub(crate) pad: u8,
}

impl From<PidConfig> for PidConfigValue {
    fn from(config: PidConfig) -> Self {
        PidConfigValue {
            state: if config.profile {
                PID_PROFILE
            } else {
                PID_IGNORE
            },
            user: u8::from(config.user),
            kernel: u8::from(config.kernel),
            pad: 0,
        }
    }
}

/// A record from the ring buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Event(ProbeEvent),
    /// A pc of `pid` lay outside every mapping the kernel knows: re-read its maps.
    Reread(u32),
    Raw {
        pid: u32,
        user: Vec<u64>,
        kernel: Vec<u64>,
        /// `Some` for a table-walked user stack.
        user_end: Option<WalkEnd>,
    },
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    bytes
        .get(offset..offset + 4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    read_ips(bytes, offset, 1).map(|v| v[0])
}

fn read_ips(bytes: &[u8], offset: usize, len: usize) -> Option<Vec<u64>> {
    let raw = bytes.get(offset..offset + len * 8)?;
    Some(
        raw.chunks_exact(8)
            .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    )
}

/// Decodes one ring-buffer record (`struct pid_event` or `struct raw_sample`).
pub(crate) fn parse_record(bytes: &[u8]) -> Option<Record> {
    let kind = read_u32(bytes, KIND_OFFSET)?;
    let pid = read_u32(bytes, PID_OFFSET)?;
    match kind {
        EVENT_UNKNOWN_PID => Some(Record::Event(ProbeEvent::UnknownPid(pid))),
        EVENT_PID_EXIT => Some(Record::Event(ProbeEvent::PidExit(pid))),
        EVENT_PID_EXEC => Some(Record::Event(ProbeEvent::PidExec(pid))),
        EVENT_RAW_SAMPLE => {
            let user_len = (read_u32(bytes, RAW_USER_LEN_OFFSET)? as usize).min(MAX_STACK_DEPTH);
            let kernel_len =
                (read_u32(bytes, RAW_KERNEL_LEN_OFFSET)? as usize).min(MAX_STACK_DEPTH);
            let leaf_caller = read_u64(bytes, RAW_LEAF_CALLER_OFFSET)?;
            let mut user = read_ips(bytes, RAW_USER_OFFSET, user_len)?;
            let kernel = read_ips(bytes, RAW_KERNEL_OFFSET, kernel_len)?;
            splice_leaf_caller(&mut user, leaf_caller);
            Some(Record::Raw {
                pid,
                user,
                kernel,
                user_end: None,
            })
        }
        EVENT_REREAD_MAPS => Some(Record::Reread(pid)),
        EVENT_UNWOUND_SAMPLE => {
            let user_len = (read_u32(bytes, RAW_USER_LEN_OFFSET)? as usize).min(MAX_USER_FRAMES);
            let kernel_len =
                (read_u32(bytes, RAW_KERNEL_LEN_OFFSET)? as usize).min(MAX_STACK_DEPTH);
            let reason = *bytes.get(UNWOUND_REASON_OFFSET)?;
            Some(Record::Raw {
                pid,
                user: read_ips(bytes, UNWOUND_USER_OFFSET, user_len)?,
                kernel: read_ips(bytes, UNWOUND_KERNEL_OFFSET, kernel_len)?,
                user_end: Some(WalkEnd::from_code(reason)?),
            })
        }
        _ => None,
    }
}

/// Puts the recovered caller of a frameless leaf right after the leaf.
pub(crate) fn splice_leaf_caller(user: &mut Vec<u64>, caller: u64) {
    if caller != 0 && !user.is_empty() && user.get(1) != Some(&caller) {
        user.insert(1, caller);
    }
}

/// What each counter grew by between two snapshots (the counters wrap).
pub(crate) fn counter_deltas(before: &Counters, after: &Counters) -> Counters {
    let mut delta = [0; C_NUM_COUNTERS];
    for i in 0..C_NUM_COUNTERS {
        delta[i] = after[i].wrapping_sub(before[i]);
    }
    delta
}

/// Adds the loss counters of an interval to `lost`.
pub(crate) fn apply_counters(delta: &Counters, lost: &mut LostCounters) {
    lost.counts_map_full += delta[C_COUNTS_FULL as usize];
    lost.stack_collisions += delta[C_COLLISIONS_LOST as usize];
    lost.user_stack_errors += delta[C_USER_STACK_ERROR as usize];
    lost.kernel_stack_errors += delta[C_KERNEL_STACK_ERROR as usize];
    lost.events += delta[C_EVENTS_LOST as usize];
    lost.pid_map_full += delta[C_PID_MAP_FULL as usize];
}

/// The table-walk counters of an interval.
pub(crate) fn unwind_counters(delta: &Counters) -> UnwindCounters {
    let mut ends = [0; 7];
    for (i, end) in ends.iter_mut().enumerate() {
        *end = delta[C_UNWIND_BASE as usize + i];
    }
    UnwindCounters {
        ends,
        frame_pointer_used: delta[C_UNWIND_FP_USED as usize],
        ustack_collisions: delta[C_USTACK_COLLISIONS as usize],
        ustack_full: delta[C_USTACK_FULL as usize],
        reread_requests: delta[C_REREAD_REQUESTS as usize],
        python_frames: delta[C_PY_FRAMES as usize],
        python_no_thread: delta[C_PY_NO_THREAD as usize],
        python_read_failed: delta[C_PY_READ_FAILED as usize],
        stack_window_short: delta[C_STACK_WINDOW_SHORT as usize],
    }
}

/// The other counters of an interval.
pub(crate) fn sample_counters(delta: &Counters) -> SampleCounters {
    SampleCounters {
        counted: delta[C_SAMPLES as usize],
        collisions_recovered: delta[C_COLLISIONS as usize],
        idle: delta[C_IDLE as usize],
        kernel_threads: delta[C_KTHREAD as usize],
        pending: delta[C_PENDING as usize],
        ignored: delta[C_IGNORED as usize],
        user_stack_empty: delta[C_USER_STACK_EMPTY as usize],
        kernel_stack_empty: delta[C_KERNEL_STACK_EMPTY as usize],
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The C program (with the table walk it includes), read at compile time so that a change
    /// to it reruns this check.
    const C_SOURCE: &str = concat!(
        include_str!("../../bpf/profile.bpf.c"),
        include_str!("../../bpf/walk.h")
    );

    /// `(name, value)` of each constant mirrored here, named once so that the name compared
    /// with the C `#define` is the Rust constant's own.
    macro_rules! mirrored {
        ($($name:ident),* $(,)?) => {
            [$((stringify!($name), $name as u64)),*]
        };
    }

    fn strip_comment(line: &str) -> &str {
        line.split("//").next().unwrap_or("").trim()
    }

    /// Every `#define NAME <integer>` of the C source.
    fn c_defines() -> HashMap<String, u64> {
        let mut defines = HashMap::new();
        for line in C_SOURCE.lines() {
            let line = strip_comment(line);
            let Some(rest) = line.strip_prefix("#define ") else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let (Some(name), Some(value), None) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            let value = match value.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => value.parse(),
            };
            if let Ok(value) = value {
                defines.insert(name.to_string(), value);
            }
        }
        defines
    }

    /// `(field, offset)` of a C struct of fixed-size integers and arrays of them, and its size,
    /// laid out as the C ABI does (each field at its alignment, the size rounded up to the
    /// largest one).
    fn c_struct_layout(name: &str) -> (Vec<(String, usize)>, usize) {
        let defines = c_defines();
        let header = format!("struct {name} {{");
        let body = C_SOURCE
            .split(&header)
            .nth(1)
            .and_then(|rest| rest.split("};").next())
            .unwrap_or_else(|| panic!("struct {name} not found in profile.bpf.c"));
        let mut fields = Vec::new();
        let (mut offset, mut align_max) = (0usize, 1usize);
        for line in body.lines().map(strip_comment).filter(|l| !l.is_empty()) {
            let decl = line
                .strip_suffix(';')
                .unwrap_or_else(|| panic!("{name}: unexpected line {line:?}"));
            let (ty, field) = decl
                .split_once(' ')
                .unwrap_or_else(|| panic!("{name}: unexpected field {decl:?}"));
            let size = match ty {
                "__u8" | "__s8" => 1,
                "__u16" | "__s16" => 2,
                "__u32" | "__s32" => 4,
                "__u64" | "__s64" => 8,
                other => panic!("{name}: field type {other} not understood by this test"),
            };
            let (field, count) = match field.split_once('[') {
                Some((field, len)) => {
                    let len = len.trim_end_matches(']');
                    let count = len
                        .parse()
                        .ok()
                        .or_else(|| defines.get(len).map(|&v| v as usize))
                        .unwrap_or_else(|| panic!("{name}: array length {len} unknown"));
                    (field, count)
                }
                None => (field, 1),
            };
            offset = offset.next_multiple_of(size);
            fields.push((field.trim().to_string(), offset));
            offset += size * count;
            align_max = align_max.max(size);
        }
        (fields, offset.next_multiple_of(align_max))
    }

    fn offset_of(fields: &[(String, usize)], field: &str) -> usize {
        fields
            .iter()
            .find(|(name, _)| name == field)
            .unwrap_or_else(|| panic!("field {field} not found"))
            .1
    }

    #[test]
    fn constants_match_the_c_program() {
        let defines = c_defines();
        let rust = mirrored!(
            MAX_STACK_DEPTH,
            PID_PENDING,
            PID_PROFILE,
            PID_IGNORE,
            EVENT_UNKNOWN_PID,
            EVENT_PID_EXIT,
            EVENT_RAW_SAMPLE,
            EVENT_PID_EXEC,
            EVENT_REREAD_MAPS,
            EVENT_UNWOUND_SAMPLE,
            STORE_STACK_MAP,
            STORE_USTACKS,
            C_SAMPLES,
            C_IDLE,
            C_KTHREAD,
            C_PENDING,
            C_IGNORED,
            C_USER_STACK_EMPTY,
            C_KERNEL_STACK_EMPTY,
            C_USER_STACK_ERROR,
            C_KERNEL_STACK_ERROR,
            C_COLLISIONS,
            C_COLLISIONS_LOST,
            C_COUNTS_FULL,
            C_EVENTS_LOST,
            C_PID_MAP_FULL,
            C_UNWIND_BASE,
            C_UNWIND_FP_USED,
            C_USTACK_COLLISIONS,
            C_USTACK_FULL,
            C_REREAD_REQUESTS,
            C_PY_FRAMES,
            C_PY_NO_THREAD,
            C_PY_READ_FAILED,
            C_STACK_WINDOW_SHORT,
            C_NUM_COUNTERS,
        );
        for (name, value) in rust {
            assert_eq!(
                defines.get(name),
                Some(&value),
                "{name} differs between probe/abi.rs and profile.bpf.c"
            );
        }
        // Pid states and record kinds are closed sets the Rust side decodes: a new one in C
        // must be handled here too.
        for name in defines.keys() {
            if name.starts_with("PID_") || name.starts_with("EVENT_") {
                assert!(
                    rust.iter().any(|(mirrored, _)| mirrored == name),
                    "{name} of profile.bpf.c has no mirror in probe/abi.rs"
                );
            }
        }
        // Every counter index the C program uses fits the counters map the Rust side reads.
        for (name, &value) in &defines {
            if name.starts_with("C_") && name != "C_NUM_COUNTERS" {
                assert!((value as usize) < C_NUM_COUNTERS, "{name} = {value}");
            }
        }
    }

    #[test]
    fn shared_structs_match_the_c_layout() {
        let (fields, size) = c_struct_layout("sample_key");
        assert_eq!(std::mem::size_of::<SampleKey>(), size);
        assert_eq!(size, 24);
        for (field, rust) in [
            ("pid", std::mem::offset_of!(SampleKey, pid)),
            ("user_stack", std::mem::offset_of!(SampleKey, user_stack)),
            (
                "kernel_stack",
                std::mem::offset_of!(SampleKey, kernel_stack),
            ),
            ("user_store", std::mem::offset_of!(SampleKey, user_store)),
            ("leaf_caller", std::mem::offset_of!(SampleKey, leaf_caller)),
        ] {
            assert_eq!(offset_of(&fields, field), rust, "sample_key.{field}");
        }

        let (fields, size) = c_struct_layout("pid_config");
        assert_eq!(std::mem::size_of::<PidConfigValue>(), size);
        assert_eq!(size, 4);
        for (field, rust) in [
            ("state", std::mem::offset_of!(PidConfigValue, state)),
            ("user", std::mem::offset_of!(PidConfigValue, user)),
            ("kernel", std::mem::offset_of!(PidConfigValue, kernel)),
            ("_pad", std::mem::offset_of!(PidConfigValue, pad)),
        ] {
            assert_eq!(offset_of(&fields, field), rust, "pid_config.{field}");
        }

        let (fields, size) = c_struct_layout("pid_event");
        assert_eq!(size, PID_EVENT_SIZE);
        assert_eq!(offset_of(&fields, "kind"), KIND_OFFSET);
        assert_eq!(offset_of(&fields, "pid"), PID_OFFSET);

        let (fields, size) = c_struct_layout("unwound_sample");
        assert_eq!(size, UNWOUND_SAMPLE_SIZE);
        for (field, rust) in [
            ("kind", KIND_OFFSET),
            ("pid", PID_OFFSET),
            ("user_len", RAW_USER_LEN_OFFSET),
            ("kernel_len", RAW_KERNEL_LEN_OFFSET),
            ("reason", UNWOUND_REASON_OFFSET),
            ("flags", UNWOUND_FLAGS_OFFSET),
            ("user", UNWOUND_USER_OFFSET),
            ("kernel", UNWOUND_KERNEL_OFFSET),
        ] {
            assert_eq!(offset_of(&fields, field), rust, "unwound_sample.{field}");
        }

        let (fields, size) = c_struct_layout("raw_sample");
        assert_eq!(size, RAW_SAMPLE_SIZE);
        for (field, rust) in [
            ("kind", KIND_OFFSET),
            ("pid", PID_OFFSET),
            ("user_len", RAW_USER_LEN_OFFSET),
            ("kernel_len", RAW_KERNEL_LEN_OFFSET),
            ("leaf_caller", RAW_LEAF_CALLER_OFFSET),
            ("user", RAW_USER_OFFSET),
            ("kernel", RAW_KERNEL_OFFSET),
        ] {
            assert_eq!(offset_of(&fields, field), rust, "raw_sample.{field}");
        }
    }

    #[test]
    fn pid_config_encoding() {
        let v = PidConfigValue::from(PidConfig {
            profile: true,
            user: true,
            kernel: false,
        });
        assert_eq!((v.state, v.user, v.kernel), (PID_PROFILE, 1, 0));
        let v = PidConfigValue::from(PidConfig {
            profile: false,
            user: true,
            kernel: true,
        });
        assert_eq!((v.state, v.user, v.kernel), (PID_IGNORE, 1, 1));
    }

    fn raw_record(pid: u32, user: &[u64], kernel: &[u64], leaf_caller: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend(EVENT_RAW_SAMPLE.to_ne_bytes());
        bytes.extend(pid.to_ne_bytes());
        bytes.extend((user.len() as u32).to_ne_bytes());
        bytes.extend((kernel.len() as u32).to_ne_bytes());
        bytes.extend(leaf_caller.to_ne_bytes());
        let mut stacks = vec![0u64; 2 * MAX_STACK_DEPTH];
        stacks[..user.len()].copy_from_slice(user);
        stacks[MAX_STACK_DEPTH..MAX_STACK_DEPTH + kernel.len()].copy_from_slice(kernel);
        for ip in stacks {
            bytes.extend(ip.to_ne_bytes());
        }
        bytes
    }

    #[test]
    fn ring_records_decode() {
        let mut unknown = EVENT_UNKNOWN_PID.to_ne_bytes().to_vec();
        unknown.extend(42u32.to_ne_bytes());
        assert_eq!(
            parse_record(&unknown),
            Some(Record::Event(ProbeEvent::UnknownPid(42)))
        );
        let mut exit = EVENT_PID_EXIT.to_ne_bytes().to_vec();
        exit.extend(7u32.to_ne_bytes());
        assert_eq!(
            parse_record(&exit),
            Some(Record::Event(ProbeEvent::PidExit(7)))
        );
        let mut exec = EVENT_PID_EXEC.to_ne_bytes().to_vec();
        exec.extend(8u32.to_ne_bytes());
        assert_eq!(
            parse_record(&exec),
            Some(Record::Event(ProbeEvent::PidExec(8)))
        );

        let raw = raw_record(9, &[0x401000, 0x401100], &[0xffffffff81000000], 0);
        assert_eq!(raw.len(), RAW_USER_OFFSET + 2 * MAX_STACK_DEPTH * 8);
        assert_eq!(
            parse_record(&raw),
            Some(Record::Raw {
                pid: 9,
                user: vec![0x401000, 0x401100],
                kernel: vec![0xffffffff81000000],
                user_end: None,
            })
        );
        let raw = raw_record(9, &[0x401000, 0x401100], &[], 0x401234);
        assert_eq!(
            parse_record(&raw),
            Some(Record::Raw {
                pid: 9,
                user: vec![0x401000, 0x401234, 0x401100],
                kernel: vec![],
                user_end: None,
            })
        );
        assert_eq!(parse_record(&raw[..100]), None, "truncated record");

        let mut reread = EVENT_REREAD_MAPS.to_ne_bytes().to_vec();
        reread.extend(5u32.to_ne_bytes());
        assert_eq!(parse_record(&reread), Some(Record::Reread(5)));
        let user: Vec<u64> = (0..200).map(|i| 0x400000 + i).collect();
        let mut unwound = EVENT_UNWOUND_SAMPLE.to_ne_bytes().to_vec();
        unwound.extend(6u32.to_ne_bytes());
        unwound.extend((user.len() as u32).to_ne_bytes());
        unwound.extend(1u32.to_ne_bytes());
        unwound.extend([WalkEnd::NoInfo as u8, 1, 0, 0, 0, 0, 0, 0]);
        let mut frames = vec![0u64; MAX_USER_FRAMES + MAX_STACK_DEPTH];
        frames[..user.len()].copy_from_slice(&user);
        frames[MAX_USER_FRAMES] = 0xffffffff81000000;
        for ip in frames {
            unwound.extend(ip.to_ne_bytes());
        }
        assert_eq!(unwound.len(), UNWOUND_SAMPLE_SIZE);
        assert_eq!(
            parse_record(&unwound),
            Some(Record::Raw {
                pid: 6,
                user: user.clone(),
                kernel: vec![0xffffffff81000000],
                user_end: Some(WalkEnd::NoInfo),
            })
        );
        unwound[UNWOUND_REASON_OFFSET] = 0;
        assert_eq!(parse_record(&unwound), None, "unknown walk end");
        assert_eq!(parse_record(&[1, 0, 0]), None);
        let mut bogus = 99u32.to_ne_bytes().to_vec();
        bogus.extend(1u32.to_ne_bytes());
        assert_eq!(parse_record(&bogus), None);
    }

    #[test]
    fn counters_become_interval_deltas() {
        let mut before = [0u64; C_NUM_COUNTERS];
        let mut after = [0u64; C_NUM_COUNTERS];
        before[C_SAMPLES as usize] = 100;
        after[C_SAMPLES as usize] = 250;
        after[C_COUNTS_FULL as usize] = 3;
        after[C_COLLISIONS_LOST as usize] = 2;
        after[C_COLLISIONS as usize] = 5;
        after[C_EVENTS_LOST as usize] = 1;
        let delta = counter_deltas(&before, &after);
        let mut lost = LostCounters {
            missing_stacks: 4,
            ..Default::default()
        };
        apply_counters(&delta, &mut lost);
        assert_eq!(lost.counts_map_full, 3);
        assert_eq!(lost.stack_collisions, 2);
        assert_eq!(lost.events, 1);
        assert_eq!(lost.samples(), 5);
        assert_eq!(lost.total(), 9);
        let counters = sample_counters(&delta);
        assert_eq!(counters.counted, 150);
        assert_eq!(counters.collisions_recovered, 5);
    }

    #[test]
    fn leaf_caller_is_spliced_after_the_leaf() {
        let mut user = vec![0x10, 0x30];
        splice_leaf_caller(&mut user, 0x20);
        assert_eq!(user, vec![0x10, 0x20, 0x30]);
        splice_leaf_caller(&mut user, 0x20);
        assert_eq!(user, vec![0x10, 0x20, 0x30], "already there");
        splice_leaf_caller(&mut user, 0);
        assert_eq!(user, vec![0x10, 0x20, 0x30]);
        let mut empty = vec![];
        splice_leaf_caller(&mut empty, 0x20);
        assert!(empty.is_empty(), "no leaf to attach a caller to");
        let mut leaf_only = vec![0x10];
        splice_leaf_caller(&mut leaf_only, 0x20);
        assert_eq!(leaf_only, vec![0x10, 0x20]);
    }
}
