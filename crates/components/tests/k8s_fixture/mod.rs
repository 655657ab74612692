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

#![allow(dead_code)]

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
// Request handling

fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn error(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap(),
        status_body(code, reason, message),
    )
}

fn query_map(q: Option<&str>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for pair in q.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(percent_decode(k), percent_decode(v));
    }
    m
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                if let Ok(v) = u8::from_str_radix(hex, 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(st: Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    st.requests.lock().unwrap().push(format!(
        "{} {}{}",
        req.method(),
        path,
        query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    ));
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| st.tokens.lock().unwrap().contains(t));
    if !authorized {
        return error(401, "Unauthorized", "Unauthorized");
    }
    if req.method() != hyper::Method::GET {
        return error(
            405,
            "MethodNotAllowed",
            "the fixture is read-only over HTTP",
        );
    }
    let q = query_map(query.as_deref());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => full(
            StatusCode::OK,
            json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0",
                "gitCommit": "fixture", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0",
                "compiler": "gc", "platform": "linux/amd64"
            }),
        ),
        ["api"] => full(
            StatusCode::OK,
            json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]
            }),
        ),
        ["apis"] => {
            let groups: Vec<Value> = ["discovery.k8s.io", "networking.k8s.io"]
                .iter()
                .map(|g| {
                    let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            full(
                StatusCode::OK,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ["api", "v1"] => resource_list("v1"),
        ["apis", g, "v1"] => resource_list(&format!("{g}/v1")),
        _ => {
            let (gv, rest) = match segs.as_slice() {
                ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
                ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
                _ => {
                    return error(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )
                }
            };
            let (ns, plural, name) = match rest {
                [p] => (None, *p, None),
                [p, n] => (None, *p, Some(*n)),
                ["namespaces", ns, p] => (Some(*ns), *p, None),
                ["namespaces", ns, p, n] => (Some(*ns), *p, Some(*n)),
                _ => {
                    return error(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )
                }
            };
            let Some(rt) = RESOURCES
                .iter()
                .find(|r| r.plural == plural && r.api_version == gv)
            else {
                return error(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            };
            if ns.is_some() && !rt.namespaced {
                return error(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
            if let Some(name) = name {
                return get_one(&st, rt, ns, name);
            }
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                watch_stream(st, rt, ns.map(str::to_owned), &q)
            } else {
                list(&st, rt, ns, &q)
            }
        }
    }
}

fn resource_list(gv: &str) -> Response<Body> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.api_version == gv)
        .map(|r| {
            json!({
                "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "list", "watch"], "shortNames": r.short,
            })
        })
        .collect();
    full(
        StatusCode::OK,
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn get_one(st: &State, rt: &'static ResourceType, ns: Option<&str>, name: &str) -> Response<Body> {
    let store = st.store.lock().unwrap();
    let key = (rt.plural, ns.unwrap_or("").to_owned(), name.to_owned());
    match store.objects.get(&key) {
        Some(o) => full(StatusCode::OK, (**o).clone()),
        None => error(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", rt.plural),
        ),
    }
}

/// Parsed `labelSelector` and `fieldSelector` of a request.
struct Filters {
    labels: Vec<LabelReq>,
    fields: Vec<(String, bool, String)>,
}

enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_set(s: &str) -> Vec<String> {
    s.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|v| v.trim().to_owned())
        .collect()
}

impl Filters {
    fn parse(q: &BTreeMap<String, String>) -> Result<Filters, String> {
        let mut labels = Vec::new();
        for r in split_top(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
            let req = if let Some(k) = r.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_owned())
            } else if let Some((k, v)) = r.split_once(" notin ") {
                LabelReq::NotIn(k.trim().to_owned(), parse_set(v))
            } else if let Some((k, v)) = r.split_once(" in ") {
                LabelReq::In(k.trim().to_owned(), parse_set(v))
            } else if let Some((k, v)) = r.split_once("!=") {
                LabelReq::Ne(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = r.split_once("==") {
                LabelReq::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = r.split_once('=') {
                LabelReq::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if r
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                LabelReq::Exists(r.clone())
            } else {
                return Err(format!("unable to parse requirement: {r:?}"));
            };
            labels.push(req);
        }
        let mut fields = Vec::new();
        for r in split_top(q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
            let (k, eq, v) = if let Some((k, v)) = r.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = r.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = r.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid selector: {r:?}"));
            };
            fields.push((k.trim().to_owned(), eq, v.trim().to_owned()));
        }
        Ok(Filters { labels, fields })
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(path, eq, v)| {
                let mut cur = obj;
                for p in path.split('.') {
                    cur = &cur[p];
                }
                let actual = match cur {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (actual == *v) == *eq
            })
    }
}

fn list(
    st: &State,
    rt: &'static ResourceType,
    ns: Option<&str>,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let filters = match Filters::parse(q) {
        Ok(f) => f,
        Err(e) => return error(400, "BadRequest", &e),
    };
    let store = st.store.lock().unwrap();
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|((p, o_ns, _), _)| *p == rt.plural && ns.is_none_or(|n| n == o_ns))
        .filter(|(_, o)| filters.matches(o))
        .map(|(_, o)| (**o).clone())
        .collect();
    full(
        StatusCode::OK,
        json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": store.rv.to_string()},
            "items": items,
        }),
    )
}

fn event_line(typ: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": typ, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch_stream(
    st: Arc<State>,
    rt: &'static ResourceType,
    ns: Option<String>,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let filters = match Filters::parse(q) {
        Ok(f) => f,
        Err(e) => return error(400, "BadRequest", &e),
    };
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let from = q.get("resourceVersion").cloned().unwrap_or_default();
    let relevant = move |ev: &Event| {
        ev.plural == rt.plural
            && ns
                .as_deref()
                .is_none_or(|n| ev.object["metadata"]["namespace"].as_str() == Some(n))
    };

    // Subscribe before reading the store so no event falls between the two.
    let mut live = st.events.subscribe();
    let (backlog, start_rv, gone) = {
        let store = st.store.lock().unwrap();
        if from.is_empty() || from == "0" {
            let evs: Vec<Event> = store
                .objects
                .iter()
                .filter(|((p, _, _), _)| *p == rt.plural)
                .map(|(_, o)| Event {
                    rv: store.rv,
                    typ: "ADDED",
                    plural: rt.plural,
                    object: Arc::clone(o),
                })
                .filter(|e| relevant(e))
                .collect();
            (evs, store.rv, false)
        } else {
            match from.parse::<u64>() {
                Ok(rv) if rv < store.compacted => (Vec::new(), store.rv, true),
                Ok(rv) => (
                    store
                        .log
                        .iter()
                        .filter(|e| e.rv > rv && relevant(e))
                        .cloned()
                        .collect(),
                    store.rv,
                    false,
                ),
                Err(_) => (Vec::new(), store.rv, true),
            }
        }
    };

    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1024);
    let mut drops = st.drop_gen.subscribe();
    drops.borrow_and_update();
    let mut ends = st.end_gen.subscribe();
    ends.borrow_and_update();
    let kind = rt.kind;
    let api_version = rt.api_version;
    let state = Arc::clone(&st);
    tokio::spawn(async move {
        state.active_watches.fetch_add(1, Ordering::SeqCst);
        let _guard = WatchGuard(Arc::clone(&state));
        if gone {
            let status = status_body(
                410,
                "Expired",
                &format!("too old resource version: {from} ({start_rv})"),
            );
            let _ = tx.send(Ok(Frame::data(event_line("ERROR", &status)))).await;
            return;
        }
        for ev in backlog {
            if filters.matches(&ev.object)
                && tx
                    .send(Ok(Frame::data(event_line(ev.typ, &ev.object))))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let mut seen_rv = start_rv;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(state.bookmark_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = ends.changed() => return,
                _ = drops.changed() => {
                    let _ = tx.send(Err(std::io::Error::other("fixture dropped the watch"))).await;
                    return;
                }
                _ = tick.tick(), if bookmarks => {
                    let bm = json!({"kind": kind, "apiVersion": api_version,
                                    "metadata": {"resourceVersion": seen_rv.to_string()}});
                    if tx.send(Ok(Frame::data(event_line("BOOKMARK", &bm)))).await.is_err() {
                        return;
                    }
                }
                ev = live.recv() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx.send(Err(std::io::Error::other("watcher too slow"))).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if ev.rv <= start_rv {
                        continue;
                    }
                    seen_rv = ev.rv;
                    if relevant(&ev) && filters.matches(&ev.object)
                        && tx.send(Ok(Frame::data(event_line(ev.typ, &ev.object)))).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

struct WatchGuard(Arc<State>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.active_watches.fetch_sub(1, Ordering::SeqCst);
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
