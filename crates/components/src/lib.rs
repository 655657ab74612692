//! rill's components, one module per component, named like the component
//! (`discovery.relabel` lives in `discovery/relabel.rs`).

pub mod discovery;
pub mod http_client;
pub mod pyroscope;
pub mod registry;

pub use registry::registry;
