//! One endpoint of `pyroscope.write`: an HTTP client built from the endpoint's settings, a
//! bounded queue of encoded push requests, and a worker task that sends them one at a time,
//! retrying what is worth retrying with exponential backoff and jitter. A full queue drops the
//! new request (counted); the producer is never made to wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use flow_runtime::util::{error_chain, lock};
use reqwest::header::CONTENT_TYPE;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn, Instrument};

use super::args::EndpointOptions;
use super::WriteMetrics;
use crate::http_client::HttpClientConfig;
use crate::pyroscope::push_proto;

/// An encoded push request waiting to be sent.
#[derive(Debug)]
pub(super) struct Batch {
    pub body: Bytes,
    pub profiles: u64,
    /// Raw profile bytes (what the byte counters count).
    pub profile_bytes: u64,
}

/// What the UI shows about an endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointStatus {
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub last_error_time: Option<SystemTime>,
}

/// Bounds and parallelism of one endpoint's queue.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueueLimits {
    /// Requests waiting at most.
    pub capacity: usize,
    /// Bytes of encoded requests waiting at most (one request is always accepted into an empty
    /// queue, whatever its size).
    pub max_bytes: u64,
    /// Requests in flight at once.
    pub senders: usize,
}

/// A running endpoint. Dropping it stops the workers; what is still queued is counted as dropped.
pub(super) struct Endpoint {
    pub opts: EndpointOptions,
    label: String,
    tx: mpsc::Sender<Arc<Batch>>,
    queued_bytes: Arc<AtomicU64>,
    /// Batches queued or being delivered (what a graceful shutdown waits for).
    pending: Arc<AtomicU64>,
    max_bytes: u64,
    status: Arc<Mutex<EndpointStatus>>,
    shutdown: watch::Sender<bool>,
    metrics: WriteMetrics,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl Endpoint {
    /// Builds the client and starts the worker on the current tokio runtime.
    pub fn start(
        opts: EndpointOptions,
        limits: QueueLimits,
        metrics: WriteMetrics,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self, String> {
        let client = build_client(&opts)?;
        let push_url = format!(
            "{}{}",
            opts.url.trim_end_matches('/'),
            push_proto::PUSH_PATH
        );
        let label = opts.display_name().to_string();
        metrics.init_endpoint(&label);
        let (tx, rx) = mpsc::channel(limits.capacity.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(AtomicU64::new(0));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let status = Arc::new(Mutex::new(EndpointStatus::default()));
        for _ in 0..limits.senders.max(1) {
            let worker = Worker {
                opts: opts.clone(),
                http: opts.http_client(),
                label: label.clone(),
                client: client.clone(),
                push_url: push_url.clone(),
                status: Arc::clone(&status),
                metrics: metrics.clone(),
                shutdown: shutdown_rx.clone(),
                rng: seed(),
            };
            runtime.spawn(
                worker
                    .run(
                        Arc::clone(&rx),
                        Arc::clone(&queued_bytes),
                        Arc::clone(&pending),
                    )
                    .in_current_span(),
            );
        }
        Ok(Endpoint {
            opts,
            label,
            tx,
            queued_bytes,
            pending,
            max_bytes: limits.max_bytes,
            status,
            shutdown,
            metrics,
        })
    }

    /// Queues a batch without waiting. Returns false (and counts the drop) if the queue is full.
    pub fn enqueue(&self, batch: Arc<Batch>) -> bool {
        let len = batch.body.len() as u64;
        let queued = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        self.pending.fetch_add(1, Ordering::AcqRel);
        let reason = if queued > 0 && queued + len > self.max_bytes {
            Some("queue full (bytes)")
        } else {
            match self.tx.try_send(Arc::clone(&batch)) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => Some("queue full"),
                Err(mpsc::error::TrySendError::Closed(_)) => Some("endpoint stopped"),
            }
        };
        let Some(reason) = reason else {
            return true;
        };
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        self.pending.fetch_sub(1, Ordering::AcqRel);
        self.metrics.dropped(&self.label, &batch);
        warn!(endpoint = %self.label, profiles = batch.profiles, reason, "dropping profiles");
        let mut st = lock(&self.status);
        st.last_error = Some(format!("{reason}: profiles dropped"));
        st.last_error_time = Some(SystemTime::now());
        false
    }

    /// Bytes of encoded requests waiting.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Acquire)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Batches queued or in flight (delivered, dropped or given up ones no longer count).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    pub fn queue_capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    pub fn status(&self) -> EndpointStatus {
        lock(&self.status).clone()
    }
}

fn build_client(opts: &EndpointOptions) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder()
        .user_agent(super::user_agent())
        .timeout(opts.remote_timeout)
        .connect_timeout(opts.remote_timeout);
    opts.http_client()
        .apply_to_reqwest(builder, &opts.url)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| format!("building HTTP client: {e}"))
}

/// Result of one attempt.
enum Failure {
    /// Worth another try (after at least `retry_after`, if the server said so).
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Never retried.
    Permanent(String),
}

struct Worker {
    opts: EndpointOptions,
    /// The credentials (read per request).
    http: HttpClientConfig,
    label: String,
    client: reqwest::Client,
    push_url: String,
    status: Arc<Mutex<EndpointStatus>>,
    metrics: WriteMetrics,
    shutdown: watch::Receiver<bool>,
    rng: u64,
}

impl Worker {
    async fn run(
        mut self,
        rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Arc<Batch>>>>,
        queued_bytes: Arc<AtomicU64>,
        pending: Arc<AtomicU64>,
    ) {
        loop {
            let batch = {
                let mut shutdown = self.shutdown.clone();
                let mut guard = tokio::select! {
                    g = rx.lock() => g,
                    _ = shutdown.wait_for(|s| *s) => break,
                };
                tokio::select! {
                    b = guard.recv() => match b { Some(b) => b, None => break },
                    _ = shutdown.wait_for(|s| *s) => break,
                }
            };
            queued_bytes.fetch_sub(batch.body.len() as u64, Ordering::AcqRel);
            let delivered = self.deliver(&batch).await;
            pending.fetch_sub(1, Ordering::AcqRel);
            if !delivered {
                // Shut down while retrying: this batch was counted; count the rest too.
                break;
            }
        }
        let mut guard = rx.lock().await;
        guard.close();
        while let Ok(batch) = guard.try_recv() {
            queued_bytes.fetch_sub(batch.body.len() as u64, Ordering::AcqRel);
            pending.fetch_sub(1, Ordering::AcqRel);
            self.metrics.dropped(&self.label, &batch);
        }
        debug!(endpoint = %self.label, "endpoint worker stopped");
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sends one batch with retries. Returns false when interrupted by shutdown.
    async fn deliver(&mut self, batch: &Batch) -> bool {
        let mut retries = 0u32;
        let mut backoff = self.opts.min_backoff_period;
        loop {
            let started = Instant::now();
            let result = self.send_once(batch.body.clone()).await;
            self.metrics
                .latency(&self.label)
                .observe(started.elapsed().as_secs_f64());
            let failure = match result {
                Ok(()) => {
                    self.metrics.sent(&self.label, batch);
                    lock(&self.status).last_success = Some(SystemTime::now());
                    return true;
                }
                Err(f) => f,
            };
            let (message, retry_after) = match failure {
                Failure::Permanent(message) => {
                    warn!(endpoint = %self.label, error = %message, "push rejected, dropping profiles");
                    self.record_error(message);
                    self.metrics.dropped(&self.label, batch);
                    return true;
                }
                Failure::Retryable {
                    message,
                    retry_after,
                } => (message, retry_after),
            };
            self.record_error(message.clone());
            let max = self.opts.max_backoff_retries;
            if max != 0 && retries >= max {
                warn!(endpoint = %self.label, error = %message, retries, "push failed, giving up and dropping profiles");
                self.metrics.dropped(&self.label, batch);
                return true;
            }
            if self.shutting_down() {
                self.metrics.dropped(&self.label, batch);
                return false;
            }
            retries += 1;
            self.metrics.retried(&self.label);
            let delay = self
                .jitter(backoff)
                .max(retry_after.unwrap_or_default())
                .min(self.opts.max_backoff_period);
            // A warning per failed attempt (at most `max_backoff_retries` per batch, spaced by
            // the backoff): a writer that is retrying is never silent.
            warn!(endpoint = %self.label, error = %message, ?delay, retries, "push failed, retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.wait_for(|s| *s) => {
                    self.metrics.dropped(&self.label, batch);
                    return false;
                }
            }
            backoff = (backoff * 2).min(self.opts.max_backoff_period);
        }
    }

    fn record_error(&self, message: String) {
        let mut st = lock(&self.status);
        st.last_error = Some(message);
        st.last_error_time = Some(SystemTime::now());
    }

    /// A delay drawn uniformly from [d/2, d].
    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let frac = (r >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.5 + 0.5 * frac)
    }

    async fn send_once(&self, body: Bytes) -> Result<(), Failure> {
        let mut req = self
            .client
            .post(&self.push_url)
            .header(CONTENT_TYPE, push_proto::CONTENT_TYPE)
            .header("Connect-Protocol-Version", "1")
            .body(body);
        req = self.authorize(req).map_err(Failure::Permanent)?;
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection error"
                } else if e.is_builder() {
                    return Err(Failure::Permanent(format!("building request: {e}")));
                } else {
                    "request error"
                };
                return Err(Failure::Retryable {
                    message: format!("{kind}: {}", error_chain(&e)),
                    retry_after: None,
                });
            }
        };
        let status = resp.status();
        if status.is_success() {
            // Read the (small) body so that the connection can be reused.
            let _ = resp.bytes().await;
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match resp.bytes().await {
            Ok(b) => {
                let mut s = String::from_utf8_lossy(&b[..b.len().min(1024)]).into_owned();
                if b.len() > 1024 {
                    s.push_str("...");
                }
                s
            }
            Err(_) => String::new(),
        };
        let message = format!("server returned HTTP status {status}: {}", text.trim());
        let code = status.as_u16();
        let retryable =
            code == 408 || status.is_server_error() || (code == 429 && self.opts.retry_on_http_429);
        if retryable {
            Err(Failure::Retryable {
                message,
                retry_after,
            })
        } else {
            Err(Failure::Permanent(message))
        }
    }

    /// Adds the configured credentials; files are read on every request so rotated tokens apply.
    fn authorize(&self, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, String> {
        match self
            .http
            .authorization_header()
            .map_err(|e| e.to_string())?
        {
            Some(value) => Ok(req.header(reqwest::header::AUTHORIZATION, value)),
            None => Ok(req),
        }
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() | 1
}
