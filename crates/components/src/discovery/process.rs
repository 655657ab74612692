//! `discovery.process`: one target per process of the local host, read from `/proc`, as
//! Grafana Alloy documents it (`join`, `refresh_interval`, block `discover_config`).
//!
//! [`discover`] reads `/proc` once (at most [`MAX_PROCESSES`] processes and a bounded number of
//! bytes per file; a process that vanishes while it is read is skipped) and [`join`] merges the
//! processes with targets from other discovery components by container ID. [`ProcessSource`]
//! runs both every `refresh_interval` on a blocking thread, through the generic [`Discovery`]
//! loop.
//!
//! Where Alloy's docs and its code disagree, rill follows the docs: `uid` and `username` default
//! to true (the code defaults them to false), and the cgroup path is `__meta_cgroup_path` (the
//! code writes `__meta_process_cgroup_path`; rill writes both, so that relabel rules written
//! against either keep working).

use std::collections::HashMap;
use std::future::Future;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ebpf_probe::cgroup::{container_id_from_cgroup, normalize_container_id};
use river_parser::decode::{Duration as RiverDuration, Invalid};
use river_parser::Validate;
use serde::Deserialize;
use tracing::Instrument;

use super::component::{Discovery, DiscoveryComponent, Source};
use super::target::Labels;

/// The process ID.
pub const PROCESS_PID: &str = "__process_pid__";
/// The container ID (from `/proc/PID/cgroup`), for processes in a container.
pub const CONTAINER_ID: &str = "__container_id__";
/// The executable (`/proc/PID/exe`).
pub const EXE: &str = "__meta_process_exe";
/// The working directory (`/proc/PID/cwd`).
pub const CWD: &str = "__meta_process_cwd";
/// The arguments joined with spaces (`/proc/PID/cmdline`).
pub const COMMANDLINE: &str = "__meta_process_commandline";
/// The real user ID (`/proc/PID/status`).
pub const UID: &str = "__meta_process_uid";
/// The user name of the real user ID (`/etc/passwd`).
pub const USERNAME: &str = "__meta_process_username";
/// The cgroup path(s), `|`-separated lines of `/proc/PID/cgroup` (the name in Alloy's docs).
pub const CGROUP_PATH: &str = "__meta_cgroup_path";
/// The same value under the name Alloy's code writes.
pub const CGROUP_PATH_ALLOY_CODE: &str = "__meta_process_cgroup_path";

/// Processes read per refresh at most; the rest are left out (and logged).
pub const MAX_PROCESSES: usize = 65_536;
/// Bytes read from one `/proc` file at most (a longer command line is cut).
const MAX_FILE: u64 = 64 * 1024;

/// Labels of a joined target naming its container, in order of preference (Alloy's).
const JOIN_CONTAINER_LABELS: [&str; 3] = [
    CONTAINER_ID,
    "__meta_kubernetes_pod_container_id",
    "__meta_docker_container_id",
];

/// The `discover_config` block: which labels to read.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverConfig {
    pub exe: bool,
    pub cwd: bool,
    pub commandline: bool,
    /// Alloy's docs: true; its code: false. rill follows the docs.
    pub uid: bool,
    /// Alloy's docs: true; its code: false. rill follows the docs.
    pub username: bool,
    pub container_id: bool,
    pub cgroup_path: bool,
}

impl Default for DiscoverConfig {
    fn default() -> Self {
        DiscoverConfig {
            exe: true,
            cwd: true,
            commandline: true,
            uid: true,
            username: true,
            container_id: true,
            cgroup_path: false,
        }
    }
}

/// The arguments of `discovery.process`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Arguments {
    /// Targets of other discovery components, merged with the processes of their container.
    pub join: Vec<Labels>,
    pub refresh_interval: RiverDuration,
    pub discover_config: DiscoverConfig,
}

impl Default for Arguments {
    fn default() -> Self {
        Arguments {
            join: Vec::new(),
            refresh_interval: RiverDuration::from_secs(60),
            discover_config: DiscoverConfig::default(),
        }
    }
}

impl Validate for Arguments {
    fn validate(&self) -> Result<(), Invalid> {
        if self.refresh_interval.as_std().is_zero() {
            return Err(Invalid::attr(
                "refresh_interval",
                "refresh_interval must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// Where processes are read: `/proc` and `/etc/passwd` (other roots in tests).
#[derive(Clone, Debug)]
pub struct ProcFs {
    pub proc_root: PathBuf,
    pub passwd: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        ProcFs {
            proc_root: "/proc".into(),
            passwd: "/etc/passwd".into(),
        }
    }
}

/// The result of one [`discover`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    /// One label set per process, by pid.
    pub targets: Vec<Labels>,
    /// Processes that exited while they were read (or kernel threads, which have no `exe`).
    pub vanished: usize,
    /// Processes left out because a file could not be read (permissions).
    pub unreadable: usize,
    /// Processes left out beyond `limit`.
    pub truncated: usize,
}

/// Reads the processes under `fs.proc_root`, at most `limit` of them (lowest pids first).
/// Like Alloy, a process whose `exe`, `cwd`, command line or cgroup cannot be read (when asked
/// for) is left out; an unknown uid just has no user name.
pub fn discover(fs: &ProcFs, cfg: &DiscoverConfig, limit: usize) -> std::io::Result<Discovered> {
    let mut pids: Vec<u32> = std::fs::read_dir(&fs.proc_root)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let mut out = Discovered {
        truncated: pids.len().saturating_sub(limit),
        ..Discovered::default()
    };
    pids.truncate(limit);
    let users = if cfg.username {
        read_passwd(&fs.passwd)
    } else {
        HashMap::new()
    };
    for pid in pids {
        match read_process(&fs.proc_root.join(pid.to_string()), pid, cfg, &users) {
            Ok(labels) => out.targets.push(labels),
            Err(e) if vanished(&e) => out.vanished += 1,
            Err(e) => {
                tracing::debug!(pid, error = %e, "discovery.process: cannot read process");
                out.unreadable += 1;
            }
        }
    }
    Ok(out)
}

/// The process is gone (or never had the file: kernel threads have no `exe`).
fn vanished(e: &std::io::Error) -> bool {
    // ESRCH: the process exited between opening its directory and reading a file.
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(3)
}

fn read_process(
    dir: &Path,
    pid: u32,
    cfg: &DiscoverConfig,
    users: &HashMap<u32, String>,
) -> std::io::Result<Labels> {
    let mut labels = Labels::new();
    labels.insert(PROCESS_PID.into(), pid.to_string());
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            labels.insert(k.to_string(), v);
        }
    };
    if cfg.exe {
        put(EXE, link(&dir.join("exe"))?);
    }
    if cfg.cwd {
        put(CWD, link(&dir.join("cwd"))?);
    }
    if cfg.commandline {
        put(
            COMMANDLINE,
            command_line(&read_bounded(&dir.join("cmdline"))?),
        );
    }
    if cfg.uid || cfg.username {
        // Alloy logs a status it cannot read and keeps the process without these labels.
        if let Some(uid) = read_bounded(&dir.join("status"))
            .ok()
            .and_then(|s| real_uid(&String::from_utf8_lossy(&s)))
        {
            if cfg.uid {
                put(UID, uid.to_string());
            }
            if cfg.username {
                put(USERNAME, users.get(&uid).cloned().unwrap_or_default());
            }
        }
    }
    if cfg.container_id || cfg.cgroup_path {
        let cgroup = String::from_utf8_lossy(&read_bounded(&dir.join("cgroup"))?).into_owned();
        if cfg.container_id {
            put(
                CONTAINER_ID,
                container_id_from_cgroup(&cgroup).unwrap_or_default(),
            );
        }
        if cfg.cgroup_path {
            let path = cgroup.lines().collect::<Vec<_>>().join("|");
            put(CGROUP_PATH_ALLOY_CODE, path.clone());
            put(CGROUP_PATH, path);
        }
    }
    Ok(labels)
}

fn link(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_link(path)?.to_string_lossy().into_owned())
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// `cmdline` (NUL-separated arguments) joined with spaces, as Alloy's process library does.
fn command_line(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    raw.split(|&b| b == 0)
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The real UID: the first number of the `Uid:` line of `status`.
fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// uid → user name from a passwd file (`name:x:uid:...`); empty when it cannot be read.
fn read_passwd(path: &Path) -> HashMap<u32, String> {
    let Ok(content) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let mut users = HashMap::new();
    for line in content.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse() {
            // The first entry of a uid wins, as in getpwuid.
            users.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    users
}

/// The container ID a target names (normalized: runtime prefix removed, lowercase).
fn container_of(target: &Labels) -> Option<String> {
    JOIN_CONTAINER_LABELS
        .iter()
        .filter_map(|k| target.get(*k).filter(|v| !v.is_empty()))
        .find_map(|v| normalize_container_id(v))
}

/// Alloy's join: each process in a container some `join` target names gets that target's
/// labels too (the target's win on conflict; the first target naming a container is used);
/// then come the `join` targets themselves, unchanged and in order.
pub fn join(processes: Vec<Labels>, join: &[Labels]) -> Vec<Labels> {
    if join.is_empty() {
        return processes;
    }
    let mut by_container: HashMap<String, &Labels> = HashMap::new();
    for target in join {
        if let Some(cid) = container_of(target) {
            by_container.entry(cid).or_insert(target);
        }
    }
    let mut out = Vec::with_capacity(processes.len() + join.len());
    for mut p in processes {
        if let Some(target) = container_of(&p).and_then(|c| by_container.get(&c)) {
            p.extend(target.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out.push(p);
    }
    out.extend(join.iter().cloned());
    out
}

/// The `/proc` source of the [`Discovery`] loop.
#[derive(Debug)]
pub struct ProcessSource;

/// The discovery loop of `discovery.process`.
pub type ProcessDiscovery = Discovery<ProcessSource>;

/// The `discovery.process` component: exports `targets`.
pub type ProcessComponent = DiscoveryComponent<ProcessSource>;

impl Source for ProcessSource {
    type Arguments = Arguments;
    const KIND: &'static str = "ProcessDiscovery";

    /// Refreshes every `refresh_interval` and right after an update of the arguments.
    async fn run(disc: Arc<ProcessDiscovery>, cancel: impl Future<Output = ()> + Send) {
        tokio::pin!(cancel);
        let mut args_rx = disc.arguments();
        loop {
            let args = args_rx.borrow_and_update().clone();
            let span = tracing::Span::current();
            let cfg = args.discover_config.clone();
            let read = tokio::task::spawn_blocking(move || {
                let _span = span.enter();
                discover(&ProcFs::default(), &cfg, MAX_PROCESSES)
            })
            .in_current_span()
            .await;
            match read {
                Ok(Ok(found)) => {
                    if found.truncated > 0 {
                        tracing::warn!(
                            left_out = found.truncated,
                            "discovery.process: more than {MAX_PROCESSES} processes; the highest pids are left out"
                        );
                    }
                    let message = format!(
                        "refreshed: {} processes ({} unreadable)",
                        found.targets.len(),
                        found.unreadable
                    );
                    disc.output().publish(join(found.targets, &args.join));
                    disc.output().set_status(true, message);
                }
                Ok(Err(e)) => disc
                    .output()
                    .set_status(false, format!("cannot list processes: {e}")),
                Err(e) => disc
                    .output()
                    .set_status(false, format!("process discovery failed: {e}")),
            }
            tokio::select! {
                biased;
                _ = &mut cancel => return,
                changed = args_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(args.refresh_interval.as_std()) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
