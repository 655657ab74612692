//! `pyroscope.ebpf` without root: the component driven by the probe's `MockSource`, with a fake
//! `/proc` (cgroup files naming containers) and a fake kallsyms so stacks get names. Covers
//! target matching, service_name inference, one profile per target, labels, what the kernel is
//! told about each pid, exits, updates, health, metrics and argument validation through the
//! runtime.

#[path = "support/ebpf_mock.rs"]
mod ebpf_mock;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use components::pyroscope::appendable::AppendableRef;
use components::pyroscope::ebpf::{Arguments, EbpfOptions};
use ebpf_mock::*;
use ebpf_probe::pprof::folded;
use ebpf_probe::probe::mock::MockSource;
use ebpf_probe::probe::{LostCounters, ProbeConfig, ProbeError, SampleSource};
use flow_runtime::{Component, HealthState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_profile_per_target_with_labels_and_kernel_told_what_to_profile() {
    let fx = Fixture::new();
    fx.process(101, Some(CID_A));
    fx.process(102, Some(CID_A));
    fx.process(103, Some(CID_B));
    fx.process(104, None); // host process, no target
    fx.process(105, Some(CID_B)); // targeted by __process_pid__, wins over its container
    let (source, h) = MockSource::new();
    let rec = Arc::new(Recorder::default());
    let mut args = Arguments::new(vec![rec.clone() as AppendableRef]);
    args.targets = vec![
        labels(&[
            ("__meta_docker_container_id", CID_A),
            ("__meta_docker_container_name", "/app-a"),
            ("job", "a"),
        ]),
        labels(&[
            ("__container_id__", &format!("containerd://{CID_B}")),
            ("service_name", "svc-b"),
        ]),
        labels(&[("__process_pid__", "105"), ("service_name", "by-pid")]),
        // no way to name the service: discarded
        labels(&[("__container_id__", "cccc")]),
    ];
    args.collect_kernel_profile = Some(true);
    args.collect_user_profile = false;
    let r = Running::start(args, fx.options(source)).await;
    introduce(&r, &h, &[101, 102, 103, 104, 105]).await;

    for pid in [101, 102, 103, 105] {
        let c = h.pid_config(pid).expect("configured");
        assert!(c.profile && c.kernel && !c.user, "pid {pid}: {c:?}");
    }
    assert!(
        !h.pid_config(104).unwrap().profile,
        "unmatched host pid is not profiled"
    );
    assert_eq!(r.debug("processes_profiled"), 4);
    assert_eq!(r.debug("processes_known"), 5);
    assert_eq!(r.debug("targets"), 3);
    assert_eq!(r.debug("targets_discarded"), 1);

    // Two pids of container A, same stack and another one.
    h.sample(101, &[], &[K_LEAF, K_MID, K_ROOT], 30);
    h.sample(102, &[], &[K_LEAF, K_MID, K_ROOT], 10);
    h.sample(102, &[], &[K_OTHER, K_ROOT], 20);
    h.sample(103, &[], &[K_OTHER], 5);
    h.sample(104, &[], &[K_OTHER], 50); // ignored by the "kernel"
    h.sample(105, &[], &[K_MID], 7);
    h.lose(LostCounters {
        counts_map_full: 3,
        ..Default::default()
    });
    r.collect().await;
    let got = rec.take();
    assert_eq!(got.len(), 3, "one profile per matched target");

    let (l, p) = profile_for(&got, "/app-a");
    assert_eq!(l["__name__"], "process_cpu");
    assert_eq!(l["__container_id__"], CID_A);
    assert_eq!(l["job"], "a");
    assert_eq!(p.period, 1_000_000_000 / 97);
    assert!(p.time_nanos > 0);
    assert!(p.duration_nanos >= 0);
    assert_eq!(p.str(p.sample_type[0].r#type), "cpu");
    assert_eq!(p.str(p.sample_type[0].unit), "nanoseconds");
    assert_eq!(
        folded(p),
        "k_root;k_mid;k_leaf 40\nk_root;k_other 20\n",
        "pids 101 and 102 aggregated into one profile"
    );

    let (l, p) = profile_for(&got, "svc-b");
    assert_eq!(l["__container_id__"], CID_B);
    assert_eq!(folded(p), "k_other 5\n");

    let (l, p) = profile_for(&got, "by-pid");
    assert_eq!(l["__process_pid__"], "105");
    assert_eq!(folded(p), "k_mid 7\n");

    assert_eq!(
        r.debug("samples"),
        72,
        "pid 104 is not counted by the kernel"
    );
    assert_eq!(r.debug("lost_samples"), 3);
    assert_eq!(r.debug("targets_matched"), 3);
    let m = r.metrics_text();
    for want in [
        "pyroscope_ebpf_samples_total{component_id=\"pyroscope.ebpf.test\"} 72",
        "pyroscope_ebpf_lost_samples_total{component_id=\"pyroscope.ebpf.test\"} 3",
        "pyroscope_ebpf_container_id_cache_miss_total{component_id=\"pyroscope.ebpf.test\"} 5",
        "pyroscope_ebpf_pid_cache_hit_total",
        "pyroscope_ebpf_elf_cache_stat_miss_total",
        "pyroscope_fanout_latency_count{component_id=\"pyroscope.ebpf.test\"} 3",
    ] {
        assert!(m.contains(want), "metrics lack {want:?}:\n{m}");
    }

    // Nothing sampled: nothing sent.
    r.collect().await;
    assert!(rec.take().is_empty());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_target_gets_unmatched_processes_and_the_component_id() {
    let fx = Fixture::new();
    fx.process(201, None);
    fx.process(202, Some(CID_B));
    fx.process(203, Some(CID_A));
    let (source, h) = MockSource::new();
    let rec = Arc::new(Recorder::default());
    let mut args = Arguments::new(vec![rec.clone() as AppendableRef]);
    args.targets = vec![labels(&[
        (
            "__meta_kubernetes_pod_container_id",
            &format!("cri-o://{CID_A}"),
        ),
        ("__meta_kubernetes_namespace", "ns"),
        ("__meta_kubernetes_pod_container_name", "web"),
    ])];
    args.targets_only = false;
    args.default_target = labels(&[("env", "host")]);
    let r = Running::start(args, fx.options(source)).await;
    introduce(&r, &h, &[201, 202, 203]).await;
    assert!(h.pid_config(201).unwrap().profile);
    assert!(h.pid_config(202).unwrap().profile);
    h.sample(201, &[], &[K_LEAF], 2);
    h.sample(202, &[], &[K_MID], 3);
    h.sample(203, &[], &[K_ROOT], 4);
    r.collect().await;
    let got = rec.take();
    assert_eq!(got.len(), 2);
    let (l, p) = profile_for(&got, "pyroscope.ebpf.test");
    assert_eq!(l["env"], "host");
    assert!(!l.contains_key("__container_id__"));
    assert_eq!(
        folded(p),
        "k_leaf 2\nk_mid 3\n",
        "both unmatched pids in one profile"
    );
    let (l, p) = profile_for(&got, "ns/web");
    assert_eq!(l["__container_id__"], CID_A);
    assert_eq!(folded(p), "k_root 4\n");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_annotation_wins_and_targets_update_reconfigures_pids() {
    let fx = Fixture::new();
    fx.process(301, Some(CID_A));
    let (source, h) = MockSource::new();
    let rec = Arc::new(Recorder::default());
    let args = Arguments::new(vec![rec.clone() as AppendableRef]);
    let r = Running::start(args.clone(), fx.options(source)).await;
    introduce(&r, &h, &[301]).await;
    assert!(!h.pid_config(301).unwrap().profile, "no targets yet");
    h.sample(301, &[], &[K_LEAF], 9);
    r.collect().await;
    assert!(rec.take().is_empty());

    // Discovery catches up: the container becomes a target.
    let mut args2 = args.clone();
    args2.targets = vec![labels(&[
        ("__meta_docker_container_id", CID_A),
        (
            "__meta_kubernetes_pod_annotation_pyroscope_io_service_name",
            "annotated",
        ),
        ("__meta_docker_container_name", "/ignored"),
    ])];
    r.update(args2.clone()).await;
    let c = h.pid_config(301).unwrap();
    assert!(c.profile && c.user && c.kernel, "{c:?}");
    h.sample(301, &[], &[K_LEAF], 9);
    r.collect().await;
    let got = rec.take();
    let (_, p) = profile_for(&got, "annotated");
    assert_eq!(folded(p), "k_leaf 9\n");

    // Kernel stacks switched off: the kernel is told.
    let mut args3 = args2.clone();
    args3.collect_kernel_profile = Some(false);
    r.update(args3).await;
    assert!(!h.pid_config(301).unwrap().kernel);

    // Targets gone again: the pid is no longer profiled.
    r.update(args).await;
    assert!(!h.pid_config(301).unwrap().profile);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exited_processes_are_sent_then_forgotten() {
    let fx = Fixture::new();
    fx.process(401, Some(CID_A));
    let (source, h) = MockSource::new();
    let rec = Arc::new(Recorder::default());
    let args = container_a_target(&rec);
    let r = Running::start(args, fx.options(source)).await;
    introduce(&r, &h, &[401]).await;
    // Samples counted, then the process exits before the collect.
    h.sample(401, &[], &[K_LEAF], 6);
    h.exit(401);
    r.sync().await;
    assert_eq!(
        r.debug("processes_known"),
        1,
        "kept until its samples are sent"
    );
    r.collect().await;
    let got = rec.take();
    assert_eq!(folded(&profile_for(&got, "a").1), "k_leaf 6\n");
    assert_eq!(r.debug("processes_known"), 0, "forgotten after the collect");
    assert_eq!(r.debug("container_id_cache_size"), 0);
    // The pid is reused by another (host) process: asked about again and decided afresh.
    fx.process(401, None);
    introduce(&r, &h, &[401]).await;
    assert!(!h.pid_config(401).unwrap().profile);
    r.stop().await;
}

/// A `sample_rate` change reloads the probe: the interval so far is sent first, at the old rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_rate_change_sends_the_interval_so_far_first() {
    let fx = Fixture::new();
    fx.process(501, Some(CID_A));
    let (source, h) = MockSource::new();
    let rec = Arc::new(Recorder::default());
    let args = container_a_target(&rec);
    let r = Running::start(args.clone(), fx.options(source)).await;
    introduce(&r, &h, &[501]).await;
    h.sample(501, &[], &[K_LEAF], 4);
    let mut faster = args;
    faster.sample_rate = components::pyroscope::ebpf::SampleRate(199);
    r.update(faster).await;
    let got = rec.take();
    let (_, p) = profile_for(&got, "a");
    assert_eq!(folded(p), "k_leaf 4\n");
    assert_eq!(p.period, 1_000_000_000 / 97, "counted at the old rate");
    r.stop().await;
}

/// A short-lived container: its process exits, then discovery drops the container, then the
/// collect runs. The samples taken before still go to the container's target (found by the
/// soak run: every profile of a 1 s container was lost when its collect came after the update).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_of_a_target_dropped_before_the_collect_are_still_sent() {
    let fx = Fixture::new();
    fx.process(601, Some(CID_A));
    fx.process(602, Some(CID_A));
    fx.process(603, Some(CID_B));
    let (source, h) = MockSource::new();
    let rec = Arc::new(Recorder::default());
    let mut args = Arguments::new(vec![rec.clone() as AppendableRef]);
    let target_a = labels(&[("__container_id__", CID_A), ("service_name", "a")]);
    let target_b = labels(&[("__container_id__", CID_B), ("service_name", "b")]);
    args.targets = vec![target_a, target_b.clone()];
    let r = Running::start(args.clone(), fx.options(source)).await;
    introduce(&r, &h, &[601, 602, 603]).await;
    h.sample(601, &[], &[K_LEAF], 6);
    h.sample(602, &[], &[K_MID], 4);
    h.sample(603, &[], &[K_ROOT], 2);
    // 601 exits; then container A is no longer a target (602 still runs, e.g. being killed).
    h.exit(601);
    let mut without_a = args.clone();
    without_a.targets = vec![target_b];
    r.update(without_a).await;
    assert_eq!(
        h.pid_config(601),
        None,
        "an exited pid is not configured again (a stale kernel entry would hide a reused pid)"
    );
    assert!(
        !h.pid_config(602).unwrap().profile,
        "602 no longer profiled"
    );
    assert!(h.pid_config(603).unwrap().profile);
    r.collect().await;
    let got = rec.take();
    assert_eq!(got.len(), 2, "a and b");
    let (l, p) = profile_for(&got, "a");
    assert_eq!(l["__container_id__"], CID_A);
    assert_eq!(folded(p), "k_leaf 6\nk_mid 4\n");
    let (_, p) = profile_for(&got, "b");
    assert_eq!(
        folded(p),
        "k_root 2\n",
        "b (now at another index) keeps its own samples"
    );
    assert_eq!(r.debug("unattributed_samples"), 0);

    // The next interval: nothing more for "a" (602 is ignored by the kernel now).
    h.sample(602, &[], &[K_MID], 5);
    h.sample(603, &[], &[K_ROOT], 1);
    r.collect().await;
    let got = rec.take();
    assert_eq!(got.len(), 1, "only b");
    assert_eq!(folded(&profile_for(&got, "b").1), "k_root 1\n");
    assert_eq!(r.debug("processes_known"), 2, "601 forgotten");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_events_are_resynchronised_from_pending_pids() {
    let fx = Fixture::new();
    fx.process(501, Some(CID_A));
    let (mut source, h) = MockSource::new();
    // The component never sees the unknown-pid event (as if the ring buffer overflowed).
    let _stolen = source.take_events();
    let rec = Arc::new(Recorder::default());
    let args = container_a_target(&rec);
    let r = Running::start(args, fx.options(source)).await;
    h.sample(501, &[], &[K_LEAF], 1);
    h.lose(LostCounters {
        events: 1,
        ..Default::default()
    });
    r.collect().await;
    assert!(h.pending().is_empty());
    assert!(h.pid_config(501).unwrap().profile);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_without_privileges_and_idle() {
    let rec = Arc::new(Recorder::default());
    let args = Arguments::new(vec![rec.clone() as AppendableRef]);
    let options = EbpfOptions {
        source: Arc::new(|_cfg: &ProbeConfig| {
            Err(ProbeError::Permission {
                context: "loading BPF program".into(),
                source: std::io::Error::from_raw_os_error(1).into(),
            })
        }),
        event_poll: Duration::from_millis(10),
        ..EbpfOptions::default()
    };
    let r = Running::start(args, options).await;
    let mut health = None;
    for _ in 0..200 {
        health = r.component.health();
        if health.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = health.expect("health reported");
    assert_eq!(health.state, HealthState::Unhealthy);
    assert!(
        health
            .message
            .starts_with("pyroscope.ebpf needs root or CAP_BPF+CAP_PERFMON: "),
        "{}",
        health.message
    );
    r.collect().await;
    assert!(rec.take().is_empty());
    r.stop().await;
}

fn runtime_opts(tag: &str) -> flow_runtime::RuntimeOptions {
    flow_runtime::RuntimeOptions {
        storage_path: std::env::temp_dir().join(format!("rill-ebpf-{tag}-{}", std::process::id())),
        file_name: "config.river".into(),
        config_path: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_decode_errors_at_their_attribute() {
    let cases = [
        (
            "sample_rate = 0",
            "sample_rate must be between 1 and 1000000, got 0",
        ),
        (
            "pid_cache_size = -1",
            "cache size must be greater than 0, got -1",
        ),
        (
            "elf_cache_size = 0",
            "cache size must be greater than 0, got 0",
        ),
        (
            "container_id_cache_size = -5",
            "cache size must be greater than 0, got -5",
        ),
        (
            "collect_interval = \"0s\"",
            "collect_interval must be greater than 0",
        ),
        ("demangle = \"fancy\"", "invalid demangle value \"fancy\""),
        ("targets_only = \"yes\"", ""),
        ("bogus = 1", "bogus"),
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
    // forward_to is required.
    let runtime = flow_runtime::Runtime::new(components::registry(), runtime_opts("missing"));
    let err = runtime
        .load("pyroscope.ebpf \"x\" {\n}\n")
        .await
        .expect_err("forward_to missing");
    assert!(
        err.rendered()
            .contains("missing required attribute \"forward_to\""),
        "{}",
        err.rendered()
    );
    runtime.shutdown().await;
}

#[test]
fn reference_defaults() {
    let a = Arguments::new(Vec::new());
    assert!(a.targets_only && a.collect_user_profile && a.kernel_stacks());
    assert_eq!(a.collect_interval.0.as_std(), Duration::from_secs(15));
    assert_eq!(a.sample_rate.0, 97);
    assert_eq!(
        (
            a.pid_cache_size.0,
            a.elf_cache_size.0,
            a.container_id_cache_size.0
        ),
        (32, 128, 64)
    );
    assert_eq!(a.demangle.0, ebpf_probe::symbolize::Demangle::None);
    let _ = Path::new("");
}
