//! `discovery.relabel` as a component: exports `output` and `rules`, publishes only when the
//! output changes, rejects invalid rules on build and update.

use components::discovery::relabel::{Arguments, Labels, Relabel, RuleArgs, RULES_TYPE_NAME};
use flow_runtime::{Component, ExportsHandle, MetricsRegistry, Options};
use river_parser::Value;

fn opts() -> Options {
    Options {
        id: "discovery.relabel.test".into(),
        span: tracing::Span::none(),
        data_path: std::env::temp_dir().join("rill-relabel-test"),
        exports: ExportsHandle::new(),
        metrics: MetricsRegistry::for_component("discovery.relabel.test"),
    }
}

fn t(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn keep_web() -> Vec<RuleArgs> {
    vec![
        RuleArgs {
            source_labels: Some(vec!["app".into()]),
            regex: "web-(.*)".into(),
            target_label: "instance".into(),
            ..RuleArgs::default()
        },
        RuleArgs {
            source_labels: Some(vec!["app".into()]),
            regex: "web-.*".into(),
            action: "keep".into(),
            ..RuleArgs::default()
        },
    ]
}

fn output_of(exports: &ExportsHandle) -> Vec<Labels> {
    let Some(Value::Object(m)) = exports.get() else {
        panic!("no exports")
    };
    let Some(Value::Array(items)) = m.get("output") else {
        panic!("no output export")
    };
    items
        .iter()
        .map(|i| match i {
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k.clone(), s.clone()),
                    other => panic!("label value {}", other.type_name()),
                })
                .collect(),
            other => panic!("target {}", other.type_name()),
        })
        .collect()
}

#[test]
fn exports_output_and_rules_and_publishes_only_on_change() {
    let o = opts();
    let exports = o.exports.clone();
    let args = Arguments {
        targets: vec![t(&[("app", "web-1")]), t(&[("app", "db-1")])],
        rules: keep_web(),
    };
    let c = Relabel::build(o, args).expect("valid");
    assert_eq!(
        output_of(&exports),
        vec![t(&[("app", "web-1"), ("instance", "1")])]
    );
    let Some(Value::Object(m)) = exports.get() else {
        panic!()
    };
    match m.get("rules") {
        Some(Value::Capsule(cap)) => {
            assert_eq!(cap.type_name, RULES_TYPE_NAME);
            let rules = cap
                .downcast::<components::discovery::relabel::Rules>()
                .expect("rules capsule");
            assert_eq!(rules.len(), 2);
        }
        other => panic!("rules export: {other:?}"),
    }
    assert_eq!(c.publish_count(), 1);

    // Different input, same output (the extra target is dropped): nothing published.
    c.update(Arguments {
        targets: vec![
            t(&[("app", "web-1")]),
            t(&[("app", "db-1")]),
            t(&[("app", "cache-1")]),
        ],
        rules: keep_web(),
    })
    .expect("valid");
    assert_eq!(c.publish_count(), 1);

    // Changed output: published.
    c.update(Arguments {
        targets: vec![t(&[("app", "web-2")])],
        rules: keep_web(),
    })
    .expect("valid");
    assert_eq!(c.publish_count(), 2);
    assert_eq!(
        output_of(&exports),
        vec![t(&[("app", "web-2"), ("instance", "2")])]
    );

    // No rules: targets pass through unchanged.
    c.update(Arguments {
        targets: vec![t(&[("app", "web-2")])],
        rules: vec![],
    })
    .expect("valid");
    assert_eq!(output_of(&exports), vec![t(&[("app", "web-2")])]);
}

#[test]
fn invalid_rules_fail_build_and_update_keeping_last_good() {
    let bad = vec![RuleArgs {
        action: "x".into(),
        ..RuleArgs::default()
    }];
    let e = Relabel::build(
        opts(),
        Arguments {
            targets: vec![],
            rules: bad.clone(),
        },
    )
    .expect_err("invalid");
    assert_eq!(e.to_string(), "unrecognized action type \"x\"");

    let o = opts();
    let exports = o.exports.clone();
    let c = Relabel::build(
        o,
        Arguments {
            targets: vec![t(&[("app", "web-1")])],
            rules: keep_web(),
        },
    )
    .expect("valid");
    let mut two = keep_web();
    two.push(RuleArgs {
        action: "hashmod".into(),
        target_label: "h".into(),
        ..RuleArgs::default()
    });
    let e = c
        .update(Arguments {
            targets: vec![],
            rules: two,
        })
        .expect_err("invalid");
    assert_eq!(
        e.to_string(),
        "rule[2]: relabel configuration for hashmod requires non-zero modulus"
    );
    assert_eq!(
        output_of(&exports),
        vec![t(&[("app", "web-1"), ("instance", "1")])]
    );
}
