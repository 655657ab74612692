//! `discovery.docker`: finds targets from the containers of a Docker engine (via bollard).
//!
//! [`build_targets`] turns the engine's container and network lists into label sets exactly as
//! Prometheus' Docker discovery does (one target per network × TCP port, fallbacks for
//! containers without TCP ports and in host mode, shared `container:<id>` networks).
//! [`DockerDiscovery`] keeps them fresh: it refreshes every `refresh_interval` and soon after any
//! container/network event, keeps the last good targets while the engine is unreachable, retries
//! with backoff and reports its health.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{ContainerSummary, Network};
use bollard::query_parameters::{EventsOptions, ListContainersOptions, ListNetworksOptions};
use bollard::Docker;
use flow_runtime::util::error_chain;
use futures_util::StreamExt;
use river_parser::decode::{Duration as RiverDuration, Invalid, Secret};
use river_parser::Validate;
use serde::Deserialize;

use super::component::{Discovery, DiscoveryComponent, Source};
use super::target::Labels;
pub use crate::http_client::{Authorization, BasicAuth, TlsConfig};
use crate::http_client::{HttpClientConfig, HttpClientError};

const LABEL_PREFIX: &str = "__meta_docker_";
const CONTAINER_ID: &str = "__meta_docker_container_id";
const CONTAINER_NAME: &str = "__meta_docker_container_name";
const CONTAINER_NETWORK_MODE: &str = "__meta_docker_container_network_mode";
const CONTAINER_LABEL: &str = "__meta_docker_container_label_";
const NETWORK_IP: &str = "__meta_docker_network_ip";
const PORT_PRIVATE: &str = "__meta_docker_port_private";
const PORT_PUBLIC: &str = "__meta_docker_port_public";
const PORT_PUBLIC_IP: &str = "__meta_docker_port_public_ip";
const ADDRESS: &str = "__address__";

/// How soon after a Docker event the targets are refreshed (events come in bursts).
const EVENT_DEBOUNCE: Duration = Duration::from_millis(100);
/// First retry delay after a failed refresh; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A `filter` block: passed to the container list API.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

/// The arguments of `discovery.docker`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Arguments {
    /// `unix:///var/run/docker.sock`, `tcp://host:2375`, `http://…` or `https://…`.
    pub host: String,
    pub port: u16,
    pub host_networking_host: String,
    pub refresh_interval: RiverDuration,
    pub match_first_network: bool,
    #[serde(rename = "filter")]
    pub filters: Vec<Filter>,
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<String>,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub tls_config: Option<TlsConfig>,
    pub enable_http2: bool,
    pub follow_redirects: bool,
}

impl Default for Arguments {
    fn default() -> Self {
        Arguments {
            host: String::new(),
            port: 80,
            host_networking_host: "localhost".to_owned(),
            refresh_interval: RiverDuration::from_secs(60),
            match_first_network: true,
            filters: Vec::new(),
            bearer_token: None,
            bearer_token_file: None,
            basic_auth: None,
            authorization: None,
            tls_config: None,
            enable_http2: true,
            follow_redirects: true,
        }
    }
}

/// Errors of `discovery.docker` (invalid arguments are [`Invalid`], from its `Validate` impl).
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("invalid host {0:?}: expected unix://, tcp://, http:// or https://")]
    InvalidHost(String),
    #[error("tls_config: {0}")]
    Tls(String),
    #[error(transparent)]
    Http(#[from] HttpClientError),
    #[error("error setting up docker client: {0}")]
    Connect(String),
    #[error("error while negotiating the Docker API version: {0}")]
    Negotiate(String),
    #[error("error while listing containers: {0}")]
    ListContainers(String),
    #[error("error while computing network labels: {0}")]
    ListNetworks(String),
}

impl Arguments {
    /// The HTTP client settings (the shared block of `crate::http_client`).
    pub fn http_client(&self) -> HttpClientConfig {
        HttpClientConfig {
            basic_auth: self.basic_auth.clone(),
            authorization: self.authorization.clone(),
            bearer_token: self.bearer_token.clone(),
            bearer_token_file: self.bearer_token_file.clone(),
            tls_config: self.tls_config.clone(),
            follow_redirects: self.follow_redirects,
            enable_http2: self.enable_http2,
            ..HttpClientConfig::default()
        }
    }
}

/// What decoding cannot check: the host scheme, the interval, the HTTP client settings (shared
/// rules) and what a Docker engine's TLS needs.
impl Validate for Arguments {
    fn validate(&self) -> Result<(), Invalid> {
        if self.host.is_empty() {
            return Err(Invalid::attr("host", "missing required attribute \"host\""));
        }
        host_kind(&self.host).map_err(|e| Invalid::attr("host", e.to_string()))?;
        if self.refresh_interval.as_std().is_zero() {
            return Err(Invalid::attr(
                "refresh_interval",
                "refresh_interval must be greater than 0",
            ));
        }
        self.http_client().validate()?;
        if let Some(tls) = &self.tls_config {
            docker_tls(tls).map_err(|e| e.in_block("tls_config", 0))?;
        }
        Ok(())
    }
}

/// The `tls_config` a Docker engine connection can use: client certificate files only.
fn docker_tls(tls: &TlsConfig) -> Result<(), Invalid> {
    if tls.insecure_skip_verify {
        return Err(Invalid::attr(
            "insecure_skip_verify",
            "tls_config: insecure_skip_verify is not supported for a Docker host",
        ));
    }
    if tls.min_version.is_some() {
        return Err(Invalid::attr(
            "min_version",
            "tls_config: min_version is not supported for a Docker host",
        ));
    }
    for (name, set) in [
        ("ca_pem", tls.ca_pem.is_some()),
        ("cert_pem", tls.cert_pem.is_some()),
        ("key_pem", tls.key_pem.is_some()),
    ] {
        if set {
            return Err(Invalid::attr(
                name,
                "tls_config: ca_pem, cert_pem and key_pem are not supported for a Docker host; use ca_file, cert_file and key_file",
            ));
        }
    }
    if tls.ca_file.is_none() || tls.cert_file.is_none() || tls.key_file.is_none() {
        return Err(Invalid::body(NEEDS_TLS_FILES));
    }
    Ok(())
}

const NEEDS_TLS_FILES: &str = "tls_config: a Docker host needs ca_file, cert_file and key_file";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKind {
    Unix,
    Http,
    Https,
}

fn host_kind(host: &str) -> Result<HostKind, DockerError> {
    let (scheme, rest) = host
        .split_once("://")
        .ok_or_else(|| DockerError::InvalidHost(host.to_owned()))?;
    if rest.is_empty() {
        return Err(DockerError::InvalidHost(host.to_owned()));
    }
    match scheme {
        "unix" => Ok(HostKind::Unix),
        "tcp" | "http" => Ok(HostKind::Http),
        "https" => Ok(HostKind::Https),
        _ => Err(DockerError::InvalidHost(host.to_owned())),
    }
}

/// Creates a bollard client for the arguments (no I/O except reading credential files).
pub fn connect(args: &Arguments) -> Result<Docker, DockerError> {
    // Request timeout (whole seconds, at least one): the refresh interval, as Prometheus does.
    let timeout = args.refresh_interval.as_std().as_secs().max(1);
    let version = bollard::API_DEFAULT_VERSION;
    let docker = match host_kind(&args.host)? {
        HostKind::Unix => Docker::connect_with_unix(&args.host, timeout, version),
        HostKind::Http if args.tls_config.is_none() => {
            Docker::connect_with_http(&args.host, timeout, version)
        }
        HostKind::Http | HostKind::Https => {
            let tls = args.tls_config.clone().unwrap_or_default();
            let (Some(ca), Some(cert), Some(key)) = (tls.ca_file, tls.cert_file, tls.key_file)
            else {
                return Err(DockerError::Tls(
                    NEEDS_TLS_FILES.trim_start_matches("tls_config: ").into(),
                ));
            };
            // Several crypto providers may be compiled in; pick one explicitly (no-op if set).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let addr = args.host.replacen("tcp://", "https://", 1);
            Docker::connect_with_ssl(
                &addr,
                std::path::Path::new(&key),
                std::path::Path::new(&cert),
                std::path::Path::new(&ca),
                timeout,
                version,
            )
        }
    }
    .map_err(|e| DockerError::Connect(error_chain(&e)))?;
    let docker = match host_kind(&args.host)? {
        HostKind::Unix => docker,
        _ => {
            let auth = args.http_client().authorization_header()?;
            let agent = http::HeaderValue::from_static(concat!("rill/", env!("CARGO_PKG_VERSION")));
            docker.with_request_modifier(move |mut req| {
                req.headers_mut()
                    .insert(http::header::USER_AGENT, agent.clone());
                if let Some(a) = &auth {
                    req.headers_mut()
                        .insert(http::header::AUTHORIZATION, a.clone());
                }
                req
            })
        }
    };
    Ok(docker)
}

/// Options that shape the targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetOptions {
    pub port: u16,
    pub host_networking_host: String,
    pub match_first_network: bool,
}

impl From<&Arguments> for TargetOptions {
    fn from(a: &Arguments) -> Self {
        TargetOptions {
            port: a.port,
            host_networking_host: a.host_networking_host.clone(),
            match_first_network: a.match_first_network,
        }
    }
}

/// Replaces every character outside `[a-zA-Z0-9_]` with `_` (Prometheus' `SanitizeLabelName`).
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn join_host_port(host: &str, port: impl std::fmt::Display) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Per network ID: `__meta_docker_network_*` labels.
pub fn network_labels(networks: &[Network]) -> HashMap<String, Labels> {
    let mut out = HashMap::new();
    for n in networks {
        let id = n.id.clone().unwrap_or_default();
        let mut l = Labels::new();
        l.insert(format!("{LABEL_PREFIX}network_id"), id.clone());
        l.insert(
            format!("{LABEL_PREFIX}network_name"),
            n.name.clone().unwrap_or_default(),
        );
        l.insert(
            format!("{LABEL_PREFIX}network_scope"),
            n.scope.clone().unwrap_or_default(),
        );
        l.insert(
            format!("{LABEL_PREFIX}network_internal"),
            n.internal.unwrap_or(false).to_string(),
        );
        l.insert(
            format!("{LABEL_PREFIX}network_ingress"),
            n.ingress.unwrap_or(false).to_string(),
        );
        for (k, v) in n.labels.iter().flatten() {
            l.insert(
                format!("{LABEL_PREFIX}network_label_{}", sanitize_label_name(k)),
                v.clone(),
            );
        }
        out.insert(id, l);
    }
    out
}

type Endpoints = BTreeMap<String, bollard::models::EndpointSettings>;

fn endpoints_of(c: &ContainerSummary) -> Endpoints {
    c.network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn network_mode_of(c: &ContainerSummary) -> String {
    c.host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default()
}

/// Builds the targets from the engine's container and network lists (sorted for stable output).
pub fn build_targets(
    containers: &[ContainerSummary],
    networks: &[Network],
    opts: &TargetOptions,
) -> Vec<Labels> {
    let net_labels = network_labels(networks);
    let mut by_ref: HashMap<&str, &ContainerSummary> = HashMap::new();
    for c in containers {
        if let Some(id) = &c.id {
            by_ref.insert(id.as_str(), c);
        }
        for n in c.names.iter().flatten() {
            by_ref.insert(n.trim_start_matches('/'), c);
        }
    }

    let mut targets = Vec::new();
    for c in containers {
        let Some(name) = c.names.as_ref().and_then(|n| n.first()) else {
            continue;
        };
        let network_mode = network_mode_of(c);
        let mut common = Labels::new();
        common.insert(CONTAINER_ID.to_owned(), c.id.clone().unwrap_or_default());
        common.insert(CONTAINER_NAME.to_owned(), name.clone());
        common.insert(CONTAINER_NETWORK_MODE.to_owned(), network_mode.clone());
        for (k, v) in c.labels.iter().flatten() {
            common.insert(
                format!("{CONTAINER_LABEL}{}", sanitize_label_name(k)),
                v.clone(),
            );
        }

        let mut endpoints = endpoints_of(c);
        if endpoints.is_empty() {
            // `container:<id>` shares another container's network stack: follow the chain.
            let mut mode = network_mode.clone();
            let mut hops = 0;
            while let Some(other) = mode.strip_prefix("container:") {
                let Some(oc) = by_ref.get(other) else { break };
                endpoints = endpoints_of(oc);
                mode = network_mode_of(oc);
                hops += 1;
                if !endpoints.is_empty() || hops > containers.len() {
                    break;
                }
            }
        }
        if opts.match_first_network && endpoints.len() > 1 {
            // Endpoints are keyed (and so sorted) by network name: keep the first.
            endpoints = endpoints.into_iter().take(1).collect();
        }

        for ep in endpoints.values() {
            let ip = ep.ip_address.clone().unwrap_or_default();
            let mut base = common.clone();
            base.insert(NETWORK_IP.to_owned(), ip.clone());
            if let Some(nl) = ep.network_id.as_ref().and_then(|id| net_labels.get(id)) {
                base.extend(nl.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            let mut added = false;
            for p in c.ports.iter().flatten() {
                if p.typ.map(|t| t.to_string()).as_deref() != Some("tcp") {
                    continue;
                }
                let mut l = base.clone();
                l.insert(PORT_PRIVATE.to_owned(), p.private_port.to_string());
                if let Some(public) = p.public_port.filter(|p| *p > 0) {
                    l.insert(PORT_PUBLIC.to_owned(), public.to_string());
                    l.insert(PORT_PUBLIC_IP.to_owned(), p.ip.clone().unwrap_or_default());
                }
                l.insert(ADDRESS.to_owned(), join_host_port(&ip, p.private_port));
                targets.push(l);
                added = true;
            }
            if !added {
                let mut l = base;
                let addr = if network_mode != "host" {
                    join_host_port(&ip, opts.port)
                } else {
                    opts.host_networking_host.clone()
                };
                l.insert(ADDRESS.to_owned(), addr);
                targets.push(l);
            }
        }
    }
    targets.sort();
    targets
}

/// Lists containers (with the filters) and networks, and builds the targets.
pub async fn refresh(docker: &Docker, args: &Arguments) -> Result<Vec<Labels>, DockerError> {
    let mut filters: HashMap<String, Vec<String>> = HashMap::new();
    for f in &args.filters {
        filters
            .entry(f.name.clone())
            .or_default()
            .extend(f.values.iter().cloned());
    }
    let opts = ListContainersOptions {
        filters: if filters.is_empty() {
            None
        } else {
            Some(filters)
        },
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| DockerError::ListContainers(error_chain(&e)))?;
    let networks = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(|e| DockerError::ListNetworks(error_chain(&e)))?;
    Ok(build_targets(
        &containers,
        &networks,
        &TargetOptions::from(args),
    ))
}

pub use super::output::Status;

/// `discovery.docker`'s source: the Docker engine's containers and networks.
#[derive(Debug)]
pub struct DockerSource;

/// The refresh loop, independent of the component runtime: arguments in, targets and health out.
pub type DockerDiscovery = Discovery<DockerSource>;

/// The `discovery.docker` component: exports `targets`.
pub type DockerComponent = DiscoveryComponent<DockerSource>;

impl Source for DockerSource {
    type Arguments = Arguments;
    const KIND: &'static str = "DockerDiscovery";

    /// Runs until `cancel` completes: refreshes on the interval and on Docker events, retrying
    /// with backoff while the engine is unreachable.
    async fn run(disc: Arc<DockerDiscovery>, cancel: impl Future<Output = ()> + Send) {
        tokio::pin!(cancel);
        let mut args_rx = disc.arguments();
        let mut client: Option<Docker> = None;
        let mut events: Option<futures_util::stream::BoxStream<'static, _>> = None;
        let mut backoff = MIN_BACKOFF;
        let mut next = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = &mut cancel => return,
                changed = args_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    client = None;
                    events = None;
                    next = Instant::now();
                    continue;
                }
                ev = async { events.as_mut().expect("guarded").next().await }, if events.is_some() => {
                    match ev {
                        Some(Ok(_)) => {
                            let soon = Instant::now() + EVENT_DEBOUNCE;
                            if soon < next {
                                next = soon;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "docker event stream failed");
                            events = None;
                            next = Instant::now();
                        }
                        None => {
                            events = None;
                            next = Instant::now();
                        }
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(next.into()) => {}
            }

            let args = args_rx.borrow_and_update().clone();
            match refresh_once(&args, &mut client).await {
                Ok(targets) => {
                    backoff = MIN_BACKOFF;
                    let n = targets.len();
                    disc.output().publish(targets);
                    disc.output()
                        .set_status(true, format!("refreshed: {n} targets"));
                    if events.is_none() {
                        if let Some(c) = &client {
                            events = Some(event_stream(c));
                        }
                    }
                    next = Instant::now() + args.refresh_interval.as_std();
                }
                Err(e) => {
                    client = None;
                    events = None;
                    disc.output().set_status(false, e.to_string());
                    next = Instant::now() + backoff.min(args.refresh_interval.as_std());
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// One refresh, connecting first when there is no client.
async fn refresh_once(
    args: &Arguments,
    client: &mut Option<Docker>,
) -> Result<Vec<Labels>, DockerError> {
    let c = match client {
        Some(c) => c,
        None => client.insert(
            connect(args)?
                .negotiate_version()
                .await
                .map_err(|e| DockerError::Negotiate(error_chain(&e)))?,
        ),
    };
    refresh(c, args).await
}

/// Container and network events that can change the targets.
fn event_stream(
    docker: &Docker,
) -> futures_util::stream::BoxStream<
    'static,
    Result<bollard::models::EventMessage, bollard::errors::Error>,
> {
    let mut filters = HashMap::new();
    filters.insert(
        "type".to_owned(),
        vec!["container".to_owned(), "network".to_owned()],
    );
    filters.insert(
        "event".to_owned(),
        [
            "create",
            "start",
            "restart",
            "stop",
            "die",
            "kill",
            "destroy",
            "rename",
            "update",
            "pause",
            "unpause",
            "connect",
            "disconnect",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    let docker = docker.clone();
    let opts = EventsOptions {
        filters: Some(filters),
        ..Default::default()
    };
    docker.events(Some(opts)).boxed()
}
