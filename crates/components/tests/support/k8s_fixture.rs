//! A fixture Kubernetes API server for tests: HTTPS (rustls, a CA from rcgen) with bearer-token
//! authentication, speaking the real protocol closely enough for `kube` and `kubectl`.
//!
//! It serves the discovery endpoints (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/G/V`),
//! lists (with `resourceVersion`, label and field selectors, namespaced paths), single-object
//! gets, and `watch=true` streams of `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK` events resumed from
//! a resource version, answering `410 Gone` (as an `ERROR` event) when that version has been
//! compacted away. Tests drive it with [`Fixture::apply`], [`Fixture::delete`],
//! [`Fixture::compact`], [`Fixture::drop_watches`], [`Fixture::revoke_token`] and
//! [`Fixture::restore_token`].

#![allow(
    dead_code,
    reason = "each test file that includes this module uses a part of it"
)]

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_rustls::TlsAcceptor;

#[path = "k8s_fixture_api.rs"]
mod api;
use api::handle;

type Body = BoxBody<Bytes, std::io::Error>;

/// A resource type the fixture serves.
#[derive(Clone, Copy, Debug)]
pub struct ResourceType {
    pub plural: &'static str,
    pub kind: &'static str,
    /// `v1` or `group/v1`.
    pub api_version: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
}

impl ResourceType {
    fn prefix(&self) -> String {
        if self.api_version == "v1" {
            "/api/v1".to_owned()
        } else {
            format!("/apis/{}", self.api_version)
        }
    }
}

pub const RESOURCES: &[ResourceType] = &[
    ResourceType {
        plural: "pods",
        kind: "Pod",
        api_version: "v1",
        namespaced: true,
        short: &["po"],
    },
    ResourceType {
        plural: "nodes",
        kind: "Node",
        api_version: "v1",
        namespaced: false,
        short: &["no"],
    },
    ResourceType {
        plural: "services",
        kind: "Service",
        api_version: "v1",
        namespaced: true,
        short: &["svc"],
    },
    ResourceType {
        plural: "endpoints",
        kind: "Endpoints",
        api_version: "v1",
        namespaced: true,
        short: &["ep"],
    },
    ResourceType {
        plural: "namespaces",
        kind: "Namespace",
        api_version: "v1",
        namespaced: false,
        short: &["ns"],
    },
    ResourceType {
        plural: "endpointslices",
        kind: "EndpointSlice",
        api_version: "discovery.k8s.io/v1",
        namespaced: true,
        short: &[],
    },
    ResourceType {
        plural: "ingresses",
        kind: "Ingress",
        api_version: "networking.k8s.io/v1",
        namespaced: true,
        short: &["ing"],
    },
];

fn resource(plural: &str) -> &'static ResourceType {
    RESOURCES
        .iter()
        .find(|r| r.plural == plural)
        .unwrap_or_else(|| panic!("fixture does not serve {plural}"))
}

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    typ: &'static str,
    plural: &'static str,
    object: Arc<Value>,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Watches from a resource version older than this get `410 Gone`.
    compacted: u64,
    /// (plural, namespace, name) → object.
    objects: BTreeMap<(&'static str, String, String), Arc<Value>>,
    log: Vec<Event>,
}

struct State {
    store: Mutex<Store>,
    events: broadcast::Sender<Event>,
    drop_gen: watch::Sender<u64>,
    end_gen: watch::Sender<u64>,
    tokens: Mutex<HashSet<String>>,
    token: String,
    requests: Mutex<Vec<String>>,
    active_watches: AtomicUsize,
    bookmark_interval: Duration,
}

/// A running fixture API server.
pub struct Fixture {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub token: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tls_acceptor() -> (String, TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fixture kubernetes CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let srv_key = KeyPair::generate().unwrap();
    let srv_params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "kubernetes.default.svc".to_string(),
    ])
    .unwrap();
    let srv_cert = srv_params.signed_by(&srv_key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![srv_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(srv_key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca_cert.pem(), TlsAcceptor::from(Arc::new(config)))
}

impl Fixture {
    /// Starts a fixture on 127.0.0.1 with a random port and one valid token.
    pub async fn start() -> Fixture {
        Self::start_with_bookmarks(Duration::from_secs(1)).await
    }

    pub async fn start_with_bookmarks(bookmark_interval: Duration) -> Fixture {
        let (ca_pem, acceptor) = tls_acceptor();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = format!("fixture-token-{}", std::process::id());
        let state = Arc::new(State {
            store: Mutex::new(Store::default()),
            events: broadcast::channel(1 << 16).0,
            drop_gen: watch::Sender::new(0),
            end_gen: watch::Sender::new(0),
            tokens: Mutex::new([token.clone()].into_iter().collect()),
            token: token.clone(),
            requests: Mutex::new(Vec::new()),
            active_watches: AtomicUsize::new(0),
            bookmark_interval,
        });
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = Arc::clone(&st);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        let st = Arc::clone(&st);
                        async move { Ok::<_, Infallible>(handle(st, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Fixture {
            addr,
            ca_pem,
            token,
            state,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Creates or replaces an object (`ADDED` or `MODIFIED`); returns its new resource version.
    pub fn apply(&self, plural: &str, mut obj: Value) -> u64 {
        let rt = resource(plural);
        let mut store = self.state.store.lock().unwrap();
        store.rv += 1;
        let rv = store.rv;
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("object has metadata");
        let name = meta["name"].as_str().expect("metadata.name").to_owned();
        let ns = if rt.namespaced {
            meta.entry("namespace").or_insert_with(|| json!("default"));
            meta["namespace"].as_str().unwrap().to_owned()
        } else {
            String::new()
        };
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.entry("uid")
            .or_insert_with(|| json!(format!("00000000-0000-4000-8000-{rv:012}")));
        meta.entry("creationTimestamp")
            .or_insert_with(|| json!("2026-01-01T00:00:00Z"));
        obj["kind"] = json!(rt.kind);
        obj["apiVersion"] = json!(rt.api_version);
        let obj = Arc::new(obj);
        let key = (rt.plural, ns, name);
        let typ = if store.objects.insert(key, Arc::clone(&obj)).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let ev = Event {
            rv,
            typ,
            plural: rt.plural,
            object: obj,
        };
        store.log.push(ev.clone());
        let _ = self.state.events.send(ev);
        rv
    }

    /// Deletes an object (`DELETED`); returns whether it existed.
    pub fn delete(&self, plural: &str, namespace: Option<&str>, name: &str) -> bool {
        let rt = resource(plural);
        let mut store = self.state.store.lock().unwrap();
        let key = (
            rt.plural,
            namespace.unwrap_or("").to_owned(),
            name.to_owned(),
        );
        let Some(old) = store.objects.remove(&key) else {
            return false;
        };
        store.rv += 1;
        let rv = store.rv;
        let mut obj = (*old).clone();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let ev = Event {
            rv,
            typ: "DELETED",
            plural: rt.plural,
            object: Arc::new(obj),
        };
        store.log.push(ev.clone());
        let _ = self.state.events.send(ev);
        true
    }

    /// Forgets the event history: watches resuming from any earlier version get `410 Gone`.
    pub fn compact(&self) {
        let mut store = self.state.store.lock().unwrap();
        store.compacted = store.rv;
        store.log.clear();
    }

    /// Changes the store while no watch is connected would see it, then compacts: a client
    /// resuming from its old version must re-list to converge.
    pub fn current_rv(&self) -> u64 {
        self.state.store.lock().unwrap().rv
    }

    /// Breaks every open watch connection mid-stream.
    pub fn drop_watches(&self) {
        self.state.drop_gen.send_modify(|g| *g += 1);
    }

    /// Ends every open watch cleanly, as a server-side timeout does (clients resume from their
    /// last resource version).
    pub fn end_watches(&self) {
        self.state.end_gen.send_modify(|g| *g += 1);
    }

    pub fn revoke_token(&self) {
        self.state.tokens.lock().unwrap().clear();
    }

    pub fn restore_token(&self) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(self.state.token.clone());
    }

    pub fn active_watches(&self) -> usize {
        self.state.active_watches.load(Ordering::SeqCst)
    }

    /// Every request seen so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Writes a kubeconfig for this server (CA inline, bearer token) and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fixture
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: fixture
  user:
    token: {token}
contexts:
- name: fixture
  context:
    cluster: fixture
    user: fixture
    namespace: default
current-context: fixture
",
            url = self.url(),
            token = self.token
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes a service-account directory (`token`, `ca.crt`, `namespace`).
    pub fn write_service_account(&self, dir: &Path, namespace: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("token"), &self.token).unwrap();
        std::fs::write(dir.join("ca.crt"), &self.ca_pem).unwrap();
        std::fs::write(dir.join("namespace"), namespace).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Realistic objects

/// A pod the way the kubelet reports it: `containers`/`initContainers` with ports, statuses with
/// `containerd://` IDs, conditions, owner reference.
pub fn pod(ns: &str, name: &str, node: &str, ip: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": format!("uid-{ns}-{name}"),
            "labels": {"app.kubernetes.io/name": name, "pod-template-hash": "5d4f8c7b9"},
            "annotations": {"prometheus.io/scrape": "true", "kubectl.kubernetes.io/default-container": "app"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-rs"),
                "uid": "rs-uid", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "nodeName": node,
            "initContainers": [{"name": "init", "image": "busybox:1.36"}],
            "containers": [
                {"name": "app", "image": "example/app:1.0",
                 "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                           {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]},
                {"name": "sidecar", "image": "example/sidecar:2.1"}
            ]
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "hostIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
            "initContainerStatuses": [{"name": "init", "containerID": format!("containerd://init-{name}"),
                "image": "busybox:1.36", "imageID": "", "ready": true, "restartCount": 0}],
            "containerStatuses": [
                {"name": "app", "containerID": format!("containerd://app-{name}"), "image": "example/app:1.0",
                 "imageID": "", "ready": true, "restartCount": 0},
                {"name": "sidecar", "containerID": format!("containerd://sidecar-{name}"), "image": "example/sidecar:2.1",
                 "imageID": "", "ready": true, "restartCount": 0}
            ]
        }
    })
}

/// A small pod with one container without ports.
pub fn small_pod(ns: &str, name: &str, node: &str, ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": {"app": "bench"}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "example/main:1"}]},
        "status": {"phase": "Running", "podIP": ip, "hostIP": "10.0.0.1",
            "containerStatuses": [{"name": "main", "containerID": format!("containerd://{name}"),
                "image": "example/main:1", "imageID": "", "ready": true, "restartCount": 0}]}
    })
}
