//! `pyroscope.write` (in progress).
