//! The CI-sized churn/soak run: `scripts/soak.sh` for 90 s against this build of rill (root,
//! eBPF, Docker, gcc, bpftool). Fails when the script reports BPF objects, fds or RSS not back
//! to baseline, a failed reload, dropped profiles or no push (see docs/reliability.md).

use std::path::Path;
use std::process::Command;

#[test]
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
    assert!(
        output.status.success(),
        "soak failed ({}):\n{stderr}\n{samples}",
        output.status
    );
    assert!(stderr.contains("soak: OK"), "{stderr}");
}
