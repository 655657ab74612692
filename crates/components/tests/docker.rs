//! `discovery.docker` against a real Docker engine (root and `docker.io` required; the tests start
//! `dockerd` when it is not running and FAIL when the engine cannot be had).

#[path = "support/docker_support.rs"]
mod docker_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use components::discovery::docker::{connect, refresh, Arguments, DockerDiscovery, Filter};
use components::discovery::relabel::Labels;
use docker_support::*;
use river_parser::decode::Duration as RiverDuration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn run_id(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

fn args_for(host: &str, run: &str) -> Arguments {
    Arguments {
        host: host.to_owned(),
        filters: vec![Filter {
            name: "label".into(),
            values: vec![format!("rill.test={run}")],
        }],
        ..Arguments::default()
    }
}

async fn refresh_now(args: &Arguments) -> Vec<Labels> {
    let d = connect(args).expect("client");
    let d = d.negotiate_version().await.expect("engine reachable");
    refresh(&d, args).await.expect("refresh")
}

/// What `docker inspect` says about a container's endpoints: network name → (network id, ip).
fn endpoints(name: &str) -> BTreeMap<String, (String, String)> {
    let out = dk(
        MAIN_HOST,
        &[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.NetworkID}} {{$v.IPAddress}};{{end}}",
            name,
        ],
    );
    out.split(';')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let mut it = s.split(' ');
            let n = it.next().unwrap_or_default().to_owned();
            let id = it.next().unwrap_or_default().to_owned();
            let ip = it.next().unwrap_or_default().to_owned();
            (n, (id, ip))
        })
        .collect()
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Net {
    id: String,
    name: String,
    extra: Vec<(String, String)>,
}

fn net_labels(n: &Net, ip: &str) -> Labels {
    let mut m = l(&[
        ("__meta_docker_network_id", &n.id),
        ("__meta_docker_network_name", &n.name),
        ("__meta_docker_network_scope", "local"),
        ("__meta_docker_network_internal", "false"),
        ("__meta_docker_network_ingress", "false"),
        ("__meta_docker_network_ip", ip),
    ]);
    m.extend(n.extra.iter().cloned());
    m
}

struct Scenario {
    run: String,
    _cleanup: Cleanup,
    net1: Net,
    net2: Net,
    bridge: Net,
    host_net: Net,
    a_id: String,
    b_id: String,
    c_id: String,
    d_id: String,
    a_public_port: String,
}

/// Containers: `a` on two user networks with a published TCP port, an exposed-only TCP port and
/// a UDP port, labels needing sanitizing; `b` on the default bridge without ports; `c` sharing
/// `a`'s network (`container:<id>`); `d` in host mode.
fn scenario(tag: &str) -> Scenario {
    main_engine();
    let run = run_id(tag);
    let cleanup = Cleanup {
        host: MAIN_HOST.into(),
        run: run.clone(),
    };
    let lbl = format!("rill.test={run}");
    let net1 = format!("rill-net-{run}");
    let net2 = format!("rill-net2-{run}");
    let net1_id = dk(
        MAIN_HOST,
        &[
            "network",
            "create",
            "--label",
            &lbl,
            "--label",
            "com.example.tier=back-end",
            &net1,
        ],
    );
    let net2_id = dk(MAIN_HOST, &["network", "create", "--label", &lbl, &net2]);
    let a = format!("rill-a-{run}");
    let a_id = dk(
        MAIN_HOST,
        &[
            "run",
            "-d",
            "--name",
            &a,
            "--label",
            &lbl,
            "--label",
            "com.example.team=infra",
            "--label",
            "app.kubernetes.io/name=web",
            "--label",
            "émoji-key=1",
            "--network",
            &net1,
            "--expose",
            "9090",
            "--expose",
            "5353/udp",
            "-p",
            "127.0.0.1::8080",
            IMAGE,
        ],
    );
    dk(MAIN_HOST, &["network", "connect", &net2, &a]);
    let b = format!("rill-b-{run}");
    let b_id = dk(
        MAIN_HOST,
        &["run", "-d", "--name", &b, "--label", &lbl, IMAGE],
    );
    let c = format!("rill-c-{run}");
    let c_id = dk(
        MAIN_HOST,
        &[
            "run",
            "-d",
            "--name",
            &c,
            "--label",
            &lbl,
            "--network",
            &format!("container:{a_id}"),
            IMAGE,
        ],
    );
    let d = format!("rill-d-{run}");
    let d_id = dk(
        MAIN_HOST,
        &[
            "run",
            "-d",
            "--name",
            &d,
            "--label",
            &lbl,
            "--network",
            "host",
            IMAGE,
        ],
    );
    let port = dk(MAIN_HOST, &["port", &a, "8080/tcp"]);
    let a_public_port = port
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .expect("published port")
        .to_owned();
    let bridge_id = dk(
        MAIN_HOST,
        &["network", "inspect", "-f", "{{.Id}}", "bridge"],
    );
    let host_id = dk(MAIN_HOST, &["network", "inspect", "-f", "{{.Id}}", "host"]);
    Scenario {
        run: run.clone(),
        _cleanup: cleanup,
        net1: Net {
            id: net1_id,
            name: net1,
            extra: vec![
                (
                    "__meta_docker_network_label_com_example_tier".into(),
                    "back-end".into(),
                ),
                ("__meta_docker_network_label_rill_test".into(), run.clone()),
            ],
        },
        net2: Net {
            id: net2_id,
            name: net2,
            extra: vec![("__meta_docker_network_label_rill_test".into(), run.clone())],
        },
        bridge: Net {
            id: bridge_id,
            name: "bridge".into(),
            extra: vec![],
        },
        host_net: Net {
            id: host_id,
            name: "host".into(),
            extra: vec![],
        },
        a_id,
        b_id,
        c_id,
        d_id,
        a_public_port,
    }
}

fn network_mode(name_or_id: &str) -> String {
    dk(
        MAIN_HOST,
        &["inspect", "-f", "{{.HostConfig.NetworkMode}}", name_or_id],
    )
}

fn common(s: &Scenario, id: &str, name: &str, extra: &[(&str, &str)]) -> Labels {
    let mut m = l(&[
        ("__meta_docker_container_id", id),
        ("__meta_docker_container_name", &format!("/{name}")),
        ("__meta_docker_container_network_mode", &network_mode(id)),
        ("__meta_docker_container_label_rill_test", &s.run),
    ]);
    m.extend(l(extra));
    m
}

fn expected(s: &Scenario, match_first: bool) -> Vec<Labels> {
    let run = &s.run;
    let a = format!("rill-a-{run}");
    let a_eps = endpoints(&a);
    let a_common = common(
        s,
        &s.a_id,
        &a,
        &[
            ("__meta_docker_container_label_com_example_team", "infra"),
            (
                "__meta_docker_container_label_app_kubernetes_io_name",
                "web",
            ),
            ("__meta_docker_container_label__moji_key", "1"),
        ],
    );
    let mut want = Vec::new();
    let mut a_nets = vec![&s.net1];
    if !match_first {
        a_nets.push(&s.net2);
    }
    let mut c_targets = Vec::new();
    for n in a_nets {
        let ip = &a_eps[&n.name].1;
        assert!(!ip.is_empty(), "container a has an IP on {}", n.name);
        assert_eq!(a_eps[&n.name].0, n.id);
        let mut base = a_common.clone();
        base.extend(net_labels(n, ip));
        // Published TCP port.
        let mut t = base.clone();
        t.extend(l(&[
            ("__meta_docker_port_private", "8080"),
            ("__meta_docker_port_public", &s.a_public_port),
            ("__meta_docker_port_public_ip", "127.0.0.1"),
            ("__address__", &format!("{ip}:8080")),
        ]));
        want.push(t);
        // Exposed-only TCP port; the UDP port yields nothing.
        let mut t = base.clone();
        t.extend(l(&[
            ("__meta_docker_port_private", "9090"),
            ("__address__", &format!("{ip}:9090")),
        ]));
        want.push(t);
        // c shares a's network stack and has no ports of its own: port argument (80).
        let c = format!("rill-c-{run}");
        let mut t = common(s, &s.c_id, &c, &[]);
        t.extend(net_labels(n, ip));
        t.insert("__address__".into(), format!("{ip}:80"));
        c_targets.push(t);
    }
    want.extend(c_targets);

    let b = format!("rill-b-{run}");
    let b_ip = endpoints(&b)["bridge"].1.clone();
    let mut t = common(s, &s.b_id, &b, &[]);
    t.extend(net_labels(&s.bridge, &b_ip));
    t.insert("__address__".into(), format!("{b_ip}:80"));
    want.push(t);

    let d = format!("rill-d-{run}");
    let mut t = common(s, &s.d_id, &d, &[]);
    t.extend(net_labels(&s.host_net, ""));
    t.insert("__address__".into(), "localhost".into());
    want.push(t);

    want.sort();
    want
}

fn diff(got: &[Labels], want: &[Labels]) -> String {
    let mut s = String::new();
    for g in got {
        if !want.contains(g) {
            s.push_str(&format!("unexpected: {g:#?}\n"));
        }
    }
    for w in want {
        if !got.contains(w) {
            s.push_str(&format!("missing: {w:#?}\n"));
        }
    }
    s
}

#[test]
#[ignore = "needs root and Docker"]
fn docker_targets_have_prometheus_labels() {
    let _g = serial();
    let s = scenario("labels");
    rt().block_on(async {
        let args = args_for(MAIN_HOST, &s.run);
        let got = refresh_now(&args).await;
        let want = expected(&s, true);
        assert_eq!(got.len(), want.len(), "{}", diff(&got, &want));
        assert_eq!(got, want, "{}", diff(&got, &want));
        assert_eq!(
            network_mode(&s.c_id),
            format!("container:{}", s.a_id),
            "c uses a's network stack"
        );
    });
}

#[test]
#[ignore = "needs root and Docker"]
fn docker_match_first_network_false_gives_every_network() {
    let _g = serial();
    let s = scenario("allnets");
    rt().block_on(async {
        let args = Arguments {
            match_first_network: false,
            ..args_for(MAIN_HOST, &s.run)
        };
        let got = refresh_now(&args).await;
        let want = expected(&s, false);
        assert_eq!(got, want, "{}", diff(&got, &want));
    });
}

#[test]
#[ignore = "needs root and Docker"]
fn docker_port_and_host_networking_host_arguments() {
    let _g = serial();
    let s = scenario("portarg");
    rt().block_on(async {
        let args = Arguments {
            port: 12345,
            host_networking_host: "docker-host.internal".into(),
            ..args_for(MAIN_HOST, &s.run)
        };
        let got = refresh_now(&args).await;
        let addr_of = |id: &str| -> Vec<String> {
            got.iter()
                .filter(|t| t["__meta_docker_container_id"] == id)
                .map(|t| t["__address__"].clone())
                .collect()
        };
        let b_ip = endpoints(&format!("rill-b-{}", s.run))["bridge"].1.clone();
        assert_eq!(addr_of(&s.b_id), vec![format!("{b_ip}:12345")]);
        assert_eq!(addr_of(&s.d_id), vec!["docker-host.internal".to_string()]);
    });
}

#[test]
#[ignore = "needs root and Docker"]
fn docker_new_container_visible_within_two_seconds_via_events() {
    let _g = serial();
    main_engine();
    let run = run_id("events");
    let _cleanup = Cleanup {
        host: MAIN_HOST.into(),
        run: run.clone(),
    };
    let lbl = format!("rill.test={run}");
    dk(
        MAIN_HOST,
        &[
            "run",
            "-d",
            "--name",
            &format!("rill-e1-{run}"),
            "--label",
            &lbl,
            IMAGE,
        ],
    );
    rt().block_on(async {
        let args = Arguments {
            // Only events can explain a refresh within the test.
            refresh_interval: RiverDuration::from_secs(3600),
            ..args_for(MAIN_HOST, &run)
        };
        let disc = DockerDiscovery::new(args).expect("valid args");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Arc::clone(&disc).run(async move {
            let _ = stop_rx.await;
        }));
        wait_for(Duration::from_secs(20), "first refresh", || disc.targets().len() == 1).await;
        assert!(disc.status().healthy, "{:?}", disc.status());
        let refreshes = disc.refresh_count();
        // Give the event subscription a moment to be established after the first refresh.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let name = format!("rill-e2-{run}");
        let started = Instant::now();
        let id = tokio::task::spawn_blocking({
            let name = name.clone();
            let lbl = lbl.clone();
            move || dk(MAIN_HOST, &["run", "-d", "--name", &name, "--label", &lbl, IMAGE])
        })
        .await
        .expect("docker run");
        let run_took = started.elapsed();
        let seen = wait_for(Duration::from_secs(10), "new container target", || {
            disc.targets()
                .iter()
                .any(|t| t["__meta_docker_container_id"] == id)
        })
        .await;
        let after_run = started.elapsed() - run_took;
        eprintln!(
            "new container visible {after_run:?} after `docker run` returned ({:?} after it was called, polled for {seen:?})",
            started.elapsed()
        );
        assert!(disc.refresh_count() > refreshes);
        assert!(
            after_run < Duration::from_secs(2),
            "took {after_run:?} after docker run returned"
        );

        // Removal is seen too.
        dk(MAIN_HOST, &["rm", "-f", &name]);
        wait_for(Duration::from_secs(2), "removed container gone", || {
            disc.targets().len() == 1
        })
        .await;
        let _ = stop_tx.send(());
        task.await.expect("discovery task");
    });
}

#[test]
#[ignore = "needs root and Docker"]
fn docker_engine_restart_unhealthy_then_healthy_targets_restored() {
    let _g = serial();
    let mut engine = PrivateEngine::new("restart");
    build_image(&engine.host);
    let run = run_id("restart");
    let lbl = format!("rill.test={run}");
    let id = dk(
        &engine.host,
        &[
            "run",
            "-d",
            "--restart",
            "always",
            "--network",
            "host",
            "--name",
            "survivor",
            "--label",
            &lbl,
            IMAGE,
        ],
    );
    rt().block_on(async {
        let args = Arguments {
            refresh_interval: RiverDuration::from_secs(1),
            ..args_for(&engine.host, &run)
        };
        let disc = DockerDiscovery::new(args).expect("valid args");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Arc::clone(&disc).run(async move {
            let _ = stop_rx.await;
        }));
        wait_for(Duration::from_secs(20), "first targets", || {
            disc.targets().len() == 1
        })
        .await;
        let before = disc.targets();
        assert_eq!(before[0]["__meta_docker_container_id"], id);
        assert_eq!(before[0]["__address__"], "localhost");
        assert!(disc.status().healthy);

        // Blocking here is fine: the discovery runs on the runtime's worker threads.
        engine.stop();
        wait_for(Duration::from_secs(10), "unhealthy", || {
            !disc.status().healthy
        })
        .await;
        let st = disc.status();
        eprintln!("while the engine is down: {st:?}");
        assert!(
            [
                "error setting up docker client: ",
                "error while negotiating the Docker API version: ",
                "error while listing containers: ",
                "error while computing network labels: ",
            ]
            .iter()
            .any(|p| st.message.starts_with(p))
                && (st.message.contains("Socket not found")
                    || st.message.contains("onnect")
                    || st.message.contains("No such file")),
            "cause in message: {}",
            st.message
        );
        assert_eq!(disc.targets(), before, "last good targets kept");
        // Still unhealthy a while later (retries with backoff keep failing).
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!disc.status().healthy);
        assert_eq!(disc.targets(), before);

        engine.start();
        let back = wait_for(Duration::from_secs(40), "healthy again", || {
            disc.status().healthy
        })
        .await;
        eprintln!("healthy again {back:?} after the engine came back");
        wait_for(Duration::from_secs(20), "targets restored", || {
            disc.targets() == before
        })
        .await;
        let _ = stop_tx.send(());
        task.await.expect("discovery task");
    });
    drop(engine);
}

#[test]
fn docker_unreachable_engine_fails_refresh_with_cause() {
    rt().block_on(async {
        let args = Arguments {
            host: "unix:///nonexistent/docker.sock".into(),
            ..Arguments::default()
        };
        let disc = DockerDiscovery::new(args).expect("valid args");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Arc::clone(&disc).run(async move {
            let _ = stop_rx.await;
        }));
        wait_for(Duration::from_secs(5), "unhealthy", || {
            disc.status().message != "starting"
        })
        .await;
        let st = disc.status();
        assert!(!st.healthy);
        assert!(
            st.message.contains("/nonexistent/docker.sock"),
            "{}",
            st.message
        );
        assert!(disc.targets().is_empty());
        let _ = stop_tx.send(());
        task.await.expect("task");
    });
}

#[test]
fn docker_arguments_validation() {
    let bad = |a: Arguments| DockerDiscovery::new(a).unwrap_err().to_string();
    assert_eq!(
        bad(Arguments::default()),
        "missing required attribute \"host\""
    );
    assert_eq!(
        bad(Arguments {
            host: "ftp://x".into(),
            ..Arguments::default()
        }),
        "invalid host \"ftp://x\": expected unix://, tcp://, http:// or https://"
    );
    assert_eq!(
        bad(Arguments {
            host: "tcp://127.0.0.1:2375".into(),
            refresh_interval: RiverDuration::from_secs(0),
            ..Arguments::default()
        }),
        "refresh_interval must be greater than 0"
    );
    assert!(DockerDiscovery::new(Arguments {
        host: "tcp://127.0.0.1:2375".into(),
        ..Arguments::default()
    })
    .is_ok());
}

/// 200 running containers: time from starting discovery to published targets. Run manually:
/// `cargo test -p components --test docker -- --ignored --nocapture docker_200`.
#[test]
#[ignore = "needs root and Docker (starts 200 containers)"]
fn docker_200_containers_publish_time() {
    let _g = serial();
    main_engine();
    let run = run_id("bench200");
    let _cleanup = Cleanup {
        host: MAIN_HOST.into(),
        run: run.clone(),
    };
    let lbl = format!("rill.test={run}");
    let start = Instant::now();
    for i in 0..200 {
        dk(
            MAIN_HOST,
            &[
                "run",
                "-d",
                "--name",
                &format!("rill-bench-{i}-{run}"),
                "--label",
                &lbl,
                IMAGE,
            ],
        );
    }
    eprintln!("started 200 containers in {:?}", start.elapsed());
    rt().block_on(async {
        let args = args_for(MAIN_HOST, &run);
        let mut samples = Vec::new();
        for _ in 0..5 {
            let disc = DockerDiscovery::new(args.clone()).expect("valid args");
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let t0 = Instant::now();
            let task = tokio::spawn(Arc::clone(&disc).run(async move {
                let _ = stop_rx.await;
            }));
            wait_for(Duration::from_secs(60), "200 targets", || {
                disc.targets().len() == 200
            })
            .await;
            samples.push(t0.elapsed());
            let _ = stop_tx.send(());
            task.await.expect("task");
        }
        eprintln!("discovery.docker published 200 targets in {samples:?}");
    });
}
