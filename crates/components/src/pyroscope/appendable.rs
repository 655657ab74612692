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
    /// The receiver cannot take profiles now (for example `pyroscope.store` whose database
    /// cannot be opened); the message says why.
    #[error("{0}")]
    Unavailable(String),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Call = (BTreeMap<String, String>, Vec<RawProfile>);

    #[derive(Default)]
    struct Recorder {
        got: Mutex<Vec<Call>>,
        fail: bool,
    }

    impl Appendable for Recorder {
        fn append(
            &self,
            labels: BTreeMap<String, String>,
            profiles: Vec<RawProfile>,
        ) -> Result<(), AppendError> {
            self.got.lock().unwrap().push((labels, profiles));
            if self.fail {
                Err(AppendError::Closed)
            } else {
                Ok(())
            }
        }
    }

    fn input() -> (BTreeMap<String, String>, Vec<RawProfile>) {
        let labels = [("service_name".to_string(), "a".to_string())].into();
        let profiles = vec![RawProfile {
            raw: vec![1, 2, 3],
            id: "x".into(),
        }];
        (labels, profiles)
    }

    #[test]
    fn fanout_reaches_every_child_and_observes_latency() {
        let mut registry = Registry::default();
        let metrics = FanoutMetrics::register(&mut registry);
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder {
            fail: true,
            ..Default::default()
        });
        let c = Arc::new(Recorder::default());
        let fanout = Fanout::new(vec![a.clone(), b.clone(), c.clone()], metrics);
        let (labels, profiles) = input();
        // A failing child does not stop the others; its error is returned.
        assert_eq!(
            fanout.append(labels.clone(), profiles.clone()),
            Err(AppendError::Closed)
        );
        for r in [&a, &b, &c] {
            assert_eq!(
                r.got.lock().unwrap().as_slice(),
                &[(labels.clone(), profiles.clone())]
            );
        }
        fanout.set_children(vec![a.clone()]);
        assert_eq!(fanout.len(), 1);
        fanout.append(labels, profiles).unwrap();
        assert_eq!(a.got.lock().unwrap().len(), 2);
        assert_eq!(c.got.lock().unwrap().len(), 1);

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("pyroscope_fanout_latency_count 2"), "{text}");
    }

    #[test]
    fn errors_of_several_children_are_kept() {
        let fail = || -> AppendableRef {
            Arc::new(Recorder {
                fail: true,
                ..Default::default()
            })
        };
        let fanout = Fanout::new(vec![fail(), fail()], FanoutMetrics::default());
        let (labels, profiles) = input();
        match fanout.append(labels, profiles) {
            Err(AppendError::Multiple(v)) => assert_eq!(v.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn capsule_round_trip() {
        let r: AppendableRef = Arc::new(Recorder::default());
        let v = to_capsule(Arc::clone(&r));
        let back = from_value(&v).expect("a receiver");
        assert!(Arc::ptr_eq(&r, &back));
        let Value::Capsule(c) = &v else { panic!() };
        assert_eq!(c.type_name, APPENDABLE_TYPE);
        // What consumers write in their argument structs.
        let decoded: river_parser::CapsuleRef<AppendableRef> =
            river_parser::decode_value(&v).unwrap();
        assert!(Arc::ptr_eq(&r, &decoded.0));
        assert!(from_value(&Value::String("x".into())).is_none());
    }
}
