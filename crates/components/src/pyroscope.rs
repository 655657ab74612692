//! `pyroscope.*` components: profiling and pushing profiles.

pub mod appendable;
pub mod ebpf;
pub mod push_proto;
pub mod relabel;
pub mod write;
