//! `pyroscope.write`: receives raw pprof profiles from other components and pushes them to
//! Pyroscope servers with the Connect unary call `push.v1.PusherService/Push`.
//!
//! [`Writer`] is the receiver (an [`Appendable`]): it cleans the label set, encodes one
//! `PushRequest` and puts it on each endpoint's bounded queue without waiting. Every endpoint
//! has its own worker that sends, retries (timeouts, connection errors, 408, 5xx and, when
//! allowed, 429) with exponential backoff and jitter, and counts what it sends and drops.
//!
//! HTTP client: reqwest (rustls, HTTP/1.1). It gives timeouts, proxies, redirects, basic and
//! bearer auth and connection pooling out of the box; the one thing it lacks (checking the
//! certificate against `tls_config.server_name`) is covered by handing it a rustls config we
//! build ourselves (see `crate::http_client::tls`).

mod args;
mod endpoint;

pub use args::{Arguments, Authorization, BasicAuth, EndpointOptions, Secret, TlsConfig};
pub use endpoint::EndpointStatus;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use river_parser::{Number, Value};
use tracing::warn;

use crate::pyroscope::appendable::{AppendError, Appendable, RawProfile};
use crate::pyroscope::push_proto::{LabelPair, PushRequest, RawProfileSeries, RawSample};
use endpoint::{Batch, Endpoint, QueueLimits};

/// Requests queued per endpoint before new ones are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// Bytes of encoded requests queued per endpoint before new ones are dropped.
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 64 << 20;
/// Requests in flight at once per endpoint.
pub const DEFAULT_SENDERS: usize = 4;
/// Longest a stopping `pyroscope.write` waits for its queues to be delivered.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// The `User-Agent` sent with every push.
pub fn user_agent() -> String {
    format!("rill/{}", env!("CARGO_PKG_VERSION"))
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_.]*` (Pyroscope also accepts
/// dots, which OpenTelemetry-style names use).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Prepares a series' labels for sending: drops `__`-prefixed labels other than `__name__` and
/// `__delta__`, applies `external` (which wins), drops empty values, and checks names and the
/// presence of `service_name`. The result is sorted and unique by construction.
pub fn prepare_labels(
    labels: BTreeMap<String, String>,
    external: &BTreeMap<String, String>,
) -> Result<Vec<LabelPair>, AppendError> {
    let mut out: BTreeMap<String, String> = labels
        .into_iter()
        .filter(|(k, _)| !k.starts_with("__") || k == "__name__" || k == "__delta__")
        .collect();
    for (k, v) in external {
        out.insert(k.clone(), v.clone());
    }
    out.retain(|_, v| !v.is_empty());
    if !out.contains_key("service_name") {
        return Err(AppendError::MissingServiceName);
    }
    if let Some(bad) = out.keys().find(|k| !valid_label_name(k)) {
        return Err(AppendError::InvalidLabelName(bad.clone()));
    }
    Ok(out
        .into_iter()
        .map(|(name, value)| LabelPair { name, value })
        .collect())
}

type LabelSet = Vec<(String, String)>;
type EndpointFamily<M> = Family<LabelSet, M>;
type HistogramFamily = Family<LabelSet, Histogram, fn() -> Histogram>;

/// The component's metrics. Cheap to clone (all handles share their values).
#[derive(Clone, Debug)]
pub struct WriteMetrics {
    sent_bytes: EndpointFamily<Counter>,
    dropped_bytes: EndpointFamily<Counter>,
    sent_profiles: EndpointFamily<Counter>,
    dropped_profiles: EndpointFamily<Counter>,
    retries: EndpointFamily<Counter>,
    latency: HistogramFamily,
    rejected_profiles: EndpointFamily<Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for WriteMetrics {
    fn default() -> Self {
        WriteMetrics {
            sent_bytes: Family::default(),
            dropped_bytes: Family::default(),
            sent_profiles: Family::default(),
            dropped_profiles: Family::default(),
            retries: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            rejected_profiles: Family::default(),
        }
    }
}

fn endpoint_label(endpoint: &str) -> Vec<(String, String)> {
    vec![("endpoint".to_string(), endpoint.to_string())]
}

impl WriteMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "pyroscope_write_sent_bytes",
            "Total number of raw profile bytes sent",
            m.sent_bytes.clone(),
        );
        registry.register(
            "pyroscope_write_dropped_bytes",
            "Total number of raw profile bytes dropped",
            m.dropped_bytes.clone(),
        );
        registry.register(
            "pyroscope_write_sent_profiles",
            "Total number of profiles sent",
            m.sent_profiles.clone(),
        );
        registry.register(
            "pyroscope_write_dropped_profiles",
            "Total number of profiles dropped",
            m.dropped_profiles.clone(),
        );
        registry.register(
            "pyroscope_write_retries",
            "Total number of retried push requests",
            m.retries.clone(),
        );
        registry.register(
            "pyroscope_write_latency",
            "Latency of push requests in seconds",
            m.latency.clone(),
        );
        registry.register(
            "pyroscope_write_rejected_profiles",
            "Profiles refused before sending (for example without service_name), by reason",
            m.rejected_profiles.clone(),
        );
        m
    }

    /// Creates the endpoint's series at zero so that they show up before the first event.
    fn init_endpoint(&self, endpoint: &str) {
        let l = endpoint_label(endpoint);
        let _ = self.sent_profiles.get_or_create(&l);
        let _ = self.sent_bytes.get_or_create(&l);
        let _ = self.dropped_profiles.get_or_create(&l);
        let _ = self.dropped_bytes.get_or_create(&l);
        let _ = self.retries.get_or_create(&l);
        let _ = self.latency.get_or_create(&l);
    }

    fn sent(&self, endpoint: &str, b: &Batch) {
        let l = endpoint_label(endpoint);
        self.sent_profiles.get_or_create(&l).inc_by(b.profiles);
        self.sent_bytes.get_or_create(&l).inc_by(b.profile_bytes);
    }

    fn dropped(&self, endpoint: &str, b: &Batch) {
        let l = endpoint_label(endpoint);
        self.dropped_profiles.get_or_create(&l).inc_by(b.profiles);
        self.dropped_bytes.get_or_create(&l).inc_by(b.profile_bytes);
    }

    fn retried(&self, endpoint: &str) {
        self.retries.get_or_create(&endpoint_label(endpoint)).inc();
    }

    fn latency(&self, endpoint: &str) -> Histogram {
        self.latency
            .get_or_create(&endpoint_label(endpoint))
            .clone()
    }

    fn rejected(&self, reason: &str, n: u64) {
        self.rejected_profiles
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc_by(n);
    }

    /// `pyroscope_write_sent_profiles_total{endpoint}`.
    pub fn sent_profiles(&self, endpoint: &str) -> u64 {
        self.sent_profiles
            .get_or_create(&endpoint_label(endpoint))
            .get()
    }
    /// `pyroscope_write_sent_bytes_total{endpoint}`.
    pub fn sent_bytes(&self, endpoint: &str) -> u64 {
        self.sent_bytes
            .get_or_create(&endpoint_label(endpoint))
            .get()
    }
    /// `pyroscope_write_dropped_profiles_total{endpoint}`.
    pub fn dropped_profiles(&self, endpoint: &str) -> u64 {
        self.dropped_profiles
            .get_or_create(&endpoint_label(endpoint))
            .get()
    }
    /// `pyroscope_write_dropped_bytes_total{endpoint}`.
    pub fn dropped_bytes(&self, endpoint: &str) -> u64 {
        self.dropped_bytes
            .get_or_create(&endpoint_label(endpoint))
            .get()
    }
    /// `pyroscope_write_retries_total{endpoint}`.
    pub fn retries(&self, endpoint: &str) -> u64 {
        self.retries.get_or_create(&endpoint_label(endpoint)).get()
    }
    /// `pyroscope_write_rejected_profiles_total{reason}`.
    pub fn rejected_profiles(&self, reason: &str) -> u64 {
        self.rejected_profiles
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .get()
    }
}

/// Settings that are not River arguments.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Requests queued per endpoint before new ones are dropped.
    pub queue_capacity: usize,
    /// Bytes of encoded requests queued per endpoint before new ones are dropped.
    pub queue_max_bytes: u64,
    /// Requests in flight at once per endpoint.
    pub senders: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            senders: DEFAULT_SENDERS,
        }
    }
}

/// What one endpoint looks like in the UI.
#[derive(Debug, Clone)]
pub struct EndpointDebugInfo {
    pub name: String,
    pub url: String,
    pub status: EndpointStatus,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub queued_bytes: u64,
}

struct State {
    external_labels: BTreeMap<String, String>,
    endpoints: Vec<Arc<Endpoint>>,
}

/// The receiver of `pyroscope.write`. Configuration updates keep the same receiver, so
/// components that forward to it need not be re-evaluated.
pub struct Writer {
    state: RwLock<Arc<State>>,
    metrics: WriteMetrics,
    options: WriterOptions,
    runtime: tokio::runtime::Handle,
}

/// Errors building or updating a [`Writer`].
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// An argument breaks a rule of [`Arguments`]' `Validate` impl.
    #[error("{0}")]
    Invalid(river_parser::decode::Invalid),
    #[error("endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("pyroscope.write must be started inside a tokio runtime")]
    NoRuntime,
}

impl Writer {
    /// Validates `args` and starts one worker per endpoint on the current tokio runtime.
    pub fn new(
        args: Arguments,
        metrics: WriteMetrics,
        options: WriterOptions,
    ) -> Result<Self, WriteError> {
        validate(&args)?;
        Self::start(args, metrics, options)
    }

    /// Like [`Writer::new`] for arguments the runtime has already validated.
    fn start(
        args: Arguments,
        metrics: WriteMetrics,
        options: WriterOptions,
    ) -> Result<Self, WriteError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WriteError::NoRuntime)?;
        let writer = Writer {
            state: RwLock::new(Arc::new(State {
                external_labels: BTreeMap::new(),
                endpoints: Vec::new(),
            })),
            metrics,
            options,
            runtime,
        };
        writer.apply(args)?;
        Ok(writer)
    }

    /// Validates and applies new arguments. Endpoints whose settings did not change keep their
    /// queue and connections; removed or changed ones stop (what they still had queued counts
    /// as dropped).
    pub fn update(&self, args: Arguments) -> Result<(), WriteError> {
        validate(&args)?;
        self.apply(args)
    }

    /// [`Writer::update`] for arguments the runtime has already validated.
    fn apply(&self, args: Arguments) -> Result<(), WriteError> {
        let old = self.current();
        let mut reusable: Vec<Option<Arc<Endpoint>>> =
            old.endpoints.iter().cloned().map(Some).collect();
        let mut endpoints = Vec::with_capacity(args.endpoints.len());
        for opts in args.endpoints {
            let found = reusable
                .iter_mut()
                .find(|e| e.as_ref().is_some_and(|e| e.opts == opts))
                .and_then(Option::take);
            let ep = match found {
                Some(ep) => ep,
                None => {
                    let name = opts.display_name().to_string();
                    Arc::new(
                        Endpoint::start(
                            opts,
                            QueueLimits {
                                capacity: self.options.queue_capacity,
                                max_bytes: self.options.queue_max_bytes,
                                senders: self.options.senders,
                            },
                            self.metrics.clone(),
                            &self.runtime,
                        )
                        .map_err(|message| WriteError::Endpoint {
                            endpoint: name,
                            message,
                        })?,
                    )
                }
            };
            endpoints.push(ep);
        }
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(State {
            external_labels: args.external_labels,
            endpoints,
        });
        Ok(())
    }

    fn current(&self) -> Arc<State> {
        Arc::clone(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits until every endpoint has delivered (or given up on) what was appended so far, at
    /// most `timeout`. Returns whether everything was settled. Used on shutdown so that the last
    /// collection of the producers reaches the servers.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pending: u64 = self.current().endpoints.iter().map(|e| e.pending()).sum();
            if pending == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    pending,
                    "pyroscope.write: shutting down with undelivered profiles"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every endpoint (what is still queued or being retried counts as dropped). Appends
    /// after this are accepted and discarded.
    pub fn shutdown(&self) {
        let external_labels = self.current().external_labels.clone();
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(State {
            external_labels,
            endpoints: Vec::new(),
        });
    }

    /// The metrics this writer updates.
    pub fn metrics(&self) -> &WriteMetrics {
        &self.metrics
    }

    /// Per-endpoint state for the UI.
    pub fn endpoints_debug_info(&self) -> Vec<EndpointDebugInfo> {
        self.current()
            .endpoints
            .iter()
            .map(|e| EndpointDebugInfo {
                name: e.label().to_string(),
                url: e.opts.url.clone(),
                status: e.status(),
                queue_depth: e.queue_depth(),
                queue_capacity: e.queue_capacity(),
                queued_bytes: e.queued_bytes(),
            })
            .collect()
    }

    /// The same as a River value (the component's `debugInfo`).
    pub fn debug_info_value(&self) -> Value {
        let time =
            |t: Option<SystemTime>| t.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null);
        let endpoints = self
            .endpoints_debug_info()
            .into_iter()
            .map(|e| {
                let mut o = BTreeMap::new();
                o.insert("name".to_string(), Value::String(e.name));
                o.insert("url".to_string(), Value::String(e.url));
                o.insert("last_success".to_string(), time(e.status.last_success));
                o.insert(
                    "last_error".to_string(),
                    e.status
                        .last_error
                        .map(Value::String)
                        .unwrap_or(Value::Null),
                );
                o.insert(
                    "last_error_time".to_string(),
                    time(e.status.last_error_time),
                );
                o.insert(
                    "queue_depth".to_string(),
                    Value::Number(Number::Uint(e.queue_depth as u64)),
                );
                o.insert(
                    "queued_bytes".to_string(),
                    Value::Number(Number::Uint(e.queued_bytes)),
                );
                o.insert(
                    "queue_capacity".to_string(),
                    Value::Number(Number::Uint(e.queue_capacity as u64)),
                );
                Value::Object(o)
            })
            .collect();
        let mut root = BTreeMap::new();
        root.insert("endpoints".to_string(), Value::Array(endpoints));
        Value::Object(root)
    }
}

impl Appendable for Writer {
    fn append(
        &self,
        labels: BTreeMap<String, String>,
        profiles: Vec<RawProfile>,
    ) -> Result<(), AppendError> {
        if profiles.is_empty() {
            return Ok(());
        }
        let state = self.current();
        let n = profiles.len() as u64;
        let labels = match prepare_labels(labels, &state.external_labels) {
            Ok(l) => l,
            Err(e) => {
                let reason = match e {
                    AppendError::MissingServiceName => "missing_service_name",
                    _ => "invalid_labels",
                };
                self.metrics.rejected(reason, n);
                warn!(error = %e, profiles = n, "rejecting profiles");
                return Err(e);
            }
        };
        if state.endpoints.is_empty() {
            return Ok(());
        }
        let profile_bytes: u64 = profiles.iter().map(|p| p.raw.len() as u64).sum();
        let request = PushRequest {
            series: vec![RawProfileSeries {
                labels,
                samples: profiles
                    .into_iter()
                    .map(|p| RawSample {
                        raw_profile: p.raw,
                        id: p.id,
                    })
                    .collect(),
            }],
        };
        let batch = Arc::new(Batch {
            body: Bytes::from(request.to_bytes()),
            profiles: n,
            profile_bytes,
        });
        for ep in &state.endpoints {
            ep.enqueue(Arc::clone(&batch));
        }
        Ok(())
    }
}

/// The `pyroscope.write` component: exports `receiver`, a capsule holding the [`Writer`] as an
/// [`AppendableRef`](crate::pyroscope::appendable::AppendableRef). Consumers decode it with
/// `river_parser::CapsuleRef<AppendableRef>` (for example `forward_to: Vec<CapsuleRef<AppendableRef>>`).
pub struct Write {
    writer: Arc<Writer>,
}

impl Write {
    /// The receiver behind the `receiver` export.
    pub fn writer(&self) -> &Arc<Writer> {
        &self.writer
    }
}

impl flow_runtime::Component for Write {
    type Arguments = Arguments;

    fn build(opts: flow_runtime::Options, args: Arguments) -> anyhow::Result<Self> {
        let metrics = opts.metrics.with(WriteMetrics::register);
        let writer = Arc::new(Writer::start(args, metrics, WriterOptions::default())?);
        let receiver: crate::pyroscope::appendable::AppendableRef = writer.clone();
        opts.exports.publish_fields([(
            "receiver",
            crate::pyroscope::appendable::to_capsule(receiver),
        )]);
        Ok(Write { writer })
    }

    async fn run(self: Arc<Self>, cancel: flow_runtime::CancellationToken) -> anyhow::Result<()> {
        cancel.cancelled().await;
        // Deliver what is queued (the producers upstream are stopped first and flush their
        // last collection into this writer); a server that does not answer in time makes the
        // rest count as dropped.
        self.writer.drain(SHUTDOWN_DRAIN).await;
        self.writer.shutdown();
        Ok(())
    }

    fn update(&self, args: Arguments) -> anyhow::Result<()> {
        // The receiver export stays the same object: nothing to publish.
        self.writer.apply(args)?;
        Ok(())
    }

    fn health(&self) -> Option<flow_runtime::Health> {
        let failing: Vec<String> = self
            .writer
            .endpoints_debug_info()
            .into_iter()
            .filter(
                |e| match (e.status.last_error_time, e.status.last_success) {
                    (Some(err), Some(ok)) => err > ok,
                    (Some(_), None) => true,
                    _ => false,
                },
            )
            .map(|e| format!("{}: {}", e.name, e.status.last_error.unwrap_or_default()))
            .collect();
        Some(if failing.is_empty() {
            flow_runtime::Health::healthy("")
        } else {
            flow_runtime::Health::unhealthy(format!("push failing: {}", failing.join("; ")))
        })
    }

    fn debug_info(&self) -> Option<Value> {
        Some(self.writer.debug_info_value())
    }
}

/// Runs the one set of rules ([`Arguments`]' `Validate` impl) for callers outside the runtime.
fn validate(args: &Arguments) -> Result<(), WriteError> {
    river_parser::Validate::validate(args).map_err(WriteError::Invalid)
}

/// Formats a time as RFC 3339 in UTC with millisecond precision.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (proleptic Gregorian), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_are_cleaned_sorted_and_extended() {
        let got = prepare_labels(
            map(&[
                ("service_name", "api"),
                ("__name__", "process_cpu"),
                ("__delta__", "false"),
                ("__meta_docker_container_id", "abc"),
                ("__address__", "x"),
                ("zone", "a"),
                ("env", "dev"),
                ("empty", ""),
            ]),
            &map(&[("env", "prod"), ("cluster", "c1")]),
        )
        .unwrap();
        let got: Vec<(String, String)> = got.into_iter().map(|l| (l.name, l.value)).collect();
        let want: Vec<(String, String)> = [
            ("__delta__", "false"),
            ("__name__", "process_cpu"),
            ("cluster", "c1"),
            ("env", "prod"),
            ("service_name", "api"),
            ("zone", "a"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn service_name_is_required() {
        assert_eq!(
            prepare_labels(map(&[("job", "x")]), &BTreeMap::new()),
            Err(AppendError::MissingServiceName)
        );
        assert_eq!(
            prepare_labels(map(&[("service_name", "")]), &BTreeMap::new()),
            Err(AppendError::MissingServiceName)
        );
        // external_labels may supply it
        assert!(prepare_labels(map(&[("job", "x")]), &map(&[("service_name", "s")])).is_ok());
    }

    #[test]
    fn label_names_are_validated() {
        assert!(valid_label_name("service_name"));
        assert!(valid_label_name("_x.y9"));
        assert!(!valid_label_name("9x"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name(""));
        assert_eq!(
            prepare_labels(
                map(&[("service_name", "a"), ("bad-name", "v")]),
                &BTreeMap::new()
            ),
            Err(AppendError::InvalidLabelName("bad-name".into()))
        );
    }

    #[test]
    fn time_format() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
