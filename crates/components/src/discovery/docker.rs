//! `discovery.docker` (in progress).
