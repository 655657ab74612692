//! `discovery.relabel` (in progress).
