//! `cgroup` (in progress).
