//! The `endpoints` and `endpointslice` roles' label sets: one target per address × port, plus
//! the container ports of the backing pods that no endpoint port covers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::*;

/// A pod seen through an endpoint address, with the container ports already covered.
struct SeenPod<'a> {
    pod: &'a Pod,
    covered: Vec<i32>,
}

/// Pod labels plus the container labels of the container exposing `port`, if any.
fn pod_port_labels(t: &mut Labels, pod: &Pod, port: Option<i32>) {
    t.extend(pod_labels(pod));
    let Some(port) = port else { return };
    let Some(spec) = &pod.spec else { return };
    let containers = spec
        .containers
        .iter()
        .map(|c| (c, false))
        .chain(spec.init_containers.iter().flatten().map(|c| (c, true)));
    for (c, init) in containers {
        if let Some(cp) = c.ports.iter().flatten().find(|p| p.container_port == port) {
            put(t, format!("{META}pod_container_name"), c.name.as_str());
            put(
                t,
                format!("{META}pod_container_image"),
                c.image.as_deref().unwrap_or(""),
            );
            put(
                t,
                format!("{META}pod_container_port_name"),
                cp.name.as_deref().unwrap_or(""),
            );
            put(
                t,
                format!("{META}pod_container_port_number"),
                port.to_string(),
            );
            put(
                t,
                format!("{META}pod_container_port_protocol"),
                cp.protocol.as_deref().unwrap_or(""),
            );
            put(t, format!("{META}pod_container_init"), init.to_string());
            return;
        }
    }
}

/// Targets for the container ports of seen pods that no endpoint port covered.
fn uncovered_pod_targets(common: &Labels, seen: &BTreeMap<String, SeenPod<'_>>) -> Vec<Labels> {
    let mut out = Vec::new();
    for sp in seen.values() {
        let ip = sp
            .pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        if ip.is_empty() {
            continue;
        }
        let Some(spec) = &sp.pod.spec else { continue };
        let containers = spec
            .containers
            .iter()
            .map(|c| (c, false))
            .chain(spec.init_containers.iter().flatten().map(|c| (c, true)));
        for (c, init) in containers {
            for cp in c.ports.iter().flatten() {
                if sp.covered.contains(&cp.container_port) {
                    continue;
                }
                let mut t = common.clone();
                t.extend(pod_labels(sp.pod));
                put(&mut t, ADDRESS, join_host_port(&ip, cp.container_port));
                put(&mut t, format!("{META}pod_container_name"), c.name.as_str());
                put(
                    &mut t,
                    format!("{META}pod_container_image"),
                    c.image.as_deref().unwrap_or(""),
                );
                put(
                    &mut t,
                    format!("{META}pod_container_port_name"),
                    cp.name.as_deref().unwrap_or(""),
                );
                put(
                    &mut t,
                    format!("{META}pod_container_port_number"),
                    cp.container_port.to_string(),
                );
                put(
                    &mut t,
                    format!("{META}pod_container_port_protocol"),
                    cp.protocol.as_deref().unwrap_or(""),
                );
                put(
                    &mut t,
                    format!("{META}pod_container_init"),
                    init.to_string(),
                );
                out.push(t);
            }
        }
    }
    out
}

fn service_meta_labels(l: &mut Labels, snap: &Snapshot, namespace: &str, name: &str) {
    if let Some(svc) = snap.services.get(&format!("{namespace}/{name}")) {
        add_object_meta(l, &svc.metadata, "service");
    }
}

/// The endpoints role's targets for one Endpoints object.
pub fn endpoints_targets(eps: &Endpoints, snap: &Snapshot, attach: Attach) -> Vec<Labels> {
    let namespace = eps.metadata.namespace.clone().unwrap_or_default();
    let name = eps.metadata.name.clone().unwrap_or_default();
    let mut common = Labels::new();
    put(&mut common, NAMESPACE, namespace.as_str());
    add_object_meta(&mut common, &eps.metadata, "endpoints");
    service_meta_labels(&mut common, snap, &namespace, &name);
    add_namespace_meta(&mut common, snap, attach, &namespace);

    let mut out = Vec::new();
    let mut seen: BTreeMap<String, SeenPod<'_>> = BTreeMap::new();
    for subset in eps.subsets.iter().flatten() {
        for port in subset.ports.iter().flatten() {
            let addrs = subset.addresses.iter().flatten().map(|a| (a, true)).chain(
                subset
                    .not_ready_addresses
                    .iter()
                    .flatten()
                    .map(|a| (a, false)),
            );
            for (addr, ready) in addrs {
                let mut t = common.clone();
                put(&mut t, ADDRESS, join_host_port(&addr.ip, port.port));
                put(
                    &mut t,
                    format!("{META}endpoint_port_name"),
                    port.name.as_deref().unwrap_or(""),
                );
                put(
                    &mut t,
                    format!("{META}endpoint_port_protocol"),
                    port.protocol.as_deref().unwrap_or(""),
                );
                put(&mut t, format!("{META}endpoint_ready"), ready.to_string());
                if let Some(h) = &addr.hostname {
                    put(&mut t, format!("{META}endpoint_hostname"), h.as_str());
                }
                if let Some(n) = &addr.node_name {
                    put(&mut t, format!("{META}endpoint_node_name"), n.as_str());
                    add_node_meta(&mut t, snap, attach, n);
                }
                if let Some(r) = &addr.target_ref {
                    put(
                        &mut t,
                        format!("{META}endpoint_address_target_kind"),
                        r.kind.as_deref().unwrap_or(""),
                    );
                    put(
                        &mut t,
                        format!("{META}endpoint_address_target_name"),
                        r.name.as_deref().unwrap_or(""),
                    );
                    if r.kind.as_deref() == Some("Pod") {
                        let key = format!(
                            "{}/{}",
                            r.namespace.as_deref().unwrap_or(&namespace),
                            r.name.as_deref().unwrap_or("")
                        );
                        if let Some(pod) = snap.pods.get(&key) {
                            pod_port_labels(&mut t, pod, Some(port.port));
                            seen.entry(key)
                                .or_insert(SeenPod {
                                    pod,
                                    covered: Vec::new(),
                                })
                                .covered
                                .push(port.port);
                        }
                    }
                }
                out.push(t);
            }
        }
    }
    out.extend(uncovered_pod_targets(&common, &seen));
    out
}

/// The endpointslice role's targets for one EndpointSlice object.
pub fn endpointslice_targets(es: &EndpointSlice, snap: &Snapshot, attach: Attach) -> Vec<Labels> {
    let namespace = es.metadata.namespace.clone().unwrap_or_default();
    let mut common = Labels::new();
    put(&mut common, NAMESPACE, namespace.as_str());
    add_object_meta(&mut common, &es.metadata, "endpointslice");
    put(
        &mut common,
        format!("{META}endpointslice_address_type"),
        es.address_type.as_str(),
    );
    if let Some(svc) = es
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name"))
    {
        service_meta_labels(&mut common, snap, &namespace, svc);
    }
    add_namespace_meta(&mut common, snap, attach, &namespace);

    let mut out = Vec::new();
    let mut seen: BTreeMap<String, SeenPod<'_>> = BTreeMap::new();
    for port in es.ports.iter().flatten() {
        for ep in &es.endpoints {
            for addr in &ep.addresses {
                let mut t = common.clone();
                let p = port.port.unwrap_or_default();
                put(&mut t, ADDRESS, join_host_port(addr, p));
                put(&mut t, format!("{META}endpointslice_port"), p.to_string());
                put(
                    &mut t,
                    format!("{META}endpointslice_port_name"),
                    port.name.as_deref().unwrap_or(""),
                );
                put(
                    &mut t,
                    format!("{META}endpointslice_port_protocol"),
                    port.protocol.as_deref().unwrap_or(""),
                );
                if let Some(ap) = &port.app_protocol {
                    put(
                        &mut t,
                        format!("{META}endpointslice_port_app_protocol"),
                        ap.as_str(),
                    );
                }
                if let Some(c) = &ep.conditions {
                    if let Some(r) = c.ready {
                        put(
                            &mut t,
                            format!("{META}endpointslice_endpoint_conditions_ready"),
                            r.to_string(),
                        );
                    }
                    if let Some(s) = c.serving {
                        put(
                            &mut t,
                            format!("{META}endpointslice_endpoint_conditions_serving"),
                            s.to_string(),
                        );
                    }
                    if let Some(x) = c.terminating {
                        put(
                            &mut t,
                            format!("{META}endpointslice_endpoint_conditions_terminating"),
                            x.to_string(),
                        );
                    }
                }
                if let Some(h) = &ep.hostname {
                    put(
                        &mut t,
                        format!("{META}endpointslice_endpoint_hostname"),
                        h.as_str(),
                    );
                }
                if let Some(n) = &ep.node_name {
                    put(
                        &mut t,
                        format!("{META}endpointslice_endpoint_node_name"),
                        n.as_str(),
                    );
                    add_node_meta(&mut t, snap, attach, n);
                }
                if let Some(z) = &ep.zone {
                    put(
                        &mut t,
                        format!("{META}endpointslice_endpoint_zone"),
                        z.as_str(),
                    );
                }
                for (k, v) in ep.deprecated_topology.iter().flatten() {
                    let n = sanitize_label_name(k);
                    put(
                        &mut t,
                        format!("{META}endpointslice_endpoint_topology_{n}"),
                        v.as_str(),
                    );
                    put(
                        &mut t,
                        format!("{META}endpointslice_endpoint_topology_present_{n}"),
                        PRESENT,
                    );
                }
                if let Some(r) = &ep.target_ref {
                    put(
                        &mut t,
                        format!("{META}endpointslice_address_target_kind"),
                        r.kind.as_deref().unwrap_or(""),
                    );
                    put(
                        &mut t,
                        format!("{META}endpointslice_address_target_name"),
                        r.name.as_deref().unwrap_or(""),
                    );
                    if r.kind.as_deref() == Some("Pod") {
                        let key = format!(
                            "{}/{}",
                            r.namespace.as_deref().unwrap_or(&namespace),
                            r.name.as_deref().unwrap_or("")
                        );
                        if let Some(pod) = snap.pods.get(&key) {
                            pod_port_labels(&mut t, pod, port.port);
                            seen.entry(key)
                                .or_insert(SeenPod {
                                    pod,
                                    covered: Vec::new(),
                                })
                                .covered
                                .push(p);
                        }
                    }
                }
                out.push(t);
            }
        }
    }
    out.extend(uncovered_pod_targets(&common, &seen));
    out
}
