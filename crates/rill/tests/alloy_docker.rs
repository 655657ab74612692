//! `rill run examples/river/docker.alloy` end to end, as root: the Docker example written for
//! current Grafana Alloy (`discovery.docker`, a relabel naming services and containers,
//! `pyroscope.ebpf` with `demangle`, `comm`, `pid_label` and `kernel_frames`, external labels
//! with `constants.hostname`), run by the real binary against the real Docker engine and the real
//! eBPF probe. The C++ workload runs in a `FROM scratch` container; a fake Pyroscope receiver
//! decodes the pushes. The example is used verbatim but for the receiver's URL and a 3 s collect
//! interval. FAILS (does not skip) without root, Docker or g++.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common_rel.rs"]
mod common_rel;

#[path = "support/alloy_e2e.rs"]
mod alloy_e2e;

use alloy_e2e::*;
use common_rel::{free_addr, tmpdir, Recorder};

#[test]
#[ignore = "needs root, eBPF and Docker"]
fn docker_example_of_current_alloy_profiles_a_container() {
    require(true);
    shop_image();
    let name = format!("rill-e2e-docker-{}", std::process::id());
    let container = Container::start(&name, &["--label", "com.docker.compose.service=checkout"]);
    let pid = container.pid().to_string();

    let receiver = Recorder::start(200);
    let dir = tmpdir("alloy-docker");
    let config = dir.join("docker.alloy");
    let url = format!("url = \"http://{}\"", receiver.addr);
    std::fs::write(
        &config,
        rewrite(
            &example("docker.alloy"),
            &[
                ("url = \"http://pyroscope:4040\"", &url),
                ("collect_interval = \"15s\"", "collect_interval = \"3s\""),
            ],
        ),
    )
    .unwrap();
    let addr = free_addr();
    let rill = rill_run(&config, addr, &[]);
    let got = wait_for_service(
        &receiver,
        &name,
        50,
        30,
        &rill,
        (addr, "pyroscope.ebpf.instance"),
    );

    // The series: the relabel's labels, the external labels, the profile type.
    let labels = &got[0].labels;
    assert_eq!(labels["service_name"], name, "the relabel strips the slash");
    assert_eq!(labels["container"], name);
    assert_eq!(labels["compose_service"], "checkout");
    assert_eq!(labels["env"], "testing");
    assert_eq!(labels["instance"], hostname(), "constants.hostname");
    assert_eq!(labels["__name__"], "process_cpu");
    assert!(
        !labels.keys().any(|k| k.starts_with("__meta_")),
        "meta labels are not sent: {labels:?}"
    );

    // Every sample carries comm and pid; demangled names (simplified) in call order.
    let (labelled, all) = count_samples(&got, |p, s| {
        let l = sample_labels(p, s);
        l.get("comm").map(String::as_str) == Some("shop")
            && l.get("pid") == Some(&pid)
            && l.len() == 2
    });
    assert_eq!(
        labelled, all,
        "comm = \"shop\" and pid = {pid} on every sample"
    );
    let (chain, all) = count_samples(&got, |p, s| contains_run(&stack(p, s), &CHAIN));
    eprintln!("{name}: {all} samples, {chain} with the whole demangled chain");
    assert!(chain * 10 >= all * 8, "{chain} of {all} samples");
    let (mangled, _) = count_samples(&got, |p, s| {
        stack(p, s).iter().any(|f| f.starts_with("_ZN4shop"))
    });
    assert_eq!(mangled, 0, "demangle = \"simplified\"");
    // kernel_frames = false: no frame without a mapping (kernel frames have none).
    for s in &got {
        let p = &s.profile;
        for sample in &p.sample {
            for &id in &sample.location_id {
                let loc = &p.location[id as usize - 1];
                assert_ne!(loc.mapping_id, 0, "a kernel frame: {:?}", stack(p, sample));
            }
        }
    }

    // The component as the API shows it.
    let ebpf = component(addr, "pyroscope.ebpf.instance");
    assert_eq!(ebpf["health"]["state"], "healthy", "{ebpf}");
    let debug = &ebpf["debugInfo"];
    assert_eq!(attr(debug, "kernel_frames").unwrap()["value"], false);
    assert_eq!(attr(debug, "comm").unwrap()["value"], "label");
    assert_eq!(attr(debug, "pid_label").unwrap()["value"], true);
    let docker = component(addr, "discovery.docker.local_containers");
    assert_eq!(docker["health"]["state"], "healthy", "{docker}");
    assert!(
        docker["exports"].to_string().contains(&container.id),
        "discovery.docker exports the container"
    );
    drop(rill);
    let _ = std::fs::remove_dir_all(&dir);
}
