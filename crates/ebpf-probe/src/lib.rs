//! rill's eBPF CPU profiler: the BPF program (C, built by `scripts/build-bpf.sh` and committed),
//! its aya loader (`probe`), the per-process bookkeeping of a profiling run (`session`), and the
//! user-space side that is tested without root: symbolization (`symbolize`), container IDs from
//! cgroups (`cgroup`) and pprof (`pprof`).

pub mod cgroup;
pub mod pprof;
pub mod probe;
pub mod python;
pub mod session;
pub mod symbolize;
pub mod unwind;
