//! Every component rill knows, in one list: `rill run` builds its runtime from [`registry`].

/// The registry of all real components.
pub fn registry() -> flow_runtime::Registry {
    let mut r = flow_runtime::Registry::new();
    r.register::<crate::discovery::docker::DockerComponent>("discovery.docker");
    r.register::<crate::discovery::kubernetes::KubernetesComponent>("discovery.kubernetes");
    r.register::<crate::discovery::process::ProcessComponent>("discovery.process");
    r.register::<crate::discovery::relabel::Relabel>("discovery.relabel");
    r.register::<crate::pyroscope::ebpf::Ebpf>("pyroscope.ebpf");
    r.register::<crate::pyroscope::relabel::Relabel>("pyroscope.relabel");
    r.register::<crate::pyroscope::store::Store>("pyroscope.store");
    r.register::<crate::pyroscope::write::Write>("pyroscope.write");
    r
}
