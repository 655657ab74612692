//! `pyroscope.relabel` through the runtime: a River configuration wires it between a test
//! receiver component and profiles pushed to its `receiver` export; a reload changes the rules;
//! invalid arguments are errors at their attribute.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use components::pyroscope::appendable::{
    from_value, to_capsule, AppendError, Appendable, AppendableRef, RawProfile,
};
use flow_runtime::{CancellationToken, Component, Options, Runtime, RuntimeOptions};
use river_parser::Value;
use serde::Deserialize;

type Labels = BTreeMap<String, String>;

/// What `testing.sink` received, for the whole test binary.
fn received() -> &'static Mutex<Vec<Labels>> {
    static GOT: OnceLock<Mutex<Vec<Labels>>> = OnceLock::new();
    GOT.get_or_init(|| Mutex::new(Vec::new()))
}

fn take() -> Vec<Labels> {
    std::mem::take(&mut *received().lock().unwrap_or_else(|e| e.into_inner()))
}

struct Recorder;

impl Appendable for Recorder {
    fn append(&self, labels: Labels, _profiles: Vec<RawProfile>) -> Result<(), AppendError> {
        received()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(labels);
        Ok(())
    }
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkArgs {}

impl river_parser::Validate for SinkArgs {}

/// `testing.sink`: exports a `receiver` that records label sets.
struct Sink;

impl Component for Sink {
    type Arguments = SinkArgs;

    fn build(opts: Options, _args: SinkArgs) -> anyhow::Result<Self> {
        let r: AppendableRef = Arc::new(Recorder);
        opts.exports.publish_fields([("receiver", to_capsule(r))]);
        Ok(Sink)
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        cancel.cancelled().await;
        Ok(())
    }

    fn update(&self, _args: SinkArgs) -> anyhow::Result<()> {
        Ok(())
    }
}

fn runtime(tag: &str) -> Runtime {
    Runtime::new(
        components::registry().with::<Sink>("testing.sink"),
        RuntimeOptions {
            storage_path: std::env::temp_dir().join(format!(
                "rill-pyroscope-relabel-{tag}-{}",
                std::process::id()
            )),
            file_name: "config.river".into(),
            config_path: None,
        },
    )
}

fn config(rules: &str) -> String {
    format!(
        r#"testing.sink "out" {{
}}

pyroscope.relabel "r" {{
  forward_to     = [testing.sink.out.receiver]
  max_cache_size = 100
{rules}
}}
"#
    )
}

const RULES: &str = r#"  rule {
    source_labels = ["service_name"]
    regex         = "ebpf/(.*)"
    target_label  = "app"
  }
  rule {
    action        = "drop"
    source_labels = ["app"]
    regex         = "noise"
  }"#;

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn receiver_of(rt: &Runtime) -> AppendableRef {
    let info = rt
        .component("pyroscope.relabel.r")
        .await
        .expect("component");
    let Some(Value::Object(ex)) = info.exports else {
        panic!("no exports: {:?}", info.exports)
    };
    from_value(&ex["receiver"]).expect("a receiver capsule")
}

fn push(r: &AppendableRef, labels: Labels) {
    r.append(
        labels,
        vec![RawProfile {
            raw: vec![0x1f, 0x8b],
            id: String::new(),
        }],
    )
    .expect("accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabels_profiles_between_components_and_follows_reloads() {
    let rt = runtime("ok");
    rt.load(&config(RULES))
        .await
        .expect("the configuration loads");
    let r = receiver_of(&rt).await;
    push(&r, l(&[("service_name", "ebpf/web")]));
    push(&r, l(&[("service_name", "ebpf/noise")]));
    push(&r, l(&[("service_name", "other")]));
    assert_eq!(
        take(),
        vec![
            l(&[("app", "web"), ("service_name", "ebpf/web")]),
            l(&[("service_name", "other")]),
        ],
        "noise dropped, the rest relabeled or passed"
    );

    // Reload with other rules: the same receiver applies them.
    let keep_only_web = r#"  rule {
    action        = "keep"
    source_labels = ["service_name"]
    regex         = ".*web"
  }"#;
    rt.load(&config(keep_only_web)).await.expect("reload");
    let again = receiver_of(&rt).await;
    assert!(Arc::ptr_eq(&r, &again));
    push(&r, l(&[("service_name", "ebpf/web")]));
    push(&r, l(&[("service_name", "other")]));
    assert_eq!(take(), vec![l(&[("service_name", "ebpf/web")])]);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_errors_at_their_attribute() {
    for (body, want, at) in [
        (
            "  max_cache_size = 0".to_string(),
            "max_cache_size must be greater than 0, got 0",
            "config.river:6:3: ",
        ),
        (
            "  rule {\n    action = \"bogus\"\n  }".to_string(),
            "unrecognized action type \"bogus\"",
            "config.river:7:5: ",
        ),
    ] {
        let rt = runtime("invalid");
        let src = format!(
            "testing.sink \"out\" {{\n}}\n\npyroscope.relabel \"r\" {{\n  forward_to = [testing.sink.out.receiver]\n{body}\n}}\n"
        );
        let err = rt.load(&src).await.expect_err(&body);
        let rendered = err.rendered().to_string();
        assert!(rendered.contains(want), "{body}: {rendered}");
        assert!(rendered.starts_with(at), "{body}: {rendered}");
        rt.shutdown().await;
    }
}
