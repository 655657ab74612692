//! The one `discovery.*` component: a [`Discovery`] loop (arguments in, targets and health out)
//! for any [`Source`] (Docker, Kubernetes), and [`DiscoveryComponent`], which exports its
//! `targets` and reports its health to the runtime. A source only says how to keep the targets
//! fresh; starting, reconfiguring, publishing and health live here once.

use std::future::Future;
use std::sync::Arc;

use river_parser::decode::Invalid;
use river_parser::Validate;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::output::{DiscoveryOutput, Status};
use super::target::{targets_value, Labels};

/// Where targets come from: the arguments and the loop that keeps the targets fresh.
pub trait Source: Send + Sync + Sized + 'static {
    type Arguments: DeserializeOwned + Validate + PartialEq + Clone + Send + Sync + 'static;

    /// Names the loop in health-change logs and `Debug` output.
    const KIND: &'static str;

    /// Runs until `cancel` completes: follows [`Discovery::arguments`], publishes through
    /// [`Discovery::output`].
    fn run(
        disc: Arc<Discovery<Self>>,
        cancel: impl Future<Output = ()> + Send,
    ) -> impl Future<Output = ()> + Send;
}

/// The discovery loop of source `S`, independent of the component runtime.
pub struct Discovery<S: Source> {
    args: watch::Sender<S::Arguments>,
    out: DiscoveryOutput,
}

impl<S: Source> std::fmt::Debug for Discovery<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(S::KIND)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<S: Source> Discovery<S> {
    /// Validates the arguments (the rules of their `Validate` impl); nothing is contacted until
    /// [`Discovery::run`].
    pub fn new(args: S::Arguments) -> Result<Arc<Self>, Invalid> {
        args.validate()?;
        Ok(Self::start(args))
    }

    /// [`Discovery::new`] for arguments the runtime has already validated.
    fn start(args: S::Arguments) -> Arc<Self> {
        Arc::new(Discovery {
            args: watch::Sender::new(args),
            out: DiscoveryOutput::new(S::KIND),
        })
    }

    /// Validates and replaces the arguments; the loop restarts with them right away.
    pub fn update(&self, args: S::Arguments) -> Result<(), Invalid> {
        args.validate()?;
        self.args.send_replace(args);
        Ok(())
    }

    /// The arguments, as a receiver that sees every replacement.
    pub fn arguments(&self) -> watch::Receiver<S::Arguments> {
        self.args.subscribe()
    }

    /// Targets, rounds and health.
    pub fn output(&self) -> &DiscoveryOutput {
        &self.out
    }

    /// The last good targets (kept while the source is unreachable).
    pub fn targets(&self) -> Vec<Labels> {
        self.out.targets()
    }

    /// A receiver that sees every change of the targets (not unchanged rounds).
    pub fn subscribe(&self) -> watch::Receiver<Vec<Labels>> {
        self.out.subscribe()
    }

    pub fn status(&self) -> Status {
        self.out.status()
    }

    /// How many rounds (Docker refreshes, Kubernetes syncs with every watch listed) succeeded.
    pub fn refresh_count(&self) -> u64 {
        self.out.rounds()
    }

    /// Runs until `cancel` completes.
    pub async fn run(self: Arc<Self>, cancel: impl Future<Output = ()> + Send) {
        S::run(self, cancel).await;
    }

    /// The runtime's view of the health: unknown until the first round or failure.
    fn health(&self) -> flow_runtime::Health {
        let st = self.status();
        if self.refresh_count() == 0 && !st.healthy && st.message == "starting" {
            flow_runtime::Health::new(flow_runtime::HealthState::Unknown, st.message)
        } else if st.healthy {
            flow_runtime::Health::healthy(st.message)
        } else {
            flow_runtime::Health::unhealthy(st.message)
        }
    }
}

/// A `discovery.*` component: exports `targets`.
pub struct DiscoveryComponent<S: Source> {
    opts: flow_runtime::Options,
    disc: Arc<Discovery<S>>,
}

impl<S: Source> std::fmt::Debug for DiscoveryComponent<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryComponent")
            .field("kind", &S::KIND)
            .field("id", &self.opts.id)
            .finish_non_exhaustive()
    }
}

impl<S: Source> DiscoveryComponent<S> {
    /// The discovery loop behind the component.
    pub fn discovery(&self) -> &Arc<Discovery<S>> {
        &self.disc
    }
}

impl<S: Source> flow_runtime::Component for DiscoveryComponent<S> {
    type Arguments = S::Arguments;

    fn build(opts: flow_runtime::Options, args: S::Arguments) -> anyhow::Result<Self> {
        let disc = Discovery::start(args);
        // Dependants can evaluate right away; real targets follow after the first round.
        opts.exports
            .publish_fields([("targets", targets_value(&disc.targets()))]);
        Ok(DiscoveryComponent { opts, disc })
    }

    async fn run(self: Arc<Self>, cancel: flow_runtime::CancellationToken) -> anyhow::Result<()> {
        let mut rx = self.disc.subscribe();
        let exports = self.opts.exports.clone();
        let forward = async move {
            while rx.changed().await.is_ok() {
                let targets = rx.borrow_and_update().clone();
                exports.publish_fields([("targets", targets_value(&targets))]);
            }
        };
        let stop = cancel.clone();
        tokio::select! {
            _ = Arc::clone(&self.disc).run(async move { stop.cancelled().await }) => {}
            _ = forward => {}
            _ = cancel.cancelled() => {}
        }
        Ok(())
    }

    fn update(&self, args: S::Arguments) -> anyhow::Result<()> {
        self.disc.args.send_replace(args);
        Ok(())
    }

    fn health(&self) -> Option<flow_runtime::Health> {
        Some(self.disc.health())
    }
}
