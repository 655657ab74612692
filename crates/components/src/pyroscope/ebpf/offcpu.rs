//! The off-CPU side of `pyroscope.ebpf` (`off_cpu_threshold`): the probe's threshold from the
//! argument, when a change needs the probe reloaded (turning off-CPU profiles on or off) and
//! when it is applied live, the labels of the off-CPU profile (the target's, with
//! `__name__ = "offcpu"` as Alloy names it), and its metrics and debug information.

use std::collections::BTreeMap;

use ebpf_probe::probe::{OffCpuCollection, OffCpuThreshold, SampleSource};
use ebpf_probe::session::{Collected, ProfileKind};
use flow_runtime::util::error_chain;
use prometheus_client::metrics::counter::Counter;
use river_parser::{Number, Value};
use tracing::warn;

use super::Arguments;

/// `__name__` of the off-CPU profile (Alloy's `pyroscope.ebpf`).
pub const METRIC_NAME: &str = "offcpu";

/// The probe's threshold (the argument is validated to 0..=1; anything else is off).
pub(super) fn threshold(args: &Arguments) -> OffCpuThreshold {
    OffCpuThreshold::from_probability(args.off_cpu_threshold).unwrap_or(OffCpuThreshold::OFF)
}

/// Whether going from `old` to `new` turns off-CPU profiles on or off (programs and maps are
/// set up at load, so the probe is reloaded); other changes are applied live.
pub(super) fn needs_reload(old: &Arguments, new: &Arguments) -> bool {
    threshold(old).is_off() != threshold(new).is_off()
}

/// Gives the source the arguments' threshold (a source without off-CPU profiles is told only
/// when the threshold is above 0, and the refusal is logged).
pub(super) fn apply(source: &mut dyn SampleSource, args: &Arguments) {
    let t = threshold(args);
    match source.set_off_cpu_threshold(t) {
        Ok(()) => {}
        Err(e) if !t.is_off() => warn!(
            error = %error_chain(&e),
            off_cpu_threshold = args.off_cpu_threshold,
            "pyroscope.ebpf: off-CPU profiles unavailable"
        ),
        Err(_) => {}
    }
}

/// The labels of a target's profile of this kind.
pub(super) fn labels(
    target: &BTreeMap<String, String>,
    kind: ProfileKind,
) -> BTreeMap<String, String> {
    let mut labels = target.clone();
    if kind == ProfileKind::OffCpu {
        labels.insert("__name__".into(), METRIC_NAME.into());
    }
    labels
}

/// `pyroscope_ebpf_off_cpu_*`.
#[derive(Debug, Clone, Default)]
pub(super) struct OffCpuMetrics {
    nanos: Counter,
    recorded: Counter,
    lost: Counter,
    lost_nanos: Counter,
    dropped: Counter,
    unattributed_nanos: Counter,
}

impl OffCpuMetrics {
    pub(super) fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "pyroscope_ebpf_off_cpu_nanoseconds",
            "Estimated off-CPU time in the off-CPU profiles (recorded time / off_cpu_threshold)",
            self.nanos.clone(),
        );
        r.register(
            "pyroscope_ebpf_off_cpu_events",
            "Off-CPU events recorded by the kernel (drawn with probability off_cpu_threshold)",
            self.recorded.clone(),
        );
        r.register(
            "pyroscope_ebpf_off_cpu_lost_events",
            "Off-CPU events lost in the kernel (full maps, full ring buffer) or degraded (stack errors)",
            self.lost.clone(),
        );
        r.register(
            "pyroscope_ebpf_off_cpu_lost_nanoseconds",
            "Recorded off-CPU time of the lost events (unscaled)",
            self.lost_nanos.clone(),
        );
        r.register(
            "pyroscope_ebpf_off_cpu_dropped_events",
            "Off-CPU records dropped on purpose: the thread id was reused by a new thread, or the process stopped being profiled",
            self.dropped.clone(),
        );
        r.register(
            "pyroscope_ebpf_off_cpu_unattributed_nanoseconds",
            "Estimated off-CPU time of processes that had no target",
            self.unattributed_nanos.clone(),
        );
    }

    pub(super) fn observe(&self, c: &OffCpuCollection, unattributed_nanos: u64) {
        self.nanos.inc_by(c.total_nanos());
        self.recorded.inc_by(c.counters.recorded);
        self.lost.inc_by(c.lost.total());
        self.lost_nanos.inc_by(c.lost.lost_nanos);
        self.dropped.inc_by(c.lost.stale + c.lost.not_profiled);
        self.unattributed_nanos.inc_by(unattributed_nanos);
    }
}

/// The last interval's off-CPU profile, for the debug information.
#[derive(Debug, Clone, Default)]
pub(super) struct Status {
    threshold: f64,
    nanos: u64,
    recorded: u64,
    lost: u64,
    lost_nanos: u64,
    stale: u64,
    not_profiled: u64,
}

impl Status {
    pub(super) fn of(c: &Collected) -> Status {
        let o = &c.collection.off_cpu;
        Status {
            threshold: o.threshold.probability(),
            nanos: o.total_nanos(),
            recorded: o.counters.recorded,
            lost: o.lost.total(),
            lost_nanos: o.lost.lost_nanos,
            stale: o.lost.stale,
            not_profiled: o.lost.not_profiled,
        }
    }

    pub(super) fn debug_info(&self) -> Value {
        let n = |v: u64| Value::Number(Number::Uint(v));
        let mut o = BTreeMap::new();
        o.insert(
            "threshold".into(),
            Value::Number(Number::Float(self.threshold)),
        );
        o.insert("nanoseconds_last_interval".into(), n(self.nanos));
        o.insert("events_last_interval".into(), n(self.recorded));
        o.insert("lost_last_interval".into(), n(self.lost));
        o.insert("lost_nanoseconds_last_interval".into(), n(self.lost_nanos));
        o.insert("stale_last_interval".into(), n(self.stale));
        o.insert("not_profiled_last_interval".into(), n(self.not_profiled));
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(t: f64) -> Arguments {
        Arguments {
            off_cpu_threshold: t,
            ..Arguments::new(Vec::new())
        }
    }

    #[test]
    fn threshold_reload_and_labels() {
        assert!(threshold(&args(0.0)).is_off());
        assert!((threshold(&args(0.25)).probability() - 0.25).abs() < 1e-9);
        assert!(needs_reload(&args(0.0), &args(0.1)));
        assert!(needs_reload(&args(0.1), &args(0.0)));
        assert!(!needs_reload(&args(0.1), &args(0.5)), "applied live");
        assert!(!needs_reload(&args(0.0), &args(0.0)));
        let target = BTreeMap::from([
            ("__name__".to_string(), "process_cpu".to_string()),
            ("service_name".to_string(), "a".to_string()),
        ]);
        assert_eq!(labels(&target, ProfileKind::Cpu), target);
        let off = labels(&target, ProfileKind::OffCpu);
        assert_eq!(off["__name__"], "offcpu");
        assert_eq!(off["service_name"], "a");
        assert_eq!(off.len(), target.len());
    }
}
