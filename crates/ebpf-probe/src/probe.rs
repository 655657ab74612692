//! Kernel side of `pyroscope.ebpf`: loads the committed BPF object (`bpf/profile.bpf.o`, built
//! from `bpf/profile.bpf.c` by `scripts/build-bpf.sh`) with aya, attaches it to the software
//! `cpu-clock` event of every online CPU and to the `sched_process_exit`/`sched_process_exec`
//! raw tracepoints, and hands out per-interval stack counts. Everything that touches the kernel
//! stays behind [`Probe`] (and the mockable [`SampleSource`] trait, see [`mock`]), so the user
//! side is tested without root.
//!
//! Stacks are leaf first; user frames other than the first are return addresses.

// reason: `aya::Pod` impls for the key/value structs shared with the C program, setrlimit(2)
// and the bpf(2) BPF_MAP_LOOKUP_AND_DELETE_BATCH command have no safe wrapper; each unsafe
// block carries its own SAFETY note.
#![allow(unsafe_code)]

pub mod mock;
pub mod unwind_abi;
pub mod unwind_maps;

use std::collections::HashMap as StdHashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aya::maps::{
    Array, HashMap, IterableMap, MapData, MapError, PerCpuArray, RingBuf, StackTraceMap,
};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::{PerfEvent, RawTracePoint};
use aya::{Ebpf, EbpfLoader};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{debug, warn};

/// The committed BPF object, embedded so that `cargo build` needs no clang.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/profile.bpf.o");

/// Prefix of the error message when the process lacks the privileges to load the probe.
pub const PERMISSION_MESSAGE_PREFIX: &str = "pyroscope.ebpf needs root or CAP_BPF+CAP_PERFMON";

/// Maximum number of frames per stack (the kernel's `PERF_MAX_STACK_DEPTH`, `MAX_STACK_DEPTH`
/// in the C program).
pub const MAX_STACK_DEPTH: usize = 127;

// Names shared with bpf/profile.bpf.c.
const PROG_PROFILE: &str = "profile_cpu";
const PROG_EXIT: &str = "on_process_exit";
const PROG_EXEC: &str = "on_process_exec";
const MAP_PID_CONFIG: &str = "pid_config";
const MAP_COUNTS: [&str; 2] = ["counts0", "counts1"];
const MAP_STACKS: [&str; 2] = ["stacks0", "stacks1"];
const MAP_CONTROL: &str = "control";
const MAP_COUNTERS: &str = "counters";
const MAP_EVENTS: &str = "events";

const PID_PENDING: u8 = 0;
const PID_PROFILE: u8 = 1;
const PID_IGNORE: u8 = 2;

const EVENT_UNKNOWN_PID: u32 = 1;
const EVENT_PID_EXIT: u32 = 2;
const EVENT_RAW_SAMPLE: u32 = 3;
const EVENT_PID_EXEC: u32 = 4;

// Indices into the per-CPU `counters` map (C_* in the C program).
const C_SAMPLES: u32 = 0;
const C_IDLE: u32 = 1;
const C_KTHREAD: u32 = 2;
const C_PENDING: u32 = 3;
const C_IGNORED: u32 = 4;
const C_USER_STACK_EMPTY: u32 = 5;
const C_KERNEL_STACK_EMPTY: u32 = 6;
const C_USER_STACK_ERROR: u32 = 7;
const C_KERNEL_STACK_ERROR: u32 = 8;
const C_COLLISIONS: u32 = 9;
const C_COLLISIONS_LOST: u32 = 10;
const C_COUNTS_FULL: u32 = 11;
const C_EVENTS_LOST: u32 = 12;
const C_PID_MAP_FULL: u32 = 13;
const NUM_COUNTERS: usize = 14;

/// How long `collect` waits after switching halves so that samples that read the old half
/// finish writing it (a BPF program run takes microseconds).
const HALF_SWITCH_GRACE: Duration = Duration::from_millis(2);

/// Entries per `BPF_MAP_LOOKUP_AND_DELETE_BATCH` call.
const BATCH_SIZE: usize = 4096;

/// Key of the `counts` maps (`struct sample_key`). Stack ids are -1 when absent.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct SampleKey {
    pid: u32,
    user_stack: i32,
    kernel_stack: i32,
    pad: u32,
    /// Return address into the caller of a frameless user leaf function that the
    /// frame-pointer walk skipped, 0 if none (see `find_leaf_caller` in the C program).
    leaf_caller: u64,
}

// SAFETY: repr(C), four 4-byte integers then one 8-byte integer, no implicit padding, every
// bit pattern valid.
unsafe impl aya::Pod for SampleKey {}

/// Value of the `pid_config` map (`struct pid_config`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PidConfigValue {
    state: u8,
    user: u8,
    kernel: u8,
    pad: u8,
}

// SAFETY: repr(C), four bytes, no padding, every bit pattern valid.
unsafe impl aya::Pod for PidConfigValue {}

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
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            sample_rate: 97,
            pid_map_size: 65536,
            counts_map_size: 32768,
            stack_map_size: 16384,
            ring_buffer_size: 512 * 1024,
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
        ] {
            if value == 0 {
                return Err(ProbeError::Config(format!("{name} must be greater than 0")));
            }
        }
        let page = page_size();
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

impl PidConfig {
    fn to_value(self) -> PidConfigValue {
        PidConfigValue {
            state: if self.profile {
                PID_PROFILE
            } else {
                PID_IGNORE
            },
            user: u8::from(self.user),
            kernel: u8::from(self.kernel),
            pad: 0,
        }
    }
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

/// The result of one [`Probe::collect`].
#[derive(Debug, Clone, Default)]
pub struct Collection {
    /// Counted stacks, one entry per distinct (pid, user stack, kernel stack).
    pub samples: Vec<StackSample>,
    /// Losses in the interval.
    pub lost: LostCounters,
    /// Other kernel counters for the interval.
    pub counters: SampleCounters,
    /// Time since the previous collect (or since load).
    pub duration: Duration,
}

impl Collection {
    /// Sum of all sample counts.
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}

/// Errors of the kernel side.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The process may not load BPF programs or open perf events.
    #[error("pyroscope.ebpf needs root or CAP_BPF+CAP_PERFMON: {0}")]
    Permission(String),
    /// An invalid [`ProbeConfig`].
    #[error("invalid probe configuration: {0}")]
    Config(String),
    /// [`Probe::load`] was called outside a tokio runtime.
    #[error("pyroscope.ebpf probe must be loaded inside a tokio runtime")]
    NoRuntime,
    /// Loading or attaching failed for another reason.
    #[error("loading the pyroscope.ebpf probe: {0}")]
    Load(String),
    /// A map operation failed.
    #[error("BPF map {map}: {message}")]
    Map {
        /// The map name.
        map: &'static str,
        /// What failed.
        message: String,
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
}

/// Counts keyed by (pid, user stack, kernel stack).
type StackCounts = StdHashMap<(u32, Vec<u64>, Vec<u64>), u64>;

/// State shared with the ring-buffer reader task.
struct Shared {
    ring: Mutex<RingBuf<MapData>>,
    /// Samples that arrived whole through the ring buffer (stack-map collisions), aggregated.
    raw: Mutex<StackCounts>,
    events: UnboundedSender<ProbeEvent>,
}

/// The loaded and attached BPF program.
pub struct Probe {
    /// Keeps the programs loaded and attached; dropping it detaches them.
    _ebpf: Ebpf,
    config: ProbeConfig,
    pid_config: HashMap<MapData, u32, PidConfigValue>,
    counts: [HashMap<MapData, SampleKey, u64>; 2],
    stacks: [StackTraceMap<MapData>; 2],
    control: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
    shared: Arc<Shared>,
    events_rx: Option<UnboundedReceiver<ProbeEvent>>,
    reader: tokio::task::JoinHandle<()>,
    half: u32,
    batch_supported: bool,
    last_counters: [u64; NUM_COUNTERS],
    last_collect: Instant,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("config", &self.config)
            .field("half", &self.half)
            .finish_non_exhaustive()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Probe {
    /// Loads the program, attaches it to every online CPU at `config.sample_rate` Hz and to
    /// process exit, and starts the event reader. Must run inside a tokio runtime.
    pub fn load(config: ProbeConfig) -> Result<Probe, ProbeError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ProbeError::NoRuntime)?;
        raise_memlock_rlimit();

        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_PID_CONFIG, config.pid_map_size)
            .map_max_entries(MAP_COUNTS[0], config.counts_map_size)
            .map_max_entries(MAP_COUNTS[1], config.counts_map_size)
            .map_max_entries(MAP_STACKS[0], config.stack_map_size)
            .map_max_entries(MAP_STACKS[1], config.stack_map_size)
            .map_max_entries(MAP_EVENTS, config.ring_buffer_size)
            .load(BPF_OBJECT)
            .map_err(|e| load_error("loading the BPF object", &e))?;

        let pid_config = HashMap::try_from(take_map(&mut ebpf, MAP_PID_CONFIG)?)
            .map_err(|e| map_error(MAP_PID_CONFIG, e))?;
        let counts = [
            HashMap::try_from(take_map(&mut ebpf, MAP_COUNTS[0])?)
                .map_err(|e| map_error(MAP_COUNTS[0], e))?,
            HashMap::try_from(take_map(&mut ebpf, MAP_COUNTS[1])?)
                .map_err(|e| map_error(MAP_COUNTS[1], e))?,
        ];
        let stacks = [
            StackTraceMap::try_from(take_map(&mut ebpf, MAP_STACKS[0])?)
                .map_err(|e| map_error(MAP_STACKS[0], e))?,
            StackTraceMap::try_from(take_map(&mut ebpf, MAP_STACKS[1])?)
                .map_err(|e| map_error(MAP_STACKS[1], e))?,
        ];
        let control = Array::try_from(take_map(&mut ebpf, MAP_CONTROL)?)
            .map_err(|e| map_error(MAP_CONTROL, e))?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, MAP_COUNTERS)?)
            .map_err(|e| map_error(MAP_COUNTERS, e))?;
        let ring = RingBuf::try_from(take_map(&mut ebpf, MAP_EVENTS)?)
            .map_err(|e| map_error(MAP_EVENTS, e))?;

        let exit: &mut RawTracePoint = ebpf
            .program_mut(PROG_EXIT)
            .ok_or_else(|| ProbeError::Load(format!("program {PROG_EXIT} missing")))?
            .try_into()
            .map_err(|e| load_error(PROG_EXIT, &e))?;
        exit.load()
            .map_err(|e| load_error("loading on_process_exit", &e))?;
        exit.attach("sched_process_exit")
            .map_err(|e| load_error("attaching to sched_process_exit", &e))?;

        let exec: &mut RawTracePoint = ebpf
            .program_mut(PROG_EXEC)
            .ok_or_else(|| ProbeError::Load(format!("program {PROG_EXEC} missing")))?
            .try_into()
            .map_err(|e| load_error(PROG_EXEC, &e))?;
        exec.load()
            .map_err(|e| load_error("loading on_process_exec", &e))?;
        exec.attach("sched_process_exec")
            .map_err(|e| load_error("attaching to sched_process_exec", &e))?;

        let profile: &mut PerfEvent = ebpf
            .program_mut(PROG_PROFILE)
            .ok_or_else(|| ProbeError::Load(format!("program {PROG_PROFILE} missing")))?
            .try_into()
            .map_err(|e| load_error(PROG_PROFILE, &e))?;
        profile
            .load()
            .map_err(|e| load_error("loading profile_cpu", &e))?;
        let cpus = aya::util::online_cpus()
            .map_err(|(path, e)| ProbeError::Load(format!("reading {path}: {e}")))?;
        for &cpu in &cpus {
            profile
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(config.sample_rate),
                    false,
                )
                .map_err(|e| load_error(&format!("attaching to cpu-clock on CPU {cpu}"), &e))?;
        }
        debug!(
            cpus = cpus.len(),
            sample_rate = config.sample_rate,
            "pyroscope.ebpf probe attached"
        );

        let (tx, rx) = unbounded_channel();
        let ring_fd = ring
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| ProbeError::Load(format!("duplicating the ring buffer fd: {e}")))?;
        let shared = Arc::new(Shared {
            ring: Mutex::new(ring),
            raw: Mutex::new(StdHashMap::new()),
            events: tx,
        });
        let async_fd = {
            let _guard = runtime.enter();
            // SAFETY: `ring_fd` is an OwnedFd moved into the AsyncFd, so the descriptor stays
            // open and refers to the same ring buffer for the AsyncFd's whole lifetime.
            unsafe { AsyncFd::register_with_interest(ring_fd, Interest::READABLE) }
                .map_err(|e| ProbeError::Load(format!("polling the ring buffer: {e}")))?
        };
        let reader = runtime.spawn(read_events(async_fd, Arc::clone(&shared)));

        let mut probe = Probe {
            _ebpf: ebpf,
            config,
            pid_config,
            counts,
            stacks,
            control,
            counters,
            shared,
            events_rx: Some(rx),
            reader,
            half: 0,
            batch_supported: true,
            last_counters: [0; NUM_COUNTERS],
            last_collect: Instant::now(),
        };
        probe.last_counters = probe.read_counters()?;
        Ok(probe)
    }

    /// The configuration the probe was loaded with.
    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// Tells the kernel what to collect for `pid`. If the process is already gone, its entry is
    /// removed again and a [`ProbeEvent::PidExit`] is sent, so that no stale entry waits for a
    /// reused pid.
    pub fn set_pid_config(&mut self, pid: u32, config: PidConfig) -> Result<(), ProbeError> {
        self.pid_config
            .insert(pid, config.to_value(), 0)
            .map_err(|e| map_error(MAP_PID_CONFIG, e))?;
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            self.remove_pid(pid)?;
            let _ = self.shared.events.send(ProbeEvent::PidExit(pid));
        }
        Ok(())
    }

    /// Forgets `pid`; its next sample reports it as unknown again.
    pub fn remove_pid(&mut self, pid: u32) -> Result<(), ProbeError> {
        match self.pid_config.remove(&pid) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(e) => Err(map_error(MAP_PID_CONFIG, e)),
        }
    }

    /// Pids reported as unknown that have no configuration yet (for resynchronisation after a
    /// lost event receiver).
    pub fn pending_pids(&self) -> Result<Vec<u32>, ProbeError> {
        let mut pids = Vec::new();
        for entry in self.pid_config.iter() {
            let (pid, value) = entry.map_err(|e| map_error(MAP_PID_CONFIG, e))?;
            if value.state == PID_PENDING {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    /// The receiver of unknown-pid and exit events; `None` after the first call.
    pub fn take_events(&mut self) -> Option<UnboundedReceiver<ProbeEvent>> {
        self.events_rx.take()
    }

    /// Switches the kernel to the other half of the maps, then reads and deletes the counts of
    /// the half it was writing (in batches), resolves their stack ids, clears that stack map and
    /// adds the samples that arrived whole through the ring buffer. Blocks for a few
    /// milliseconds: call it from a blocking context (`spawn_blocking`).
    pub fn collect(&mut self) -> Result<Collection, ProbeError> {
        let old = self.half as usize;
        self.half ^= 1;
        self.control
            .set(0, self.half, 0)
            .map_err(|e| map_error(MAP_CONTROL, e))?;
        std::thread::sleep(HALF_SWITCH_GRACE);

        let counts = self.drain_counts(old)?;
        let stacks = self.drain_stacks(old)?;
        drain_ring(&self.shared);

        let mut lost = LostCounters::default();
        let mut merged: StackCounts = StdHashMap::new();
        for (key, count) in counts {
            let mut user = resolve_stack(&stacks, key.user_stack, &mut lost);
            splice_leaf_caller(&mut user, key.leaf_caller);
            let kernel = resolve_stack(&stacks, key.kernel_stack, &mut lost);
            *merged.entry((key.pid, user, kernel)).or_default() += count;
        }
        for (key, count) in std::mem::take(&mut *lock(&self.shared.raw)) {
            *merged.entry(key).or_default() += count;
        }
        let samples = merged
            .into_iter()
            .map(|((pid, user, kernel), count)| StackSample {
                pid,
                user,
                kernel,
                count,
            })
            .collect();

        let now_counters = self.read_counters()?;
        let delta = counter_deltas(&self.last_counters, &now_counters);
        self.last_counters = now_counters;
        apply_counters(&delta, &mut lost);
        let now = Instant::now();
        let duration = now - self.last_collect;
        self.last_collect = now;
        Ok(Collection {
            samples,
            lost,
            counters: sample_counters(&delta),
            duration,
        })
    }

    fn drain_counts(&mut self, half: usize) -> Result<Vec<(SampleKey, u64)>, ProbeError> {
        let map = &mut self.counts[half];
        if self.batch_supported {
            let fd = map.map().fd().as_fd().as_raw_fd();
            match lookup_and_delete_batch(fd, BATCH_SIZE) {
                Ok(entries) => return Ok(entries),
                Err(BatchError::Unsupported(e)) => {
                    warn!(error = %e, "BPF_MAP_LOOKUP_AND_DELETE_BATCH unsupported, reading counts one by one");
                    self.batch_supported = false;
                }
                Err(BatchError::Io(e)) => {
                    return Err(ProbeError::Map {
                        map: MAP_COUNTS[half],
                        message: format!("batch lookup and delete: {e}"),
                    })
                }
            }
        }
        let keys: Vec<SampleKey> = map
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| map_error(MAP_COUNTS[half], e))?;
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            if let Ok(count) = map.get(&key, 0) {
                entries.push((key, count));
            }
            let _ = map.remove(&key);
        }
        Ok(entries)
    }

    fn drain_stacks(&mut self, half: usize) -> Result<StdHashMap<i32, Vec<u64>>, ProbeError> {
        let map = &mut self.stacks[half];
        let ids: Vec<u32> = map
            .stack_ids()
            .collect::<Result<_, _>>()
            .map_err(|e| map_error(MAP_STACKS[half], e))?;
        let mut stacks = StdHashMap::with_capacity(ids.len());
        for id in ids {
            match map.get(&id, 0) {
                Ok(trace) => {
                    let ips = trace.frames().iter().map(|f| f.ip).collect();
                    stacks.insert(id as i32, ips);
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error(MAP_STACKS[half], e)),
            }
            let _ = map.remove(&id);
        }
        Ok(stacks)
    }

    fn read_counters(&self) -> Result<[u64; NUM_COUNTERS], ProbeError> {
        let mut totals = [0u64; NUM_COUNTERS];
        for (index, total) in totals.iter_mut().enumerate() {
            let values = self
                .counters
                .get(&(index as u32), 0)
                .map_err(|e| map_error(MAP_COUNTERS, e))?;
            *total = values.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(totals)
    }
}

impl SampleSource for Probe {
    fn set_pid_config(&mut self, pid: u32, config: PidConfig) -> Result<(), ProbeError> {
        Probe::set_pid_config(self, pid, config)
    }

    fn remove_pid(&mut self, pid: u32) -> Result<(), ProbeError> {
        Probe::remove_pid(self, pid)
    }

    fn collect(&mut self) -> Result<Collection, ProbeError> {
        Probe::collect(self)
    }

    fn take_events(&mut self) -> Option<UnboundedReceiver<ProbeEvent>> {
        Probe::take_events(self)
    }

    fn pending_pids(&self) -> Result<Vec<u32>, ProbeError> {
        Probe::pending_pids(self)
    }
}

/// Puts the recovered caller of a frameless leaf right after the leaf.
fn splice_leaf_caller(user: &mut Vec<u64>, caller: u64) {
    if caller != 0 && !user.is_empty() && user.get(1) != Some(&caller) {
        user.insert(1, caller);
    }
}

fn resolve_stack(stacks: &StdHashMap<i32, Vec<u64>>, id: i32, lost: &mut LostCounters) -> Vec<u64> {
    if id < 0 {
        return Vec::new();
    }
    match stacks.get(&id) {
        Some(ips) => ips.clone(),
        None => {
            lost.missing_stacks += 1;
            Vec::new()
        }
    }
}

fn counter_deltas(
    before: &[u64; NUM_COUNTERS],
    after: &[u64; NUM_COUNTERS],
) -> [u64; NUM_COUNTERS] {
    let mut delta = [0; NUM_COUNTERS];
    for i in 0..NUM_COUNTERS {
        delta[i] = after[i].wrapping_sub(before[i]);
    }
    delta
}

fn apply_counters(delta: &[u64; NUM_COUNTERS], lost: &mut LostCounters) {
    lost.counts_map_full += delta[C_COUNTS_FULL as usize];
    lost.stack_collisions += delta[C_COLLISIONS_LOST as usize];
    lost.user_stack_errors += delta[C_USER_STACK_ERROR as usize];
    lost.kernel_stack_errors += delta[C_KERNEL_STACK_ERROR as usize];
    lost.events += delta[C_EVENTS_LOST as usize];
    lost.pid_map_full += delta[C_PID_MAP_FULL as usize];
}

fn sample_counters(delta: &[u64; NUM_COUNTERS]) -> SampleCounters {
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

/// A record from the ring buffer.
#[derive(Debug, PartialEq, Eq)]
enum Record {
    Event(ProbeEvent),
    Raw {
        pid: u32,
        user: Vec<u64>,
        kernel: Vec<u64>,
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

/// Offset of the user stack in `struct raw_sample` (after kind, pid, two lengths and
/// leaf_caller).
const RAW_STACKS_OFFSET: usize = 24;

fn read_ips(bytes: &[u8], offset: usize, len: usize) -> Option<Vec<u64>> {
    let raw = bytes.get(offset..offset + len * 8)?;
    Some(
        raw.chunks_exact(8)
            .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    )
}

/// Decodes one ring-buffer record (`struct pid_event` or `struct raw_sample`).
fn parse_record(bytes: &[u8]) -> Option<Record> {
    let kind = read_u32(bytes, 0)?;
    let pid = read_u32(bytes, 4)?;
    match kind {
        EVENT_UNKNOWN_PID => Some(Record::Event(ProbeEvent::UnknownPid(pid))),
        EVENT_PID_EXIT => Some(Record::Event(ProbeEvent::PidExit(pid))),
        EVENT_PID_EXEC => Some(Record::Event(ProbeEvent::PidExec(pid))),
        EVENT_RAW_SAMPLE => {
            let user_len = (read_u32(bytes, 8)? as usize).min(MAX_STACK_DEPTH);
            let kernel_len = (read_u32(bytes, 12)? as usize).min(MAX_STACK_DEPTH);
            let leaf_caller = read_u64(bytes, 16)?;
            let mut user = read_ips(bytes, RAW_STACKS_OFFSET, user_len)?;
            let kernel = read_ips(bytes, RAW_STACKS_OFFSET + MAX_STACK_DEPTH * 8, kernel_len)?;
            splice_leaf_caller(&mut user, leaf_caller);
            Some(Record::Raw { pid, user, kernel })
        }
        _ => None,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads every pending ring-buffer record: events go to the channel, whole samples to `raw`.
fn drain_ring(shared: &Shared) {
    let mut ring = lock(&shared.ring);
    while let Some(item) = ring.next() {
        match parse_record(&item) {
            Some(Record::Event(event)) => {
                let _ = shared.events.send(event);
            }
            Some(Record::Raw { pid, user, kernel }) => {
                *lock(&shared.raw).entry((pid, user, kernel)).or_default() += 1;
            }
            None => warn!(
                len = item.len(),
                "unknown record in the pyroscope.ebpf ring buffer"
            ),
        }
    }
}

/// Forwards ring-buffer records as they arrive. Tokio's readiness is edge-triggered and the
/// kernel only wakes readers that have caught up, so a periodic drain backs up the wakeups.
async fn read_events(async_fd: AsyncFd<OwnedFd>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = async_fd.readable() => match ready {
                Ok(mut guard) => guard.clear_ready(),
                Err(e) => {
                    warn!(error = %e, "polling the pyroscope.ebpf ring buffer failed");
                    return;
                }
            },
            _ = tick.tick() => {}
        }
        drain_ring(&shared);
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::Map {
        map: name,
        message: "missing from the BPF object".into(),
    })
}

fn map_error(map: &'static str, error: MapError) -> ProbeError {
    ProbeError::Map {
        map,
        message: error_chain(&error),
    }
}

/// `error: source: source...` in one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// The first OS error code in an error chain.
fn os_error_code(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        current = e.source();
    }
    None
}

/// Whether a load failure with `errno` means missing privileges. EPERM always does; EACCES
/// also comes from verifier rejections, so it counts only when the process lacks the
/// capabilities.
fn is_permission_error(errno: Option<i32>, privileged: bool) -> bool {
    match errno {
        Some(libc::EPERM) => true,
        Some(libc::EACCES) => !privileged,
        _ => false,
    }
}

fn load_error(context: &str, error: &(dyn std::error::Error + 'static)) -> ProbeError {
    let message = format!("{context}: {}", error_chain(error));
    if is_permission_error(os_error_code(error), has_bpf_capabilities()) {
        ProbeError::Permission(message)
    } else {
        ProbeError::Load(message)
    }
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether an effective capability mask (`CapEff:` of /proc/self/status) allows loading.
fn capabilities_allow_bpf(cap_eff: u64) -> bool {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

fn has_bpf_capabilities() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(capabilities_allow_bpf)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Lifts RLIMIT_MEMLOCK (kernels before 5.11 charge BPF maps to it). Failure is only logged:
/// newer kernels account BPF memory to the cgroup instead.
fn raise_memlock_rlimit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `limit` is a valid, initialised rlimit that outlives the call.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if ret != 0 {
        debug!(error = %io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK");
    }
}

/// `union bpf_attr` as used by the BPF_MAP_*_BATCH commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
/// The kernel-internal ENOTSUPP some map types return for batch commands.
const ENOTSUPP: i32 = 524;

#[derive(Debug)]
enum BatchError {
    Unsupported(io::Error),
    Io(io::Error),
}

/// Reads and deletes every entry of a `counts` map with BPF_MAP_LOOKUP_AND_DELETE_BATCH.
fn lookup_and_delete_batch(fd: RawFd, batch: usize) -> Result<Vec<(SampleKey, u64)>, BatchError> {
    let mut capacity = batch.max(1);
    let mut keys = vec![SampleKey::default(); capacity];
    let mut values = vec![0u64; capacity];
    let mut entries = Vec::new();
    // The hash map's batch token is a bucket index (u32); 8 bytes leave room.
    let mut in_token: u64 = 0;
    let mut out_token: u64 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut in_token as *mut u64 as u64
            },
            out_batch: &mut out_token as *mut u64 as u64,
            map_fd: fd as u32,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: capacity as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` describes buffers that are valid for `capacity` keys (12 bytes each,
        // the map's key size) and values (8 bytes each) and two 8-byte tokens, all of which
        // outlive the call; the kernel writes at most `count` entries.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let error = (ret != 0).then(io::Error::last_os_error);
        let n = (attr.count as usize).min(capacity);
        entries.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match error {
            None => {
                in_token = out_token;
                first = false;
            }
            Some(e) => match e.raw_os_error() {
                Some(libc::ENOENT) => return Ok(entries),
                Some(libc::ENOSPC) if n == 0 => {
                    // One bucket holds more entries than fit: retry with more room.
                    capacity *= 2;
                    keys.resize(capacity, SampleKey::default());
                    values.resize(capacity, 0);
                }
                Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) if first && n == 0 => {
                    return Err(BatchError::Unsupported(e))
                }
                _ => return Err(BatchError::Io(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_structs_match_the_c_layout() {
        assert_eq!(std::mem::size_of::<SampleKey>(), 24);
        assert_eq!(std::mem::size_of::<PidConfigValue>(), 4);
        assert_eq!(std::mem::size_of::<BatchAttr>(), 56);
    }

    #[test]
    fn pid_config_encoding() {
        let v = PidConfig {
            profile: true,
            user: true,
            kernel: false,
        }
        .to_value();
        assert_eq!((v.state, v.user, v.kernel), (PID_PROFILE, 1, 0));
        let v = PidConfig {
            profile: false,
            user: true,
            kernel: true,
        }
        .to_value();
        assert_eq!((v.state, v.user, v.kernel), (PID_IGNORE, 1, 1));
    }

    #[test]
    fn config_validation() {
        assert!(ProbeConfig::default().validate().is_ok());
        let err = ProbeConfig {
            sample_rate: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("sample_rate"), "{err}");
        let err = ProbeConfig {
            stack_map_size: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("stack_map_size"), "{err}");
        let err = ProbeConfig {
            ring_buffer_size: 3000,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("ring_buffer_size"), "{err}");
    }

    #[test]
    fn permission_error_message_prefix() {
        let err = ProbeError::Permission("loading the BPF object: Operation not permitted".into());
        assert!(
            err.to_string()
                .starts_with(&format!("{PERMISSION_MESSAGE_PREFIX}: ")),
            "{err}"
        );
    }

    #[test]
    fn permission_classification() {
        assert!(is_permission_error(Some(libc::EPERM), true));
        assert!(is_permission_error(Some(libc::EPERM), false));
        assert!(is_permission_error(Some(libc::EACCES), false));
        assert!(
            !is_permission_error(Some(libc::EACCES), true),
            "verifier rejection when root"
        );
        assert!(!is_permission_error(Some(libc::EINVAL), false));
        assert!(!is_permission_error(None, false));

        assert!(capabilities_allow_bpf(1 << CAP_SYS_ADMIN));
        assert!(capabilities_allow_bpf((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!capabilities_allow_bpf(1 << CAP_BPF));
        assert!(!capabilities_allow_bpf(0));

        let io = io::Error::from_raw_os_error(libc::EPERM);
        let wrapped = ProbeError::Load(error_chain(&io));
        assert_eq!(os_error_code(&io), Some(libc::EPERM));
        assert_eq!(os_error_code(&wrapped), None);
        match load_error("loading", &io) {
            ProbeError::Permission(m) => assert!(m.starts_with("loading: "), "{m}"),
            other => panic!("expected a permission error, got {other:?}"),
        }
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
        assert_eq!(raw.len(), RAW_STACKS_OFFSET + 2 * MAX_STACK_DEPTH * 8);
        assert_eq!(
            parse_record(&raw),
            Some(Record::Raw {
                pid: 9,
                user: vec![0x401000, 0x401100],
                kernel: vec![0xffffffff81000000]
            })
        );
        let raw = raw_record(9, &[0x401000, 0x401100], &[], 0x401234);
        assert_eq!(
            parse_record(&raw),
            Some(Record::Raw {
                pid: 9,
                user: vec![0x401000, 0x401234, 0x401100],
                kernel: vec![]
            })
        );
        assert_eq!(parse_record(&raw[..100]), None, "truncated record");
        assert_eq!(parse_record(&[1, 0, 0]), None);
        let mut bogus = 99u32.to_ne_bytes().to_vec();
        bogus.extend(1u32.to_ne_bytes());
        assert_eq!(parse_record(&bogus), None);
    }

    #[test]
    fn counters_become_interval_deltas() {
        let mut before = [0u64; NUM_COUNTERS];
        let mut after = [0u64; NUM_COUNTERS];
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

    #[test]
    fn stacks_resolve_or_count_missing() {
        let mut stacks = StdHashMap::new();
        stacks.insert(3, vec![1, 2, 3]);
        let mut lost = LostCounters::default();
        assert_eq!(resolve_stack(&stacks, 3, &mut lost), vec![1, 2, 3]);
        assert_eq!(resolve_stack(&stacks, -1, &mut lost), Vec::<u64>::new());
        assert_eq!(lost.missing_stacks, 0);
        assert_eq!(resolve_stack(&stacks, 4, &mut lost), Vec::<u64>::new());
        assert_eq!(lost.missing_stacks, 1);
    }

    #[tokio::test]
    async fn load_outside_privileges_or_runtime_reports_clearly() {
        // Outside a runtime: a clear error, not a panic.
        let err = std::thread::spawn(|| Probe::load(ProbeConfig::default()).unwrap_err())
            .join()
            .unwrap();
        assert!(matches!(err, ProbeError::NoRuntime), "{err}");
        let err = Probe::load(ProbeConfig {
            sample_rate: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, ProbeError::Config(_)), "{err}");
    }
}
