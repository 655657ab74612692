//! `discovery.*` components: they find targets (label sets).

pub mod component;
pub mod docker;
pub mod kubernetes;
pub mod output;
pub mod process;
pub mod relabel;
pub mod target;
