//! `pyroscope.write` against real HTTP(S) servers started by the tests (hyper on 127.0.0.1:0)
//! that decode every push with the crate's own protobuf messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use components::pyroscope::appendable::{AppendError, Appendable};
use components::pyroscope::push_proto::PUSH_PATH;
use components::pyroscope::write::{
    Arguments, Authorization, BasicAuth, Secret, TlsConfig, WriteMetrics, Writer, WriterOptions,
};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

#[path = "support/write_server.rs"]
mod write_server;
use write_server::*;

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn write_delivers_labels_and_bytes_exactly() {
    let server = Server::ok().await;
    let w = writer_with(
        vec![fast(&format!("{}/prefix/", server.url()))],
        labels(&[("cluster", "c1"), ("env", "prod")]),
        WriterOptions::default(),
    );
    let p1 = profile(1, 3000, "id-1");
    let p2 = profile(2, 17, "");
    w.append(
        labels(&[
            ("service_name", "checkout"),
            ("__name__", "process_cpu"),
            ("__delta__", "false"),
            ("__meta_docker_container_name", "/web"),
            ("__address__", "10.0.0.1"),
            ("env", "dev"),
            ("pod", "web-1"),
        ]),
        vec![p1.clone(), p2.clone()],
    )
    .unwrap();

    assert!(wait_until(Duration::from_secs(5), || server.count() == 1).await);
    let got = &server.received()[0];
    assert_eq!(got.path, format!("/prefix{PUSH_PATH}"));
    assert_eq!(header(got, "content-type"), "application/proto");
    assert_eq!(
        header(got, "user-agent"),
        format!("rill/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(got.request.series.len(), 1);
    assert_eq!(
        pairs(&got.request),
        vec![
            ("__delta__".to_string(), "false".to_string()),
            ("__name__".into(), "process_cpu".into()),
            ("cluster".into(), "c1".into()),
            ("env".into(), "prod".into()),
            ("pod".into(), "web-1".into()),
            ("service_name".into(), "checkout".into()),
        ]
    );
    let samples = &got.request.series[0].samples;
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].raw_profile, p1.raw);
    assert_eq!(samples[0].id, "id-1");
    assert_eq!(samples[1].raw_profile, p2.raw);
    assert_eq!(samples[1].id, "");

    let name = server.url() + "/prefix/";
    assert!(
        wait_until(Duration::from_secs(2), || w.metrics().sent_profiles(&name)
            == 2)
        .await
    );
    assert_eq!(w.metrics().sent_bytes(&name), 3017);
    assert_eq!(w.metrics().dropped_profiles(&name), 0);
    let info = w.endpoints_debug_info();
    assert!(info[0].status.last_success.is_some());
    assert!(info[0].status.last_error.is_none());
}

#[tokio::test]
async fn write_rejects_profiles_without_service_name() {
    let server = Server::ok().await;
    let w = writer(vec![fast(&server.url())]);
    let err = w
        .append(labels(&[("job", "x")]), vec![profile(0, 10, "")])
        .unwrap_err();
    assert_eq!(err, AppendError::MissingServiceName);
    assert_eq!(w.metrics().rejected_profiles("missing_service_name"), 1);
    let err = w
        .append(
            labels(&[("service_name", "x"), ("bad-name", "v")]),
            vec![profile(0, 10, "")],
        )
        .unwrap_err();
    assert!(matches!(err, AppendError::InvalidLabelName(_)));
    assert_eq!(w.metrics().rejected_profiles("invalid_labels"), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn write_sends_headers_and_credentials() {
    let server = Server::ok().await;
    let dir = std::env::temp_dir().join(format!("rill-write-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "file-token\n").unwrap();

    let mut basic = fast(&server.url());
    basic.name = "basic".into();
    basic.headers = labels(&[("X-Scope-OrgID", "tenant-1"), ("X-Which", "basic")]);
    basic.basic_auth = Some(BasicAuth {
        username: "user".into(),
        password: Some(Secret::new("pass")),
        password_file: None,
    });
    let mut bearer = fast(&server.url());
    bearer.name = "bearer".into();
    bearer.headers = labels(&[("X-Which", "bearer")]);
    bearer.bearer_token_file = Some(token_file.to_string_lossy().into_owned());
    let mut custom = fast(&server.url());
    custom.name = "custom".into();
    custom.headers = labels(&[("X-Which", "custom")]);
    custom.authorization = Some(Authorization {
        kind: Some("Token".into()),
        credentials: Some(Secret::new("s3cr3t")),
        credentials_file: None,
    });

    let w = writer(vec![basic, bearer, custom]);
    w.append(labels(&[("service_name", "a")]), vec![profile(0, 5, "")])
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || server.count() == 3).await);
    let got = server.received();
    let by = |which: &str| got.iter().find(|r| header(r, "x-which") == which).unwrap();
    // base64("user:pass")
    assert_eq!(header(by("basic"), "authorization"), "Basic dXNlcjpwYXNz");
    assert_eq!(header(by("basic"), "x-scope-orgid"), "tenant-1");
    assert_eq!(header(by("bearer"), "authorization"), "Bearer file-token");
    assert_eq!(header(by("bearer"), "x-scope-orgid"), "");
    assert_eq!(header(by("custom"), "authorization"), "Token s3cr3t");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn write_refuses_two_auth_methods() {
    let mut e = fast("http://127.0.0.1:1");
    e.bearer_token = Some(Secret::new("t"));
    e.authorization = Some(Authorization {
        kind: None,
        credentials: Some(Secret::new("c")),
        credentials_file: None,
    });
    let err = Writer::new(
        Arguments {
            external_labels: BTreeMap::new(),
            endpoints: vec![e],
        },
        WriteMetrics::default(),
        WriterOptions::default(),
    )
    .err()
    .expect("two auth methods must be refused");
    assert!(err.to_string().contains("at most one of"), "{err}");
}

struct TestCa {
    ca_pem: String,
    acceptor: TlsAcceptor,
    /// Requires a client certificate signed by the CA.
    mtls_acceptor: TlsAcceptor,
    client_cert_pem: String,
    client_key_pem: String,
}

/// A CA and a server certificate for `localhost` and `pyroscope.test` signed by it.
fn test_ca() -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rill test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let srv_key = KeyPair::generate().unwrap();
    let srv_params =
        CertificateParams::new(vec!["localhost".to_string(), "pyroscope.test".to_string()])
            .unwrap();
    let srv_cert = srv_params.signed_by(&srv_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "rill");
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = || rustls::pki_types::PrivateKeyDer::Pkcs8(srv_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![srv_cert.der().clone()], key())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .unwrap();
    let mtls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(vec![srv_cert.der().clone()], key())
        .unwrap();
    TestCa {
        ca_pem: ca_cert.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
        mtls_acceptor: TlsAcceptor::from(Arc::new(mtls)),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

#[tokio::test]
async fn write_over_tls_with_test_ca() {
    let ca = test_ca();
    let server = Server::start_on(
        "127.0.0.1:0".parse().unwrap(),
        Some(ca.acceptor.clone()),
        Arc::new(|_| Reply::Status(200, "")),
    );
    let port = server.addr.port();

    // Trusted through ca_pem, host name from the URL.
    let mut by_host = fast(&format!("https://localhost:{port}"));
    by_host.name = "by_host".into();
    by_host.tls_config = Some(TlsConfig {
        ca_pem: Some(ca.ca_pem.clone()),
        ..Default::default()
    });
    // Trusted through ca_file, certificate checked against server_name (the URL is an IP).
    let dir = std::env::temp_dir().join(format!("rill-write-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let mut by_name = fast(&format!("https://127.0.0.1:{port}"));
    by_name.name = "by_name".into();
    by_name.tls_config = Some(TlsConfig {
        ca_file: Some(ca_file.to_string_lossy().into_owned()),
        server_name: Some("pyroscope.test".into()),
        ..Default::default()
    });
    // Not trusted: the test CA is unknown to the system store.
    let mut untrusted = fast(&format!("https://localhost:{port}"));
    untrusted.name = "untrusted".into();
    untrusted.max_backoff_retries = 1;
    untrusted.tls_config = Some(TlsConfig::default());
    // Wrong name: the certificate is not valid for 127.0.0.1.
    let mut wrong_name = fast(&format!("https://127.0.0.1:{port}"));
    wrong_name.name = "wrong_name".into();
    wrong_name.max_backoff_retries = 1;
    wrong_name.tls_config = Some(TlsConfig {
        ca_pem: Some(ca.ca_pem.clone()),
        ..Default::default()
    });

    let w = writer(vec![by_host, by_name, untrusted, wrong_name]);
    w.append(
        labels(&[("service_name", "tls")]),
        vec![profile(7, 100, "t")],
    )
    .unwrap();
    let m = w.metrics();
    assert!(
        wait_until(Duration::from_secs(5), || m.sent_profiles("by_host") == 1
            && m.sent_profiles("by_name") == 1
            && m.dropped_profiles("untrusted") == 1
            && m.dropped_profiles("wrong_name") == 1)
        .await,
        "{:?}",
        w.endpoints_debug_info()
    );
    assert_eq!(server.accepted().len(), 2);
    assert_eq!(
        server.received()[0].request.series[0].samples[0].raw_profile,
        profile(7, 100, "").raw
    );
    assert_eq!(m.sent_profiles("untrusted"), 0);
    assert_eq!(m.sent_profiles("wrong_name"), 0);
    let info = w.endpoints_debug_info();
    let err = info[2].status.last_error.clone().unwrap_or_default();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn write_presents_client_certificate() {
    let ca = test_ca();
    let server = Server::start_on(
        "127.0.0.1:0".parse().unwrap(),
        Some(ca.mtls_acceptor.clone()),
        Arc::new(|_| Reply::Status(200, "")),
    );
    let url = format!("https://localhost:{}", server.addr.port());
    let mut with_cert = fast(&url);
    with_cert.name = "with_cert".into();
    with_cert.tls_config = Some(TlsConfig {
        ca_pem: Some(ca.ca_pem.clone()),
        cert_pem: Some(ca.client_cert_pem.clone()),
        key_pem: Some(Secret::new(ca.client_key_pem.clone())),
        ..Default::default()
    });
    let mut without_cert = fast(&url);
    without_cert.name = "without_cert".into();
    without_cert.max_backoff_retries = 1;
    without_cert.tls_config = Some(TlsConfig {
        ca_pem: Some(ca.ca_pem.clone()),
        ..Default::default()
    });
    let w = writer(vec![with_cert, without_cert]);
    w.append(labels(&[("service_name", "m")]), vec![profile(1, 10, "")])
        .unwrap();
    let m = w.metrics();
    assert!(
        wait_until(Duration::from_secs(5), || m.sent_profiles("with_cert") == 1
            && m.dropped_profiles("without_cert") == 1)
        .await,
        "{:?}",
        w.endpoints_debug_info()
    );
    assert_eq!(server.accepted().len(), 1);
}

#[tokio::test]
async fn write_goes_through_proxy_url() {
    let proxy = Server::ok().await;
    // The target host does not resolve: only the proxy can deliver.
    let mut e = fast("http://pyroscope.invalid:4040/base");
    e.proxy_url = Some(proxy.url());
    let w = writer(vec![e]);
    w.append(labels(&[("service_name", "p")]), vec![profile(1, 10, "")])
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || proxy.count() == 1).await);
    assert_eq!(
        proxy.received()[0].uri,
        format!("http://pyroscope.invalid:4040/base{PUSH_PATH}")
    );
}

#[tokio::test]
async fn write_proxy_headers_and_no_proxy() {
    let proxy = Server::ok().await;
    let direct = Server::ok().await;
    let mut via = fast("http://pyroscope.invalid:4040");
    via.name = "via".into();
    via.proxy_url = Some(proxy.url());
    via.proxy_connect_header = [("Proxy-Token".to_string(), vec![Secret::new("pt-1")])].into();
    // 127.0.0.1 bypasses the (dead) proxy.
    let mut bypass = fast(&direct.url());
    bypass.name = "bypass".into();
    bypass.proxy_url = Some(format!("http://{}", free_addr()));
    bypass.no_proxy = Some("127.0.0.1".into());
    let w = writer(vec![via, bypass]);
    w.append(labels(&[("service_name", "p")]), vec![profile(1, 10, "")])
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || proxy.count() == 1
            && direct.count() == 1)
        .await,
        "{:?}",
        w.endpoints_debug_info()
    );
    assert_eq!(header(&proxy.received()[0], "proxy-token"), "pt-1");
    assert_eq!(header(&direct.received()[0], "proxy-token"), "");
}

#[tokio::test]
async fn write_retries_500_then_succeeds_once() {
    let server = Server::start(|n| {
        if n == 0 {
            Reply::Status(500, "try later")
        } else {
            Reply::Status(200, "")
        }
    })
    .await;
    let url = server.url();
    let w = writer(vec![fast(&url)]);
    w.append(labels(&[("service_name", "a")]), vec![profile(1, 64, "x")])
        .unwrap();
    let m = w.metrics();
    assert!(wait_until(Duration::from_secs(5), || m.sent_profiles(&url) == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.count(), 2, "one failed try and one delivery");
    assert_eq!(server.accepted().len(), 1, "delivered exactly once");
    assert_eq!(m.retries(&url), 1);
    assert_eq!(m.sent_bytes(&url), 64);
    assert_eq!(m.dropped_profiles(&url), 0);
    let rec = server.received();
    assert_eq!(
        rec[0].request, rec[1].request,
        "the retry resends the same request"
    );
}

#[tokio::test]
async fn write_does_not_retry_400() {
    let server = Server::start(|_| Reply::Status(400, "invalid profile: bad magic")).await;
    let url = server.url();
    let w = writer(vec![fast(&url)]);
    w.append(labels(&[("service_name", "a")]), vec![profile(1, 10, "")])
        .unwrap();
    let m = w.metrics();
    assert!(wait_until(Duration::from_secs(5), || m.dropped_profiles(&url) == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.count(), 1, "a 400 is never retried");
    assert_eq!(m.retries(&url), 0);
    assert_eq!(m.dropped_bytes(&url), 10);
    assert_eq!(m.sent_profiles(&url), 0);
    let err = w.endpoints_debug_info()[0]
        .status
        .last_error
        .clone()
        .unwrap();
    assert!(err.contains("400") && err.contains("bad magic"), "{err}");
}

#[tokio::test]
async fn write_retries_429_only_when_allowed() {
    let server = Server::start(|n| {
        if n % 2 == 0 {
            Reply::Status(429, "slow down")
        } else {
            Reply::Status(200, "")
        }
    })
    .await;
    let mut retry = fast(&server.url());
    retry.name = "retry".into();
    let w = writer(vec![retry]);
    w.append(labels(&[("service_name", "a")]), vec![profile(1, 10, "")])
        .unwrap();
    let m = w.metrics();
    assert!(wait_until(Duration::from_secs(5), || m.sent_profiles("retry") == 1).await);
    assert_eq!(m.retries("retry"), 1);

    let mut no_retry = fast(&server.url());
    no_retry.name = "no_retry".into();
    no_retry.retry_on_http_429 = false;
    let w = writer(vec![no_retry]);
    w.append(labels(&[("service_name", "a")]), vec![profile(1, 10, "")])
        .unwrap();
    let m = w.metrics();
    assert!(
        wait_until(Duration::from_secs(5), || m.dropped_profiles("no_retry")
            == 1)
        .await
    );
    assert_eq!(m.retries("no_retry"), 0);
}

#[tokio::test]
async fn write_delivers_after_server_comes_back() {
    let addr = free_addr();
    let url = format!("http://{addr}");
    let mut e = fast(&url);
    e.min_backoff_period = Duration::from_millis(50);
    e.max_backoff_period = Duration::from_millis(400);
    e.max_backoff_retries = 0; // retry until it works
    let w = writer(vec![e]);
    w.append(
        labels(&[("service_name", "a")]),
        vec![profile(3, 99, "late")],
    )
    .unwrap();
    let m = w.metrics();
    // Down for a while: connection errors are retried.
    assert!(wait_until(Duration::from_secs(3), || m.retries(&url) >= 3).await);
    let err = w.endpoints_debug_info()[0]
        .status
        .last_error
        .clone()
        .unwrap();
    assert!(err.contains("connection"), "{err}");
    assert_eq!(m.sent_profiles(&url), 0);

    let up = Instant::now();
    let server = Server::start_on(addr, None, Arc::new(|_| Reply::Status(200, "")));
    assert!(wait_until(Duration::from_secs(3), || m.sent_profiles(&url) == 1).await);
    let took = up.elapsed();
    // At most one maximum backoff (400ms) after the server is back, plus slack for busy machines.
    assert!(took < Duration::from_millis(400 + 800), "took {took:?}");
    assert_eq!(server.accepted().len(), 1);
    assert_eq!(server.received()[0].request.series[0].samples[0].id, "late");
    assert_eq!(m.dropped_profiles(&url), 0);
}

#[tokio::test]
async fn write_times_out_silent_server_and_bounds_queue() {
    let server = Server::start(|_| Reply::Hang).await;
    let url = server.url();
    let mut e = fast(&url);
    e.remote_timeout = Duration::from_millis(300);
    e.min_backoff_period = Duration::from_millis(20);
    e.max_backoff_period = Duration::from_millis(20);
    e.max_backoff_retries = 1;
    let w = writer_with(
        vec![e],
        BTreeMap::new(),
        WriterOptions {
            queue_capacity: 4,
            senders: 1,
            ..Default::default()
        },
    );

    let m = w.metrics();
    // One request in flight (the server holds it)...
    w.append(labels(&[("service_name", "a")]), vec![profile(0, 1000, "")])
        .unwrap();
    assert!(wait_until(Duration::from_secs(2), || server.count() == 1).await);
    // ...then the sender never waits, however dead the server is.
    let started = Instant::now();
    for i in 0..50u8 {
        w.append(labels(&[("service_name", "a")]), vec![profile(i, 1000, "")])
            .unwrap();
    }
    let append_time = started.elapsed();
    assert!(
        append_time < Duration::from_millis(250),
        "appends took {append_time:?}"
    );

    // 4 requests wait in the queue; the other 46 were dropped at once.
    let info = &w.endpoints_debug_info()[0];
    assert_eq!(info.queue_depth, 4);
    assert_eq!(info.queue_capacity, 4);
    assert_eq!(m.dropped_profiles(&url), 46);
    assert_eq!(m.dropped_bytes(&url), 46_000);

    // The first request times out after remote_timeout and is retried once, then dropped.
    assert!(wait_until(Duration::from_secs(3), || server.count() >= 2).await);
    let rec = server.received();
    let gap = rec[1].at - rec[0].at;
    assert!(
        gap >= Duration::from_millis(300) && gap < Duration::from_millis(300 + 1200),
        "retry after {gap:?}"
    );
    assert!(wait_until(Duration::from_secs(3), || m.dropped_profiles(&url) == 47).await);
    let err = w.endpoints_debug_info()[0]
        .status
        .last_error
        .clone()
        .unwrap();
    assert!(err.contains("timeout"), "{err}");
    assert_eq!(m.sent_profiles(&url), 0);
}

#[tokio::test]
async fn write_bounds_queued_bytes_and_sends_in_parallel() {
    let server = Server::start(|_| Reply::Hang).await;
    let url = server.url();
    let mut e = fast(&url);
    e.remote_timeout = Duration::from_secs(5);
    let w = writer_with(
        vec![e],
        BTreeMap::new(),
        WriterOptions {
            queue_capacity: 100,
            queue_max_bytes: 3500,
            senders: 3,
        },
    );
    let m = w.metrics();
    // Three senders: three requests reach the (silent) server at the same time.
    for i in 0..3u8 {
        w.append(labels(&[("service_name", "a")]), vec![profile(i, 1000, "")])
            .unwrap();
    }
    assert!(wait_until(Duration::from_secs(2), || server.count() == 3).await);
    // Each request encodes to a little over 1000 bytes: three fit in 3500 bytes, then drops.
    for i in 0..10u8 {
        w.append(labels(&[("service_name", "a")]), vec![profile(i, 1000, "")])
            .unwrap();
    }
    let info = &w.endpoints_debug_info()[0];
    assert_eq!(info.queue_depth, 3);
    assert!(info.queued_bytes <= 3500, "{}", info.queued_bytes);
    assert_eq!(m.dropped_profiles(&url), 7);
    let err = info.status.last_error.clone().unwrap();
    assert!(err.contains("queue full"), "{err}");
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn write_two_endpoints_one_dead() {
    let live = Server::ok().await;
    let dead_url = format!("http://{}", free_addr());
    let mut dead = fast(&dead_url);
    dead.min_backoff_period = Duration::from_millis(200);
    dead.max_backoff_period = Duration::from_secs(1);
    dead.max_backoff_retries = 0;
    let w = writer_with(
        vec![fast(&live.url()), dead],
        BTreeMap::new(),
        WriterOptions {
            queue_capacity: 8,
            senders: 2,
            ..Default::default()
        },
    );
    for i in 0..40u8 {
        w.append(
            labels(&[("service_name", "a"), ("seq", &i.to_string())]),
            vec![profile(i, 50, &format!("p{i}"))],
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let m = w.metrics();
    let live_url = live.url();
    assert!(wait_until(Duration::from_secs(5), || m.sent_profiles(&live_url) == 40).await);
    let mut ids: Vec<String> = live
        .accepted()
        .iter()
        .map(|r| r.request.series[0].samples[0].id.clone())
        .collect();
    ids.sort_by_key(|s| s[1..].parse::<u32>().unwrap());
    assert_eq!(ids, (0..40).map(|i| format!("p{i}")).collect::<Vec<_>>());
    // The dead endpoint holds at most its queue plus two in flight; the rest is counted.
    assert!(
        m.dropped_profiles(&dead_url) >= 40 - 8 - 2,
        "{}",
        m.dropped_profiles(&dead_url)
    );
    assert_eq!(m.sent_profiles(&dead_url), 0);
    assert!(w.endpoints_debug_info()[1].queue_depth <= 8);
}

#[tokio::test]
async fn write_update_keeps_unchanged_endpoints_and_adds_new() {
    let a = Server::ok().await;
    let b = Server::ok().await;
    let w = writer(vec![fast(&a.url())]);
    w.append(labels(&[("service_name", "a")]), vec![profile(0, 1, "")])
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || a.count() == 1).await);
    w.update(Arguments {
        external_labels: labels(&[("region", "eu")]),
        endpoints: vec![fast(&a.url()), fast(&b.url())],
    })
    .unwrap();
    w.append(labels(&[("service_name", "a")]), vec![profile(0, 1, "")])
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || a.count() == 2 && b.count() == 1).await);
    assert!(pairs(&b.received()[0].request).contains(&("region".to_string(), "eu".to_string())));
    // An invalid update is refused and the previous configuration stays.
    let mut bad = fast(&a.url());
    bad.bearer_token = Some(Secret::new("x"));
    bad.bearer_token_file = Some("/x".into());
    assert!(w
        .update(Arguments {
            external_labels: BTreeMap::new(),
            endpoints: vec![bad],
        })
        .is_err());
    assert_eq!(w.endpoints_debug_info().len(), 2);
}
