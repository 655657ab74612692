use super::*;
use crate::pyroscope::store::query::ProfileType;

fn sample() -> Tree {
    let mut t = Tree::new();
    t.add_stack(&["main", "a", "b"], 3);
    t.add_stack(&["main", "a"], 2);
    t.add_stack(&["main", "c"], 1);
    t.add_stack(&["other_prog", "x"], 4);
    t.compute_totals();
    t
}

/// Decodes flame graph levels the way Grafana's data source does (offsets relative to the
/// end of the previous bar in the level) into `(depth, start, total, self, name)`.
fn bars(fg: &FlameGraph) -> Vec<(usize, i64, i64, i64, String)> {
    let mut out = Vec::new();
    for (d, level) in fg.levels.iter().enumerate() {
        let mut end = 0;
        for v in level.chunks(4) {
            let start = end + v[0];
            out.push((d, start, v[1], v[2], fg.names[v[3] as usize].clone()));
            end = start + v[1];
        }
    }
    out
}

#[test]
fn flamegraph_levels_lay_children_inside_their_parents() {
    let fg = sample().flamegraph(0);
    assert_eq!(fg.total, 10);
    assert_eq!(fg.max_self, 4);
    assert_eq!(fg.names[0], "total");
    let b = bars(&fg);
    let want: Vec<(usize, i64, i64, i64, String)> = [
        (0, 0, 10, 0, "total"),
        (1, 0, 6, 0, "main"),
        (1, 6, 4, 0, "other_prog"),
        (2, 0, 5, 2, "a"),
        (2, 5, 1, 1, "c"),
        (2, 6, 4, 4, "x"),
        (3, 0, 3, 3, "b"),
    ]
    .into_iter()
    .map(|(d, s, t, sf, n)| (d, s, t, sf, n.to_string()))
    .collect();
    assert_eq!(b, want);
}

#[test]
fn max_nodes_cuts_the_smallest_into_other() {
    let t = sample();
    // Totals: total 10, main 6, a 5, other_prog 4, x 4, b 3, c 1: keep the 5 largest.
    let cut = t.truncated(5);
    assert!(cut.nodes.len() <= 7, "{}", cut.nodes.len());
    assert_eq!(cut.total(), 10);
    let fg = cut.flamegraph(0);
    let names: Vec<String> = bars(&fg).into_iter().map(|b| b.4).collect();
    assert!(names.contains(&"other".to_string()), "{names:?}");
    assert!(!names.contains(&"c".to_string()), "{names:?}");
    assert!(!names.contains(&"b".to_string()), "{names:?}");
    // Every level still adds up inside its parent.
    let j = t.to_json(3);
    assert_eq!(j["v"], 10);
    let kids = j["c"].as_array().unwrap();
    assert_eq!(
        kids.iter().map(|k| k["v"].as_i64().unwrap()).sum::<i64>(),
        10
    );
}

#[test]
fn pprof_round_trips_the_tree() {
    let t = sample();
    let pt = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
    let p = t.to_pprof(&pt, 10_000_000, 5);
    let bytes = ebpf_probe::pprof::encode_gzip(&p);
    let back = ebpf_probe::pprof::decode(&bytes).unwrap();
    let folded = ebpf_probe::pprof::folded(&back);
    // folded divides by the period; values here are raw, so use period 1 for the check.
    let mut p1 = back.clone();
    p1.period = 1;
    let f1 = ebpf_probe::pprof::folded(&p1);
    assert_eq!(
        f1, "main;a 2\nmain;a;b 3\nmain;c 1\nother_prog;x 4\n",
        "{folded}"
    );
    assert_eq!(back.str(back.sample_type[0].r#type), "cpu");
    assert_eq!(back.period, 10_000_000);
}

#[test]
fn top_functions_count_recursion_once() {
    let mut t = Tree::new();
    t.add_stack(&["main", "rec", "rec", "leaf"], 2);
    t.add_stack(&["main", "rec"], 1);
    t.compute_totals();
    let top = t.top_functions();
    let get = |n: &str| top.iter().find(|r| &*r.0 == n).map(|r| (r.1, r.2)).unwrap();
    assert_eq!(get("rec"), (1, 3));
    assert_eq!(get("leaf"), (2, 2));
    assert_eq!(get("main"), (0, 3));
    assert_eq!(&*top[0].0, "leaf");
}

#[test]
fn focus_keeps_stacks_under_the_call_site() {
    let t = sample().focus(&["main".to_string(), "a".to_string()]);
    assert_eq!(t.total(), 5);
    let fg = t.flamegraph(0);
    let names: Vec<String> = bars(&fg).into_iter().map(|b| b.4).collect();
    assert_eq!(names, vec!["total", "main", "a", "b"]);
}

#[test]
fn diff_holds_both_sides() {
    let left = sample();
    let mut right = Tree::new();
    right.add_stack(&["main", "a", "b"], 6);
    right.add_stack(&["main", "d"], 2);
    right.compute_totals();
    let d = diff_json(&left, &right, 0);
    assert_eq!((d["l"].as_i64(), d["r"].as_i64()), (Some(10), Some(8)));
    let main = d["c"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["n"] == "main")
        .unwrap();
    assert_eq!((main["l"].as_i64(), main["r"].as_i64()), (Some(6), Some(8)));
    let names: Vec<&str> = main["c"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["n"].as_str().unwrap())
        .collect();
    // Ordered by the larger side: a (5|6), d (0|2), c (1|0).
    assert_eq!(names, vec!["a", "d", "c"]);
    let prog = d["c"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["n"] == "other_prog")
        .unwrap();
    assert_eq!((prog["l"].as_i64(), prog["r"].as_i64()), (Some(4), Some(0)));
}
