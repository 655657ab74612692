//! The Flow runtime: the component contract and registry, the loader that turns a River file into
//! a component graph, the scheduler that evaluates it and propagates exports, hot reload, the
//! HTTP server (health, reload, metrics, JSON API) and the embedded web UI.

pub mod agent;
pub mod component;
pub mod registry;

pub use component::{
    CancellationToken, Component, ExportsHandle, Health, HealthState, MetricsRegistry, Options,
    Resource, ResourceError,
};
pub use registry::Registry;
pub mod http;
pub mod loader;
pub mod logging;
pub mod metrics;
pub mod runtime;
pub mod testing;
pub mod util;

pub use runtime::{LoadError, ReloadFailure, Runtime, RuntimeOptions};
