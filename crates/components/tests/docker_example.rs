//! The `discovery.docker` and `discovery.relabel` blocks of the Docker example
//! (`examples/river/docker.river`, from the `pyroscope.ebpf` reference page), verbatim, in a
//! config of their own, run end-to-end through the flow runtime against the real engine: the
//! relabel output carries `service_name` set from the container name.

#[path = "support/docker_support.rs"]
mod docker_support;

use std::time::Duration;

use components::discovery::docker::DockerComponent;
use components::discovery::relabel::Relabel;
use docker_support::*;
use flow_runtime::{HealthState, Registry, Runtime, RuntimeOptions};
use river_parser::Value;

const BLOCKS: &str = r#"discovery.docker "linux" {
  host = "unix:///var/run/docker.sock"
}

discovery.relabel "local_containers" {
  targets = discovery.docker.linux.targets
  rule {
    action = "replace"
    source_labels = ["__meta_docker_container_name"]
    target_label = "service_name"
  }
}
"#;

fn registry() -> Registry {
    Registry::new()
        .with::<DockerComponent>("discovery.docker")
        .with::<Relabel>("discovery.relabel")
}

fn runtime_opts(tag: &str) -> RuntimeOptions {
    RuntimeOptions {
        storage_path: std::env::temp_dir().join(format!("rill-{tag}-{}", std::process::id())),
        file_name: "config.river".into(),
        config_path: None,
    }
}

fn find_target(exports: &Value, export: &str, id: &str) -> Option<Vec<(String, String)>> {
    let Value::Object(m) = exports else {
        return None;
    };
    let Some(Value::Array(items)) = m.get(export) else {
        return None;
    };
    items.iter().find_map(|t| {
        let Value::Object(o) = t else { return None };
        let labels: Vec<(String, String)> = o
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k.clone(), s.clone())),
                _ => None,
            })
            .collect();
        labels
            .iter()
            .any(|(k, v)| k == "__meta_docker_container_id" && v == id)
            .then_some(labels)
    })
}

#[test]
fn example_blocks_are_verbatim_from_the_example_file() {
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/river/docker.river"),
    )
    .expect("example file");
    assert!(
        example.contains(BLOCKS),
        "the blocks must be copied verbatim from examples/river/docker.river"
    );
}

#[test]
#[ignore = "needs root and Docker"]
fn docker_example_relabel_sets_service_name_end_to_end() {
    let _g = serial();
    main_engine();
    let run = format!("example-{}", std::process::id());
    let _cleanup = Cleanup {
        host: MAIN_HOST.into(),
        run: run.clone(),
    };
    let name = format!("rill-ex-{run}");
    let id = dk(
        MAIN_HOST,
        &[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &format!("rill.test={run}"),
            IMAGE,
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let runtime = Runtime::new(registry(), runtime_opts("example"));
        runtime.load(BLOCKS).await.expect("config loads");
        let mut found = None;
        for _ in 0..200 {
            if let Some(info) = runtime
                .component("discovery.relabel.local_containers")
                .await
            {
                if let Some(ex) = &info.exports {
                    found = find_target(ex, "output", &id);
                }
            }
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let labels = found.expect("relabel output has the container within 10s");
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("service_name"), Some(format!("/{name}")));
        assert_eq!(
            get("__meta_docker_container_name"),
            Some(format!("/{name}"))
        );
        assert!(get("__address__").is_some_and(|a| a.ends_with(":80")));
        let docker = runtime
            .component("discovery.docker.linux")
            .await
            .expect("docker component");
        assert_eq!(
            docker.health.state,
            HealthState::Healthy,
            "{:?}",
            docker.health
        );
        // The docker export has the same target without service_name.
        let raw = find_target(docker.exports.as_ref().expect("exports"), "targets", &id)
            .expect("docker target");
        assert!(!raw.iter().any(|(k, _)| k == "service_name"));
        runtime.shutdown().await;
    });
}

#[test]
fn invalid_rule_is_reported_by_the_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let runtime = Runtime::new(registry(), runtime_opts("invalid"));
        let src = r#"discovery.relabel "bad" {
  targets = [{"a" = "b"}]
  rule {
    action = "nope"
  }
}
"#;
        let err = runtime.load(src).await.expect_err("invalid rule");
        let rendered = err.rendered().to_string();
        eprintln!("{rendered}");
        assert!(
            rendered.contains("unrecognized action type \"nope\""),
            "{rendered}"
        );
        // Reported at the rule's `action` attribute (line 4), not only at the component.
        assert!(rendered.starts_with("config.river:4:5: "), "{rendered}");

        // The second of several rules is invalid: reported at that rule.
        let src = r#"discovery.relabel "bad2" {
  targets = [{"a" = "b"}]
  rule {
    target_label = "c"
  }
  rule {
    action = "hashmod"
    source_labels = ["a"]
    target_label = "h"
  }
}
"#;
        let err = runtime.load(src).await.expect_err("invalid rule");
        let rendered = err.rendered().to_string();
        assert!(
            rendered.starts_with(
                "config.river:6:3: relabel configuration for hashmod requires non-zero modulus"
            ),
            "{rendered}"
        );
        runtime.shutdown().await;
    });
}
