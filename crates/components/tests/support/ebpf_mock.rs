//! The `pyroscope.ebpf` component driven by the probe's `MockSource` without root: a fake
//! `/proc` (cgroup files naming containers, `comm` files), a fake kallsyms so stacks get
//! names, a receiver that records every profile, and the running component's test handles.
//! Shared by `tests/ebpf.rs` and `tests/ebpf_alloy.rs`.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failure panics the test"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use components::pyroscope::appendable::{AppendError, Appendable, AppendableRef, RawProfile};
use components::pyroscope::ebpf::{Arguments, Ebpf, EbpfOptions};
use ebpf_probe::pprof::{decode, Profile};
use ebpf_probe::probe::mock::{MockHandle, MockSource};
use ebpf_probe::probe::{ProbeConfig, ProbeError, SampleSource};
use ebpf_probe::symbolize::SymbolizerConfig;
use flow_runtime::{CancellationToken, Component, ExportsHandle, MetricsRegistry, Options};
use river_parser::{Number, Value};

/// One append: labels and profiles.
pub type Appended = (BTreeMap<String, String>, Vec<RawProfile>);

/// A receiver that keeps everything appended.
#[derive(Default)]
pub struct Recorder {
    pub got: Mutex<Vec<Appended>>,
}

impl Appendable for Recorder {
    fn append(
        &self,
        labels: BTreeMap<String, String>,
        profiles: Vec<RawProfile>,
    ) -> Result<(), AppendError> {
        self.got.lock().unwrap().push((labels, profiles));
        Ok(())
    }
}

impl Recorder {
    pub fn take(&self) -> Vec<(BTreeMap<String, String>, Profile)> {
        std::mem::take(&mut *self.got.lock().unwrap())
            .into_iter()
            .map(|(l, p)| {
                assert_eq!(p.len(), 1, "one profile per append");
                (l, decode(&p[0].raw).expect("valid gzipped pprof"))
            })
            .collect()
    }
}

pub const CID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const CID_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

// Fake kernel symbols: three functions 0x100 bytes apart.
pub const K_LEAF: u64 = 0xffff_ffff_8100_0010;
pub const K_MID: u64 = 0xffff_ffff_8100_0110;
pub const K_ROOT: u64 = 0xffff_ffff_8100_0210;
pub const K_OTHER: u64 = 0xffff_ffff_8100_0310;

pub struct Fixture {
    pub _dir: tempdir::Dir,
    pub proc_root: PathBuf,
    pub kallsyms: PathBuf,
    pub modules: PathBuf,
}

pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// A directory removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(tag: &str) -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("rill-ebpf-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempdir::Dir::new("mock");
        let proc_root = dir.path().join("proc");
        std::fs::create_dir_all(&proc_root).unwrap();
        let kallsyms = dir.path().join("kallsyms");
        std::fs::write(
            &kallsyms,
            "ffffffff81000000 T k_leaf\nffffffff81000100 T k_mid\nffffffff81000200 T k_root\nffffffff81000300 T k_other\nffffffff81000400 T k_end\n",
        )
        .unwrap();
        let modules = dir.path().join("modules");
        std::fs::write(&modules, "").unwrap();
        Fixture {
            _dir: dir,
            proc_root,
            kallsyms,
            modules,
        }
    }

    /// A process whose cgroup names `container` (a host process when `None`).
    pub fn process(&self, pid: u32, container: Option<&str>) {
        let d = self.proc_root.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let cgroup = match container {
            Some(id) => format!("0::/system.slice/docker-{id}.scope\n"),
            None => "0::/user.slice/user-0.slice/session-3.scope\n".to_string(),
        };
        std::fs::write(d.join("cgroup"), cgroup).unwrap();
    }

    /// The process name of `pid` (`/proc/PID/comm`).
    pub fn comm(&self, pid: u32, name: &str) {
        let d = self.proc_root.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("comm"), format!("{name}\n")).unwrap();
    }

    pub fn options(&self, source: MockSource) -> EbpfOptions {
        let slot = Arc::new(Mutex::new(Some(source)));
        EbpfOptions {
            source: Arc::new(move |_cfg: &ProbeConfig| {
                slot.lock()
                    .unwrap()
                    .take()
                    .map(|s| Box::new(s) as Box<dyn SampleSource>)
                    .ok_or_else(|| ProbeError::Load {
                        context: "mock source already taken".into(),
                        source: None,
                    })
            }),
            probe: ProbeConfig::default(),
            symbolizer: SymbolizerConfig {
                proc_root: self.proc_root.clone(),
                kallsyms_path: self.kallsyms.clone(),
                modules_path: self.modules.clone(),
                ..SymbolizerConfig::default()
            },
            proc_root: self.proc_root.clone(),
            event_poll: Duration::from_millis(10),
        }
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn options(id: &str) -> Options {
    Options {
        id: id.to_string(),
        span: tracing::Span::none(),
        data_path: std::env::temp_dir().join("rill-ebpf-unused"),
        exports: ExportsHandle::new(),
        metrics: MetricsRegistry::for_component(id),
    }
}

pub struct Running {
    pub component: Arc<Ebpf>,
    pub cancel: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub metrics: MetricsRegistry,
}

impl Running {
    pub async fn start(args: Arguments, options: EbpfOptions) -> Running {
        let opts = self::options("pyroscope.ebpf.test");
        let metrics = opts.metrics.clone();
        let component = Arc::new(Ebpf::build_with(opts, args, options).expect("build"));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(Arc::clone(&component).run(cancel.clone()));
        Running {
            component,
            cancel,
            task,
            metrics,
        }
    }

    /// Handles pending events (blocking call on a blocking thread).
    pub async fn sync(&self) {
        let c = Arc::clone(&self.component);
        assert!(tokio::task::spawn_blocking(move || c.sync()).await.unwrap());
    }

    pub async fn collect(&self) {
        let c = Arc::clone(&self.component);
        assert!(tokio::task::spawn_blocking(move || c.collect_now())
            .await
            .unwrap());
    }

    pub async fn update(&self, args: Arguments) {
        self.component.update(args).expect("update");
        self.sync().await;
    }

    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        self.metrics
            .with(|r| prometheus_client::encoding::text::encode_registry(&mut out, r).unwrap());
        out
    }

    pub fn debug(&self, key: &str) -> u64 {
        let Some(Value::Object(o)) = self.component.debug_info() else {
            panic!("no debug info");
        };
        match o.get(key) {
            Some(Value::Number(Number::Uint(n))) => *n,
            other => panic!("debug info {key}: {other:?}"),
        }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Arguments with one target, container `CID_A` as service `a`, forwarding to `rec`.
pub fn container_a_target(rec: &Arc<Recorder>) -> Arguments {
    let mut args = Arguments::new(vec![rec.clone() as AppendableRef]);
    args.targets = vec![labels(&[
        ("__container_id__", CID_A),
        ("service_name", "a"),
    ])];
    args
}

/// Reports `pid` to the component as unknown and waits until it was answered.
pub async fn introduce(r: &Running, h: &MockHandle, pids: &[u32]) {
    for &pid in pids {
        h.sample(pid, &[], &[K_LEAF], 1);
    }
    r.sync().await;
    assert!(
        h.pending().is_empty(),
        "every pid answered: {:?}",
        h.pending()
    );
}

pub fn profile_for<'a>(
    got: &'a [(BTreeMap<String, String>, Profile)],
    service: &str,
) -> &'a (BTreeMap<String, String>, Profile) {
    let matching: Vec<_> = got
        .iter()
        .filter(|(l, _)| l.get("service_name").map(String::as_str) == Some(service))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "exactly one profile for {service}; got services {:?}",
        got.iter()
            .map(|(l, _)| l.get("service_name"))
            .collect::<Vec<_>>()
    );
    matching[0]
}
