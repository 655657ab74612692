//! `pyroscope.ebpf`'s off-CPU profiles without root (the probe's `MockSource`): with
//! `off_cpu_threshold` above 0 every target gets a second profile per interval, `__name__ =
//! "offcpu"`, sample type `offcpu`/`nanoseconds`, the CPU profile's other labels, through the
//! same `forward_to`; the threshold reaches the source at start and on reload (a new
//! probability is applied live after the interval so far was sent); out-of-range values are
//! load errors at the attribute.

#[path = "support/ebpf_mock.rs"]
mod ebpf_mock;

use std::sync::Arc;

use components::pyroscope::ebpf::Arguments;
use ebpf_mock::*;
use ebpf_probe::pprof::folded;
use ebpf_probe::probe::mock::MockSource;

fn by_name<'a>(
    got: &'a [(
        std::collections::BTreeMap<String, String>,
        ebpf_probe::pprof::Profile,
    )],
    name: &str,
) -> Vec<&'a (
    std::collections::BTreeMap<String, String>,
    ebpf_probe::pprof::Profile,
)> {
    got.iter().filter(|(l, _)| l["__name__"] == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_profile_per_target_with_the_off_cpu_time() {
    let fx = Fixture::new();
    fx.process(701, Some(CID_A));
    fx.process(702, None);
    let (source, h) = MockSource::new();
    let rec = Arc::new(Recorder::default());
    let args = Arguments {
        off_cpu_threshold: 0.5,
        ..container_a_target(&rec)
    };
    let r = Running::start(args.clone(), fx.options(source)).await;
    introduce(&r, &h, &[701, 702]).await;
    assert!((h.off_cpu_threshold().probability() - 0.5).abs() < 1e-9);
    h.sample(701, &[], &[K_LEAF, K_ROOT], 3);
    h.off_cpu(701, &[], &[K_MID, K_ROOT], 2_500_000_000);
    h.off_cpu(701, &[], &[K_OTHER, K_ROOT], 500_000_000);
    h.off_cpu(702, &[], &[K_OTHER], 7); // not profiled: the "kernel" drops it
    r.collect().await;
    let got = rec.take();
    assert_eq!(got.len(), 2, "a CPU and an off-CPU profile");
    let (cpu_labels, cpu) = by_name(&got, "process_cpu")[0];
    let (off_labels, off) = by_name(&got, "offcpu")[0];
    assert_eq!(folded(cpu), "k_root;k_leaf 3\n");
    assert_eq!(off.str(off.sample_type[0].r#type), "offcpu");
    assert_eq!(off.str(off.sample_type[0].unit), "nanoseconds");
    assert_eq!(off.period, 1);
    assert_eq!(
        folded(off),
        "k_root;k_mid 2500000000\nk_root;k_other 500000000\n"
    );
    // The same labels but the name.
    let mut expected = cpu_labels.clone();
    expected.insert("__name__".into(), "offcpu".into());
    assert_eq!(off_labels, &expected);
    assert_eq!(r.debug("targets_matched"), 1);
    let m = r.metrics_text();
    assert!(
        m.contains("pyroscope_ebpf_off_cpu_nanoseconds_total{component_id=\"pyroscope.ebpf.test\"} 3000000000"),
        "{m}"
    );

    // A new probability applies live: the interval so far is sent first, the source keeps
    // running (the mock factory hands out one source: a reload would fail).
    h.off_cpu(701, &[], &[K_MID, K_ROOT], 1_000);
    let mut quarter = args.clone();
    quarter.off_cpu_threshold = 0.25;
    r.update(quarter).await;
    assert!((h.off_cpu_threshold().probability() - 0.25).abs() < 1e-9);
    let got = rec.take();
    assert_eq!(folded(&by_name(&got, "offcpu")[0].1), "k_root;k_mid 1000\n");
    h.off_cpu(701, &[], &[K_MID, K_ROOT], 2_000);
    r.collect().await;
    let got = rec.take();
    assert_eq!(folded(&by_name(&got, "offcpu")[0].1), "k_root;k_mid 2000\n");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default_and_turning_it_on_reloads_the_probe() {
    let fx = Fixture::new();
    fx.process(801, Some(CID_A));
    let (source, h) = MockSource::new();
    let rec = Arc::new(Recorder::default());
    let args = container_a_target(&rec);
    assert_eq!(args.off_cpu_threshold, 0.0);
    let r = Running::start(args.clone(), fx.options(source)).await;
    introduce(&r, &h, &[801]).await;
    assert!(h.off_cpu_threshold().is_off());
    h.off_cpu(801, &[], &[K_MID], 5);
    h.sample(801, &[], &[K_LEAF], 1);
    r.collect().await;
    let got = rec.take();
    assert_eq!(got.len(), 1);
    assert!(
        by_name(&got, "offcpu").is_empty(),
        "no off-CPU profile when off"
    );
    // On: the probe is reloaded (its maps and program are set up at load). The mock factory
    // has no second source, so the component reports that, after sending the interval.
    h.sample(801, &[], &[K_LEAF], 2);
    let mut on = args;
    on.off_cpu_threshold = 0.1;
    r.update(on).await;
    let got = rec.take();
    assert_eq!(folded(&by_name(&got, "process_cpu")[0].1), "k_leaf 2\n");
    let health = flow_runtime::Component::health(&*r.component).expect("health");
    assert_eq!(health.state, flow_runtime::HealthState::Unhealthy);
    assert!(
        health.message.contains("mock source already taken"),
        "{health:?}"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_thresholds_are_load_errors_at_the_attribute() {
    for (attr, ok) in [
        ("off_cpu_threshold = 1.5", false),
        ("off_cpu_threshold = -0.1", false),
        ("off_cpu_threshold = 1", true),
        ("off_cpu_threshold = 0.01", true),
        ("off_cpu_threshold = 0", true),
    ] {
        let runtime = flow_runtime::Runtime::new(
            components::registry(),
            flow_runtime::RuntimeOptions {
                storage_path: std::env::temp_dir()
                    .join(format!("rill-ebpf-offcpu-{}", std::process::id())),
                file_name: "config.river".into(),
                config_path: None,
            },
        );
        let src = format!(
            "pyroscope.write \"w\" {{\n}}\n\npyroscope.ebpf \"x\" {{\n  forward_to = [pyroscope.write.w.receiver]\n  {attr}\n  lazy_mode = true\n}}\n"
        );
        let result = runtime.load(&src).await;
        if ok {
            assert!(
                result.is_ok(),
                "{attr}: {:?}",
                result.err().map(|e| e.rendered().to_string())
            );
        } else {
            let rendered = result.expect_err(attr).rendered().to_string();
            assert!(
                rendered.starts_with("config.river:6:3: ")
                    && rendered.contains("off_cpu_threshold must be between 0 and 1"),
                "{attr}: {rendered}"
            );
        }
        runtime.shutdown().await;
    }
}
