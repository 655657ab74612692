//! Container IDs from `/proc/PID/cgroup`.
//!
//! Understands cgroup v1 and v2, the cgroupfs and systemd drivers and the layouts written by
//! docker (`/docker/<id>`, `docker-<id>.scope`), containerd (`cri-containerd-<id>.scope`,
//! `...slice:cri-containerd:<id>`), cri-o (`crio-<id>.scope`), podman (`libpod-<id>.scope`) and
//! kubelet (`/kubepods/<qos>/pod<uid>/<id>`, `kubepods-<qos>-pod<uid>.slice/...`), with an
//! optional trailing `/init`. The deepest path component that names a container wins, so
//! nested containers resolve to the innermost one. [`ContainerIdCache`] memoises pid → ID in an
//! LRU with hit/miss counters.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Length of a docker/containerd/cri-o container ID in hex digits.
const ID_LEN: usize = 64;

/// Prefixes that runtimes put in front of the ID in systemd scope names.
const SCOPE_PREFIXES: &[&str] = &[
    "docker-",
    "cri-containerd-",
    "crio-",
    "libpod-",
    "containerd-",
];

/// Runtime prefixes on target IDs (`__meta_docker_container_id`, pod container IDs).
const TARGET_PREFIXES: &[&str] = &[
    "docker://",
    "containerd://",
    "cri-o://",
    "crio://",
    "podman://",
];

fn is_container_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container ID named by one path component (or one `:`-separated part of it), if any.
fn id_in_component(component: &str) -> Option<&str> {
    if is_container_id(component) {
        return Some(component);
    }
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    for prefix in SCOPE_PREFIXES {
        if let Some(rest) = stem.strip_prefix(prefix) {
            // `crio-conmon-<id>.scope` is the container monitor, not the container.
            if is_container_id(rest) {
                return Some(rest);
            }
        }
    }
    None
}

/// The container ID in one cgroup path such as
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podX.slice/cri-containerd-ID.scope`.
pub fn container_id_from_path(path: &str) -> Option<&str> {
    for component in path.rsplit('/') {
        // systemd driver under containerd: `kubepods-...-pod<uid>.slice:cri-containerd:<id>`.
        for part in component.rsplit(':') {
            if let Some(id) = id_in_component(part) {
                return Some(id);
            }
        }
    }
    None
}

/// The container ID in the content of a `/proc/PID/cgroup` file (lines
/// `hierarchy-id:controllers:path`). `None` for host processes.
pub fn container_id_from_cgroup(content: &str) -> Option<String> {
    content.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let _hierarchy = fields.next()?;
        let _controllers = fields.next()?;
        let path = fields.next()?;
        container_id_from_path(path).map(str::to_owned)
    })
}

/// Normalises a target's container ID: strips `docker://`, `containerd://`, `cri-o://` (and
/// `crio://`, `podman://`), trims whitespace and lowercases. Empty input gives `None`.
pub fn normalize_container_id(id: &str) -> Option<String> {
    let mut id = id.trim();
    for prefix in TARGET_PREFIXES {
        if let Some(rest) = id.strip_prefix(prefix) {
            id = rest;
            break;
        }
    }
    if id.is_empty() {
        None
    } else {
        Some(id.to_ascii_lowercase())
    }
}

/// Reads `<proc_root>/<pid>/cgroup` and extracts the container ID.
pub fn read_container_id(proc_root: &Path, pid: u32) -> std::io::Result<Option<String>> {
    let content = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))?;
    Ok(container_id_from_cgroup(&content))
}

/// Hit/miss counters of the [`ContainerIdCache`].
#[derive(Debug, Clone, Default)]
pub struct ContainerIdCacheMetrics {
    /// `pyroscope_ebpf_container_id_cache_hit_total`.
    pub hit: Counter,
    /// `pyroscope_ebpf_container_id_cache_miss_total`.
    pub miss: Counter,
}

impl ContainerIdCacheMetrics {
    /// Registers the counters; prometheus-client appends the `_total` suffix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pyroscope_ebpf_container_id_cache_hit",
            "Container ID cache hits",
            self.hit.clone(),
        );
        registry.register(
            "pyroscope_ebpf_container_id_cache_miss",
            "Container ID cache misses",
            self.miss.clone(),
        );
    }
}

/// LRU of pid → container ID (`None` = host process), `container_id_cache_size` entries.
#[derive(Debug)]
pub struct ContainerIdCache {
    proc_root: PathBuf,
    cache: LruCache<u32, Option<String>>,
    metrics: ContainerIdCacheMetrics,
}

impl ContainerIdCache {
    /// Default `container_id_cache_size` of the reference.
    pub const DEFAULT_SIZE: usize = 64;

    /// A cache of `size` entries (at least one) reading from `proc_root` (normally `/proc`).
    pub fn new(
        proc_root: impl Into<PathBuf>,
        size: usize,
        metrics: ContainerIdCacheMetrics,
    ) -> Self {
        let cap = NonZeroUsize::new(size.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            proc_root: proc_root.into(),
            cache: LruCache::new(cap),
            metrics,
        }
    }

    /// The container ID of `pid`; `None` for host processes and pids that vanished (the
    /// latter are not cached).
    pub fn get(&mut self, pid: u32) -> Option<String> {
        if let Some(hit) = self.cache.get(&pid) {
            self.metrics.hit.inc();
            return hit.clone();
        }
        self.metrics.miss.inc();
        match read_container_id(&self.proc_root, pid) {
            Ok(id) => {
                self.cache.put(pid, id.clone());
                id
            }
            Err(err) => {
                tracing::debug!(pid, %err, "cannot read cgroup");
                None
            }
        }
    }

    /// Drops a dead pid.
    pub fn forget(&mut self, pid: u32) {
        self.cache.pop(&pid);
    }

    /// Number of cached pids.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id_from_path(&format!("/docker/{id}")),
            Some(id.as_str())
        );
        assert_eq!(container_id_from_path("/docker/abc"), None);
        assert_eq!(
            container_id_from_path(&format!("/x/crio-conmon-{id}.scope")),
            None
        );
    }

    #[test]
    fn normalize() {
        assert_eq!(
            normalize_container_id("docker://ABC").as_deref(),
            Some("abc")
        );
        assert_eq!(
            normalize_container_id("containerd://x").as_deref(),
            Some("x")
        );
        assert_eq!(normalize_container_id("cri-o://y").as_deref(), Some("y"));
        assert_eq!(normalize_container_id("z").as_deref(), Some("z"));
        assert_eq!(normalize_container_id(" "), None);
    }
}
