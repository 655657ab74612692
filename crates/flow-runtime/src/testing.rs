//! Test components used by the runtime's own tests and benchmarks (and usable by anyone testing
//! against the runtime): `test.pulse` (a counter), `test.passthrough` (exports its input) and
//! `test.sum` (adds numbers), and a capsule pair: `test.sink` exports a `receiver` capsule that
//! `test.sender { forward_to = [...] }` pushes values into; `test.slow_stop` takes `stop_delay` of
//! blocking work to stop (shutdown tests); `test.spawn_log` logs from `build`, `update` and from a
//! task and a blocking thread its `run` starts (span tests). Each counts builds, updates and run
//! starts in [`Stats`], keyed by the component's data path (unique per runtime when every test
//! uses its own storage path).
//!
//! Only built with the `testing` feature, so release builds of rill do not contain them.

use crate::component::{CancellationToken, Component, Options};
use crate::util::lock;
use river_parser::decode::Duration;
use river_parser::{Number, Value};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Notify;
use tracing::Instrument;

/// Counters of one test component instance.
#[derive(Debug, Default)]
pub struct Stats {
    pub builds: AtomicUsize,
    pub updates: AtomicUsize,
    pub run_starts: AtomicUsize,
    pub run_stops: AtomicUsize,
    /// Wakes a `test.pulse` without an interval.
    pub fire: Notify,
}

fn stats_map() -> &'static Mutex<HashMap<PathBuf, Arc<Stats>>> {
    static MAP: OnceLock<Mutex<HashMap<PathBuf, Arc<Stats>>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

/// The counters of the component whose data path is `data_path` (`storage_path/ID`).
pub fn stats(data_path: &Path) -> Arc<Stats> {
    lock(stats_map())
        .entry(data_path.to_path_buf())
        .or_default()
        .clone()
}

/// Makes the `test.pulse` at `data_path` count once more.
pub fn fire(data_path: &Path) {
    stats(data_path).fire.notify_one();
}

/// A registry with every test component.
pub fn registry() -> crate::Registry {
    crate::Registry::new()
        .with::<Pulse>("test.pulse")
        .with::<Passthrough>("test.passthrough")
        .with::<Sum>("test.sum")
        .with::<Sink>("test.sink")
        .with::<Sender>("test.sender")
        .with::<SlowStop>("test.slow_stop")
        .with::<SpawnLog>("test.spawn_log")
}

fn int(i: i64) -> Value {
    Value::Number(Number::Int(i))
}

/// `test.pulse "x" { interval = "10ms"  max = 5 }`: exports `count`, starting at 0 and growing
/// by one every interval (or on [`fire`] when there is no interval) until `max`.
pub struct Pulse {
    opts: Options,
    args: Mutex<PulseArgs>,
    count: Mutex<i64>,
    changed: Notify,
    stats: Arc<Stats>,
    ticks: prometheus_client::metrics::counter::Counter,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PulseArgs {
    #[serde(default)]
    pub interval: Option<Duration>,
    #[serde(default)]
    pub max: Option<i64>,
}

impl Component for Pulse {
    type Arguments = PulseArgs;

    fn build(opts: Options, args: PulseArgs) -> anyhow::Result<Self> {
        let stats = stats(&opts.data_path);
        stats.builds.fetch_add(1, Ordering::SeqCst);
        opts.exports.publish_fields([("count", int(0))]);
        let ticks = prometheus_client::metrics::counter::Counter::default();
        opts.metrics
            .register("test_pulse_ticks", "Times the pulse counted", ticks.clone());
        Ok(Pulse {
            ticks,
            opts,
            args: Mutex::new(args),
            count: Mutex::new(0),
            changed: Notify::new(),
            stats,
        })
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        self.stats.run_starts.fetch_add(1, Ordering::SeqCst);
        loop {
            let interval = lock(&self.args).interval.map(|d| d.0);
            let tick = async {
                match interval {
                    Some(d) => tokio::time::sleep(d).await,
                    None => self.stats.fire.notified().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.changed.notified() => continue,
                _ = tick => {
                    let max = lock(&self.args).max;
                    let mut c = lock(&self.count);
                    if max.is_none_or(|m| *c < m) {
                        *c += 1;
                        self.ticks.inc();
                        self.opts.exports.publish_fields([("count", int(*c))]);
                    }
                }
            }
        }
        self.stats.run_stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn update(&self, args: PulseArgs) -> anyhow::Result<()> {
        self.stats.updates.fetch_add(1, Ordering::SeqCst);
        *lock(&self.args) = args;
        self.changed.notify_one();
        Ok(())
    }

    fn debug_info(&self) -> Option<Value> {
        Some(Value::Object(
            [("count".to_string(), int(*lock(&self.count)))].into(),
        ))
    }
}

/// `test.passthrough "x" { input = ANY }`: exports `output = input`.
pub struct Passthrough {
    opts: Options,
    stats: Arc<Stats>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PassthroughArgs {
    pub input: serde_json::Value,
}

fn publish_output(opts: &Options, input: &serde_json::Value) -> anyhow::Result<()> {
    let v = river_parser::decode::to_value(input).map_err(anyhow::Error::msg)?;
    opts.exports.publish_fields([("output", v)]);
    Ok(())
}

impl Component for Passthrough {
    type Arguments = PassthroughArgs;

    fn build(opts: Options, args: PassthroughArgs) -> anyhow::Result<Self> {
        let stats = stats(&opts.data_path);
        stats.builds.fetch_add(1, Ordering::SeqCst);
        publish_output(&opts, &args.input)?;
        Ok(Passthrough { opts, stats })
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        self.stats.run_starts.fetch_add(1, Ordering::SeqCst);
        cancel.cancelled().await;
        self.stats.run_stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn update(&self, args: PassthroughArgs) -> anyhow::Result<()> {
        self.stats.updates.fetch_add(1, Ordering::SeqCst);
        publish_output(&self.opts, &args.input)
    }
}

/// `test.sum "x" { inputs = [1, 2] }`: exports `sum`.
pub struct Sum {
    opts: Options,
    stats: Arc<Stats>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SumArgs {
    pub inputs: Vec<i64>,
}

impl Component for Sum {
    type Arguments = SumArgs;

    fn build(opts: Options, args: SumArgs) -> anyhow::Result<Self> {
        let stats = stats(&opts.data_path);
        stats.builds.fetch_add(1, Ordering::SeqCst);
        opts.exports
            .publish_fields([("sum", int(args.inputs.iter().sum()))]);
        Ok(Sum { opts, stats })
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        self.stats.run_starts.fetch_add(1, Ordering::SeqCst);
        cancel.cancelled().await;
        self.stats.run_stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn update(&self, args: SumArgs) -> anyhow::Result<()> {
        self.stats.updates.fetch_add(1, Ordering::SeqCst);
        self.opts
            .exports
            .publish_fields([("sum", int(args.inputs.iter().sum()))]);
        Ok(())
    }
}

/// What a `test.sink` receives, shared through its `receiver` capsule.
#[derive(Debug, Default)]
pub struct Inbox {
    pub values: Mutex<Vec<i64>>,
}

/// `test.sink "x" { }`: exports `receiver`, a capsule; debug info lists what it received.
pub struct Sink {
    inbox: Arc<Inbox>,
    stats: Arc<Stats>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SinkArgs {}

impl Component for Sink {
    type Arguments = SinkArgs;

    fn build(opts: Options, _args: SinkArgs) -> anyhow::Result<Self> {
        let stats = stats(&opts.data_path);
        stats.builds.fetch_add(1, Ordering::SeqCst);
        let inbox = Arc::new(Inbox::default());
        opts.exports.publish_fields([(
            "receiver",
            Value::Capsule(river_parser::Capsule::new("test.Inbox", inbox.clone())),
        )]);
        Ok(Sink { inbox, stats })
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        self.stats.run_starts.fetch_add(1, Ordering::SeqCst);
        cancel.cancelled().await;
        self.stats.run_stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn update(&self, _args: SinkArgs) -> anyhow::Result<()> {
        self.stats.updates.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn debug_info(&self) -> Option<Value> {
        let received = lock(&self.inbox.values).iter().map(|v| int(*v)).collect();
        Some(Value::Object(
            [("received".to_string(), Value::Array(received))].into(),
        ))
    }
}

/// `test.sender "x" { value = 1  forward_to = [test.sink.y.receiver] }`: pushes `value` into
/// every receiver when built and whenever its arguments change.
pub struct Sender {
    stats: Arc<Stats>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SenderArgs {
    pub value: i64,
    pub forward_to: Vec<river_parser::decode::CapsuleRef<Inbox>>,
}

fn send(args: &SenderArgs) {
    for r in &args.forward_to {
        lock(&r.values).push(args.value);
    }
}

impl Component for Sender {
    type Arguments = SenderArgs;

    fn build(opts: Options, args: SenderArgs) -> anyhow::Result<Self> {
        let stats = stats(&opts.data_path);
        stats.builds.fetch_add(1, Ordering::SeqCst);
        send(&args);
        Ok(Sender { stats })
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        self.stats.run_starts.fetch_add(1, Ordering::SeqCst);
        cancel.cancelled().await;
        self.stats.run_stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn update(&self, args: SenderArgs) -> anyhow::Result<()> {
        self.stats.updates.fetch_add(1, Ordering::SeqCst);
        send(&args);
        Ok(())
    }
}

/// `test.slow_stop "x" { stop_delay = "2s" }`: when stopped, finishes blocking work that takes
/// `stop_delay` (a sleep on a blocking thread, awaited through `spawn_blocking`, as a component
/// that flushes a last collection does) before its `run` returns.
pub struct SlowStop {
    args: Mutex<SlowStopArgs>,
    stats: Arc<Stats>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SlowStopArgs {
    pub stop_delay: Duration,
}

impl Component for SlowStop {
    type Arguments = SlowStopArgs;

    fn build(opts: Options, args: SlowStopArgs) -> anyhow::Result<Self> {
        let stats = stats(&opts.data_path);
        stats.builds.fetch_add(1, Ordering::SeqCst);
        Ok(SlowStop {
            args: Mutex::new(args),
            stats,
        })
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        self.stats.run_starts.fetch_add(1, Ordering::SeqCst);
        cancel.cancelled().await;
        let delay = lock(&self.args).stop_delay.0;
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "test.slow_stop: stopping"
        );
        tokio::task::spawn_blocking(move || std::thread::sleep(delay)).await?;
        tracing::info!("test.slow_stop: stopped");
        self.stats.run_stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn update(&self, args: SlowStopArgs) -> anyhow::Result<()> {
        self.stats.updates.fetch_add(1, Ordering::SeqCst);
        *lock(&self.args) = args;
        Ok(())
    }
}
/// `test.spawn_log "x" { message = "hi" }`: logs `message` (info) from `build` and `update`, and
/// when run from a task it spawns with `in_current_span` and from a `spawn_blocking` thread that
/// enters the span it captured, as components are asked to do; then waits to be cancelled.
pub struct SpawnLog {
    message: String,
    stats: Arc<Stats>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SpawnLogArgs {
    pub message: String,
}

impl Component for SpawnLog {
    type Arguments = SpawnLogArgs;

    fn build(opts: Options, args: SpawnLogArgs) -> anyhow::Result<Self> {
        let stats = stats(&opts.data_path);
        stats.builds.fetch_add(1, Ordering::SeqCst);
        tracing::info!("test.spawn_log built: {}", args.message);
        Ok(SpawnLog {
            message: args.message,
            stats,
        })
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        self.stats.run_starts.fetch_add(1, Ordering::SeqCst);
        let message = self.message.clone();
        tokio::spawn(
            async move { tracing::info!("test.spawn_log task: {message}") }.in_current_span(),
        )
        .await?;
        let message = self.message.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.entered();
            tracing::info!("test.spawn_log thread: {message}");
        })
        .await?;
        cancel.cancelled().await;
        self.stats.run_stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn update(&self, args: SpawnLogArgs) -> anyhow::Result<()> {
        self.stats.updates.fetch_add(1, Ordering::SeqCst);
        tracing::info!("test.spawn_log updated: {}", args.message);
        Ok(())
    }
}

impl river_parser::Validate for PulseArgs {}
impl river_parser::Validate for PassthroughArgs {}
impl river_parser::Validate for SumArgs {}
impl river_parser::Validate for SinkArgs {}
impl river_parser::Validate for SenderArgs {}
impl river_parser::Validate for SlowStopArgs {}
impl river_parser::Validate for SpawnLogArgs {}
