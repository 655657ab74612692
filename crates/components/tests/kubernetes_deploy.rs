//! The manifests in `deploy/kubernetes/`: they build with `kubectl kustomize`, the DaemonSet has
//! what eBPF profiling and the example need, the RBAC grants list/watch on what
//! `discovery.kubernetes` reads, and the ConfigMap carries `examples/river/kubernetes.river`
//! verbatim (and it parses).

use std::path::{Path, PathBuf};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

#[test]
#[ignore = "needs kubectl"]
fn manifests_build_with_kustomize_and_have_what_the_example_needs() {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir())
        .output()
        .expect("kubectl must be installed");
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "kind: DaemonSet",
        "hostPID: true",
        "privileged: true",
        "serviceAccountName: rill",
        "fieldPath: spec.nodeName",
        "name: HOSTNAME",
        "kind: ClusterRole",
        "kind: ClusterRoleBinding",
        "kind: ConfigMap",
        "- watch",
        "- list",
        "endpointslices",
        "ingresses",
    ] {
        assert!(yaml.contains(needle), "{needle:?} missing from:\n{yaml}");
    }
}

#[test]
fn configmap_holds_the_kubernetes_example_verbatim() {
    let cm = std::fs::read_to_string(deploy_dir().join("configmap.yaml")).unwrap();
    let (_, body) = cm
        .split_once("config.river: |\n")
        .expect("config.river block");
    let config: String = body
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/river/kubernetes.river"),
    )
    .unwrap();
    assert_eq!(config.trim_end(), example.trim_end());
    river_parser::parse_file(&config).expect("the ConfigMap's config parses");
}
