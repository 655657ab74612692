//! `pyroscope.ebpf` with the arguments of Alloy's current reference that rill accepts without
//! an engine behind them: probe profiling (`load_probe`, `probe_links`, the deprecated
//! `u_probe_links`) and the trace correlation with OBI (`bpf_fs_root`,
//! `obi_process_context_enabled`). They decode with Alloy's defaults, badly formed probe links
//! are errors at the attribute, and what was set is in the debug information (and follows
//! reloads). Without root: the probe's `MockSource`.
#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/ebpf_mock.rs"]
mod ebpf_mock;

use std::sync::Arc;

use components::pyroscope::appendable::AppendableRef;
use components::pyroscope::ebpf::Arguments;
use ebpf_mock::*;
use ebpf_probe::probe::mock::MockSource;
use flow_runtime::Component;
use river_parser::Value;

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
fn probe_and_correlation_arguments_decode_with_alloys_defaults() {
    let a = decode("").unwrap();
    assert!(!a.load_probe);
    assert!(a.probe_links.is_empty());
    assert_eq!(a.u_probe_links, None);
    assert_eq!(a.bpf_fs_root, None);
    assert_eq!(a.obi_process_context_enabled, None);
    assert!(a.without_effect().is_empty());
    assert!(a.deprecated_set().is_empty());

    let a = decode(
        r#"  load_probe = true
  probe_links = ["kprobe:do_wp_page", "kretprobe:do_sys_openat2", "uprobe:/usr/bin/app:main.handle", "uretprobe:/lib/x86_64-linux-gnu/libc.so.6:malloc"]
  u_probe_links = ["uprobe:/usr/local/bin/api:runtime.mallocgc"]
  bpf_fs_root = "/sys/fs/bpf/"
  obi_process_context_enabled = true"#,
    )
    .unwrap();
    assert!(a.load_probe);
    assert_eq!(a.probe_links.len(), 4);
    assert_eq!(
        a.u_probe_links.as_deref(),
        Some(&["uprobe:/usr/local/bin/api:runtime.mallocgc".to_string()][..])
    );
    assert_eq!(a.bpf_fs_root.as_deref(), Some("/sys/fs/bpf/"));
    assert_eq!(
        a.without_effect(),
        [
            "load_probe",
            "probe_links",
            "u_probe_links",
            "bpf_fs_root",
            "obi_process_context_enabled"
        ]
    );
    // Alloy deprecates u_probe_links in favour of probe_links.
    assert_eq!(a.deprecated_set(), ["u_probe_links"]);

    // Switched off (what rill does anyway): nothing to name.
    let a =
        decode("  load_probe = false\n  obi_process_context_enabled = false\n  probe_links = []")
            .unwrap();
    assert!(a.without_effect().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badly_formed_probe_links_are_errors_at_their_attribute() {
    let cases = [
        ("probe_links = [\"do_wp_page\"]", "no probe type"),
        (
            "probe_links = [\"kprobe:a\", \"tracepoint:sched:sched_switch\"]",
            "invalid probe link \"tracepoint:sched:sched_switch\": unknown probe type",
        ),
        (
            "probe_links = [\"kprobe:\"]",
            "a kernel probe names one symbol",
        ),
        (
            "probe_links = [\"uprobe:bin/app:main\"]",
            "a user probe names an absolute file path and a symbol",
        ),
        (
            "u_probe_links = [\"uretprobe:/usr/bin/app\"]",
            "a user probe names a file and a symbol",
        ),
        ("load_probe = \"yes\"", ""),
        ("bpf_fs_root = [\"/sys/fs/bpf\"]", ""),
        ("obi_process_context_enabled = 1", ""),
        ("probe_links = \"kprobe:do_wp_page\"", ""),
    ];
    for (attr, want) in cases {
        let runtime = flow_runtime::Runtime::new(
            components::registry(),
            flow_runtime::RuntimeOptions {
                storage_path: std::env::temp_dir()
                    .join(format!("rill-ebpf-probes-{}", std::process::id())),
                file_name: "config.alloy".into(),
                config_path: None,
            },
        );
        let src = format!(
            "pyroscope.write \"w\" {{\n}}\n\npyroscope.ebpf \"x\" {{\n  forward_to = [pyroscope.write.w.receiver]\n  {attr}\n}}\n"
        );
        let err = runtime.load(&src).await.expect_err(attr);
        let rendered = err.rendered().to_string();
        assert!(rendered.contains(want), "{attr}: {rendered}");
        assert!(
            rendered.starts_with("config.alloy:6:3: "),
            "{attr}: the error is at the attribute: {rendered}"
        );
        runtime.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_without_effect_are_in_the_debug_info_and_follow_reloads() {
    let fx = Fixture::new();
    let rec = Arc::new(Recorder::default());
    let mut args = Arguments::new(vec![rec.clone() as AppendableRef]);
    args.probe_links = vec!["kprobe:do_wp_page".into()];
    args.obi_process_context_enabled = Some(true);
    let r = Running::start(args.clone(), fx.options(MockSource::new().0)).await;
    let info = || {
        let Some(Value::Object(d)) = r.component.debug_info() else {
            panic!("no debug info")
        };
        d
    };
    let s = |v: &str| Value::String(v.to_string());
    assert_eq!(
        info().get("arguments_without_effect"),
        Some(&Value::Array(vec![
            s("probe_links"),
            s("obi_process_context_enabled")
        ]))
    );

    args.probe_links.clear();
    args.obi_process_context_enabled = None;
    args.u_probe_links = Some(vec!["uprobe:/usr/bin/app:main".into()]);
    r.update(args).await;
    let d = info();
    assert_eq!(
        d.get("arguments_without_effect"),
        Some(&Value::Array(vec![s("u_probe_links")]))
    );
    assert_eq!(
        d.get("deprecated_arguments"),
        Some(&Value::Array(vec![s("u_probe_links")]))
    );
    r.stop().await;
}

/// Every argument of Alloy's current `pyroscope.ebpf` reference (v1.19/v1.20 pages; besides
/// `off_cpu_threshold`, issue #16) with a valid value, in one body: none is rejected as an
/// unrecognized attribute.
#[test]
fn every_argument_of_alloys_current_reference_is_accepted() {
    let body = r#"  targets                     = [{"__process_pid__" = "1", "service_name" = "init"}]
  collect_interval            = "15s"
  sample_rate                 = 19
  demangle                    = "templates"
  python_enabled              = true
  go_enabled                  = true
  hotspot_enabled             = true
  perl_enabled                = true
  php_enabled                 = true
  ruby_enabled                = true
  v8_enabled                  = true
  dotnet_enabled              = true
  load_probe                  = false
  u_probe_links               = []
  probe_links                 = ["kprobe:do_wp_page"]
  verbose_mode                = false
  lazy_mode                   = true
  comm                        = "both"
  pid_label                   = true
  kernel_frames               = true
  no_kernel_version_check     = false
  bpf_fs_root                 = "/sys/fs/bpf/"
  obi_process_context_enabled = true
  pid_cache_size              = 32
  build_id_cache_size         = 64
  same_file_cache_size        = 8
  cache_rounds                = 3
  go_table_fallback           = false
  symbols_map_size            = 16384
  pid_map_size                = 2048
  container_id_cache_size     = 1024
  collect_user_profile        = true
  collect_kernel_profile      = true"#;
    let a = decode(body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.sample_rate.0, 19);
    assert!(a.lazy_mode && a.pid_label && a.kernel_stacks());
    assert_eq!(a.targets.len(), 1);
}
