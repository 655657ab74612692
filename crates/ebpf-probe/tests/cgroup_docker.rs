//! The container ID read from a real container's `/proc/PID/cgroup` equals the ID Docker
//! reports, and a binary that exists only inside the container is symbolized through
//! `/proc/PID/root`. Needs root and a running Docker engine (`scripts/setup.sh` starts one): fails,
//! never skips, without them.

use std::path::Path;
use std::process::Command;

#[path = "support/docker_cleanup.rs"]
mod docker_cleanup;

use docker_cleanup::DockerCleanup;
use ebpf_probe::cgroup::{normalize_container_id, ContainerIdCache, ContainerIdCacheMetrics};
use ebpf_probe::symbolize::elf::load_elf;
use ebpf_probe::symbolize::{Symbolizer, SymbolizerConfig, SymbolizerMetrics};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "needs root and Docker"]
fn container_id_of_a_real_container() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sleep.c"),
        "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n",
    )
    .unwrap();
    run(Command::new("gcc")
        .args(["-static", "-O1", "-o", "sleeper", "sleep.c"])
        .current_dir(dir.path()));
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT [\"/sleeper\"]\n",
    )
    .unwrap();
    let tag = format!("rill-ebpf-probe-cgroup-test:{}", std::process::id());
    run(Command::new("docker")
        .args(["build", "-q", "-t", &tag, "."])
        .current_dir(dir.path()));
    let id = run(Command::new("docker").args(["run", "-d", "--rm", &tag]));
    let _cleanup = DockerCleanup(id.clone(), tag.clone());
    let pid: u32 = run(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &id]))
        .parse()
        .unwrap();
    assert!(pid > 0);

    let mut cache = ContainerIdCache::new("/proc", 64, ContainerIdCacheMetrics::default());
    let got = cache.get(pid);
    let content = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(got.as_deref(), Some(id.as_str()), "cgroup file:\n{content}");
    // a target label carries it with the runtime prefix
    assert_eq!(normalize_container_id(&format!("docker://{id}")), got);
    // this test process is not in that container
    assert_ne!(cache.get(std::process::id()), got);
    assert!(Path::new(&format!("/proc/{pid}/root/sleeper")).exists());

    // Its binary exists only inside the container: symbols come through /proc/PID/root.
    assert!(!Path::new("/sleeper").exists());
    let host_copy = load_elf(
        Path::new("/"),
        dir.path().join("sleeper").to_str().unwrap(),
        &[],
    )
    .unwrap();
    assert!(
        !host_copy.is_dyn,
        "static non-PIE: link address = runtime address"
    );
    let main = host_copy.table.address_of("main").expect("main in symtab");
    let mut sym = Symbolizer::new(SymbolizerConfig::default(), SymbolizerMetrics::default());
    let frames = sym.symbolize_user(pid, &[main + 1]);
    assert_eq!(frames[0].name.as_deref(), Some("main"));
    let mapping = frames[0].mapping.as_ref().unwrap();
    assert_eq!(mapping.file, "/sleeper");
    assert_eq!(mapping.build_id, host_copy.build_id_hex());
}
