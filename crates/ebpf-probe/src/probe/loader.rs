//! Loading and running the BPF program with aya: the embedded object, its map and program
//! names, attaching to `cpu-clock` on every online CPU and to the exit/exec tracepoints, the
//! ring-buffer reader task, and [`Probe`], which owns the maps and reads one interval per
//! [`Probe::collect`]. Load failures are classified (missing privileges or not) here.

use std::collections::{HashMap as StdHashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aya::maps::{
    Array, HashMap, IterableMap, MapData, MapError, PerCpuArray, RingBuf, StackTraceMap,
};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::{PerfEvent, RawTracePoint};
use aya::{Ebpf, EbpfLoader};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{debug, warn, Instrument};

use crate::symbolize::ksym::KernelResolver;

use super::abi::{
    apply_counters, counter_deltas, parse_record, sample_counters, splice_leaf_caller,
    unwind_counters, Counters, PidConfigValue, Record, SampleKey, C_NUM_COUNTERS, PID_PENDING,
    STORE_USTACKS,
};
use super::ksym::BpfKsymResolver;
use super::offcpu::{self, OffCpu, OffCpuThreshold};
use super::sys::{self, BatchError};
use super::unwind_abi::{WalkEnd, WalkedStack};
use super::unwind_bpf::{
    cfi_tables, lock, refresh_or_forget, spawn_rereads, Unwinder, UserStacks, MAP_PYTHON_PROCS,
    MAP_UNWIND_MAPPINGS, MAP_UNWIND_PROCS, MAP_UNWIND_ROWS, MAP_UNWIND_TABLES, MAP_USTACKS,
};
use super::unwind_maps::TableProvider;
use super::{
    stack_samples, Collection, LostCounters, PidConfig, ProbeConfig, ProbeError, ProbeEvent,
    SampleSource, StackCounts,
};

/// The `.rodata` constant of bpf/python.h that turns the Python frames of the walk on.
const GLOBAL_PYTHON_ENABLED: &str = "python_enabled";
/// The committed BPF object, embedded so that `cargo build` needs no clang.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/profile.bpf.o");

// Names shared with bpf/profile.bpf.c.
const PROG_PROFILE: &str = "profile_cpu";
const PROG_PROFILE_UNWIND: &str = "profile_cpu_unwind";
const PROG_EXIT: &str = "on_process_exit";
const PROG_EXEC: &str = "on_process_exec";
const MAP_PID_CONFIG: &str = "pid_config";
const MAP_COUNTS: [&str; 2] = ["counts0", "counts1"];
const MAP_STACKS: [&str; 2] = ["stacks0", "stacks1"];
const MAP_CONTROL: &str = "control";
const MAP_CONFIG_GEN: &str = "config_gen";
const MAP_COUNTERS: &str = "counters";
const MAP_EVENTS: &str = "events";

/// CPython processes the kernel records Python frames of at once (`python_procs`).
const PYTHON_PROCS: u32 = 4096;

/// How long `collect` waits after switching halves so that samples that read the old half
/// finish writing it (a BPF program run takes microseconds).
const HALF_SWITCH_GRACE: Duration = Duration::from_millis(2);

/// Entries per `BPF_MAP_LOOKUP_AND_DELETE_BATCH` call.
const BATCH_SIZE: usize = 4096;

/// State shared with the ring-buffer reader task.
struct Shared {
    ring: Mutex<Ring>,
    events: UnboundedSender<ProbeEvent>,
    /// The re-read worker's queue: processes whose mappings the table walk needs re-read
    /// (exec, unknown pc). `None` without the table walk.
    rereads: Option<std::sync::mpsc::Sender<u32>>,
}

/// The ring buffer and what was read from it, behind one lock.
struct Ring {
    buffer: RingBuf<MapData>,
    /// Samples that arrived whole through the ring buffer (stack-map collisions), aggregated.
    raw: StackCounts,
    /// Processes that exited: the table walk forgets them after the next collect.
    exits: HashSet<u32>,
}

impl Shared {
    /// Reads every pending ring-buffer record: events go to the channel, whole samples are
    /// added to `raw`, which is returned locked.
    fn drain(&self) -> MutexGuard<'_, Ring> {
        // A panic elsewhere cannot leave the ring half-updated: take it even if poisoned.
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let Ring { buffer, raw, exits } = &mut *ring;
        let reread = |pid: u32| {
            if let Some(queue) = &self.rereads {
                // The worker ends only with the probe.
                let _ = queue.send(pid);
            }
        };
        while let Some(item) = buffer.next() {
            match parse_record(&item) {
                Some(Record::Event(event)) => {
                    match event {
                        ProbeEvent::PidExec(pid) => reread(pid),
                        ProbeEvent::PidExit(pid) => {
                            exits.insert(pid);
                        }
                        _ => {}
                    }
                    let _ = self.events.send(event);
                }
                Some(Record::Reread(pid)) => reread(pid),
                Some(Record::Raw {
                    pid,
                    user,
                    kernel,
                    user_end,
                }) => {
                    *raw.entry((pid, user, kernel, user_end)).or_default() += 1;
                }
                None => warn!(
                    len = item.len(),
                    "unknown record in the pyroscope.ebpf ring buffer"
                ),
            }
        }
        ring
    }
}

/// The loaded and attached BPF program.
pub struct Probe {
    /// Keeps the programs loaded and attached; dropping it detaches them.
    ebpf: Ebpf,
    /// The perf_event program attached (`profile_cpu` or `profile_cpu_unwind`).
    program: &'static str,
    config: ProbeConfig,
    pid_config: HashMap<MapData, u32, PidConfigValue>,
    counts: [HashMap<MapData, SampleKey, u64>; 2],
    stacks: [StackTraceMap<MapData>; 2],
    control: Array<MapData, u32>,
    /// `config_gen`: raised after every write of `pid_config` (and, by the unwinder, of
    /// `unwind_procs`), so that the sampler's per-CPU copies of them are not used again.
    config_gen: Arc<sys::SharedCounter>,
    /// The map itself (its descriptor must stay open while the programs that use it load).
    _config_gen_map: Array<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    /// The table walk, when `profile_cpu_unwind` runs (shared with the re-read worker).
    unwinder: Option<Arc<Mutex<Unwinder>>>,
    /// Where the table walk stores the stacks it walked, when it runs.
    ustacks: Option<UserStacks>,
    shared: Arc<Shared>,
    events_rx: Option<UnboundedReceiver<ProbeEvent>>,
    reader: tokio::task::JoinHandle<()>,
    half: u32,
    batch_supported: bool,
    last_counters: Counters,
    last_collect: Instant,
    /// The off-CPU maps and programs.
    off_cpu: OffCpu,
    /// `ksym_resolve` and `ksym_names`, when the kernel took the program.
    ksym: Option<(OwnedFd, OwnedFd)>,
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
        sys::raise_memlock_rlimit();

        // Without the table walk its maps stay as small as the kernel allows.
        let sized = |n: u32| if config.unwind { n } else { 1 };
        let python = config.unwind && config.python;
        let sized_python = |n: u32| if python { n } else { 1 };
        let mut loader = EbpfLoader::new();
        offcpu::size_maps(&mut loader, &config);
        // A constant of the loaded programs: with Python frames off no sample looks up
        // python_procs (the verifier drops that code).
        let python_enabled = u8::from(python);
        loader.override_global(GLOBAL_PYTHON_ENABLED, &python_enabled, true);
        let mut ebpf = loader
            .map_max_entries(MAP_UNWIND_PROCS, sized(config.pid_map_size))
            .map_max_entries(MAP_UNWIND_MAPPINGS, sized(config.unwind_mappings))
            .map_max_entries(MAP_UNWIND_TABLES, sized(config.unwind_tables))
            .map_max_entries(MAP_UNWIND_ROWS, sized(config.unwind_rows))
            .map_max_entries(MAP_PYTHON_PROCS, sized_python(PYTHON_PROCS))
            .map_max_entries(MAP_USTACKS[0], sized(config.ustack_map_size))
            .map_max_entries(MAP_USTACKS[1], sized(config.ustack_map_size))
            .map_max_entries(MAP_PID_CONFIG, config.pid_map_size)
            .map_max_entries(MAP_COUNTS[0], config.counts_map_size)
            .map_max_entries(MAP_COUNTS[1], config.counts_map_size)
            .map_max_entries(MAP_STACKS[0], config.stack_map_size)
            .map_max_entries(MAP_STACKS[1], config.stack_map_size)
            .map_max_entries(MAP_EVENTS, config.ring_buffer_size)
            .load(BPF_OBJECT)
            .map_err(|e| load_error("loading the BPF object", e))?;

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
        // The programs loaded below refer to the map by this descriptor: it stays open.
        let config_gen_map: Array<MapData, u64> =
            Array::try_from(take_map(&mut ebpf, MAP_CONFIG_GEN)?)
                .map_err(|e| map_error(MAP_CONFIG_GEN, e))?;
        let config_gen = Arc::new(
            sys::SharedCounter::map(config_gen_map.map().fd().as_fd().as_raw_fd())
                .map_err(|e| load_error("mapping config_gen", e))?,
        );
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, MAP_COUNTERS)?)
            .map_err(|e| map_error(MAP_COUNTERS, e))?;
        let ring = RingBuf::try_from(take_map(&mut ebpf, MAP_EVENTS)?)
            .map_err(|e| map_error(MAP_EVENTS, e))?;

        let exit: &mut RawTracePoint = ebpf
            .program_mut(PROG_EXIT)
            .ok_or_else(|| missing("program", PROG_EXIT))?
            .try_into()
            .map_err(|e| load_error(PROG_EXIT, e))?;
        exit.load()
            .map_err(|e| load_error("loading on_process_exit", e))?;
        exit.attach("sched_process_exit")
            .map_err(|e| load_error("attaching to sched_process_exit", e))?;

        let exec: &mut RawTracePoint = ebpf
            .program_mut(PROG_EXEC)
            .ok_or_else(|| missing("program", PROG_EXEC))?
            .try_into()
            .map_err(|e| load_error(PROG_EXEC, e))?;
        exec.load()
            .map_err(|e| load_error("loading on_process_exec", e))?;
        exec.attach("sched_process_exec")
            .map_err(|e| load_error("attaching to sched_process_exec", e))?;

        // Kernel addresses named by the kernel; without it, /proc/kallsyms.
        let ksym = match super::ksym::load(&mut ebpf) {
            Ok(fds) => Some(fds),
            Err(e) => {
                warn!(error = %e, "the kernel cannot name kernel addresses for rill; /proc/kallsyms will be read");
                None
            }
        };

        // The table walk needs bpf_loop (5.17); older kernels reject it and get frame pointers.
        let unwinding = config.unwind
            && match load_perf_program(&mut ebpf, PROG_PROFILE_UNWIND) {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, "in-kernel unwinding unavailable (needs Linux 5.17), using frame pointers only");
                    false
                }
            };
        let program = if unwinding {
            PROG_PROFILE_UNWIND
        } else {
            load_perf_program(&mut ebpf, PROG_PROFILE)?;
            PROG_PROFILE
        };
        let (unwinder, ustacks, rereads) = if unwinding {
            let mut unwinder = Unwinder::take(
                &mut ebpf,
                Arc::clone(&config_gen),
                config.unwind_rows,
                config.unwind_mappings,
                config.unwind_tables,
            )?;
            unwinder.set_provider(cfi_tables());
            if config.python {
                unwinder.enable_python(&mut ebpf)?;
            }
            let unwinder = Arc::new(Mutex::new(unwinder));
            let rereads = spawn_rereads(Arc::downgrade(&unwinder))
                .map_err(|e| load_error("starting the unwind re-read thread", e))?;
            (
                Some(unwinder),
                Some(UserStacks::take(&mut ebpf)?),
                Some(rereads),
            )
        } else {
            (None, None, None)
        };
        let off_cpu = OffCpu::take(&mut ebpf, &config, unwinding)?;
        let profile: &mut PerfEvent = ebpf
            .program_mut(program)
            .ok_or_else(|| missing("program", program))?
            .try_into()
            .map_err(|e| load_error(program, e))?;
        let cpus = aya::util::online_cpus()
            .map_err(|(path, e)| load_error(format!("reading {path}"), e))?;
        for &cpu in &cpus {
            profile
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(config.sample_rate),
                    false,
                )
                .map_err(|e| load_error(format!("attaching to cpu-clock on CPU {cpu}"), e))?;
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
            .map_err(|e| load_error("duplicating the ring buffer fd", e))?;
        let shared = Arc::new(Shared {
            ring: Mutex::new(Ring {
                buffer: ring,
                raw: StackCounts::new(),
                exits: HashSet::new(),
            }),
            events: tx,
            rereads,
        });
        let async_fd = {
            let _guard = runtime.enter();
            sys::poll_readable(ring_fd).map_err(|e| load_error("polling the ring buffer", e))?
        };
        let reader = runtime.spawn(read_events(async_fd, Arc::clone(&shared)).in_current_span());

        let mut probe = Probe {
            ebpf,
            program,
            config,
            pid_config,
            counts,
            stacks,
            control,
            config_gen,
            _config_gen_map: config_gen_map,
            counters,
            unwinder,
            ustacks,
            shared,
            events_rx: Some(rx),
            reader,
            half: 0,
            batch_supported: true,
            last_counters: [0; C_NUM_COUNTERS],
            last_collect: Instant::now(),
            off_cpu,
            ksym,
        };
        probe.last_counters = probe.read_counters()?;
        Ok(probe)
    }

    /// The configuration the probe was loaded with.
    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// The attached sampling program's name and its accumulated run time and run count (the
    /// kernel counts them while `kernel.bpf_stats_enabled` is set or a `BPF_ENABLE_STATS`
    /// descriptor is held, else both stay 0).
    pub fn program_stats(&self) -> Option<(&'static str, Duration, u64)> {
        let info = self.ebpf.program(self.program)?.info().ok()?;
        Some((self.program, info.run_time(), info.run_count()))
    }

    /// Whether the kernel runs the table walk (`ProbeConfig::unwind` on a kernel that has
    /// `bpf_loop`); it walks the processes configured afterwards once a provider is set.
    pub fn unwinding(&self) -> bool {
        self.unwinder.is_some()
    }

    /// Where unwind tables come from (by default `crate::unwind`'s CFI tables). From now on
    /// every process configured with user stacks (and every one configured before, at its
    /// next re-read) gets its tables from `provider`.
    pub fn set_table_provider(&mut self, provider: Box<dyn TableProvider + Send>) {
        if let Some(unwinder) = &self.unwinder {
            lock(unwinder).set_provider(provider);
        }
    }

    /// Publishes (again) the mappings of `pid` to the table walk; errors only lose the table
    /// walk for the process (its stacks then come from frame pointers).
    fn refresh_unwind(&mut self, pid: u32) {
        if let Some(unwinder) = &self.unwinder {
            refresh_or_forget(&mut lock(unwinder), pid);
        }
    }

    fn forget_unwind(&mut self, pid: u32) {
        if let Some(unwinder) = &self.unwinder {
            if let Err(e) = lock(unwinder).forget(pid) {
                warn!(pid, error = %e, "removing a process from the table walk failed");
            }
        }
    }

    /// Tells the kernel what to collect for `pid`. If the process is already gone, its entry is
    /// removed again and a [`ProbeEvent::PidExit`] is sent, so that no stale entry waits for a
    /// reused pid.
    pub fn set_pid_config(&mut self, pid: u32, config: PidConfig) -> Result<(), ProbeError> {
        // The mappings (and their tables) go to the kernel before the process is marked as
        // profiled: its samples from then on are walked with tables, none of them with frame
        // pointers in the window that building the tables takes.
        let unwind = config.profile
            && config.user
            && self.unwinder.as_ref().is_some_and(|u| lock(u).active());
        if unwind {
            self.refresh_unwind(pid);
        } else {
            self.forget_unwind(pid);
        }
        let inserted = self
            .pid_config
            .insert(pid, PidConfigValue::from(config), 0)
            .map_err(|e| map_error(MAP_PID_CONFIG, e));
        self.config_gen.raise();
        inserted?;
        // A new process may reuse the pid of one that exited.
        self.shared.drain().exits.remove(&pid);
        if unwind {
            // An exec between the read of the maps above and the insert was not reported (the
            // kernel reports execs of known pids only): read them again now that the pid is
            // known. The tables are cached by file, so this costs one read of the maps.
            self.refresh_unwind(pid);
        }
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            self.remove_pid(pid)?;
            let _ = self.shared.events.send(ProbeEvent::PidExit(pid));
        }
        Ok(())
    }

    /// Forgets `pid`; its next sample reports it as unknown again.
    pub fn remove_pid(&mut self, pid: u32) -> Result<(), ProbeError> {
        self.forget_unwind(pid);
        let removed = self.pid_config.remove(&pid);
        self.config_gen.raise();
        match removed {
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

        let mut counts = drain_count_map(
            &mut self.counts[old],
            MAP_COUNTS[old],
            &mut self.batch_supported,
        )?;
        let off_counts = drain_count_map(
            self.off_cpu.counts(old),
            offcpu::MAP_OFFCPU_COUNTS[old],
            &mut self.batch_supported,
        )?;
        let stacks = self.drain_stacks(old)?;
        let ustacks = match self.ustacks.as_mut() {
            Some(stores) => {
                let drained = stores.drain_ustacks(old)?;
                counts.extend(drained.counts);
                drained.stacks
            }
            None => StdHashMap::new(),
        };
        let (raw, exits) = {
            let mut ring = self.shared.drain();
            (
                std::mem::take(&mut ring.raw),
                std::mem::take(&mut ring.exits),
            )
        };

        let mut lost = LostCounters::default();
        let merged = resolve_counts(counts, raw, &stacks, &ustacks, &mut lost.missing_stacks);
        let samples = stack_samples(merged);
        let off_cpu = self.off_cpu.collect(off_counts, self.half as usize)?;
        // Exited processes leave the table walk (new mappings reach it through the re-read
        // worker as soon as the kernel asks).
        for &pid in &exits {
            self.forget_unwind(pid);
        }

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
            unwind: unwind_counters(&delta),
            unwind_maps: self
                .unwinder
                .as_ref()
                .map(|u| lock(u).stats())
                .unwrap_or_default(),
            duration,
            python_unsupported: self
                .unwinder
                .as_ref()
                .map(|u| lock(u).python_unsupported())
                .unwrap_or_default(),
            off_cpu,
        })
    }

    /// Changes the off-CPU threshold of a probe loaded with one above 0 (off keeps the
    /// programs attached, recording nothing); a probe loaded with it off refuses to turn it on.
    pub fn set_off_cpu_threshold(&mut self, threshold: OffCpuThreshold) -> Result<(), ProbeError> {
        if self.config.off_cpu_threshold.is_off() && !threshold.is_off() {
            return Err(ProbeError::Config(
                "the probe was loaded without off-CPU profiles: load it with off_cpu_threshold above 0".into(),
            ));
        }
        self.off_cpu.set_threshold(&mut self.ebpf, threshold)
    }

    /// Threads of profiled processes recorded as off CPU that have not run again yet.
    pub fn off_cpu_sleeping(&self) -> usize {
        self.off_cpu.sleeping()
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

    fn read_counters(&self) -> Result<Counters, ProbeError> {
        let mut totals = [0u64; C_NUM_COUNTERS];
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

    fn kernel_resolver(&mut self) -> Option<Box<dyn KernelResolver>> {
        let (program, names) = self.ksym.as_ref()?;
        match BpfKsymResolver::new(program, names) {
            Ok(r) => Some(Box::new(r)),
            Err(e) => {
                warn!(error = %e, "cannot map ksym_names; /proc/kallsyms will be read");
                None
            }
        }
    }

    fn set_off_cpu_threshold(&mut self, threshold: OffCpuThreshold) -> Result<(), ProbeError> {
        Probe::set_off_cpu_threshold(self, threshold)
    }
}

/// Reads and deletes every entry of a counts map (in batches where the kernel can).
fn drain_count_map(
    map: &mut HashMap<MapData, SampleKey, u64>,
    name: &'static str,
    batch_supported: &mut bool,
) -> Result<Vec<(SampleKey, u64)>, ProbeError> {
    if *batch_supported {
        let fd = map.map().fd().as_fd().as_raw_fd();
        match sys::lookup_and_delete_batch(fd, BATCH_SIZE) {
            Ok(entries) => return Ok(entries),
            Err(BatchError::Unsupported(e)) => {
                warn!(error = %e, "BPF_MAP_LOOKUP_AND_DELETE_BATCH unsupported, reading counts one by one");
                *batch_supported = false;
            }
            Err(e @ BatchError::Io(_)) => {
                return Err(ProbeError::Map {
                    map: name,
                    source: Box::new(e),
                })
            }
        }
    }
    let keys: Vec<SampleKey> = map
        .keys()
        .collect::<Result<_, _>>()
        .map_err(|e| map_error(name, e))?;
    let mut entries = Vec::with_capacity(keys.len());
    for key in keys {
        if let Ok(count) = map.get(&key, 0) {
            entries.push((key, count));
        }
        let _ = map.remove(&key);
    }
    Ok(entries)
}

/// The stacks of the counted keys (a missing stack counted in `missing` and kept empty), plus
/// what arrived whole through the ring buffer, aggregated.
fn resolve_counts(
    counts: Vec<(SampleKey, u64)>,
    raw: StackCounts,
    stacks: &StdHashMap<i32, Vec<u64>>,
    ustacks: &StdHashMap<u64, WalkedStack>,
    missing: &mut u64,
) -> StackCounts {
    let mut merged: StackCounts = StdHashMap::new();
    for (key, count) in counts {
        let (user, user_end) = if key.user_store == STORE_USTACKS {
            resolve_user_stack(ustacks, key.leaf_caller, missing)
        } else {
            let mut user = resolve_stack(stacks, key.user_stack, missing);
            splice_leaf_caller(&mut user, key.leaf_caller);
            (user, None)
        };
        let kernel = resolve_stack(stacks, key.kernel_stack, missing);
        *merged.entry((key.pid, user, kernel, user_end)).or_default() += count;
    }
    for (key, count) in raw {
        *merged.entry(key).or_default() += count;
    }
    merged
}

fn resolve_stack(stacks: &StdHashMap<i32, Vec<u64>>, id: i32, missing: &mut u64) -> Vec<u64> {
    if id < 0 {
        return Vec::new();
    }
    match stacks.get(&id) {
        Some(ips) => ips.clone(),
        None => {
            *missing += 1;
            Vec::new()
        }
    }
}

/// A table-walked user stack from `ustacks` and how its walk ended; a missing one is counted
/// and kept as an empty stack.
fn resolve_user_stack(
    ustacks: &StdHashMap<u64, WalkedStack>,
    hash: u64,
    missing: &mut u64,
) -> (Vec<u64>, Option<WalkEnd>) {
    match ustacks.get(&hash) {
        Some(stack) => (stack.ips.to_vec(), WalkEnd::from_code(stack.reason)),
        None => {
            *missing += 1;
            (Vec::new(), None)
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
        drop(shared.drain());
    }
}

/// Loads one of the perf_event programs.
fn load_perf_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), ProbeError> {
    let program: &mut PerfEvent = ebpf
        .program_mut(name)
        .ok_or_else(|| missing("program", name))?
        .try_into()
        .map_err(|e| load_error(name, e))?;
    program
        .load()
        .map_err(|e| load_error(format!("loading {name}"), e))
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or_else(|| missing("map", name))
}

/// A program or map the embedded object should have and has not.
fn missing(kind: &str, name: &str) -> ProbeError {
    ProbeError::Load {
        context: format!("{kind} {name} missing from the BPF object"),
        source: None,
    }
}

fn map_error(map: &'static str, error: MapError) -> ProbeError {
    ProbeError::Map {
        map,
        source: Box::new(error),
    }
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

fn load_error(
    context: impl Into<String>,
    error: impl std::error::Error + Send + Sync + 'static,
) -> ProbeError {
    let context = context.into();
    if is_permission_error(os_error_code(&error), has_bpf_capabilities()) {
        ProbeError::Permission {
            context,
            source: Box::new(error),
        }
    } else {
        ProbeError::Load {
            context,
            source: Some(Box::new(error)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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

        let io = || io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(os_error_code(&io()), Some(libc::EPERM));
        // The code is found through the chain of sources.
        let wrapped = map_error(MAP_CONTROL, MapError::KeyNotFound);
        assert_eq!(os_error_code(&wrapped), None);
        let wrapped = ProbeError::Load {
            context: "loading".into(),
            source: Some(Box::new(io())),
        };
        assert_eq!(os_error_code(&wrapped), Some(libc::EPERM));
        match load_error("loading", io()) {
            ProbeError::Permission { context, source } => {
                assert_eq!(context, "loading");
                assert_eq!(os_error_code(source.as_ref()), Some(libc::EPERM));
            }
            other => panic!("expected a permission error, got {other:?}"),
        }
    }

    #[test]
    fn samples_counted_in_a_ustacks_entry_resolve_like_counts_map_entries() {
        use super::super::unwind_abi::{UserStack, MAX_USER_FRAMES};
        use super::super::unwind_bpf::counted_in_entry;

        let mut stack = UserStack {
            len: 3,
            reason: 1,
            flags: 0,
            pad: 0,
            tgid: 4242,
            pad2: 0,
            samples: 0,
            frames: [0; MAX_USER_FRAMES],
        };
        stack.frames[..3].copy_from_slice(&[0x1000, 0x2000, 0x3000]);
        // An entry stored for a sample with a kernel stack (counted in the counts map) or by
        // the off-CPU program counts nothing itself.
        assert_eq!(counted_in_entry(7, &stack), None);
        stack.samples = 5;
        let (key, count) = counted_in_entry(7, &stack).unwrap();
        assert_eq!(count, 5);
        let mut ustacks = StdHashMap::new();
        ustacks.insert(7, WalkedStack::from(&stack));
        // The same stack counted under a kernel stack through the counts map stays apart.
        let with_kernel = SampleKey {
            kernel_stack: 9,
            ..key
        };
        let mut stacks = StdHashMap::new();
        stacks.insert(9, vec![0xffff_ffff_8100_0000]);
        let mut missing = 0;
        let merged = resolve_counts(
            vec![(key, count), (with_kernel, 2)],
            StdHashMap::new(),
            &stacks,
            &ustacks,
            &mut missing,
        );
        assert_eq!(missing, 0);
        let user = vec![0x1000, 0x2000, 0x3000];
        assert_eq!(merged.len(), 2, "{merged:?}");
        let alone = merged
            .iter()
            .find(|((pid, u, k, _), _)| *pid == 4242 && *u == user && k.is_empty())
            .expect("the entry's own samples, with no kernel stack");
        assert_eq!(*alone.1, 5);
        let under_kernel = merged
            .iter()
            .find(|((_, _, k, _), _)| *k == vec![0xffff_ffff_8100_0000])
            .expect("the counts-map samples");
        assert_eq!(*under_kernel.1, 2);
    }

    #[test]
    fn stacks_resolve_or_count_missing() {
        let mut stacks = StdHashMap::new();
        stacks.insert(3, vec![1, 2, 3]);
        let mut missing = 0;
        assert_eq!(resolve_stack(&stacks, 3, &mut missing), vec![1, 2, 3]);
        assert_eq!(resolve_stack(&stacks, -1, &mut missing), Vec::<u64>::new());
        assert_eq!(missing, 0);
        assert_eq!(resolve_stack(&stacks, 4, &mut missing), Vec::<u64>::new());
        assert_eq!(missing, 1);
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
