//! Runtime scenarios with the test components: propagation through chains and diamonds,
//! update-only-on-change, graph errors with positions, and reloads.

#[path = "support/common.rs"]
mod common;

use common::*;
use flow_runtime::testing::{fire, stats};
use flow_runtime::{HealthState, LoadError};
use std::sync::atomic::Ordering::SeqCst;

const CHAIN: &str = r#"
test.pulse "p" { }

test.passthrough "a" {
  input = test.pulse.p.count
}

test.passthrough "b" {
  input = test.passthrough.a.output
}
"#;

#[tokio::test]
async fn chain_propagates_exports() {
    let dir = storage();
    let rt = runtime_with(dir.clone(), None);
    rt.load(CHAIN).await.unwrap();
    assert_eq!(
        export(&rt, "test.passthrough.b", "output").await,
        Some(int(0))
    );
    fire(&dir.join("test.pulse.p"));
    wait_for("b = 1", || async {
        export(&rt, "test.passthrough.b", "output").await == Some(int(1))
    })
    .await;
    fire(&dir.join("test.pulse.p"));
    wait_for("b = 2", || async {
        export(&rt, "test.passthrough.b", "output").await == Some(int(2))
    })
    .await;
    let b = stats(&dir.join("test.passthrough.b"));
    assert_eq!(b.builds.load(SeqCst), 1);
    assert_eq!(b.updates.load(SeqCst), 2);
    assert_eq!(b.run_starts.load(SeqCst), 1);
}

#[tokio::test]
async fn diamond_evaluates_the_join_once_per_change() {
    let dir = storage();
    let rt = runtime_with(dir.clone(), None);
    rt.load(
        r#"
test.pulse "p" { }
test.passthrough "left" { input = test.pulse.p.count }
test.passthrough "right" { input = test.pulse.p.count * 10 }
test.sum "join" { inputs = [test.passthrough.left.output, test.passthrough.right.output] }
test.passthrough "unrelated" { input = "constant" }
"#,
    )
    .await
    .unwrap();
    assert_eq!(export(&rt, "test.sum.join", "sum").await, Some(int(0)));
    fire(&dir.join("test.pulse.p"));
    wait_for("join = 11", || async {
        export(&rt, "test.sum.join", "sum").await == Some(int(11))
    })
    .await;
    // Let any stray evaluation settle, then check the join saw exactly one update.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(stats(&dir.join("test.sum.join")).updates.load(SeqCst), 1);
    // The unrelated component was never touched by the propagation.
    let unrelated = rt.component("test.passthrough.unrelated").await.unwrap();
    assert_eq!(
        unrelated.health_history.len(),
        1,
        "{:?}",
        unrelated.health_history
    );
    assert_eq!(
        stats(&dir.join("test.passthrough.unrelated"))
            .updates
            .load(SeqCst),
        0
    );
}

#[tokio::test]
async fn update_only_when_arguments_change() {
    let dir = storage();
    let rt = runtime_with(dir.clone(), None);
    // `c` is re-evaluated on every pulse, but its decoded arguments never change.
    rt.load(
        r#"
test.pulse "p" { }
test.passthrough "c" { input = test.pulse.p.count * 0 + 5 }
test.passthrough "d" { input = test.pulse.p.count }
"#,
    )
    .await
    .unwrap();
    for i in 1..=3 {
        fire(&dir.join("test.pulse.p"));
        wait_for("d follows", || async {
            export(&rt, "test.passthrough.d", "output").await == Some(int(i))
        })
        .await;
    }
    let c = stats(&dir.join("test.passthrough.c"));
    assert_eq!(c.updates.load(SeqCst), 0);
    let info = rt.component("test.passthrough.c").await.unwrap();
    assert_eq!(info.health.message, "arguments unchanged");
    assert_eq!(
        stats(&dir.join("test.passthrough.d")).updates.load(SeqCst),
        3
    );
}

async fn rejected(src: &str) -> String {
    let rt = runtime_with(storage(), None);
    match rt.load(src).await {
        Err(LoadError::Rejected { rendered, .. }) => rendered,
        other => panic!("expected a rejected load, got {other:?}"),
    }
}

#[tokio::test]
async fn cycles_are_rejected_with_positions() {
    let out = rejected(
        r#"test.passthrough "a" { input = test.passthrough.c.output }
test.passthrough "b" { input = test.passthrough.a.output }
test.passthrough "c" { input = test.passthrough.b.output }
"#,
    )
    .await;
    assert!(
        out.starts_with(
            "config.river:1:1: cycle: test.passthrough.a, test.passthrough.b, test.passthrough.c\n"
        ),
        "{out}"
    );
}

#[tokio::test]
async fn self_reference_is_rejected() {
    let out = rejected("test.passthrough \"a\" {\n  input = test.passthrough.a.output\n}\n").await;
    assert!(
        out.starts_with("config.river:2:11: component \"test.passthrough.a\" references itself"),
        "{out}"
    );
}

#[tokio::test]
async fn unknown_references_are_rejected() {
    let out = rejected(
        "test.pulse \"p\" { }\ntest.passthrough \"a\" {\n  input = test.pulse.nope.count + 1\n}\n",
    )
    .await;
    assert!(
        out.starts_with(
            "config.river:3:11: component \"test.pulse.nope.count\" does not exist or is out of scope"
        ),
        "{out}"
    );
    assert!(out.contains("^^^^^^^^^^^^^^^^^^^^^"), "{out}");
}

#[tokio::test]
async fn stdlib_names_are_not_references() {
    let rt = runtime_with(storage(), None);
    rt.load("test.passthrough \"a\" { input = constants.os }\n")
        .await
        .unwrap();
    assert!(matches!(
        export(&rt, "test.passthrough.a", "output").await,
        Some(river_parser::Value::String(_))
    ));
}

#[tokio::test]
async fn duplicate_ids_name_both_positions() {
    let out = rejected("test.pulse \"p\" { }\n\ntest.pulse \"p\" { }\n").await;
    assert!(
        out.contains("config.river:1:1: component \"test.pulse.p\" declared again at 3:1"),
        "{out}"
    );
    assert!(
        out.contains("config.river:3:1: component \"test.pulse.p\" already declared at 1:1"),
        "{out}"
    );
}

#[tokio::test]
async fn unknown_component_and_missing_label() {
    let out = rejected("test.nope \"x\" { }\ntest.pulse { }\n").await;
    assert!(
        out.contains("config.river:1:1: unknown component \"test.nope\""),
        "{out}"
    );
    assert!(
        out.contains("config.river:2:1: component \"test.pulse\" must have a label"),
        "{out}"
    );
}

#[tokio::test]
async fn parse_errors_are_rejected() {
    let out = rejected("test.pulse \"p\" {\n").await;
    assert!(out.starts_with("config.river:"), "{out}");
}

#[tokio::test]
async fn reload_keeps_same_id_components_running() {
    let dir = storage();
    let rt = runtime_with(dir.clone(), None);
    rt.load(CHAIN).await.unwrap();
    let ids = ["test.pulse.p", "test.passthrough.a", "test.passthrough.b"];
    for id in ids {
        wait_for("run started", || async {
            stats(&dir.join(id)).run_starts.load(SeqCst) == 1
        })
        .await;
    }
    let changed = CHAIN.replace(
        "input = test.passthrough.a.output",
        "input = test.passthrough.a.output + 100",
    );
    rt.load(&changed).await.unwrap();
    assert_eq!(
        export(&rt, "test.passthrough.b", "output").await,
        Some(int(100))
    );
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for id in ids {
        let s = stats(&dir.join(id));
        assert_eq!(s.builds.load(SeqCst), 1, "{id} rebuilt");
        assert_eq!(s.run_starts.load(SeqCst), 1, "{id} restarted");
        assert_eq!(s.run_stops.load(SeqCst), 0, "{id} stopped");
    }
    assert_eq!(
        stats(&dir.join("test.passthrough.a")).updates.load(SeqCst),
        0
    );
    assert_eq!(
        stats(&dir.join("test.passthrough.b")).updates.load(SeqCst),
        1
    );
    // Propagation still works through the kept components.
    fire(&dir.join("test.pulse.p"));
    wait_for("b = 101", || async {
        export(&rt, "test.passthrough.b", "output").await == Some(int(101))
    })
    .await;
}

#[tokio::test]
async fn reload_removes_and_adds() {
    let dir = storage();
    let rt = runtime_with(dir.clone(), None);
    rt.load(CHAIN).await.unwrap();
    let next = r#"
test.pulse "p" { }
test.passthrough "a" { input = test.pulse.p.count }
test.sum "new" { inputs = [test.passthrough.a.output, 7] }
"#;
    rt.load(next).await.unwrap();
    let b = stats(&dir.join("test.passthrough.b"));
    assert_eq!(b.run_stops.load(SeqCst), 1, "removed component stopped");
    assert!(rt.component("test.passthrough.b").await.is_none());
    assert_eq!(export(&rt, "test.sum.new", "sum").await, Some(int(7)));
    wait_for("new component running", || async {
        stats(&dir.join("test.sum.new")).run_starts.load(SeqCst) == 1
    })
    .await;
    let ids: Vec<String> = rt.components().await.into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["test.pulse.p", "test.passthrough.a", "test.sum.new"]);
    // Adding back a previously removed ID builds a fresh instance.
    rt.load(CHAIN).await.unwrap();
    assert_eq!(b.builds.load(SeqCst), 2);
}

#[tokio::test]
async fn bad_reload_changes_nothing() {
    let dir = storage();
    let rt = runtime_with(dir.clone(), None);
    rt.load(CHAIN).await.unwrap();
    let before = format!("{:?}", rt.components().await);
    let before_b = format!("{:?}", rt.component("test.passthrough.b").await);
    // Valid new blocks next to a graph error: nothing may be applied.
    let bad = r#"
test.pulse "p" { interval = "1ms" }
test.passthrough "a" { input = 42 }
test.passthrough "b" { input = test.passthrough.missing.output }
test.sum "added" { inputs = [1] }
"#;
    let err = rt.load(bad).await.unwrap_err();
    assert!(matches!(err, LoadError::Rejected { .. }));
    assert!(err.rendered().contains("test.passthrough.missing.output"));
    assert_eq!(format!("{:?}", rt.components().await), before);
    assert_eq!(
        format!("{:?}", rt.component("test.passthrough.b").await),
        before_b
    );
    assert_eq!(
        stats(&dir.join("test.passthrough.a")).updates.load(SeqCst),
        0
    );
    assert_eq!(stats(&dir.join("test.pulse.p")).updates.load(SeqCst), 0);
    assert_eq!(stats(&dir.join("test.sum.added")).builds.load(SeqCst), 0);
}

#[tokio::test]
async fn failing_evaluation_keeps_last_good_state() {
    let dir = storage();
    let rt = runtime_with(dir.clone(), None);
    rt.load(CHAIN).await.unwrap();
    let bad = CHAIN.replace(
        "input = test.passthrough.a.output",
        "input = test.passthrough.a.output + \"x\"",
    );
    let err = rt.load(&bad).await.unwrap_err();
    assert!(matches!(err, LoadError::Evaluation { .. }), "{err:?}");
    assert!(
        err.rendered()
            .starts_with("config.river:9:39: \"x\" should be number, got string"),
        "{}",
        err.rendered()
    );
    let b = rt.component("test.passthrough.b").await.unwrap();
    assert_eq!(b.health.state, HealthState::Unhealthy);
    assert!(
        b.health.message.contains("should be"),
        "{}",
        b.health.message
    );
    assert_eq!(
        export(&rt, "test.passthrough.b", "output").await,
        Some(int(0))
    );
    // Fixing the file makes it healthy again.
    rt.load(CHAIN).await.unwrap();
    let b = rt.component("test.passthrough.b").await.unwrap();
    assert_eq!(b.health.state, HealthState::Healthy);
}

#[tokio::test]
async fn pulse_with_interval_counts_to_max() {
    let dir = storage();
    let rt = runtime_with(dir.clone(), None);
    rt.load(
        r#"
test.pulse "p" {
  interval = "1ms"
  max = 5
}
test.passthrough "end" { input = test.pulse.p.count }
"#,
    )
    .await
    .unwrap();
    wait_for("end = 5", || async {
        export(&rt, "test.passthrough.end", "output").await == Some(int(5))
    })
    .await;
    rt.shutdown().await;
    assert_eq!(stats(&dir.join("test.pulse.p")).run_stops.load(SeqCst), 1);
}

#[tokio::test]
async fn capsules_carry_receivers_between_components() {
    let dir = storage();
    let rt = runtime_with(dir.clone(), None);
    let src = r#"
test.sink "a" { }
test.sink "b" { }
test.sender "s" {
  value = 7
  forward_to = [test.sink.a.receiver, test.sink.b.receiver]
}
"#;
    rt.load(src).await.unwrap();
    let received = |id: &'static str| {
        let rt = rt.clone();
        async move { format!("{:?}", rt.component(id).await.unwrap().debug_info) }
    };
    assert_eq!(received("test.sink.a").await, "Some({\"received\": [7]})");
    assert_eq!(received("test.sink.b").await, "Some({\"received\": [7]})");
    // Same capsules and value on reload: no update, nothing sent again.
    rt.load(src).await.unwrap();
    assert_eq!(stats(&dir.join("test.sender.s")).updates.load(SeqCst), 0);
    // Dropping one receiver is an argument change.
    rt.load(&src.replace(", test.sink.b.receiver", ""))
        .await
        .unwrap();
    assert_eq!(
        received("test.sink.a").await,
        "Some({\"received\": [7, 7]})"
    );
    assert_eq!(received("test.sink.b").await, "Some({\"received\": [7]})");
    // A capsule where a number is expected is an evaluation error with a position.
    let err = rt
        .load(&src.replace("value = 7", "value = test.sink.a.receiver"))
        .await
        .unwrap_err();
    assert!(
        err.rendered().starts_with("config.river:5:"),
        "{}",
        err.rendered()
    );
}

#[tokio::test]
async fn labels_must_be_identifiers() {
    let out = rejected("test.passthrough \"<script>alert(1)</script>\" { input = 1 }\n").await;
    // The parser (or, for ASTs built otherwise, the loader) rejects it at the label.
    assert!(out.starts_with("config.river:1:18: "), "{out}");
    assert!(out.contains("valid identifier"), "{out}");
}

#[tokio::test]
async fn logging_block_is_decoded_and_checked() {
    let rt = runtime_with(storage(), None);
    rt.load("logging {\n  level  = \"debug\"\n  format = \"json\"\n}\n")
        .await
        .unwrap();
    let out = rejected("logging {\n  level = \"loud\"\n}\ntest.pulse \"p\" { }\n").await;
    assert!(out.starts_with("config.river:2:"), "{out}");
    assert!(out.contains("loud"), "{out}");
    let out = rejected("logging \"x\" { }\n").await;
    assert!(
        out.starts_with("config.river:1:9: block \"logging\" does not take a label"),
        "{out}"
    );
}
