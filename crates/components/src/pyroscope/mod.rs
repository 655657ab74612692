//! `pyroscope.*` components: profiling and pushing profiles.

pub mod write;
