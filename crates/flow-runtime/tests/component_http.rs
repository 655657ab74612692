//! Components serving HTTP (`Component::serve_http`): `/api/v0/component/{id}/...` reaches the
//! component with the rest of the path, method, headers and body; a root prefix claimed by one
//! component reaches it, claimed by two gets 409; a component without HTTP gets 404.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use flow_runtime::{
    CancellationToken, Component, HttpRequest, HttpResponse, Options, Registry, Runtime,
    RuntimeOptions,
};
use river_parser::Validate;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(serde::Deserialize, PartialEq)]
struct Args {
    #[serde(default)]
    root: bool,
}
impl Validate for Args {}

/// Answers `ID METHOD PATH QUERY x-test-header BODY`.
struct Echo {
    id: String,
    root: bool,
}

impl Component for Echo {
    type Arguments = Args;
    fn build(opts: Options, args: Args) -> anyhow::Result<Self> {
        Ok(Echo {
            id: opts.id,
            root: args.root,
        })
    }
    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        cancel.cancelled().await;
        Ok(())
    }
    fn update(&self, _: Args) -> anyhow::Result<()> {
        Ok(())
    }
    fn serve_http(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let text = format!(
            "{} {} {} {} {} {}",
            self.id,
            req.method,
            req.path,
            req.query,
            req.header("X-Test").unwrap_or("-"),
            String::from_utf8_lossy(&req.body)
        );
        Some(HttpResponse::new(201, "text/plain", text.into_bytes()).with_header("x-echo", "1"))
    }
    fn http_root_prefixes(&self) -> &'static [&'static str] {
        if self.root {
            &["/echo.v1/"]
        } else {
            &[]
        }
    }
}

/// A component without HTTP.
struct Quiet;
impl Component for Quiet {
    type Arguments = Args;
    fn build(_: Options, _: Args) -> anyhow::Result<Self> {
        Ok(Quiet)
    }
    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        cancel.cancelled().await;
        Ok(())
    }
    fn update(&self, _: Args) -> anyhow::Result<()> {
        Ok(())
    }
}

async fn start(src: &str) -> (Runtime, std::net::SocketAddr, CancellationToken) {
    let mut reg = Registry::new();
    reg.register::<Echo>("test.echo");
    reg.register::<Echo>("test.echo.long");
    reg.register::<Quiet>("test.quiet");
    let rt = Runtime::new(
        reg,
        RuntimeOptions {
            storage_path: std::env::temp_dir().join("rill-component-http-test"),
            file_name: "config.river".into(),
            config_path: None,
        },
    );
    rt.load(src).await.unwrap();
    let cancel = CancellationToken::new();
    let (addr, _task) =
        flow_runtime::http::serve(rt.clone(), "127.0.0.1:0".parse().unwrap(), cancel.clone())
            .await
            .unwrap();
    (rt, addr, cancel)
}

/// Sends one request; returns the status, the head and the body.
async fn send(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nX-Test: hello\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test]
async fn component_paths_reach_the_component() {
    let (rt, addr, cancel) = start(
        r#"
test.echo "a" { root = true }
test.echo.long "a" { }
test.quiet "q" { }
"#,
    )
    .await;
    let (status, resp) = send(
        addr,
        "POST",
        "/api/v0/component/test.echo.a/x/y?k=v",
        "data",
    )
    .await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(body(&resp), "test.echo.a POST /x/y k=v hello data");
    assert!(resp.to_ascii_lowercase().contains("x-echo: 1"), "{resp}");
    // `test.echo.long.a` starts with `test.echo.` but is its own component.
    let (_, resp) = send(addr, "GET", "/api/v0/component/test.echo.long.a/", "").await;
    assert_eq!(body(&resp), "test.echo.long.a GET /  hello ");
    let (_, resp) = send(addr, "GET", "/api/v0/component/test.echo.a", "").await;
    assert_eq!(body(&resp), "test.echo.a GET /  hello ");
    // The root prefix has one owner.
    let (status, resp) = send(addr, "POST", "/echo.v1/Method", "b").await;
    assert_eq!(status, 201);
    assert_eq!(body(&resp), "test.echo.a POST /echo.v1/Method  hello b");
    // Unknown component, a component without HTTP, an unclaimed root path.
    let (status, resp) = send(addr, "GET", "/api/v0/component/test.echo.zz/x", "").await;
    assert_eq!(status, 404, "{resp}");
    let (status, resp) = send(addr, "GET", "/api/v0/component/test.quiet.q/x", "").await;
    assert_eq!(status, 404, "{resp}");
    assert!(body(&resp).contains("serves no HTTP"), "{resp}");
    let (status, _) = send(addr, "POST", "/other.v1/Method", "").await;
    assert_eq!(status, 404);
    cancel.cancel();
    rt.shutdown().await;
}

#[tokio::test]
async fn a_root_prefix_claimed_twice_is_a_conflict() {
    let (rt, addr, cancel) = start(
        r#"
test.echo "a" { root = true }
test.echo "b" { root = true }
"#,
    )
    .await;
    let (status, resp) = send(addr, "POST", "/echo.v1/Method", "").await;
    assert_eq!(status, 409, "{resp}");
    assert!(body(&resp).contains("test.echo.a, test.echo.b"), "{resp}");
    // Each is still reachable by ID.
    let (status, resp) = send(addr, "POST", "/api/v0/component/test.echo.b/echo.v1/M", "").await;
    assert_eq!(status, 201);
    assert!(
        body(&resp).starts_with("test.echo.b POST /echo.v1/M"),
        "{resp}"
    );
    cancel.cancel();
    rt.shutdown().await;
}
