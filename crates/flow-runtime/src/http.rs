//! The HTTP server (hyper 1): `/-/ready`, `/-/healthy`, `/-/reload`, `/metrics`, the JSON API
//! `/api/v0/web/components[/{id}]` in Alloy's shape, the embedded web UI, and the HTTP APIs of
//! components (`/api/v0/component/{id}/...`, plus the root paths a single component claims). Request heads are
//! bounded (hyper's read buffer and header-read timeout), request bodies are read through a
//! size limit, and UI pages carry a restrictive Content-Security-Policy.

use crate::component::{Health, HttpRequest, HttpResponse, ResourceError};
use crate::runtime::{ComponentInfo, LoadError, ReloadFailure, Runtime};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use river_parser::eval::{BodyItem, BodyValue};
use river_parser::json::{body_to_json, value_to_json};
use river_parser::Value;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Largest request body accepted (the API takes none; this only bounds what is drained).
const MAX_BODY: usize = 64 * 1024;
/// Largest request body accepted by a component's HTTP API.
const MAX_COMPONENT_BODY: usize = 1 << 20;
/// Largest request head (request line plus headers) hyper will buffer.
const MAX_HEAD: usize = 16 * 1024;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");
const FLAMEGRAPH_JS: &str = include_str!("ui/flamegraph.js");
const FLAME_JS: &str = include_str!("ui/flame.js");
const PROFILES_JS: &str = include_str!("ui/profiles.js");

type Resp = Response<Full<Bytes>>;

/// Binds `addr` and serves until `cancel` is cancelled. Returns the bound address (useful with
/// port 0) and the server task.
pub async fn serve(
    runtime: Runtime,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(runtime, listener, cancel).in_current_span());
    Ok((local, task))
}

async fn accept_loop(runtime: Runtime, listener: TcpListener, cancel: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let rt = runtime.clone();
        let cancel = cancel.clone();
        tokio::spawn(
            async move {
                let service = hyper::service::service_fn(move |req| {
                    let rt = rt.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&rt, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .max_buf_size(MAX_HEAD.max(8192))
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection error");
                        }
                    }
                    _ = cancel.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
            .in_current_span(),
        );
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_resp(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

async fn handle(rt: &Runtime, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let query = parse_query(&raw_query);
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let builtin = BUILTIN.contains(&path.as_str()) || path.starts_with("/api/v0/web/");
    let limit = if builtin {
        MAX_BODY
    } else {
        MAX_COMPONENT_BODY
    };
    // Read (bounded) any request body so keep-alive works and oversize bodies are refused.
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
    };
    if !builtin {
        let req = HttpRequest {
            method: method.as_str().to_string(),
            path: percent_decode(&path),
            query: raw_query,
            headers,
            body: body.to_vec(),
        };
        if let Some(r) = component_http(rt, req).await {
            return r;
        }
    }
    let get = method == Method::GET || method == Method::HEAD;
    match path.as_str() {
        "/" | "/index.html" if get => asset("text/html; charset=utf-8", INDEX_HTML),
        "/ui/app.js" if get => asset("text/javascript; charset=utf-8", APP_JS),
        "/ui/style.css" if get => asset("text/css; charset=utf-8", STYLE_CSS),
        "/ui/flamegraph.js" if get => asset("text/javascript; charset=utf-8", FLAMEGRAPH_JS),
        "/ui/flame.js" if get => asset("text/javascript; charset=utf-8", FLAME_JS),
        "/ui/profiles.js" if get => asset("text/javascript; charset=utf-8", PROFILES_JS),
        "/-/ready" if get => {
            if rt.is_ready() {
                text(StatusCode::OK, "rill is ready.\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "rill is not ready.\n")
            }
        }
        "/-/healthy" if get => healthy(rt).await,
        "/-/reload" if get || method == Method::POST => match rt.reload().await {
            Ok(()) => text(StatusCode::OK, "config reloaded\n"),
            Err(e) => {
                let what = match e {
                    ReloadFailure::Read(msg) => msg,
                    ReloadFailure::Load(LoadError::Rejected { rendered, .. }) => rendered,
                    ReloadFailure::Load(LoadError::Evaluation { rendered, .. }) => format!(
                        "the new graph is running, but some components failed to evaluate \
                         (they keep their last good arguments):\n{rendered}"
                    ),
                };
                text(StatusCode::BAD_REQUEST, what)
            }
        },
        "/metrics" if get => metrics(rt).await,
        "/api/v0/web/components" if get => {
            let list: Vec<_> = rt
                .components()
                .await
                .iter()
                .map(|c| component_json(c, false))
                .collect();
            json_resp(StatusCode::OK, &serde_json::Value::Array(list))
        }
        "/api/v0/web/status" if get => json_resp(
            StatusCode::OK,
            &json!({
                "ready": rt.is_ready(),
                "lastLoadError": rt.last_load_error(),
            }),
        ),
        p if get && p.starts_with("/api/v0/web/modules/") && p.ends_with("/components") => {
            // Alloy's listing of one module's components (`NAME.LABEL`, nested with `/`).
            let module =
                percent_decode(&p["/api/v0/web/modules/".len()..p.len() - "/components".len()]);
            let list: Vec<_> = rt
                .components()
                .await
                .iter()
                .filter(|c| c.module_id == module)
                .map(|c| component_json(c, false))
                .collect();
            json_resp(StatusCode::OK, &serde_json::Value::Array(list))
        }
        p if get && p.starts_with("/api/v0/web/components/") => {
            // `{id}` (IDs inside modules hold `/`: `NAME.LABEL/inner.component.label`) or
            // `{id}/{resource}`.
            let rest = &p["/api/v0/web/components/".len()..];
            let id = percent_decode(rest);
            if let Some(c) = rt.component(&id).await {
                return json_resp(StatusCode::OK, &component_json(&c, true));
            }
            match rest.rsplit_once('/') {
                Some((id, name)) => {
                    resource(rt, &percent_decode(id), &percent_decode(name), query).await
                }
                None => json_resp(
                    StatusCode::NOT_FOUND,
                    &json!({ "error": format!("component {id:?} not found") }),
                ),
            }
        }
        "/" | "/index.html" | "/ui/app.js" | "/ui/style.css" | "/ui/flamegraph.js"
        | "/ui/flame.js" | "/ui/profiles.js" | "/-/ready" | "/-/healthy" | "/metrics" => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD"));
            r
        }
        "/api/v0/web/components" | "/api/v0/web/status" => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD"));
            r
        }
        "/-/reload" => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The server's own paths (besides `/api/v0/web/...`); anything else may be a component's.
const BUILTIN: &[&str] = &[
    "/",
    "/index.html",
    "/ui/app.js",
    "/ui/style.css",
    "/ui/flamegraph.js",
    "/ui/flame.js",
    "/ui/profiles.js",
    "/-/ready",
    "/-/healthy",
    "/-/reload",
    "/metrics",
];

/// `/api/v0/component/{id}/...` and the root paths claimed by components; `None` when the path
/// is neither (the caller answers 404).
async fn component_http(rt: &Runtime, mut req: HttpRequest) -> Option<Resp> {
    let id = if let Some(rest) = req.path.strip_prefix("/api/v0/component/") {
        let Some(route) = rt.component_route(rest).await else {
            return Some(json_resp(
                StatusCode::NOT_FOUND,
                &json!({ "error": format!("no component for {:?}", req.path) }),
            ));
        };
        req.path = route.path;
        route.id
    } else {
        let mut owners = rt.root_http_owners(&req.path).await;
        match owners.len() {
            0 => return None,
            1 => owners.remove(0),
            _ => {
                let msg = format!(
                    "several components serve {}: {}; use /api/v0/component/{{id}}{} instead",
                    req.path,
                    owners.join(", "),
                    req.path
                );
                return Some(json_resp(
                    StatusCode::CONFLICT,
                    &json!({ "code": "failed_precondition", "message": msg }),
                ));
            }
        }
    };
    let what = format!("{id} serves no HTTP at {:?}", req.path);
    Some(match rt.component_http(&id, req).await {
        Some(r) => component_resp(r),
        None => json_resp(StatusCode::NOT_FOUND, &json!({ "error": what })),
    })
}

fn component_resp(r: HttpResponse) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    for (k, v) in &r.headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(name, value);
        }
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `/api/v0/web/components/{id}/{name}`: a component-specific resource.
async fn resource(
    rt: &Runtime,
    id: &str,
    name: &str,
    query: std::collections::BTreeMap<String, String>,
) -> Resp {
    match rt.component_resource(id, name, query).await {
        None => json_resp(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("component {id:?} not found") }),
        ),
        Some(Err(e)) => {
            let status = match e {
                ResourceError::NotFound(_) => StatusCode::NOT_FOUND,
                ResourceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            };
            json_resp(status, &json!({ "error": e.to_string() }))
        }
        Some(Ok(res)) => {
            let mut r = Response::new(Full::new(Bytes::from(res.body)));
            let h = r.headers_mut();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_str(&res.content_type)
                    .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            );
            h.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            h.insert("cache-control", HeaderValue::from_static("no-store"));
            if let Some(f) = res.filename {
                // Only a plain file name goes into the header.
                let safe: String = f
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "._-".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
                    h.insert("content-disposition", v);
                }
            }
            r
        }
    }
}

/// Parses `a=b&c=d` (with `+` and `%XX` decoding); the last of repeated keys wins.
pub(crate) fn parse_query(q: &str) -> std::collections::BTreeMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

async fn healthy(rt: &Runtime) -> Resp {
    let bad: Vec<String> = rt
        .components()
        .await
        .into_iter()
        .filter(|c| {
            matches!(
                c.health.state,
                crate::HealthState::Unhealthy | crate::HealthState::Exited
            )
        })
        .map(|c| format!("{}: {}", c.id, c.health.message))
        .collect();
    if bad.is_empty() {
        text(StatusCode::OK, "All rill components are healthy.\n")
    } else {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unhealthy components:\n{}\n", bad.join("\n")),
        )
    }
}

async fn metrics(rt: &Runtime) -> Resp {
    let comps = rt.components().await;
    let healths: Vec<_> = comps.iter().map(|c| c.health.state).collect();
    let regs = rt.component_metrics().await;
    match rt.metrics().encode(&healths, &regs) {
        Ok(body) => {
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        ),
    }
}

pub(crate) fn health_json(h: &Health) -> serde_json::Value {
    let since = h.updated.duration_since(UNIX_EPOCH).unwrap_or_default();
    json!({
        "state": h.state.as_str(),
        "message": h.message,
        "updatedTime": crate::logging::rfc3339(since),
    })
}

/// A River object as a body of attributes (how Alloy shows exports and debug info).
fn object_as_body(v: &Value) -> serde_json::Value {
    match v {
        Value::Object(map) => body_to_json(&BodyValue {
            items: map
                .iter()
                .map(|(k, v)| BodyItem::Attr {
                    name: k.clone(),
                    name_span: Default::default(),
                    value: v.clone(),
                    span: Default::default(),
                })
                .collect(),
        }),
        other => value_to_json(other),
    }
}

fn component_json(c: &ComponentInfo, full: bool) -> serde_json::Value {
    let mut v = json!({
        "id": c.id,
        "localID": c.local_id,
        "moduleID": c.module_id,
        "name": c.name,
        "label": c.label,
        "type": "block",
        "health": health_json(&c.health),
        "referencesTo": c.references_to,
        "referencedBy": c.referenced_by,
    });
    if let (false, Some(obj)) = (c.created_modules.is_empty(), v.as_object_mut()) {
        obj.insert("createdModuleIDs".into(), json!(c.created_modules));
    }
    if let (true, Some(obj)) = (full, v.as_object_mut()) {
        obj.insert(
            "arguments".into(),
            c.arguments.as_ref().map_or(json!([]), body_to_json),
        );
        obj.insert(
            "exports".into(),
            c.exports.as_ref().map_or(json!([]), object_as_body),
        );
        obj.insert(
            "debugInfo".into(),
            c.debug_info.as_ref().map_or(json!([]), object_as_body),
        );
        obj.insert(
            "healthHistory".into(),
            serde_json::Value::Array(c.health_history.iter().map(health_json).collect()),
        );
    }
    v
}

/// Decodes `%XX` escapes of a path segment (component IDs are plain, but browsers may escape).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16);
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
