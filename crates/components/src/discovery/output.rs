//! The output side shared by the discovery loops (`discovery.docker`, `discovery.kubernetes`):
//! the last good targets, published to subscribers only when they change, how many rounds
//! succeeded, and the loop's health.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use flow_runtime::util::lock;
use tokio::sync::watch;

use super::target::Labels;

/// The discovery's health as last observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub healthy: bool,
    pub message: String,
}

/// Targets and health of one discovery loop.
#[derive(Debug)]
pub struct DiscoveryOutput {
    /// Names the discovery in health-change logs (`docker`, `kubernetes`).
    kind: &'static str,
    targets: watch::Sender<Vec<Labels>>,
    status: Mutex<Status>,
    /// Successful rounds (refreshes, syncs) so far: every [`DiscoveryOutput::publish`].
    rounds: AtomicU64,
}

impl DiscoveryOutput {
    /// No targets yet; unhealthy with "starting" until the first good refresh.
    pub fn new(kind: &'static str) -> Self {
        DiscoveryOutput {
            kind,
            targets: watch::Sender::new(Vec::new()),
            status: Mutex::new(Status {
                healthy: false,
                message: "starting".into(),
            }),
            rounds: AtomicU64::new(0),
        }
    }

    /// The last good targets.
    pub fn targets(&self) -> Vec<Labels> {
        self.targets.borrow().clone()
    }

    /// A receiver that sees every change of the targets (not unchanged refreshes).
    pub fn subscribe(&self) -> watch::Receiver<Vec<Labels>> {
        self.targets.subscribe()
    }

    /// Replaces the targets after a successful round; subscribers are woken only when they
    /// differ from the last ones.
    pub fn publish(&self, targets: Vec<Labels>) {
        self.targets.send_if_modified(|cur| {
            if *cur == targets {
                false
            } else {
                *cur = targets;
                true
            }
        });
        self.rounds.fetch_add(1, Ordering::Relaxed);
    }

    /// How many rounds published targets so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Records the health, logging when it flips.
    pub fn set_status(&self, healthy: bool, message: String) {
        let mut s = lock(&self.status);
        if s.healthy != healthy {
            if healthy {
                tracing::info!(%message, "{} discovery healthy", self.kind);
            } else {
                tracing::warn!(%message, "{} discovery unhealthy", self.kind);
            }
        }
        *s = Status { healthy, message };
    }
}
