//! The profiling module Grafana's Kubernetes monitoring Helm chart generates (a
//! `declare "profiling"` wrapping `discovery.kubernetes`, `discovery.relabel` and
//! `pyroscope.ebpf`, instantiated once with the destinations), loaded with the real component
//! registry: the graph builds (names, module IDs, references through the module's argument) and
//! every component's arguments decode. Running it needs root and a Kubernetes API server:
//! `crates/rill/tests/alloy_kubernetes.rs` runs the same file through `rill run`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed step panics the test"
)]

use components::discovery::{kubernetes, relabel};
use components::pyroscope::{ebpf, write};
use flow_runtime::loader::{self, GraphDef, NodeKind};
use flow_runtime::Source;
use river_parser::eval::{eval_body, Scope};
use river_parser::{Validate, Value};
use serde::de::DeserializeOwned;

/// The chart's module (feature-profiling `_module.alloy.tpl` with the eBPF section, as its
/// snapshot tests render it) and its use in the chart's top-level configuration; the same file
/// runs end to end in `crates/rill/tests/alloy_kubernetes.rs`.
const CONFIG: &str = include_str!("fixtures/alloy-current/helm-profiling.alloy");

fn graph(src: &str) -> Result<GraphDef, String> {
    let mut sources = vec![Source::text("alloy-profiles.alloy", src)];
    loader::load_sources(&mut sources, &components::registry(), None)
        .map_err(|d| flow_runtime::source::render(&d, &sources))
}

fn node<'g>(g: &'g GraphDef, id: &str) -> (usize, &'g loader::NodeDef) {
    let i = g
        .index_of(id)
        .unwrap_or_else(|| panic!("no node {id}; have {:?}", ids(g)));
    (i, &g.nodes[i])
}

fn ids(g: &GraphDef) -> Vec<&str> {
    g.nodes.iter().map(|n| n.id.as_str()).collect()
}

/// Decodes node `id`'s block as component arguments `T`, with `scope` standing in for the
/// exports of what it references.
fn decodes<T: DeserializeOwned + Validate>(g: &GraphDef, id: &str, scope: &Scope) -> T {
    let (_, n) = node(g, id);
    let body = eval_body(&n.block.body, scope).unwrap_or_else(|d| panic!("{id}: {d}"));
    river_parser::decode::decode_body_validated(&body, n.block.name_span())
        .unwrap_or_else(|d| panic!("{id} does not decode: {d}"))
}

#[test]
fn helm_chart_profiling_module_builds_and_decodes() {
    let g = graph(CONFIG).unwrap_or_else(|e| panic!("rejected:\n{e}"));
    let visible: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| n.is_visible())
        .map(|n| n.id.as_str())
        .collect();
    assert_eq!(
        visible,
        [
            "profiling.feature",
            "profiling.feature/discovery.kubernetes.ebpf_pods",
            "profiling.feature/discovery.relabel.ebpf_pods",
            "profiling.feature/pyroscope.ebpf.ebpf_pods",
            "pyroscope.write.pyroscope",
        ]
    );
    let (instance, inst) = node(&g, "profiling.feature");
    assert!(matches!(inst.kind, NodeKind::Instance { .. }));
    let (write_idx, _) = node(&g, "pyroscope.write.pyroscope");
    assert_eq!(
        inst.refs,
        [write_idx],
        "the instance reads the write's receiver"
    );
    // pyroscope.ebpf reads the argument (which reads the instance) and the relabel output.
    let (arg, _) = node(&g, "profiling.feature/argument.profiles_destinations");
    assert_eq!(g.nodes[arg].refs, [instance]);
    let (relabel_idx, _) = node(&g, "profiling.feature/discovery.relabel.ebpf_pods");
    let (_, ebpf_node) = node(&g, "profiling.feature/pyroscope.ebpf.ebpf_pods");
    assert_eq!(ebpf_node.refs, [arg, relabel_idx]);
    // Dependencies first: the write, the instance, its argument, then the eBPF component.
    let pos = |i: usize| g.order.iter().position(|&k| k == i).unwrap();
    let ebpf_idx = node(&g, "profiling.feature/pyroscope.ebpf.ebpf_pods").0;
    assert!(pos(write_idx) < pos(instance) && pos(instance) < pos(arg) && pos(arg) < pos(ebpf_idx));

    // Every component's arguments decode (references stand in as empty lists).
    let mut scope = Scope::new();
    scope.set_path(
        &["discovery", "kubernetes", "ebpf_pods", "targets"],
        Value::Array(vec![]),
    );
    scope.set_path(
        &["discovery", "relabel", "ebpf_pods", "output"],
        Value::Array(vec![]),
    );
    scope.set_path(
        &["argument", "profiles_destinations", "value"],
        Value::Array(vec![]),
    );
    let k: kubernetes::Arguments = decodes(
        &g,
        "profiling.feature/discovery.kubernetes.ebpf_pods",
        &scope,
    );
    assert_eq!(k.selectors.len(), 1);
    assert_eq!(k.namespaces.len(), 1);
    let _: relabel::Arguments =
        decodes(&g, "profiling.feature/discovery.relabel.ebpf_pods", &scope);
    let _: ebpf::Arguments = decodes(&g, "profiling.feature/pyroscope.ebpf.ebpf_pods", &scope);
    let _: write::Arguments = decodes(&g, "pyroscope.write.pyroscope", &scope);
}

#[test]
fn helm_chart_profiling_module_without_destinations_is_an_error_at_the_use() {
    let src = CONFIG.replace(
        "  profiles_destinations = [pyroscope.write.pyroscope.receiver]\n",
        "",
    );
    let err = graph(&src).unwrap_err();
    assert!(
        err.starts_with(
            "alloy-profiles.alloy:57:1: missing required argument \"profiles_destinations\" of custom component \"profiling\"\n"
        ),
        "{err}"
    );
}
