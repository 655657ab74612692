//! `pyroscope.store` in `rill run`: the Connect API `querier.v1.QuerierService` decoded by a
//! client written here from the published proto field numbers (these prost structs are the
//! test's own, not the server's), with totals equal to what was stored; bad queries get 400
//! with a Connect error; a corrupt and an unwritable store are unhealthy with their cause
//! while the rest of the graph keeps running.

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use components::pyroscope::appendable::RawProfile;
use components::pyroscope::store::db::Writer;
use components::pyroscope::store::synth::cpu_profile;
use prost::Message;

#[path = "support/common_rel.rs"]
mod common_rel;
use common_rel::{free_addr, get, raw, rill_cmd, tmpdir, wait_until, Rill};

const BIN: &str = env!("CARGO_BIN_EXE_rill");
const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const PERIOD: i64 = 10_000_000; // 100 Hz

// The client's messages, from querier/v1/querier.proto and types/v1/types.proto.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProfileTypesRequest {
        #[prost(int64, tag = "1")]
        pub start: i64,
        #[prost(int64, tag = "2")]
        pub end: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProfileType {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(string, tag = "4")]
        pub sample_type: String,
        #[prost(string, tag = "5")]
        pub sample_unit: String,
        #[prost(string, tag = "6")]
        pub period_type: String,
        #[prost(string, tag = "7")]
        pub period_unit: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProfileTypesResponse {
        #[prost(message, repeated, tag = "1")]
        pub profile_types: Vec<ProfileType>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelNamesRequest {
        #[prost(string, repeated, tag = "1")]
        pub matchers: Vec<String>,
        #[prost(int64, tag = "2")]
        pub start: i64,
        #[prost(int64, tag = "3")]
        pub end: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelValuesRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, repeated, tag = "2")]
        pub matchers: Vec<String>,
        #[prost(int64, tag = "3")]
        pub start: i64,
        #[prost(int64, tag = "4")]
        pub end: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Names {
        #[prost(string, repeated, tag = "1")]
        pub names: Vec<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SelectMergeStacktracesRequest {
        #[prost(string, tag = "1")]
        pub profile_type_id: String,
        #[prost(string, tag = "2")]
        pub label_selector: String,
        #[prost(int64, tag = "3")]
        pub start: i64,
        #[prost(int64, tag = "4")]
        pub end: i64,
        #[prost(int64, optional, tag = "5")]
        pub max_nodes: Option<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SelectMergeStacktracesResponse {
        #[prost(message, optional, tag = "1")]
        pub flamegraph: Option<FlameGraph>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FlameGraph {
        #[prost(string, repeated, tag = "1")]
        pub names: Vec<String>,
        #[prost(message, repeated, tag = "2")]
        pub levels: Vec<Level>,
        #[prost(int64, tag = "3")]
        pub total: i64,
        #[prost(int64, tag = "4")]
        pub max_self: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Level {
        #[prost(int64, repeated, tag = "1")]
        pub values: Vec<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SelectSeriesRequest {
        #[prost(string, tag = "1")]
        pub profile_type_id: String,
        #[prost(string, tag = "2")]
        pub label_selector: String,
        #[prost(int64, tag = "3")]
        pub start: i64,
        #[prost(int64, tag = "4")]
        pub end: i64,
        #[prost(string, repeated, tag = "5")]
        pub group_by: Vec<String>,
        #[prost(double, tag = "6")]
        pub step: f64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SelectSeriesResponse {
        #[prost(message, repeated, tag = "1")]
        pub series: Vec<Series>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Series {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<LabelPair>,
        #[prost(message, repeated, tag = "2")]
        pub points: Vec<Point>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Point {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SelectMergeProfileRequest {
        #[prost(string, tag = "1")]
        pub profile_type_id: String,
        #[prost(string, tag = "2")]
        pub label_selector: String,
        #[prost(int64, tag = "3")]
        pub start: i64,
        #[prost(int64, tag = "4")]
        pub end: i64,
    }
    /// google.v1.Profile, the fields this test reads.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A Connect unary call: (status, content type, body bytes).
fn call(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
         Connect-Protocol-Version: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::io::Write::write_all(&mut s, &req).unwrap();
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ct = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ct, buf[split + 4..].to_vec())
}

fn proto<Req: Message, Resp: Message + Default>(addr: SocketAddr, path: &str, req: &Req) -> Resp {
    let (status, ct, body) = call(addr, path, "application/proto", &req.encode_to_vec());
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "application/proto");
    Resp::decode(body.as_slice()).unwrap()
}

fn json(addr: SocketAddr, path: &str, req: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, ct, body) = call(addr, path, "application/json", req.to_string().as_bytes());
    assert_eq!(ct, "application/json", "{path}");
    (status, serde_json::from_slice(&body).unwrap())
}

/// Flame graph bars decoded as Grafana decodes them: `(depth, name, total, self)`.
fn bars(fg: &pb::FlameGraph) -> Vec<(usize, String, i64, i64)> {
    let mut out = Vec::new();
    for (d, l) in fg.levels.iter().enumerate() {
        for v in l.values.chunks(4) {
            out.push((d, fg.names[v[3] as usize].clone(), v[1], v[2]));
        }
    }
    out
}

fn labels(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("service_name".to_string(), service.to_string()),
        ("__name__".to_string(), "process_cpu".to_string()),
    ])
}

/// Stores `api`: 3 intervals (main;work 2,3,4 + main;idle 1 each), `db`: 1 (pg;scan 5).
fn populate(dir: &Path, t0: i64) {
    let mut w = Writer::open(dir).unwrap();
    let mut batch = Vec::new();
    for i in 0..3u64 {
        let p = cpu_profile(
            &[(&["main", "work"], 2 + i), (&["main", "idle"], 1)],
            100,
            (t0 + i as i64 * 15_000) * 1_000_000,
        );
        batch.push((
            labels("api"),
            vec![RawProfile {
                raw: p,
                id: String::new(),
            }],
        ));
    }
    let p = cpu_profile(&[(&["pg", "scan"], 5)], 100, t0 * 1_000_000);
    batch.push((
        labels("db"),
        vec![RawProfile {
            raw: p,
            id: String::new(),
        }],
    ));
    w.write(&batch, SystemTime::now()).unwrap();
}

fn start(dir: &Path, config: &str, test_components: bool) -> (Rill, SocketAddr) {
    let cfg = dir.join("config.river");
    std::fs::write(&cfg, config).unwrap();
    let addr = free_addr();
    let mut cmd = rill_cmd(Path::new(BIN), &cfg, addr);
    if test_components {
        cmd.arg("--feature.test-components");
    }
    let rill = Rill::spawn(cmd);
    wait_until("ready", 30, || {
        get(addr, "/-/ready").is_some_and(|(s, _, _)| s == 200)
    });
    (rill, addr)
}

fn component(addr: SocketAddr, id: &str) -> serde_json::Value {
    let (_, _, body) = get(addr, &format!("/api/v0/web/components/{id}")).unwrap();
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_connect_api_answers_with_what_was_stored() {
    let dir = tmpdir("store-api");
    let store = dir.join("store");
    let t0 = now_ms() - 120_000;
    populate(&store, t0);
    let config = format!(
        "pyroscope.store \"local\" {{\n  path = {:?}\n}}\n",
        store.display()
    );
    let (rill, addr) = start(&dir, &config, false);
    wait_until("store healthy", 20, || {
        component(addr, "pyroscope.store.local")["health"]["state"] == "healthy"
    });
    let (start_ms, end_ms) = (t0 - 1000, now_ms());
    let root = "/querier.v1.QuerierService";
    let base = "/api/v0/component/pyroscope.store.local/querier.v1.QuerierService";

    // ProfileTypes, at the root (the only store) and under the component.
    for prefix in [root, base] {
        let r: pb::ProfileTypesResponse = proto(
            addr,
            &format!("{prefix}/ProfileTypes"),
            &pb::ProfileTypesRequest {
                start: start_ms,
                end: end_ms,
            },
        );
        assert_eq!(r.profile_types.len(), 1, "{prefix}");
        let t = &r.profile_types[0];
        assert_eq!(t.id, CPU);
        assert_eq!(
            (t.name.as_str(), t.sample_type.as_str()),
            ("process_cpu", "cpu")
        );
        assert_eq!(
            (t.sample_unit.as_str(), t.period_unit.as_str()),
            ("nanoseconds", "nanoseconds")
        );
    }
    // Grafana's health check asks for types in 1970: none, and no error.
    let r: pb::ProfileTypesResponse = proto(
        addr,
        &format!("{root}/ProfileTypes"),
        &pb::ProfileTypesRequest {
            start: 1000,
            end: 4000,
        },
    );
    assert!(r.profile_types.is_empty());

    let r: pb::Names = proto(
        addr,
        &format!("{root}/LabelNames"),
        &pb::LabelNamesRequest {
            matchers: vec!["{}".into()],
            start: start_ms,
            end: end_ms,
        },
    );
    assert!(
        r.names.contains(&"service_name".to_string()),
        "{:?}",
        r.names
    );
    let r: pb::Names = proto(
        addr,
        &format!("{root}/LabelValues"),
        &pb::LabelValuesRequest {
            name: "service_name".into(),
            matchers: vec![],
            start: start_ms,
            end: end_ms,
        },
    );
    assert_eq!(r.names, vec!["api", "db"]);
    let r: pb::Names = proto(
        addr,
        &format!("{root}/LabelValues"),
        &pb::LabelValuesRequest {
            name: "service_name".into(),
            matchers: vec![r#"{service_name=~"a.*"}"#.into()],
            start: start_ms,
            end: end_ms,
        },
    );
    assert_eq!(r.names, vec!["api"]);

    // The merged flame graph: 2+3+4 work + 3 idle samples.
    let r: pb::SelectMergeStacktracesResponse = proto(
        addr,
        &format!("{base}/SelectMergeStacktraces"),
        &pb::SelectMergeStacktracesRequest {
            profile_type_id: CPU.into(),
            label_selector: r#"{service_name="api"}"#.into(),
            start: start_ms,
            end: end_ms,
            max_nodes: Some(1024),
        },
    );
    let fg = r.flamegraph.unwrap();
    assert_eq!(fg.total, 12 * PERIOD);
    let b = bars(&fg);
    assert_eq!(b[0], (0, "total".to_string(), 12 * PERIOD, 0));
    assert!(
        b.contains(&(1, "main".to_string(), 12 * PERIOD, 0)),
        "{b:?}"
    );
    assert!(
        b.contains(&(2, "work".to_string(), 9 * PERIOD, 9 * PERIOD)),
        "{b:?}"
    );
    assert!(
        b.contains(&(2, "idle".to_string(), 3 * PERIOD, 3 * PERIOD)),
        "{b:?}"
    );

    // The timeline: one point per 15 s interval, grouped by service.
    let r: pb::SelectSeriesResponse = proto(
        addr,
        &format!("{root}/SelectSeries"),
        &pb::SelectSeriesRequest {
            profile_type_id: CPU.into(),
            label_selector: "{}".into(),
            start: t0,
            end: end_ms,
            group_by: vec!["service_name".into()],
            step: 15.0,
        },
    );
    assert_eq!(r.series.len(), 2);
    let api = r
        .series
        .iter()
        .find(|s| {
            s.labels
                .iter()
                .any(|l| l.name == "service_name" && l.value == "api")
        })
        .unwrap();
    let points: Vec<(i64, f64)> = api.points.iter().map(|p| (p.timestamp, p.value)).collect();
    assert_eq!(
        points,
        vec![
            (t0, (3 * PERIOD) as f64),
            (t0 + 15_000, (4 * PERIOD) as f64),
            (t0 + 30_000, (5 * PERIOD) as f64)
        ]
    );

    // The merged pprof.
    let p: pb::Profile = proto(
        addr,
        &format!("{root}/SelectMergeProfile"),
        &pb::SelectMergeProfileRequest {
            profile_type_id: CPU.into(),
            label_selector: "{}".into(),
            start: start_ms,
            end: end_ms,
        },
    );
    assert_eq!(
        p.sample.iter().map(|s| s.value[0]).sum::<i64>(),
        17 * PERIOD
    );
    assert_eq!(p.string_table[p.sample_type[0].r#type as usize], "cpu");

    // The same in JSON, with protojson names.
    let (status, v) = json(
        addr,
        &format!("{root}/SelectMergeStacktraces"),
        serde_json::json!({
            "profileTypeID": CPU, "labelSelector": "{service_name=\"db\"}",
            "start": start_ms.to_string(), "end": end_ms,
        }),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["flamegraph"]["total"], (5 * PERIOD).to_string());
    let (status, v) = json(
        addr,
        &format!("{root}/Series"),
        serde_json::json!({"matchers": ["{service_name=\"db\"}"]}),
    );
    assert_eq!(status, 200, "{v}");
    let set = &v["labelsSet"][0]["labels"];
    assert!(
        set.as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "__profile_type__" && l["value"] == CPU),
        "{v}"
    );

    // Bad queries: 400 with Connect's invalid_argument and a message saying why.
    for (method, body, want) in [
        (
            "SelectMergeStacktraces",
            serde_json::json!({"profileTypeID": CPU, "start": 10, "end": 5}),
            "must be before",
        ),
        (
            "SelectMergeStacktraces",
            serde_json::json!({"profileTypeID": CPU, "labelSelector": "{a=b}", "start": 1, "end": 5}),
            "quoted value",
        ),
        (
            "SelectMergeStacktraces",
            serde_json::json!({"profileTypeID": "cpu", "start": 1, "end": 5}),
            "invalid profile type",
        ),
        (
            "SelectMergeStacktraces",
            serde_json::json!({"profileTypeID": CPU, "start": 0, "end": 40u64 * 86_400_000}),
            "hours can be queried",
        ),
        (
            "SelectSeries",
            serde_json::json!({"profileTypeID": CPU, "start": 1, "end": 5, "step": 0}),
            "step",
        ),
        ("LabelValues", serde_json::json!({}), "name"),
        (
            "LabelNames",
            serde_json::json!({"matchers": ["{x!!\"y\"}"]}),
            "invalid label selector",
        ),
    ] {
        let (status, v) = json(addr, &format!("{root}/{method}"), body.clone());
        assert_eq!(status, 400, "{method} {body}: {v}");
        assert_eq!(v["code"], "invalid_argument", "{v}");
        assert!(
            v["message"].as_str().unwrap().contains(want),
            "{method} {body}: {v}"
        );
    }
    let (status, _, body) = call(addr, &format!("{root}/ProfileTypes"), "text/plain", b"x");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = call(addr, &format!("{root}/Diff"), "application/json", b"{}");
    assert_eq!(status, 501);
    drop(rill);
}

#[test]
fn broken_stores_are_unhealthy_and_the_graph_keeps_running() {
    let dir = tmpdir("store-health");
    let corrupt = dir.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("profiles.db"), vec![0x33u8; 32768]).unwrap();
    // Root ignores permission bits: the unwritable path is below a regular file.
    std::fs::write(dir.join("a-file"), b"x").unwrap();
    let unwritable = dir.join("a-file").join("store");
    let config = format!(
        "pyroscope.store \"corrupt\" {{\n  path = {:?}\n}}\n\
         pyroscope.store \"unwritable\" {{\n  path = {:?}\n}}\n\
         pyroscope.store \"good\" {{ }}\n\
         test.pulse \"p\" {{\n  interval = \"50ms\"\n}}\n",
        corrupt.display(),
        unwritable.display()
    );
    let (rill, addr) = start(&dir, &config, true);
    for (id, cause) in [
        ("pyroscope.store.corrupt", "not a database"),
        ("pyroscope.store.unwritable", "Not a directory"),
    ] {
        wait_until(id, 20, || {
            component(addr, id)["health"]["state"] == "unhealthy"
        });
        let msg = component(addr, id)["health"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains(cause), "{id}: {msg}");
    }
    wait_until("good store healthy", 20, || {
        component(addr, "pyroscope.store.good")["health"]["state"] == "healthy"
    });
    // The good store made its database under --storage.path.
    assert!(dir.join("data/pyroscope.store.good/profiles.db").exists());
    // The pulse keeps counting.
    let count = |addr| {
        let c = component(addr, "test.pulse.p");
        c["exports"][0]["value"]["value"].as_i64().unwrap_or(-1)
    };
    let first = count(addr);
    wait_until("pulse counting", 10, || count(addr) > first + 3);
    assert_eq!(
        component(addr, "test.pulse.p")["health"]["state"],
        "healthy"
    );
    // /-/healthy names the broken stores.
    let (status, _, body) = get(addr, "/-/healthy").unwrap();
    assert_eq!(status, 500);
    assert!(
        body.contains("pyroscope.store.corrupt") && body.contains("pyroscope.store.unwritable"),
        "{body}"
    );
    // Queries to a broken store: 503 unavailable with the cause; at the root, three stores
    // claim the service: 409 naming them.
    let (status, v) = json(
        addr,
        "/api/v0/component/pyroscope.store.corrupt/querier.v1.QuerierService/ProfileTypes",
        serde_json::json!({}),
    );
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["code"], "unavailable");
    assert!(
        v["message"].as_str().unwrap().contains("not a database"),
        "{v}"
    );
    let (status, v) = json(
        addr,
        "/querier.v1.QuerierService/ProfileTypes",
        serde_json::json!({}),
    );
    assert_eq!(status, 409, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("pyroscope.store.good"),
        "{v}"
    );
    let _ = raw;
    drop(rill);
}
