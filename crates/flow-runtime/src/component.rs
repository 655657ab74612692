//! The component contract: what every component (`discovery.relabel`, `pyroscope.write`, ...)
//! implements, and the [`Options`] the runtime hands it when it is built.
//!
//! # Lifecycle
//!
//! 1. The runtime evaluates the component's block (after every component it references) and
//!    decodes the body into [`Component::Arguments`] with serde (River attribute and block names
//!    are the serde field names; nested blocks decode like attributes holding objects, repeated
//!    blocks like arrays). Capsules such as `forward_to = [pyroscope.write.x.receiver]` decode
//!    through `river_parser::decode::CapsuleRef<T>`; the runtime itself never looks inside them.
//! 2. On the first successful evaluation it calls [`Component::build`] once with [`Options`] and
//!    the arguments, then spawns [`Component::run`] on the tokio runtime. `run` must keep going
//!    until the [`CancellationToken`] is cancelled (then return `Ok(())` promptly); returning early
//!    marks the component as exited.
//! 3. Whenever a later evaluation produces arguments that differ (`PartialEq`) from the last ones
//!    passed in, the runtime calls [`Component::update`]. It is **not** called for unchanged
//!    arguments. `update` runs concurrently with `run`, so keep state behind a lock or a channel
//!    (a `tokio::sync::watch` of the arguments that `run` listens to is the usual pattern). Keep it
//!    quick: it runs on the evaluation path. Returning an error marks the component unhealthy and
//!    the runtime keeps the previous arguments as "last good".
//! 4. A component publishes exports with [`Options::exports`] (`ExportsHandle::publish`) — in
//!    `build` (so that dependants evaluated right after see them), in `update`, or from `run`.
//!    Publishing a value equal to the previous one is a no-op; a changed value makes the runtime
//!    re-evaluate exactly the components referencing this one.
//! 5. On reload, a component with the same ID keeps running (its `run` is never restarted); a
//!    component removed from the file is cancelled and awaited before new ones start.
//!
//! Optional: override [`Component::health`] to report your own health (merged with the runtime's
//! view: evaluation failures and exits win), [`Component::debug_info`] to show a River value on
//! the component's page in the UI and the API (`debugInfo`), and [`Component::serve_http`] to
//! serve an HTTP API under `/api/v0/component/{id}/` (as Alloy's HTTP components do), optionally
//! also at root paths named by [`Component::http_root_prefixes`].
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use flow_runtime::{CancellationToken, Component, Options, Registry};
//! use river_parser::{Number, Validate, Value};
//!
//! #[derive(serde::Deserialize, PartialEq)]
//! struct Args { value: i64 }
//! impl Validate for Args {} // no rules beyond the serde shape
//!
//! struct Double { opts: Options, args: Mutex<Args> }
//! impl Component for Double {
//!     type Arguments = Args;
//!     fn build(opts: Options, args: Args) -> anyhow::Result<Self> {
//!         opts.exports.publish_fields([("output", Value::Number(Number::Int(args.value * 2)))]);
//!         Ok(Double { opts, args: Mutex::new(args) })
//!     }
//!     async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
//!         cancel.cancelled().await;
//!         Ok(())
//!     }
//!     fn update(&self, args: Args) -> anyhow::Result<()> {
//!         self.opts.exports.publish_fields([("output", Value::Number(Number::Int(args.value * 2)))]);
//!         *flow_runtime::util::lock(&self.args) = args;
//!         Ok(())
//!     }
//! }
//! // in components::registry():
//! let mut registry = Registry::new();
//! registry.register::<Double>("test.double");
//! ```

use crate::util::lock;
use river_parser::{Validate, Value};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use tokio_util::sync::CancellationToken;

/// A component implementation. See the module documentation for the lifecycle.
pub trait Component: Send + Sync + Sized + 'static {
    /// The decoded block body. Equality decides whether `update` is called. `Validate` holds the
    /// rules serde cannot express; the runtime runs it while decoding, so an invalid argument is a
    /// diagnostic at its attribute before `build` or `update` sees it.
    type Arguments: DeserializeOwned + Validate + PartialEq + Send + Sync + 'static;

    /// Builds the component from its first successfully evaluated arguments. Runs synchronously
    /// on the evaluation path: do not block; start background work in `run`.
    fn build(opts: Options, args: Self::Arguments) -> anyhow::Result<Self>;

    /// Runs until `cancel` is cancelled. Called exactly once per component instance.
    fn run(
        self: Arc<Self>,
        cancel: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Applies changed arguments. Never called with arguments equal to the previous ones.
    fn update(&self, args: Self::Arguments) -> anyhow::Result<()>;

    /// The component's own view of its health, if it has one.
    fn health(&self) -> Option<Health> {
        None
    }

    /// Extra information shown in the UI and the API as `debugInfo` (a River value, usually an
    /// object). Secrets inside it are shown as `(secret)`.
    fn debug_info(&self) -> Option<Value> {
        None
    }

    /// A component-specific resource served at `/api/v0/web/components/{id}/{name}?query`
    /// (for example `pyroscope.ebpf`'s recent profiles). Called on a blocking thread, so it
    /// may take a while; the default has none.
    fn resource(
        &self,
        name: &str,
        query: &BTreeMap<String, String>,
    ) -> Result<Resource, ResourceError> {
        let _ = query;
        Err(ResourceError::NotFound(format!("no resource {name:?}")))
    }

    /// Serves an HTTP request sent to `/api/v0/component/{id}/...` (any method; `req.path` is
    /// the part after the ID, starting with `/`), or to a root path this component claims with
    /// [`Component::http_root_prefixes`] (`req.path` is then the whole path). Called on a
    /// blocking thread. `None` (the default): the component serves no HTTP, answered with 404.
    fn serve_http(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let _ = req;
        None
    }

    /// Path prefixes at the server's root (for example `/querier.v1.QuerierService/`) that this
    /// component also serves through [`Component::serve_http`]. The server routes a request
    /// there only when exactly one component claims its path; with several it answers 409
    /// naming them (each stays reachable under `/api/v0/component/{id}/`).
    fn http_root_prefixes(&self) -> &'static [&'static str] {
        &[]
    }
}

/// An HTTP request routed to a component (see [`Component::serve_http`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path below the component's base, starting with `/` (percent-decoded).
    pub path: String,
    /// The raw query string (without `?`; empty when there is none).
    pub query: String,
    /// Request headers, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The request body (bounded by the server).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first value of header `name` (matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The query string as a map (`+` and `%XX` decoded; the last of repeated keys wins).
    pub fn query_map(&self) -> BTreeMap<String, String> {
        crate::http::parse_query(&self.query)
    }
}

/// A component's answer to an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Response headers (`Content-Type` among them).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with one `Content-Type` header.
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body,
        }
    }

    /// A JSON response.
    pub fn json(status: u16, v: &serde_json::Value) -> Self {
        Self::new(status, "application/json", v.to_string().into_bytes())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A component-specific HTTP resource (see [`Component::resource`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
    /// When set, served as an attachment with this file name (a download).
    pub filename: Option<String>,
}

impl Resource {
    /// A JSON resource.
    pub fn json(v: &serde_json::Value) -> Self {
        Resource {
            content_type: "application/json".into(),
            body: v.to_string().into_bytes(),
            filename: None,
        }
    }
}

/// Why a [`Component::resource`] could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// 404: no such resource (or nothing in it yet).
    #[error("{0}")]
    NotFound(String),
    /// 400: the query is wrong.
    #[error("{0}")]
    BadRequest(String),
}

/// What the runtime gives a component when building it.
#[derive(Clone)]
pub struct Options {
    /// The component ID, `name.label` (for example `discovery.docker.linux`).
    pub id: String,
    /// A tracing span carrying `component_id`; the runtime enters it around `build`, `update`
    /// and `run`, so plain `tracing::info!` calls are tagged already.
    pub span: tracing::Span,
    /// A directory reserved for this component: `--storage.path`/ID. Not created in advance;
    /// call `std::fs::create_dir_all` when you need it.
    pub data_path: PathBuf,
    /// Publishes this component's exports.
    pub exports: ExportsHandle,
    /// Where the component registers its metrics; every series gets `component_id="ID"`.
    pub metrics: MetricsRegistry,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("id", &self.id)
            .field("data_path", &self.data_path)
            .finish_non_exhaustive()
    }
}

/// The health of a component, as shown by `/-/healthy`, the API and the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    pub message: String,
    pub updated: SystemTime,
}

impl Health {
    pub fn new(state: HealthState, message: impl Into<String>) -> Self {
        Health {
            state,
            message: message.into(),
            updated: SystemTime::now(),
        }
    }

    pub fn healthy(message: impl Into<String>) -> Self {
        Health::new(HealthState::Healthy, message)
    }

    pub fn unhealthy(message: impl Into<String>) -> Self {
        Health::new(HealthState::Unhealthy, message)
    }
}

/// Health states, named as Alloy names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HealthState {
    Unknown,
    Healthy,
    Unhealthy,
    Exited,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Exited => "exited",
        }
    }
}

type ExportsListener = dyn Fn() + Send + Sync;

struct ExportsInner {
    value: Mutex<Option<Value>>,
    listener: Mutex<Option<Arc<ExportsListener>>>,
}

/// Publishes a component's exports. Cheap to clone; can be used from any thread or task.
#[derive(Clone)]
pub struct ExportsHandle {
    inner: Arc<ExportsInner>,
}

impl std::fmt::Debug for ExportsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportsHandle")
            .field("value", &self.get())
            .finish()
    }
}

impl Default for ExportsHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl ExportsHandle {
    /// A handle that is not attached to a runtime (useful in component unit tests: read back
    /// with [`ExportsHandle::get`]).
    pub fn new() -> Self {
        ExportsHandle {
            inner: Arc::new(ExportsInner {
                value: Mutex::new(None),
                listener: Mutex::new(None),
            }),
        }
    }

    /// Sets the exports (a `Value::Object` whose keys are the export names). Returns whether the
    /// value differs from the previous one; only then are dependants re-evaluated.
    pub fn publish(&self, exports: Value) -> bool {
        {
            let mut cur = lock(&self.inner.value);
            if cur.as_ref() == Some(&exports) {
                return false;
            }
            *cur = Some(exports);
        }
        let listener = lock(&self.inner.listener).clone();
        if let Some(l) = listener {
            l();
        }
        true
    }

    /// Convenience for `publish(Value::Object(..))`.
    pub fn publish_fields<K: Into<String>>(
        &self,
        fields: impl IntoIterator<Item = (K, Value)>,
    ) -> bool {
        let map: BTreeMap<String, Value> = fields.into_iter().map(|(k, v)| (k.into(), v)).collect();
        self.publish(Value::Object(map))
    }

    /// The last published exports.
    pub fn get(&self) -> Option<Value> {
        lock(&self.inner.value).clone()
    }

    /// Runtime use: called (without locks held) after every change.
    pub(crate) fn set_listener(&self, f: Arc<ExportsListener>) {
        *lock(&self.inner.listener) = Some(f);
    }
}

/// A component's metrics registry. Everything registered here is exposed on `/metrics` with a
/// `component_id` label while the component exists, and dropped when it is removed.
#[derive(Clone)]
pub struct MetricsRegistry {
    inner: Arc<Mutex<prometheus_client::registry::Registry>>,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRegistry")
    }
}

impl MetricsRegistry {
    /// A registry whose series carry `component_id="id"`.
    pub fn for_component(id: &str) -> Self {
        let reg = prometheus_client::registry::Registry::with_labels(
            [(
                std::borrow::Cow::Borrowed("component_id"),
                std::borrow::Cow::Owned(id.to_string()),
            )]
            .into_iter(),
        );
        MetricsRegistry {
            inner: Arc::new(Mutex::new(reg)),
        }
    }

    /// Registers a metric (a `Counter`, `Gauge`, `Family`, `Histogram`, ...). `name` without the
    /// `_total` suffix for counters, as prometheus-client expects.
    pub fn register(
        &self,
        name: impl Into<String>,
        help: impl Into<String>,
        metric: impl prometheus_client::registry::Metric,
    ) {
        lock(&self.inner).register(name, help, metric);
    }

    /// Direct access for registrations the helper above does not cover (sub-registries,
    /// collectors, units).
    pub fn with<R>(&self, f: impl FnOnce(&mut prometheus_client::registry::Registry) -> R) -> R {
        f(&mut lock(&self.inner))
    }

    /// Text exposition of the series (without `# EOF`).
    pub(crate) fn encode_into(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &lock(&self.inner))
    }
}
