//! `pyroscope.store`: keeps every profile it receives in an embedded SQLite database and
//! serves them back — Pyroscope's query API (`querier.v1.QuerierService` over Connect, what
//! Grafana's Pyroscope data source and `profilecli` call) and a small JSON API for rill's UI —
//! under `/api/v0/component/pyroscope.store.LABEL/` (and at the root, `/querier.v1...`, when it
//! is the only store).
//!
//! The exported `receiver` checks the labels and queues the profiles; one writer thread
//! decodes them and stores each batch in one transaction, and between batches enforces
//! `retention` and `max_size`. A database that cannot be opened or written makes the component
//! unhealthy with the cause (it retries every few seconds); appends then fail with that cause
//! while every other receiver of the producer's `forward_to` list keeps getting profiles.

mod api;
mod args;
pub mod codec;
pub mod connect;
pub mod db;
pub mod proto;
pub mod query;
pub mod retention;
pub mod selector;
pub mod synth;
pub mod tree;

pub use args::{Arguments, ByteSize, DEFAULT_MAX_SIZE, DEFAULT_RETENTION};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver as ChannelRx, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use flow_runtime::util::lock;
use flow_runtime::{
    CancellationToken, Component, Health, HealthState, HttpRequest, HttpResponse, Options,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use river_parser::{Number, Value};

use crate::pyroscope::appendable::{to_capsule, AppendError, Appendable, RawProfile};
use db::{Batch, Writer};
use query::Reader;
use retention::Limits;

/// Append batches queued for the writer before new ones are refused.
pub const QUEUE_CAPACITY: usize = 256;
/// How often retention and size are enforced.
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(10);
/// How long after a failed open the database is tried again.
pub const REOPEN_EVERY: Duration = Duration::from_secs(5);
/// Batches written in one transaction at most.
const BATCHES_PER_TX: usize = 64;

/// Settings that are not River arguments (tests shorten the periods).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub maintenance_every: Duration,
    pub reopen_every: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            maintenance_every: MAINTENANCE_EVERY,
            reopen_every: REOPEN_EVERY,
        }
    }
}

/// Where the database lives and what limits it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    dir: PathBuf,
    limits: Limits,
}

enum Msg {
    Append(Batch),
    Configure(Config),
    /// Answered once everything queued before it is written (tests, shutdown).
    Flush(SyncSender<()>),
    Stop,
}

#[derive(Default)]
struct Counters {
    stored: Counter,
    dropped: Counter,
    bad: Counter,
    write_errors: Counter,
    expired: Counter,
    evicted: Counter,
    bytes: Gauge,
}

/// What the writer thread reports.
struct Status {
    /// `Ok` while the database is open and the last write succeeded; the cause otherwise.
    state: Result<(), String>,
    health: Health,
    file_bytes: u64,
    last_enforce: Option<SystemTime>,
    last_bad_profile: Option<String>,
}

struct Shared {
    id: String,
    config: Mutex<Config>,
    status: Mutex<Status>,
    queue: SyncSender<Msg>,
    reader: Mutex<Option<Reader>>,
    counters: Counters,
    appended: AtomicU64,
}

impl Shared {
    fn set_state(&self, state: Result<(), String>) {
        let mut st = lock(&self.status);
        if st.state == state && st.health.state != HealthState::Unknown {
            return;
        }
        st.health = match &state {
            Ok(()) => Health::healthy("database open"),
            Err(cause) => Health::unhealthy(cause.clone()),
        };
        st.state = state;
    }

    /// Runs `f` with the reader, opening it when needed; `Err` when the store is unhealthy or
    /// the database cannot be read.
    fn with_reader<T>(&self, f: impl FnOnce(Result<&mut Reader, String>) -> T) -> T {
        if let Err(cause) = &lock(&self.status).state {
            let cause = cause.clone();
            return f(Err(format!("{} is unhealthy: {cause}", self.id)));
        }
        let dir = lock(&self.config).dir.clone();
        let mut guard = lock(&self.reader);
        if guard.is_none() {
            match Reader::open(&dir) {
                Ok(r) => *guard = Some(r),
                Err(e) => return f(Err(format!("{}: {e}", self.id))),
            }
        }
        match guard.as_mut() {
            Some(r) => f(Ok(r)),
            None => f(Err(format!("{}: no reader", self.id))),
        }
    }
}

/// The receiver exported as `receiver`.
struct StoreReceiver {
    shared: Arc<Shared>,
}

impl Appendable for StoreReceiver {
    fn append(
        &self,
        labels: BTreeMap<String, String>,
        profiles: Vec<RawProfile>,
    ) -> Result<(), AppendError> {
        if profiles.is_empty() {
            return Ok(());
        }
        let pairs = crate::pyroscope::write::prepare_labels(labels, &BTreeMap::new())?;
        let labels: BTreeMap<String, String> = pairs
            .into_iter()
            .filter(|p| p.name != "__delta__")
            .map(|p| (p.name, p.value))
            .collect();
        if let Err(cause) = &lock(&self.shared.status).state {
            self.shared.counters.dropped.inc_by(profiles.len() as u64);
            return Err(AppendError::Unavailable(format!(
                "{}: {cause}",
                self.shared.id
            )));
        }
        let n = profiles.len() as u64;
        match self.shared.queue.try_send(Msg::Append((labels, profiles))) {
            Ok(()) => {
                self.shared.appended.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.shared.counters.dropped.inc_by(n);
                Err(AppendError::Unavailable(format!(
                    "{}: write queue full ({QUEUE_CAPACITY} batches), profiles dropped",
                    self.shared.id
                )))
            }
            Err(TrySendError::Disconnected(_)) => Err(AppendError::Closed),
        }
    }
}

/// The `pyroscope.store` component.
pub struct Store {
    shared: Arc<Shared>,
    worker: Mutex<Option<(ChannelRx<Msg>, StoreOptions)>>,
    default_dir: PathBuf,
}

fn config_of(args: &Arguments, default_dir: &std::path::Path) -> Config {
    Config {
        dir: args
            .path
            .as_ref()
            .map_or_else(|| default_dir.to_path_buf(), PathBuf::from),
        limits: Limits {
            retention: args.retention.as_std(),
            max_size: args.max_size.0,
        },
    }
}

impl Store {
    /// Builds the component with non-default [`StoreOptions`].
    pub fn build_with(opts: Options, args: Arguments, so: StoreOptions) -> anyhow::Result<Self> {
        let config = config_of(&args, &opts.data_path);
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let counters = Counters::default();
        opts.metrics.register(
            "pyroscope_store_profiles",
            "Profiles stored",
            counters.stored.clone(),
        );
        opts.metrics.register(
            "pyroscope_store_dropped_profiles",
            "Profiles refused (database unavailable or write queue full)",
            counters.dropped.clone(),
        );
        opts.metrics.register(
            "pyroscope_store_bad_profiles",
            "Profiles that did not decode as pprof",
            counters.bad.clone(),
        );
        opts.metrics.register(
            "pyroscope_store_write_errors",
            "Failed database writes",
            counters.write_errors.clone(),
        );
        opts.metrics.register(
            "pyroscope_store_expired_profiles",
            "Profiles deleted for being older than retention",
            counters.expired.clone(),
        );
        opts.metrics.register(
            "pyroscope_store_evicted_profiles",
            "Profiles deleted to keep the database under max_size",
            counters.evicted.clone(),
        );
        opts.metrics.register(
            "pyroscope_store_bytes",
            "Size of the database file and its write-ahead log",
            counters.bytes.clone(),
        );
        let shared = Arc::new(Shared {
            id: opts.id.clone(),
            config: Mutex::new(config),
            status: Mutex::new(Status {
                state: Ok(()),
                health: Health::new(HealthState::Unknown, "opening the database"),
                file_bytes: 0,
                last_enforce: None,
                last_bad_profile: None,
            }),
            queue: tx,
            reader: Mutex::new(None),
            counters,
            appended: AtomicU64::new(0),
        });
        let receiver = Arc::new(StoreReceiver {
            shared: shared.clone(),
        });
        opts.exports
            .publish_fields([("receiver", to_capsule(receiver))]);
        Ok(Store {
            shared,
            worker: Mutex::new(Some((rx, so))),
            default_dir: opts.data_path,
        })
    }

    /// Waits until everything appended so far is written (false on timeout or when stopped).
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::sync_channel(1);
        self.shared.queue.send(Msg::Flush(tx)).is_ok() && rx.recv_timeout(timeout).is_ok()
    }

    /// The database directory in use.
    pub fn dir(&self) -> PathBuf {
        lock(&self.shared.config).dir.clone()
    }
}

impl Component for Store {
    type Arguments = Arguments;

    fn build(opts: Options, args: Arguments) -> anyhow::Result<Self> {
        Self::build_with(opts, args, StoreOptions::default())
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let Some((rx, so)) = lock(&self.worker).take() else {
            anyhow::bail!("pyroscope.store: run called twice");
        };
        let shared = self.shared.clone();
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name("pyroscope.store".into())
            .spawn(move || {
                let _enter = span.enter();
                writer_loop(&shared, &rx, &so);
            })?;
        cancel.cancelled().await;
        let _ = self.shared.queue.send(Msg::Stop);
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("pyroscope.store writer thread panicked");
        }
        Ok(())
    }

    fn update(&self, args: Arguments) -> anyhow::Result<()> {
        let config = config_of(&args, &self.default_dir);
        let changed_dir = {
            let mut cur = lock(&self.shared.config);
            let changed = cur.dir != config.dir;
            *cur = config.clone();
            changed
        };
        if changed_dir {
            *lock(&self.shared.reader) = None;
        }
        self.shared
            .queue
            .send(Msg::Configure(config))
            .map_err(|_| anyhow::anyhow!("pyroscope.store writer has stopped"))
    }

    fn health(&self) -> Option<Health> {
        Some(lock(&self.shared.status).health.clone())
    }

    fn debug_info(&self) -> Option<Value> {
        let config = lock(&self.shared.config).clone();
        let st = lock(&self.shared.status);
        let c = &self.shared.counters;
        let n = |v: u64| Value::Number(Number::Uint(v));
        let mut o = BTreeMap::new();
        o.insert(
            "database".into(),
            Value::String(config.dir.join(db::DB_FILE).display().to_string()),
        );
        o.insert("file_bytes".into(), n(st.file_bytes));
        o.insert(
            "max_size".into(),
            Value::String(ByteSize(config.limits.max_size).to_string()),
        );
        o.insert(
            "retention".into(),
            Value::String(river_parser::decode::format_go_duration(
                config.limits.retention,
            )),
        );
        o.insert("profiles_stored".into(), n(c.stored.get()));
        o.insert("profiles_dropped".into(), n(c.dropped.get()));
        o.insert("profiles_bad".into(), n(c.bad.get()));
        o.insert("profiles_expired".into(), n(c.expired.get()));
        o.insert("profiles_evicted".into(), n(c.evicted.get()));
        o.insert(
            "last_error".into(),
            st.state.clone().err().map_or(Value::Null, Value::String),
        );
        o.insert(
            "last_bad_profile".into(),
            st.last_bad_profile
                .clone()
                .map_or(Value::Null, Value::String),
        );
        o.insert(
            "last_enforce".into(),
            st.last_enforce.map_or(Value::Null, |t| {
                n(t.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs())
            }),
        );
        Some(Value::Object(o))
    }

    fn serve_http(&self, req: &HttpRequest) -> Option<HttpResponse> {
        if let Some(method) = req.path.strip_prefix(connect::SERVICE_PREFIX) {
            return Some(self.shared.with_reader(|r| connect::serve(method, req, r)));
        }
        Some(self.shared.with_reader(|r| api::serve(req, r)))
    }

    fn http_root_prefixes(&self) -> &'static [&'static str] {
        &[connect::SERVICE_PREFIX]
    }
}

/// The writer thread: opens the database (retrying), writes batches, enforces limits.
fn writer_loop(shared: &Shared, rx: &ChannelRx<Msg>, so: &StoreOptions) {
    let mut config = lock(&shared.config).clone();
    let mut writer: Option<Writer> = None;
    let mut next_open = Instant::now();
    let mut next_maintenance = Instant::now() + so.maintenance_every;
    loop {
        if writer.is_none() && Instant::now() >= next_open {
            match Writer::open(&config.dir) {
                Ok(w) => {
                    tracing::info!(database = %w.file().display(), "pyroscope.store: database open");
                    writer = Some(w);
                    shared.set_state(Ok(()));
                    // Limits apply at once (a restart with a smaller max_size).
                    next_maintenance = Instant::now();
                }
                Err(e) => {
                    let cause = e.to_string();
                    tracing::warn!(error = %cause, "pyroscope.store: cannot open the database");
                    shared.set_state(Err(format!("cannot open the database: {cause}")));
                    next_open = Instant::now() + so.reopen_every;
                }
            }
        }
        let wait_until = if writer.is_some() {
            next_maintenance
        } else {
            next_open
        };
        let timeout = wait_until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(timeout) {
            Ok(Msg::Append(first)) => {
                let mut batch = vec![first];
                let mut after = Vec::new();
                while batch.len() < BATCHES_PER_TX {
                    match rx.try_recv() {
                        Ok(Msg::Append(b)) => batch.push(b),
                        Ok(other) => {
                            after.push(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if !write_batch(shared, &mut writer, &batch, &config.limits) {
                    // Reopen: a database that went bad shows at open; one that recovered
                    // (space freed, permissions fixed) takes appends again.
                    writer = None;
                    next_open = Instant::now() + so.reopen_every;
                }
                for m in after {
                    if handle_other(shared, m, &mut config, &mut writer, &mut next_open) {
                        return;
                    }
                }
            }
            Ok(other) => {
                if handle_other(shared, other, &mut config, &mut writer, &mut next_open) {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(w) = writer.as_mut() {
                    if Instant::now() >= next_maintenance {
                        enforce(shared, w, &config.limits);
                        next_maintenance = Instant::now() + so.maintenance_every;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Handles a non-append message; true to stop.
fn handle_other(
    shared: &Shared,
    m: Msg,
    config: &mut Config,
    writer: &mut Option<Writer>,
    next_open: &mut Instant,
) -> bool {
    match m {
        Msg::Append(_) => false,
        Msg::Configure(c) => {
            if c.dir != config.dir {
                *writer = None;
                *next_open = Instant::now();
                shared.set_state(Ok(()));
            }
            *config = c;
            false
        }
        Msg::Flush(ack) => {
            let _ = ack.send(());
            false
        }
        Msg::Stop => true,
    }
}

/// Writes a batch; false when the database failed.
fn write_batch(
    shared: &Shared,
    writer: &mut Option<Writer>,
    batch: &[Batch],
    limits: &Limits,
) -> bool {
    let profiles: u64 = batch.iter().map(|b| b.1.len() as u64).sum();
    let Some(w) = writer.as_mut() else {
        shared.counters.dropped.inc_by(profiles);
        return true;
    };
    match w.write(batch, SystemTime::now()) {
        Ok(stats) => {
            shared.counters.stored.inc_by(stats.profiles);
            if stats.bad_profiles > 0 {
                shared.counters.bad.inc_by(stats.bad_profiles);
                tracing::warn!(
                    profiles = stats.bad_profiles,
                    error = stats.last_bad.as_deref().unwrap_or(""),
                    "pyroscope.store: skipped profiles that are not valid pprof"
                );
                lock(&shared.status).last_bad_profile = stats.last_bad;
            }
            shared.set_state(Ok(()));
            // Over the limit already: enforce now rather than at the next tick.
            if w.used_bytes().is_ok_and(|u| u > limits.max_size) {
                enforce(shared, w, limits);
            }
            true
        }
        Err(e) => {
            shared.counters.write_errors.inc();
            shared.counters.dropped.inc_by(profiles);
            let cause = e.to_string();
            tracing::warn!(error = %cause, "pyroscope.store: write failed");
            shared.set_state(Err(format!("writing to the database failed: {cause}")));
            false
        }
    }
}

fn enforce(shared: &Shared, w: &mut Writer, limits: &Limits) {
    match w.enforce(limits, SystemTime::now()) {
        Ok(st) => {
            shared.counters.expired.inc_by(st.expired);
            shared.counters.evicted.inc_by(st.evicted);
            shared.counters.bytes.set(st.file_bytes as i64);
            let mut s = lock(&shared.status);
            s.file_bytes = st.file_bytes;
            s.last_enforce = Some(SystemTime::now());
            if st.expired + st.evicted > 0 {
                tracing::debug!(
                    expired = st.expired,
                    evicted = st.evicted,
                    file_bytes = st.file_bytes,
                    "pyroscope.store: limits enforced"
                );
            }
        }
        Err(e) => {
            let cause = e.to_string();
            tracing::warn!(error = %cause, "pyroscope.store: enforcing limits failed");
            shared.set_state(Err(format!(
                "enforcing retention and max_size failed: {cause}"
            )));
        }
    }
}
