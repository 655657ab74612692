//! `rill profile`: a one-shot CPU profile of the host, one process (`--pid`) or one container
//! (`--container`), without any configuration. It uses the pieces `pyroscope.ebpf` is built
//! from: the kernel probe, the container-ID cache, the symbolizer and the pprof builder. Samples
//! are collected every second (so short-lived processes are symbolized while alive and the
//! kernel maps never fill up) into one profile, written as gzipped pprof (`go tool pprof`
//! reads it) or folded stacks (`a;b;c count`, for flamegraph.pl, inferno, speedscope), followed
//! by a top-functions summary on standard error.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use components::pyroscope::ebpf::recent::top_functions;
use ebpf_probe::cgroup::{normalize_container_id, ContainerIdCache, ContainerIdCacheMetrics};
use ebpf_probe::pprof::{encode_gzip, folded, Profile, ProfileBuilder};
use ebpf_probe::probe::{PidConfig, Probe, ProbeConfig, ProbeEvent};
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
    let mut probe = Probe::load(ProbeConfig {
        sample_rate: u64::from(args.sample_rate),
        ..ProbeConfig::default()
    })
    .context("loading the eBPF probe (rill profile needs root or CAP_BPF + CAP_PERFMON)")?;
    let mut events = probe
        .take_events()
        .context("the probe has no event channel")?;
    let mut symbolizer = Symbolizer::new(SymbolizerConfig::default(), SymbolizerMetrics::default());
    let mut cgroups = ContainerIdCache::new("/proc", 1024, ContainerIdCacheMetrics::default());
    let start = SystemTime::now();
    let t0 = Instant::now();
    let mut builder = ProfileBuilder::new(
        args.sample_rate,
        start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64,
        args.duration.as_nanos() as i64,
    );
    let mut profiled: HashSet<u32> = HashSet::new();
    let mut exited: HashSet<u32> = HashSet::new();
    let config = |profile| PidConfig {
        profile,
        user: true,
        kernel: true,
    };
    // The target process may already be running: configure it up front.
    if let Filter::Pid(pid) = filter {
        probe.set_pid_config(pid, config(true))?;
        symbolizer.preload(pid);
        profiled.insert(pid);
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
        while let Ok(ev) = events.try_recv() {
            match ev {
                ProbeEvent::UnknownPid(pid) => {
                    if exited.remove(&pid) {
                        symbolizer.forget_pid(pid);
                        cgroups.forget(pid);
                    }
                    let yes = filter.wants(pid, &mut cgroups);
                    if let Err(e) = probe.set_pid_config(pid, config(yes)) {
                        tracing::debug!(pid, error = %e, "cannot configure pid");
                    }
                    if yes && profiled.insert(pid) {
                        symbolizer.preload(pid);
                    }
                }
                ProbeEvent::PidExit(pid) => {
                    exited.insert(pid);
                }
                ProbeEvent::PidExec(pid) => symbolizer.forget_pid(pid),
                _ => {}
            }
        }
        if done || now >= next_collect {
            let c = probe.collect()?;
            lost += c.lost.samples();
            for s in &c.samples {
                if !profiled.contains(&s.pid) {
                    continue;
                }
                total += s.count;
                let frames = symbolizer.symbolize(s.pid, &s.user, &s.kernel);
                builder.add_stack(&frames, s.count);
            }
            for pid in exited.drain() {
                symbolizer.forget_pid(pid);
                cgroups.forget(pid);
            }
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
    if let Filter::Pid(pid) = filter {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() && total == 0 {
            anyhow::bail!("process {pid} exited before any sample was taken");
        }
    }
    if lost > 0 {
        eprintln!("warning: {lost} samples lost (kernel maps full)");
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
    let mut out = format!("{all} samples in {secs:.1}s\n");
    if all == 0 {
        out.push_str("no samples: was the process on CPU?\n");
        return out;
    }
    let pct = |n: u64| 100.0 * n as f64 / all as f64;
    out.push_str(&format!(
        "{:>8} {:>7} {:>8} {:>7}  function\n",
        "self", "self%", "total", "total%"
    ));
    for (name, s, t) in rows.iter().take(top) {
        out.push_str(&format!(
            "{s:>8} {:>6.2}% {t:>8} {:>6.2}%  {name}\n",
            pct(*s),
            pct(*t)
        ));
    }
    out
}
