//! `discovery.*` components: they find targets (label sets).

pub mod docker;
pub mod relabel;
