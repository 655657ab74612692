//! Arguments of `pyroscope.ebpf`, with the reference page's names and defaults plus `demangle`.
//! Invalid values (a zero sample rate or interval, sizes below one, an unknown demangle mode)
//! fail while decoding, so the runtime reports them at the attribute.

use std::collections::BTreeMap;
use std::fmt;

use ebpf_probe::symbolize::Demangle;
use river_parser::decode::{CapsuleRef, Duration};
use serde::{Deserialize, Deserializer};

use crate::pyroscope::appendable::AppendableRef;

/// The component's block body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arguments {
    /// Receivers of the profiles.
    pub forward_to: Vec<CapsuleRef<AppendableRef>>,
    /// Targets to group profiles by (container ID or `__process_pid__`).
    #[serde(default)]
    pub targets: Vec<BTreeMap<String, String>>,
    /// Labels of processes that match no target (when `targets_only` is false).
    #[serde(default)]
    pub default_target: BTreeMap<String, String>,
    /// Drop processes that match no target.
    #[serde(default = "yes")]
    pub targets_only: bool,
    /// How often profiles are collected and sent.
    #[serde(default = "default_collect_interval")]
    pub collect_interval: Interval,
    /// Samples per second per CPU.
    #[serde(default)]
    pub sample_rate: SampleRate,
    /// Entries of the pid → symbol table LRU.
    #[serde(default = "default_pid_cache_size")]
    pub pid_cache_size: CacheSize,
    /// Entries of the ELF → symbols LRU.
    #[serde(default = "default_elf_cache_size")]
    pub elf_cache_size: CacheSize,
    /// Entries of the pid → container ID LRU.
    #[serde(default = "default_container_id_cache_size")]
    pub container_id_cache_size: CacheSize,
    /// Collect user-space stacks.
    #[serde(default = "yes")]
    pub collect_user_profile: bool,
    /// Collect kernel stacks.
    #[serde(default = "yes")]
    pub collect_kernel_profile: bool,
    /// C++/Rust demangling: `none`, `simplified`, `templates` or `full`.
    #[serde(default)]
    pub demangle: DemangleMode,
}

fn yes() -> bool {
    true
}

fn default_collect_interval() -> Interval {
    Interval(Duration::from_secs(15))
}

fn default_pid_cache_size() -> CacheSize {
    CacheSize(32)
}

fn default_elf_cache_size() -> CacheSize {
    CacheSize(128)
}

fn default_container_id_cache_size() -> CacheSize {
    CacheSize(64)
}

impl Arguments {
    /// Arguments with every default and these receivers.
    pub fn new(forward_to: Vec<AppendableRef>) -> Self {
        Arguments {
            forward_to: forward_to
                .into_iter()
                .map(|r| CapsuleRef(std::sync::Arc::new(r)))
                .collect(),
            targets: Vec::new(),
            default_target: BTreeMap::new(),
            targets_only: true,
            collect_interval: default_collect_interval(),
            sample_rate: SampleRate::default(),
            pid_cache_size: default_pid_cache_size(),
            elf_cache_size: default_elf_cache_size(),
            container_id_cache_size: default_container_id_cache_size(),
            collect_user_profile: true,
            collect_kernel_profile: true,
            demangle: DemangleMode::default(),
        }
    }

    /// The receivers.
    pub fn receivers(&self) -> Vec<AppendableRef> {
        self.forward_to.iter().map(|c| (*c.0).clone()).collect()
    }
}

/// A positive duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Duration::deserialize(d)?;
        if v.as_std().is_zero() {
            return Err(serde::de::Error::custom(
                "collect_interval must be greater than 0",
            ));
        }
        Ok(Interval(v))
    }
}

/// Samples per second, 1 ..= 1_000_000 (perf's frequency mode refuses more than the kernel's
/// `perf_event_max_sample_rate` anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRate(pub u32);

impl Default for SampleRate {
    fn default() -> Self {
        SampleRate(97)
    }
}

impl<'de> Deserialize<'de> for SampleRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if !(1..=1_000_000).contains(&v) {
            return Err(serde::de::Error::custom(format!(
                "sample_rate must be between 1 and 1000000, got {v}"
            )));
        }
        Ok(SampleRate(v as u32))
    }
}

/// A cache size of at least one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSize(pub usize);

impl<'de> Deserialize<'de> for CacheSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if v < 1 {
            return Err(serde::de::Error::custom(format!(
                "cache size must be greater than 0, got {v}"
            )));
        }
        Ok(CacheSize(usize::try_from(v).unwrap_or(usize::MAX)))
    }
}

/// The `demangle` argument (default `none`, as in Alloy).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DemangleMode(pub Demangle);

impl Default for DemangleMode {
    fn default() -> Self {
        DemangleMode(Demangle::None)
    }
}

impl fmt::Debug for DemangleMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for DemangleMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Demangle>()
            .map(DemangleMode)
            .map_err(serde::de::Error::custom)
    }
}
