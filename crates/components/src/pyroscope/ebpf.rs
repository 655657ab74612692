//! `pyroscope.ebpf`: a whole-host eBPF CPU profiler. Wires the pieces of `ebpf-probe`
//! together: the kernel probe (or any [`SampleSource`]), the container-ID cache, target
//! matching ([`targets`]), the symbolizer and the pprof builder, and forwards one gzipped pprof
//! profile per target and `collect_interval` to every receiver in `forward_to`.
//!
//! The work runs on a dedicated thread (symbolization and map reads block): it answers the
//! kernel's unknown-pid events within [`EbpfOptions::event_poll`] by telling the kernel which
//! pids to profile (so unmatched processes cost nothing in user space), collects every
//! interval, and forgets exited processes everywhere after their last samples are sent.
//! Without privileges the component is unhealthy and idle; the rest of the graph keeps running.

pub mod args;
pub mod recent;
pub mod targets;

pub use args::{Arguments, CacheSize, DemangleMode, Interval, SampleRate};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ebpf_probe::cgroup::{ContainerIdCache, ContainerIdCacheMetrics};
use ebpf_probe::pprof::{encode_gzip, ProfileBuilder};
use ebpf_probe::probe::{PidConfig, Probe, ProbeConfig, ProbeError, ProbeEvent, SampleSource};
use ebpf_probe::symbolize::{Symbolizer, SymbolizerConfig, SymbolizerMetrics, SymbolizerStats};
use flow_runtime::{CancellationToken, Component, Health, Options};
use prometheus_client::metrics::counter::Counter;
use river_parser::{Number, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, error, info, warn};

use crate::pyroscope::appendable::{Appendable, Fanout, FanoutMetrics, RawProfile};
use targets::{Assignment, TargetSet};

/// Creates the sample source (the kernel probe in production, a mock in tests).
pub type SourceFactory =
    Arc<dyn Fn(&ProbeConfig) -> Result<Box<dyn SampleSource>, ProbeError> + Send + Sync>;

/// Settings that are not River arguments: where samples come from and where `/proc` is.
#[derive(Clone)]
pub struct EbpfOptions {
    /// Builds the sample source; called with the probe configuration (sample rate from the
    /// arguments) at start and when `sample_rate` changes.
    pub source: SourceFactory,
    /// Base probe configuration (`sample_rate` is replaced by the argument).
    pub probe: ProbeConfig,
    /// Base symbolizer configuration (cache sizes and demangling come from the arguments).
    pub symbolizer: SymbolizerConfig,
    /// Where `PID/cgroup` is read (`/proc`).
    pub proc_root: PathBuf,
    /// How often kernel events (unknown pids, exits) are handled between collects.
    pub event_poll: Duration,
}

impl std::fmt::Debug for EbpfOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfOptions")
            .field("probe", &self.probe)
            .field("proc_root", &self.proc_root)
            .field("event_poll", &self.event_poll)
            .finish_non_exhaustive()
    }
}

impl Default for EbpfOptions {
    fn default() -> Self {
        EbpfOptions {
            source: Arc::new(|cfg: &ProbeConfig| {
                Probe::load(cfg.clone()).map(|p| Box::new(p) as Box<dyn SampleSource>)
            }),
            probe: ProbeConfig::default(),
            symbolizer: SymbolizerConfig::default(),
            proc_root: "/proc".into(),
            event_poll: Duration::from_millis(100),
        }
    }
}

/// The component's own counters.
#[derive(Debug, Clone, Default)]
struct Metrics {
    samples: Counter,
    lost_samples: Counter,
    profiles: Counter,
}

impl Metrics {
    fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "pyroscope_ebpf_samples",
            "CPU samples collected from the kernel",
            self.samples.clone(),
        );
        r.register(
            "pyroscope_ebpf_lost_samples",
            "CPU samples lost or degraded in the kernel (full maps, stack collisions, stack errors)",
            self.lost_samples.clone(),
        );
        r.register(
            "pyroscope_ebpf_profiles",
            "Profiles sent to the receivers in forward_to",
            self.profiles.clone(),
        );
    }
}

/// What the UI and `health` show; written by the worker thread.
#[derive(Debug, Clone, Default)]
struct Status {
    health: Option<Health>,
    targets: usize,
    targets_discarded: usize,
    targets_matched: usize,
    processes_profiled: usize,
    processes_known: usize,
    samples: u64,
    lost_samples: u64,
    unattributed_samples: u64,
    profiles_sent: u64,
    symbolizer: SymbolizerStats,
    container_ids_cached: usize,
    last_collect: Option<SystemTime>,
    last_error: Option<String>,
    /// The last intervals' profiles per target, for the UI (bounded, see [`recent`]).
    recent: Arc<Mutex<recent::Recent>>,
}

enum Command {
    Update(Box<Arguments>),
    /// Handle pending kernel events now, then answer.
    Sync(Sender<()>),
    /// Collect now (out of schedule), then answer.
    Collect(Sender<()>),
    Stop,
}

/// The `pyroscope.ebpf` component.
pub struct Ebpf {
    commands: Mutex<Sender<Command>>,
    worker: Mutex<Option<(Receiver<Command>, Session)>>,
    status: Arc<Mutex<Status>>,
    event_poll: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ebpf {
    /// Builds the component with explicit [`EbpfOptions`] (tests use a mock source and a fake
    /// `/proc`). Nothing is loaded until [`Component::run`].
    pub fn build_with(
        opts: Options,
        args: Arguments,
        options: EbpfOptions,
    ) -> anyhow::Result<Self> {
        let fanout_metrics = opts.metrics.with(FanoutMetrics::register);
        let sym_metrics = SymbolizerMetrics::default();
        let cid_metrics = ContainerIdCacheMetrics::default();
        let metrics = Metrics::default();
        opts.metrics.with(|r| {
            sym_metrics.register(r);
            cid_metrics.register(r);
            metrics.register(r);
        });
        let status = Arc::new(Mutex::new(Status::default()));
        let fanout = Arc::new(Fanout::new(args.receivers(), fanout_metrics));
        let event_poll = options.event_poll;
        let session = Session::new(
            opts,
            args,
            options,
            fanout,
            sym_metrics,
            cid_metrics,
            metrics,
            Arc::clone(&status),
        );
        let (tx, rx) = mpsc::channel();
        Ok(Ebpf {
            commands: Mutex::new(tx),
            worker: Mutex::new(Some((rx, session))),
            status,
            event_poll,
        })
    }

    fn send(&self, c: Command) -> bool {
        lock(&self.commands).send(c).is_ok()
    }

    fn request(&self, make: impl FnOnce(Sender<()>) -> Command, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        self.send(make(tx)) && rx.recv_timeout(timeout).is_ok()
    }

    /// Handles the kernel events received so far (unknown pids, exits) and returns once done
    /// (false if the component is not running). Blocking; for tests and tools.
    pub fn sync(&self) -> bool {
        self.request(Command::Sync, Duration::from_secs(10) + self.event_poll)
    }

    /// Collects and sends profiles now, out of schedule, and returns once done (false if the
    /// component is not running). Blocking; for tests and tools.
    pub fn collect_now(&self) -> bool {
        self.request(Command::Collect, Duration::from_secs(60))
    }
}

impl Component for Ebpf {
    type Arguments = Arguments;

    fn build(opts: Options, args: Arguments) -> anyhow::Result<Self> {
        Self::build_with(opts, args, EbpfOptions::default())
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let Some((rx, session)) = lock(&self.worker).take() else {
            anyhow::bail!("pyroscope.ebpf: run called twice");
        };
        let handle = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name("pyroscope.ebpf".into())
            .spawn(move || {
                let _rt = handle.enter();
                session.run(rx);
            })?;
        cancel.cancelled().await;
        self.send(Command::Stop);
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            error!("pyroscope.ebpf worker thread panicked");
        }
        Ok(())
    }

    fn update(&self, args: Arguments) -> anyhow::Result<()> {
        if !self.send(Command::Update(Box::new(args))) {
            anyhow::bail!("pyroscope.ebpf worker has stopped");
        }
        Ok(())
    }

    fn health(&self) -> Option<Health> {
        lock(&self.status).health.clone()
    }

    /// `profile`: the recent profiles per target (see [`recent::Recent::resource`]).
    fn resource(
        &self,
        name: &str,
        query: &BTreeMap<String, String>,
    ) -> Result<flow_runtime::Resource, flow_runtime::ResourceError> {
        if name != "profile" {
            return Err(flow_runtime::ResourceError::NotFound(format!(
                "no resource {name:?}"
            )));
        }
        let recent = Arc::clone(&lock(&self.status).recent);
        // A snapshot (the profiles are shared, not copied): collects do not wait for this.
        let snapshot = lock(&recent).clone();
        snapshot.resource(query)
    }

    fn debug_info(&self) -> Option<Value> {
        let s = lock(&self.status).clone();
        let n = |v: u64| Value::Number(Number::Uint(v));
        let mut o = BTreeMap::new();
        o.insert("targets".into(), n(s.targets as u64));
        o.insert("targets_discarded".into(), n(s.targets_discarded as u64));
        o.insert("targets_matched".into(), n(s.targets_matched as u64));
        o.insert("processes_profiled".into(), n(s.processes_profiled as u64));
        o.insert("processes_known".into(), n(s.processes_known as u64));
        o.insert("samples".into(), n(s.samples));
        o.insert("lost_samples".into(), n(s.lost_samples));
        o.insert("unattributed_samples".into(), n(s.unattributed_samples));
        o.insert("profiles_sent".into(), n(s.profiles_sent));
        o.insert("pid_cache_size".into(), n(s.symbolizer.pids as u64));
        o.insert("elf_cache_size".into(), n(s.symbolizer.elfs as u64));
        o.insert(
            "elf_cache_build_id_size".into(),
            n(s.symbolizer.build_ids as u64),
        );
        o.insert(
            "kernel_symbols".into(),
            n(s.symbolizer.kernel_symbols as u64),
        );
        o.insert(
            "container_id_cache_size".into(),
            n(s.container_ids_cached as u64),
        );
        o.insert(
            "last_collect".into(),
            s.last_collect.map_or(Value::Null, |t| {
                Value::Number(Number::Uint(
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs(),
                ))
            }),
        );
        o.insert(
            "last_error".into(),
            s.last_error.map_or(Value::Null, Value::String),
        );
        Some(Value::Object(o))
    }
}

/// What is known about one process the kernel asked about.
#[derive(Debug, Clone)]
struct Proc {
    container_id: Option<String>,
    assignment: Option<Assignment>,
    config: PidConfig,
}

/// The worker: owns the source, the caches and the per-process decisions.
struct Session {
    opts: Options,
    args: Arguments,
    options: EbpfOptions,
    targets: TargetSet,
    source: Option<Box<dyn SampleSource>>,
    events: Option<UnboundedReceiver<ProbeEvent>>,
    symbolizer: Symbolizer,
    sym_metrics: SymbolizerMetrics,
    cgroups: ContainerIdCache,
    cid_metrics: ContainerIdCacheMetrics,
    procs: HashMap<u32, Proc>,
    exited: HashSet<u32>,
    execed: HashSet<u32>,
    /// Targets that processes lost since the last collect (their container ended and discovery
    /// dropped it, or they exited before the update): the samples those processes took before
    /// still go to them at the next collect, then they are forgotten.
    retired: Vec<targets::Target>,
    /// Pid -> index into `retired`, for processes without a current assignment.
    retired_pids: HashMap<u32, usize>,
    fanout: Arc<Fanout>,
    metrics: Metrics,
    status: Arc<Mutex<Status>>,
    last_collect: SystemTime,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    fn new(
        opts: Options,
        args: Arguments,
        options: EbpfOptions,
        fanout: Arc<Fanout>,
        sym_metrics: SymbolizerMetrics,
        cid_metrics: ContainerIdCacheMetrics,
        metrics: Metrics,
        status: Arc<Mutex<Status>>,
    ) -> Self {
        let targets = TargetSet::new(
            &args.targets,
            &args.default_target,
            args.targets_only,
            &opts.id,
        );
        let symbolizer = Symbolizer::new(
            symbolizer_config(&options.symbolizer, &args),
            sym_metrics.clone(),
        );
        let cgroups = ContainerIdCache::new(
            options.proc_root.clone(),
            args.container_id_cache_size.0,
            cid_metrics.clone(),
        );
        let s = Session {
            opts,
            args,
            options,
            targets,
            source: None,
            events: None,
            symbolizer,
            sym_metrics,
            cgroups,
            cid_metrics,
            procs: HashMap::new(),
            exited: HashSet::new(),
            execed: HashSet::new(),
            retired: Vec::new(),
            retired_pids: HashMap::new(),
            fanout,
            metrics,
            status,
            last_collect: SystemTime::now(),
        };
        s.publish_targets();
        s
    }

    fn run(mut self, rx: Receiver<Command>) {
        let span = self.opts.span.clone();
        let _span = span.enter();
        self.ensure_source();
        let mut next = Instant::now() + self.args.collect_interval.0.as_std();
        loop {
            let now = Instant::now();
            let wait = next
                .saturating_duration_since(now)
                .min(self.options.event_poll);
            match rx.recv_timeout(wait) {
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    // Flush the partial interval (shutdown or removal by a reload), so that
                    // the samples taken since the last collect reach the receivers.
                    if self.source.is_some() {
                        self.collect();
                    }
                    break;
                }
                Ok(Command::Update(args)) => {
                    let old = self.args.collect_interval;
                    self.update(*args);
                    if self.args.collect_interval != old {
                        next = Instant::now() + self.args.collect_interval.0.as_std();
                    }
                }
                Ok(Command::Sync(reply)) => {
                    self.handle_events();
                    let _ = reply.send(());
                }
                Ok(Command::Collect(reply)) => {
                    self.collect();
                    let _ = reply.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.handle_events();
            if Instant::now() >= next {
                self.collect();
                next += self.args.collect_interval.0.as_std();
                let now = Instant::now();
                if next <= now {
                    next = now + self.args.collect_interval.0.as_std();
                }
            }
        }
        debug!("pyroscope.ebpf worker stopped");
    }

    fn probe_config(&self) -> ProbeConfig {
        ProbeConfig {
            sample_rate: u64::from(self.args.sample_rate.0),
            ..self.options.probe.clone()
        }
    }

    /// Loads the source if it is not loaded; sets health accordingly.
    fn ensure_source(&mut self) {
        if self.source.is_some() {
            return;
        }
        match (self.options.source)(&self.probe_config()) {
            Ok(mut source) => {
                self.events = source.take_events();
                self.source = Some(source);
                self.procs.clear();
                info!(
                    sample_rate = self.args.sample_rate.0,
                    "pyroscope.ebpf profiling started"
                );
                let mut st = lock(&self.status);
                st.health = Some(Health::healthy("profiling"));
                st.last_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                error!(error = %msg, "pyroscope.ebpf cannot start profiling");
                let mut st = lock(&self.status);
                st.health = Some(Health::unhealthy(msg.clone()));
                st.last_error = Some(msg);
            }
        }
    }

    fn update(&mut self, args: Arguments) {
        // Learn the exits that already happened: an exited process is not decided again.
        self.handle_events();
        if args.sample_rate != self.args.sample_rate && self.source.is_some() {
            // The probe is about to be replaced: send what it counted so far (at the old rate,
            // to the old receivers), as a shutdown would.
            self.collect();
        }
        self.fanout.set_children(args.receivers());
        let old = std::mem::replace(&mut self.args, args);
        let new = &self.args;
        if old.pid_cache_size != new.pid_cache_size
            || old.elf_cache_size != new.elf_cache_size
            || old.demangle != new.demangle
        {
            self.symbolizer = Symbolizer::new(
                symbolizer_config(&self.options.symbolizer, new),
                self.sym_metrics.clone(),
            );
        }
        if old.container_id_cache_size != new.container_id_cache_size {
            self.cgroups = ContainerIdCache::new(
                self.options.proc_root.clone(),
                new.container_id_cache_size.0,
                self.cid_metrics.clone(),
            );
        }
        if old.sample_rate != new.sample_rate {
            // A new rate needs a new perf event: reload the probe (its pid map starts empty).
            self.source = None;
            self.events = None;
            self.procs.clear();
        }
        let old_targets = std::mem::replace(
            &mut self.targets,
            TargetSet::new(
                &new.targets,
                &new.default_target,
                new.targets_only,
                &self.opts.id,
            ),
        );
        self.publish_targets();
        self.ensure_source();
        // A process that loses its target keeps it until the next collect: its samples of the
        // interval were taken while it belonged there (a short-lived container typically exits,
        // then discovery drops it, before the collect). Exited processes are not decided again
        // (the kernel has forgotten them; configuring them would leave a stale kernel entry).
        let mut retired_index: HashMap<Assignment, usize> = HashMap::new();
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            let before = self.procs.get(&pid).and_then(|p| p.assignment);
            if self.exited.contains(&pid) {
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.assignment = None;
                }
            } else {
                self.decide(pid);
            }
            let after = self.procs.get(&pid).and_then(|p| p.assignment);
            if let (Some(a), None) = (before, after) {
                if let Some(t) = old_targets.get(a) {
                    let retired = &mut self.retired;
                    let i = *retired_index.entry(a).or_insert_with(|| {
                        retired.push(t.clone());
                        retired.len() - 1
                    });
                    self.retired_pids.insert(pid, i);
                }
            }
        }
        self.publish_procs();
    }

    fn publish_targets(&self) {
        let mut st = lock(&self.status);
        st.targets = self.targets.targets.len();
        st.targets_discarded = self.targets.discarded.len();
    }

    fn publish_procs(&self) {
        let mut st = lock(&self.status);
        st.processes_known = self.procs.len();
        st.processes_profiled = self
            .procs
            .values()
            .filter(|p| p.assignment.is_some())
            .count();
    }

    /// Decides what the kernel collects for `pid` and tells it when that changed.
    fn decide(&mut self, pid: u32) {
        let container_id = match self.procs.get(&pid) {
            Some(p) => p.container_id.clone(),
            None => self.cgroups.get(pid),
        };
        let assignment = self.targets.assign(pid, container_id.as_deref());
        let config = PidConfig {
            profile: assignment.is_some(),
            user: self.args.collect_user_profile,
            kernel: self.args.collect_kernel_profile,
        };
        let previous = self.procs.insert(
            pid,
            Proc {
                container_id,
                assignment,
                config,
            },
        );
        if previous.as_ref().map(|p| p.config) != Some(config) {
            if let Some(source) = self.source.as_mut() {
                if let Err(e) = source.set_pid_config(pid, config) {
                    warn!(pid, error = %e, "pyroscope.ebpf: cannot configure pid");
                }
            }
        }
        let was_profiled = previous.is_some_and(|p| p.assignment.is_some());
        if assignment.is_some() && !was_profiled && self.args.collect_user_profile {
            // Read its symbols now: it may exit before the next collect.
            self.symbolizer.preload(pid);
        }
        debug!(pid, ?assignment, "pyroscope.ebpf: pid configured");
    }

    fn handle_events(&mut self) {
        let mut decided = false;
        while let Some(Ok(event)) = self.events.as_mut().map(|rx| rx.try_recv()) {
            match event {
                ProbeEvent::UnknownPid(pid) => {
                    // The kernel has no configuration for it: a new process (possibly reusing
                    // the pid of one that exited), so its container is read afresh.
                    if self.exited.remove(&pid) {
                        self.symbolizer.forget_pid(pid);
                        self.cgroups.forget(pid);
                    }
                    self.procs.remove(&pid);
                    self.decide(pid);
                    decided = true;
                }
                ProbeEvent::PidExit(pid) => {
                    // Its last samples arrive with the next collect; forget it after that.
                    self.exited.insert(pid);
                }
                ProbeEvent::PidExec(pid) => {
                    self.execed.insert(pid);
                }
                _ => {}
            }
        }
        if decided {
            self.publish_procs();
        }
    }

    fn resync_pending(&mut self) {
        let pending = match self.source.as_ref().map(|s| s.pending_pids()) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                warn!(error = %e, "pyroscope.ebpf: cannot list pending pids");
                return;
            }
            None => return,
        };
        for pid in pending {
            self.procs.remove(&pid);
            self.decide(pid);
        }
    }

    fn collect(&mut self) {
        self.handle_events();
        self.ensure_source();
        let Some(source) = self.source.as_mut() else {
            return;
        };
        let started = Instant::now();
        let collection = match source.collect() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "pyroscope.ebpf collect failed");
                lock(&self.status).last_error = Some(e.to_string());
                return;
            }
        };
        if collection.lost.events > 0 || collection.lost.pid_map_full > 0 {
            self.resync_pending();
        }
        let now = SystemTime::now();
        let start = if collection.duration.is_zero() {
            self.last_collect
        } else {
            now.checked_sub(collection.duration)
                .unwrap_or(self.last_collect)
        };
        self.last_collect = now;
        let time_nanos = start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64;
        let duration_nanos = now.duration_since(start).unwrap_or_default().as_nanos() as i64;

        let mut builders: HashMap<Slot, ProfileBuilder> = HashMap::new();
        let mut unattributed = 0u64;
        let total = collection.total_samples();
        for s in &collection.samples {
            let slot = match self.procs.get(&s.pid).and_then(|p| p.assignment) {
                Some(a) => Slot::Current(a),
                None => match self.retired_pids.get(&s.pid) {
                    Some(&i) => Slot::Retired(i),
                    None => {
                        unattributed += s.count;
                        continue;
                    }
                },
            };
            let frames = self.symbolizer.symbolize(s.pid, &s.user, &s.kernel);
            builders
                .entry(slot)
                .or_insert_with(|| {
                    ProfileBuilder::new(self.args.sample_rate.0, time_nanos, duration_nanos)
                })
                .add_stack(&frames, s.count);
        }
        let lost = collection.lost.total();
        self.metrics.samples.inc_by(total);
        self.metrics.lost_samples.inc_by(lost);

        let matched = builders.len();
        let mut sent = 0u64;
        let recent = Arc::clone(&lock(&self.status).recent);
        for (slot, builder) in builders {
            let target = match slot {
                Slot::Current(a) => self.targets.get(a),
                Slot::Retired(i) => self.retired.get(i),
            };
            let Some(target) = target else {
                continue;
            };
            let raw = encode_gzip(&builder.build());
            lock(&recent).push(&target.labels, raw.clone());
            match self.fanout.append(
                target.labels.clone(),
                vec![RawProfile {
                    raw,
                    id: String::new(),
                }],
            ) {
                Ok(()) => sent += 1,
                Err(e) => warn!(
                    error = %e,
                    service_name = %target.labels.get("service_name").map_or("", String::as_str),
                    "pyroscope.ebpf: receiver refused a profile"
                ),
            }
        }
        self.metrics.profiles.inc_by(sent);
        self.retired.clear();
        self.retired_pids.clear();

        // Exited processes: their last samples are out; forget them everywhere.
        for pid in std::mem::take(&mut self.exited) {
            self.procs.remove(&pid);
            self.symbolizer.forget_pid(pid);
            self.cgroups.forget(pid);
        }
        for pid in std::mem::take(&mut self.execed) {
            self.symbolizer.forget_pid(pid);
        }
        self.publish_procs();
        let mut st = lock(&self.status);
        st.targets_matched = matched;
        st.samples = total;
        st.lost_samples = lost;
        st.unattributed_samples = unattributed;
        st.profiles_sent = sent;
        st.symbolizer = self.symbolizer.stats();
        st.container_ids_cached = self.cgroups.len();
        st.last_collect = Some(now);
        debug!(
            samples = total,
            lost,
            profiles = sent,
            took_ms = started.elapsed().as_millis() as u64,
            "pyroscope.ebpf collected"
        );
    }
}

/// Which profile a sample goes to: a current target, or one its process lost since the last
/// collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Current(Assignment),
    Retired(usize),
}

fn symbolizer_config(base: &SymbolizerConfig, args: &Arguments) -> SymbolizerConfig {
    SymbolizerConfig {
        pid_cache_size: args.pid_cache_size.0,
        elf_cache_size: args.elf_cache_size.0,
        demangle: args.demangle.0,
        ..base.clone()
    }
}

// Rules are still checked in `build`/`update`; they move into this impl (issue 13).
impl river_parser::Validate for Arguments {}
