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
//! Alloy's arguments without an engine here (language switches, deprecated sizes) are
//! accepted and reported once per load (module `compat`); `comm`/`pid_label` decorate samples
//! (module `comm`); with `lazy_mode` the probe is loaded only once some process can be profiled.
//! With `off_cpu_threshold` above 0 each target also gets an off-CPU profile per interval
//! (`__name__ = "offcpu"`, sample type `offcpu`/`nanoseconds`, module `offcpu`).

pub mod args;
mod comm;
mod compat;
mod metrics;
mod offcpu;
pub mod policy;
pub mod recent;
pub mod targets;

pub use args::{Arguments, CacheSize, CommMode, DemangleMode, Interval, SampleRate};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ebpf_probe::cgroup::{ContainerIdCache, ContainerIdCacheMetrics};
use ebpf_probe::pprof::{encode_gzip, ProfileBuilder};
use ebpf_probe::probe::WalkEnd;
use ebpf_probe::probe::{Collection, Probe, ProbeConfig, ProbeError, SampleSource};
use ebpf_probe::session::{Owner, ProfileKind, Session};
use ebpf_probe::symbolize::{Symbolizer, SymbolizerConfig, SymbolizerMetrics, SymbolizerStats};
use flow_runtime::util::{error_chain, lock};
use flow_runtime::{CancellationToken, Component, Health, Options};
use river_parser::{Number, Value};
use tracing::{debug, error, info, warn};

use crate::pyroscope::appendable::{Appendable, Fanout, FanoutMetrics, RawProfile};
use metrics::Metrics;
use policy::{Placement, TargetPolicy};
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
    /// Table walks of the last interval by how they ended, and the kernel's table state.
    unwind: ebpf_probe::probe::UnwindCounters,
    unwind_maps: ebpf_probe::probe::UnwindMapStats,
    /// CPython versions met that have no offsets (their stacks are native).
    python_unsupported: Vec<String>,
    /// Python frames the symbolizer named and could not name, since start.
    python_named: u64,
    python_unnamed: BTreeMap<&'static str, u64>,
    /// The last intervals' profiles per target, for the UI (bounded, see [`recent`]).
    recent: Arc<Mutex<recent::Recent>>,
    /// Whether the probe is loaded (false while `lazy_mode` waits for targets).
    probe_loaded: bool,
    /// What the Alloy-only arguments do here ([`compat::debug_fields`]).
    arguments: BTreeMap<String, Value>,
    /// The off-CPU profile of the last interval.
    off_cpu: offcpu::Status,
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
    worker: Mutex<Option<(Receiver<Command>, Worker)>>,
    status: Arc<Mutex<Status>>,
    event_poll: Duration,
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
        compat::log_load(&args);
        let fanout = Arc::new(Fanout::new(args.receivers(), fanout_metrics));
        let event_poll = options.event_poll;
        let worker = Worker::new(
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
            worker: Mutex::new(Some((rx, worker))),
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
        let Some((rx, worker)) = lock(&self.worker).take() else {
            anyhow::bail!("pyroscope.ebpf: run called twice");
        };
        let handle = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name("pyroscope.ebpf".into())
            .spawn(move || {
                let _rt = handle.enter();
                worker.run(rx);
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
        compat::log_load(&args);
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
        o.extend(s.arguments);
        o.insert("probe_loaded".into(), Value::Bool(s.probe_loaded));
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
        let mut walks = BTreeMap::new();
        for end in WalkEnd::ALL {
            walks.insert(end.name().to_string(), n(s.unwind.ended(end)));
        }
        let mut unwind = BTreeMap::new();
        unwind.insert("walks_last_interval".into(), Value::Object(walks));
        unwind.insert(
            "frame_pointer_walks_last_interval".into(),
            n(s.unwind.frame_pointer_used),
        );
        unwind.insert("processes".into(), n(s.unwind_maps.processes));
        unwind.insert("tables".into(), n(s.unwind_maps.tables));
        unwind.insert("rows".into(), n(s.unwind_maps.rows_used));
        unwind.insert(
            "mappings_with_table".into(),
            n(s.unwind_maps.mappings_with_table),
        );
        unwind.insert(
            "mappings_frame_pointer".into(),
            n(s.unwind_maps.mappings_frame_pointer),
        );
        unwind.insert("table_errors".into(), n(s.unwind_maps.table_errors));
        o.insert("unwind".into(), Value::Object(unwind));
        let mut python = BTreeMap::new();
        python.insert("processes".into(), n(s.unwind_maps.python_processes));
        python.insert("frames_last_interval".into(), n(s.unwind.python_frames));
        python.insert("frames_named".into(), n(s.python_named));
        python.insert(
            "frames_not_named".into(),
            Value::Object(
                s.python_unnamed
                    .iter()
                    .map(|(k, v)| (k.to_string(), n(*v)))
                    .collect(),
            ),
        );
        python.insert(
            "unsupported_versions".into(),
            Value::Array(
                s.python_unsupported
                    .into_iter()
                    .map(Value::String)
                    .collect(),
            ),
        );
        o.insert("python".into(), Value::Object(python));
        o.insert("off_cpu".into(), s.off_cpu.debug_info());
        Some(Value::Object(o))
    }
}

/// The worker: owns the source, the profiling session and the policy that answers it.
struct Worker {
    opts: Options,
    args: Arguments,
    options: EbpfOptions,
    source: Option<Box<dyn SampleSource>>,
    session: Session<TargetPolicy>,
    policy: TargetPolicy,
    sym_metrics: SymbolizerMetrics,
    cid_metrics: ContainerIdCacheMetrics,
    fanout: Arc<Fanout>,
    metrics: Metrics,
    status: Arc<Mutex<Status>>,
    last_collect: SystemTime,
}

impl Worker {
    #[allow(
        clippy::too_many_arguments,
        reason = "the pieces the component builds and shares with the worker"
    )]
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
        let policy = TargetPolicy {
            targets: Arc::new(target_set(&args, &opts.id)),
            generation: 0,
            cgroups: ContainerIdCache::new(
                options.proc_root.clone(),
                args.container_id_cache_size.0,
                cid_metrics.clone(),
            ),
            symbolizer: Symbolizer::new(
                symbolizer_config(&options.symbolizer, &args),
                sym_metrics.clone(),
            ),
            user: args.collect_user_profile,
            kernel: args.kernel_stacks(),
            comms: comm::CommCache::new(options.proc_root.clone()),
            comm_wanted: args.comm != CommMode::None,
        };
        let w = Worker {
            opts,
            args,
            options,
            source: None,
            session: Session::new(),
            policy,
            sym_metrics,
            cid_metrics,
            fanout,
            metrics,
            status,
            last_collect: SystemTime::now(),
        };
        w.publish_targets();
        w
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
            python: self.args.python_enabled && self.options.probe.python,
            off_cpu_threshold: offcpu::threshold(&self.args),
            ..self.options.probe.clone()
        }
    }

    /// Loads the source if it is not loaded; sets health accordingly.
    fn ensure_source(&mut self) {
        if self.source.is_some() {
            return;
        }
        if self.args.lazy_mode && !self.policy.targets.has_any() {
            lock(&self.status).health = Some(Health::healthy(
                "lazy_mode: the probe loads once there is a target",
            ));
            return;
        }
        match (self.options.source)(&self.probe_config()) {
            Ok(mut source) => {
                offcpu::apply(source.as_mut(), &self.args);
                self.policy
                    .symbolizer
                    .set_kernel_resolver(source.kernel_resolver());
                self.session.attach(source.as_mut());
                self.source = Some(source);
                lock(&self.status).probe_loaded = true;
                info!(
                    sample_rate = self.args.sample_rate.0,
                    "pyroscope.ebpf profiling started"
                );
                let mut st = lock(&self.status);
                st.health = Some(Health::healthy("profiling"));
                st.last_error = None;
            }
            Err(e) => {
                let msg = error_chain(&e);
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
        let reload = args.sample_rate != self.args.sample_rate
            || args.python_enabled != self.args.python_enabled
            || offcpu::needs_reload(&self.args, &args);
        let new_threshold = args.off_cpu_threshold != self.args.off_cpu_threshold;
        if (reload || new_threshold) && self.source.is_some() {
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
            || old.python_enabled != new.python_enabled
        {
            self.policy.symbolizer = Symbolizer::new(
                symbolizer_config(&self.options.symbolizer, new),
                self.sym_metrics.clone(),
            );
            if let Some(source) = self.source.as_mut() {
                self.policy
                    .symbolizer
                    .set_kernel_resolver(source.kernel_resolver());
            }
        }
        if old.container_id_cache_size != new.container_id_cache_size {
            self.policy.cgroups = ContainerIdCache::new(
                self.options.proc_root.clone(),
                new.container_id_cache_size.0,
                self.cid_metrics.clone(),
            );
        }
        if reload {
            // A new rate needs a new perf event, Python frames another program setup, off-CPU
            // profiles turned on or off their programs and maps: reload the probe (its pid
            // map starts empty).
            self.source = None;
            lock(&self.status).probe_loaded = false;
            self.session.detach();
        } else if let Some(source) = self.source.as_deref_mut() {
            // A new off-CPU probability applies from here (the interval before was sent).
            offcpu::apply(source, new);
        }
        self.policy.user = new.collect_user_profile;
        self.policy.kernel = new.kernel_stacks();
        self.policy.comm_wanted = new.comm != CommMode::None;
        self.policy.set_targets(target_set(new, &self.opts.id));
        self.publish_targets();
        self.ensure_source();
        if let Some(source) = self.source.as_deref_mut() {
            self.session.redecide(source, &mut self.policy);
        }
        self.publish_procs();
    }

    fn publish_targets(&self) {
        let mut st = lock(&self.status);
        st.arguments = compat::debug_fields(&self.args);
        st.targets = self.policy.targets.targets.len();
        st.targets_discarded = self.policy.targets.discarded.len();
    }

    fn publish_procs(&self) {
        let mut st = lock(&self.status);
        st.processes_known = self.session.known();
        st.processes_profiled = self.session.profiled();
    }

    fn handle_events(&mut self) {
        let Some(source) = self.source.as_deref_mut() else {
            return;
        };
        if self.session.handle_events(source, &mut self.policy) {
            self.publish_procs();
        }
    }

    fn collect(&mut self) {
        self.ensure_source();
        let Some(source) = self.source.as_deref_mut() else {
            return;
        };
        let started = Instant::now();
        let rate = self.args.sample_rate.0;
        let (comm_mode, pid_label) = (self.args.comm, self.args.pid_label);
        let last_collect = self.last_collect;
        let mut interval: Option<TimeRange> = None;
        let mut builders: HashMap<(Slot, ProfileKind), (Placement, ProfileBuilder)> =
            HashMap::new();
        let collected = self.session.collect_profiles(
            source,
            &mut self.policy,
            |policy, collection, kind, s, owner| {
                let times =
                    *interval.get_or_insert_with(|| TimeRange::new(last_collect, collection));
                let mut frames = policy.symbolizer.symbolize_sample(s);
                let labels =
                    comm::decorate(&mut policy.comms, comm_mode, pid_label, s.pid, &mut frames);
                let labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                builders
                    .entry((Slot::of(&owner), kind))
                    .or_insert_with(|| {
                        let builder = match kind {
                            ProfileKind::Cpu => {
                                ProfileBuilder::new(rate, times.time_nanos, times.duration_nanos)
                            }
                            ProfileKind::OffCpu => {
                                ProfileBuilder::off_cpu(times.time_nanos, times.duration_nanos)
                            }
                        };
                        (owner.target().clone(), builder)
                    })
                    .1
                    .add_stack_labeled(&frames, s.count, &labels);
            },
        );
        let collected = match collected {
            Ok(c) => c,
            Err(e) => {
                let msg = error_chain(&e);
                warn!(error = %msg, "pyroscope.ebpf collect failed");
                lock(&self.status).last_error = Some(msg);
                return;
            }
        };
        let now = interval
            .unwrap_or_else(|| TimeRange::new(last_collect, &collected.collection))
            .now;
        self.last_collect = now;
        let total = collected.collection.total_samples();
        let lost = collected.collection.lost.total();
        self.metrics.samples.inc_by(total);
        self.metrics.lost_samples.inc_by(lost);
        self.metrics.unwind.observe(&collected.collection);
        self.metrics.off_cpu.observe(
            &collected.collection.off_cpu,
            collected.unattributed_off_cpu_nanos,
        );

        let matched = builders
            .keys()
            .filter(|(_, kind)| *kind == ProfileKind::Cpu)
            .count();
        let mut sent = 0u64;
        let recent = Arc::clone(&lock(&self.status).recent);
        for ((_, kind), (placement, builder)) in builders {
            let Some(target) = placement.target() else {
                continue;
            };
            let labels = offcpu::labels(&target.labels, kind);
            let raw = encode_gzip(&builder.build());
            lock(&recent).push(&labels, raw.clone());
            match self.fanout.append(
                labels.clone(),
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
        self.publish_procs();
        let mut st = lock(&self.status);
        st.targets_matched = matched;
        st.samples = total;
        st.lost_samples = lost;
        st.unattributed_samples = collected.unattributed;
        st.profiles_sent = sent;
        st.symbolizer = self.policy.symbolizer.stats();
        st.container_ids_cached = self.policy.cgroups.len();
        st.last_collect = Some(now);
        st.unwind = collected.collection.unwind;
        st.unwind_maps = collected.collection.unwind_maps;
        st.python_unsupported = collected.collection.python_unsupported.clone();
        st.off_cpu = offcpu::Status::of(&collected);
        let py = self.policy.symbolizer.python_stats();
        st.python_named = py.named;
        st.python_unnamed = py.failed.clone();
        let took_ms = started.elapsed().as_millis() as u64;
        if self.args.verbose_mode {
            info!(
                samples = total,
                lost,
                profiles = sent,
                took_ms,
                "pyroscope.ebpf collected"
            );
        } else {
            debug!(
                samples = total,
                lost,
                profiles = sent,
                took_ms,
                "pyroscope.ebpf collected"
            );
        }
    }
}

/// The time range of one collected interval, for the profiles' time and duration.
#[derive(Debug, Clone, Copy)]
struct TimeRange {
    now: SystemTime,
    time_nanos: i64,
    duration_nanos: i64,
}

impl TimeRange {
    /// The interval ends now; it began `collection.duration` ago (the source's own clock), or
    /// at the previous collect when the source does not know.
    fn new(last_collect: SystemTime, collection: &Collection) -> Self {
        let now = SystemTime::now();
        let start = if collection.duration.is_zero() {
            last_collect
        } else {
            now.checked_sub(collection.duration).unwrap_or(last_collect)
        };
        TimeRange {
            now,
            time_nanos: start
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as i64,
            duration_nanos: now.duration_since(start).unwrap_or_default().as_nanos() as i64,
        }
    }
}

/// Which profile a sample goes to: a current target, or one its process lost since the last
/// collect (of the target set of that time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Current(u64, Assignment),
    Retired(u64, Assignment),
}

impl Slot {
    fn of(owner: &Owner<'_, Placement>) -> Slot {
        match owner {
            Owner::Current(p) => Slot::Current(p.generation, p.assignment),
            Owner::Retired(p) => Slot::Retired(p.generation, p.assignment),
        }
    }
}

fn target_set(args: &Arguments, component_id: &str) -> TargetSet {
    TargetSet::new(
        &args.targets,
        &args.default_target,
        args.targets_only,
        component_id,
    )
}

fn symbolizer_config(base: &SymbolizerConfig, args: &Arguments) -> SymbolizerConfig {
    SymbolizerConfig {
        pid_cache_size: args.pid_cache_size.0,
        elf_cache_size: args.elf_cache_size.0,
        demangle: args.demangle.0,
        python: args.python_enabled && base.python,
        ..base.clone()
    }
}
