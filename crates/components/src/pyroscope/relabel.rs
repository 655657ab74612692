//! `pyroscope.relabel`: rewrites the labels of every profile pushed to its `receiver` with
//! `discovery.relabel`'s rules and engine, then forwards the profile to `forward_to`.
//!
//! As in Grafana Alloy: a profile that arrives without labels passes unchanged; one that a rule
//! drops is dropped and counted (`pyroscope_relabel_profiles_dropped`), and so is one left
//! without labels (as Alloy's docs say; its code would forward an empty label set); results are
//! kept in an LRU of `max_cache_size` label sets, emptied when the rules change. Pprof sample
//! labels inside the profiles are not touched.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use flow_runtime::util::lock;
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use river_parser::decode::{CapsuleRef, Invalid};
use river_parser::{Capsule, Validate, Value};
use serde::Deserialize;

use crate::discovery::relabel::{
    compile_for_component, process, validate_rule_blocks, Labels, RuleArgs, Rules, RULES_TYPE_NAME,
};
use crate::pyroscope::appendable::{
    to_capsule, AppendError, Appendable, AppendableRef, Fanout, FanoutMetrics, RawProfile,
};

/// Default `max_cache_size` (Alloy's).
pub const DEFAULT_MAX_CACHE_SIZE: i64 = 10_000;

/// The arguments of `pyroscope.relabel`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arguments {
    /// Receivers of the relabeled profiles.
    pub forward_to: Vec<CapsuleRef<AppendableRef>>,
    /// The `rule` blocks, applied in order.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleArgs>,
    /// Label sets whose result is remembered.
    #[serde(default = "default_max_cache_size")]
    pub max_cache_size: i64,
}

fn default_max_cache_size() -> i64 {
    DEFAULT_MAX_CACHE_SIZE
}

impl Arguments {
    /// No rules, the default cache, these receivers.
    pub fn new(forward_to: Vec<AppendableRef>) -> Self {
        Arguments {
            forward_to: forward_to
                .into_iter()
                .map(|r| CapsuleRef(Arc::new(r)))
                .collect(),
            rules: Vec::new(),
            max_cache_size: DEFAULT_MAX_CACHE_SIZE,
        }
    }

    fn receivers(&self) -> Vec<AppendableRef> {
        self.forward_to.iter().map(|c| (*c.0).clone()).collect()
    }

    fn cache_size(&self) -> NonZeroUsize {
        usize::try_from(self.max_cache_size)
            .ok()
            .and_then(NonZeroUsize::new)
            .unwrap_or(NonZeroUsize::MIN)
    }
}

/// Every `rule` block must compile; `max_cache_size` must be at least 1 (Alloy refuses a
/// cache of no entries too).
impl Validate for Arguments {
    fn validate(&self) -> Result<(), Invalid> {
        if self.max_cache_size < 1 {
            return Err(Invalid::attr(
                "max_cache_size",
                format!(
                    "max_cache_size must be greater than 0, got {}",
                    self.max_cache_size
                ),
            ));
        }
        validate_rule_blocks(&self.rules)
    }
}

/// `pyroscope_relabel_*`, Alloy's names.
#[derive(Debug, Clone, Default)]
struct Metrics {
    processed: Counter,
    written: Counter,
    dropped: Counter,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_size: Gauge,
}

impl Metrics {
    fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "pyroscope_relabel_profiles_processed",
            "Profiles received",
            self.processed.clone(),
        );
        r.register(
            "pyroscope_relabel_profiles_written",
            "Profiles forwarded",
            self.written.clone(),
        );
        r.register(
            "pyroscope_relabel_profiles_dropped",
            "Profiles dropped by the rules (or left without labels)",
            self.dropped.clone(),
        );
        r.register(
            "pyroscope_relabel_cache_hits",
            "Label sets found in the cache",
            self.cache_hits.clone(),
        );
        r.register(
            "pyroscope_relabel_cache_misses",
            "Label sets not found in the cache",
            self.cache_misses.clone(),
        );
        r.register(
            "pyroscope_relabel_cache_size",
            "Label sets in the cache",
            self.cache_size.clone(),
        );
    }
}

/// The rules and the cache of their results (`None`: dropped).
struct Rewrite {
    rule_args: Vec<RuleArgs>,
    rules: Arc<Rules>,
    cache: LruCache<Labels, Option<Labels>>,
}

/// The receiver behind the `receiver` export; it stays the same object across updates.
pub struct ProfileRelabeler {
    rewrite: RwLock<Rewrite>,
    fanout: Fanout,
    metrics: Metrics,
    closed: AtomicBool,
}

impl ProfileRelabeler {
    fn new(args: &Arguments, rules: Rules, fanout_metrics: FanoutMetrics) -> Self {
        ProfileRelabeler {
            rewrite: RwLock::new(Rewrite {
                rule_args: args.rules.clone(),
                rules: Arc::new(rules),
                cache: LruCache::new(args.cache_size()),
            }),
            fanout: Fanout::new(args.receivers(), fanout_metrics),
            metrics: Metrics::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// Replaces rules (emptying the cache when they changed), cache size and receivers.
    fn update(&self, args: &Arguments) -> anyhow::Result<Arc<Rules>> {
        let mut rw = self.rewrite.write().unwrap_or_else(|e| e.into_inner());
        if rw.rule_args != args.rules {
            rw.rules = Arc::new(compile_for_component(&args.rules)?);
            rw.rule_args = args.rules.clone();
            rw.cache.clear();
        }
        rw.cache.resize(args.cache_size());
        self.metrics.cache_size.set(gauge(rw.cache.len()));
        self.fanout.set_children(args.receivers());
        Ok(Arc::clone(&rw.rules))
    }

    /// The compiled rules (what the `rules` export holds).
    pub fn rules(&self) -> Arc<Rules> {
        let rw = self.rewrite.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&rw.rules)
    }

    /// The labels after the rules; `None`: the profile is dropped.
    fn relabel(&self, labels: Labels) -> Option<Labels> {
        let mut rw = self.rewrite.write().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = rw.cache.get(&labels) {
            self.metrics.cache_hits.inc();
            return hit.clone();
        }
        self.metrics.cache_misses.inc();
        let out = process(labels.clone(), &rw.rules).filter(|l| !l.is_empty());
        rw.cache.put(labels, out.clone());
        self.metrics.cache_size.set(gauge(rw.cache.len()));
        out
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Appendable for ProfileRelabeler {
    fn append(
        &self,
        labels: BTreeMap<String, String>,
        profiles: Vec<RawProfile>,
    ) -> Result<(), AppendError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(AppendError::Closed);
        }
        self.metrics.processed.inc();
        if labels.is_empty() {
            // As Alloy: nothing to rewrite, forwarded as it is.
            self.metrics.written.inc();
            return self.fanout.append(labels, profiles);
        }
        match self.relabel(labels) {
            Some(out) => {
                self.metrics.written.inc();
                self.fanout.append(out, profiles)
            }
            None => {
                self.metrics.dropped.inc();
                tracing::debug!("pyroscope.relabel: profile dropped by the rules");
                Ok(())
            }
        }
    }
}

/// The `pyroscope.relabel` component: exports `receiver` (a [`ProfileRelabeler`]) and `rules`.
pub struct Relabel {
    opts: flow_runtime::Options,
    receiver: Arc<ProfileRelabeler>,
    /// Serialises updates (publishing the exports in order).
    updating: Mutex<()>,
}

impl std::fmt::Debug for Relabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("pyroscope.relabel")
            .field("id", &self.opts.id)
            .finish_non_exhaustive()
    }
}

impl Relabel {
    /// The receiver behind the `receiver` export.
    pub fn receiver(&self) -> Arc<ProfileRelabeler> {
        Arc::clone(&self.receiver)
    }

    fn publish(&self, rules: Arc<Rules>) {
        let receiver: AppendableRef = self.receiver.clone();
        self.opts.exports.publish_fields([
            ("receiver", to_capsule(receiver)),
            (
                "rules",
                Value::Capsule(Capsule::new(RULES_TYPE_NAME, rules)),
            ),
        ]);
    }
}

impl flow_runtime::Component for Relabel {
    type Arguments = Arguments;

    fn build(opts: flow_runtime::Options, args: Arguments) -> anyhow::Result<Self> {
        let rules = compile_for_component(&args.rules)?;
        let fanout_metrics = opts.metrics.with(FanoutMetrics::register);
        let receiver = Arc::new(ProfileRelabeler::new(&args, rules, fanout_metrics));
        opts.metrics.with(|r| receiver.metrics.register(r));
        let c = Relabel {
            opts,
            receiver,
            updating: Mutex::new(()),
        };
        c.publish(c.receiver.rules());
        Ok(c)
    }

    async fn run(self: Arc<Self>, cancel: flow_runtime::CancellationToken) -> anyhow::Result<()> {
        cancel.cancelled().await;
        self.receiver.closed.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn update(&self, args: Arguments) -> anyhow::Result<()> {
        let _serial = lock(&self.updating);
        let rules = self.receiver.update(&args)?;
        self.publish(rules);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_runtime::{Component, ExportsHandle, MetricsRegistry, Options};

    type Got = Vec<(Labels, Vec<RawProfile>)>;

    #[derive(Default)]
    struct Sink {
        got: Mutex<Got>,
    }

    impl Appendable for Sink {
        fn append(&self, labels: Labels, profiles: Vec<RawProfile>) -> Result<(), AppendError> {
            lock(&self.got).push((labels, profiles));
            Ok(())
        }
    }

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn profile() -> Vec<RawProfile> {
        vec![RawProfile {
            raw: vec![1, 2, 3],
            id: "p".into(),
        }]
    }

    fn rule(action: &str, source: &[&str], regex: &str, target: &str) -> RuleArgs {
        RuleArgs {
            source_labels: (!source.is_empty())
                .then(|| source.iter().map(|s| s.to_string()).collect()),
            regex: regex.into(),
            target_label: target.into(),
            action: action.into(),
            ..RuleArgs::default()
        }
    }

    fn opts(metrics: &MetricsRegistry, exports: &ExportsHandle) -> Options {
        Options {
            id: "pyroscope.relabel.test".into(),
            span: tracing::Span::none(),
            data_path: std::env::temp_dir(),
            exports: exports.clone(),
            metrics: metrics.clone(),
        }
    }

    fn metrics_text(m: &MetricsRegistry) -> String {
        let mut out = String::new();
        m.with(|r| prometheus_client::encoding::text::encode_registry(&mut out, r).unwrap());
        out
    }

    #[test]
    fn rewrites_drops_counts_and_caches() {
        let sink = Arc::new(Sink::default());
        let mut args = Arguments::new(vec![sink.clone() as AppendableRef]);
        args.rules = vec![
            rule("drop", &["env"], "dev", ""),
            rule("replace", &["app"], "(.*)", "service_name"),
            rule("labeldrop", &[], "app|tmp", ""),
        ];
        let metrics = MetricsRegistry::for_component("pyroscope.relabel.test");
        let exports = ExportsHandle::new();
        let c = Relabel::build(opts(&metrics, &exports), args.clone()).unwrap();
        let Some(Value::Object(ex)) = exports.get() else {
            panic!("no exports")
        };
        let receiver = crate::pyroscope::appendable::from_value(&ex["receiver"]).unwrap();
        assert!(matches!(&ex["rules"], Value::Capsule(cap) if cap.type_name == RULES_TYPE_NAME));

        receiver
            .append(l(&[("app", "web"), ("env", "prod")]), profile())
            .unwrap();
        receiver
            .append(l(&[("app", "web"), ("env", "prod")]), profile())
            .unwrap();
        receiver
            .append(l(&[("app", "db"), ("env", "dev")]), profile())
            .unwrap();
        // Left without labels: dropped.
        receiver.append(l(&[("tmp", "x")]), profile()).unwrap();
        // No labels at all: forwarded as it is (as Alloy does).
        receiver.append(Labels::new(), profile()).unwrap();
        let got = std::mem::take(&mut *lock(&sink.got));
        assert_eq!(
            got,
            vec![
                (l(&[("env", "prod"), ("service_name", "web")]), profile()),
                (l(&[("env", "prod"), ("service_name", "web")]), profile()),
                (Labels::new(), profile()),
            ]
        );
        let m = metrics_text(&metrics);
        for want in [
            "pyroscope_relabel_profiles_processed_total{component_id=\"pyroscope.relabel.test\"} 5",
            "pyroscope_relabel_profiles_written_total{component_id=\"pyroscope.relabel.test\"} 3",
            "pyroscope_relabel_profiles_dropped_total{component_id=\"pyroscope.relabel.test\"} 2",
            "pyroscope_relabel_cache_hits_total{component_id=\"pyroscope.relabel.test\"} 1",
            "pyroscope_relabel_cache_misses_total{component_id=\"pyroscope.relabel.test\"} 3",
            "pyroscope_relabel_cache_size{component_id=\"pyroscope.relabel.test\"} 3",
        ] {
            assert!(m.contains(want), "metrics lack {want:?}:\n{m}");
        }

        // New rules: the cache is emptied, the same receiver applies them.
        let other = Arc::new(Sink::default());
        let mut args2 = Arguments::new(vec![other.clone() as AppendableRef]);
        args2.rules = vec![rule("keep", &["env"], "dev", "")];
        args2.max_cache_size = 1;
        c.update(args2).unwrap();
        receiver
            .append(l(&[("app", "web"), ("env", "prod")]), profile())
            .unwrap();
        receiver
            .append(l(&[("app", "db"), ("env", "dev")]), profile())
            .unwrap();
        assert!(lock(&sink.got).is_empty(), "old receivers get nothing");
        assert_eq!(
            std::mem::take(&mut *lock(&other.got)),
            vec![(l(&[("app", "db"), ("env", "dev")]), profile())]
        );
        assert!(metrics_text(&metrics)
            .contains("pyroscope_relabel_cache_size{component_id=\"pyroscope.relabel.test\"} 1"));
        let Some(Value::Object(ex2)) = exports.get() else {
            panic!()
        };
        let again = crate::pyroscope::appendable::from_value(&ex2["receiver"]).unwrap();
        assert!(
            Arc::ptr_eq(&receiver, &again),
            "the receiver stays the same object"
        );
    }

    #[test]
    fn validation_points_at_the_attribute() {
        let mut args = Arguments::new(Vec::new());
        assert!(args.validate().is_ok());
        args.max_cache_size = 0;
        assert_eq!(
            args.validate(),
            Err(Invalid::attr(
                "max_cache_size",
                "max_cache_size must be greater than 0, got 0"
            ))
        );
        args.max_cache_size = 5;
        args.rules = vec![
            rule("replace", &["a"], "(.*)", "b"),
            rule("bogus", &[], "", ""),
        ];
        let err = args.validate().unwrap_err();
        assert_eq!(
            err,
            Invalid::attr("action", "unrecognized action type \"bogus\"").in_block("rule", 1)
        );
    }
}
