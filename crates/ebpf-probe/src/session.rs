//! A profiling session: the per-process bookkeeping every user of a [`SampleSource`] needs,
//! shared by `pyroscope.ebpf` and `rill profile`. It answers the kernel's unknown-pid events
//! with the caller's [`Policy`], remembers exits and execs until the collect that carries the
//! processes' last samples (only then are their caches forgotten), keeps a process that loses
//! its target attributed to it until the next collect, and re-reads the pids waiting for a
//! decision when events were lost. It knows nothing of what a target is.

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, warn};

use crate::probe::{Collection, PidConfig, ProbeError, ProbeEvent, SampleSource, StackSample};

/// What the caller decides and caches about processes.
pub trait Policy {
    /// Where a profiled process's samples go (a target, a profile).
    type Target: Clone;
    /// What the caller reads once about a process and reuses when it decides again (for
    /// example its container ID).
    type Process;

    /// Reads what [`Policy::decide`] needs about a process new to the session.
    fn inspect(&mut self, pid: u32) -> Self::Process;
    /// Decides what the kernel collects for `pid` and where its samples go.
    fn decide(&mut self, pid: u32, process: &Self::Process) -> Decision<Self::Target>;
    /// `pid` is profiled now and was not before: a chance to read its symbols while it runs.
    fn started(&mut self, pid: u32) {
        let _ = pid;
    }
    /// Drops what is cached about `pid` (after the collect that carried its last samples, or
    /// when its pid was reused).
    fn forget(&mut self, pid: u32, what: Forget);
}

/// What to forget about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forget {
    /// It called exec: what was read about its program (symbols) is stale.
    Program,
    /// It exited: everything.
    Process,
}

/// A [`Policy`] decision for one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<T> {
    /// Where its samples go; `None`: not profiled (the kernel skips its samples).
    pub target: Option<T>,
    /// Collect user-space stacks.
    pub user: bool,
    /// Collect kernel stacks.
    pub kernel: bool,
}

/// Who a sample of the interval belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a, T> {
    /// The process's current target.
    Current(&'a T),
    /// The target the process had when the interval began and lost since (re-decided after a
    /// target change, or exited before it).
    Retired(&'a T),
}

impl<'a, T> Owner<'a, T> {
    /// The target, current or retired.
    pub fn target(&self) -> &'a T {
        match *self {
            Owner::Current(t) | Owner::Retired(t) => t,
        }
    }
}

/// Which profile of an interval a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileKind {
    /// [`Collection::samples`]: counts of CPU samples.
    Cpu,
    /// [`Collection::off_cpu`]: estimated off-CPU nanoseconds.
    OffCpu,
}

/// The result of [`Session::collect`].
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// What the source collected (all samples, attributed or not).
    pub collection: Collection,
    /// Samples of processes with no target, current or retired.
    pub unattributed: u64,
    /// Off-CPU nanoseconds of processes with no target, current or retired.
    pub unattributed_off_cpu_nanos: u64,
}

/// What the session knows about one process.
#[derive(Debug)]
struct Known<P, T> {
    process: P,
    target: Option<T>,
    config: PidConfig,
}

/// The per-process state of one profiling run; see the module documentation.
pub struct Session<P: Policy> {
    events: Option<UnboundedReceiver<ProbeEvent>>,
    procs: HashMap<u32, Known<P::Process, P::Target>>,
    /// Exited since the last collect: forgotten after it.
    exited: HashSet<u32>,
    /// Called exec since the last collect: their programs are forgotten after it.
    execed: HashSet<u32>,
    /// Targets processes lost since the last collect.
    retired: HashMap<u32, P::Target>,
}

impl<P: Policy> std::fmt::Debug for Session<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("known", &self.procs.len())
            .field("profiled", &self.profiled())
            .field("exited", &self.exited.len())
            .field("execed", &self.execed.len())
            .field("retired", &self.retired.len())
            .finish()
    }
}

impl<P: Policy> Default for Session<P> {
    fn default() -> Self {
        Session {
            events: None,
            procs: HashMap::new(),
            exited: HashSet::new(),
            execed: HashSet::new(),
            retired: HashMap::new(),
        }
    }
}

impl<P: Policy> Session<P> {
    /// A session without a source; see [`Session::attach`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts reading `source`'s events. A new source starts with an empty pid map, so every
    /// decision is forgotten (exits and execs already seen are still forgotten after the next
    /// collect).
    pub fn attach(&mut self, source: &mut dyn SampleSource) {
        self.events = source.take_events();
        self.procs.clear();
    }

    /// Stops reading events (the source is being replaced) and forgets every decision.
    pub fn detach(&mut self) {
        self.events = None;
        self.procs.clear();
    }

    /// Processes the session has decided about.
    pub fn known(&self) -> usize {
        self.procs.len()
    }

    /// Processes with a target.
    pub fn profiled(&self) -> usize {
        self.procs.values().filter(|p| p.target.is_some()).count()
    }

    /// The current target of `pid`, if it has one.
    pub fn target(&self, pid: u32) -> Option<&P::Target> {
        self.procs.get(&pid).and_then(|p| p.target.as_ref())
    }

    /// Decides about `pid` now (for a process known before the kernel samples it), as if the
    /// kernel had reported it.
    pub fn add(&mut self, source: &mut dyn SampleSource, policy: &mut P, pid: u32) {
        self.procs.remove(&pid);
        self.decide(source, policy, pid);
    }

    /// Handles the events received so far: an unknown pid is decided (a reused pid is
    /// forgotten first), exits and execs are remembered until the next collect. Returns whether
    /// some pid was decided.
    pub fn handle_events(&mut self, source: &mut dyn SampleSource, policy: &mut P) -> bool {
        let mut decided = false;
        while let Some(Ok(event)) = self.events.as_mut().map(|rx| rx.try_recv()) {
            match event {
                ProbeEvent::UnknownPid(pid) => {
                    // The kernel has no configuration for it: a new process (possibly reusing
                    // the pid of one that exited), so it is inspected afresh.
                    if self.exited.remove(&pid) {
                        policy.forget(pid, Forget::Process);
                    }
                    self.add(source, policy, pid);
                    decided = true;
                }
                ProbeEvent::PidExit(pid) => {
                    // Its last samples arrive with the next collect; forget it after that.
                    self.exited.insert(pid);
                }
                ProbeEvent::PidExec(pid) => {
                    self.execed.insert(pid);
                }
            }
        }
        decided
    }

    /// Decides again about every known process (the policy's targets changed). A process that
    /// loses its target keeps it until the next collect: its samples of the interval were
    /// taken while it belonged there (a short-lived container typically exits, then discovery
    /// drops it, before the collect). Exited processes are not decided again (the kernel has
    /// forgotten them; configuring them would leave a stale kernel entry): they lose their
    /// target the same way.
    pub fn redecide(&mut self, source: &mut dyn SampleSource, policy: &mut P) {
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            let before = self.target(pid).cloned();
            if self.exited.contains(&pid) {
                if let Some(known) = self.procs.get_mut(&pid) {
                    known.target = None;
                }
            } else {
                self.decide(source, policy, pid);
            }
            if let (Some(target), None) = (before, self.target(pid)) {
                self.retired.insert(pid, target);
            }
        }
    }

    /// Handles pending events, reads the interval from `source` and hands every sample with an
    /// owner to `each` (with the whole collection, for its duration); then forgets the processes that exited (and the programs replaced by
    /// exec) before or during the interval, and the targets retired during it. When the kernel
    /// lost events, the pids still waiting for a decision are decided (their unknown-pid event
    /// may be among the lost). On error nothing is forgotten: the next collect carries the
    /// samples.
    pub fn collect(
        &mut self,
        source: &mut dyn SampleSource,
        policy: &mut P,
        mut each: impl FnMut(&mut P, &Collection, &StackSample, Owner<'_, P::Target>),
    ) -> Result<Collected, ProbeError> {
        self.collect_profiles(source, policy, |policy, collection, kind, sample, owner| {
            if kind == ProfileKind::Cpu {
                each(policy, collection, sample, owner);
            }
        })
    }

    /// [`Session::collect`] for every profile of the interval: the CPU samples, then the
    /// off-CPU samples (`count` in nanoseconds), each with its [`ProfileKind`].
    pub fn collect_profiles(
        &mut self,
        source: &mut dyn SampleSource,
        policy: &mut P,
        mut each: impl FnMut(&mut P, &Collection, ProfileKind, &StackSample, Owner<'_, P::Target>),
    ) -> Result<Collected, ProbeError> {
        self.handle_events(source, policy);
        let collection = source.collect()?;
        if collection.lost.events > 0 || collection.lost.pid_map_full > 0 {
            self.resync(source, policy);
        }
        let mut unattributed = [0u64; 2];
        let kinds = [
            (ProfileKind::Cpu, &collection.samples),
            (ProfileKind::OffCpu, &collection.off_cpu.samples),
        ];
        for (i, (kind, samples)) in kinds.into_iter().enumerate() {
            for sample in samples {
                let owner = match self.target(sample.pid) {
                    Some(target) => Owner::Current(target),
                    None => match self.retired.get(&sample.pid) {
                        Some(target) => Owner::Retired(target),
                        None => {
                            unattributed[i] += sample.count;
                            continue;
                        }
                    },
                };
                each(policy, &collection, kind, sample, owner);
            }
        }
        self.retired.clear();
        // Exited processes: their last samples are out; forget them everywhere.
        for pid in std::mem::take(&mut self.exited) {
            self.procs.remove(&pid);
            policy.forget(pid, Forget::Process);
        }
        for pid in std::mem::take(&mut self.execed) {
            policy.forget(pid, Forget::Program);
        }
        Ok(Collected {
            collection,
            unattributed: unattributed[0],
            unattributed_off_cpu_nanos: unattributed[1],
        })
    }

    /// Decides the pids the kernel reported as unknown and that have no configuration yet.
    fn resync(&mut self, source: &mut dyn SampleSource, policy: &mut P) {
        let pending = match source.pending_pids() {
            Ok(pending) => pending,
            Err(e) => {
                warn!(
                    error = &e as &(dyn std::error::Error + 'static),
                    "cannot list pending pids"
                );
                return;
            }
        };
        for pid in pending {
            self.add(source, policy, pid);
        }
    }

    /// Decides about `pid` (inspecting it if it is new) and tells the kernel when its
    /// configuration changed.
    fn decide(&mut self, source: &mut dyn SampleSource, policy: &mut P, pid: u32) {
        let (process, before) = match self.procs.remove(&pid) {
            Some(known) => (known.process, Some((known.config, known.target.is_some()))),
            None => (policy.inspect(pid), None),
        };
        let decision = policy.decide(pid, &process);
        let config = PidConfig {
            profile: decision.target.is_some(),
            user: decision.user,
            kernel: decision.kernel,
        };
        self.procs.insert(
            pid,
            Known {
                process,
                target: decision.target,
                config,
            },
        );
        if before.map(|(config, _)| config) != Some(config) {
            if let Err(e) = source.set_pid_config(pid, config) {
                warn!(
                    pid,
                    error = &e as &(dyn std::error::Error + 'static),
                    "cannot configure pid"
                );
            }
        }
        let was_profiled = before.is_some_and(|(_, profiled)| profiled);
        if config.profile && !was_profiled {
            policy.started(pid);
        }
        debug!(pid, profile = config.profile, "pid configured");
    }
}

#[cfg(test)]
mod tests;
