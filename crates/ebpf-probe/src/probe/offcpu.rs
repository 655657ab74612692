//! Off-CPU profiles, the user half of `bpf/offcpu.h`: the threshold ([`OffCpuThreshold`], a
//! probability kept as the kernel's 32-bit draw bound), loading and attaching
//! `offcpu_switch[_unwind]` (`tp_btf/sched_switch`), draining the double-buffered
//! `offcpu_counts0/1`, resolving their keys in the off-CPU stack stores (which are not double
//! buffered: an entry goes once no record or count used it for two collects), and the loss
//! counters. Values are scaled here: recorded nanoseconds / probability estimate the real
//! off-CPU time.

use std::collections::{HashMap as StdHashMap, HashSet};

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, StackTraceMap};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};
use tracing::debug;

use super::abi::{splice_leaf_caller, SampleKey, STORE_USTACKS};
use super::unwind_abi::{UserStack, WalkEnd};
use super::{stack_samples, ProbeConfig, ProbeError, StackCounts, StackSample};

pub(crate) const MAP_OFFCPU_CONFIG: &str = "offcpu_config";
pub(crate) const MAP_OFFCPU_SLEEPING: &str = "offcpu_sleeping";
pub(crate) const MAP_OFFCPU_COUNTS: [&str; 2] = ["offcpu_counts0", "offcpu_counts1"];
pub(crate) const MAP_OFFCPU_STACKS: &str = "offcpu_stacks";
pub(crate) const MAP_OFFCPU_USTACKS: &str = "offcpu_ustacks";
pub(crate) const MAP_OFFCPU_COUNTERS: &str = "offcpu_counters";
const PROG_SWITCH: &str = "offcpu_switch";
const PROG_SWITCH_UNWIND: &str = "offcpu_switch_unwind";

// Mirrors of bpf/offcpu.h (checked by a test).
const OC_RECORDED: usize = 0;
const OC_COUNTED: usize = 1;
const OC_START_FULL: usize = 2;
const OC_OVERWRITTEN: usize = 3;
const OC_STACK_LOST: usize = 4;
const OC_STALE: usize = 5;
const OC_NOT_PROFILED: usize = 6;
const OC_COUNTS_FULL: usize = 7;
const OC_LOST_NS: usize = 8;
const OC_DROPPED_NS: usize = 9;
const OC_USER_STACK_ERROR: usize = 10;
const OC_KERNEL_STACK_ERROR: usize = 11;
const OC_NUM_COUNTERS: usize = 16;

/// `struct offcpu_record` as six u64: ts, start_time, tgid | pad, then the sample key.
type Record = [u64; 6];

/// The sample key of a record.
fn record_key(r: &Record) -> SampleKey {
    SampleKey {
        pid: r[3] as u32,
        user_stack: (r[3] >> 32) as u32 as i32,
        kernel_stack: r[4] as u32 as i32,
        user_store: (r[4] >> 32) as u32,
        leaf_caller: r[5],
    }
}

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
    /// Switch-outs not recorded: their stack collided with another in the off-CPU stack
    /// stores, or the stores were full.
    pub stack_store_full: u64,
    /// Switch-ins lost: the counts map was full.
    pub counts_map_full: u64,
    /// Recorded nanoseconds of the switch-ins lost (the one above).
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
        self.sleeping_map_full + self.overwritten + self.stack_store_full + self.counts_map_full
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

/// Sizes the off-CPU maps (one entry each when off-CPU profiling is off at load): records and
/// counts `off_cpu_map_size`, kernel/frame-pointer stacks half of it, walked stacks a quarter.
pub(crate) fn size_maps(loader: &mut EbpfLoader<'_>, config: &ProbeConfig) {
    let n = if config.off_cpu_threshold.is_off() {
        1
    } else {
        config.off_cpu_map_size
    };
    let walked = if config.unwind { (n / 4).max(1) } else { 1 };
    loader
        .map_max_entries(MAP_OFFCPU_SLEEPING, n)
        .map_max_entries(MAP_OFFCPU_COUNTS[0], n)
        .map_max_entries(MAP_OFFCPU_COUNTS[1], n)
        .map_max_entries(MAP_OFFCPU_STACKS, (n / 2).max(1))
        .map_max_entries(MAP_OFFCPU_USTACKS, walked);
}

/// A stack store entry: a stack id or a walked stack's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum StoreKey {
    Stack(u32),
    Walked(u64),
}

fn store_keys(key: &SampleKey, out: &mut HashSet<StoreKey>) {
    if key.user_store == STORE_USTACKS {
        out.insert(StoreKey::Walked(key.leaf_caller));
    } else if key.user_stack >= 0 {
        out.insert(StoreKey::Stack(key.user_stack as u32));
    }
    if key.kernel_stack >= 0 {
        out.insert(StoreKey::Stack(key.kernel_stack as u32));
    }
}

/// The off-CPU maps and program of a loaded probe.
pub(crate) struct OffCpu {
    config: Array<MapData, u64>,
    counts: [HashMap<MapData, SampleKey, u64>; 2],
    sleeping: HashMap<MapData, u32, Record>,
    stacks: StackTraceMap<MapData>,
    ustacks: HashMap<MapData, u64, UserStack>,
    counters: PerCpuArray<MapData, u64>,
    threshold: OffCpuThreshold,
    /// Whether the program is attached (it stays attached once it is).
    attached: bool,
    /// The program to attach (the table walk's when the probe walks tables).
    program: &'static str,
    last: [u64; OC_NUM_COUNTERS],
    /// Store entries no record or count used at the last collect (removed at the next one if
    /// still unused).
    unused: HashSet<StoreKey>,
}

fn map_error(map: &'static str, e: MapError) -> ProbeError {
    ProbeError::Map {
        map,
        source: Box::new(e),
    }
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
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
    /// Takes the maps and, for a threshold above 0, loads and attaches the program.
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
            stacks: take(ebpf, MAP_OFFCPU_STACKS)?,
            ustacks: take(ebpf, MAP_OFFCPU_USTACKS)?,
            counters: take(ebpf, MAP_OFFCPU_COUNTERS)?,
            threshold: OffCpuThreshold::OFF,
            attached: false,
            program: if unwinding {
                PROG_SWITCH_UNWIND
            } else {
                PROG_SWITCH
            },
            last: [0; OC_NUM_COUNTERS],
            unused: HashSet::new(),
        };
        off_cpu.last = off_cpu.read_counters()?;
        off_cpu.set_threshold(ebpf, config.off_cpu_threshold)?;
        Ok(off_cpu)
    }

    /// Applies a new threshold: attaches the program the first time it is above 0, then
    /// writes it for the kernel's draw (0 keeps it attached, recording nothing).
    pub(crate) fn set_threshold(
        &mut self,
        ebpf: &mut Ebpf,
        threshold: OffCpuThreshold,
    ) -> Result<(), ProbeError> {
        if !threshold.is_off() && !self.attached {
            attach(ebpf, self.program)?;
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

    /// The interval's profile from the counts drained from the old half (`active` is the
    /// half written now), then the removal of store entries unused for two collects.
    pub(crate) fn collect(
        &mut self,
        counts: Vec<(SampleKey, u64)>,
        active: usize,
    ) -> Result<OffCpuCollection, ProbeError> {
        let (mut counters, mut lost) = self.interval_counters()?;
        let mut merged: StackCounts = StdHashMap::new();
        let mut cache: StdHashMap<u32, Option<Vec<u64>>> = StdHashMap::new();
        let mut used = HashSet::new();
        for (key, nanos) in counts {
            store_keys(&key, &mut used);
            let (user, user_end) = if key.user_store == STORE_USTACKS {
                match self.ustacks.get(&key.leaf_caller, 0) {
                    Ok(stack) => (stack.ips().to_vec(), WalkEnd::from_code(stack.reason)),
                    Err(_) => {
                        lost.missing_stacks += 1;
                        (Vec::new(), None)
                    }
                }
            } else {
                let mut user = self.stack(key.user_stack, &mut cache, &mut lost.missing_stacks);
                splice_leaf_caller(&mut user, key.leaf_caller);
                (user, None)
            };
            let kernel = self.stack(key.kernel_stack, &mut cache, &mut lost.missing_stacks);
            *merged.entry((key.pid, user, kernel, user_end)).or_default() += nanos;
        }
        counters.recorded_nanos = merged.values().sum();
        let threshold = self.threshold;
        let samples = stack_samples(merged)
            .into_iter()
            .map(|s| StackSample {
                count: threshold.estimate(s.count),
                ..s
            })
            .filter(|s| s.count > 0)
            .collect();
        self.collect_garbage(used, active)?;
        Ok(OffCpuCollection {
            threshold,
            samples,
            counters,
            lost,
        })
    }

    fn stack(
        &self,
        id: i32,
        cache: &mut StdHashMap<u32, Option<Vec<u64>>>,
        missing: &mut u64,
    ) -> Vec<u64> {
        if id < 0 {
            return Vec::new();
        }
        let found = cache.entry(id as u32).or_insert_with(|| {
            self.stacks
                .get(&(id as u32), 0)
                .ok()
                .map(|t| t.frames().iter().map(|f| f.ip).collect())
        });
        match found {
            Some(ips) => ips.clone(),
            None => {
                *missing += 1;
                Vec::new()
            }
        }
    }

    /// Removes the store entries that neither the drained counts (`used`), nor a record, nor
    /// the active half's counts use, and that were unused at the previous collect too.
    fn collect_garbage(
        &mut self,
        mut used: HashSet<StoreKey>,
        active: usize,
    ) -> Result<(), ProbeError> {
        for (_, record) in self.sleeping.iter().filter_map(Result::ok) {
            store_keys(&record_key(&record), &mut used);
        }
        for key in self.counts[active].keys().filter_map(Result::ok) {
            store_keys(&key, &mut used);
        }
        let ids: Vec<u32> = self.stacks.stack_ids().filter_map(Result::ok).collect();
        let hashes: Vec<u64> = self.ustacks.keys().filter_map(Result::ok).collect();
        let entries = ids
            .into_iter()
            .map(StoreKey::Stack)
            .chain(hashes.into_iter().map(StoreKey::Walked));
        let mut unused = HashSet::new();
        for entry in entries.filter(|e| !used.contains(e)) {
            if !self.unused.contains(&entry) {
                unused.insert(entry);
                continue;
            }
            let (map, removed) = match entry {
                StoreKey::Stack(id) => (MAP_OFFCPU_STACKS, self.stacks.remove(&id)),
                StoreKey::Walked(hash) => (MAP_OFFCPU_USTACKS, self.ustacks.remove(&hash)),
            };
            match removed {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(map_error(map, e)),
            }
        }
        self.unused = unused;
        Ok(())
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
    fn interval_counters(&mut self) -> Result<(OffCpuCounters, OffCpuLost), ProbeError> {
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
            recorded_nanos: 0,
        },
        OffCpuLost {
            sleeping_map_full: d[OC_START_FULL],
            overwritten: d[OC_OVERWRITTEN],
            stack_store_full: d[OC_STACK_LOST],
            counts_map_full: d[OC_COUNTS_FULL],
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

fn attach(ebpf: &mut Ebpf, name: &'static str) -> Result<(), ProbeError> {
    let btf = Btf::from_sys_fs().map_err(|e| load_error("reading the kernel BTF".into(), e))?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| ProbeError::Load {
            context: format!("program {name} missing from the BPF object"),
            source: None,
        })?
        .try_into()
        .map_err(|e| load_error(name.into(), e))?;
    program
        .load("sched_switch", &btf)
        .map_err(|e| load_error(format!("loading {name}"), e))?;
    program
        .attach()
        .map_err(|e| load_error("attaching to sched_switch".into(), e))?;
    debug!(program = name, "off-CPU program attached");
    Ok(())
}

#[cfg(test)]
mod tests;
