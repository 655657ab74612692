//! Arguments of `pyroscope.ebpf`, with the names and defaults of Grafana Agent Flow's reference
//! page and of Grafana Alloy ≥ 1.11 (`comm`, `pid_label`, `kernel_frames`, `lazy_mode`, the
//! language switches, the arguments Alloy keeps only for compatibility, and those of probe
//! profiling and trace correlation rill accepts without effect). Invalid values (a
//! zero sample rate or interval, sizes below one, an unknown demangle or comm mode) fail while
//! decoding; rules across arguments are in the [`Validate`] impl. Both point at the attribute.

use std::collections::BTreeMap;
use std::fmt;

use ebpf_probe::symbolize::Demangle;
use river_parser::decode::{CapsuleRef, Duration, Invalid};
use river_parser::Validate;
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
    /// Collect kernel stacks (Agent Flow's name; see [`Arguments::kernel_stacks`]).
    #[serde(default)]
    pub collect_kernel_profile: Option<bool>,
    /// Collect kernel stacks (Alloy's name for `collect_kernel_profile`).
    #[serde(default)]
    pub kernel_frames: Option<bool>,
    /// C++/Rust demangling: `none`, `simplified`, `templates` or `full`.
    #[serde(default)]
    pub demangle: DemangleMode,
    /// The process name as a `comm` sample label and/or a root frame.
    #[serde(default)]
    pub comm: CommMode,
    /// The process ID as a `pid` sample label.
    #[serde(default)]
    pub pid_label: bool,
    /// Load the probe only once there is a target to profile.
    #[serde(default)]
    pub lazy_mode: bool,
    /// Log every collect at `info` (instead of `debug`).
    #[serde(default)]
    pub verbose_mode: bool,
    /// Accepted; rill's probe checks no kernel version (it probes features instead).
    #[serde(default)]
    pub no_kernel_version_check: bool,
    /// Record the Python functions CPython processes run (3.6–3.13), with file and line, in
    /// place of the interpreter's eval-loop frames (Alloy's `python_enabled`, default true).
    #[serde(default = "yes")]
    pub python_enabled: bool,
    /// Language switches of Alloy's profiler: accepted; those rill does not unwind are shown
    /// as native frames (docs/components/pyroscope.ebpf.md, Languages).
    #[serde(default = "yes")]
    pub go_enabled: bool,
    #[serde(default = "yes")]
    pub hotspot_enabled: bool,
    #[serde(default = "yes")]
    pub perl_enabled: bool,
    #[serde(default = "yes")]
    pub php_enabled: bool,
    #[serde(default = "yes")]
    pub ruby_enabled: bool,
    #[serde(default = "yes")]
    pub v8_enabled: bool,
    #[serde(default = "yes")]
    pub dotnet_enabled: bool,
    /// Off-CPU profiles: the probability (0 to 1) that a thread of a profiled process leaving
    /// a CPU is recorded, as in Alloy; 0 (the default) turns them off. Out of range is a load
    /// error at this attribute.
    #[serde(default)]
    pub off_cpu_threshold: f64,
    /// Alloy keeps these for compatibility and ignores them; so does rill (with a warning).
    #[serde(default)]
    pub build_id_cache_size: Option<i64>,
    #[serde(default)]
    pub same_file_cache_size: Option<i64>,
    #[serde(default)]
    pub cache_rounds: Option<i64>,
    #[serde(default)]
    pub go_table_fallback: Option<bool>,
    #[serde(default)]
    pub symbols_map_size: Option<i64>,
    #[serde(default)]
    pub pid_map_size: Option<i64>,
    /// Alloy ≥ 1.12's probe profiling and ≥ 1.19's trace correlation: accepted (probe links
    /// checked for their form), without effect here, named once per load
    /// ([`Arguments::without_effect`]).
    #[serde(default)]
    pub load_probe: bool,
    /// `kprobe:SYM`, `kretprobe:SYM`, `uprobe:PATH:SYM` or `uretprobe:PATH:SYM`.
    #[serde(default)]
    pub probe_links: Vec<String>,
    /// Alloy 1.12's name of `probe_links` (deprecated there in favour of it).
    #[serde(default)]
    pub u_probe_links: Option<Vec<String>>,
    /// The BPF file system Alloy pins its map shared with Beyla/OBI under.
    #[serde(default)]
    pub bpf_fs_root: Option<String>,
    /// `trace_id`/`span_id` sample labels from OBI (Alloy's default: true).
    #[serde(default)]
    pub obi_process_context_enabled: Option<bool>,
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
            collect_kernel_profile: None,
            kernel_frames: None,
            demangle: DemangleMode::default(),
            comm: CommMode::default(),
            pid_label: false,
            lazy_mode: false,
            verbose_mode: false,
            no_kernel_version_check: false,
            python_enabled: true,
            go_enabled: true,
            hotspot_enabled: true,
            perl_enabled: true,
            php_enabled: true,
            ruby_enabled: true,
            v8_enabled: true,
            dotnet_enabled: true,
            off_cpu_threshold: 0.0,
            build_id_cache_size: None,
            same_file_cache_size: None,
            cache_rounds: None,
            go_table_fallback: None,
            symbols_map_size: None,
            pid_map_size: None,
            load_probe: false,
            probe_links: Vec::new(),
            u_probe_links: None,
            bpf_fs_root: None,
            obi_process_context_enabled: None,
        }
    }

    /// Whether kernel stacks are collected: `kernel_frames`, else `collect_kernel_profile`,
    /// else true (both default to true). [`Validate`] refuses the two when they disagree.
    pub fn kernel_stacks(&self) -> bool {
        self.kernel_frames
            .or(self.collect_kernel_profile)
            .unwrap_or(true)
    }

    /// The arguments Alloy keeps only for compatibility that this body sets.
    pub fn deprecated_set(&self) -> Vec<&'static str> {
        [
            ("build_id_cache_size", self.build_id_cache_size.is_some()),
            ("same_file_cache_size", self.same_file_cache_size.is_some()),
            ("cache_rounds", self.cache_rounds.is_some()),
            ("go_table_fallback", self.go_table_fallback.is_some()),
            ("symbols_map_size", self.symbols_map_size.is_some()),
            ("pid_map_size", self.pid_map_size.is_some()),
            ("u_probe_links", self.u_probe_links.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// The arguments set to something rill has no engine for: probe profiling (`load_probe`,
    /// `probe_links`, `u_probe_links`) and the correlation with OBI traces (`bpf_fs_root`,
    /// `obi_process_context_enabled = true`). Accepted so that Alloy's files load; no probe
    /// profiles and no `trace_id`/`span_id` labels come of them.
    pub fn without_effect(&self) -> Vec<&'static str> {
        [
            ("load_probe", self.load_probe),
            ("probe_links", !self.probe_links.is_empty()),
            (
                "u_probe_links",
                self.u_probe_links.as_ref().is_some_and(|l| !l.is_empty()),
            ),
            ("bpf_fs_root", self.bpf_fs_root.is_some()),
            (
                "obi_process_context_enabled",
                self.obi_process_context_enabled == Some(true),
            ),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
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

/// The `comm` argument: where the process name (`/proc/PID/comm`) goes. Alloy accepts `""` as
/// `none`; so does rill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CommMode {
    /// Nowhere (the default).
    #[default]
    None,
    /// A `comm` sample label.
    Label,
    /// A root frame named after the process.
    Stackframe,
    /// Both.
    Both,
}

impl CommMode {
    /// Whether samples get a `comm` label.
    pub fn label(self) -> bool {
        matches!(self, CommMode::Label | CommMode::Both)
    }

    /// Whether stacks get a root frame named after the process.
    pub fn stackframe(self) -> bool {
        matches!(self, CommMode::Stackframe | CommMode::Both)
    }

    /// The name as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            CommMode::None => "none",
            CommMode::Label => "label",
            CommMode::Stackframe => "stackframe",
            CommMode::Both => "both",
        }
    }
}

impl<'de> Deserialize<'de> for CommMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "" | "none" => CommMode::None,
            "label" => CommMode::Label,
            "stackframe" => CommMode::Stackframe,
            "both" => CommMode::Both,
            other => {
                return Err(serde::de::Error::custom(format!(
                    "invalid comm mode {other:?}, valid values are: \"none\", \"label\", \"stackframe\", \"both\""
                )))
            }
        })
    }
}

/// Checks a probe link's form: `kprobe:SYM`, `kretprobe:SYM`, `uprobe:PATH:SYM` or
/// `uretprobe:PATH:SYM` (the forms Alloy's profiler parses; PATH absolute).
fn check_probe_link(link: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid probe link {link:?}: {why} (expected kprobe:SYMBOL, kretprobe:SYMBOL, \
             uprobe:/PATH:SYMBOL or uretprobe:/PATH:SYMBOL)"
        ))
    };
    let Some((kind, rest)) = link.split_once(':') else {
        return bad("no probe type");
    };
    match kind {
        "kprobe" | "kretprobe" => {
            if rest.is_empty() || rest.contains(':') {
                return bad("a kernel probe names one symbol");
            }
        }
        "uprobe" | "uretprobe" => {
            let Some((path, symbol)) = rest.rsplit_once(':') else {
                return bad("a user probe names a file and a symbol");
            };
            if !path.starts_with('/') || symbol.is_empty() {
                return bad("a user probe names an absolute file path and a symbol");
            }
        }
        _ => return bad("unknown probe type"),
    }
    Ok(())
}

/// `off_cpu_threshold` is a probability. `kernel_frames` (Alloy) and `collect_kernel_profile`
/// (Agent Flow) name the same switch:
/// written together they must agree (Alloy ignores `collect_kernel_profile`; rill does not know
/// which one the author meant). Probe links must have one of the forms Alloy parses.
impl Validate for Arguments {
    fn validate(&self) -> Result<(), Invalid> {
        for (name, links) in [
            ("probe_links", Some(&self.probe_links)),
            ("u_probe_links", self.u_probe_links.as_ref()),
        ] {
            for link in links.into_iter().flatten() {
                check_probe_link(link).map_err(|msg| Invalid::attr(name, msg))?;
            }
        }
        if !(0.0..=1.0).contains(&self.off_cpu_threshold) {
            return Err(Invalid::attr(
                "off_cpu_threshold",
                format!(
                    "off_cpu_threshold must be between 0 and 1 (the probability that an off-CPU \
                     event is recorded; 0 turns off-CPU profiles off), got {}",
                    self.off_cpu_threshold
                ),
            ));
        }
        if let (Some(frames), Some(collect)) = (self.kernel_frames, self.collect_kernel_profile) {
            if frames != collect {
                return Err(Invalid::attr(
                    "kernel_frames",
                    format!(
                        "kernel_frames = {frames} contradicts collect_kernel_profile = {collect}: \
                         both choose whether kernel stacks are collected; keep one (kernel_frames \
                         is Alloy's name)"
                    ),
                ));
            }
        }
        Ok(())
    }
}
