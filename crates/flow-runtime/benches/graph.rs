//! Benchmark: a generated config of 1,000 components in 10 chains of 100 (a `test.pulse` followed
//! by 99 `test.passthrough`). Measures the time to first load, the time for one export change to
//! reach the end of a 100-long chain, and `/-/reload` latency (real HTTP server) for a one-line
//! change. Run with `cargo bench -p flow-runtime --bench graph`.

#![allow(
    clippy::unwrap_used,
    reason = "benchmark setup and measurement: a failure aborts the benchmark"
)]

use flow_runtime::testing::fire;
use flow_runtime::{Runtime, RuntimeOptions};
use river_parser::{Number, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAINS: usize = 10;
const LENGTH: usize = 100;

fn config(bump: i64) -> String {
    let mut s = String::new();
    for c in 0..CHAINS {
        let _ = writeln!(s, "test.pulse \"c{c}\" {{ }}\n");
        for i in 1..LENGTH {
            let prev = if i == 1 {
                format!("test.pulse.c{c}.count")
            } else {
                format!("test.passthrough.c{c}_{}.output", i - 1)
            };
            // The one line that differs between the two reload variants.
            let extra = if c == CHAINS - 1 && i == 1 {
                format!(" + {bump}")
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "test.passthrough \"c{c}_{i}\" {{\n  input = {prev}{extra}\n}}\n"
            );
        }
    }
    s
}

async fn end_value(rt: &Runtime, chain: usize) -> Option<Value> {
    let id = format!("test.passthrough.c{chain}_{}", LENGTH - 1);
    match rt.component(&id).await?.exports? {
        Value::Object(m) => m.get("output").cloned(),
        _ => None,
    }
}

async fn post_reload(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

async fn bench() {
    let dir = std::env::temp_dir().join(format!("rill-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("config.river");
    let src = config(0);
    std::fs::write(&cfg_path, &src).unwrap();
    let data = dir.join("data");

    // For reference: parsing alone (part of every load and reload).
    let t = Instant::now();
    let file = river_parser::parse_file(&src).unwrap();
    let parse = t.elapsed();
    let t = Instant::now();
    let _graph =
        flow_runtime::loader::load(&file, &src, &flow_runtime::testing::registry()).unwrap();
    println!(
        "parse alone: {:.1} ms; graph building (references, cycles, order) alone: {:.1} ms",
        parse.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );

    // 1. First load.
    let t = Instant::now();
    let rt = Runtime::new(
        flow_runtime::testing::registry(),
        RuntimeOptions {
            storage_path: data.clone(),
            file_name: "config.river".into(),
            config_path: Some(cfg_path.clone()),
        },
    );
    rt.load(&src).await.unwrap();
    let first_load = t.elapsed();
    assert_eq!(rt.components().await.len(), CHAINS * LENGTH);
    println!(
        "first load of {} components ({} bytes): {:.1} ms",
        CHAINS * LENGTH,
        src.len(),
        first_load.as_secs_f64() * 1e3
    );

    // 2. One export change through a 100-long chain.
    let mut samples = Vec::new();
    for round in 1..=30i64 {
        let t = Instant::now();
        fire(&Path::new(&data).join("test.pulse.c0"));
        let want = Some(Value::Number(Number::Int(round)));
        loop {
            if end_value(&rt, 0).await == want {
                break;
            }
            tokio::task::yield_now().await;
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "propagation timed out"
            );
        }
        samples.push(t.elapsed());
    }
    let p = median(samples.clone());
    println!(
        "export change to the end of a {LENGTH}-long chain: median {:.2} ms, min {:.2} ms, max {:.2} ms ({} runs)",
        p.as_secs_f64() * 1e3,
        samples.iter().min().unwrap().as_secs_f64() * 1e3,
        samples.iter().max().unwrap().as_secs_f64() * 1e3,
        samples.len()
    );

    // 3. /-/reload for a one-line change.
    let cancel = tokio_util::sync::CancellationToken::new();
    let (addr, _task) =
        flow_runtime::http::serve(rt.clone(), "127.0.0.1:0".parse().unwrap(), cancel.clone())
            .await
            .unwrap();
    let mut samples = Vec::new();
    for round in 1..=20i64 {
        std::fs::write(&cfg_path, config(round)).unwrap();
        let t = Instant::now();
        let resp = post_reload(addr).await;
        samples.push(t.elapsed());
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    let r = median(samples.clone());
    println!(
        "/-/reload with a one-line change ({} components): median {:.1} ms, min {:.1} ms, max {:.1} ms ({} runs)",
        CHAINS * LENGTH,
        r.as_secs_f64() * 1e3,
        samples.iter().min().unwrap().as_secs_f64() * 1e3,
        samples.iter().max().unwrap().as_secs_f64() * 1e3,
        samples.len()
    );
    cancel.cancel();
    rt.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
