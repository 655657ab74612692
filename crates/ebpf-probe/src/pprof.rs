//! `pprof` (in progress).
