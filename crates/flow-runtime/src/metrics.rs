//! The runtime's own metrics and the `/metrics` exposition (runtime series followed by every
//! component's series, each carrying `component_id`).

use crate::component::MetricsRegistry;
use crate::util::lock;
use crate::HealthState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabels {
    sha256: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    health_type: String,
}

/// Metrics of the runtime itself.
pub struct RuntimeMetrics {
    registry: Mutex<Registry>,
    last_load_successful: Gauge,
    load_failures: Counter,
    config_hash: Family<HashLabels, Gauge>,
    current_hash: Mutex<Option<String>>,
    evaluation_seconds: Histogram,
    queue_size: Gauge,
    running: Family<HealthLabels, Gauge>,
}

impl std::fmt::Debug for RuntimeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RuntimeMetrics")
    }
}

impl Default for RuntimeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RuntimeMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let last_load_successful = Gauge::default();
        let load_failures = Counter::default();
        let config_hash = Family::<HashLabels, Gauge>::default();
        let evaluation_seconds = Histogram::new(exponential_buckets(0.00001, 4.0, 12));
        let queue_size = Gauge::default();
        let running = Family::<HealthLabels, Gauge>::default();
        registry.register(
            "rill_config_last_load_successful",
            "Whether the last configuration load succeeded (1) or not (0)",
            last_load_successful.clone(),
        );
        registry.register(
            "rill_config_load_failures",
            "Configuration loads that failed",
            load_failures.clone(),
        );
        registry.register(
            "rill_config_hash",
            "SHA-256 of the configuration that is running, as a label",
            config_hash.clone(),
        );
        registry.register(
            "rill_component_evaluation_seconds",
            "Time spent evaluating one component's arguments (including build or update)",
            evaluation_seconds.clone(),
        );
        registry.register(
            "rill_component_evaluation_queue_size",
            "Components waiting to be re-evaluated after an exports change",
            queue_size.clone(),
        );
        registry.register(
            "rill_component_controller_running_components",
            "Components running, by health",
            running.clone(),
        );
        RuntimeMetrics {
            registry: Mutex::new(registry),
            last_load_successful,
            load_failures,
            config_hash,
            current_hash: Mutex::new(None),
            evaluation_seconds,
            queue_size,
            running,
        }
    }

    pub(crate) fn set_hash(&self, src: &str) {
        let digest = Sha256::digest(src.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let mut cur = lock(&self.current_hash);
        if let Some(old) = cur.take() {
            self.config_hash.remove(&HashLabels { sha256: old });
        }
        self.config_hash
            .get_or_create(&HashLabels {
                sha256: hex.clone(),
            })
            .set(1);
        *cur = Some(hex);
    }

    pub(crate) fn load_succeeded(&self, src: &str) {
        self.last_load_successful.set(1);
        self.set_hash(src);
    }

    pub(crate) fn load_failed(&self) {
        self.last_load_successful.set(0);
        self.load_failures.inc();
    }

    pub(crate) fn observe_evaluation(&self, secs: f64) {
        self.evaluation_seconds.observe(secs);
    }

    pub(crate) fn set_queue(&self, n: usize) {
        self.queue_size.set(n as i64);
    }

    /// Text exposition: runtime series, then each component's, then `# EOF`.
    pub(crate) fn encode(
        &self,
        healths: &[HealthState],
        components: &[MetricsRegistry],
    ) -> Result<String, std::fmt::Error> {
        for state in [
            HealthState::Healthy,
            HealthState::Unhealthy,
            HealthState::Unknown,
            HealthState::Exited,
        ] {
            let n = healths.iter().filter(|h| **h == state).count();
            self.running
                .get_or_create(&HealthLabels {
                    health_type: state.as_str().to_string(),
                })
                .set(n as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &lock(&self.registry))?;
        for c in components {
            c.encode_into(&mut out)?;
        }
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}
