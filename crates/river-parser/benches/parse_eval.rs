//! Parse + evaluate throughput on a generated multi-megabyte River config, against serde_json
//! parsing an equivalent JSON document into `serde_json::Value` in the same run. Before the
//! criterion groups run, a quick timed loop prints both throughputs (MB/s, best of runs that
//! alternate between the two so both see the same machine load) and their ratio.

use criterion::{black_box, criterion_group, Criterion, Throughput};
use river_parser::eval::{eval_body, Scope};
use river_parser::parse_file;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Generates a River config of at least `min_bytes` and the equivalent JSON document.
fn generate(min_bytes: usize) -> (String, String) {
    let mut river = String::with_capacity(min_bytes + 4096);
    let mut json = String::with_capacity(min_bytes + 4096);
    json.push_str("{\"blocks\":[");
    let mut i = 0usize;
    while river.len() < min_bytes {
        if i > 0 {
            json.push(',');
        }
        let _ = write!(
            river,
            r#"prometheus.scrape "job_{i}" {{
  // Scrape job number {i}.
  targets = [
    {{ "__address__" = "host-{i}-a.example.svc:9090", env = "prod", team = "profiling" }},
    {{ "__address__" = "host-{i}-b.example.svc:9090", env = "staging", team = "profiling" }},
  ]
  job_name        = "job-{i}"
  scrape_interval = "15s"
  scrape_timeout  = "10s"
  enabled         = true
  sample_ratio    = 0.{r}
  port            = {port}
  tags            = ["alpha", "beta", "gamma", "delta", "epsilon"]
  limits          = {{ max_samples = {max}, max_labels = 30, burst = 1.5, strict = false }}

  relabel {{
    source_labels = ["__meta_kubernetes_pod_name", "__meta_kubernetes_namespace"]
    target_label  = "instance"
    regex         = "(.+)-[a-z0-9]+"
    replacement   = "$1"
    action        = "replace"
  }}

  http_client_config {{
    bearer_token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    follow_redirects  = true
    ports             = [{p0}, {p1}, {p2}, {p3}]
  }}
}}

"#,
            r = i % 10,
            port = 9000 + i % 1000,
            max = 10_000 + i,
            p0 = i,
            p1 = i + 1,
            p2 = i + 2,
            p3 = i + 3,
        );
        let _ = write!(
            json,
            r#"{{"name":"prometheus.scrape","label":"job_{i}","comment":"Scrape job number {i}.","targets":[{{"__address__":"host-{i}-a.example.svc:9090","env":"prod","team":"profiling"}},{{"__address__":"host-{i}-b.example.svc:9090","env":"staging","team":"profiling"}}],"job_name":"job-{i}","scrape_interval":"15s","scrape_timeout":"10s","enabled":true,"sample_ratio":0.{r},"port":{port},"tags":["alpha","beta","gamma","delta","epsilon"],"limits":{{"max_samples":{max},"max_labels":30,"burst":1.5,"strict":false}},"relabel":{{"source_labels":["__meta_kubernetes_pod_name","__meta_kubernetes_namespace"],"target_label":"instance","regex":"(.+)-[a-z0-9]+","replacement":"$1","action":"replace"}},"http_client_config":{{"bearer_token_file":"/var/run/secrets/kubernetes.io/serviceaccount/token","follow_redirects":true,"ports":[{p0},{p1},{p2},{p3}]}}}}"#,
            r = i % 10,
            port = 9000 + i % 1000,
            max = 10_000 + i,
            p0 = i,
            p1 = i + 1,
            p2 = i + 2,
            p3 = i + 3,
        );
        i += 1;
    }
    json.push_str("]}");
    (river, json)
}

fn parse_and_eval(src: &str, scope: &Scope) -> usize {
    let file = parse_file(src).expect("generated config parses");
    let body = eval_body(&file.body, scope).expect("generated config evaluates");
    body.items.len()
}

fn parse_json(src: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(src).expect("generated json parses");
    v["blocks"].as_array().map_or(0, Vec::len)
}

/// Best-of-N timing of `f` over `budget`, in MB/s.
fn throughput(bytes: usize, budget: Duration, mut f: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs < 3 || start.elapsed() < budget {
        let t = Instant::now();
        black_box(f());
        best = best.min(t.elapsed());
        runs += 1;
    }
    bytes as f64 / 1e6 / best.as_secs_f64()
}

/// Best-of-N timings of `a` and `b` run alternately over `budget`, so both see the same machine
/// load (the machine is shared), in MB/s of `a_bytes` and `b_bytes`.
fn paired_throughput(
    budget: Duration,
    (a_bytes, mut a): (usize, impl FnMut() -> usize),
    (b_bytes, mut b): (usize, impl FnMut() -> usize),
) -> (f64, f64) {
    let start = Instant::now();
    let (mut best_a, mut best_b) = (Duration::MAX, Duration::MAX);
    let mut runs = 0;
    while runs < 3 || start.elapsed() < budget {
        let t = Instant::now();
        black_box(a());
        best_a = best_a.min(t.elapsed());
        let t = Instant::now();
        black_box(b());
        best_b = best_b.min(t.elapsed());
        runs += 1;
    }
    let mbs = |bytes: usize, d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    (mbs(a_bytes, best_a), mbs(b_bytes, best_b))
}

const SIZE: usize = 6 * 1024 * 1024;

fn quick_report() {
    let (river, json) = generate(SIZE);
    let scope = Scope::new();
    let blocks = parse_and_eval(&river, &scope);
    assert_eq!(blocks, parse_json(&json), "documents are equivalent");
    let budget = Duration::from_secs(3);
    let (river_mbs, json_mbs) = paired_throughput(
        Duration::from_secs(6),
        (river.len(), || parse_and_eval(&river, &scope)),
        (json.len(), || parse_json(&json)),
    );
    let parse_mbs = throughput(river.len(), budget, || {
        parse_file(&river).map_or(0, |f| f.body.len())
    });
    let lex_mbs = throughput(river.len(), budget, || {
        river_parser::lexer::tokenize(&river).tokens.len()
    });
    let file = parse_file(&river).expect("generated config parses");
    let eval_mbs = throughput(river.len(), budget, || {
        eval_body(&file.body, &scope).map_or(0, |v| v.items.len())
    });
    println!(
        "parse_eval: breakdown: tokenize only {lex_mbs:.1} MB/s, parse_file (incl. tokenize) \
         {parse_mbs:.1} MB/s, eval_body only {eval_mbs:.1} MB/s"
    );
    println!(
        "parse_eval: river {:.1} MB ({blocks} blocks) parse+eval {river_mbs:.1} MB/s; \
         json {:.1} MB serde_json::Value {json_mbs:.1} MB/s; ratio {:.2}x",
        river.len() as f64 / 1e6,
        json.len() as f64 / 1e6,
        river_mbs / json_mbs
    );
}

fn bench(c: &mut Criterion) {
    let (river, json) = generate(SIZE);
    let scope = Scope::new();
    let mut g = c.benchmark_group("parse_eval");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(river.len() as u64));
    g.bench_function("river_parse_eval", |b| {
        b.iter(|| parse_and_eval(black_box(&river), &scope))
    });
    let file = parse_file(&river).expect("generated config parses");
    g.bench_function("river_eval_only", |b| {
        b.iter(|| eval_body(black_box(&file.body), &scope).map(|v| v.items.len()))
    });
    g.bench_function("river_parse_only", |b| {
        b.iter(|| parse_file(black_box(&river)).map(|f| f.body.len()))
    });
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("serde_json_value", |b| {
        b.iter(|| parse_json(black_box(&json)))
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    // Profiling runs (`--profile-time`) want only the selected benchmark.
    if !std::env::args().any(|a| a == "--profile-time") {
        quick_report();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
