//! Every invalid argument of `discovery.docker`, `discovery.kubernetes`, `discovery.relabel` and
//! `pyroscope.write` is a diagnostic at the attribute (`file:line:col`), also inside a nested
//! block, reported by the real loader before the component is built.

use flow_runtime::{Runtime, RuntimeOptions};

/// Loads `src` into a fresh runtime and returns the rendered error.
fn load_error(tag: &str, src: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("rill-argpos-{tag}-{}", std::process::id()));
        let runtime = Runtime::new(
            components::registry(),
            RuntimeOptions {
                storage_path: dir.clone(),
                file_name: "config.river".into(),
                config_path: None,
            },
        );
        let err = runtime.load(src).await.expect_err("invalid arguments");
        let rendered = err.rendered().to_string();
        runtime.shutdown().await;
        std::fs::remove_dir_all(&dir).ok();
        rendered
    })
}

fn assert_at(rendered: &str, position: &str, message: &str) {
    assert!(
        rendered.starts_with(&format!("config.river:{position}: ")),
        "want {position}: {rendered}"
    );
    assert!(rendered.contains(message), "want {message:?}: {rendered}");
}

#[test]
fn docker_attribute_in_basic_auth() {
    let src = r#"discovery.docker "d" {
  host = "unix:///var/run/docker.sock"
  basic_auth {
    username      = "u"
    password      = "p"
    password_file = "/p"
  }
}
"#;
    assert_at(
        &load_error("docker", src),
        "6:5",
        "at most one of password and password_file must be configured",
    );
    let src = r#"discovery.docker "d" {
  host             = "unix:///var/run/docker.sock"
  refresh_interval = "0s"
}
"#;
    assert_at(
        &load_error("docker-interval", src),
        "3:3",
        "refresh_interval must be greater than 0",
    );
}

#[test]
fn kubernetes_attribute_in_selectors_and_tls_config() {
    let src = r#"discovery.kubernetes "k" {
  role = "pod"
  selectors {
    role  = "pod"
    label = "a=b"
  }
  selectors {
    role  = "service"
    label = "a=b"
  }
}
"#;
    assert_at(
        &load_error("k8s-selector", src),
        "8:5",
        "selector role \"service\" is not valid for role \"pod\"",
    );
    let src = r#"discovery.kubernetes "k" {
  role       = "node"
  api_server = "https://127.0.0.1:6443"
  tls_config {
    ca_pem   = "CA"
    cert_pem = "CERT"
  }
}
"#;
    assert_at(
        &load_error("k8s-tls", src),
        "6:5",
        "a client certificate and its key must be configured together",
    );
}

#[test]
fn write_attribute_in_second_endpoint() {
    let src = r#"pyroscope.write "w" {
  endpoint {
    url = "http://a:4040"
  }
  endpoint {
    url                = "http://b:4040"
    min_backoff_period = "1s"
    max_backoff_period = "10ms"
  }
}
"#;
    assert_at(
        &load_error("write", src),
        "8:5",
        "max_backoff_period must not be shorter than min_backoff_period",
    );
    let src = r#"pyroscope.write "w" {
  endpoint {
    url = "http://a:4040"
    authorization {
      type        = "Basic"
      credentials = "c"
    }
  }
}
"#;
    assert_at(
        &load_error("write-auth", src),
        "5:7",
        "type \"Basic\" is not allowed",
    );
}

#[test]
fn relabel_attribute_in_second_rule() {
    let src = r#"discovery.relabel "r" {
  targets = []
  rule {
    action        = "keep"
    source_labels = ["a"]
  }
  rule {
    source_labels = ["a"]
    regex         = "foo("
    action        = "keep"
  }
}
"#;
    assert_at(&load_error("relabel", src), "9:5", "invalid regex \"foo(\"");
}
