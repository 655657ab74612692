//! `rill profile`: a one-shot CPU profile of the host, one process (`--pid`) or one container
//! (`--container`), without any configuration. It uses the pieces `pyroscope.ebpf` is built
//! from: the kernel probe, the container-ID cache, the symbolizer and the pprof builder. Samples
//! are collected every second (so short-lived processes are symbolized while alive and the
//! kernel maps never fill up) into one profile, written as gzipped pprof (`go tool pprof`
//! reads it) or folded stacks (`a;b;c count`, for flamegraph.pl, inferno, speedscope), followed
//! by a top-functions summary on standard error. The per-process bookkeeping (decisions, exits,
//! execs, the resync after lost events) is the same [`Session`] `pyroscope.ebpf` uses.
//! `--off-cpu` records the off-CPU profile instead (where threads waited: sample type
//! `offcpu`/`nanoseconds`, every switch recorded unless `--off-cpu-threshold` says less).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use components::pyroscope::ebpf::recent::top_functions;
use ebpf_probe::cgroup::{normalize_container_id, ContainerIdCache, ContainerIdCacheMetrics};
use ebpf_probe::pprof::{encode_gzip, folded, is_off_cpu, Profile, ProfileBuilder};
use ebpf_probe::probe::{OffCpuThreshold, Probe, ProbeConfig, SampleSource};
use ebpf_probe::session::{Decision, Forget, Policy, ProfileKind, Session};
use ebpf_probe::symbolize::{Symbolizer, SymbolizerConfig, SymbolizerMetrics};

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Gzipped pprof protobuf (`go tool pprof FILE`).
    Pprof,
    /// Folded stacks, one `root;...;leaf count` line per stack.
    Folded,
}

#[derive(clap::Args, Debug)]
pub struct ProfileArgs {
    /// How long to profile (`500ms`, `10s`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Profile only this process.
    #[arg(long, conflicts_with = "container")]
    pub pid: Option<u32>,
    /// Profile only the processes of this container (full ID or a prefix of at least 12 hex
    /// digits).
    #[arg(long)]
    pub container: Option<String>,
    /// Where to write the profile (`-` for standard output). Default: `profile.pb.gz` for
    /// pprof, standard output for folded.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "pprof")]
    pub format: Format,
    /// Samples per second per CPU.
    #[arg(long, default_value_t = 97)]
    pub sample_rate: u32,
    /// Functions listed in the summary.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Show the Python functions CPython processes run (`pyroscope.ebpf`'s `python_enabled`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub python: bool,
    /// Record an off-CPU profile (time threads spent off CPU: sleeping, blocked, waiting for a
    /// CPU, by stack) instead of a CPU profile. Default output: `offcpu.pb.gz`.
    #[arg(long)]
    pub off_cpu: bool,
    /// With `--off-cpu`: the probability that a thread leaving a CPU is recorded (values are
    /// scaled back by it; lower it for less overhead under heavy context switching).
    #[arg(long, default_value_t = 1.0, value_parser = parse_probability, requires = "off_cpu")]
    pub off_cpu_threshold: f64,
}

/// Parses a probability in (0, 1].
fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("invalid number {s:?}"))?;
    if p > 0.0 && p <= 1.0 {
        Ok(p)
    } else {
        Err(format!(
            "the threshold must be above 0 and at most 1, got {s}"
        ))
    }
}

/// Parses `500ms`, `10s`, `2m` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("invalid duration {s:?} (use ms, s or m)")),
    };
    if d.is_zero() {
        return Err("the duration must be greater than 0".into());
    }
    Ok(d)
}

/// Which processes are profiled.
enum Filter {
    All,
    Pid(u32),
    Container(String),
}

impl Filter {
    fn wants(&self, pid: u32, cgroups: &mut ContainerIdCache) -> bool {
        match self {
            Filter::All => true,
            Filter::Pid(p) => *p == pid,
            Filter::Container(id) => cgroups.get(pid).is_some_and(|c| c.starts_with(id)),
        }
    }
}

/// How `rill profile` answers the profiling session: the processes the filter wants go to the
/// one profile, with user and kernel stacks.
struct FilterPolicy {
    filter: Filter,
    cgroups: ContainerIdCache,
    symbolizer: Symbolizer,
}

impl FilterPolicy {
    fn new(filter: Filter, proc_root: &str) -> Self {
        FilterPolicy {
            filter,
            cgroups: ContainerIdCache::new(proc_root, 1024, ContainerIdCacheMetrics::default()),
            symbolizer: Symbolizer::new(SymbolizerConfig::default(), SymbolizerMetrics::default()),
        }
    }
}

impl Policy for FilterPolicy {
    type Target = ();
    type Process = ();

    fn inspect(&mut self, _pid: u32) {}

    fn decide(&mut self, pid: u32, _process: &()) -> Decision<()> {
        Decision {
            target: self.filter.wants(pid, &mut self.cgroups).then_some(()),
            user: true,
            kernel: true,
        }
    }

    fn started(&mut self, pid: u32) {
        self.symbolizer.preload(pid);
    }

    fn forget(&mut self, pid: u32, what: Forget) {
        self.symbolizer.forget_pid(pid);
        if what == Forget::Process {
            self.cgroups.forget(pid);
        }
    }
}

pub fn profile(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    let filter = match (&args.pid, &args.container) {
        (Some(pid), _) => {
            anyhow::ensure!(
                std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "no process with pid {pid}"
            );
            Filter::Pid(*pid)
        }
        (None, Some(c)) => {
            let id = c
                .strip_prefix("docker://")
                .unwrap_or(c)
                .to_ascii_lowercase();
            anyhow::ensure!(
                id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit()),
                "--container wants a container ID (at least 12 hex digits), got {c:?}"
            );
            Filter::Container(normalize_container_id(&id).unwrap_or(id))
        }
        (None, None) => Filter::All,
    };
    anyhow::ensure!(args.sample_rate > 0, "--sample-rate must be greater than 0");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let profile = rt.block_on(record(&args, filter))?;
    write_output(&args, &profile)?;
    eprint!("{}", summary(&profile, args.top));
    Ok(ExitCode::SUCCESS)
}

async fn record(args: &ProfileArgs, filter: Filter) -> anyhow::Result<Profile> {
    let off_cpu_threshold = if args.off_cpu {
        OffCpuThreshold::from_probability(args.off_cpu_threshold)?
    } else {
        OffCpuThreshold::OFF
    };
    let kind = if args.off_cpu {
        ProfileKind::OffCpu
    } else {
        ProfileKind::Cpu
    };
    let mut probe = Probe::load(ProbeConfig {
        sample_rate: u64::from(args.sample_rate),
        python: args.python,
        off_cpu_threshold,
        ..ProbeConfig::default()
    })
    .context("loading the eBPF probe (rill profile needs root or CAP_BPF + CAP_PERFMON)")?;
    let mut session = Session::new();
    session.attach(&mut probe);
    let target_pid = match filter {
        Filter::Pid(pid) => Some(pid),
        _ => None,
    };
    let mut policy = FilterPolicy::new(filter, "/proc");
    policy
        .symbolizer
        .set_kernel_resolver(probe.kernel_resolver());
    let start = SystemTime::now();
    let t0 = Instant::now();
    let start_nanos = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i64;
    let mut builder = match kind {
        ProfileKind::Cpu => ProfileBuilder::new(
            args.sample_rate,
            start_nanos,
            args.duration.as_nanos() as i64,
        ),
        ProfileKind::OffCpu => {
            ProfileBuilder::off_cpu(start_nanos, args.duration.as_nanos() as i64)
        }
    };
    // The target process may already be running: configure it up front.
    if let Some(pid) = target_pid {
        session.add(&mut probe, &mut policy, pid);
    }
    let deadline = t0 + args.duration;
    let mut next_collect = t0 + Duration::from_secs(1);
    let mut lost = 0u64;
    let mut total = 0u64;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut interrupted = false;
    loop {
        let now = Instant::now();
        let done = now >= deadline || interrupted;
        session.handle_events(&mut probe, &mut policy);
        if done || now >= next_collect {
            let c = session.collect_profiles(&mut probe, &mut policy, |policy, _, k, s, _| {
                if k != kind {
                    return;
                }
                total += s.count;
                let frames = policy.symbolizer.symbolize_sample(s);
                builder.add_stack(&frames, s.count);
            })?;
            lost += match kind {
                ProfileKind::Cpu => c.collection.lost.samples(),
                ProfileKind::OffCpu => c.collection.off_cpu.lost.events(),
            };
            next_collect += Duration::from_secs(1);
        }
        if done {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = &mut stop => { interrupted = true; }
        }
    }
    if let Some(pid) = target_pid {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() && total == 0 {
            anyhow::bail!("process {pid} exited before any sample was taken");
        }
    }
    if lost > 0 {
        let what = match kind {
            ProfileKind::Cpu => "samples",
            ProfileKind::OffCpu => "off-CPU events",
        };
        eprintln!("warning: {lost} {what} lost (kernel maps full)");
    }
    let mut p = builder.build();
    p.duration_nanos = t0.elapsed().as_nanos() as i64;
    Ok(p)
}

fn write_output(args: &ProfileArgs, profile: &Profile) -> anyhow::Result<()> {
    let bytes = match args.format {
        Format::Pprof => encode_gzip(profile),
        Format::Folded => folded(profile).into_bytes(),
    };
    let path = match (&args.output, args.format) {
        (Some(p), _) => Some(p.clone()),
        (None, Format::Pprof) if args.off_cpu => Some(PathBuf::from("offcpu.pb.gz")),
        (None, Format::Pprof) => Some(PathBuf::from("profile.pb.gz")),
        (None, Format::Folded) => None,
    };
    match path {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::write(&p, &bytes).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {} ({} bytes)", p.display(), bytes.len());
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    Ok(())
}

fn summary(profile: &Profile, top: usize) -> String {
    let (all, rows) = top_functions(profile);
    let secs = profile.duration_nanos as f64 / 1e9;
    let off_cpu = is_off_cpu(profile);
    let mut out = if off_cpu {
        format!("{:.3}s off CPU in {secs:.1}s\n", all as f64 / 1e9)
    } else {
        format!("{all} samples in {secs:.1}s\n")
    };
    if all == 0 {
        out.push_str(if off_cpu {
            "no off-CPU time: did the process wait?\n"
        } else {
            "no samples: was the process on CPU?\n"
        });
        return out;
    }
    let pct = |n: u64| 100.0 * n as f64 / all as f64;
    // Off-CPU values are nanoseconds: shown in milliseconds.
    let value = |n: u64| {
        if off_cpu {
            format!("{:.1}ms", n as f64 / 1e6)
        } else {
            n.to_string()
        }
    };
    out.push_str(&format!(
        "{:>10} {:>7} {:>10} {:>7}  function\n",
        "self", "self%", "total", "total%"
    ));
    for (name, s, t) in rows.iter().take(top) {
        out.push_str(&format!(
            "{:>10} {:>6.2}% {:>10} {:>6.2}%  {name}\n",
            value(*s),
            pct(*s),
            value(*t),
            pct(*t)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use components::pyroscope::ebpf::policy::TargetPolicy;
    use components::pyroscope::ebpf::targets::{TargetSet, PROCESS_PID_LABEL, SERVICE_NAME_LABEL};
    use ebpf_probe::probe::mock::MockSource;
    use ebpf_probe::probe::{LostCounters, SampleSource};

    use super::*;

    /// Pids no real process has (above the kernel's largest pid_max), so nothing is read.
    const A: u32 = 4_200_001;
    const B: u32 = 4_200_002;
    const C: u32 = 4_200_003;

    /// What a caller's decisions make of one scripted run of the kernel: the configuration
    /// each pid got, the attributed samples of each collect, the unattributed samples and the
    /// processes known and profiled after it.
    #[derive(Debug, PartialEq, Eq)]
    struct Trace {
        configs: Vec<(u32, Configured)>,
        collects: Vec<Collect>,
    }

    /// (profile, user, kernel) as the mock kernel was told, if at all.
    type Configured = Option<(bool, bool, bool)>;
    /// (pid, count) of the attributed samples, unattributed, known, profiled.
    type Collect = (Vec<(u32, u64)>, u64, usize, usize);

    fn collect<P: Policy>(
        session: &mut Session<P>,
        source: &mut dyn SampleSource,
        policy: &mut P,
        trace: &mut Trace,
    ) {
        let mut samples = Vec::new();
        let c = session
            .collect(source, policy, |_, _, s, _| samples.push((s.pid, s.count)))
            .unwrap();
        samples.sort_unstable();
        trace
            .collects
            .push((samples, c.unattributed, session.known(), session.profiled()));
    }

    /// Unknown pids, an exec and an exit before the collect, then (on a second source whose
    /// events are all lost) the resync from the pending pids.
    fn scenario<P: Policy>(policy: &mut P) -> Trace {
        let mut trace = Trace {
            configs: Vec::new(),
            collects: Vec::new(),
        };
        let (mut source, mock) = MockSource::new();
        let mut session = Session::new();
        session.attach(&mut source);
        for pid in [A, B, C] {
            mock.sample(pid, &[0x1000], &[0xffff_ffff_8100_0000], 1);
        }
        session.handle_events(&mut source, policy);
        for pid in [A, B, C] {
            mock.sample(pid, &[0x1000], &[0xffff_ffff_8100_0000], 2);
            let config = mock.pid_config(pid).map(|c| (c.profile, c.user, c.kernel));
            trace.configs.push((pid, config));
        }
        mock.exec(A);
        mock.exit(B);
        collect(&mut session, &mut source, policy, &mut trace);
        mock.sample(A, &[0x2000], &[], 3);
        collect(&mut session, &mut source, policy, &mut trace);

        let (mut source, mock) = MockSource::new();
        drop(source.take_events());
        session.detach();
        session.attach(&mut source);
        for pid in [A, C] {
            mock.sample(pid, &[0x1000], &[], 1);
        }
        mock.lose(LostCounters {
            events: 2,
            ..LostCounters::default()
        });
        collect(&mut session, &mut source, policy, &mut trace);
        for pid in [A, C] {
            mock.sample(pid, &[0x1000], &[], 4);
            let config = mock.pid_config(pid).map(|c| (c.profile, c.user, c.kernel));
            trace.configs.push((pid, config));
        }
        collect(&mut session, &mut source, policy, &mut trace);
        trace
    }

    fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn component_policy(targets: &[BTreeMap<String, String>], targets_only: bool) -> TargetPolicy {
        let default = labels(&[(SERVICE_NAME_LABEL, "host".into())]);
        TargetPolicy::new(
            Arc::new(TargetSet::new(targets, &default, targets_only, "test")),
            ContainerIdCache::new("/nonexistent", 16, ContainerIdCacheMetrics::default()),
            Symbolizer::new(SymbolizerConfig::default(), SymbolizerMetrics::default()),
            true,
            true,
        )
    }

    #[test]
    fn rill_profile_and_pyroscope_ebpf_decide_the_same_through_the_session() {
        let all = scenario(&mut FilterPolicy::new(Filter::All, "/nonexistent"));
        assert_eq!(all, scenario(&mut component_policy(&[], false)));
        // Everything profiled; B's samples are sent once after its exit, then it is gone; the
        // lost unknown-pid events of the second source are recovered at its first collect.
        let profiled = Some((true, true, true));
        assert_eq!(
            all.configs,
            vec![
                (A, profiled),
                (B, profiled),
                (C, profiled),
                (A, profiled),
                (C, profiled)
            ]
        );
        assert_eq!(
            all.collects,
            vec![
                (vec![(A, 2), (B, 2), (C, 2)], 0, 2, 2),
                (vec![(A, 3)], 0, 2, 2),
                (vec![], 0, 2, 2),
                (vec![(A, 4), (C, 4)], 0, 2, 2),
            ]
        );

        let one = scenario(&mut FilterPolicy::new(Filter::Pid(A), "/nonexistent"));
        let pid_target = labels(&[
            (SERVICE_NAME_LABEL, "one".into()),
            (PROCESS_PID_LABEL, A.to_string()),
        ]);
        assert_eq!(one, scenario(&mut component_policy(&[pid_target], true)));
        let ignored = Some((false, true, true));
        assert_eq!(
            one.configs[..3],
            [(A, profiled), (B, ignored), (C, ignored)]
        );
        assert_eq!(one.collects[0], (vec![(A, 2)], 0, 2, 1));
    }
}
