//! `pyroscope.ebpf` with the arguments of Grafana Alloy ≥ 1.11, without root (the probe's
//! `MockSource`, a fake `/proc`): `comm` and `pid_label` in the pushed profiles, `kernel_frames`,
//! `lazy_mode`, the language switches and deprecated arguments (accepted, in the debug info),
//! applying every argument on reload, and decoding/validation errors at their attribute.
#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/ebpf_mock.rs"]
mod ebpf_mock;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use components::pyroscope::appendable::AppendableRef;
use components::pyroscope::ebpf::{Arguments, CommMode, EbpfOptions};
use ebpf_mock::*;
use ebpf_probe::pprof::{folded, Profile};
use ebpf_probe::probe::mock::MockSource;
use ebpf_probe::probe::{ProbeConfig, ProbeError, SampleSource};
use flow_runtime::{Component, HealthState};
use river_parser::Value;

/// A folded stack (root first), its sample labels and its sample count.
type LabeledStack = (String, Vec<(String, String)>, i64);

/// The sample labels of every sample, with its folded stack (root first), sorted.
fn labeled_stacks(p: &Profile) -> Vec<LabeledStack> {
    let mut out: Vec<_> = p
        .sample
        .iter()
        .map(|s| {
            let stack = p.stack_names(s); // root first
            let labels = s
                .label
                .iter()
                .map(|l| (p.str(l.key).to_string(), p.str(l.str).to_string()))
                .collect();
            (stack.join(";"), labels, s.value[0] / p.period)
        })
        .collect();
    out.sort();
    out
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comm_and_pid_label_reach_the_pushed_profiles_and_follow_reloads() {
    let fx = Fixture::new();
    fx.process(701, Some(CID_A));
    fx.comm(701, "nginx");
    fx.process(702, Some(CID_A));
    fx.comm(702, "worker");
    let (source, h) = MockSource::new();
    let rec = Arc::new(Recorder::default());
    let mut args = container_a_target(&rec);
    args.comm = CommMode::Both;
    args.pid_label = true;
    let r = Running::start(args.clone(), fx.options(source)).await;
    introduce(&r, &h, &[701, 702]).await;
    h.sample(701, &[], &[K_LEAF, K_ROOT], 3);
    h.sample(702, &[], &[K_LEAF, K_ROOT], 2);
    r.collect().await;
    let got = rec.take();
    let (_, p) = profile_for(&got, "a");
    assert_eq!(
        labeled_stacks(p),
        vec![
            (
                "nginx;k_root;k_leaf".to_string(),
                kv(&[("comm", "nginx"), ("pid", "701")]),
                3
            ),
            (
                "worker;k_root;k_leaf".to_string(),
                kv(&[("comm", "worker"), ("pid", "702")]),
                2
            ),
        ],
        "the process name is the root frame and a label; the pid a label"
    );

    // Reload: only the root frame, no labels.
    let mut frame_only = args.clone();
    frame_only.comm = CommMode::Stackframe;
    frame_only.pid_label = false;
    r.update(frame_only).await;
    h.sample(701, &[], &[K_LEAF], 1);
    h.sample(702, &[], &[K_LEAF], 4);
    r.collect().await;
    let got = rec.take();
    let (_, p) = profile_for(&got, "a");
    assert_eq!(folded(p), "nginx;k_leaf 1\nworker;k_leaf 4\n");
    assert!(p.sample.iter().all(|s| s.label.is_empty()));

    // Reload: the label only; a process whose name cannot be read gets no comm label.
    let mut label_only = args.clone();
    label_only.comm = CommMode::Label;
    label_only.pid_label = false;
    r.update(label_only).await;
    fx.process(703, Some(CID_A)); // no comm file
    introduce(&r, &h, &[703]).await;
    h.sample(701, &[], &[K_LEAF], 1);
    h.sample(703, &[], &[K_LEAF], 6);
    r.collect().await;
    let got = rec.take();
    let (_, p) = profile_for(&got, "a");
    assert_eq!(
        labeled_stacks(p),
        vec![
            ("k_leaf".to_string(), kv(&[]), 6),
            ("k_leaf".to_string(), kv(&[("comm", "nginx")]), 1),
        ]
    );

    // Reload: off again (the default): plain stacks.
    r.update(container_a_target(&rec)).await;
    h.sample(701, &[], &[K_LEAF], 2);
    r.collect().await;
    let got = rec.take();
    let (_, p) = profile_for(&got, "a");
    assert_eq!(folded(p), "k_leaf 2\n");
    assert!(p.sample[0].label.is_empty());
    r.stop().await;
}

/// A process that exits before the collect still gets its name: it is read when the process
/// starts being profiled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comm_of_a_process_that_exited_before_the_collect() {
    let fx = Fixture::new();
    fx.process(801, Some(CID_A));
    fx.comm(801, "short-lived");
    let (source, h) = MockSource::new();
    let rec = Arc::new(Recorder::default());
    let mut args = container_a_target(&rec);
    args.comm = CommMode::Label;
    let r = Running::start(args, fx.options(source)).await;
    introduce(&r, &h, &[801]).await;
    h.sample(801, &[], &[K_MID], 5);
    h.exit(801);
    std::fs::remove_dir_all(fx.proc_root.join("801")).unwrap();
    r.sync().await;
    r.collect().await;
    let got = rec.take();
    let (_, p) = profile_for(&got, "a");
    assert_eq!(
        labeled_stacks(p),
        vec![("k_mid".to_string(), kv(&[("comm", "short-lived")]), 5)]
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_frames_tells_the_kernel_and_applies_on_reload() {
    let fx = Fixture::new();
    fx.process(901, Some(CID_A));
    let (source, h) = MockSource::new();
    let rec = Arc::new(Recorder::default());
    let mut args = container_a_target(&rec);
    args.kernel_frames = Some(false);
    let r = Running::start(args.clone(), fx.options(source)).await;
    introduce(&r, &h, &[901]).await;
    let c = h.pid_config(901).unwrap();
    assert!(c.profile && c.user && !c.kernel, "{c:?}");
    args.kernel_frames = Some(true);
    r.update(args).await;
    assert!(h.pid_config(901).unwrap().kernel);
    r.stop().await;
}

/// `python_enabled` reaches the probe's configuration, and changing it reloads the probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_enabled_configures_the_probe_and_reloads_it() {
    let fx = Fixture::new();
    fx.process(901, Some(CID_A));
    let configs = Arc::new(Mutex::new(Vec::new()));
    let seen = configs.clone();
    let sources = Mutex::new(vec![MockSource::new().0, MockSource::new().0]);
    let options = EbpfOptions {
        source: Arc::new(move |cfg: &ProbeConfig| {
            seen.lock().unwrap().push(cfg.python);
            sources
                .lock()
                .unwrap()
                .pop()
                .map(|s| Box::new(s) as Box<dyn SampleSource>)
                .ok_or_else(|| ProbeError::Load {
                    context: "no more mock sources".into(),
                    source: None,
                })
        }),
        ..fx.options(MockSource::new().0)
    };
    let rec = Arc::new(Recorder::default());
    let mut args = container_a_target(&rec);
    args.python_enabled = false;
    let r = Running::start(args.clone(), options).await;
    r.sync().await;
    assert_eq!(*configs.lock().unwrap(), vec![false]);
    args.python_enabled = true;
    r.update(args).await;
    r.sync().await;
    assert_eq!(*configs.lock().unwrap(), vec![false, true]);
    r.stop().await;
}

/// A source factory that counts how often the probe is loaded.
fn counting(source: MockSource, loads: Arc<AtomicUsize>, fx: &Fixture) -> EbpfOptions {
    let slot = Mutex::new(Some(source));
    EbpfOptions {
        source: Arc::new(move |_cfg: &ProbeConfig| {
            loads.fetch_add(1, Ordering::SeqCst);
            slot.lock()
                .unwrap()
                .take()
                .map(|s| Box::new(s) as Box<dyn SampleSource>)
                .ok_or_else(|| ProbeError::Load {
                    context: "mock source already taken".into(),
                    source: None,
                })
        }),
        ..fx.options(MockSource::new().0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_mode_loads_no_probe_until_targets_arrive() {
    let fx = Fixture::new();
    fx.process(1001, Some(CID_A));
    let (source, h) = MockSource::new();
    let loads = Arc::new(AtomicUsize::new(0));
    let rec = Arc::new(Recorder::default());
    let mut waiting = Arguments::new(vec![rec.clone() as AppendableRef]);
    waiting.lazy_mode = true;
    // An invalid target (no service name) is no target either.
    waiting.targets = vec![labels(&[("__container_id__", CID_B)])];
    let r = Running::start(waiting.clone(), counting(source, Arc::clone(&loads), &fx)).await;
    r.collect().await;
    r.update(waiting.clone()).await;
    assert_eq!(loads.load(Ordering::SeqCst), 0, "no probe without targets");
    let health = r.component.health().expect("health");
    assert_eq!(health.state, HealthState::Healthy);
    assert!(health.message.contains("lazy_mode"), "{}", health.message);
    let Some(Value::Object(d)) = r.component.debug_info() else {
        panic!("no debug info")
    };
    assert_eq!(d.get("probe_loaded"), Some(&Value::Bool(false)));

    let mut with_target = container_a_target(&rec);
    with_target.lazy_mode = true;
    r.update(with_target.clone()).await;
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "loaded once targets arrive"
    );
    introduce(&r, &h, &[1001]).await;
    h.sample(1001, &[], &[K_LEAF], 2);
    r.collect().await;
    assert_eq!(folded(&profile_for(&rec.take(), "a").1), "k_leaf 2\n");
    // Targets gone again: the probe stays loaded.
    r.update(waiting).await;
    r.collect().await;
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let Some(Value::Object(d)) = r.component.debug_info() else {
        panic!("no debug info")
    };
    assert_eq!(d.get("probe_loaded"), Some(&Value::Bool(true)));
    r.stop().await;

    // Without lazy_mode the probe loads at start, targets or not.
    let loads = Arc::new(AtomicUsize::new(0));
    let eager = Arguments::new(vec![rec.clone() as AppendableRef]);
    let r = Running::start(
        eager,
        counting(MockSource::new().0, Arc::clone(&loads), &fx),
    )
    .await;
    r.collect().await;
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn languages_and_deprecated_arguments_are_in_the_debug_info() {
    let fx = Fixture::new();
    let rec = Arc::new(Recorder::default());
    let mut args = Arguments::new(vec![rec.clone() as AppendableRef]);
    args.ruby_enabled = false;
    args.pid_map_size = Some(2048);
    args.go_table_fallback = Some(true);
    let r = Running::start(args.clone(), fx.options(MockSource::new().0)).await;
    let info = || {
        let Some(Value::Object(d)) = r.component.debug_info() else {
            panic!("no debug info")
        };
        d
    };
    let d = info();
    let Some(Value::Object(langs)) = d.get("languages") else {
        panic!("languages: {:?}", d.get("languages"))
    };
    let s = |v: &str| Value::String(v.to_string());
    assert_eq!(langs.get("hotspot"), Some(&s("shown as native frames")));
    assert_eq!(langs.get("v8"), Some(&s("shown as native frames")));
    assert_eq!(
        langs.get("ruby"),
        Some(&s("disabled (shown as native frames, as in Alloy)"))
    );
    assert_eq!(langs.get("go"), Some(&s("unwound as native code")));
    assert_eq!(
        langs.get("python"),
        Some(&s("Python frames with file and line (CPython 3.6-3.13)"))
    );
    assert_eq!(langs.len(), 8);
    assert_eq!(
        d.get("deprecated_arguments"),
        Some(&Value::Array(vec![
            s("go_table_fallback"),
            s("pid_map_size")
        ]))
    );
    assert_eq!(d.get("comm"), Some(&s("none")));
    // Applied on reload.
    args.ruby_enabled = true;
    args.pid_map_size = None;
    args.go_table_fallback = None;
    args.comm = CommMode::Label;
    r.update(args).await;
    let d = info();
    let Some(Value::Object(langs)) = d.get("languages") else {
        panic!()
    };
    assert_eq!(langs.get("ruby"), Some(&s("shown as native frames")));
    assert_eq!(d.get("deprecated_arguments"), Some(&Value::Array(vec![])));
    assert_eq!(d.get("comm"), Some(&s("label")));
    r.stop().await;
}

/// Evaluates and decodes a `pyroscope.ebpf` body as the runtime does (`Validate` included).
fn decode(body: &str) -> Result<Arguments, String> {
    let src = format!("pyroscope.ebpf \"x\" {{\n  forward_to = []\n{body}\n}}\n");
    let file = river_parser::parse_file(&src).map_err(|d| d.to_string())?;
    let river_parser::ast::Stmt::Block(block) = &file.body[0] else {
        panic!("expected a block")
    };
    let body = river_parser::eval_body(&block.body, &river_parser::Scope::new())
        .map_err(|d| d.to_string())?;
    river_parser::decode::decode_body_validated(&body, body.span()).map_err(|d| d.to_string())
}

#[test]
fn alloy_arguments_decode_with_their_defaults() {
    let a = decode("").unwrap();
    assert_eq!(a.comm, CommMode::None);
    assert!(!a.pid_label && !a.lazy_mode && !a.verbose_mode && !a.no_kernel_version_check);
    assert!(a.kernel_stacks());
    assert_eq!((a.kernel_frames, a.collect_kernel_profile), (None, None));
    assert!(
        a.go_enabled
            && a.hotspot_enabled
            && a.perl_enabled
            && a.php_enabled
            && a.ruby_enabled
            && a.v8_enabled
            && a.dotnet_enabled
    );
    assert!(a.deprecated_set().is_empty());
    assert_eq!(a.sample_rate.0, 97, "rill keeps Agent Flow's default");
    assert!(
        a.python_enabled,
        "python_enabled defaults to true, as in Alloy"
    );
    assert!(!decode("  python_enabled = false\n").unwrap().python_enabled);

    let a = decode(
        r#"  comm = "stackframe"
  pid_label = true
  kernel_frames = false
  lazy_mode = true
  verbose_mode = true
  no_kernel_version_check = true
  go_enabled = false
  hotspot_enabled = false
  perl_enabled = false
  php_enabled = false
  ruby_enabled = false
  v8_enabled = false
  dotnet_enabled = false
  build_id_cache_size = 64
  same_file_cache_size = 8
  cache_rounds = 3
  go_table_fallback = false
  symbols_map_size = 16384
  pid_map_size = 2048"#,
    )
    .unwrap();
    assert_eq!(a.comm, CommMode::Stackframe);
    assert!(a.comm.stackframe() && !a.comm.label());
    assert!(a.pid_label && a.lazy_mode && a.verbose_mode && a.no_kernel_version_check);
    assert!(!a.kernel_stacks());
    assert!(!a.go_enabled && !a.hotspot_enabled && !a.dotnet_enabled);
    assert_eq!(
        a.deprecated_set(),
        [
            "build_id_cache_size",
            "same_file_cache_size",
            "cache_rounds",
            "go_table_fallback",
            "symbols_map_size",
            "pid_map_size"
        ]
    );
    // Alloy treats "" as "none".
    assert_eq!(decode(r#"  comm = """#).unwrap().comm, CommMode::None);
    assert_eq!(decode(r#"  comm = "both""#).unwrap().comm, CommMode::Both);
    assert!(decode(r#"  comm = "label""#).unwrap().comm.label());
    // Agreeing names of the same switch are fine; Agent Flow's alone still works.
    assert!(
        !decode("  kernel_frames = false\n  collect_kernel_profile = false")
            .unwrap()
            .kernel_stacks()
    );
    assert!(!decode("  collect_kernel_profile = false")
        .unwrap()
        .kernel_stacks());
}

fn runtime_opts(tag: &str) -> flow_runtime::RuntimeOptions {
    flow_runtime::RuntimeOptions {
        storage_path: std::env::temp_dir()
            .join(format!("rill-ebpf-alloy-{tag}-{}", std::process::id())),
        file_name: "config.river".into(),
        config_path: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_alloy_arguments_are_errors_at_their_attribute() {
    let cases = [
        (
            "comm = \"labels\"",
            "invalid comm mode \"labels\", valid values are: \"none\", \"label\", \"stackframe\", \"both\"",
        ),
        (
            "kernel_frames = false\n  collect_kernel_profile = true",
            "kernel_frames = false contradicts collect_kernel_profile = true",
        ),
        ("pid_label = \"yes\"", ""),
        ("lazy_mode = 1", ""),
        ("pid_map_size = \"big\"", ""),
        ("python_enabledd = true", "python_enabledd"),
    ];
    for (attr, want) in cases {
        let runtime = flow_runtime::Runtime::new(components::registry(), runtime_opts("invalid"));
        let src = format!(
            "pyroscope.write \"w\" {{\n}}\n\npyroscope.ebpf \"x\" {{\n  forward_to = [pyroscope.write.w.receiver]\n  {attr}\n}}\n"
        );
        let err = runtime.load(&src).await.expect_err(attr);
        let rendered = err.rendered().to_string();
        assert!(rendered.contains(want), "{attr}: {rendered}");
        assert!(
            rendered.starts_with("config.river:6:3: "),
            "{attr}: error at the attribute: {rendered}"
        );
        runtime.shutdown().await;
    }
}
