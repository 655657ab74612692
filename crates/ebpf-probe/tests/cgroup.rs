//! Table test of container-ID extraction over the cgroup layouts of docker, containerd, cri-o,
//! podman and kubelet (cgroupfs and systemd drivers, cgroup v1 and v2), plus the LRU cache.

use ebpf_probe::cgroup::{
    container_id_from_cgroup, normalize_container_id, ContainerIdCache, ContainerIdCacheMetrics,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

const ID: &str = "3f4b6a8f1c2d9e0b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f40";
const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn cgroup_layouts() {
    let pod = "pod6f1c3b2a-8d4e-4f5a-9b0c-1d2e3f4a5b6c";
    let pod_us = "pod6f1c3b2a_8d4e_4f5a_9b0c_1d2e3f4a5b6c";
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("docker v1 cgroupfs", format!("12:pids:/docker/{ID}\n11:cpu,cpuacct:/docker/{ID}\n"), Some(ID)),
        ("docker v2 cgroupfs", format!("0::/docker/{ID}\n"), Some(ID)),
        ("docker v2 systemd scope", format!("0::/system.slice/docker-{ID}.scope\n"), Some(ID)),
        ("docker v1 systemd scope", format!("4:memory:/system.slice/docker-{ID}.scope\n1:name=systemd:/system.slice/docker-{ID}.scope\n"), Some(ID)),
        ("docker trailing init", format!("0::/system.slice/docker-{ID}.scope/init\n"), Some(ID)),
        ("docker cgroupfs trailing init", format!("0::/docker/{ID}/init\n"), Some(ID)),
        ("kubepods cgroupfs burstable", format!("0::/kubepods/burstable/{pod}/{ID}\n"), Some(ID)),
        ("kubepods cgroupfs besteffort v1", format!("8:cpuset:/kubepods/besteffort/{pod}/{ID}\n"), Some(ID)),
        ("kubepods cgroupfs guaranteed", format!("0::/kubepods/{pod}/{ID}\n"), Some(ID)),
        ("kubepods systemd containerd", format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-{pod_us}.slice/cri-containerd-{ID}.scope\n"), Some(ID)),
        ("kubepods systemd cri-o", format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-{pod_us}.slice/crio-{ID}.scope\n"), Some(ID)),
        ("kubepods systemd docker", format!("11:devices:/kubepods.slice/kubepods-{pod_us}.slice/docker-{ID}.scope\n"), Some(ID)),
        ("containerd colon form (kind)", format!("0::/system.slice/containerd.service/kubepods-burstable-{pod_us}.slice:cri-containerd:{ID}\n"), Some(ID)),
        ("cri-o scope with init", format!("0::/kubepods.slice/kubepods-{pod_us}.slice/crio-{ID}.scope/init\n"), Some(ID)),
        ("podman libpod", format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope\n"), Some(ID)),
        ("nested docker in docker: innermost wins", format!("0::/docker/{ID2}/docker/{ID}\n"), Some(ID)),
        ("v1 mixed: first named hierarchy without id", format!("1:name=systemd:/\n2:cpu:/docker/{ID}\n"), Some(ID)),
        ("cri-o conmon is not a container", format!("0::/kubepods.slice/kubepods-{pod_us}.slice/crio-conmon-{ID}.scope\n"), None),
        ("user session", "0::/user.slice/user-1000.slice/session-3.scope\n".to_string(), None),
        ("docker daemon itself", "0::/system.slice/docker.service\n".to_string(), None),
        ("containerd daemon itself", "0::/system.slice/containerd.service\n".to_string(), None),
        ("root cgroup", "0::/\n".to_string(), None),
        ("init scope", "0::/init.scope\n".to_string(), None),
        ("pod slice only", format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-{pod_us}.slice\n"), None),
        ("short hex is not an id", "0::/docker/abcdef0123\n".to_string(), None),
        ("v1 host", "12:pids:/user.slice/user-0.slice\n11:memory:/user.slice\n0::/user.slice\n".to_string(), None),
        ("empty", String::new(), None),
    ];
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (name, content, want) in &cases {
        let got = container_id_from_cgroup(content);
        if got.as_deref() != *want {
            failures.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn target_id_normalisation() {
    for (input, want) in [
        (format!("docker://{ID}"), ID),
        (format!("containerd://{ID}"), ID),
        (format!("cri-o://{ID}"), ID),
        (ID.to_uppercase(), ID),
        (ID.to_string(), ID),
    ] {
        assert_eq!(
            normalize_container_id(&input).as_deref(),
            Some(want),
            "{input}"
        );
    }
    assert_eq!(normalize_container_id("docker://"), None);
}

#[test]
fn container_id_cache_hits_misses_and_forget() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("100")).unwrap();
    std::fs::write(dir.path().join("100/cgroup"), format!("0::/docker/{ID}\n")).unwrap();
    std::fs::create_dir_all(dir.path().join("200")).unwrap();
    std::fs::write(dir.path().join("200/cgroup"), "0::/user.slice\n").unwrap();

    let metrics = ContainerIdCacheMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut cache = ContainerIdCache::new(dir.path(), 1, metrics.clone());
    assert_eq!(cache.get(100).as_deref(), Some(ID));
    assert_eq!(cache.get(100).as_deref(), Some(ID));
    assert_eq!(cache.get(200), None); // evicts 100 (size 1)
    assert_eq!(cache.get(100).as_deref(), Some(ID));
    assert_eq!(cache.get(999), None); // missing pid: not cached
    assert_eq!(metrics.hit.get(), 1);
    assert_eq!(metrics.miss.get(), 4);
    assert_eq!(cache.len(), 1);
    cache.forget(100);
    assert!(cache.is_empty());

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("pyroscope_ebpf_container_id_cache_hit_total 1"),
        "{text}"
    );
    assert!(
        text.contains("pyroscope_ebpf_container_id_cache_miss_total 4"),
        "{text}"
    );
}

#[test]
fn own_process_cgroup_is_readable() {
    // The real file must parse without error; this host may or may not be in a container.
    let id =
        ebpf_probe::cgroup::read_container_id(std::path::Path::new("/proc"), std::process::id())
            .expect("read /proc/self cgroup");
    if let Some(id) = id {
        assert_eq!(id.len(), 64);
    }
}
