//! `pyroscope.*` components: profiling, pushing and storing profiles.

pub mod appendable;
pub mod ebpf;
pub mod push_proto;
pub mod relabel;
pub mod store;
pub mod write;
