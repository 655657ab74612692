//! `pyroscope.store` as a component, on real database files in temp dirs: the `receiver`
//! export stores what it gets and a restart keeps it; retention and `max_size` are enforced by
//! the component itself (the file really stays small); a corrupt or unwritable database makes
//! it unhealthy with the cause while a fanout's other receivers keep getting profiles; the
//! JSON API answers with what was pushed and refuses bad queries with 400.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use components::pyroscope::appendable::{
    from_value, AppendError, Appendable, AppendableRef, Fanout, FanoutMetrics, RawProfile,
};
use components::pyroscope::store::synth::{cpu_profile, Rng, StackPool};
use components::pyroscope::store::{Arguments, ByteSize, Store, StoreOptions};
use flow_runtime::{
    CancellationToken, Component, ExportsHandle, HealthState, HttpRequest, MetricsRegistry, Options,
};

/// A running store component: the component, its receiver and its run task.
struct Running {
    store: Arc<Store>,
    receiver: AppendableRef,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
    }

    fn flush(&self) {
        let s = self.store.clone();
        assert!(s.flush(Duration::from_secs(20)), "flush timed out");
    }
}

fn start(dir: &std::path::Path, args: Arguments, so: StoreOptions) -> Running {
    let exports = ExportsHandle::new();
    let opts = Options {
        id: "pyroscope.store.test".into(),
        span: tracing::Span::none(),
        data_path: dir.to_path_buf(),
        exports: exports.clone(),
        metrics: MetricsRegistry::for_component("pyroscope.store.test"),
    };
    let store = Arc::new(Store::build_with(opts, args, so).unwrap());
    let Some(river_parser::Value::Object(map)) = exports.get() else {
        panic!("no exports")
    };
    let receiver = from_value(&map["receiver"]).expect("receiver is an Appendable capsule");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(store.clone().run(cancel.clone()));
    Running {
        store,
        receiver,
        cancel,
        task,
    }
}

fn fast() -> StoreOptions {
    StoreOptions {
        maintenance_every: Duration::from_millis(200),
        reopen_every: Duration::from_millis(200),
    }
}

fn labels(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("service_name".to_string(), service.to_string()),
        ("__name__".to_string(), "process_cpu".to_string()),
        ("__delta__".to_string(), "false".to_string()),
    ])
}

fn raw(bytes: Vec<u8>) -> Vec<RawProfile> {
    vec![RawProfile {
        raw: bytes,
        id: String::new(),
    }]
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn get(store: &Store, path: &str, query: &str) -> (u16, serde_json::Value) {
    let r = store
        .serve_http(&HttpRequest {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            ..Default::default()
        })
        .expect("the store serves HTTP");
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, v)
}

async fn wait_health(store: &Store, want: HealthState, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let h = store.health().unwrap();
        if h.state == want {
            return h.message;
        }
        assert!(
            Instant::now() < deadline,
            "health {:?} ({}), wanted {want:?}",
            h.state,
            h.message
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const PERIOD: i64 = 10_000_000; // 100 Hz

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_stores_profiles_and_a_restart_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 60_000;
    let s = start(dir.path(), Arguments::default(), fast());
    wait_health(&s.store, HealthState::Healthy, 10).await;
    for i in 0..4 {
        let p = cpu_profile(
            &[(&["main", "work"], 3 + i), (&["main", "idle"], 1)],
            100,
            (t0 + i as i64 * 15_000) * 1_000_000,
        );
        s.receiver.append(labels("app"), raw(p)).unwrap();
    }
    // Labels are checked as pyroscope.write checks them.
    assert_eq!(
        s.receiver.append(BTreeMap::new(), raw(vec![1])),
        Err(AppendError::MissingServiceName)
    );
    s.flush();
    // Default path: the component's data directory.
    assert_eq!(s.store.dir(), dir.path());
    assert!(dir.path().join("profiles.db").exists());
    s.stop().await;

    let s = start(dir.path(), Arguments::default(), fast());
    let q = format!("from={}&until={}&step=15000", t0, t0 + 60_000);
    let (status, v) = get(&s.store, "/v1/profile", &q);
    assert_eq!(status, 200, "{v}");
    // 3+4+5+6 work + 4 idle samples of 10 ms.
    assert_eq!(v["total"], 22 * PERIOD);
    assert_eq!(v["profiles"], 4);
    assert_eq!(
        v["profileType"]["id"],
        "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
    );
    assert_eq!(v["timeline"]["stepMs"], 15_000);
    let values: Vec<i64> = v["timeline"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as i64)
        .collect();
    assert_eq!(values, vec![4 * PERIOD, 5 * PERIOD, 6 * PERIOD, 7 * PERIOD]);
    let main = &v["tree"]["c"][0];
    assert_eq!(main["n"], "main");
    assert_eq!(main["c"][0]["n"], "work");
    assert_eq!(main["c"][0]["v"], 18 * PERIOD);
    assert_eq!(v["top"][0]["name"], "work");
    let (status, v) = get(&s.store, "/v1/series", "");
    assert_eq!(status, 200);
    assert_eq!(v["series"][0]["labels"]["service_name"], "app");
    assert!(v["series"][0]["labels"].get("__delta__").is_none());
    // The diff of the first and last interval.
    let q = format!(
        "left_from={t0}&left_until={}&right_from={}&right_until={}",
        t0 + 15_000,
        t0 + 45_000,
        t0 + 60_000
    );
    let (status, v) = get(&s.store, "/v1/diff", &q);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["left"]["total"].as_i64(), v["right"]["total"].as_i64()),
        (Some(4 * PERIOD), Some(7 * PERIOD))
    );
    // A pprof download of the merge.
    let r = s
        .store
        .serve_http(&HttpRequest {
            method: "GET".into(),
            path: "/v1/pprof".into(),
            query: format!("from={t0}&until=now"),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.status, 200);
    let p = ebpf_probe::pprof::decode(&r.body).unwrap();
    assert_eq!(
        p.sample.iter().map(|x| x.value[0]).sum::<i64>(),
        22 * PERIOD
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_queries_are_400_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), Arguments::default(), fast());
    s.receiver
        .append(labels("a"), raw(cpu_profile(&[(&["x"], 1)], 100, 0)))
        .unwrap();
    s.flush();
    for (path, query, want) in [
        ("/v1/profile", "from=2000&until=1000", "must be before"),
        ("/v1/profile", "from=yesterday", "invalid time"),
        ("/v1/profile", "selector={a=b}", "expected a quoted value"),
        ("/v1/profile", "profile_type=nope", "invalid profile type"),
        ("/v1/profile", "from=0&until=now", "hours can be queried"),
        ("/v1/profile", "from=now-1h&step=10", "points"),
        (
            "/v1/diff",
            "left_from=now&left_until=now-1h",
            "must be before",
        ),
    ] {
        let (status, v) = get(&s.store, path, query);
        assert_eq!(status, 400, "{path}?{query}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(want),
            "{path}?{query}: {v}"
        );
    }
    let (status, _) = get(&s.store, "/v1/nothing", "");
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_max_size_are_enforced_continuously() {
    let dir = tempfile::tempdir().unwrap();
    let args = Arguments {
        retention: Duration::from_secs(3600).into(),
        max_size: ByteSize(1 << 20),
        ..Arguments::default()
    };
    let s = start(dir.path(), args, fast());
    wait_health(&s.store, HealthState::Healthy, 10).await;
    let now = now_ms();
    // Two hours old: past retention.
    let old = cpu_profile(&[(&["old"], 1)], 100, (now - 7_200_000) * 1_000_000);
    s.receiver.append(labels("old"), raw(old)).unwrap();
    // About 3 MiB of recent profiles into a 1 MiB store.
    let pool = StackPool::new(7, 1500, 4, 1000);
    let mut rng = Rng::new(8);
    let profiles: Vec<Vec<u8>> = (0..5)
        .map(|_| pool.pprof(&pool.interval(&mut rng, 1000), 97, 0, 15_000_000_000))
        .collect();
    for i in 0..700 {
        s.receiver
            .append(labels("new"), raw(profiles[i % profiles.len()].clone()))
            .unwrap();
        if i % 50 == 0 {
            s.flush();
        }
    }
    s.flush();
    let file = dir.path().join("profiles.db");
    let wal = dir.path().join("profiles.db-wal");
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (db, w) = (size(&file), size(&wal));
        if db <= 1 << 20 && w <= 1 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "database {db} bytes, WAL {w} bytes"
        );
    }
    let (status, v) = get(&s.store, "/v1/series", "");
    assert_eq!(status, 200);
    let services: Vec<&str> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["labels"]["service_name"].as_str().unwrap())
        .collect();
    assert_eq!(services, vec!["new"], "the old series expired");
    let info = s.store.debug_info().unwrap();
    let river_parser::Value::Object(o) = info else {
        panic!()
    };
    use river_parser::{Number, Value};
    assert!(
        matches!(o["profiles_evicted"], Value::Number(Number::Uint(n)) if n > 0),
        "{o:?}"
    );
    assert!(
        matches!(o["profiles_expired"], Value::Number(Number::Uint(1))),
        "{o:?}"
    );
    s.stop().await;
}

/// A producer's fanout to a broken store and a working one: the broken one refuses with its
/// cause, the working one still gets everything.
async fn broken_store_keeps_the_fanout_going(bad_dir: &std::path::Path, cause: &str) {
    let good_dir = tempfile::tempdir().unwrap();
    let bad = start(bad_dir, Arguments::default(), fast());
    let good = start(good_dir.path(), Arguments::default(), fast());
    let msg = wait_health(&bad.store, HealthState::Unhealthy, 10).await;
    assert!(msg.contains(cause), "{msg}");
    wait_health(&good.store, HealthState::Healthy, 10).await;
    let fanout = Fanout::new(
        vec![bad.receiver.clone(), good.receiver.clone()],
        FanoutMetrics::default(),
    );
    for i in 0..3 {
        let p = cpu_profile(&[(&["f"], 1 + i)], 100, 0);
        match fanout.append(labels("svc"), raw(p)) {
            Err(AppendError::Unavailable(m)) => assert!(m.contains(cause), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    good.flush();
    let (status, v) = get(&good.store, "/v1/profile", "from=now-1h&until=now");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["total"], 6 * PERIOD);
    // The broken store's queries say why.
    let (status, v) = get(&bad.store, "/v1/series", "");
    assert_eq!(status, 503);
    assert!(v["error"].as_str().unwrap().contains(cause), "{v}");
    bad.stop().await;
    good.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_is_unhealthy_and_the_fanout_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("profiles.db"), vec![0x42u8; 16384]).unwrap();
    broken_store_keeps_the_fanout_going(dir.path(), "not a database").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_path_is_unhealthy_and_the_fanout_goes_on() {
    // Root ignores permission bits, so "unwritable" is a path below a regular file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), b"x").unwrap();
    broken_store_keeps_the_fanout_going(
        &dir.path().join("a-file").join("store"),
        "Not a directory",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_update_moves_the_store() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let s = start(a.path(), Arguments::default(), fast());
    s.receiver
        .append(labels("one"), raw(cpu_profile(&[(&["x"], 1)], 100, 0)))
        .unwrap();
    s.flush();
    s.store
        .update(Arguments {
            path: Some(b.path().display().to_string()),
            ..Arguments::default()
        })
        .unwrap();
    s.receiver
        .append(labels("two"), raw(cpu_profile(&[(&["x"], 1)], 100, 0)))
        .unwrap();
    s.flush();
    let (_, v) = get(&s.store, "/v1/series", "");
    let services: Vec<&str> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["labels"]["service_name"].as_str().unwrap())
        .collect();
    assert_eq!(services, vec!["two"]);
    assert!(b.path().join("profiles.db").exists());
    s.stop().await;
}
