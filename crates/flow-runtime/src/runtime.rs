//! The controller: holds the running component graph, evaluates it, propagates exports and
//! applies reloads.
//!
//! Start-up is a reload from an empty graph: there is one code path ([`Runtime::load`]). A load
//! parses the file and builds the graph first; any parse or graph error returns diagnostics and
//! changes nothing. Otherwise removed components are cancelled and awaited, then every component
//! is evaluated in topological order: new ones are built and started, kept ones (same ID) are
//! updated only when their decoded arguments changed and are never restarted.
//!
//! Exports published by a component reach the propagation task through a pending set; it
//! re-evaluates exactly the dependants of components whose exports changed, in topological order,
//! each at most once per wave (a de-duplicated set bounded by the number of components).

use crate::component::{
    CancellationToken, ExportsHandle, Health, HealthState, MetricsRegistry, Options,
};
use crate::loader::{self, GraphDef, NodeKind};
use crate::metrics::RuntimeMetrics;
use crate::registry::{AnyArgs, Builder, Instance, Registry};
use crate::source::{self, FileDiagnostic, Source};
use crate::util::lock;
use river_parser::ast::Block;
use river_parser::eval::{BodyValue, Scope};
use river_parser::{Diagnostic, Diagnostics, Value};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

mod component_http;
mod nodes;
pub use component_http::ComponentRoute;
use nodes::{evaluate_module_node, info, publish_target};

/// How long [`Runtime::shutdown`] waits for components to stop, in order.
pub const DEFAULT_SHUTDOWN_BUDGET: Duration = Duration::from_secs(30);
/// Extra time every component still running at the end of the shutdown budget gets, together.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How many health changes each component remembers for the UI.
const HEALTH_HISTORY: usize = 20;

/// Settings of a runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Parent of every component's data directory (`--storage.path`).
    pub storage_path: PathBuf,
    /// Name of the config file (or directory), used in rendered diagnostics.
    pub file_name: String,
    /// The file `/-/reload`, SIGHUP and the file watch re-read (none: reload is refused). A
    /// directory: every `*.alloy` and `*.river` file in it, loaded as one configuration.
    pub config_path: Option<PathBuf>,
}

/// Why a reload of the config file failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadFailure {
    /// The config file could not be read.
    #[error("{0}")]
    Read(String),
    #[error(transparent)]
    Load(LoadError),
}

/// Applies the top-level `logging` block; installed by the binary.
pub type LoggingHook =
    Arc<dyn Fn(&crate::logging::LoggingConfig) -> Result<(), String> + Send + Sync>;

/// Why a load failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The file did not parse or its graph is invalid; nothing was changed.
    #[error("{rendered}")]
    Rejected {
        diagnostics: Diagnostics,
        rendered: String,
    },
    /// The graph was applied but some components failed to evaluate (they are unhealthy and
    /// keep their last good arguments and exports).
    #[error("{rendered}")]
    Evaluation {
        diagnostics: Diagnostics,
        rendered: String,
    },
}

impl LoadError {
    pub fn rendered(&self) -> &str {
        match self {
            LoadError::Rejected { rendered, .. } | LoadError::Evaluation { rendered, .. } => {
                rendered
            }
        }
    }
}

/// A component (or custom component instance) as shown by the API.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    /// The global ID (`NAME.LABEL/inner.component.label` inside a module instance).
    pub id: String,
    /// The ID inside its module, and the module's ID (empty at the top level).
    pub local_id: String,
    pub module_id: String,
    /// For a custom component instance: the module it created (its own ID).
    pub created_modules: Vec<String>,
    pub name: String,
    pub label: String,
    pub health: Health,
    pub references_to: Vec<String>,
    pub referenced_by: Vec<String>,
    pub arguments: Option<BodyValue>,
    pub exports: Option<Value>,
    pub debug_info: Option<Value>,
    pub health_history: Vec<Health>,
}

struct Node {
    id: String,
    name: String,
    label: String,
    block: Block,
    /// What kind of node it is (a kept node must be of the same kind).
    kind: Kind,
    /// None for the nodes of modules (instances, arguments, exports): the runtime evaluates
    /// them itself.
    builder: Option<Arc<dyn Builder>>,
    /// Where its exports go: a scope and a path in it (none for an instance, whose exports are
    /// its export nodes').
    target: Option<(usize, Vec<String>)>,
    instance: Option<Arc<dyn Instance>>,
    exports: ExportsHandle,
    /// The exports value last put into the scope (and propagated).
    propagated: Option<Value>,
    args: Option<AnyArgs>,
    args_body: Option<BodyValue>,
    eval_health: Health,
    /// Set when `run` returned or failed (and was not cancelled by us).
    exited: Arc<Mutex<Option<Health>>>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    metrics: MetricsRegistry,
    history: VecDeque<Health>,
    span: tracing::Span,
}

impl Node {
    fn health(&self) -> Health {
        if let Some(h) = lock(&self.exited).clone() {
            return h;
        }
        if self.eval_health.state != HealthState::Healthy {
            return self.eval_health.clone();
        }
        if let Some(h) = self
            .instance
            .as_ref()
            .and_then(|i| self.span.in_scope(|| i.health()))
        {
            return h;
        }
        self.eval_health.clone()
    }

    fn set_eval_health(&mut self, h: Health) {
        let changed = self.eval_health.state != h.state || self.eval_health.message != h.message;
        self.eval_health = h.clone();
        if changed {
            self.history.push_back(h);
            while self.history.len() > HEALTH_HISTORY {
                self.history.pop_front();
            }
        }
    }
}

/// The kinds of node, without their indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Component,
    Instance,
    Argument,
    Export,
}

impl Kind {
    fn of(kind: &NodeKind) -> Kind {
        match kind {
            NodeKind::Component => Kind::Component,
            NodeKind::Instance { .. } => Kind::Instance,
            NodeKind::Argument { .. } => Kind::Argument,
            NodeKind::Export { .. } => Kind::Export,
        }
    }
}

#[derive(Default)]
struct State {
    graph: GraphDef,
    /// Nodes indexed like `graph.nodes`.
    nodes: Vec<Node>,
    index: HashMap<String, usize>,
    /// Position of each node in `graph.order`.
    topo_pos: Vec<usize>,
    /// One scope per module (`graph.modules`); 0 is the main configuration.
    scopes: Vec<Scope>,
    sources: Vec<Source>,
}

struct Inner {
    registry: Registry,
    opts: RuntimeOptions,
    state: tokio::sync::Mutex<State>,
    pending: Arc<Pending>,
    ready: AtomicBool,
    metrics: RuntimeMetrics,
    logging: Mutex<Option<LoggingHook>>,
    last_error: Mutex<Option<String>>,
    /// The files the last load read (whether it succeeded or not).
    last_files: Mutex<Vec<PathBuf>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone without `shutdown`: still stop every component's `run`.
        for n in &self.state.get_mut().nodes {
            n.cancel.cancel();
        }
        self.pending.closed.cancel();
    }
}

/// A running component graph. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates an empty runtime and starts its propagation task (needs a tokio runtime).
    pub fn new(registry: Registry, opts: RuntimeOptions) -> Runtime {
        let pending = Arc::new(Pending::default());
        let rt = Runtime {
            inner: Arc::new(Inner {
                registry,
                opts,
                state: tokio::sync::Mutex::new(State::default()),
                pending: pending.clone(),
                ready: AtomicBool::new(false),
                metrics: RuntimeMetrics::new(),
                logging: Mutex::new(None),
                last_error: Mutex::new(None),
                last_files: Mutex::new(Vec::new()),
            }),
        };
        let weak = Arc::downgrade(&rt.inner);
        tokio::spawn(propagate(weak, pending).in_current_span());
        rt
    }

    /// Installs the function applying the `logging` block.
    pub fn set_logging_hook(&self, hook: LoggingHook) {
        *lock(&self.inner.logging) = Some(hook);
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn metrics(&self) -> &RuntimeMetrics {
        &self.inner.metrics
    }

    /// Whether a load has succeeded once.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// The rendered diagnostics of the last failed load, if the last load failed.
    pub fn last_load_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// Re-reads the config file (or every configuration file of the config directory) and
    /// loads it.
    pub async fn reload(&self) -> Result<(), ReloadFailure> {
        let Some(path) = self.inner.opts.config_path.clone() else {
            return Err(ReloadFailure::Read("no config file to reload\n".into()));
        };
        let name = self.inner.opts.file_name.clone();
        let read = tokio::task::spawn_blocking(move || source::read_path(&path, &name))
            .await
            .unwrap_or_else(|e| Err(format!("reading the configuration: {e}")));
        match read {
            Ok(sources) => self
                .load_sources(sources)
                .await
                .map_err(ReloadFailure::Load),
            Err(e) => {
                let msg = format!("{e}\n");
                self.inner.metrics.load_failed();
                *lock(&self.inner.last_error) = Some(msg.clone());
                Err(ReloadFailure::Read(msg))
            }
        }
    }

    /// Loads (or reloads) `src` as the config file. See the module documentation.
    pub async fn load(&self, src: &str) -> Result<(), LoadError> {
        let path = self.inner.opts.config_path.clone().filter(|p| !p.is_dir());
        self.load_sources(vec![Source {
            name: self.inner.opts.file_name.clone(),
            text: src.to_string(),
            path,
        }])
        .await
    }

    /// Loads (or reloads) a configuration made of several sources (the files of a directory),
    /// as one module. See the module documentation.
    pub async fn load_sources(&self, sources: Vec<Source>) -> Result<(), LoadError> {
        let started = Instant::now();
        let mut sources = sources;
        let result = self.load_inner(&mut sources).await;
        *lock(&self.inner.last_files) = sources.iter().filter_map(|s| s.path.clone()).collect();
        let all: String = sources.iter().map(|s| s.text.as_str()).collect();
        let m = &self.inner.metrics;
        match &result {
            Ok(()) => {
                m.load_succeeded(&all);
                self.inner.ready.store(true, Ordering::SeqCst);
                *lock(&self.inner.last_error) = None;
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "config loaded"
                );
            }
            Err(e) => {
                if matches!(e, LoadError::Evaluation { .. }) {
                    // The graph is in place; the file is what runs now.
                    m.set_hash(&all);
                }
                m.load_failed();
                *lock(&self.inner.last_error) = Some(e.rendered().to_string());
                tracing::error!(diagnostics = %e.rendered(), "config load failed");
            }
        }
        result
    }

    /// The files the last load read (config files and imported files, whether the load
    /// succeeded or not), for a watch.
    pub async fn source_files(&self) -> Vec<PathBuf> {
        lock(&self.inner.last_files).clone()
    }

    async fn load_inner(&self, sources: &mut Vec<Source>) -> Result<(), LoadError> {
        let reject = |d: Vec<FileDiagnostic>, sources: &[Source]| LoadError::Rejected {
            rendered: source::render(&d, sources),
            diagnostics: source::plain(&d),
        };
        let module_path = self
            .inner
            .opts
            .config_path
            .as_deref()
            .map(source::module_path_of);
        let graph = match loader::load_sources(sources, &self.inner.registry, module_path.clone()) {
            Ok(g) => g,
            Err(d) => return Err(reject(d, sources)),
        };
        let in_file = |file: usize, d: Diagnostics| -> Vec<FileDiagnostic> {
            d.0.into_iter()
                .map(|diagnostic| FileDiagnostic { file, diagnostic })
                .collect()
        };
        // The loader accepted only registered names; looking the builders up before anything
        // changes (logging included) keeps even a registry/loader mismatch a rejected load.
        let mut builders = Vec::with_capacity(graph.nodes.len());
        for def in &graph.nodes {
            if def.kind != NodeKind::Component {
                builders.push(None);
                continue;
            }
            match self.inner.registry.get(&def.name) {
                Some(b) => builders.push(Some(b.clone())),
                None => {
                    let d = Diagnostic::new(
                        def.block.name_span(),
                        format!("unknown component \"{}\"", def.name),
                    );
                    return Err(reject(in_file(def.file, d.into()), sources));
                }
            }
        }

        let logging_file = graph.logging_file;
        let logging = match &graph.logging {
            Some(block) => Some(
                crate::logging::LoggingConfig::from_block(block)
                    .map_err(|d| reject(in_file(logging_file, d), sources))?,
            ),
            None => None,
        };
        if let Some(cfg) = &logging {
            let hook = lock(&self.inner.logging).clone();
            if let Some(hook) = hook {
                hook(cfg).map_err(|msg| {
                    let span = graph
                        .logging
                        .as_ref()
                        .map(|b| b.name_span())
                        .unwrap_or_default();
                    reject(
                        in_file(logging_file, Diagnostic::new(span, msg).into()),
                        sources,
                    )
                })?;
            }
        }

        let mut guard = self.inner.state.lock().await;
        let st = &mut *guard;

        // Stop removed components (and those whose ID now names another kind of node) before
        // anything new starts.
        let mut old: HashMap<String, Node> = std::mem::take(&mut st.nodes)
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        let removed: Vec<Node> = old
            .iter()
            .filter(|(id, n)| {
                graph.index_of(id).is_none_or(|i| {
                    let def = &graph.nodes[i];
                    def.name != n.name || Kind::of(&def.kind) != n.kind
                })
            })
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|id| old.remove(&id))
            .collect();
        for mut node in removed {
            tracing::info!(component_id = %node.id, "stopping removed component");
            node.cancel.cancel();
            if let Some(task) = node.task.take() {
                if tokio::time::timeout(Duration::from_secs(30), task)
                    .await
                    .is_err()
                {
                    tracing::warn!(component_id = %node.id, "component did not stop within 30s");
                }
            }
        }

        // The new node table: kept nodes carry their instance, exports and last good state.
        let mut nodes = Vec::with_capacity(graph.nodes.len());
        for (i, builder) in builders.into_iter().enumerate() {
            let def = &graph.nodes[i];
            let target = publish_target(&graph, i);
            let node = match old.remove(&def.id) {
                Some(mut n) => {
                    n.block = def.block.clone();
                    n.target = target;
                    n
                }
                None => self.new_node(def, builder, target),
            };
            nodes.push(node);
        }
        st.index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        st.topo_pos = vec![0; nodes.len()];
        for (pos, &i) in graph.order.iter().enumerate() {
            st.topo_pos[i] = pos;
        }
        st.nodes = nodes;
        st.scopes = graph
            .modules
            .iter()
            .map(|m| {
                let mut scope = Scope::new();
                if let Some(p) = &m.module_path {
                    scope.set("module_path", Value::String(p.clone()));
                }
                scope
            })
            .collect();
        st.graph = graph;
        st.sources = std::mem::take(sources);
        for i in 0..st.nodes.len() {
            let def = &st.graph.nodes[i];
            if let NodeKind::Instance { .. } = def.kind {
                // The object the instance's exports are set in.
                let path: Vec<&str> = def.local_id.split('.').collect();
                st.scopes[def.scope].set_path(&path, empty_object());
            }
            let initial = match def.kind {
                NodeKind::Argument { .. } => {
                    Value::Object([("value".to_string(), Value::Null)].into())
                }
                NodeKind::Export { .. } => Value::Null,
                _ => empty_object(),
            };
            let v = st.nodes[i].propagated.clone().unwrap_or(initial);
            if let Some((scope, path)) = &st.nodes[i].target {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                st.scopes[*scope].set_path(&path, v);
            }
        }

        let mut diags = Vec::new();
        let order = st.graph.order.clone();
        for i in order {
            if let Err(d) = self.evaluate(st, i) {
                diags.extend(in_file(st.graph.nodes[i].file, d));
            }
        }
        // Exports changed by the evaluation above already reached the scope; pending
        // notifications for them are no-ops for the propagation task.
        let result = if diags.is_empty() {
            Ok(())
        } else {
            Err(LoadError::Evaluation {
                rendered: source::render(&diags, &st.sources),
                diagnostics: source::plain(&diags),
            })
        };
        // The caller hashes what was loaded.
        sources.clone_from(&st.sources);
        result
    }

    fn new_node(
        &self,
        def: &loader::NodeDef,
        builder: Option<Arc<dyn Builder>>,
        target: Option<(usize, Vec<String>)>,
    ) -> Node {
        let exports = ExportsHandle::new();
        if builder.is_some() {
            let pending = self.inner.pending.clone();
            let id = def.id.clone();
            exports.set_listener(Arc::new(move || pending.push(&id)));
        }
        Node {
            id: def.id.clone(),
            name: def.name.clone(),
            label: def.label.clone(),
            block: def.block.clone(),
            kind: Kind::of(&def.kind),
            builder,
            target,
            instance: None,
            exports,
            propagated: None,
            args: None,
            args_body: None,
            eval_health: Health::new(HealthState::Unknown, "not evaluated yet"),
            exited: Arc::new(Mutex::new(None)),
            cancel: CancellationToken::new(),
            task: None,
            metrics: MetricsRegistry::for_component(&def.id),
            history: VecDeque::new(),
            span: tracing::info_span!("component", component_id = %def.id),
        }
    }

    /// Evaluates node `i` against the current scope, then builds or updates it and moves its
    /// exports into the scope. Returns whether its exports changed.
    fn evaluate(&self, st: &mut State, i: usize) -> Result<bool, Diagnostics> {
        let started = Instant::now();
        let result = self.evaluate_inner(st, i);
        self.inner
            .metrics
            .observe_evaluation(started.elapsed().as_secs_f64());
        let node = &mut st.nodes[i];
        match &result {
            Ok(_) => {}
            Err(d) => {
                let msg = d.to_string();
                tracing::warn!(parent: &node.span, error = %msg, "evaluation failed");
                node.set_eval_health(Health::unhealthy(msg));
            }
        }
        let changed = sync_exports(st, i);
        result.map(|()| changed)
    }

    fn evaluate_inner(&self, st: &mut State, i: usize) -> Result<(), Diagnostics> {
        let def = &st.graph.nodes[i];
        let scope = &st.scopes[def.scope];
        let body = river_parser::eval::eval_body(&st.nodes[i].block.body, scope)?;
        let Some(builder) = st.nodes[i].builder.clone() else {
            return evaluate_module_node(st, i, body);
        };
        let node = &mut st.nodes[i];
        let name_span = node.block.name_span();
        let args = builder.decode(&body, name_span)?;
        let _enter = node.span.clone().entered();
        match &node.instance {
            None => {
                let opts = Options {
                    id: node.id.clone(),
                    span: node.span.clone(),
                    data_path: self.inner.opts.storage_path.join(&node.id),
                    exports: node.exports.clone(),
                    metrics: node.metrics.clone(),
                };
                let instance = builder
                    .build(opts, builder.decode(&body, name_span)?)
                    .map_err(|e| {
                        Diagnostic::new(name_span, format!("building component: {e:#}"))
                    })?;
                let exited = node.exited.clone();
                let cancel = node.cancel.clone();
                let run = instance.run(cancel.clone());
                let id = node.id.clone();
                node.task = Some(tokio::spawn(
                    async move {
                        let result = run.await;
                        if cancel.is_cancelled() {
                            return;
                        }
                        let h = match result {
                            Ok(()) => Health::new(HealthState::Exited, "component exited"),
                            Err(e) => {
                                tracing::error!(component_id = %id, error = %format!("{e:#}"), "component run failed");
                                Health::new(HealthState::Exited, format!("run failed: {e:#}"))
                            }
                        };
                        *lock(&exited) = Some(h);
                    }
                    .instrument(node.span.clone()),
                ));
                node.instance = Some(instance);
                node.set_eval_health(Health::healthy("started component"));
            }
            Some(instance) => {
                let same = node
                    .args
                    .as_ref()
                    .is_some_and(|old| builder.args_equal(old, &args));
                if !same {
                    instance
                        .update(builder.decode(&body, name_span)?)
                        .map_err(|e| {
                            Diagnostic::new(name_span, format!("updating component: {e:#}"))
                        })?;
                    tracing::debug!("updated component");
                }
                node.set_eval_health(Health::healthy(if same {
                    "arguments unchanged"
                } else {
                    "updated component"
                }));
            }
        }
        node.args = Some(args);
        node.args_body = Some(body);
        Ok(())
    }

    /// Summary of every component and custom component instance (modules' included), in
    /// source order.
    pub async fn components(&self) -> Vec<ComponentInfo> {
        let st = self.inner.state.lock().await;
        (0..st.nodes.len())
            .filter(|&i| st.graph.nodes[i].is_visible())
            .map(|i| info(&st, i, false))
            .collect()
    }

    /// Details of one component or custom component instance, by global ID.
    pub async fn component(&self, id: &str) -> Option<ComponentInfo> {
        let st = self.inner.state.lock().await;
        st.index
            .get(id)
            .filter(|&&i| st.graph.nodes[i].is_visible())
            .map(|&i| info(&st, i, true))
    }

    /// A component-specific resource ([`crate::Component::resource`]), computed on a blocking
    /// thread without holding the runtime's lock. `None` when the component does not exist (or
    /// was never built).
    pub async fn component_resource(
        &self,
        id: &str,
        name: &str,
        query: std::collections::BTreeMap<String, String>,
    ) -> Option<Result<crate::Resource, crate::ResourceError>> {
        let (instance, span) = {
            let st = self.inner.state.lock().await;
            let node = st.index.get(id).map(|&i| &st.nodes[i])?;
            (node.instance.clone()?, node.span.clone())
        };
        let name = name.to_string();
        tokio::task::spawn_blocking(move || span.in_scope(|| instance.resource(&name, &query)))
            .await
            .ok()
    }

    /// Every component registry, for `/metrics`.
    pub(crate) async fn component_metrics(&self) -> Vec<MetricsRegistry> {
        let st = self.inner.state.lock().await;
        st.nodes.iter().map(|n| n.metrics.clone()).collect()
    }

    /// Stops every component and waits for them, at most [`DEFAULT_SHUTDOWN_BUDGET`] (plus
    /// [`SHUTDOWN_GRACE`]); see [`Self::shutdown_within`].
    pub async fn shutdown(&self) {
        self.shutdown_within(DEFAULT_SHUTDOWN_BUDGET).await;
    }

    /// Stops every component and waits for them. Dependants stop before what they reference
    /// (reverse topological order), so that what a producer flushes on its way out
    /// (pyroscope.ebpf's last collection) still finds its receivers (pyroscope.write) running.
    /// Each waits in turn until `budget` after the start; when it is spent, every component
    /// still running gets [`SHUTDOWN_GRACE`] more, together (a writer queued behind a stuck
    /// producer still drains), and the rest are abandoned with a warning naming them. Returns
    /// the IDs of the abandoned components: the caller should not wait for them (their tasks,
    /// and blocking work they started, may still be running).
    pub async fn shutdown_within(&self, budget: Duration) -> Vec<String> {
        let mut st = self.inner.state.lock().await;
        let deadline = tokio::time::Instant::now() + budget;
        let order: Vec<usize> = st.graph.order.iter().rev().copied().collect();
        let mut late: Vec<(String, tokio::task::JoinHandle<()>)> = Vec::new();
        for i in order {
            let Some(n) = st.nodes.get_mut(i) else {
                continue;
            };
            n.cancel.cancel();
            let Some(mut t) = n.task.take() else {
                continue;
            };
            if tokio::time::Instant::now() < deadline
                && tokio::time::timeout_at(deadline, &mut t).await.is_ok()
            {
                continue;
            }
            late.push((n.id.clone(), t));
        }
        for n in &mut st.nodes {
            n.cancel.cancel();
            if let Some(t) = n.task.take() {
                late.push((n.id.clone(), t));
            }
        }
        if late.is_empty() {
            return Vec::new();
        }
        let grace = tokio::time::Instant::now().max(deadline) + SHUTDOWN_GRACE;
        let mut abandoned = Vec::new();
        for (id, t) in late {
            if tokio::time::timeout_at(grace, t).await.is_err() {
                tracing::warn!(
                    component_id = %id,
                    budget_ms = budget.as_millis() as u64,
                    "component did not stop within the shutdown budget; abandoned"
                );
                abandoned.push(id);
            }
        }
        abandoned
    }
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Moves node `i`'s current exports into its scope; true if they changed.
fn sync_exports(st: &mut State, i: usize) -> bool {
    let node = &mut st.nodes[i];
    let current = node.exports.get();
    if current.is_none() || current == node.propagated {
        return false;
    }
    node.propagated = current.clone();
    if let Some((scope, path)) = &node.target {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        st.scopes[*scope].set_path(&path, current.unwrap_or_else(empty_object));
    }
    true
}

/// IDs of components that published exports since the propagation task last looked: a set, so
/// its size is bounded by the number of components however fast they publish.
#[derive(Default)]
struct Pending {
    ids: Mutex<BTreeSet<String>>,
    notify: tokio::sync::Notify,
    closed: CancellationToken,
}

impl Pending {
    fn push(&self, id: &str) {
        let inserted = lock(&self.ids).insert(id.to_string());
        if inserted {
            self.notify.notify_one();
        }
    }

    fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *lock(&self.ids))
    }
}

/// The propagation task: re-evaluates dependants of components whose exports changed.
async fn propagate(inner: std::sync::Weak<Inner>, pending: Arc<Pending>) {
    loop {
        tokio::select! {
            _ = pending.notify.notified() => {}
            _ = pending.closed.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        let rt = Runtime { inner };
        let mut guard = rt.inner.state.lock().await;
        let st = &mut *guard;
        let mut dirty: BTreeSet<usize> = BTreeSet::new();
        let mark = |st: &mut State, dirty: &mut BTreeSet<usize>| {
            for id in pending.take() {
                if let Some(&i) = st.index.get(&id) {
                    if sync_exports(st, i) {
                        for &d in &st.graph.dependants[i] {
                            dirty.insert(st.topo_pos[d]);
                        }
                    }
                }
            }
        };
        mark(st, &mut dirty);
        rt.inner.metrics.set_queue(dirty.len());
        while let Some(pos) = dirty.pop_first() {
            let i = st.graph.order[pos];
            if let Ok(true) = rt.evaluate(st, i) {
                for &d in &st.graph.dependants[i] {
                    dirty.insert(st.topo_pos[d]);
                }
            }
            mark(st, &mut dirty);
            rt.inner.metrics.set_queue(dirty.len());
        }
    }
}
