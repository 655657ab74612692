//! Kernel side of `pyroscope.ebpf`: loads the committed BPF object (`bpf/profile.bpf.o`, built
//! from `bpf/profile.bpf.c` by `scripts/build-bpf.sh`) with aya, attaches it to the software
//! `cpu-clock` event of every online CPU and to the `sched_process_exit`/`sched_process_exec`
//! raw tracepoints, and hands out per-interval stack counts. Everything that touches the kernel
//! stays behind [`Probe`] (and the mockable [`SampleSource`] trait, see [`mock`]), so the user
//! side is tested without root.
//!
//! This module holds the public API; `abi` mirrors what is shared with the C program, `loader`
//! loads and drives it with aya, and `sys` is the only place with unsafe code.
//!
//! Stacks are leaf first; user frames other than the first are return addresses.

mod abi;
mod ksym;
mod loader;
pub mod mock;
mod offcpu;
pub mod python_bpf;
mod sys;
pub mod unwind_abi;
mod unwind_bpf;
pub mod unwind_maps;

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

pub use abi::MAX_STACK_DEPTH;
pub use ksym::BpfKsymResolver;
pub use loader::Probe;
pub use offcpu::{OffCpuCollection, OffCpuCounters, OffCpuLost, OffCpuThreshold};
pub use unwind_abi::{WalkEnd, MAX_USER_FRAMES};
pub use unwind_maps::{FileTables, TableProvider, UnwindMapStats};

/// Prefix of the error message when the process lacks the privileges to load the probe.
pub const PERMISSION_MESSAGE_PREFIX: &str = "pyroscope.ebpf needs root or CAP_BPF+CAP_PERFMON";

/// Sizes and rate of a [`Probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Samples per second per CPU (perf frequency mode).
    pub sample_rate: u64,
    /// Processes the kernel can track (profiled, ignored or pending) at once.
    pub pid_map_size: u32,
    /// Distinct (pid, user stack, kernel stack) keys per interval, per half.
    pub counts_map_size: u32,
    /// Distinct stacks per interval, per half (user and kernel stacks share the map).
    pub stack_map_size: u32,
    /// Bytes of the event ring buffer (a power of two, at least one page).
    pub ring_buffer_size: u32,
    /// Walk user stacks in the kernel with unwind tables (`.eh_frame`) where a
    /// [`TableProvider`] gives them; needs kernel 5.17 (`bpf_loop`), else the probe falls back
    /// to frame pointers only. When false the unwind maps are created with one entry each.
    pub unwind: bool,
    /// Rows of unwind tables the kernel holds (8 bytes each), all files together.
    pub unwind_rows: u32,
    /// Executable mappings the kernel holds (32 bytes each), all processes together.
    pub unwind_mappings: u32,
    /// Tables (files) the kernel holds at once.
    pub unwind_tables: u32,
    /// Distinct table-walked user stacks per interval, per half (4 KiB each).
    pub ustack_map_size: u32,
    /// Record the Python frames of CPython processes walked with tables (their eval loop's
    /// native frames are replaced by the Python functions they run).
    pub python: bool,
    /// Off-CPU profiles: the probability that a thread leaving a CPU is recorded (off: no
    /// off-CPU programs are loaded). Change it while loaded with
    /// [`SampleSource::set_off_cpu_threshold`] (a probe loaded with it off cannot turn it on).
    pub off_cpu_threshold: OffCpuThreshold,
    /// Threads recorded as off CPU at once, and distinct off-CPU stacks per interval and half.
    pub off_cpu_map_size: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            sample_rate: 97,
            pid_map_size: 65536,
            counts_map_size: 32768,
            stack_map_size: 16384,
            ring_buffer_size: 512 * 1024,
            unwind: true,
            unwind_rows: 2 << 20,
            unwind_mappings: 128 << 10,
            unwind_tables: 16384,
            ustack_map_size: 4096,
            python: true,
            off_cpu_threshold: OffCpuThreshold::OFF,
            off_cpu_map_size: 16384,
        }
    }
}

impl ProbeConfig {
    /// Checks the values the kernel would reject, with a message naming the field.
    pub fn validate(&self) -> Result<(), ProbeError> {
        if self.sample_rate == 0 {
            return Err(ProbeError::Config(
                "sample_rate must be greater than 0".into(),
            ));
        }
        for (name, value) in [
            ("pid_map_size", self.pid_map_size),
            ("counts_map_size", self.counts_map_size),
            ("stack_map_size", self.stack_map_size),
            ("unwind_rows", self.unwind_rows),
            ("unwind_mappings", self.unwind_mappings),
            ("unwind_tables", self.unwind_tables),
            ("ustack_map_size", self.ustack_map_size),
            ("off_cpu_map_size", self.off_cpu_map_size),
        ] {
            if value == 0 {
                return Err(ProbeError::Config(format!("{name} must be greater than 0")));
            }
        }
        let page = sys::page_size();
        if !self.ring_buffer_size.is_power_of_two() || (self.ring_buffer_size as usize) < page {
            return Err(ProbeError::Config(format!(
                "ring_buffer_size must be a power of two of at least {page} bytes, got {}",
                self.ring_buffer_size
            )));
        }
        Ok(())
    }
}

/// What the kernel collects for one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PidConfig {
    /// Count samples of this process; when false its samples are skipped in the kernel.
    pub profile: bool,
    /// Collect user-space stacks.
    pub user: bool,
    /// Collect kernel stacks.
    pub kernel: bool,
}

/// Process notifications from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProbeEvent {
    /// A process was sampled that has no configuration yet; answer with
    /// [`Probe::set_pid_config`]. Reported once per process (until it gets a configuration or
    /// is removed).
    UnknownPid(u32),
    /// A process the kernel knew about exited; it has left the kernel's maps. Its samples of
    /// the current interval still arrive with the next collect.
    PidExit(u32),
    /// A process the kernel knows about called exec: same pid and configuration, new program
    /// (symbol caches keyed by pid are stale).
    PidExec(u32),
}

/// One stack of one process with its sample count in the interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSample {
    /// Process id (tgid) in the root pid namespace.
    pub pid: u32,
    /// User-space instruction pointers, leaf first (empty when not collected or unavailable).
    pub user: Vec<u64>,
    /// Kernel instruction pointers, leaf first (empty when the sample was in user mode).
    pub kernel: Vec<u64>,
    /// Number of samples.
    pub count: u64,
    /// How the in-kernel table walk of the user stack ended; `None` when the kernel's
    /// frame-pointer walk took it. An incomplete walk keeps the frames it has: show
    /// [`WalkEnd::marker`] after them.
    pub user_end: Option<WalkEnd>,
}

/// Samples (or parts of them) lost in one interval, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LostCounters {
    /// Samples dropped because the counts map was full.
    pub counts_map_full: u64,
    /// Samples whose stacks collided in the stack map and could not be sent whole through the
    /// ring buffer either (it was full).
    pub stack_collisions: u64,
    /// Samples counted with an empty user stack because `bpf_get_stackid` failed (not a
    /// collision and not a missing stack).
    pub user_stack_errors: u64,
    /// Same for kernel stacks.
    pub kernel_stack_errors: u64,
    /// Stack ids referenced by counts but missing from the stack map when read (kept as
    /// samples with an empty stack).
    pub missing_stacks: u64,
    /// Unknown-pid or exit events lost because the ring buffer was full (unknown pids are
    /// retried on their next sample).
    pub events: u64,
    /// Unknown pids that could not be marked pending because the pid map was full.
    pub pid_map_full: u64,
}

impl LostCounters {
    /// Whole samples lost (not counted at all).
    pub fn samples(&self) -> u64 {
        self.counts_map_full + self.stack_collisions
    }

    /// Everything lost or degraded, for a single "lost samples" metric.
    pub fn total(&self) -> u64 {
        self.counts_map_full
            + self.stack_collisions
            + self.user_stack_errors
            + self.kernel_stack_errors
            + self.missing_stacks
    }
}

/// What the kernel saw in one interval besides the counted stacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampleCounters {
    /// Samples counted in the counts map (before the double-buffer read).
    pub counted: u64,
    /// Samples whose stacks collided in the stack map and were sent whole instead.
    pub collisions_recovered: u64,
    /// Idle-task samples (pid 0).
    pub idle: u64,
    /// Kernel-thread samples (skipped).
    pub kernel_threads: u64,
    /// Samples of processes waiting for a configuration (not counted).
    pub pending: u64,
    /// Samples of processes configured not to be profiled.
    pub ignored: u64,
    /// Samples without a user stack.
    pub user_stack_empty: u64,
    /// Samples without a kernel stack (taken in user mode).
    pub kernel_stack_empty: u64,
}

/// The in-kernel table walks of one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindCounters {
    /// Walks by how they ended, indexed by `WalkEnd as usize - 1` (see [`WalkEnd::ALL`]).
    pub ends: [u64; 7],
    /// Walks that took at least one frame-pointer step (mappings or ranges without CFI).
    pub frame_pointer_used: u64,
    /// Walked stacks sent whole through the ring buffer: another stack had their hash.
    pub ustack_collisions: u64,
    /// Walked stacks sent whole through the ring buffer: the `ustacks` map was full.
    pub ustack_full: u64,
    /// Requests to re-read a process's mappings (a pc outside every known mapping).
    pub reread_requests: u64,
    /// Python frames recorded (see `bpf/python.h`).
    pub python_frames: u64,
    /// Walks in a CPython eval loop whose thread state was not found.
    pub python_no_thread: u64,
    /// Walks whose Python frames stopped at an unreadable frame.
    pub python_read_failed: u64,
    /// Copies of the user stack (the walk's stack window, `bpf/walk.h`) cut at the end of a page
    /// because the stack ends inside the window: a path, not a loss.
    pub stack_window_short: u64,
}

impl UnwindCounters {
    /// Walks that ended with `end`.
    pub fn ended(&self, end: WalkEnd) -> u64 {
        self.ends[end as usize - 1]
    }

    /// All walks.
    pub fn walks(&self) -> u64 {
        self.ends.iter().sum()
    }
}

/// The result of one [`Probe::collect`].
#[derive(Debug, Clone, Default)]
pub struct Collection {
    /// Counted stacks, one entry per distinct (pid, user stack, kernel stack).
    pub samples: Vec<StackSample>,
    /// Losses in the interval.
    pub lost: LostCounters,
    /// Other kernel counters for the interval.
    pub counters: SampleCounters,
    /// The table walks of the interval.
    pub unwind: UnwindCounters,
    /// The user-space side of unwinding now (processes, tables, rows in the kernel).
    pub unwind_maps: UnwindMapStats,
    /// Time since the previous collect (or since load).
    pub duration: Duration,
    /// CPython versions met since load that have no offsets (their stacks stay native).
    pub python_unsupported: Vec<String>,
    /// The off-CPU profile of the interval (empty when off).
    pub off_cpu: OffCpuCollection,
}

impl Collection {
    /// Sum of all sample counts.
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}

/// The cause of a [`ProbeError`] (an aya, map or OS error), kept for callers to format as a
/// chain.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Counts keyed by (pid, user stack, kernel stack).
type StackCounts = std::collections::HashMap<(u32, Vec<u64>, Vec<u64>, Option<WalkEnd>), u64>;

/// The samples of aggregated counts.
fn stack_samples(counts: StackCounts) -> Vec<StackSample> {
    counts
        .into_iter()
        .map(|((pid, user, kernel, user_end), count)| StackSample {
            pid,
            user,
            kernel,
            count,
            user_end,
        })
        .collect()
}

/// Errors of the kernel side. The underlying error is the [`std::error::Error::source`]; format
/// the whole chain for people.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The process may not load BPF programs or open perf events.
    #[error("{PERMISSION_MESSAGE_PREFIX}: {context}")]
    Permission {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: Cause,
    },
    /// An invalid [`ProbeConfig`].
    #[error("invalid probe configuration: {0}")]
    Config(String),
    /// [`Probe::load`] was called outside a tokio runtime.
    #[error("pyroscope.ebpf probe must be loaded inside a tokio runtime")]
    NoRuntime,
    /// Loading or attaching failed for another reason.
    #[error("loading the pyroscope.ebpf probe: {context}")]
    Load {
        /// What was being done (or what is missing).
        context: String,
        /// Why it failed, when another error says so.
        #[source]
        source: Option<Cause>,
    },
    /// A map operation failed.
    #[error("BPF map {map}")]
    Map {
        /// The map name.
        map: &'static str,
        /// What failed.
        #[source]
        source: Cause,
    },
}

/// The interface the component uses, so that it can be driven by a mock in tests.
pub trait SampleSource: Send {
    /// Tells the kernel what to collect for `pid` (answers [`ProbeEvent::UnknownPid`]).
    fn set_pid_config(&mut self, pid: u32, config: PidConfig) -> Result<(), ProbeError>;
    /// Forgets `pid` (its next sample reports it as unknown again).
    fn remove_pid(&mut self, pid: u32) -> Result<(), ProbeError>;
    /// Reads and clears the counts of the interval.
    fn collect(&mut self) -> Result<Collection, ProbeError>;
    /// Takes the event receiver; `None` after the first call.
    fn take_events(&mut self) -> Option<UnboundedReceiver<ProbeEvent>>;
    /// Pids reported as unknown and not answered yet (to resynchronise after lost events).
    fn pending_pids(&self) -> Result<Vec<u32>, ProbeError>;
    /// A resolver that names kernel addresses in the kernel (a new one at each call), if this
    /// source has one; without it the symbolizer reads `/proc/kallsyms`.
    fn kernel_resolver(&mut self) -> Option<Box<dyn crate::symbolize::ksym::KernelResolver>> {
        None
    }
    /// Changes the off-CPU threshold; it applies to switch-outs from now on (collect first so
    /// that an interval has one threshold). Sources without off-CPU profiles refuse.
    fn set_off_cpu_threshold(&mut self, threshold: OffCpuThreshold) -> Result<(), ProbeError> {
        Err(ProbeError::Config(format!(
            "this sample source has no off-CPU profiles (threshold {})",
            threshold.probability()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert!(ProbeConfig::default().validate().is_ok());
        let base = ProbeConfig::default();
        for (field, config) in [
            (
                "sample_rate",
                ProbeConfig {
                    sample_rate: 0,
                    ..base.clone()
                },
            ),
            (
                "stack_map_size",
                ProbeConfig {
                    stack_map_size: 0,
                    ..base.clone()
                },
            ),
            (
                "ring_buffer_size",
                ProbeConfig {
                    ring_buffer_size: 3000,
                    ..base.clone()
                },
            ),
        ] {
            let err = config.validate().unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn permission_error_message_prefix() {
        let err = ProbeError::Permission {
            context: "loading the BPF object".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM).into(),
        };
        assert!(
            err.to_string()
                .starts_with(&format!("{PERMISSION_MESSAGE_PREFIX}: ")),
            "{err}"
        );
    }
}
