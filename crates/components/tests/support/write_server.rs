//! The test server and helpers of the `pyroscope.write` tests (`write.rs`, `write_component.rs`):
//! a hyper server on 127.0.0.1 that decodes every push with the crate's own protobuf messages and
//! answers as the test scripts it, plus builders for writers, endpoints, labels and profiles.
#![allow(
    dead_code,
    reason = "each test file that includes this module uses a part of it"
)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use components::pyroscope::appendable::RawProfile;
use components::pyroscope::push_proto::PushRequest;
use components::pyroscope::write::{
    Arguments, EndpointOptions, WriteMetrics, Writer, WriterOptions,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;

// ---------------------------------------------------------------------------------------------
// Test server

/// What the server does with the n-th request (0-based).
#[derive(Clone, Copy)]
pub enum Reply {
    Status(u16, &'static str),
    /// Never answer.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// The request target as sent (absolute-form through a proxy).
    pub uri: String,
    pub path: String,
    pub headers: hyper::HeaderMap,
    pub request: PushRequest,
    /// How the server answered.
    pub status: Option<u16>,
}

pub type Behavior = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

pub struct Server {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn listener_on(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(64).unwrap()
}

impl Server {
    pub async fn start(behavior: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Server {
        Self::start_on("127.0.0.1:0".parse().unwrap(), None, Arc::new(behavior))
    }

    pub async fn ok() -> Server {
        Self::start(|_| Reply::Status(200, "")).await
    }

    pub fn start_on(addr: SocketAddr, tls: Option<TlsAcceptor>, behavior: Behavior) -> Server {
        let listener = listener_on(addr);
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = Arc::clone(&received);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let rec = Arc::clone(&rec);
                let behavior = Arc::clone(&behavior);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc =
                        service_fn(move |req| handle(req, Arc::clone(&rec), Arc::clone(&behavior)));
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(s), svc)
                                    .await;
                            }
                        }
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        Server {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Requests the server answered with 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }
}

pub async fn handle(
    req: Request<Incoming>,
    rec: Arc<Mutex<Vec<Received>>>,
    behavior: Behavior,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request = PushRequest::from_bytes(&body).expect("server: body is a valid PushRequest");
    let n = {
        let mut r = rec.lock().unwrap();
        r.push(Received {
            at,
            uri: parts.uri.to_string(),
            path: parts.uri.path().to_string(),
            headers: parts.headers,
            request,
            status: None,
        });
        r.len() - 1
    };
    match behavior(n) {
        Reply::Status(code, text) => {
            rec.lock().unwrap()[n].status = Some(code);
            let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
            *resp.status_mut() = StatusCode::from_u16(code).unwrap();
            Ok(resp)
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// An address nothing listens on (bound, then released).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn profile(seed: u8, len: usize, id: &str) -> RawProfile {
    RawProfile {
        raw: (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect(),
        id: id.to_string(),
    }
}

/// Endpoint options with short backoffs so that tests stay fast.
pub fn fast(url: &str) -> EndpointOptions {
    let mut e = EndpointOptions::new(url);
    e.remote_timeout = Duration::from_secs(2);
    e.min_backoff_period = Duration::from_millis(20);
    e.max_backoff_period = Duration::from_millis(100);
    e.max_backoff_retries = 5;
    e
}

pub fn writer(endpoints: Vec<EndpointOptions>) -> Writer {
    writer_with(endpoints, BTreeMap::new(), WriterOptions::default())
}

pub fn writer_with(
    endpoints: Vec<EndpointOptions>,
    external_labels: BTreeMap<String, String>,
    options: WriterOptions,
) -> Writer {
    Writer::new(
        Arguments {
            external_labels,
            endpoints,
        },
        WriteMetrics::default(),
        options,
    )
    .unwrap()
}

pub fn pairs(r: &PushRequest) -> Vec<(String, String)> {
    r.series[0]
        .labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

pub fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}
