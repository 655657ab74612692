//! `pyroscope.write` as a component: its River arguments, the `receiver` export, updates and debug
//! info, and through the real runtime (load, export, reload, errors with file:line:col), against
//! the test server of `support/write_server.rs`.

use std::sync::Arc;
use std::time::Duration;

use components::pyroscope::write::Arguments;

#[path = "support/write_server.rs"]
mod write_server;
use write_server::*;

// ---------------------------------------------------------------------------------------------
// The component: River arguments, the `receiver` export, updates, debug info

mod component {
    use super::*;
    use components::pyroscope::appendable::{from_value, AppendableRef};
    use components::pyroscope::write::Write;
    use flow_runtime::{CancellationToken, Component, ExportsHandle, MetricsRegistry, Options};
    use river_parser::{CapsuleRef, Value};

    /// Evaluates and decodes the body of the first block of `src` into `pyroscope.write`'s
    /// arguments, as the runtime does.
    fn decode(src: &str) -> Result<Arguments, String> {
        let file = river_parser::parse_file(src).map_err(|d| d.to_string())?;
        let block = match &file.body[0] {
            river_parser::ast::Stmt::Block(b) => b.clone(),
            _ => panic!("expected a block"),
        };
        let scope = river_parser::Scope::new();
        let body = river_parser::eval_body(&block.body, &scope).map_err(|d| d.to_string())?;
        // As the runtime does: decoding runs the arguments' `Validate` rules.
        river_parser::decode::decode_body_validated(&body, body.span()).map_err(|d| d.to_string())
    }

    fn options(exports: &ExportsHandle, metrics: &MetricsRegistry) -> Options {
        Options {
            id: "pyroscope.write.test".into(),
            span: tracing::Span::none(),
            data_path: std::env::temp_dir(),
            exports: exports.clone(),
            metrics: metrics.clone(),
        }
    }

    fn receiver(exports: &ExportsHandle) -> (Value, AppendableRef) {
        let Some(Value::Object(map)) = exports.get() else {
            panic!("no exports")
        };
        let v = map.get("receiver").expect("receiver export").clone();
        let r = from_value(&v).expect("receiver is an Appendable capsule");
        (v, r)
    }

    #[test]
    fn arguments_decode_with_alloy_names_and_defaults() {
        let args = decode(
            r#"pyroscope.write "x" {
                external_labels = { "cluster" = "c1" }
                endpoint {
                    url = "http://localhost:4040"
                }
                endpoint {
                    name = "cloud"
                    url = "https://profiles.example.com"
                    remote_timeout = "3s"
                    headers = { "X-Scope-OrgID" = "t1" }
                    min_backoff_period = "100ms"
                    max_backoff_period = "1m"
                    max_backoff_retries = 3
                    retry_on_http_429 = false
                    proxy_url = "http://proxy:3128"
                    basic_auth {
                        username = "u"
                        password = "p"
                    }
                    tls_config {
                        ca_pem = "PEM"
                        server_name = "pyroscope"
                        insecure_skip_verify = true
                    }
                }
            }"#,
        )
        .unwrap();
        assert_eq!(args.external_labels, labels(&[("cluster", "c1")]));
        assert_eq!(args.endpoints.len(), 2);
        let d = &args.endpoints[0];
        assert_eq!(d.url, "http://localhost:4040");
        assert_eq!(d.remote_timeout, Duration::from_secs(10));
        assert_eq!(d.min_backoff_period, Duration::from_millis(500));
        assert_eq!(d.max_backoff_period, Duration::from_secs(300));
        assert_eq!(d.max_backoff_retries, 10);
        assert!(d.retry_on_http_429);
        assert!(d.basic_auth.is_none() && d.tls_config.is_none() && d.proxy_url.is_none());
        let c = &args.endpoints[1];
        assert_eq!(c.name, "cloud");
        assert_eq!(c.remote_timeout, Duration::from_secs(3));
        assert_eq!(c.min_backoff_period, Duration::from_millis(100));
        assert_eq!(c.max_backoff_period, Duration::from_secs(60));
        assert_eq!(c.max_backoff_retries, 3);
        assert!(!c.retry_on_http_429);
        assert_eq!(c.headers, labels(&[("X-Scope-OrgID", "t1")]));
        assert_eq!(c.proxy_url.as_deref(), Some("http://proxy:3128"));
        let b = c.basic_auth.as_ref().unwrap();
        assert_eq!(
            (b.username.as_str(), b.password.as_ref().unwrap().expose()),
            ("u", "p")
        );
        let t = c.tls_config.as_ref().unwrap();
        assert_eq!(t.ca_pem.as_deref(), Some("PEM"));
        assert_eq!(t.server_name.as_deref(), Some("pyroscope"));
        assert!(t.insecure_skip_verify);
        assert!(river_parser::Validate::validate(&args).is_ok());

        let err =
            decode("pyroscope.write \"x\" {\n endpoint {\n url = \"http://a\"\n bogus = 1\n }\n}")
                .unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        let err = decode("pyroscope.write \"x\" {\n endpoint {\n name = \"a\"\n }\n}").unwrap_err();
        assert!(err.contains("url"), "{err}");
    }

    #[tokio::test]
    async fn component_exports_receiver_and_delivers() {
        let server = Server::ok().await;
        let args = decode(&format!(
            r#"pyroscope.write "x" {{
                external_labels = {{ "env" = "test" }}
                endpoint {{
                    url = "{}"
                    min_backoff_period = "10ms"
                    max_backoff_period = "50ms"
                    bearer_token = "tok"
                }}
            }}"#,
            server.url()
        ))
        .unwrap();
        let exports = ExportsHandle::new();
        let metrics = MetricsRegistry::for_component("pyroscope.write.test");
        let comp = Arc::new(Write::build(options(&exports, &metrics), args.clone()).unwrap());
        let cancel = CancellationToken::new();
        let run = tokio::spawn(Arc::clone(&comp).run(cancel.clone()));

        let (value, recv) = receiver(&exports);
        // Consumers decode the capsule with CapsuleRef<AppendableRef>.
        let decoded: CapsuleRef<AppendableRef> = river_parser::decode_value(&value).unwrap();
        decoded
            .append(
                labels(&[("service_name", "svc")]),
                vec![profile(9, 32, "c")],
            )
            .unwrap();
        assert!(wait_until(Duration::from_secs(5), || server.count() == 1).await);
        let got = &server.received()[0];
        assert_eq!(header(got, "authorization"), "Bearer tok");
        assert_eq!(
            pairs(&got.request),
            vec![
                ("env".to_string(), "test".to_string()),
                ("service_name".into(), "svc".into())
            ]
        );

        // Metrics are registered in the component's registry.
        assert!(
            wait_until(Duration::from_secs(2), || {
                let mut text = String::new();
                metrics.with(|r| prometheus_client::encoding::text::encode(&mut text, r).unwrap());
                text.contains("pyroscope_write_sent_profiles_total{") && text.contains("} 1")
            })
            .await
        );
        let mut text = String::new();
        metrics.with(|r| prometheus_client::encoding::text::encode(&mut text, r).unwrap());
        for name in [
            "pyroscope_write_sent_bytes_total",
            "pyroscope_write_dropped_bytes_total",
            "pyroscope_write_sent_profiles_total",
            "pyroscope_write_dropped_profiles_total",
            "pyroscope_write_retries_total",
            "pyroscope_write_latency_bucket",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }

        // Debug info: per endpoint, last success, last error, queue depth.
        let Some(Value::Object(info)) = comp.debug_info() else {
            panic!("no debug info")
        };
        let Some(Value::Array(eps)) = info.get("endpoints") else {
            panic!("no endpoints")
        };
        let Value::Object(ep) = &eps[0] else { panic!() };
        assert!(matches!(ep.get("last_success"), Some(Value::String(s)) if s.ends_with('Z')));
        assert_eq!(ep.get("last_error"), Some(&Value::Null));
        assert!(ep.contains_key("queue_depth"));
        assert_eq!(
            comp.health().unwrap().state,
            flow_runtime::HealthState::Healthy
        );

        // An update keeps the same receiver object and applies the new labels.
        let mut args2 = args.clone();
        args2.external_labels = labels(&[("env", "prod")]);
        comp.update(args2).unwrap();
        let (value2, _) = receiver(&exports);
        assert_eq!(
            value, value2,
            "the receiver export is stable across updates"
        );
        recv.append(
            labels(&[("service_name", "svc")]),
            vec![profile(9, 32, "d")],
        )
        .unwrap();
        assert!(wait_until(Duration::from_secs(5), || server.count() == 2).await);
        assert!(pairs(&server.received()[1].request).contains(&("env".into(), "prod".into())));

        cancel.cancel();
        run.await.unwrap().unwrap();
        // After shutdown, appends are accepted and discarded.
        recv.append(
            labels(&[("service_name", "svc")]),
            vec![profile(9, 32, "e")],
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn component_refuses_two_auth_methods() {
        let args = decode(
            r#"pyroscope.write "x" {
                endpoint {
                    url = "http://localhost:4040"
                    bearer_token = "a"
                    basic_auth { username = "u" }
                }
            }"#,
        )
        .expect_err("refused while decoding, before the component is built");
        assert!(args.contains("at most one of"), "{args}");
    }

    #[test]
    fn registry_lists_pyroscope_write() {
        let r = components::registry();
        assert!(format!("{r:?}").contains("pyroscope.write"));
    }
}

// ---------------------------------------------------------------------------------------------
// Through the real runtime: load, export, reload, errors with file:line:col

mod runtime {
    use super::*;
    use components::pyroscope::appendable::from_value;
    use flow_runtime::{LoadError, Runtime, RuntimeOptions};
    use river_parser::Value;

    fn config(url: &str, env: &str) -> String {
        format!(
            r#"pyroscope.write "default" {{
  external_labels = {{ "env" = "{env}" }}
  endpoint {{
    url                = "{url}"
    headers            = {{ "X-Scope-OrgID" = "t1" }}
    min_backoff_period = "10ms"
    max_backoff_period = "50ms"
  }}
}}
"#
        )
    }

    fn receiver_value(exports: Option<Value>) -> Value {
        let Some(Value::Object(map)) = exports else {
            panic!("no exports")
        };
        map["receiver"].clone()
    }

    #[tokio::test]
    async fn runtime_runs_pyroscope_write_end_to_end() {
        let server = Server::ok().await;
        let dir = std::env::temp_dir().join(format!("rill-write-rt-{}", std::process::id()));
        let rt = Runtime::new(
            components::registry(),
            RuntimeOptions {
                storage_path: dir.clone(),
                file_name: "config.river".into(),
                config_path: None,
            },
        );
        rt.load(&config(&server.url(), "a")).await.unwrap();
        let info = rt.component("pyroscope.write.default").await.unwrap();
        let v1 = receiver_value(info.exports);
        let recv = from_value(&v1).expect("receiver capsule");
        recv.append(labels(&[("service_name", "svc")]), vec![profile(1, 8, "1")])
            .unwrap();
        assert!(wait_until(Duration::from_secs(5), || server.count() == 1).await);
        let got = &server.received()[0];
        assert_eq!(header(got, "x-scope-orgid"), "t1");
        assert!(pairs(&got.request).contains(&("env".into(), "a".into())));

        // A reload with other arguments updates the component; the export stays the same.
        rt.load(&config(&server.url(), "b")).await.unwrap();
        let info = rt.component("pyroscope.write.default").await.unwrap();
        assert_eq!(receiver_value(info.exports), v1);
        recv.append(labels(&[("service_name", "svc")]), vec![profile(1, 8, "2")])
            .unwrap();
        assert!(wait_until(Duration::from_secs(5), || server.count() == 2).await);
        assert!(pairs(&server.received()[1].request).contains(&("env".into(), "b".into())));
        let Some(Value::Object(debug)) = info.debug_info else {
            panic!("no debug info")
        };
        assert!(matches!(debug.get("endpoints"), Some(Value::Array(a)) if a.len() == 1));

        // Two auth methods: the load reports it at the component, the last good config stays.
        let bad = r#"pyroscope.write "default" {
  endpoint {
    url          = "http://localhost:4040"
    bearer_token = "a"
    basic_auth {
      username = "u"
    }
  }
}
"#;
        let err = rt.load(bad).await.expect_err("refused");
        let text = err.to_string();
        assert!(
            matches!(err, LoadError::Evaluation { .. }),
            "unexpected error kind: {text}"
        );
        // At the second auth method written (`bearer_token`, line 4), inside `endpoint`.
        assert!(text.contains("config.river:4:5:"), "{text}");
        assert!(text.contains("at most one of"), "{text}");
        recv.append(labels(&[("service_name", "svc")]), vec![profile(1, 8, "3")])
            .unwrap();
        assert!(wait_until(Duration::from_secs(5), || server.count() == 3).await);

        rt.shutdown().await;
        std::fs::remove_dir_all(&dir).ok();
    }
}
