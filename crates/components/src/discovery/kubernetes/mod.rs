//! `discovery.kubernetes`: finds targets through the Kubernetes API (via `kube`'s watcher).
//!
//! [`KubernetesDiscovery`] builds a client (explicit `api_server`, a kubeconfig file, or the
//! in-cluster service account), watches the objects the role needs (initial list, then watch
//! events; a fresh re-list after `410 Gone` or any error, retried with backoff), and turns the
//! objects into label sets exactly as Prometheus' Kubernetes discovery does ([`labels`]). The
//! last good targets stay exported while the API server is unreachable; health carries the cause.

pub mod labels;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::watcher;
use kube::{Api, Client};
use river_parser::decode::Secret;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::{watch, Notify};

use super::output::DiscoveryOutput;
use super::relabel::{targets_value, Labels};
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

/// `tls_config` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<String>,
    pub ca_pem: Option<String>,
    pub cert_file: Option<String>,
    pub cert_pem: Option<String>,
    pub key_file: Option<String>,
    pub key_pem: Option<Secret>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub min_version: Option<String>,
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

/// Errors of `discovery.kubernetes`.
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
    #[error("at most one of basic_auth, authorization, bearer_token and bearer_token_file must be configured")]
    ConflictingAuth,
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

    fn has_http_settings(&self) -> bool {
        self.bearer_token.is_some()
            || self.bearer_token_file.is_some()
            || self.basic_auth.is_some()
            || self.authorization.is_some()
            || self.tls_config.is_some()
            || self.proxy_url.is_some()
    }

    /// Checks what decoding cannot.
    pub fn validate(&self) -> Result<(), KubernetesError> {
        let role = self.role()?;
        if self.api_server.is_some() && self.kubeconfig_file.is_some() {
            return Err(KubernetesError::ServerAndKubeconfig);
        }
        if self.kubeconfig_file.is_some() && self.has_http_settings() {
            return Err(KubernetesError::KubeconfigWithHttp);
        }
        if self.api_server.is_none() && self.kubeconfig_file.is_none() && self.has_http_settings() {
            return Err(KubernetesError::HttpWithoutServer);
        }
        let auths = [
            self.basic_auth.is_some(),
            self.authorization.is_some(),
            self.bearer_token.is_some(),
            self.bearer_token_file.is_some(),
        ];
        if auths.iter().filter(|b| **b).count() > 1 {
            return Err(KubernetesError::ConflictingAuth);
        }
        if let Some(s) = &self.api_server {
            parse_uri(s).map_err(|e| KubernetesError::InvalidServer(s.clone(), e))?;
        }
        if let Some(p) = &self.proxy_url {
            parse_uri(p).map_err(|e| KubernetesError::InvalidProxy(p.clone(), e))?;
        }
        let allowed = watched_roles(role, self.attach());
        let mut seen = Vec::new();
        for s in &self.selectors {
            let r =
                Role::parse(&s.role).ok_or_else(|| KubernetesError::InvalidRole(s.role.clone()))?;
            if !allowed.contains(&r) {
                return Err(KubernetesError::SelectorRole(
                    s.role.clone(),
                    self.role.clone(),
                ));
            }
            if seen.contains(&r) {
                return Err(KubernetesError::DuplicateSelector(s.role.clone()));
            }
            seen.push(r);
        }
        if let Some(t) = &self.tls_config {
            if t.ca_file.is_some() && t.ca_pem.is_some() {
                return Err(KubernetesError::Tls(
                    "at most one of ca_file and ca_pem must be configured".into(),
                ));
            }
            if t.cert_file.is_some() && t.cert_pem.is_some() {
                return Err(KubernetesError::Tls(
                    "at most one of cert_file and cert_pem must be configured".into(),
                ));
            }
            if t.key_file.is_some() && t.key_pem.is_some() {
                return Err(KubernetesError::Tls(
                    "at most one of key_file and key_pem must be configured".into(),
                ));
            }
            let has_cert = t.cert_file.is_some() || t.cert_pem.is_some();
            let has_key = t.key_file.is_some() || t.key_pem.is_some();
            if has_cert != has_key {
                return Err(KubernetesError::Tls(
                    "client certificate and key must be configured together".into(),
                ));
            }
        }
        Ok(())
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
}

fn parse_uri(s: &str) -> Result<http::Uri, String> {
    let u: http::Uri = s
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    match u.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("expected an http:// or https:// URL".into()),
    }
    if u.host().is_none_or(str::is_empty) {
        return Err("missing host".into());
    }
    Ok(u)
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

fn service_account_dir() -> PathBuf {
    std::env::var_os(SERVICE_ACCOUNT_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR))
}

fn read_file(path: &std::path::Path) -> Result<String, KubernetesError> {
    std::fs::read_to_string(path).map_err(|source| KubernetesError::ReadFile {
        path: path.display().to_string(),
        source,
    })
}

fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, KubernetesError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KubernetesError::Tls(format!("parsing CA certificates: {e}")))?;
    if certs.is_empty() {
        return Err(KubernetesError::Tls("no CA certificate found".into()));
    }
    Ok(certs)
}

/// The namespaces to watch: `None` means all of them.
pub fn namespaces_to_watch(args: &Arguments) -> Result<Option<Vec<String>>, KubernetesError> {
    let mut names: Vec<String> = Vec::new();
    let mut own = false;
    for n in &args.namespaces {
        names.extend(n.names.iter().cloned());
        own |= n.own_namespace;
    }
    if own {
        let path = service_account_dir().join("namespace");
        let ns = read_file(&path)?.trim().to_owned();
        if ns.is_empty() {
            return Err(KubernetesError::InCluster(format!(
                "{} is empty",
                path.display()
            )));
        }
        names.push(ns);
    }
    names.sort();
    names.dedup();
    Ok(if names.is_empty() { None } else { Some(names) })
}

/// The in-cluster configuration from `KUBERNETES_SERVICE_HOST`/`_PORT` and the service account
/// directory (token file, `ca.crt`).
pub fn in_cluster_config(
    env: impl Fn(&str) -> Option<String>,
    sa_dir: &std::path::Path,
) -> Result<kube::Config, KubernetesError> {
    let host = env("KUBERNETES_SERVICE_HOST")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            KubernetesError::InCluster(
                "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined".into(),
            )
        })?;
    let port = env("KUBERNETES_SERVICE_PORT")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            KubernetesError::InCluster(
                "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined".into(),
            )
        })?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("https://{host}:{port}");
    let uri = parse_uri(&url).map_err(|e| KubernetesError::InCluster(format!("{url}: {e}")))?;
    let mut cfg = kube::Config::new(uri);
    let token = sa_dir.join("token");
    // Fail early (and clearly) when the token is missing; kube re-reads the file later on.
    read_file(&token)?;
    cfg.auth_info.token_file = Some(token.display().to_string());
    let ca = read_file(&sa_dir.join("ca.crt"))?;
    cfg.root_cert = Some(pem_certs(&ca)?);
    if let Ok(ns) = std::fs::read_to_string(sa_dir.join("namespace")) {
        if !ns.trim().is_empty() {
            cfg.default_namespace = ns.trim().to_owned();
        }
    }
    Ok(cfg)
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The client configuration the arguments ask for (reads files, no network I/O).
pub async fn client_config(args: &Arguments) -> Result<kube::Config, KubernetesError> {
    args.validate()?;
    let mut cfg = if let Some(path) = &args.kubeconfig_file {
        let kc =
            kube::config::Kubeconfig::read_from(path).map_err(|e| KubernetesError::Kubeconfig {
                path: path.clone(),
                message: error_chain(&e),
            })?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| KubernetesError::Kubeconfig {
                path: path.clone(),
                message: error_chain(&e),
            })?
    } else if let Some(server) = &args.api_server {
        let uri =
            parse_uri(server).map_err(|e| KubernetesError::InvalidServer(server.clone(), e))?;
        let mut cfg = kube::Config::new(uri);
        apply_http_settings(&mut cfg, args)?;
        cfg
    } else {
        in_cluster_config(|k| std::env::var(k).ok(), &service_account_dir())?
    };
    // Watches are long-lived; kube's watcher has its own idle timeout.
    cfg.read_timeout = None;
    Ok(cfg)
}

fn apply_http_settings(cfg: &mut kube::Config, args: &Arguments) -> Result<(), KubernetesError> {
    let ai = &mut cfg.auth_info;
    if let Some(t) = &args.bearer_token {
        ai.token = Some(t.expose().to_owned().into());
    }
    if let Some(f) = &args.bearer_token_file {
        read_file(std::path::Path::new(f))?;
        ai.token_file = Some(f.clone());
    }
    if let Some(b) = &args.basic_auth {
        let password = match (&b.password, &b.password_file) {
            (Some(p), _) => p.expose().to_owned(),
            (None, Some(f)) => read_file(std::path::Path::new(f))?.trim().to_owned(),
            (None, None) => String::new(),
        };
        ai.username = Some(b.username.clone());
        ai.password = Some(password.into());
    }
    if let Some(a) = &args.authorization {
        let kind = a.kind.clone().unwrap_or_else(|| "Bearer".to_owned());
        match (&a.credentials, &a.credentials_file) {
            (None, Some(f)) if kind == "Bearer" => {
                read_file(std::path::Path::new(f))?;
                ai.token_file = Some(f.clone());
            }
            (c, f) => {
                let creds = match (c, f) {
                    (Some(c), _) => c.expose().to_owned(),
                    (None, Some(f)) => read_file(std::path::Path::new(f))?.trim().to_owned(),
                    (None, None) => String::new(),
                };
                if kind == "Bearer" {
                    ai.token = Some(creds.into());
                } else {
                    let v =
                        http::HeaderValue::from_str(&format!("{kind} {creds}")).map_err(|e| {
                            KubernetesError::Client(format!("invalid authorization: {e}"))
                        })?;
                    cfg.headers.push((http::header::AUTHORIZATION, v));
                }
            }
        }
    }
    if let Some(t) = &args.tls_config {
        let ca = match (&t.ca_file, &t.ca_pem) {
            (Some(f), _) => Some(read_file(std::path::Path::new(f))?),
            (None, Some(p)) => Some(p.clone()),
            (None, None) => None,
        };
        if let Some(ca) = ca {
            cfg.root_cert = Some(pem_certs(&ca)?);
        }
        let ai = &mut cfg.auth_info;
        ai.client_certificate = t.cert_file.clone();
        ai.client_key = t.key_file.clone();
        if let Some(p) = &t.cert_pem {
            ai.client_certificate_data = Some(b64(p.as_bytes()));
        }
        if let Some(p) = &t.key_pem {
            ai.client_key_data = Some(b64(p.expose().as_bytes()).into());
        }
        cfg.tls_server_name = t.server_name.clone();
        cfg.accept_invalid_certs = t.insecure_skip_verify;
    }
    if let Some(p) = &args.proxy_url {
        cfg.proxy_url =
            Some(parse_uri(p).map_err(|e| KubernetesError::InvalidProxy(p.clone(), e))?);
    }
    Ok(())
}

/// An error and its sources, joined with `: ` (the cause of TLS and connection errors is
/// usually several levels down).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The HTTP status code behind a watcher error, if the API server answered with one.
fn status_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The discovery loop

pub use super::output::Status;

/// Per-watch state, shared between a watch task and the target builder.
#[derive(Clone, Debug, Default)]
struct WatchState {
    name: String,
    synced: bool,
    error: Option<String>,
}

struct Shared {
    snapshot: Mutex<Snapshot>,
    watches: Mutex<Vec<WatchState>>,
    notify: Notify,
}

/// The watch loop, independent of the component runtime: arguments in, targets and health out.
pub struct KubernetesDiscovery {
    args: watch::Sender<Arguments>,
    out: DiscoveryOutput,
    syncs: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for KubernetesDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesDiscovery")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl KubernetesDiscovery {
    /// Validates the arguments; nothing is contacted until [`KubernetesDiscovery::run`].
    pub fn new(args: Arguments) -> Result<Arc<Self>, KubernetesError> {
        args.validate()?;
        Ok(Arc::new(KubernetesDiscovery {
            args: watch::Sender::new(args),
            out: DiscoveryOutput::new("KubernetesDiscovery"),
            syncs: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Replaces the arguments; the watches restart with them right away.
    pub fn update(&self, args: Arguments) -> Result<(), KubernetesError> {
        args.validate()?;
        self.args.send_replace(args);
        Ok(())
    }

    /// The last good targets.
    pub fn targets(&self) -> Vec<Labels> {
        self.out.targets()
    }

    /// A receiver that sees every change of the targets.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Labels>> {
        self.out.subscribe()
    }

    pub fn status(&self) -> Status {
        self.out.status()
    }

    /// How many times the targets were rebuilt with every watch synced.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_status(&self, healthy: bool, message: String) {
        self.out.set_status(healthy, message);
    }

    /// Runs until `cancel` completes, restarting the watches whenever the arguments change.
    pub async fn run(self: Arc<Self>, cancel: impl Future<Output = ()>) {
        tokio::pin!(cancel);
        let mut args_rx = self.args.subscribe();
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
                _ = Arc::clone(&self).run_with(args) => return,
            }
        }
    }

    /// Connects (retrying with backoff) and runs the watches for one set of arguments.
    async fn run_with(self: Arc<Self>, args: Arguments) {
        let mut backoff = MIN_BACKOFF;
        let (client, namespaces) = loop {
            let attempt = async {
                let cfg = client_config(&args).await?;
                let client =
                    Client::try_from(cfg).map_err(|e| KubernetesError::Client(error_chain(&e)))?;
                Ok::<_, KubernetesError>((client, namespaces_to_watch(&args)?))
            };
            match attempt.await {
                Ok(v) => break v,
                Err(e) => {
                    self.set_status(false, e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let role = args.role().expect("validated");
        let attach = args.attach();
        let shared = Arc::new(Shared {
            snapshot: Mutex::new(Snapshot::default()),
            watches: Mutex::new(Vec::new()),
            notify: Notify::new(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for kind in watched_roles(role, attach) {
            let sel = args.selector_for(kind).cloned().unwrap_or_default();
            let cfg = {
                let mut c = watcher::Config::default();
                if !sel.label.is_empty() {
                    c = c.labels(&sel.label);
                }
                if !sel.field.is_empty() {
                    c = c.fields(&sel.field);
                }
                c
            };
            let scopes: Vec<Option<String>> = match (&namespaces, kind) {
                (_, Role::Node) | (None, _) => vec![None],
                (Some(ns), _) => ns.iter().cloned().map(Some).collect(),
            };
            for scope in scopes {
                let c = client.clone();
                let sh = Arc::clone(&shared);
                let cfg = cfg.clone();
                let aux = kind != role;
                fn api<K>(c: Client, scope: &Option<String>) -> Api<K>
                where
                    K: kube::Resource<
                        DynamicType = (),
                        Scope = k8s_openapi::NamespaceResourceScope,
                    >,
                {
                    match scope {
                        Some(ns) => Api::namespaced(c, ns),
                        None => Api::all(c),
                    }
                }
                match kind {
                    Role::Pod => tasks.spawn(watch_kind(
                        api::<Pod>(c, &scope),
                        aux,
                        scope,
                        cfg,
                        sh,
                        |s| &mut s.pods,
                    )),
                    Role::Node => {
                        tasks.spawn(watch_kind(Api::<Node>::all(c), aux, None, cfg, sh, |s| {
                            &mut s.nodes
                        }))
                    }
                    Role::Service => tasks.spawn(watch_kind(
                        api::<Service>(c, &scope),
                        aux,
                        scope,
                        cfg,
                        sh,
                        |s| &mut s.services,
                    )),
                    Role::Endpoints => tasks.spawn(watch_kind(
                        api::<Endpoints>(c, &scope),
                        aux,
                        scope,
                        cfg,
                        sh,
                        |s| &mut s.endpoints,
                    )),
                    Role::EndpointSlice => tasks.spawn(watch_kind(
                        api::<EndpointSlice>(c, &scope),
                        aux,
                        scope,
                        cfg,
                        sh,
                        |s| &mut s.endpointslices,
                    )),
                    Role::Ingress => tasks.spawn(watch_kind(
                        api::<Ingress>(c, &scope),
                        aux,
                        scope,
                        cfg,
                        sh,
                        |s| &mut s.ingresses,
                    )),
                };
            }
        }
        if attach.namespace && role != Role::Node {
            let sh = Arc::clone(&shared);
            tasks.spawn(watch_kind::<Namespace>(
                Api::all(client.clone()),
                true,
                None,
                watcher::Config::default(),
                sh,
                |s| &mut s.namespaces,
            ));
        }

        // Build the targets whenever a watch reports a change. Each watch registers its state
        // when its task first runs, so "every watch synced" also needs every task registered;
        // otherwise the first kind to list (say endpoints) would publish targets before the
        // kinds they join with (services, pods) were listed.
        let expected_watches = tasks.len();
        let mut cache = TargetCache::default();
        loop {
            shared.notify.notified().await;
            let states = shared
                .watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let errors: Vec<String> = states
                .iter()
                .filter_map(|w| w.error.as_ref().map(|e| format!("{}: {e}", w.name)))
                .collect();
            let all_synced = states.len() == expected_watches && states.iter().all(|w| w.synced);
            if all_synced {
                let targets = {
                    let snap = shared.snapshot.lock().unwrap_or_else(|e| e.into_inner());
                    build_targets_cached(role, &snap, attach, &mut cache)
                };
                let n = targets.len();
                // Health first, so that whoever sees the new targets sees the new health too.
                if errors.is_empty() {
                    self.set_status(true, format!("{n} targets"));
                }
                self.out.publish(targets);
                self.syncs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if !errors.is_empty() {
                self.set_status(false, errors.join("; "));
            }
        }
    }
}

/// Watches one kind of object (in one namespace, or all) and mirrors it into the snapshot.
async fn watch_kind<K>(
    api: Api<K>,
    aux: bool,
    namespace: Option<String>,
    cfg: watcher::Config,
    shared: Arc<Shared>,
    pick: fn(&mut Snapshot) -> &mut BTreeMap<String, K>,
) where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let name = match &namespace {
        Some(ns) => format!("{} in {ns}", K::plural(&())),
        None => K::plural(&()).into_owned(),
    };
    let idx = {
        let mut w = shared.watches.lock().unwrap_or_else(|e| e.into_inner());
        w.push(WatchState {
            name: name.clone(),
            ..Default::default()
        });
        w.len() - 1
    };
    let prefix = namespace.as_ref().map(|ns| format!("{ns}/"));
    let set_state = |f: &dyn Fn(&mut WatchState)| {
        let mut w = shared.watches.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut w[idx]);
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut stream = watcher(api.clone(), cfg.clone()).boxed();
        let mut initial: Vec<K> = Vec::new();
        let failure = loop {
            let Some(ev) = stream.next().await else {
                break None;
            };
            match ev {
                Ok(watcher::Event::Init) => initial.clear(),
                Ok(watcher::Event::InitApply(o)) => initial.push(o),
                Ok(watcher::Event::InitDone) => {
                    {
                        let mut snap = shared.snapshot.lock().unwrap_or_else(|e| e.into_inner());
                        let map = pick(&mut snap);
                        match &prefix {
                            Some(p) => map.retain(|k, _| !k.starts_with(p.as_str())),
                            None => map.clear(),
                        }
                        for o in initial.drain(..) {
                            map.insert(labels::object_key(o.meta()), o);
                        }
                        if aux {
                            snap.aux_gen += 1;
                        }
                    }
                    set_state(&|w| {
                        w.synced = true;
                        w.error = None;
                    });
                    backoff = MIN_BACKOFF;
                    tracing::debug!(watch = %name, "listed");
                    shared.notify.notify_one();
                }
                Ok(watcher::Event::Apply(o)) => {
                    {
                        let mut snap = shared.snapshot.lock().unwrap_or_else(|e| e.into_inner());
                        pick(&mut snap).insert(labels::object_key(o.meta()), o);
                        if aux {
                            snap.aux_gen += 1;
                        }
                    }
                    shared.notify.notify_one();
                }
                Ok(watcher::Event::Delete(o)) => {
                    {
                        let mut snap = shared.snapshot.lock().unwrap_or_else(|e| e.into_inner());
                        pick(&mut snap).remove(&labels::object_key(o.meta()));
                        if aux {
                            snap.aux_gen += 1;
                        }
                    }
                    shared.notify.notify_one();
                }
                Err(e) => break Some(e),
            }
        };
        drop(stream);
        match failure {
            Some(e) if status_code(&e) == Some(410) => {
                // The resource version expired: list again right away (not a health problem).
                tracing::debug!(watch = %name, error = %e, "resource version expired, re-listing");
                continue;
            }
            Some(e) => {
                let msg = error_chain(&e);
                tracing::debug!(watch = %name, error = %msg, "watch failed");
                set_state(&|w| w.error = Some(msg.clone()));
                shared.notify.notify_one();
            }
            None => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

// ---------------------------------------------------------------------------------------------
// The component

/// The `discovery.kubernetes` component: exports `targets`.
pub struct KubernetesComponent {
    opts: flow_runtime::Options,
    disc: Arc<KubernetesDiscovery>,
}

impl std::fmt::Debug for KubernetesComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesComponent")
            .field("id", &self.opts.id)
            .finish_non_exhaustive()
    }
}

impl KubernetesComponent {
    /// The discovery loop behind the component.
    pub fn discovery(&self) -> &Arc<KubernetesDiscovery> {
        &self.disc
    }
}

impl flow_runtime::Component for KubernetesComponent {
    type Arguments = Arguments;

    fn build(opts: flow_runtime::Options, args: Arguments) -> anyhow::Result<Self> {
        let disc = KubernetesDiscovery::new(args)?;
        opts.exports
            .publish_fields([("targets", targets_value(&disc.targets()))]);
        Ok(KubernetesComponent { opts, disc })
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
            if self.disc.sync_count() == 0 && !st.healthy && st.message == "starting" {
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
