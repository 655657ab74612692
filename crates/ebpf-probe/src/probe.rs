//! `probe` (in progress).
