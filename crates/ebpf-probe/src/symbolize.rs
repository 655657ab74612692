//! `symbolize` (in progress).
