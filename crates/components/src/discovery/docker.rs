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
use futures_util::StreamExt;
use river_parser::decode::{Duration as RiverDuration, Secret};
use serde::Deserialize;
use tokio::sync::watch;

use super::output::DiscoveryOutput;
use super::relabel::{targets_value, Labels};

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

/// `basic_auth` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<Secret>,
    pub password_file: Option<String>,
}

/// `authorization` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Authorization {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub credentials: Option<Secret>,
    pub credentials_file: Option<String>,
}

/// `tls_config` block (client certificate authentication as the Docker engine does it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub ca_pem: Option<String>,
    pub cert_pem: Option<String>,
    pub key_pem: Option<Secret>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
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

/// Errors of `discovery.docker`.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("missing required attribute \"host\"")]
    MissingHost,
    #[error("invalid host {0:?}: expected unix://, tcp://, http:// or https://")]
    InvalidHost(String),
    #[error("refresh_interval must be greater than 0")]
    ZeroRefresh,
    #[error("at most one of basic_auth, authorization, bearer_token and bearer_token_file must be configured")]
    ConflictingAuth,
    #[error("tls_config: {0}")]
    Tls(String),
    #[error("reading {path}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
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
    /// Checks what decoding cannot: the host scheme, the interval and the HTTP client settings.
    pub fn validate(&self) -> Result<(), DockerError> {
        if self.host.is_empty() {
            return Err(DockerError::MissingHost);
        }
        host_kind(&self.host)?;
        if self.refresh_interval.as_std().is_zero() {
            return Err(DockerError::ZeroRefresh);
        }
        let auths = [
            self.basic_auth.is_some(),
            self.authorization.is_some(),
            self.bearer_token.is_some(),
            self.bearer_token_file.is_some(),
        ];
        if auths.iter().filter(|b| **b).count() > 1 {
            return Err(DockerError::ConflictingAuth);
        }
        if let Some(tls) = &self.tls_config {
            if tls.insecure_skip_verify {
                return Err(DockerError::Tls(
                    "insecure_skip_verify is not supported for a Docker host".into(),
                ));
            }
            if tls.ca_pem.is_some() || tls.cert_pem.is_some() || tls.key_pem.is_some() {
                return Err(DockerError::Tls(
                    "ca_pem, cert_pem and key_pem are not supported for a Docker host; use ca_file, cert_file and key_file".into(),
                ));
            }
            if tls.ca_file.is_none() || tls.cert_file.is_none() || tls.key_file.is_none() {
                return Err(DockerError::Tls(
                    "a Docker host needs ca_file, cert_file and key_file".into(),
                ));
            }
        }
        Ok(())
    }
}

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

fn read_trimmed(path: &str) -> Result<String, DockerError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| DockerError::ReadFile {
            path: path.to_owned(),
            source,
        })
}

/// The `Authorization` header value the HTTP client settings ask for, if any.
fn authorization_header(args: &Arguments) -> Result<Option<String>, DockerError> {
    if let Some(b) = &args.basic_auth {
        let password = match (&b.password, &b.password_file) {
            (Some(p), _) => p.expose().to_owned(),
            (None, Some(f)) => read_trimmed(f)?,
            (None, None) => String::new(),
        };
        let raw = format!("{}:{}", b.username, password);
        return Ok(Some(format!("Basic {}", base64_encode(raw.as_bytes()))));
    }
    if let Some(a) = &args.authorization {
        let kind = a.kind.clone().unwrap_or_else(|| "Bearer".to_owned());
        let creds = match (&a.credentials, &a.credentials_file) {
            (Some(c), _) => c.expose().to_owned(),
            (None, Some(f)) => read_trimmed(f)?,
            (None, None) => String::new(),
        };
        return Ok(Some(format!("{kind} {creds}")));
    }
    if let Some(t) = &args.bearer_token {
        return Ok(Some(format!("Bearer {}", t.expose())));
    }
    if let Some(f) = &args.bearer_token_file {
        return Ok(Some(format!("Bearer {}", read_trimmed(f)?)));
    }
    Ok(None)
}

fn base64_encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Creates a bollard client for the arguments (no I/O except reading credential files).
pub fn connect(args: &Arguments) -> Result<Docker, DockerError> {
    args.validate()?;
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
                    "a Docker host needs ca_file, cert_file and key_file".into(),
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
            let auth = authorization_header(args)?;
            let agent = http::HeaderValue::from_static(concat!("rill/", env!("CARGO_PKG_VERSION")));
            let auth = auth
                .map(|a| http::HeaderValue::from_str(&a))
                .transpose()
                .map_err(|e| DockerError::Tls(format!("invalid authorization header: {e}")))?;
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

/// An error with its sources (`hyper` hides the cause, such as "Connection refused", there).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let s = src.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = src.source();
    }
    out
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

/// The refresh loop, independent of the component runtime: arguments in, targets and health out.
pub struct DockerDiscovery {
    args: watch::Sender<Arguments>,
    out: DiscoveryOutput,
    refreshes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for DockerDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerDiscovery")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl DockerDiscovery {
    /// Validates the arguments; nothing is contacted until [`DockerDiscovery::run`].
    pub fn new(args: Arguments) -> Result<Arc<Self>, DockerError> {
        args.validate()?;
        Ok(Arc::new(DockerDiscovery {
            args: watch::Sender::new(args),
            out: DiscoveryOutput::new("DockerDiscovery"),
            refreshes: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Replaces the arguments; the loop reconnects with them right away.
    pub fn update(&self, args: Arguments) -> Result<(), DockerError> {
        args.validate()?;
        self.args.send_replace(args);
        Ok(())
    }

    /// The last good targets (kept while the engine is unreachable).
    pub fn targets(&self) -> Vec<Labels> {
        self.out.targets()
    }

    /// A receiver that sees every change of the targets (not unchanged refreshes).
    pub fn subscribe(&self) -> watch::Receiver<Vec<Labels>> {
        self.out.subscribe()
    }

    pub fn status(&self) -> Status {
        self.out.status()
    }

    /// How many refreshes succeeded so far.
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_status(&self, healthy: bool, message: String) {
        self.out.set_status(healthy, message);
    }

    /// Runs until `cancel` completes: refreshes on the interval and on Docker events, retrying
    /// with backoff while the engine is unreachable.
    pub async fn run(self: Arc<Self>, cancel: impl Future<Output = ()>) {
        tokio::pin!(cancel);
        let mut args_rx = self.args.subscribe();
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
            match self.refresh_once(&args, &mut client).await {
                Ok(targets) => {
                    backoff = MIN_BACKOFF;
                    let n = targets.len();
                    self.out.publish(targets);
                    self.refreshes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.set_status(true, format!("refreshed: {n} targets"));
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
                    self.set_status(false, e.to_string());
                    next = Instant::now() + backoff.min(args.refresh_interval.as_std());
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn refresh_once(
        &self,
        args: &Arguments,
        client: &mut Option<Docker>,
    ) -> Result<Vec<Labels>, DockerError> {
        if client.is_none() {
            let c = connect(args)?;
            let c = c
                .negotiate_version()
                .await
                .map_err(|e| DockerError::Negotiate(error_chain(&e)))?;
            *client = Some(c);
        }
        let c = client.as_ref().expect("set above");
        refresh(c, args).await
    }
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

// ---------------------------------------------------------------------------------------------
// The component

/// The `discovery.docker` component: exports `targets`.
pub struct DockerComponent {
    opts: flow_runtime::Options,
    disc: Arc<DockerDiscovery>,
}

impl std::fmt::Debug for DockerComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerComponent")
            .field("id", &self.opts.id)
            .finish_non_exhaustive()
    }
}

impl DockerComponent {
    /// The discovery loop behind the component.
    pub fn discovery(&self) -> &Arc<DockerDiscovery> {
        &self.disc
    }
}

impl flow_runtime::Component for DockerComponent {
    type Arguments = Arguments;

    fn build(opts: flow_runtime::Options, args: Arguments) -> anyhow::Result<Self> {
        let disc = DockerDiscovery::new(args)?;
        // Dependants can evaluate right away; real targets follow after the first refresh.
        opts.exports
            .publish_fields([("targets", targets_value(&disc.targets()))]);
        Ok(DockerComponent { opts, disc })
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

    fn update(&self, args: Arguments) -> anyhow::Result<()> {
        self.disc.update(args)?;
        Ok(())
    }

    fn health(&self) -> Option<flow_runtime::Health> {
        let st = self.disc.status();
        Some(
            if self.disc.refresh_count() == 0 && !st.healthy && st.message == "starting" {
                flow_runtime::Health::new(flow_runtime::HealthState::Unknown, st.message)
            } else if st.healthy {
                flow_runtime::Health::healthy(st.message)
            } else {
                flow_runtime::Health::unhealthy(st.message)
            },
        )
    }
}

// Rules are still checked in `build`/`update`; they move into this impl (issue 13).
impl river_parser::Validate for Arguments {}
