//! Current Alloy configurations for a host without containers, run end to end by the `rill`
//! binary as root against this host's processes and the real eBPF probe; a fake Pyroscope
//! receiver decodes the pushes. The C++ workload runs as an ordinary host process.
//!
//! * `examples/river/host.alloy`: `discovery.process` with `discover_config`, a relabel turning
//!   `__meta_process_*` labels into `service_name`, `user` and `cwd`, `pyroscope.ebpf` with
//!   `comm = "stackframe"`, `pid_label` and `demangle = "full"`, external labels with
//!   `constants.hostname`. Verbatim but for the URL, the kept executable and a 3 s interval.
//! * `fixtures/alloy-current/modules/`: `rill run modules/config` (a configuration directory of
//!   two files) importing the module directory `modules/lib` with `import.file` and
//!   `file.path_join(module_path, ...)`: a declare of one file using a declare of the other,
//!   arguments with defaults, an export, nested module IDs in the API.
//!
//! FAILS (does not skip) without root or g++.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/common_rel.rs"]
mod common_rel;

#[path = "support/alloy_e2e.rs"]
mod alloy_e2e;

use std::process::{Command, Stdio};

use alloy_e2e::*;
use common_rel::{free_addr, tmpdir, Recorder};

/// Starts the workload `bin` in directory `cwd`.
fn start_shop(bin: &std::path::Path, cwd: &std::path::Path) -> Child {
    std::fs::create_dir_all(cwd).unwrap();
    Child(
        Command::new(bin)
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
#[ignore = "needs root and eBPF"]
fn host_example_of_current_alloy_profiles_chosen_programs() {
    require(false);
    let dir = tmpdir("alloy-host");
    let bin = dir.join("bin/shop");
    build_shop(&bin);
    let work = dir.join("work");
    let shop = start_shop(&bin, &work);
    let pid = shop.0.id().to_string();

    let receiver = Recorder::start(200);
    let url = format!("url = \"http://{}\"", receiver.addr);
    let keep = format!(
        "regex         = {}",
        river_parser::go_quote(&regex_escape(&bin.display().to_string()))
    );
    let config = dir.join("host.alloy");
    std::fs::write(
        &config,
        rewrite(
            &example("host.alloy"),
            &[
                ("url = \"http://localhost:4040\"", &url),
                ("regex         = \"/(usr/local/bin|opt)/.+\"", &keep),
                ("collect_interval = \"15s\"", "collect_interval = \"3s\""),
            ],
        ),
    )
    .unwrap();
    let addr = free_addr();
    let rill = rill_run(&config, addr, &[]);
    let got = wait_for_service(
        &receiver,
        "ebpf/host/shop",
        50,
        30,
        &rill,
        (addr, "pyroscope.ebpf.programs"),
    );

    // Labels made from __meta_process_* by the relabel, and the external label.
    let labels = &got[0].labels;
    assert_eq!(labels["user"], "root", "{labels:?}");
    assert_eq!(labels["cwd"], work.display().to_string(), "{labels:?}");
    assert_eq!(labels["instance"], hostname());
    assert_eq!(labels["__name__"], "process_cpu");
    let services: std::collections::BTreeSet<String> = series(&receiver)
        .into_iter()
        .filter_map(|s| s.labels.get("service_name").cloned())
        .collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["ebpf/host/shop"],
        "only the kept program is profiled"
    );

    // comm = "stackframe": the process name is the root frame, no comm label; pid_label; and
    // demangle = "full": whole signatures.
    let (rooted, all) = count_samples(&got, |p, s| {
        let st = stack(p, s);
        let l = sample_labels(p, s);
        st.first().map(String::as_str) == Some("shop")
            && l.get("pid") == Some(&pid)
            && !l.contains_key("comm")
    });
    assert_eq!(
        rooted, all,
        "root frame \"shop\" and pid = {pid} on every sample"
    );
    let (chain, all) = count_samples(&got, |p, s| {
        let st = stack(p, s);
        contains_run(&st, &["main", "shop::Checkout::run(int)"])
            && st
                .iter()
                .any(|f| f.ends_with("shop::price<double>(double, int)"))
            && st.last().map(String::as_str) == Some("shop::tax::apply(unsigned long, int)")
    });
    eprintln!("ebpf/host/shop: {all} samples, {chain} with the full signatures");
    assert!(chain * 10 >= all * 8, "{chain} of {all}");

    let process = component(addr, "discovery.process.all");
    assert_eq!(process["health"]["state"], "healthy", "{process}");
    let kept = component(addr, "discovery.relabel.programs")["exports"].to_string();
    assert!(
        !kept.contains("__container_id__"),
        "container_id = false: {kept}"
    );
    drop(rill);
    drop(shop);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root and eBPF"]
fn a_configuration_directory_importing_a_module_directory_runs() {
    require(false);
    let dir = tmpdir("alloy-modules");
    // The module keeps executables matching ".*/shop-checkout".
    let bin = dir.join("bin/shop-checkout");
    build_shop(&bin);
    let shop = start_shop(&bin, &dir.join("work"));

    let receiver = Recorder::start(200);
    let url = format!("url = \"http://{}\"", receiver.addr);
    let modules = dir.join("modules");
    copy_tree(
        &fixture("modules"),
        &modules,
        &[
            ("url = \"http://pyroscope:4040\"", &url),
            ("collect_interval = \"15s\"", "collect_interval = \"3s\""),
        ],
    );
    let addr = free_addr();
    let ebpf_id = "profiling.host.shop/pyroscope.ebpf.programs";
    let rill = rill_run(&modules.join("config"), addr, &[]);
    let got = wait_for_service(
        &receiver,
        "ebpf/host/shop-checkout",
        50,
        30,
        &rill,
        (addr, ebpf_id),
    );
    let labels = &got[0].labels;
    assert_eq!(labels["team"], "shop", "write.alloy's external label");
    assert_eq!(labels["commandline"], bin.display().to_string());
    let (labelled, all) = count_samples(&got, |p, s| {
        sample_labels(p, s).get("comm").map(String::as_str) == Some("shop-checkout")
    });
    assert_eq!(labelled, all, "comm = \"label\" from the module");
    let (chain, all) = count_samples(&got, |p, s| contains_run(&stack(p, s), &CHAIN));
    assert!(chain * 10 >= all * 8, "{chain} of {all}");

    // Module IDs as Alloy names them: the instance, then the nested instance of `programs`.
    for (id, module) in [
        (ebpf_id, "profiling.host.shop"),
        ("profiling.host.shop/programs.found", "profiling.host.shop"),
        (
            "profiling.host.shop/programs.found/discovery.process.all",
            "profiling.host.shop/programs.found",
        ),
        (
            "profiling.host.shop/programs.found/discovery.relabel.kept",
            "profiling.host.shop/programs.found",
        ),
    ] {
        let c = component(addr, id);
        assert_eq!(c["moduleID"], module, "{id}: {c}");
        assert_eq!(c["health"]["state"], "healthy", "{id}: {c}");
    }
    drop(rill);
    drop(shop);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `s` with the regular-expression metacharacters escaped.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
