//! `discovery.docker` target building on synthetic engine data: the cases a single real engine
//! setup does not reach easily (IPv6-only endpoints, UDP-only containers, chains of
//! `container:<id>` network modes, containers without names, network ordering).

use std::collections::HashMap;

use bollard::models::{
    ContainerSummary, ContainerSummaryHostConfig, ContainerSummaryNetworkSettings,
    EndpointSettings, Network, PortSummary, PortSummaryTypeEnum,
};
use components::discovery::docker::{build_targets, sanitize_label_name, TargetOptions};

fn opts() -> TargetOptions {
    TargetOptions {
        port: 80,
        host_networking_host: "localhost".into(),
        match_first_network: true,
    }
}

fn ep(net_id: &str, ip: &str) -> EndpointSettings {
    EndpointSettings {
        network_id: Some(net_id.into()),
        ip_address: Some(ip.into()),
        ..Default::default()
    }
}

fn container(
    id: &str,
    mode: &str,
    nets: &[(&str, EndpointSettings)],
    ports: Vec<PortSummary>,
) -> ContainerSummary {
    ContainerSummary {
        id: Some(id.into()),
        names: Some(vec![format!("/{id}-name")]),
        host_config: Some(ContainerSummaryHostConfig {
            network_mode: Some(mode.into()),
            ..Default::default()
        }),
        network_settings: Some(ContainerSummaryNetworkSettings {
            networks: Some(
                nets.iter()
                    .map(|(n, e)| (n.to_string(), e.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
        }),
        ports: Some(ports),
        ..Default::default()
    }
}

fn network(id: &str, name: &str) -> Network {
    Network {
        id: Some(id.into()),
        name: Some(name.into()),
        scope: Some("local".into()),
        internal: Some(false),
        ingress: Some(false),
        labels: Some(HashMap::from([("a.b/c".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

fn addrs(c: &[ContainerSummary], nets: &[Network], o: &TargetOptions) -> Vec<(String, String)> {
    build_targets(c, nets, o)
        .into_iter()
        .map(|t| {
            (
                t["__meta_docker_container_id"].clone(),
                t["__address__"].clone(),
            )
        })
        .collect()
}

#[test]
fn ipv6_address_is_bracketed() {
    let c = container(
        "a",
        "n6",
        &[("n6", ep("id6", "fd00::2"))],
        vec![PortSummary {
            private_port: 8080,
            typ: Some(PortSummaryTypeEnum::TCP),
            ..Default::default()
        }],
    );
    assert_eq!(
        addrs(&[c], &[network("id6", "n6")], &opts()),
        vec![("a".to_string(), "[fd00::2]:8080".to_string())]
    );
}

#[test]
fn udp_only_container_uses_port_argument() {
    let c = container(
        "a",
        "bridge",
        &[("bridge", ep("b", "172.17.0.5"))],
        vec![PortSummary {
            private_port: 53,
            typ: Some(PortSummaryTypeEnum::UDP),
            ..Default::default()
        }],
    );
    let t = build_targets(&[c], &[network("b", "bridge")], &opts());
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["__address__"], "172.17.0.5:80");
    assert!(!t[0].contains_key("__meta_docker_port_private"));
    assert_eq!(t[0]["__meta_docker_network_label_a_b_c"], "v");
    assert_eq!(t[0]["__meta_docker_network_name"], "bridge");
}

#[test]
fn container_network_mode_chain_is_followed() {
    let a = container("a", "net", &[("net", ep("n", "10.9.0.2"))], vec![]);
    let b = container("b", "container:a", &[], vec![]);
    let c = container("c", "container:b", &[], vec![]);
    // Unknown target container: no networks, no target.
    let d = container("d", "container:zzz", &[], vec![]);
    let got = addrs(&[c, b, a, d], &[network("n", "net")], &opts());
    assert_eq!(
        got,
        vec![
            ("a".to_string(), "10.9.0.2:80".to_string()),
            ("b".to_string(), "10.9.0.2:80".to_string()),
            ("c".to_string(), "10.9.0.2:80".to_string()),
        ]
    );
}

#[test]
fn match_first_network_takes_first_name() {
    let c = container(
        "a",
        "zeta",
        &[
            ("zeta", ep("z", "10.1.0.2")),
            ("alpha", ep("al", "10.2.0.2")),
        ],
        vec![],
    );
    let nets = [network("z", "zeta"), network("al", "alpha")];
    assert_eq!(
        addrs(std::slice::from_ref(&c), &nets, &opts()),
        vec![("a".to_string(), "10.2.0.2:80".to_string())]
    );
    let all = TargetOptions {
        match_first_network: false,
        ..opts()
    };
    assert_eq!(
        addrs(&[c], &nets, &all),
        vec![
            ("a".to_string(), "10.1.0.2:80".to_string()),
            ("a".to_string(), "10.2.0.2:80".to_string()),
        ]
    );
}

#[test]
fn host_mode_and_nameless_containers() {
    let h = container("h", "host", &[("host", ep("hostid", ""))], vec![]);
    let mut nameless = container("x", "bridge", &[("bridge", ep("b", "172.17.0.9"))], vec![]);
    nameless.names = Some(vec![]);
    let o = TargetOptions {
        host_networking_host: "my-host".into(),
        ..opts()
    };
    assert_eq!(
        addrs(&[h, nameless], &[], &o),
        vec![("h".to_string(), "my-host".to_string())]
    );
}

#[test]
fn published_port_labels() {
    let c = container(
        "a",
        "bridge",
        &[("bridge", ep("b", "172.17.0.3"))],
        vec![PortSummary {
            ip: Some("0.0.0.0".into()),
            private_port: 80,
            public_port: Some(8081),
            typ: Some(PortSummaryTypeEnum::TCP),
        }],
    );
    let t = build_targets(&[c], &[], &opts());
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["__meta_docker_port_private"], "80");
    assert_eq!(t[0]["__meta_docker_port_public"], "8081");
    assert_eq!(t[0]["__meta_docker_port_public_ip"], "0.0.0.0");
    assert_eq!(t[0]["__address__"], "172.17.0.3:80");
}

#[test]
fn sanitizing() {
    assert_eq!(
        sanitize_label_name("com.example/app-name"),
        "com_example_app_name"
    );
    assert_eq!(sanitize_label_name("émoji"), "_moji");
    assert_eq!(sanitize_label_name("ok_9"), "ok_9");
}
