//! The Flow runtime: the component contract and registry, the loader that turns a River file into
//! a component graph, the scheduler that evaluates it and propagates exports, hot reload, the
//! HTTP server (health, reload, metrics, JSON API) and the embedded web UI.
//!
//! The test components ([`testing`]) exist only with the `testing` cargo feature;
//! [`registry::test_components`] hands them to a binary without it naming the feature.

pub mod component;
pub mod http;
pub mod loader;
pub mod logging;
pub mod metrics;
mod modules;
pub mod registry;
pub mod runtime;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
pub mod util;
pub mod validate;

pub use component::{
    CancellationToken, Component, ExportsHandle, Health, HealthState, HttpRequest, HttpResponse,
    MetricsRegistry, Options, Resource, ResourceError,
};
pub use registry::Registry;
pub use runtime::{LoadError, ReloadFailure, Runtime, RuntimeOptions};
pub use source::Source;
