//! `examples/river/process.river` through the runtime, without root: the real `discovery.process`
//! reads this host's `/proc`, the example's `discovery.relabel` keeps this test's own program
//! (the keep rule's regex is the only change) and names it, and `pyroscope.ebpf` (the real
//! component on the probe's `MockSource`) is told to profile this process by its pid.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use components::pyroscope::ebpf::{Arguments, Ebpf, EbpfOptions};
use ebpf_probe::probe::mock::{MockHandle, MockSource};
use ebpf_probe::probe::{ProbeConfig, ProbeError, SampleSource};
use flow_runtime::{CancellationToken, Component, Options, Runtime, RuntimeOptions};
use river_parser::{Number, Value};

/// The mock's handle, for the test to drive.
fn handle() -> &'static Mutex<Option<MockHandle>> {
    static H: OnceLock<Mutex<Option<MockHandle>>> = OnceLock::new();
    H.get_or_init(|| Mutex::new(None))
}

/// `pyroscope.ebpf` on a `MockSource` (registered under the real name).
struct MockEbpf(Arc<Ebpf>);

impl Component for MockEbpf {
    type Arguments = Arguments;

    fn build(opts: Options, args: Arguments) -> anyhow::Result<Self> {
        let (source, h) = MockSource::new();
        *handle().lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
        let slot = Mutex::new(Some(source));
        let options = EbpfOptions {
            source: Arc::new(move |_cfg: &ProbeConfig| {
                slot.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .map(|s| Box::new(s) as Box<dyn SampleSource>)
                    .ok_or_else(|| ProbeError::Load {
                        context: "mock source already taken".into(),
                        source: None,
                    })
            }),
            event_poll: Duration::from_millis(10),
            ..EbpfOptions::default()
        };
        Ok(MockEbpf(Arc::new(Ebpf::build_with(opts, args, options)?)))
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        Arc::clone(&self.0).run(cancel).await
    }

    fn update(&self, args: Arguments) -> anyhow::Result<()> {
        self.0.update(args)
    }

    fn debug_info(&self) -> Option<Value> {
        self.0.debug_info()
    }
}

fn targets_of(
    exports: &Option<Value>,
    field: &str,
) -> Vec<std::collections::BTreeMap<String, String>> {
    let Some(Value::Object(m)) = exports else {
        return Vec::new();
    };
    let Some(Value::Array(items)) = m.get(field) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|t| match t {
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k.clone(), s.clone()),
                    other => panic!("label {k}: {}", other.type_name()),
                })
                .collect(),
            other => panic!("target: {}", other.type_name()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_example_profiles_the_programs_it_keeps() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/river/process.river"),
    )
    .expect("example file");
    let keep = r#"regex         = "/(usr/local/bin|opt)/.+""#;
    assert_eq!(example.matches(keep).count(), 1);
    let exe = std::env::current_exe().expect("own exe");
    let exe = exe.to_string_lossy().into_owned();
    let name = exe.rsplit('/').next().expect("file name").to_string();
    let escaped = regex::escape(&exe);
    let config = example.replace(
        keep,
        &format!("regex         = {}", river_parser::go_quote(&escaped)),
    );

    let runtime = Runtime::new(
        components::registry().with::<MockEbpf>("pyroscope.ebpf"),
        RuntimeOptions {
            storage_path: std::env::temp_dir()
                .join(format!("rill-process-example-{}", std::process::id())),
            file_name: "process.river".into(),
            config_path: None,
        },
    );
    runtime.load(&config).await.expect("the example loads");

    let me = std::process::id().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let kept = loop {
        let info = runtime
            .component("discovery.relabel.programs")
            .await
            .expect("relabel");
        let kept = targets_of(&info.exports, "output");
        let ebpf = runtime
            .component("pyroscope.ebpf.instance")
            .await
            .expect("ebpf");
        let ebpf_targets = match &ebpf.debug_info {
            Some(Value::Object(d)) => match d.get("targets") {
                Some(Value::Number(Number::Uint(n))) => *n as usize,
                _ => 0,
            },
            _ => 0,
        };
        if kept.iter().any(|t| t["__process_pid__"] == me) && ebpf_targets == kept.len() {
            break kept;
        }
        assert!(
            Instant::now() < deadline,
            "no target for this process: {kept:?}, pyroscope.ebpf has {ebpf_targets}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mine = kept
        .iter()
        .find(|t| t["__process_pid__"] == me)
        .expect("this process");
    assert_eq!(mine["service_name"], format!("ebpf/local/{name}"));
    assert_eq!(mine["__meta_process_exe"], exe);
    assert!(mine.contains_key("user") || !mine.contains_key("__meta_process_username"));
    assert!(
        !mine.contains_key("__container_id__"),
        "container_id = false"
    );
    assert!(
        kept.iter().all(|t| t["__meta_process_exe"] == exe),
        "only this program is kept: {kept:?}"
    );

    // The kernel (the mock) asks about this process: it is profiled, under its pid's target.
    let h = handle()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .expect("mock built");
    let pid = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        h.sample(pid, &[], &[0xffff_ffff_8100_0010], 1);
        if h.pid_config(pid).is_some_and(|c| c.profile) {
            break;
        }
        assert!(Instant::now() < deadline, "this process is not profiled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runtime.shutdown().await;
}
