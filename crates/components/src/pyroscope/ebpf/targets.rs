//! Target matching of `pyroscope.ebpf`: which target (label set) a process's samples belong to.
//!
//! A target names its container through `__container_id__`, `__meta_docker_container_id` or
//! `__meta_kubernetes_pod_container_id` (runtime prefixes such as `docker://` stripped) or a
//! process directly through `__process_pid__`, which wins. A process whose container matches no
//! target goes to `default_target`, or nowhere when `targets_only` is set. Every target gets a
//! `service_name` (kept, or inferred from discovery meta labels), `__name__="process_cpu"` and,
//! when known, `__container_id__`.

use std::collections::{BTreeMap, HashMap};

use ebpf_probe::cgroup::normalize_container_id;

/// Labels naming a target's container, in order of preference.
pub const CONTAINER_ID_LABELS: [&str; 3] = [
    "__container_id__",
    "__meta_docker_container_id",
    "__meta_kubernetes_pod_container_id",
];
/// Label naming a target's process directly.
pub const PROCESS_PID_LABEL: &str = "__process_pid__";
/// The service name label every profile must carry.
pub const SERVICE_NAME_LABEL: &str = "service_name";
/// The pod annotation `pyroscope.io/service_name` as a Kubernetes discovery meta label.
pub const K8S_SERVICE_NAME_ANNOTATION: &str =
    "__meta_kubernetes_pod_annotation_pyroscope_io_service_name";
const K8S_NAMESPACE: &str = "__meta_kubernetes_namespace";
const K8S_CONTAINER_NAME: &str = "__meta_kubernetes_pod_container_name";
const DOCKER_CONTAINER_NAME: &str = "__meta_docker_container_name";
/// Metric name of CPU profiles.
pub const METRIC_NAME: &str = "process_cpu";

/// One target, ready to label profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Final labels: the target's labels plus `service_name`, `__name__` and, when the target
    /// names a container, `__container_id__`.
    pub labels: BTreeMap<String, String>,
    /// The normalized container ID the target names, if any.
    pub container_id: Option<String>,
    /// The pid the target names with `__process_pid__`, if any.
    pub pid: Option<u32>,
}

/// Where a process's samples go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Assignment {
    /// `targets[index]` (after discarding invalid ones).
    Target(usize),
    /// `default_target`.
    Default,
}

/// The service name a target would get without the component-ID fallback: `service_name` if
/// set, else the `pyroscope.io/service_name` pod annotation, else `namespace/container` from
/// Kubernetes meta labels, else the Docker container name.
pub fn infer_service_name(labels: &BTreeMap<String, String>) -> Option<String> {
    let get = |k: &str| labels.get(k).filter(|v| !v.is_empty());
    if let Some(v) = get(SERVICE_NAME_LABEL) {
        return Some(v.clone());
    }
    if let Some(v) = get(K8S_SERVICE_NAME_ANNOTATION) {
        return Some(v.clone());
    }
    if let (Some(ns), Some(c)) = (get(K8S_NAMESPACE), get(K8S_CONTAINER_NAME)) {
        return Some(format!("{ns}/{c}"));
    }
    get(DOCKER_CONTAINER_NAME).cloned()
}

/// The container ID a target names, normalized (prefix stripped, lowercase).
pub fn target_container_id(labels: &BTreeMap<String, String>) -> Option<String> {
    CONTAINER_ID_LABELS
        .iter()
        .filter_map(|k| labels.get(*k))
        .find_map(|v| normalize_container_id(v))
}

/// Builds a [`Target`] from discovery labels; `fallback_service_name` is used when nothing
/// names the service (the component ID for `default_target`). `None` when the target still
/// has no service name, or has an unparsable `__process_pid__`.
pub fn make_target(
    labels: &BTreeMap<String, String>,
    fallback_service_name: Option<&str>,
) -> Result<Target, String> {
    let service_name = infer_service_name(labels)
        .or_else(|| fallback_service_name.map(str::to_string))
        .ok_or_else(|| "target has no service_name and none can be inferred".to_string())?;
    let pid = match labels.get(PROCESS_PID_LABEL).filter(|v| !v.is_empty()) {
        Some(v) => Some(
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("invalid {PROCESS_PID_LABEL} {v:?}"))?,
        ),
        None => None,
    };
    let container_id = target_container_id(labels);
    let mut out = labels.clone();
    out.insert(SERVICE_NAME_LABEL.into(), service_name);
    out.insert("__name__".into(), METRIC_NAME.into());
    if let Some(cid) = &container_id {
        out.insert("__container_id__".into(), cid.clone());
    }
    Ok(Target {
        labels: out,
        container_id,
        pid,
    })
}

/// The targets of one configuration, indexed for lookups.
#[derive(Debug, Clone, Default)]
pub struct TargetSet {
    /// Valid targets, in input order.
    pub targets: Vec<Target>,
    /// `default_target`, or `None` when `targets_only`.
    pub default: Option<Target>,
    /// Targets dropped for lack of a service name (or a bad pid), with the reason.
    pub discarded: Vec<(BTreeMap<String, String>, String)>,
    by_container: HashMap<String, usize>,
    by_pid: HashMap<u32, usize>,
}

impl TargetSet {
    /// Indexes `targets`; the first target naming a container or pid wins over later ones.
    /// `component_id` is the service name of last resort for `default_target`.
    pub fn new(
        targets: &[BTreeMap<String, String>],
        default_target: &BTreeMap<String, String>,
        targets_only: bool,
        component_id: &str,
    ) -> Self {
        let mut set = TargetSet::default();
        for labels in targets {
            match make_target(labels, None) {
                Ok(t) => {
                    let idx = set.targets.len();
                    if let Some(pid) = t.pid {
                        set.by_pid.entry(pid).or_insert(idx);
                    } else if let Some(cid) = &t.container_id {
                        set.by_container.entry(cid.clone()).or_insert(idx);
                    }
                    set.targets.push(t);
                }
                Err(reason) => {
                    tracing::warn!(?labels, %reason, "pyroscope.ebpf: discarding target");
                    set.discarded.push((labels.clone(), reason));
                }
            }
        }
        if !targets_only {
            match make_target(default_target, Some(component_id)) {
                Ok(t) => set.default = Some(t),
                Err(reason) => {
                    tracing::warn!(%reason, "pyroscope.ebpf: invalid default_target");
                    set.discarded.push((default_target.clone(), reason));
                }
            }
        }
        set
    }

    /// Where a process goes, given its pid and container ID.
    pub fn assign(&self, pid: u32, container_id: Option<&str>) -> Option<Assignment> {
        if let Some(&i) = self.by_pid.get(&pid) {
            return Some(Assignment::Target(i));
        }
        if let Some(&i) = container_id.and_then(|c| self.by_container.get(c)) {
            return Some(Assignment::Target(i));
        }
        self.default.as_ref().map(|_| Assignment::Default)
    }

    /// The target of an assignment.
    pub fn get(&self, a: Assignment) -> Option<&Target> {
        match a {
            Assignment::Target(i) => self.targets.get(i),
            Assignment::Default => self.default.as_ref(),
        }
    }

    /// Whether any process can be profiled: a valid target, or `default_target`.
    pub fn has_any(&self) -> bool {
        !self.targets.is_empty() || self.default.is_some()
    }

    /// Whether some target names a pid directly (then every process must be asked about).
    pub fn has_pid_targets(&self) -> bool {
        !self.by_pid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn service_name_inference_order() {
        assert_eq!(
            infer_service_name(&m(&[
                ("service_name", "kept"),
                (K8S_SERVICE_NAME_ANNOTATION, "anno")
            ]))
            .as_deref(),
            Some("kept")
        );
        assert_eq!(
            infer_service_name(&m(&[
                (K8S_SERVICE_NAME_ANNOTATION, "anno"),
                (K8S_NAMESPACE, "ns"),
                (K8S_CONTAINER_NAME, "c")
            ]))
            .as_deref(),
            Some("anno")
        );
        assert_eq!(
            infer_service_name(&m(&[
                (K8S_NAMESPACE, "ns"),
                (K8S_CONTAINER_NAME, "c"),
                (DOCKER_CONTAINER_NAME, "/d")
            ]))
            .as_deref(),
            Some("ns/c")
        );
        assert_eq!(
            infer_service_name(&m(&[(K8S_NAMESPACE, "ns"), (DOCKER_CONTAINER_NAME, "/d")]))
                .as_deref(),
            Some("/d")
        );
        assert_eq!(infer_service_name(&m(&[("service_name", "")])), None);
        assert_eq!(infer_service_name(&m(&[("job", "x")])), None);
    }

    #[test]
    fn container_ids_from_any_label_with_prefixes_stripped() {
        let id = "ab".repeat(32);
        for label in CONTAINER_ID_LABELS {
            for prefix in ["", "docker://", "containerd://", "cri-o://"] {
                let t = make_target(
                    &m(&[(label, &format!("{prefix}{id}")), ("service_name", "s")]),
                    None,
                )
                .unwrap();
                assert_eq!(
                    t.container_id.as_deref(),
                    Some(id.as_str()),
                    "{label} {prefix}"
                );
                assert_eq!(t.labels["__container_id__"], id);
                assert_eq!(t.labels["__name__"], "process_cpu");
            }
        }
    }

    #[test]
    fn assignment_rules() {
        let set = TargetSet::new(
            &[
                m(&[("__meta_docker_container_id", "aaa"), ("service_name", "a")]),
                m(&[("__process_pid__", "42"), ("service_name", "p")]),
                m(&[("__container_id__", "bbb")]), // no service name: discarded
                m(&[("__container_id__", "aaa"), ("service_name", "dup")]),
            ],
            &m(&[("env", "x")]),
            false,
            "pyroscope.ebpf.default",
        );
        assert_eq!(set.targets.len(), 3);
        assert_eq!(set.discarded.len(), 1);
        assert_eq!(set.assign(1, Some("aaa")), Some(Assignment::Target(0)));
        assert_eq!(set.assign(42, Some("aaa")), Some(Assignment::Target(1)));
        assert_eq!(set.assign(7, Some("zzz")), Some(Assignment::Default));
        assert_eq!(set.assign(7, None), Some(Assignment::Default));
        let d = set.get(Assignment::Default).unwrap();
        assert_eq!(d.labels["service_name"], "pyroscope.ebpf.default");
        assert!(!d.labels.contains_key("__container_id__"));

        let only = TargetSet::new(
            &[m(&[("__container_id__", "aaa"), ("service_name", "a")])],
            &m(&[("service_name", "d")]),
            true,
            "x",
        );
        assert_eq!(only.assign(7, None), None);
        assert_eq!(only.assign(7, Some("aaa")), Some(Assignment::Target(0)));
    }

    #[test]
    fn bad_process_pid_is_discarded() {
        let set = TargetSet::new(
            &[m(&[("__process_pid__", "nope"), ("service_name", "s")])],
            &BTreeMap::new(),
            true,
            "x",
        );
        assert!(set.targets.is_empty());
        assert!(set.discarded[0].1.contains("__process_pid__"));
    }
}
