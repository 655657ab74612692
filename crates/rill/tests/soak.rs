//! The CI-sized churn/soak run: `scripts/soak.sh` for 90 s against this build of rill (root,
//! eBPF, Docker, gcc, bpftool). Fails when the script reports BPF objects, fds or RSS not back
//! to baseline, caches past their sizes, a failed reload, dropped profiles or too few pushes
//! (see docs/reliability.md).

use std::path::Path;
use std::process::Command;

// In a clean-clone CI rehearsal this run once received no push: every collect of the toggled
// profiler came just after a 1 s container had exited and discovery had dropped it, and the
// samples of processes whose target was gone were discarded. Fixed in pyroscope.ebpf (a process
// keeps the target it lost until the next collect); the script now also requires a push per three
// profiler windows (see docs/reliability.md).
#[test]
#[ignore = "soak: 90 s, run by scripts/test.sh"]
fn churn_and_reloads_return_to_baseline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("rill-soak-test-{}", std::process::id()));
    let output = Command::new("bash")
        .arg(root.join("scripts/soak.sh"))
        .env("DURATION", "90")
        .env("RILL", env!("CARGO_BIN_EXE_rill"))
        .env("OUT", &out)
        .output()
        .expect("running scripts/soak.sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let samples = std::fs::read_to_string(out.join("samples.csv")).unwrap_or_default();
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "soak failed ({}):\n{stderr}\n{samples}",
        output.status
    );
    assert!(stderr.contains("soak: OK"), "{stderr}");
    // Passed: drop the output (the container image context alone is ~20 MB).
    let _ = std::fs::remove_dir_all(&out);
}
