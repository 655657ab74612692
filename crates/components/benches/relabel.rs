//! Relabeling throughput: 10,000 targets of 30 labels through 20 rules (a mix of every common
//! action). Criterion reports time per batch; divide by 10,000 × 20 for ns per target per rule
//! (the throughput line, in elements, is set to targets × rules).

use components::discovery::relabel::{compile_rules, process, Labels, Rule, RuleArgs};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const TARGETS: usize = 10_000;
const LABELS: usize = 30;

fn targets() -> Vec<Labels> {
    (0..TARGETS)
        .map(|t| {
            let mut l = Labels::new();
            l.insert(
                "__address__".into(),
                format!("10.0.{}.{}:8080", t / 256, t % 256),
            );
            l.insert(
                "__meta_docker_container_name".into(),
                format!("/service-{}", t % 97),
            );
            l.insert("__meta_docker_container_id".into(), format!("{t:064x}"));
            l.insert("env".into(), if t % 3 == 0 { "prod" } else { "dev" }.into());
            for i in l.len()..LABELS {
                l.insert(
                    format!("__meta_docker_container_label_key_{i}"),
                    format!("value-{i}-{t}"),
                );
            }
            l
        })
        .collect()
}

fn rule(action: &str, f: impl FnOnce(&mut RuleArgs)) -> RuleArgs {
    let mut a = RuleArgs {
        action: action.into(),
        ..RuleArgs::default()
    };
    f(&mut a);
    a
}

fn rules() -> Vec<Rule> {
    let sl = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let args = vec![
        rule("replace", |a| {
            a.source_labels = sl(&["__meta_docker_container_name"]);
            a.regex = "/(.*)".into();
            a.target_label = "service_name".into();
        }),
        rule("keep", |a| {
            a.source_labels = sl(&["__address__"]);
            a.regex = "10\\..*".into();
        }),
        rule("drop", |a| {
            a.source_labels = sl(&["env"]);
            a.regex = "staging".into();
        }),
        rule("labelmap", |a| {
            a.regex = "__meta_docker_container_label_(key_1.)".into();
            a.replacement = "$1".into();
        }),
        rule("hashmod", |a| {
            a.source_labels = sl(&["__address__"]);
            a.modulus = 8;
            a.target_label = "__tmp_hash".into();
        }),
        rule("lowercase", |a| {
            a.source_labels = sl(&["service_name"]);
            a.target_label = "service_lower".into();
        }),
        rule("uppercase", |a| {
            a.source_labels = sl(&["env"]);
            a.target_label = "ENV".into();
        }),
        rule("replace", |a| {
            a.source_labels = sl(&["env", "service_name"]);
            a.regex = "(\\w+);(.*)".into();
            a.target_label = "${1}_app".into();
            a.replacement = "$2".into();
        }),
        rule("keepequal", |a| {
            a.source_labels = sl(&["service_name"]);
            a.target_label = "service_lower".into();
        }),
        rule("dropequal", |a| {
            a.source_labels = sl(&["env"]);
            a.target_label = "ENV".into();
        }),
        rule("replace", |a| {
            a.source_labels = sl(&["__meta_docker_container_id"]);
            a.regex = "(.{12}).*".into();
            a.target_label = "container_short".into();
        }),
        rule("replace", |a| {
            a.target_label = "job".into();
            a.replacement = "docker".into();
        }),
        rule("labeldrop", |a| a.regex = "__tmp_.*".into()),
        rule("replace", |a| {
            a.source_labels = sl(&["missing"]);
            a.target_label = "nothing".into();
        }),
        rule("drop", |a| {
            a.source_labels = sl(&["__meta_docker_container_label_key_20"]);
            a.regex = "never-.*".into();
        }),
        rule("replace", |a| {
            a.source_labels = sl(&["__address__"]);
            a.regex = "(.*):(\\d+)".into();
            a.target_label = "port".into();
            a.replacement = "$2".into();
        }),
        rule("hashmod", |a| {
            a.source_labels = sl(&["service_name", "env"]);
            a.modulus = 1000;
            a.target_label = "shard".into();
        }),
        rule("keep", |a| {
            a.source_labels = sl(&["shard"]);
            a.regex = "\\d+".into();
        }),
        rule("labelmap", |a| {
            a.regex = "(service)_(name)".into();
            a.replacement = "${1}".into();
        }),
        rule("labelkeep", |a| {
            a.regex =
                "__.*|service.*|env|ENV|job|port|shard|key_.*|dev_app|prod_app|container_short"
                    .into()
        }),
    ];
    assert_eq!(args.len(), 20);
    compile_rules(&args).expect("bench rules are valid")
}

fn bench(c: &mut Criterion) {
    let targets = targets();
    let rules = rules();
    let mut g = c.benchmark_group("relabel");
    g.throughput(Throughput::Elements((TARGETS * rules.len()) as u64));
    g.sample_size(10);
    g.bench_function("10k_targets_30_labels_20_rules", |b| {
        b.iter_batched(
            || targets.clone(),
            |ts| {
                let mut kept = 0usize;
                for t in ts {
                    if process(t, &rules).is_some() {
                        kept += 1;
                    }
                }
                black_box(kept)
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
