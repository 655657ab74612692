//! How `pyroscope.ebpf` answers the profiling [`Session`](ebpf_probe::session::Session): a
//! process goes to the target its pid or container matches ([`TargetSet::assign`]), its
//! container ID is read once per process, its symbols are read as soon as it is profiled, and
//! the symbol, container and process-name caches forget it when the session says so.

use std::sync::Arc;

use ebpf_probe::cgroup::ContainerIdCache;
use ebpf_probe::session::{Decision, Forget, Policy};
use ebpf_probe::symbolize::Symbolizer;

use super::comm::CommCache;
use super::targets::{Assignment, Target, TargetSet};

/// A process's target: an assignment in one generation of the target set. It stays valid
/// after the component replaces its targets, so that a process that lost its target keeps it
/// until the next collect.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Which target set (incremented by every update of the targets).
    pub generation: u64,
    /// The target set the assignment indexes.
    pub set: Arc<TargetSet>,
    /// Where in `set`.
    pub assignment: Assignment,
}

impl Placement {
    /// The target.
    pub fn target(&self) -> Option<&Target> {
        self.set.get(self.assignment)
    }
}

/// The component's [`Policy`]: its targets, caches and which stacks it collects.
pub struct TargetPolicy {
    /// The current targets.
    pub targets: Arc<TargetSet>,
    /// Generation of `targets` (see [`Placement::generation`]).
    pub generation: u64,
    /// Container IDs by pid.
    pub cgroups: ContainerIdCache,
    /// Symbols of the profiled processes.
    pub symbolizer: Symbolizer,
    /// Collect user-space stacks (`collect_user_profile`).
    pub user: bool,
    /// Collect kernel stacks (`kernel_frames` / `collect_kernel_profile`).
    pub kernel: bool,
    /// Process names (`comm`).
    pub(super) comms: CommCache,
    /// Read process names as processes start being profiled (`comm` is not `none`).
    pub comm_wanted: bool,
}

impl TargetPolicy {
    /// A policy over `targets` (generation 0) that reads no process names (`comm = "none"`).
    pub fn new(
        targets: Arc<TargetSet>,
        cgroups: ContainerIdCache,
        symbolizer: Symbolizer,
        user: bool,
        kernel: bool,
    ) -> Self {
        Self {
            targets,
            generation: 0,
            cgroups,
            symbolizer,
            user,
            kernel,
            comms: super::comm::CommCache::new("/proc".into()),
            comm_wanted: false,
        }
    }

    /// Replaces the targets (a new generation).
    pub fn set_targets(&mut self, targets: TargetSet) {
        self.targets = Arc::new(targets);
        self.generation += 1;
    }
}

impl Policy for TargetPolicy {
    type Target = Placement;
    /// The container ID, read once per process.
    type Process = Option<String>;

    fn inspect(&mut self, pid: u32) -> Option<String> {
        self.cgroups.get(pid)
    }

    fn decide(&mut self, pid: u32, container_id: &Option<String>) -> Decision<Placement> {
        let target = self
            .targets
            .assign(pid, container_id.as_deref())
            .map(|assignment| Placement {
                generation: self.generation,
                set: Arc::clone(&self.targets),
                assignment,
            });
        Decision {
            target,
            user: self.user,
            kernel: self.kernel,
        }
    }

    fn started(&mut self, pid: u32) {
        if self.user {
            // Read its symbols now: it may exit before the next collect.
            self.symbolizer.preload(pid);
        }
        if self.comm_wanted {
            self.comms.preload(pid);
        }
    }

    fn forget(&mut self, pid: u32, what: Forget) {
        self.symbolizer.forget_pid(pid);
        // An exec renames the process too.
        self.comms.forget(pid);
        if what == Forget::Process {
            self.cgroups.forget(pid);
        }
    }
}
