//! Off-CPU profiles, the kernel side's user half (`bpf/offcpu.h`): the threshold
//! ([`OffCpuThreshold`], a probability kept as the kernel's 32-bit draw bound), loading and
//! attaching `offcpu_switch` (`tp_btf/sched_switch`) and `offcpu_resume[_unwind]` (a kprobe on
//! `finish_task_switch`), draining the double-buffered `offcpu_counts0/1`, decoding
//! `EVENT_OFFCPU_SAMPLE` ring-buffer records, and the loss counters. The values are scaled here:
//! recorded nanoseconds / probability estimate the real off-CPU time.

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{BtfTracePoint, KProbe};
use aya::{Btf, Ebpf, EbpfLoader};
use tracing::debug;

use super::abi::SampleKey;
use super::unwind_abi::{WalkEnd, MAX_USER_FRAMES};
use super::{ProbeConfig, ProbeError, StackSample, MAX_STACK_DEPTH};

pub(crate) const MAP_OFFCPU_CONFIG: &str = "offcpu_config";
pub(crate) const MAP_OFFCPU_SLEEPING: &str = "offcpu_sleeping";
pub(crate) const MAP_OFFCPU_COUNTS: [&str; 2] = ["offcpu_counts0", "offcpu_counts1"];
pub(crate) const MAP_OFFCPU_COUNTERS: &str = "offcpu_counters";
const PROG_SWITCH: &str = "offcpu_switch";
const PROG_RESUME: &str = "offcpu_resume";
const PROG_RESUME_UNWIND: &str = "offcpu_resume_unwind";

// Mirrors of bpf/offcpu.h (checked by a test below).
pub(crate) const EVENT_OFFCPU_SAMPLE: u32 = 7;
const OC_RECORDED: usize = 0;
const OC_COUNTED: usize = 1;
const OC_RECOVERED: usize = 2;
const OC_START_FULL: usize = 3;
const OC_OVERWRITTEN: usize = 4;
const OC_STALE: usize = 5;
const OC_NOT_PROFILED: usize = 6;
const OC_COUNTS_FULL: usize = 7;
const OC_SEND_LOST: usize = 8;
const OC_LOST_NS: usize = 9;
const OC_DROPPED_NS: usize = 10;
const OC_USER_STACK_ERROR: usize = 11;
const OC_KERNEL_STACK_ERROR: usize = 12;
const OC_NUM_COUNTERS: usize = 16;

// `struct offcpu_sample`.
const SAMPLE_USER_LEN_OFFSET: usize = 8;
const SAMPLE_KERNEL_LEN_OFFSET: usize = 12;
const SAMPLE_REASON_OFFSET: usize = 16;
const SAMPLE_VALUE_OFFSET: usize = 24;
const SAMPLE_LEAF_CALLER_OFFSET: usize = 32;
const SAMPLE_USER_OFFSET: usize = 40;
const SAMPLE_KERNEL_OFFSET: usize = SAMPLE_USER_OFFSET + MAX_USER_FRAMES * 8;
#[cfg(test)]
const SAMPLE_SIZE: usize = SAMPLE_KERNEL_OFFSET + MAX_STACK_DEPTH * 8;

/// The probability that one off-CPU event (a thread leaving a CPU until it runs again) is
/// recorded, as the kernel applies it: recorded when a uniform 32-bit random number is below
/// [`OffCpuThreshold::kernel_bound`], so the exact probability is `bound / 2^32`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OffCpuThreshold(u64);

impl OffCpuThreshold {
    /// Off: no off-CPU profile (the programs are not loaded).
    pub const OFF: OffCpuThreshold = OffCpuThreshold(0);
    /// Every off-CPU event.
    pub const ALL: OffCpuThreshold = OffCpuThreshold(1 << 32);

    /// The threshold for a probability in `0..=1`; anything else (or NaN) is an error. A
    /// positive probability below 2^-32 rounds up to the smallest the kernel can apply.
    pub fn from_probability(p: f64) -> Result<Self, ProbeError> {
        if !(0.0..=1.0).contains(&p) {
            return Err(ProbeError::Config(format!(
                "off_cpu_threshold must be between 0 and 1, got {p}"
            )));
        }
        let bound = (p * 4_294_967_296.0).round() as u64;
        Ok(OffCpuThreshold(if p > 0.0 { bound.max(1) } else { 0 }))
    }

    /// The probability the kernel applies.
    pub fn probability(self) -> f64 {
        self.0 as f64 / 4_294_967_296.0
    }

    /// Whether off-CPU profiling is off.
    pub fn is_off(self) -> bool {
        self.0 == 0
    }

    /// The bound the kernel compares its draw with.
    pub fn kernel_bound(self) -> u64 {
        self.0
    }

    /// The estimate of real off-CPU nanoseconds from recorded ones: `recorded / probability`,
    /// rounded (0 when off).
    pub fn estimate(self, recorded_nanos: u64) -> u64 {
        if self.0 == 0 {
            return 0;
        }
        ((recorded_nanos as u128 * (1u128 << 32) + u128::from(self.0) / 2) / u128::from(self.0))
            .min(u128::from(u64::MAX)) as u64
    }
}

/// What the off-CPU programs did in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffCpuCounters {
    /// Switch-outs drawn and recorded (threads of profiled processes).
    pub recorded: u64,
    /// Switch-ins whose off-CPU time went into the counts map.
    pub counted: u64,
    /// Switch-ins sent whole through the ring buffer (stack collision or full stack store).
    pub recovered: u64,
    /// Recorded (unscaled) off-CPU nanoseconds in the interval's samples.
    pub recorded_nanos: u64,
}

/// Off-CPU events lost or dropped in one interval, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffCpuLost {
    /// Switch-outs not recorded: the map of sleeping threads was full.
    pub sleeping_map_full: u64,
    /// Records replaced before their switch-in was seen.
    pub overwritten: u64,
    /// Switch-ins lost: the counts map was full.
    pub counts_map_full: u64,
    /// Switch-ins lost: they had to go through the ring buffer and it was full.
    pub ring_full: u64,
    /// Recorded nanoseconds of the switch-ins lost (the two above).
    pub lost_nanos: u64,
    /// Records of a thread that exited whose id a new thread now has (dropped, never added
    /// to the new thread).
    pub stale: u64,
    /// Records of processes that stopped being profiled while their thread slept (dropped).
    pub not_profiled: u64,
    /// Recorded nanoseconds of the dropped records.
    pub dropped_nanos: u64,
    /// Events counted without a user stack (a frame-pointer stack error).
    pub user_stack_errors: u64,
    /// Events counted without a kernel stack.
    pub kernel_stack_errors: u64,
    /// Stack ids referenced by off-CPU counts but missing when read (kept with an empty stack).
    pub missing_stacks: u64,
}

impl OffCpuLost {
    /// Off-CPU events lost outright (their time is in no profile).
    pub fn events(&self) -> u64 {
        self.sleeping_map_full + self.overwritten + self.counts_map_full + self.ring_full
    }

    /// Everything lost or degraded, for a single metric.
    pub fn total(&self) -> u64 {
        self.events() + self.user_stack_errors + self.kernel_stack_errors + self.missing_stacks
    }
}

/// The off-CPU profile of one interval.
#[derive(Debug, Clone, Default)]
pub struct OffCpuCollection {
    /// The threshold of the interval (off: no samples).
    pub threshold: OffCpuThreshold,
    /// One entry per distinct (pid, user stack, kernel stack); `count` is the estimated
    /// off-CPU time in nanoseconds (recorded nanoseconds / probability).
    pub samples: Vec<StackSample>,
    /// What the programs did.
    pub counters: OffCpuCounters,
    /// What was lost.
    pub lost: OffCpuLost,
}

impl OffCpuCollection {
    /// The estimated off-CPU nanoseconds of every sample.
    pub fn total_nanos(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}

/// An off-CPU value that arrived whole through the ring buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RawOffCpu {
    pub(crate) pid: u32,
    pub(crate) user: Vec<u64>,
    pub(crate) kernel: Vec<u64>,
    pub(crate) user_end: Option<WalkEnd>,
    pub(crate) nanos: u64,
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64s(bytes: &[u8], at: usize, n: usize) -> Option<Vec<u64>> {
    let raw = bytes.get(at..at + n * 8)?;
    raw.chunks_exact(8)
        .map(|c| c.try_into().ok().map(u64::from_ne_bytes))
        .collect()
}

/// Decodes an `EVENT_OFFCPU_SAMPLE` record; `None` for any other record.
pub(crate) fn parse_record(bytes: &[u8]) -> Option<RawOffCpu> {
    if read_u32(bytes, 0)? != EVENT_OFFCPU_SAMPLE {
        return None;
    }
    let pid = read_u32(bytes, 4)?;
    let reason = *bytes.get(SAMPLE_REASON_OFFSET)?;
    let limit = if reason == 0 {
        MAX_STACK_DEPTH
    } else {
        MAX_USER_FRAMES
    };
    let user_len = (read_u32(bytes, SAMPLE_USER_LEN_OFFSET)? as usize).min(limit);
    let kernel_len = (read_u32(bytes, SAMPLE_KERNEL_LEN_OFFSET)? as usize).min(MAX_STACK_DEPTH);
    let nanos = read_u64s(bytes, SAMPLE_VALUE_OFFSET, 1)?[0];
    let leaf_caller = read_u64s(bytes, SAMPLE_LEAF_CALLER_OFFSET, 1)?[0];
    let mut user = read_u64s(bytes, SAMPLE_USER_OFFSET, user_len)?;
    let kernel = read_u64s(bytes, SAMPLE_KERNEL_OFFSET, kernel_len)?;
    let user_end = if reason == 0 {
        super::abi::splice_leaf_caller(&mut user, leaf_caller);
        None
    } else {
        Some(WalkEnd::from_code(reason)?)
    };
    Some(RawOffCpu {
        pid,
        user,
        kernel,
        user_end,
        nanos,
    })
}

/// Sizes the off-CPU maps (one entry each when off-CPU profiling is off at load).
pub(crate) fn size_maps(loader: &mut EbpfLoader<'_>, config: &ProbeConfig) {
    let n = if config.off_cpu_threshold.is_off() {
        1
    } else {
        config.off_cpu_map_size
    };
    loader
        .map_max_entries(MAP_OFFCPU_SLEEPING, n)
        .map_max_entries(MAP_OFFCPU_COUNTS[0], n)
        .map_max_entries(MAP_OFFCPU_COUNTS[1], n);
}

/// The off-CPU maps and programs of a loaded probe.
pub(crate) struct OffCpu {
    config: Array<MapData, u64>,
    counts: [HashMap<MapData, SampleKey, u64>; 2],
    sleeping: HashMap<MapData, u32, [u64; 3]>,
    counters: PerCpuArray<MapData, u64>,
    threshold: OffCpuThreshold,
    /// Whether the programs are attached (they stay attached once they are).
    attached: bool,
    /// The switch-in program to attach (the table walk's when the probe walks tables).
    resume: &'static str,
    last: [u64; OC_NUM_COUNTERS],
}

fn map_error(map: &'static str, e: aya::maps::MapError) -> ProbeError {
    ProbeError::Map {
        map,
        source: Box::new(e),
    }
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, ProbeError> {
    let map = ebpf.take_map(name).ok_or_else(|| ProbeError::Load {
        context: format!("map {name} missing from the BPF object"),
        source: None,
    })?;
    T::try_from(map).map_err(|e| map_error(name, e))
}

impl OffCpu {
    /// Takes the maps and, for a threshold above 0, loads and attaches the programs.
    pub(crate) fn take(
        ebpf: &mut Ebpf,
        config: &ProbeConfig,
        unwinding: bool,
    ) -> Result<OffCpu, ProbeError> {
        let mut off_cpu = OffCpu {
            config: take(ebpf, MAP_OFFCPU_CONFIG)?,
            counts: [
                take(ebpf, MAP_OFFCPU_COUNTS[0])?,
                take(ebpf, MAP_OFFCPU_COUNTS[1])?,
            ],
            sleeping: take(ebpf, MAP_OFFCPU_SLEEPING)?,
            counters: take(ebpf, MAP_OFFCPU_COUNTERS)?,
            threshold: OffCpuThreshold::OFF,
            attached: false,
            resume: if unwinding {
                PROG_RESUME_UNWIND
            } else {
                PROG_RESUME
            },
            last: [0; OC_NUM_COUNTERS],
        };
        off_cpu.last = off_cpu.read_counters()?;
        off_cpu.set_threshold(ebpf, config.off_cpu_threshold)?;
        Ok(off_cpu)
    }

    /// The threshold in force.
    pub(crate) fn threshold(&self) -> OffCpuThreshold {
        self.threshold
    }

    /// Applies a new threshold: attaches the programs the first time it is above 0, then
    /// writes it for the kernel's draw (0 keeps them attached, recording nothing).
    pub(crate) fn set_threshold(
        &mut self,
        ebpf: &mut Ebpf,
        threshold: OffCpuThreshold,
    ) -> Result<(), ProbeError> {
        if !threshold.is_off() && !self.attached {
            attach(ebpf, self.resume)?;
            self.attached = true;
        }
        self.config
            .set(0, threshold.kernel_bound(), 0)
            .map_err(|e| map_error(MAP_OFFCPU_CONFIG, e))?;
        self.threshold = threshold;
        Ok(())
    }

    /// The counts map of a half, for the loader's batch drain.
    pub(crate) fn counts(&mut self, half: usize) -> &mut HashMap<MapData, SampleKey, u64> {
        &mut self.counts[half]
    }

    /// Threads recorded as off CPU and not back yet.
    pub(crate) fn sleeping(&self) -> usize {
        self.sleeping.keys().filter(Result::is_ok).count()
    }

    fn read_counters(&self) -> Result<[u64; OC_NUM_COUNTERS], ProbeError> {
        let mut totals = [0u64; OC_NUM_COUNTERS];
        for (index, total) in totals.iter_mut().enumerate() {
            let values = self
                .counters
                .get(&(index as u32), 0)
                .map_err(|e| map_error(MAP_OFFCPU_COUNTERS, e))?;
            *total = values.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(totals)
    }

    /// The counters since the previous call.
    pub(crate) fn interval_counters(&mut self) -> Result<(OffCpuCounters, OffCpuLost), ProbeError> {
        let now = self.read_counters()?;
        let mut d = [0u64; OC_NUM_COUNTERS];
        for (i, v) in d.iter_mut().enumerate() {
            *v = now[i].wrapping_sub(self.last[i]);
        }
        self.last = now;
        Ok(counters_from(&d))
    }
}

fn counters_from(d: &[u64; OC_NUM_COUNTERS]) -> (OffCpuCounters, OffCpuLost) {
    (
        OffCpuCounters {
            recorded: d[OC_RECORDED],
            counted: d[OC_COUNTED],
            recovered: d[OC_RECOVERED],
            recorded_nanos: 0,
        },
        OffCpuLost {
            sleeping_map_full: d[OC_START_FULL],
            overwritten: d[OC_OVERWRITTEN],
            counts_map_full: d[OC_COUNTS_FULL],
            ring_full: d[OC_SEND_LOST],
            lost_nanos: d[OC_LOST_NS],
            stale: d[OC_STALE],
            not_profiled: d[OC_NOT_PROFILED],
            dropped_nanos: d[OC_DROPPED_NS],
            user_stack_errors: d[OC_USER_STACK_ERROR],
            kernel_stack_errors: d[OC_KERNEL_STACK_ERROR],
            missing_stacks: 0,
        },
    )
}

fn load_error(context: String, e: impl std::error::Error + Send + Sync + 'static) -> ProbeError {
    ProbeError::Load {
        context,
        source: Some(Box::new(e)),
    }
}

/// The kernel symbol of `finish_task_switch` (compilers rename it, `finish_task_switch.isra.0`).
fn finish_task_switch_symbol() -> Result<String, ProbeError> {
    let text = std::fs::read_to_string("/proc/kallsyms")
        .map_err(|e| load_error("reading /proc/kallsyms".into(), e))?;
    symbol_in(&text).ok_or_else(|| ProbeError::Load {
        context: "finish_task_switch not found in /proc/kallsyms".into(),
        source: None,
    })
}

/// `finish_task_switch`, else its first renamed copy (`.isra.0`, `.part.0`), in kallsyms text.
fn symbol_in(kallsyms: &str) -> Option<String> {
    let mut renamed = None;
    for name in kallsyms.lines().filter_map(|l| l.split_whitespace().nth(2)) {
        if name == "finish_task_switch" {
            return Some(name.to_string());
        }
        if renamed.is_none() && name.starts_with("finish_task_switch.") {
            renamed = Some(name.to_string());
        }
    }
    renamed
}

fn attach(ebpf: &mut Ebpf, resume: &'static str) -> Result<(), ProbeError> {
    let btf = Btf::from_sys_fs().map_err(|e| load_error("reading the kernel BTF".into(), e))?;
    let switch: &mut BtfTracePoint = ebpf
        .program_mut(PROG_SWITCH)
        .ok_or_else(|| ProbeError::Load {
            context: format!("program {PROG_SWITCH} missing from the BPF object"),
            source: None,
        })?
        .try_into()
        .map_err(|e| load_error(PROG_SWITCH.into(), e))?;
    switch
        .load("sched_switch", &btf)
        .map_err(|e| load_error(format!("loading {PROG_SWITCH}"), e))?;
    switch
        .attach()
        .map_err(|e| load_error("attaching to sched_switch".into(), e))?;
    let symbol = finish_task_switch_symbol()?;
    let program: &mut KProbe = ebpf
        .program_mut(resume)
        .ok_or_else(|| ProbeError::Load {
            context: format!("program {resume} missing from the BPF object"),
            source: None,
        })?
        .try_into()
        .map_err(|e| load_error(resume.into(), e))?;
    program
        .load()
        .map_err(|e| load_error(format!("loading {resume}"), e))?;
    program
        .attach(&symbol, 0)
        .map_err(|e| load_error(format!("attaching a kprobe to {symbol}"), e))?;
    debug!(%symbol, program = resume, "off-CPU programs attached");
    Ok(())
}

#[cfg(test)]
mod tests;
