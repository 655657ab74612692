//! `discovery.*` components: they find targets (label sets).

pub mod docker;
pub mod kubernetes;
pub mod output;
pub mod relabel;
