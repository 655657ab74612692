//! Label sets for every `discovery.kubernetes` role, named and valued exactly as Prometheus'
//! Kubernetes service discovery emits them (`__meta_kubernetes_*`).
//!
//! Every function here is pure: objects in, targets out. [`Snapshot`] holds the objects the
//! watches currently know about and [`build_targets`] turns them into the sorted target list.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::discovery::docker::sanitize_label_name;
use crate::discovery::target::Labels;

mod endpoints;
pub use endpoints::{endpoints_targets, endpointslice_targets};

/// `__meta_kubernetes_`.
pub const META: &str = "__meta_kubernetes_";
const ADDRESS: &str = "__address__";
const NAMESPACE: &str = "__meta_kubernetes_namespace";
const PRESENT: &str = "true";

/// The discovery roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Pod,
    Node,
    Service,
    Endpoints,
    EndpointSlice,
    Ingress,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Pod,
        Role::Node,
        Role::Service,
        Role::Endpoints,
        Role::EndpointSlice,
        Role::Ingress,
    ];

    /// The name used in River (`role = "pod"`) and in label names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pod => "pod",
            Role::Node => "node",
            Role::Service => "service",
            Role::Endpoints => "endpoints",
            Role::EndpointSlice => "endpointslice",
            Role::Ingress => "ingress",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which metadata of related objects is attached to the targets (`attach_metadata`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attach {
    pub node: bool,
    pub namespace: bool,
}

/// Everything the watches know, keyed by `namespace/name` (or `name` for cluster objects).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub pods: BTreeMap<String, Pod>,
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    pub endpoints: BTreeMap<String, Endpoints>,
    pub endpointslices: BTreeMap<String, EndpointSlice>,
    pub ingresses: BTreeMap<String, Ingress>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// Bumped whenever an object that is not of the role's own kind changes (nodes, namespaces,
    /// services or pods that other objects' labels draw from): cached targets are then stale.
    pub aux_gen: u64,
}

/// The key of an object in a [`Snapshot`] map.
pub fn object_key(meta: &ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", meta.name.as_deref().unwrap_or("")),
        _ => meta.name.clone().unwrap_or_default(),
    }
}

fn join_host_port(host: &str, port: impl std::fmt::Display) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn put(l: &mut Labels, k: impl Into<String>, v: impl Into<String>) {
    l.insert(k.into(), v.into());
}

/// `__meta_kubernetes_<role>_label_*`, `_labelpresent_*`, `_annotation_*`, `_annotationpresent_*`.
fn add_meta_maps(l: &mut Labels, meta: &ObjectMeta, kind: &str) {
    for (k, v) in meta.labels.iter().flatten() {
        let n = sanitize_label_name(k);
        put(l, format!("{META}{kind}_label_{n}"), v.as_str());
        put(l, format!("{META}{kind}_labelpresent_{n}"), PRESENT);
    }
    for (k, v) in meta.annotations.iter().flatten() {
        let n = sanitize_label_name(k);
        put(l, format!("{META}{kind}_annotation_{n}"), v.as_str());
        put(l, format!("{META}{kind}_annotationpresent_{n}"), PRESENT);
    }
}

/// `__meta_kubernetes_<kind>_name` plus the label and annotation maps.
fn add_object_meta(l: &mut Labels, meta: &ObjectMeta, kind: &str) {
    put(
        l,
        format!("{META}{kind}_name"),
        meta.name.as_deref().unwrap_or(""),
    );
    add_meta_maps(l, meta, kind);
}

fn add_namespace_meta(l: &mut Labels, snap: &Snapshot, attach: Attach, namespace: &str) {
    if !attach.namespace {
        return;
    }
    if let Some(ns) = snap.namespaces.get(namespace) {
        add_meta_maps(l, &ns.metadata, "namespace");
    }
}

fn add_node_meta(l: &mut Labels, snap: &Snapshot, attach: Attach, node: &str) {
    if !attach.node || node.is_empty() {
        return;
    }
    if let Some(n) = snap.nodes.get(node) {
        add_object_meta(l, &n.metadata, "node");
    }
}

// ---------------------------------------------------------------------------------------------
// pod

/// `Ready` condition status, lower-cased; `unknown` without one.
fn pod_ready(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.to_lowercase())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The pod-level labels (without the namespace), shared by the pod and endpoints roles.
pub fn pod_labels(pod: &Pod) -> Labels {
    let mut l = Labels::new();
    let status = pod.status.clone().unwrap_or_default();
    let m = &pod.metadata;
    put(
        &mut l,
        format!("{META}pod_name"),
        m.name.as_deref().unwrap_or(""),
    );
    put(
        &mut l,
        format!("{META}pod_ip"),
        status.pod_ip.unwrap_or_default(),
    );
    put(&mut l, format!("{META}pod_ready"), pod_ready(pod));
    put(
        &mut l,
        format!("{META}pod_phase"),
        status.phase.unwrap_or_default(),
    );
    put(
        &mut l,
        format!("{META}pod_node_name"),
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
    );
    put(
        &mut l,
        format!("{META}pod_host_ip"),
        status.host_ip.unwrap_or_default(),
    );
    put(
        &mut l,
        format!("{META}pod_uid"),
        m.uid.as_deref().unwrap_or(""),
    );
    if let Some(owner) = m
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        if !owner.kind.is_empty() {
            put(
                &mut l,
                format!("{META}pod_controller_kind"),
                owner.kind.as_str(),
            );
        }
        if !owner.name.is_empty() {
            put(
                &mut l,
                format!("{META}pod_controller_name"),
                owner.name.as_str(),
            );
        }
    }
    add_meta_maps(&mut l, m, "pod");
    l
}

fn container_id(pod: &Pod, name: &str, init: bool) -> String {
    let Some(status) = &pod.status else {
        return String::new();
    };
    let list = if init {
        &status.init_container_statuses
    } else {
        &status.container_statuses
    };
    list.iter()
        .flatten()
        .find(|s| s.name == name)
        .and_then(|s| s.container_id.clone())
        .unwrap_or_default()
}

/// The pod role's targets for one pod: one per container port, or one per container without
/// ports. A pod without an IP has none.
pub fn pod_targets(pod: &Pod, snap: &Snapshot, attach: Attach) -> Vec<Labels> {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    if ip.is_empty() {
        return Vec::new();
    }
    let mut common = pod_labels(pod);
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    put(&mut common, NAMESPACE, namespace.as_str());
    add_namespace_meta(&mut common, snap, attach, &namespace);
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    add_node_meta(&mut common, snap, attach, &node);

    let mut out = Vec::new();
    let Some(spec) = &pod.spec else {
        return out;
    };
    let containers = spec
        .containers
        .iter()
        .map(|c| (c, false))
        .chain(spec.init_containers.iter().flatten().map(|c| (c, true)));
    for (c, init) in containers {
        let mut base = common.clone();
        put(
            &mut base,
            format!("{META}pod_container_name"),
            c.name.as_str(),
        );
        put(
            &mut base,
            format!("{META}pod_container_id"),
            container_id(pod, &c.name, init),
        );
        put(
            &mut base,
            format!("{META}pod_container_image"),
            c.image.as_deref().unwrap_or(""),
        );
        put(
            &mut base,
            format!("{META}pod_container_init"),
            init.to_string(),
        );
        let ports = c.ports.as_deref().unwrap_or(&[]);
        if ports.is_empty() {
            put(&mut base, ADDRESS, ip.as_str());
            out.push(base);
            continue;
        }
        for p in ports {
            let mut t = base.clone();
            put(&mut t, ADDRESS, join_host_port(&ip, p.container_port));
            put(
                &mut t,
                format!("{META}pod_container_port_name"),
                p.name.as_deref().unwrap_or(""),
            );
            put(
                &mut t,
                format!("{META}pod_container_port_number"),
                p.container_port.to_string(),
            );
            put(
                &mut t,
                format!("{META}pod_container_port_protocol"),
                p.protocol.as_deref().unwrap_or(""),
            );
            out.push(t);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// node

const NODE_ADDRESS_ORDER: [&str; 6] = [
    "InternalIP",
    "InternalDNS",
    "ExternalIP",
    "ExternalDNS",
    "LegacyHostIP",
    "Hostname",
];

/// The node role's target: the preferred address at the kubelet port.
pub fn node_targets(node: &Node) -> Vec<Labels> {
    let status = node.status.clone().unwrap_or_default();
    let addresses = status.addresses.unwrap_or_default();
    let mut by_type: BTreeMap<&str, &str> = BTreeMap::new();
    for a in &addresses {
        by_type
            .entry(a.type_.as_str())
            .or_insert(a.address.as_str());
    }
    let Some(addr) = NODE_ADDRESS_ORDER
        .iter()
        .find_map(|t| by_type.get(t).copied())
    else {
        return Vec::new();
    };
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port)
        .unwrap_or(10250);
    let mut l = Labels::new();
    add_object_meta(&mut l, &node.metadata, "node");
    put(
        &mut l,
        format!("{META}node_provider_id"),
        node.spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default(),
    );
    for (t, a) in &by_type {
        put(
            &mut l,
            format!("{META}node_address_{}", sanitize_label_name(t)),
            *a,
        );
    }
    put(
        &mut l,
        "instance",
        node.metadata.name.as_deref().unwrap_or(""),
    );
    put(&mut l, ADDRESS, join_host_port(addr, port));
    vec![l]
}

// ---------------------------------------------------------------------------------------------
// service

fn service_common(svc: &Service) -> Labels {
    let mut l = Labels::new();
    put(
        &mut l,
        NAMESPACE,
        svc.metadata.namespace.as_deref().unwrap_or(""),
    );
    add_object_meta(&mut l, &svc.metadata, "service");
    l
}

/// The service role's targets: one per service port, addressed by its cluster DNS name.
pub fn service_targets(svc: &Service, snap: &Snapshot, attach: Attach) -> Vec<Labels> {
    let mut common = service_common(svc);
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    add_namespace_meta(&mut common, snap, attach, &namespace);
    let spec = svc.spec.clone().unwrap_or_default();
    let typ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".to_owned());
    let host = format!(
        "{}.{}.svc",
        svc.metadata.name.as_deref().unwrap_or(""),
        namespace
    );
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let mut t = common.clone();
        put(&mut t, ADDRESS, join_host_port(&host, p.port));
        put(
            &mut t,
            format!("{META}service_port_name"),
            p.name.as_deref().unwrap_or(""),
        );
        put(
            &mut t,
            format!("{META}service_port_number"),
            p.port.to_string(),
        );
        put(
            &mut t,
            format!("{META}service_port_protocol"),
            p.protocol.as_deref().unwrap_or(""),
        );
        put(&mut t, format!("{META}service_type"), typ.as_str());
        if typ == "ExternalName" {
            put(
                &mut t,
                format!("{META}service_external_name"),
                spec.external_name.as_deref().unwrap_or(""),
            );
        } else {
            put(
                &mut t,
                format!("{META}service_cluster_ip"),
                spec.cluster_ip.as_deref().unwrap_or(""),
            );
        }
        out.push(t);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// ingress

/// The ingress role's targets: one per rule host × path.
pub fn ingress_targets(ing: &Ingress, snap: &Snapshot, attach: Attach) -> Vec<Labels> {
    let namespace = ing.metadata.namespace.clone().unwrap_or_default();
    let mut common = Labels::new();
    put(&mut common, NAMESPACE, namespace.as_str());
    add_object_meta(&mut common, &ing.metadata, "ingress");
    add_namespace_meta(&mut common, snap, attach, &namespace);
    let spec = ing.spec.clone().unwrap_or_default();
    let class = spec.ingress_class_name.clone().or_else(|| {
        ing.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/ingress.class").cloned())
    });
    if let Some(c) = class {
        put(&mut common, format!("{META}ingress_class_name"), c);
    }
    let tls_hosts: Vec<&str> = spec
        .tls
        .iter()
        .flatten()
        .flat_map(|t| t.hosts.iter().flatten().map(String::as_str))
        .collect();
    let mut out = Vec::new();
    for rule in spec.rules.iter().flatten() {
        let host = rule.host.clone().unwrap_or_default();
        let scheme = if tls_hosts.iter().any(|p| host_matches(p, &host)) {
            "https"
        } else {
            "http"
        };
        let mut paths: Vec<String> = rule
            .http
            .iter()
            .flat_map(|h| h.paths.iter().map(|p| p.path.clone().unwrap_or_default()))
            .map(|p| if p.is_empty() { "/".to_owned() } else { p })
            .collect();
        if paths.is_empty() {
            paths.push("/".to_owned());
        }
        for path in paths {
            let mut t = common.clone();
            put(&mut t, ADDRESS, host.as_str());
            put(&mut t, format!("{META}ingress_scheme"), scheme);
            put(&mut t, format!("{META}ingress_host"), host.as_str());
            put(&mut t, format!("{META}ingress_path"), path);
            out.push(t);
        }
    }
    out
}

/// A TLS host pattern (possibly `*.example.com`) matches a rule host.
fn host_matches(pattern: &str, host: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        host.split_once('.').is_some_and(|(_, rest)| rest == suffix)
    } else {
        pattern == host
    }
}

/// Targets per object, reused while the object's resource version and [`Snapshot::aux_gen`]
/// stay the same (rebuilding 20,000 label sets on every event would dominate the latency).
#[derive(Debug, Default)]
pub struct TargetCache {
    aux_gen: u64,
    per_object: std::collections::HashMap<String, (String, Vec<Labels>)>,
}

fn cached<K: k8s_openapi::Metadata<Ty = ObjectMeta>>(
    map: &BTreeMap<String, K>,
    valid: bool,
    cache: &mut TargetCache,
    out: &mut Vec<Labels>,
    build: impl Fn(&K) -> Vec<Labels>,
) {
    let mut next = std::collections::HashMap::with_capacity(map.len());
    for (key, obj) in map {
        let rv = obj.metadata().resource_version.clone().unwrap_or_default();
        let targets = match cache.per_object.remove(key) {
            Some((old_rv, t)) if valid && old_rv == rv && !rv.is_empty() => t,
            _ => {
                let mut t = build(obj);
                t.sort();
                t
            }
        };
        out.extend(targets.iter().cloned());
        next.insert(key.clone(), (rv, targets));
    }
    cache.per_object = next;
}

/// All targets of a role, ordered by object (`namespace/name`), then sorted within each object;
/// unchanged objects reuse their targets from `cache`.
pub fn build_targets_cached(
    role: Role,
    snap: &Snapshot,
    attach: Attach,
    cache: &mut TargetCache,
) -> Vec<Labels> {
    let valid = cache.aux_gen == snap.aux_gen;
    cache.aux_gen = snap.aux_gen;
    let mut out = Vec::new();
    match role {
        Role::Pod => cached(&snap.pods, valid, cache, &mut out, |p| {
            pod_targets(p, snap, attach)
        }),
        Role::Node => cached(&snap.nodes, valid, cache, &mut out, node_targets),
        Role::Service => cached(&snap.services, valid, cache, &mut out, |s| {
            service_targets(s, snap, attach)
        }),
        Role::Endpoints => cached(&snap.endpoints, valid, cache, &mut out, |e| {
            endpoints_targets(e, snap, attach)
        }),
        Role::EndpointSlice => cached(&snap.endpointslices, valid, cache, &mut out, |e| {
            endpointslice_targets(e, snap, attach)
        }),
        Role::Ingress => cached(&snap.ingresses, valid, cache, &mut out, |i| {
            ingress_targets(i, snap, attach)
        }),
    }
    out
}

/// All targets of a role, sorted.
pub fn build_targets(role: Role, snap: &Snapshot, attach: Attach) -> Vec<Labels> {
    let mut out = Vec::new();
    match role {
        Role::Pod => snap
            .pods
            .values()
            .for_each(|p| out.extend(pod_targets(p, snap, attach))),
        Role::Node => snap
            .nodes
            .values()
            .for_each(|n| out.extend(node_targets(n))),
        Role::Service => snap
            .services
            .values()
            .for_each(|s| out.extend(service_targets(s, snap, attach))),
        Role::Endpoints => snap
            .endpoints
            .values()
            .for_each(|e| out.extend(endpoints_targets(e, snap, attach))),
        Role::EndpointSlice => snap
            .endpointslices
            .values()
            .for_each(|e| out.extend(endpointslice_targets(e, snap, attach))),
        Role::Ingress => snap
            .ingresses
            .values()
            .for_each(|i| out.extend(ingress_targets(i, snap, attach))),
    }
    out.sort();
    out
}
