//! `discovery.process` over a fake `/proc` tree: labels, defaults, the `discover_config`
//! switches, vanished and unreadable processes, the process limit, `join`, and the real `/proc`.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failure panics the test"
)]

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::*;

const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A temporary `/proc` and `/etc/passwd`, removed on drop.
struct FakeProc {
    root: PathBuf,
}

impl FakeProc {
    fn new(tag: &str) -> FakeProc {
        let root = std::env::temp_dir().join(format!(
            "rill-discovery-process-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::write(
            root.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nalias:x:1000:1000::/:/bin/false\n",
        )
        .unwrap();
        // Entries that are not processes.
        std::fs::create_dir_all(root.join("proc/sys")).unwrap();
        std::fs::write(root.join("proc/uptime"), "1 1\n").unwrap();
        FakeProc { root }
    }

    fn fs(&self) -> ProcFs {
        ProcFs {
            proc_root: self.root.join("proc"),
            passwd: self.root.join("passwd"),
        }
    }

    fn dir(&self, pid: u32) -> PathBuf {
        let d = self.root.join("proc").join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A complete process.
    fn process(&self, pid: u32, uid: u32, argv: &[&str], cgroup: &str) {
        let d = self.dir(pid);
        symlink(format!("/usr/bin/{}", argv[0]), d.join("exe")).unwrap();
        symlink("/srv/app", d.join("cwd")).unwrap();
        let mut cmdline = argv.join("\0");
        cmdline.push('\0');
        std::fs::write(d.join("cmdline"), cmdline).unwrap();
        std::fs::write(
            d.join("status"),
            format!(
                "Name:\t{}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t0\t0\t0\t0\n",
                argv[0]
            ),
        )
        .unwrap();
        std::fs::write(d.join("cgroup"), cgroup).unwrap();
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_follow_alloy_docs() {
    let a = Arguments::default();
    assert_eq!(
        a.refresh_interval.as_std(),
        std::time::Duration::from_secs(60)
    );
    assert!(a.join.is_empty());
    let c = a.discover_config.clone();
    assert!(c.exe && c.cwd && c.commandline && c.container_id);
    assert!(
        c.uid && c.username,
        "docs say true (Alloy's code says false)"
    );
    assert!(!c.cgroup_path);
    assert!(a.validate().is_ok());
    let zero = Arguments {
        refresh_interval: RiverDuration::from_secs(0),
        ..Arguments::default()
    };
    let err = zero.validate().unwrap_err();
    assert_eq!(
        err,
        Invalid::attr(
            "refresh_interval",
            "refresh_interval must be greater than 0"
        )
    );
}

#[test]
fn labels_of_every_process_with_the_default_config() {
    let fx = FakeProc::new("labels");
    fx.process(
        42,
        1000,
        &["python3", "-m", "http.server"],
        &format!("0::/system.slice/docker-{CID}.scope\n"),
    );
    fx.process(7, 0, &["sshd"], "0::/system.slice/ssh.service\n");
    fx.process(9, 4242, &["nobody-knows"], "0::/user.slice\n");
    let got = discover(&fx.fs(), &DiscoverConfig::default(), MAX_PROCESSES).unwrap();
    assert_eq!(got.vanished + got.unreadable + got.truncated, 0, "{got:?}");
    assert_eq!(
        got.targets,
        vec![
            labels(&[
                (PROCESS_PID, "7"),
                (EXE, "/usr/bin/sshd"),
                (CWD, "/srv/app"),
                (COMMANDLINE, "sshd"),
                (UID, "0"),
                (USERNAME, "root"),
            ]),
            labels(&[
                (PROCESS_PID, "9"),
                (EXE, "/usr/bin/nobody-knows"),
                (CWD, "/srv/app"),
                (COMMANDLINE, "nobody-knows"),
                (UID, "4242"), // no passwd entry: no user name
            ]),
            labels(&[
                (PROCESS_PID, "42"),
                (EXE, "/usr/bin/python3"),
                (CWD, "/srv/app"),
                (COMMANDLINE, "python3 -m http.server"),
                (UID, "1000"),
                (USERNAME, "alice"), // the first passwd entry of uid 1000
                (CONTAINER_ID, CID),
            ]),
        ],
        "sorted by pid"
    );
}

#[test]
fn discover_config_switches_labels_on_and_off() {
    let fx = FakeProc::new("switches");
    let cgroup = format!("12:cpu,cpuacct:/docker/{CID}\n11:memory:/docker/{CID}\n");
    fx.process(5, 0, &["app", "--flag"], &cgroup);
    let only_cgroup = DiscoverConfig {
        exe: false,
        cwd: false,
        commandline: false,
        uid: false,
        username: false,
        container_id: false,
        cgroup_path: true,
    };
    let got = discover(&fx.fs(), &only_cgroup, MAX_PROCESSES).unwrap();
    let path = format!("12:cpu,cpuacct:/docker/{CID}|11:memory:/docker/{CID}");
    assert_eq!(
        got.targets,
        vec![labels(&[
            (PROCESS_PID, "5"),
            (CGROUP_PATH, &path),
            (CGROUP_PATH_ALLOY_CODE, &path),
        ])],
        "cgroup v1: one line per hierarchy, joined with |"
    );
    let uid_only = DiscoverConfig {
        uid: true,
        ..only_cgroup.clone()
    };
    let uid_only = DiscoverConfig {
        cgroup_path: false,
        ..uid_only
    };
    let got = discover(&fx.fs(), &uid_only, MAX_PROCESSES).unwrap();
    assert_eq!(got.targets, vec![labels(&[(PROCESS_PID, "5"), (UID, "0")])]);
}

#[test]
fn vanished_and_unreadable_processes_are_skipped() {
    let fx = FakeProc::new("vanish");
    fx.process(10, 0, &["stays"], "0::/\n");
    // Exited between listing /proc and reading its files: cmdline is gone.
    fx.process(11, 0, &["leaves"], "0::/\n");
    std::fs::remove_file(fx.dir(11).join("cmdline")).unwrap();
    // A kernel thread: no exe link.
    let kthread = fx.dir(2);
    std::fs::write(kthread.join("cmdline"), "").unwrap();
    std::fs::write(kthread.join("cgroup"), "0::/\n").unwrap();
    // Unreadable: cwd is not a link (as EINVAL from readlink on a file).
    fx.process(12, 0, &["odd"], "0::/\n");
    std::fs::remove_file(fx.dir(12).join("cwd")).unwrap();
    std::fs::write(fx.dir(12).join("cwd"), "").unwrap();
    let got = discover(&fx.fs(), &DiscoverConfig::default(), MAX_PROCESSES).unwrap();
    assert_eq!(got.targets.len(), 1, "{got:?}");
    assert_eq!(got.targets[0][PROCESS_PID], "10");
    assert_eq!(got.vanished, 2, "pid 11 and the kernel thread");
    assert_eq!(got.unreadable, 1, "pid 12");
    // Without exe, the kernel thread is a target (as in Alloy).
    let no_exe = DiscoverConfig {
        exe: false,
        cwd: false,
        ..DiscoverConfig::default()
    };
    let got = discover(&fx.fs(), &no_exe, MAX_PROCESSES).unwrap();
    let pids: Vec<&str> = got
        .targets
        .iter()
        .map(|t| t[PROCESS_PID].as_str())
        .collect();
    assert_eq!(pids, ["2", "10", "12"]);
    assert!(
        !got.targets[0].contains_key(COMMANDLINE),
        "empty cmdline: no label"
    );
}

#[test]
fn work_per_refresh_is_bounded() {
    let fx = FakeProc::new("bounded");
    for pid in 100..110 {
        fx.process(pid, 0, &["p"], "0::/\n");
    }
    // A huge command line is cut at the read bound.
    let huge = "x".repeat(200 * 1024);
    std::fs::write(fx.dir(100).join("cmdline"), &huge).unwrap();
    let got = discover(&fx.fs(), &DiscoverConfig::default(), 4).unwrap();
    assert_eq!(got.targets.len(), 4);
    assert_eq!(got.truncated, 6);
    assert_eq!(got.targets[3][PROCESS_PID], "103", "lowest pids first");
    assert_eq!(got.targets[0][COMMANDLINE].len(), MAX_FILE as usize);
}

#[test]
fn join_merges_by_container_and_appends_the_join_targets() {
    let cid2 = "f".repeat(64);
    let processes = vec![
        labels(&[(PROCESS_PID, "1"), (CONTAINER_ID, CID)]),
        labels(&[(PROCESS_PID, "2")]),
        labels(&[(PROCESS_PID, "3"), (CONTAINER_ID, &cid2)]),
    ];
    let join_targets = vec![
        labels(&[
            ("pod", "pod-1"),
            (
                "__meta_kubernetes_pod_container_id",
                &format!("containerd://{CID}"),
            ),
        ]),
        labels(&[("pod", "pod-2"), ("__meta_docker_container_id", &cid2)]),
        labels(&[("pod", "shadowed"), (CONTAINER_ID, &cid2)]),
        labels(&[("pod", "no-container")]),
    ];
    let got = join(processes.clone(), &join_targets);
    let mut want = vec![
        labels(&[
            (PROCESS_PID, "1"),
            (CONTAINER_ID, CID),
            ("pod", "pod-1"),
            (
                "__meta_kubernetes_pod_container_id",
                &format!("containerd://{CID}"),
            ),
        ]),
        labels(&[(PROCESS_PID, "2")]),
        labels(&[
            (PROCESS_PID, "3"),
            (CONTAINER_ID, &cid2),
            ("pod", "pod-2"),
            ("__meta_docker_container_id", &cid2),
        ]),
    ];
    want.extend(join_targets.iter().cloned());
    assert_eq!(got, want);
    assert_eq!(
        join(processes.clone(), &[]),
        processes,
        "no join: processes only"
    );
}

/// The real `/proc`: this test's own process, with its executable and command line.
#[test]
fn discovers_this_process_from_the_real_proc() {
    let me = std::process::id();
    let got = discover(
        &ProcFs::default(),
        &DiscoverConfig::default(),
        MAX_PROCESSES,
    )
    .unwrap();
    let mine = got
        .targets
        .iter()
        .find(|t| t[PROCESS_PID] == me.to_string())
        .expect("this process is discovered");
    let exe = std::env::current_exe().unwrap();
    assert_eq!(mine[EXE], exe.to_string_lossy());
    let argv: Vec<String> = std::env::args().collect();
    assert_eq!(mine[COMMANDLINE], argv.join(" "));
    assert_eq!(
        mine[CWD],
        std::env::current_dir().unwrap().to_string_lossy()
    );
    assert!(mine.contains_key(UID));
}
