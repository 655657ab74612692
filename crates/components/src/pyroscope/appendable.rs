//! The profiles receiver interface shared by `pyroscope.*` components.
//!
//! A producer (for example `pyroscope.ebpf`) holds the `forward_to` list as [`Appendable`]s and
//! calls [`Appendable::append`] with one label set and its raw pprof profiles. `append` never
//! waits on the network: receivers queue the work and return at once. [`Fanout`] forwards to
//! several receivers and records how long that took in `pyroscope_fanout_latency`.
//! Receivers travel between components as River capsules ([`to_capsule`] / [`from_capsule`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use river_parser::value::{Capsule, Value};

/// Type name of a receiver capsule, shown in the UI and in type errors.
pub const APPENDABLE_TYPE: &str = "pyroscope.Appendable";

/// One raw profile as produced by a profiler.
#[derive(Clone, PartialEq, Eq)]
pub struct RawProfile {
    /// A gzipped pprof profile.
    pub raw: Vec<u8>,
    /// A unique identifier of the profile (may be empty).
    pub id: String,
}

impl fmt::Debug for RawProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawProfile")
            .field("bytes", &self.raw.len())
            .field("id", &self.id)
            .finish()
    }
}

/// Why a receiver refused profiles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The label set has no (non-empty) `service_name` label.
    #[error("profile has no service_name label")]
    MissingServiceName,
    /// A label name is not a valid label name.
    #[error("invalid label name {0:?}")]
    InvalidLabelName(String),
    /// The receiver has shut down.
    #[error("receiver is closed")]
    Closed,
    /// Several receivers of a fanout failed; each message is kept.
    #[error("{}", .0.join("; "))]
    Multiple(Vec<String>),
}

/// Something profiles can be appended to.
///
/// Implementations must return quickly and must never block on network I/O; they queue the
/// work or drop it (and count the drop).
pub trait Appendable: Send + Sync {
    fn append(
        &self,
        labels: BTreeMap<String, String>,
        profiles: Vec<RawProfile>,
    ) -> Result<(), AppendError>;
}

/// A shared receiver handle.
pub type AppendableRef = Arc<dyn Appendable>;

/// Wraps a receiver into a River capsule value (what `pyroscope.write` exports as `receiver`).
pub fn to_capsule(receiver: AppendableRef) -> Value {
    Value::Capsule(Capsule::new(APPENDABLE_TYPE, Arc::new(receiver)))
}

/// Gets a receiver back from a capsule made by [`to_capsule`].
pub fn from_capsule(capsule: &Capsule) -> Option<AppendableRef> {
    capsule
        .downcast::<AppendableRef>()
        .map(|inner| Arc::clone(&*inner))
}

/// Gets a receiver out of a River value, when the value is a receiver capsule.
pub fn from_value(value: &Value) -> Option<AppendableRef> {
    match value {
        Value::Capsule(c) => from_capsule(c),
        _ => None,
    }
}

/// The `pyroscope_fanout_latency` histogram, shared by the fanouts of one component.
#[derive(Clone, Debug)]
pub struct FanoutMetrics {
    latency: Histogram,
}

impl Default for FanoutMetrics {
    fn default() -> Self {
        FanoutMetrics {
            latency: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        }
    }
}

impl FanoutMetrics {
    /// Creates the histogram and registers it in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "pyroscope_fanout_latency",
            "Write latency for sending profiles to direct and indirect components",
            m.latency.clone(),
        );
        m
    }

    /// The underlying histogram.
    pub fn latency(&self) -> &Histogram {
        &self.latency
    }
}

/// Sends every append to all of its children, in order, and records the time it took.
pub struct Fanout {
    children: RwLock<Vec<AppendableRef>>,
    metrics: FanoutMetrics,
}

impl Fanout {
    pub fn new(children: Vec<AppendableRef>, metrics: FanoutMetrics) -> Self {
        Fanout {
            children: RwLock::new(children),
            metrics,
        }
    }

    /// Replaces the children (on a configuration update of the owning component).
    pub fn set_children(&self, children: Vec<AppendableRef>) {
        *self.children.write().unwrap_or_else(|e| e.into_inner()) = children;
    }

    /// Number of children.
    pub fn len(&self) -> usize {
        self.children
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Appendable for Fanout {
    fn append(
        &self,
        labels: BTreeMap<String, String>,
        profiles: Vec<RawProfile>,
    ) -> Result<(), AppendError> {
        let start = Instant::now();
        let children = self
            .children
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut errors = Vec::new();
        if let Some((last, rest)) = children.split_last() {
            for child in rest {
                if let Err(e) = child.append(labels.clone(), profiles.clone()) {
                    errors.push(e);
                }
            }
            // The last child gets the caller's data without another copy.
            if let Err(e) = last.append(labels, profiles) {
                errors.push(e);
            }
        }
        self.metrics.latency.observe(start.elapsed().as_secs_f64());
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(AppendError::Multiple(
                errors.iter().map(ToString::to_string).collect(),
            )),
        }
    }
}
