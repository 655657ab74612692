//! `discovery.kubernetes`: finds targets through the Kubernetes API (via `kube`'s watcher).
//!
//! [`KubernetesDiscovery`] builds a client (explicit `api_server`, a kubeconfig file, or the
//! in-cluster service account), watches the objects the role needs (initial list, then watch
//! events; a fresh re-list after `410 Gone` or any error, retried with backoff), and turns the
//! objects into label sets exactly as Prometheus' Kubernetes discovery does ([`labels`]). The
//! last good targets stay exported while the API server is unreachable; health carries the cause.

mod client;
pub mod labels;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use river_parser::decode::{Invalid, PathSegment, Secret};
use river_parser::Validate;
use serde::Deserialize;

use super::component::{Discovery, DiscoveryComponent, Source};
pub use super::output::Status;
pub use crate::http_client::{Authorization, BasicAuth, TlsConfig};
use crate::http_client::{HttpClientConfig, HttpClientError};
pub use client::{client_config, in_cluster_config, namespaces_to_watch};
pub use labels::{build_targets, build_targets_cached, Attach, Role, Snapshot, TargetCache};

/// Where the service account's token, CA and namespace live in a pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Overrides [`SERVICE_ACCOUNT_DIR`] (used by tests that fake an in-cluster environment).
pub const SERVICE_ACCOUNT_DIR_ENV: &str = "RILL_KUBERNETES_SERVICE_ACCOUNT_DIR";

/// First retry delay after a failed list or watch; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A `namespaces` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Namespaces {
    pub own_namespace: bool,
    pub names: Vec<String>,
}

/// A `selectors` block: label and field selectors sent to the API server for one role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Selector {
    pub role: String,
    pub label: String,
    pub field: String,
}

/// The `attach_metadata` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachMetadata {
    pub node: bool,
    pub namespace: bool,
}

/// The arguments of `discovery.kubernetes`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Arguments {
    pub role: String,
    pub api_server: Option<String>,
    pub kubeconfig_file: Option<String>,
    /// Repeatable; the names of all blocks are merged.
    #[serde(rename = "namespaces")]
    pub namespaces: Vec<Namespaces>,
    #[serde(rename = "selectors")]
    pub selectors: Vec<Selector>,
    pub attach_metadata: Option<AttachMetadata>,
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<String>,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub tls_config: Option<TlsConfig>,
    pub proxy_url: Option<String>,
    pub no_proxy: Option<String>,
    pub proxy_from_environment: bool,
    pub enable_http2: Option<bool>,
    pub follow_redirects: Option<bool>,
}

/// Errors of `discovery.kubernetes`. The argument rules (their `Validate` impl) use the texts
/// of the first variants.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("missing required attribute \"role\"")]
    MissingRole,
    #[error("invalid role {0:?}, expected one of pod, node, service, endpoints, endpointslice or ingress")]
    InvalidRole(String),
    #[error("api_server and kubeconfig_file are mutually exclusive")]
    ServerAndKubeconfig,
    #[error("custom HTTP client settings cannot be used with kubeconfig_file")]
    KubeconfigWithHttp,
    #[error("to use custom HTTP client settings please provide the api_server URL explicitly")]
    HttpWithoutServer,
    #[error("invalid api_server {0:?}: {1}")]
    InvalidServer(String, String),
    #[error("invalid proxy_url {0:?}: {1}")]
    InvalidProxy(String, String),
    #[error("selector role {0:?} is not valid for role {1:?}")]
    SelectorRole(String, String),
    #[error("duplicated selector role: {0}")]
    DuplicateSelector(String),
    #[error("tls_config: {0}")]
    Tls(String),
    #[error("reading {path}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Http(#[from] HttpClientError),
    #[error("in-cluster configuration: {0}")]
    InCluster(String),
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("creating the Kubernetes client: {0}")]
    Client(String),
}

impl Arguments {
    /// The role, validated.
    pub fn role(&self) -> Result<Role, KubernetesError> {
        if self.role.is_empty() {
            return Err(KubernetesError::MissingRole);
        }
        Role::parse(&self.role).ok_or_else(|| KubernetesError::InvalidRole(self.role.clone()))
    }

    /// The HTTP client settings (the shared block of `crate::http_client`).
    pub fn http_client(&self) -> HttpClientConfig {
        HttpClientConfig {
            basic_auth: self.basic_auth.clone(),
            authorization: self.authorization.clone(),
            bearer_token: self.bearer_token.clone(),
            bearer_token_file: self.bearer_token_file.clone(),
            tls_config: self.tls_config.clone(),
            proxy_url: self.proxy_url.clone(),
            no_proxy: self.no_proxy.clone(),
            proxy_from_environment: self.proxy_from_environment,
            follow_redirects: self.follow_redirects.unwrap_or(true),
            enable_http2: self.enable_http2.unwrap_or(true),
            ..HttpClientConfig::default()
        }
    }

    /// The `attach_metadata` settings.
    pub fn attach(&self) -> Attach {
        let a = self.attach_metadata.clone().unwrap_or_default();
        Attach {
            node: a.node,
            namespace: a.namespace,
        }
    }

    fn selector_for(&self, role: Role) -> Option<&Selector> {
        self.selectors.iter().find(|s| s.role == role.as_str())
    }

    /// An error at the first HTTP client setting written (they need an explicit `api_server`).
    fn at_http_setting(&self, e: KubernetesError) -> Option<Invalid> {
        let message = e.to_string();
        let attr = |name: &str| Some(Invalid::attr(name, message.clone()));
        let block = |name: &str| {
            Some(Invalid {
                path: vec![PathSegment::Block {
                    name: name.to_owned(),
                    index: 0,
                }],
                message: message.clone(),
            })
        };
        if self.bearer_token.is_some() {
            attr("bearer_token")
        } else if self.bearer_token_file.is_some() {
            attr("bearer_token_file")
        } else if self.basic_auth.is_some() {
            block("basic_auth")
        } else if self.authorization.is_some() {
            block("authorization")
        } else if self.tls_config.is_some() {
            block("tls_config")
        } else if self.proxy_url.is_some() {
            attr("proxy_url")
        } else {
            None
        }
    }
}

/// What decoding cannot check: the role, how the API server is reached, the shared HTTP client
/// rules and the selectors.
impl Validate for Arguments {
    fn validate(&self) -> Result<(), Invalid> {
        let role = self
            .role()
            .map_err(|e| Invalid::attr("role", e.to_string()))?;
        if self.api_server.is_some() && self.kubeconfig_file.is_some() {
            return Err(Invalid::attr(
                "kubeconfig_file",
                KubernetesError::ServerAndKubeconfig.to_string(),
            ));
        }
        if self.kubeconfig_file.is_some() {
            if let Some(e) = self.at_http_setting(KubernetesError::KubeconfigWithHttp) {
                return Err(e);
            }
        }
        if self.api_server.is_none() && self.kubeconfig_file.is_none() {
            if let Some(e) = self.at_http_setting(KubernetesError::HttpWithoutServer) {
                return Err(e);
            }
        }
        self.http_client().validate()?;
        if let Some(s) = &self.api_server {
            client::parse_uri(s).map_err(|e| {
                Invalid::attr(
                    "api_server",
                    KubernetesError::InvalidServer(s.clone(), e).to_string(),
                )
            })?;
        }
        if let Some(p) = &self.proxy_url {
            client::parse_uri(p).map_err(|e| {
                Invalid::attr(
                    "proxy_url",
                    KubernetesError::InvalidProxy(p.clone(), e).to_string(),
                )
            })?;
        }
        let allowed = watched_roles(role, self.attach());
        let mut seen = Vec::new();
        for (i, s) in self.selectors.iter().enumerate() {
            let at =
                |e: KubernetesError| Invalid::attr("role", e.to_string()).in_block("selectors", i);
            let r = Role::parse(&s.role)
                .ok_or_else(|| at(KubernetesError::InvalidRole(s.role.clone())))?;
            if !allowed.contains(&r) {
                return Err(at(KubernetesError::SelectorRole(
                    s.role.clone(),
                    self.role.clone(),
                )));
            }
            if seen.contains(&r) {
                return Err(at(KubernetesError::DuplicateSelector(s.role.clone())));
            }
            seen.push(r);
        }
        Ok(())
    }
}

/// The object kinds watched for a role (the role's own, plus those its labels draw from).
pub fn watched_roles(role: Role, attach: Attach) -> Vec<Role> {
    match role {
        Role::Pod => {
            let mut v = vec![Role::Pod];
            if attach.node {
                v.push(Role::Node);
            }
            v
        }
        Role::Node => vec![Role::Node],
        Role::Service => vec![Role::Service],
        Role::Ingress => vec![Role::Ingress],
        Role::Endpoints | Role::EndpointSlice => {
            let mut v = vec![role, Role::Service, Role::Pod];
            if attach.node {
                v.push(Role::Node);
            }
            v
        }
    }
}
/// `discovery.kubernetes`' source: the objects of a Kubernetes API server.
#[derive(Debug)]
pub struct KubernetesSource;

/// The watch loop, independent of the component runtime: arguments in, targets and health out.
pub type KubernetesDiscovery = Discovery<KubernetesSource>;

/// The `discovery.kubernetes` component: exports `targets`.
pub type KubernetesComponent = DiscoveryComponent<KubernetesSource>;

impl Source for KubernetesSource {
    type Arguments = Arguments;
    const KIND: &'static str = "KubernetesDiscovery";

    /// Runs until `cancel` completes, restarting the watches whenever the arguments change.
    async fn run(disc: Arc<KubernetesDiscovery>, cancel: impl Future<Output = ()> + Send) {
        tokio::pin!(cancel);
        let mut args_rx = disc.arguments();
        loop {
            let args = args_rx.borrow_and_update().clone();
            tokio::select! {
                biased;
                _ = &mut cancel => return,
                changed = args_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = watch::run_with(Arc::clone(&disc), args) => return,
            }
        }
    }
}
